//! Kafka offsets are committed contiguously per partition: an offset is
//! committed only once every message before it is done, so a crash can repeat
//! deliveries but never skip one.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Partition {
    pending: BTreeSet<i64>,
    /// The highest offset handed out so far.
    highest: Option<i64>,
    /// The offset last made committable (next offset to read).
    committable: Option<i64>,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    /// A message was handed to the pipeline.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.partitions.entry((topic.to_string(), partition)).or_default();
        // Where this consumer started reading: committed already.
        p.committable.get_or_insert(offset);
        p.pending.insert(offset);
        p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
    }

    /// A message's outcome is recorded. Returns the new offset to commit (the
    /// next one to read) when it moved forward.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        if !p.pending.remove(&offset) {
            return None;
        }
        let next = match p.pending.first() {
            Some(&oldest) => oldest,
            None => p.highest? + 1,
        };
        if p.committable.is_some_and(|c| c >= next) {
            return None;
        }
        p.committable = Some(next);
        Some(next)
    }

    /// The partition went to another consumer: forget what was in flight
    /// (its new owner reads again from the committed offset).
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    /// The offset this consumer made committable for a partition it owns.
    pub fn committable(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions.get(&(topic.to_string(), partition))?.committable
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_prefixes() {
        let mut t = OffsetTracker::default();
        for offset in 10..15 {
            t.begin("t", 0, offset);
        }
        assert_eq!(t.done("t", 0, 12), None, "10 and 11 are still running");
        assert_eq!(t.done("t", 0, 10), Some(11));
        assert_eq!(t.done("t", 0, 11), Some(13));
        assert_eq!(t.done("t", 0, 14), None);
        assert_eq!(t.done("t", 0, 13), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_are_fine() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 5);
        t.begin("t", 1, 100);
        t.begin("t", 1, 107);
        assert_eq!(t.done("t", 1, 100), Some(107));
        assert_eq!(t.done("t", 1, 107), Some(108));
        assert_eq!(t.done("t", 0, 5), Some(6));
        assert_eq!(t.done("t", 0, 5), None, "done twice counts once");
    }

    #[test]
    fn revoked_partitions_forget_their_work() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 1);
        t.revoke("t", 0);
        assert_eq!(t.done("t", 0, 1), None);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.committable("t", 0), None, "nothing to commit for a partition gone");
    }

    #[test]
    fn committable_is_where_reading_resumes() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 7);
        assert_eq!(t.committable("t", 0), Some(7), "where this consumer started");
        t.begin("t", 0, 8);
        t.done("t", 0, 7);
        assert_eq!(t.committable("t", 0), Some(8));
    }
}
