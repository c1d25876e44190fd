//! Which offsets of each partition a subscription has read and which are
//! done: the committed offset of a partition is its first offset not done,
//! so a restart reads again from there (never past a message whose outcome
//! is not recorded).

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Partition {
    /// The next offset to read.
    read_to: i64,
    /// Read and not done yet (a range held for an anomaly counts by its start).
    pending: BTreeSet<i64>,
    /// What the store has as committed.
    committed: i64,
    /// No more reading: it is being handed to another member.
    draining: bool,
}

impl Partition {
    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.read_to)
    }
}

#[derive(Debug, Default)]
pub(super) struct Tracker {
    partitions: HashMap<i32, Partition>,
}

impl Tracker {
    /// Starts reading `partition` at `from` (its committed offset).
    pub fn assign(&mut self, partition: i32, from: i64) {
        self.partitions.insert(
            partition,
            Partition {
                read_to: from,
                committed: from,
                ..Partition::default()
            },
        );
    }

    pub fn held(&self) -> Vec<i32> {
        let mut held: Vec<i32> = self.partitions.keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Partitions to read now: held, not draining.
    pub fn readable(&self) -> Vec<(i32, i64)> {
        let mut readable: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter(|(_, p)| !p.draining)
            .map(|(partition, p)| (*partition, p.read_to))
            .collect();
        readable.sort_unstable();
        readable
    }

    /// `offset` was handed out (it is pending until done).
    pub fn read(&mut self, partition: i32, offset: i64) -> bool {
        match self.partitions.get_mut(&partition) {
            Some(p) if offset >= p.read_to => {
                p.pending.insert(offset);
                p.read_to = offset + 1;
                true
            }
            _ => false,
        }
    }

    /// Offsets `from..to` are gone from the log: reading jumps to `to`, and
    /// the commit waits at `from` until the gap is recorded ([`Self::done`] of `from`).
    pub fn skip(&mut self, partition: i32, from: i64, to: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.pending.insert(from);
            p.read_to = p.read_to.max(to);
        }
    }

    pub fn done(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.pending.remove(&offset);
        }
    }

    /// Offsets to commit: each partition's first not done, where it moved.
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.committable() > p.committed)
            .map(|(partition, p)| (*partition, p.committable()))
            .collect()
    }

    /// Each held partition's offset as the store has it.
    pub fn committed_offsets(&self) -> Vec<(i32, i64)> {
        let mut offsets: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .map(|(partition, p)| (*partition, p.committed))
            .collect();
        offsets.sort_unstable();
        offsets
    }

    pub fn committed(&mut self, offsets: &[(i32, i64)]) {
        for (partition, offset) in offsets {
            if let Some(p) = self.partitions.get_mut(partition) {
                p.committed = p.committed.max(*offset);
            }
        }
    }

    /// Stops reading `partition`, to give it away once its messages are done.
    pub fn drain(&mut self, partition: i32) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.draining = true;
        }
    }

    /// Draining partitions with nothing pending, whose commit is written.
    pub fn drained(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.draining && p.pending.is_empty() && p.committed >= p.read_to)
            .map(|(partition, _)| *partition)
            .collect()
    }

    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_offset_not_done() {
        let mut tracker = Tracker::default();
        tracker.assign(0, 10);
        for offset in 10..15 {
            assert!(tracker.read(0, offset));
        }
        assert!(!tracker.read(0, 12), "read twice");
        tracker.done(0, 11);
        tracker.done(0, 12);
        assert!(tracker.to_commit().is_empty(), "10 is not done");
        tracker.done(0, 10);
        assert_eq!(tracker.to_commit(), vec![(0, 13)]);
        tracker.committed(&[(0, 13)]);
        tracker.done(0, 13);
        tracker.done(0, 14);
        assert_eq!(tracker.to_commit(), vec![(0, 15)]);
    }

    #[test]
    fn a_gap_holds_the_commit_until_it_is_recorded() {
        let mut tracker = Tracker::default();
        tracker.assign(1, 0);
        tracker.skip(1, 0, 100);
        assert_eq!(tracker.readable(), vec![(1, 100)]);
        assert!(tracker.read(1, 100));
        tracker.done(1, 100);
        assert!(tracker.to_commit().is_empty());
        tracker.done(1, 0);
        assert_eq!(tracker.to_commit(), vec![(1, 101)]);
    }

    #[test]
    fn a_partition_is_given_away_once_its_messages_are_done_and_committed() {
        let mut tracker = Tracker::default();
        tracker.assign(2, 0);
        tracker.read(2, 0);
        tracker.drain(2);
        assert!(tracker.readable().is_empty() && tracker.drained().is_empty());
        tracker.done(2, 0);
        assert!(tracker.drained().is_empty(), "its commit is not written yet");
        tracker.committed(&tracker.to_commit());
        assert_eq!(tracker.drained(), vec![2]);
    }
}
