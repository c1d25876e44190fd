//! Kafka offsets are committed contiguously per partition: an offset is
//! committed only once every message before it is done, so a crash can repeat
//! deliveries but never skip one.
//!
//! The tracker also knows which offset must come next on each partition (the
//! group's committed offset when the partition was assigned, then the last
//! one read plus one), and judges every message against it. A message past
//! it means the broker skipped offsets: seen with tansu, which answers a
//! fetch that starts inside a record batch with the batches after it (a
//! fetch starts there after a pause, a rebalance or a restart whenever the
//! producer batched). Such a gap is read again from a little earlier, then
//! from further back, before it is believed; a gap the broker confirms is
//! recorded as an anomaly, and the commit passes it only once that record
//! is durable. Before this, the first offset after the gap was taken as the
//! next one and the commit moved past messages nobody had seen.
//!
//! The same broker answers a fetch inside its last batch with nothing at
//! all, so a partition whose reading (re)started at an offset it chose
//! (an assignment, a resume) is not trusted until a message arrives: while
//! it stays quiet, it is read back from a little earlier, then further.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Read-backs of one gap before the broker's word is taken for it. The
/// last ones start up to 2^(READ_BACKS - 2) offsets before the gap, which
/// covers a producer batch of that many records.
pub const READ_BACKS: u32 = 14;

/// A partition whose reading (re)started and that has served nothing for
/// this long is read back.
pub const QUIET_READ_BACK: Duration = Duration::from_millis(300);

/// A read-back that served messages short of the expected offset, then
/// nothing for this long, found where the log ends.
pub const LOG_END_QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Partition {
    pending: BTreeSet<i64>,
    /// The highest offset handed out so far.
    highest: Option<i64>,
    /// The offset last made committable (next offset to read).
    committable: Option<i64>,
    /// The offset that must come next, when known.
    next: Option<i64>,
    /// A gap being read again.
    reading_back: Option<ReadingBack>,
    /// Since when reading has (re)started at `next` and nothing arrived to
    /// show that the broker serves it.
    quiet_since: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadingBack {
    /// Where the read-back started.
    from: i64,
    /// Read-backs so far.
    tries: u32,
    /// The highest offset it served, while short of the expected one.
    served: Option<i64>,
}

/// How a fetched message fits what was read before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// The next one: it goes to the pipeline.
    Next,
    /// Read again during a read-back, or from a partition not (or no longer)
    /// assigned: dropped, it is handled already or belongs to another member.
    Drop,
    /// Offsets `expected..` this message were not served.
    Gap { expected: i64 },
    /// Below offsets already read, not asked for: the log went back.
    Rewound { expected: i64 },
}

/// What to do about a partition that stays quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuietAction {
    /// Read the partition again from this offset.
    ReadFrom(i64),
    /// The broker serves the partition up to `end`, below the expected
    /// offset, and nothing after: the log went back under the consumer.
    EndsBefore { end: i64 },
    /// Read back as far as allowed without a message: an empty partition.
    Done,
    /// The read-back served messages short of the expected offset lately:
    /// not yet quiet long enough to tell that the log ends there.
    Wait,
}

/// What to do about a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapAction {
    /// Read the partition again from this offset.
    ReadFrom(i64),
    /// The broker has nothing at `from..to`, read back as far as it goes.
    Confirmed { from: i64, to: i64 },
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    fn partition(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.partitions.get_mut(&(topic.to_string(), partition))
    }

    /// The partition is this consumer's now; reading starts at the group's
    /// committed offset (`None`: none committed, the start policy decides).
    pub fn assign(&mut self, topic: &str, partition: i32, committed: Option<i64>, now: Instant) {
        self.partitions.insert(
            (topic.to_string(), partition),
            Partition {
                committable: committed,
                next: committed,
                quiet_since: committed.map(|_| now),
                ..Partition::default()
            },
        );
    }

    /// Reading (re)starts at the expected offsets (after a pause, or after a
    /// while without fetching): they are to be confirmed again.
    pub fn restarted(&mut self, now: Instant) {
        for p in self.partitions.values_mut() {
            if p.next.is_some() {
                p.quiet_since = Some(now);
            }
            // What a read-back served before the pause says nothing of where
            // the log ends: reading stopped then, not the log.
            if let Some(back) = p.reading_back.as_mut() {
                back.served = None;
            }
        }
    }

    /// Fetching went on after a while without: partitions still waiting for
    /// confirmation wait from now (time spent not fetching does not count).
    pub fn postpone_quiet(&mut self, now: Instant) {
        for p in self.partitions.values_mut() {
            if let Some(since) = p.quiet_since.as_mut() {
                *since = now;
            }
        }
    }

    /// Partitions that have served nothing for `after` since reading
    /// (re)started: to be read back with [`OffsetTracker::read_back_quiet`].
    pub fn quiet(&self, now: Instant, after: Duration) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.quiet_since.is_some_and(|since| now.duration_since(since) >= after))
            .map(|((topic, partition), _)| (topic.clone(), *partition))
            .collect()
    }

    /// What to do about a partition that stays quiet (see [`QuietAction`]).
    pub fn read_back_quiet(&mut self, topic: &str, partition: i32, low: i64, now: Instant) -> Option<QuietAction> {
        let p = self.partition(topic, partition)?;
        let expected = p.next?;
        if let Some(served) = p.reading_back.and_then(|back| back.served) {
            if p.quiet_since
                .is_some_and(|since| now.duration_since(since) < LOG_END_QUIET)
            {
                return Some(QuietAction::Wait);
            }
            p.quiet_since = None;
            p.reading_back = None;
            return Some(QuietAction::EndsBefore { end: served + 1 });
        }
        // Reading already starts at `expected`: begin one before it.
        p.reading_back.get_or_insert(ReadingBack {
            from: expected,
            tries: 1,
            served: None,
        });
        Some(match Self::step_back(p, expected, low) {
            Some(from) => {
                p.quiet_since = Some(now);
                QuietAction::ReadFrom(from)
            }
            None => {
                p.quiet_since = None;
                p.reading_back = None;
                QuietAction::Done
            }
        })
    }

    /// The next read-back's start, further back each time, at `low` at the
    /// earliest; `None` once read back [`READ_BACKS`] times or from `low`.
    fn step_back(p: &mut Partition, expected: i64, low: i64) -> Option<i64> {
        let tries = p.reading_back.map_or(0, |back| back.tries);
        let reached_low = p.reading_back.is_some_and(|back| back.from <= low && tries > 1);
        if tries >= READ_BACKS || reached_low {
            return None;
        }
        // First the gap itself (a fetch that raced with a seek), then further
        // back each time (a broker that serves only whole batches from their start).
        let back = if tries == 0 { 0 } else { 1i64 << (tries - 1) };
        let from = expected.saturating_sub(back).max(low).min(expected);
        p.reading_back = Some(ReadingBack {
            from,
            tries: tries + 1,
            served: None,
        });
        Some(from)
    }

    /// Judges a fetched message (fetched at `now`); [`Received::Next`] means it is begun.
    pub fn receive(&mut self, topic: &str, partition: i32, offset: i64, now: Instant) -> Received {
        let Some(p) = self.partition(topic, partition) else {
            return Received::Drop;
        };
        match p.next {
            Some(next) if offset > next => Received::Gap { expected: next },
            Some(next) if offset < next => match p.reading_back.as_mut() {
                Some(back) if offset >= back.from => {
                    if offset + 1 == next {
                        // The broker serves up to the expected offset: what comes next follows.
                        p.quiet_since = None;
                    } else if p.quiet_since.is_some() {
                        back.served = Some(offset);
                        p.quiet_since = Some(now);
                    }
                    Received::Drop
                }
                _ => Received::Rewound { expected: next },
            },
            _ => {
                p.reading_back = None;
                p.quiet_since = None;
                p.next = Some(offset + 1);
                // Where this consumer started reading: committed already.
                p.committable.get_or_insert(offset);
                p.pending.insert(offset);
                p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
                Received::Next
            }
        }
    }

    /// A gap before `offset`: where to read again from, at `low` (the
    /// partition's first offset) at the earliest; or, once read back as far
    /// as that or [`READ_BACKS`] times, the gap confirmed.
    pub fn gap(&mut self, topic: &str, partition: i32, offset: i64, low: i64) -> Option<GapAction> {
        let p = self.partition(topic, partition)?;
        let expected = p.next?;
        p.quiet_since = None;
        Some(match Self::step_back(p, expected, low) {
            Some(from) => GapAction::ReadFrom(from),
            None => GapAction::Confirmed {
                from: expected,
                to: offset,
            },
        })
    }

    /// Takes a gap as it is: reading goes on at `to`, and `from` stays
    /// pending (holding the commit before it) until it is done, once the gap
    /// is recorded.
    pub fn pass_gap(&mut self, topic: &str, partition: i32, from: i64, to: i64) {
        if let Some(p) = self.partition(topic, partition) {
            p.reading_back = None;
            p.quiet_since = None;
            p.committable.get_or_insert(from);
            p.pending.insert(from);
            p.highest = Some(p.highest.map_or(from, |h| h.max(from)));
            p.next = Some(to);
        }
    }

    /// Takes a gap the topic allows (a compacted topic): reading goes on at `to`.
    pub fn expect(&mut self, topic: &str, partition: i32, to: i64) {
        if let Some(p) = self.partition(topic, partition) {
            p.reading_back = None;
            p.next = Some(to);
        }
    }

    /// The partition starts over at `offset`: what was in flight before
    /// is recorded, but no longer moves the commit.
    pub fn rewind(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.partition(topic, partition) {
            *p = Partition {
                committable: Some(offset),
                next: Some(offset),
                ..Partition::default()
            };
        }
    }

    /// A message's outcome is recorded. Returns the new offset to commit (the
    /// next one to read) when it moved forward.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partition(topic, partition)?;
        if !p.pending.remove(&offset) {
            return None;
        }
        let next = match p.pending.first() {
            Some(&oldest) => oldest,
            None => p.next.or(p.highest.map(|h| h + 1))?,
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

    /// The offset that must come next on a partition, when known.
    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions.get(&(topic.to_string(), partition))?.next
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

    fn tracker_at(offset: i64) -> OffsetTracker {
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(offset), Instant::now());
        t
    }

    #[test]
    fn commits_only_contiguous_prefixes() {
        let mut t = tracker_at(10);
        for offset in 10..15 {
            assert_eq!(t.receive("t", 0, offset, Instant::now()), Received::Next);
        }
        assert_eq!(t.done("t", 0, 12), None, "10 and 11 are still running");
        assert_eq!(t.done("t", 0, 10), Some(11));
        assert_eq!(t.done("t", 0, 11), Some(13));
        assert_eq!(t.done("t", 0, 14), None);
        assert_eq!(t.done("t", 0, 13), Some(15));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.done("t", 0, 13), None, "done twice counts once");
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(5), Instant::now());
        t.assign("t", 1, Some(100), Instant::now());
        assert_eq!(t.receive("t", 0, 5, Instant::now()), Received::Next);
        assert_eq!(t.receive("t", 1, 100, Instant::now()), Received::Next);
        assert_eq!(t.receive("t", 1, 101, Instant::now()), Received::Next);
        assert_eq!(t.done("t", 1, 100), Some(101));
        assert_eq!(t.done("t", 1, 101), Some(102));
        assert_eq!(t.done("t", 0, 5), Some(6));
    }

    #[test]
    fn without_a_committed_offset_the_first_message_starts_the_partition() {
        let mut t = OffsetTracker::default();
        t.assign("t", 0, None, Instant::now());
        assert_eq!(t.committable("t", 0), None);
        assert_eq!(t.receive("t", 0, 7, Instant::now()), Received::Next);
        assert_eq!(t.committable("t", 0), Some(7), "where this consumer started");
        assert_eq!(t.receive("t", 0, 8, Instant::now()), Received::Next);
        t.done("t", 0, 7);
        assert_eq!(t.committable("t", 0), Some(8));
    }

    #[test]
    fn messages_of_partitions_not_assigned_are_dropped() {
        let mut t = tracker_at(1);
        t.revoke("t", 0);
        assert_eq!(t.receive("t", 0, 1, Instant::now()), Received::Drop);
        assert_eq!(t.done("t", 0, 1), None);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.committable("t", 0), None, "nothing to commit for a partition gone");
    }

    /// The loss of the lost-messages issue: a fetch that started inside a
    /// batch served the next batch, and the commit moved past the rest of it.
    #[test]
    fn a_skipped_range_is_read_again_and_never_committed_past_unseen() {
        let mut t = tracker_at(625);
        assert_eq!(t.receive("t", 0, 625, Instant::now()), Received::Next);
        assert_eq!(t.receive("t", 0, 713, Instant::now()), Received::Gap { expected: 626 });
        assert_eq!(t.done("t", 0, 625), Some(626), "the commit stops before the gap");
        // Read again from the gap, then from further back each time.
        assert_eq!(t.gap("t", 0, 713, 0), Some(GapAction::ReadFrom(626)));
        assert_eq!(t.receive("t", 0, 713, Instant::now()), Received::Gap { expected: 626 });
        assert_eq!(t.gap("t", 0, 713, 0), Some(GapAction::ReadFrom(625)));
        assert_eq!(t.receive("t", 0, 713, Instant::now()), Received::Gap { expected: 626 });
        assert_eq!(t.gap("t", 0, 713, 0), Some(GapAction::ReadFrom(624)));
        // This read-back starts at the batch: what was read before is dropped.
        assert_eq!(t.receive("t", 0, 624, Instant::now()), Received::Drop);
        assert_eq!(t.receive("t", 0, 625, Instant::now()), Received::Drop);
        for offset in 626..720 {
            assert_eq!(
                t.receive("t", 0, offset, Instant::now()),
                Received::Next,
                "offset {offset}"
            );
        }
        for offset in 626..720 {
            t.done("t", 0, offset);
        }
        assert_eq!(t.committable("t", 0), Some(720));
    }

    #[test]
    fn a_gap_the_broker_confirms_holds_the_commit_until_recorded() {
        let mut t = tracker_at(10);
        assert_eq!(t.receive("t", 0, 10, Instant::now()), Received::Next);
        let mut reads = Vec::new();
        let confirmed = loop {
            assert_eq!(t.receive("t", 0, 20, Instant::now()), Received::Gap { expected: 11 });
            match t.gap("t", 0, 20, 4).unwrap() {
                GapAction::ReadFrom(from) => reads.push(from),
                confirmed => break confirmed,
            }
        };
        assert_eq!(
            reads,
            vec![11, 10, 9, 7, 4],
            "back to the partition's first offset, no further"
        );
        assert_eq!(confirmed, GapAction::Confirmed { from: 11, to: 20 });
        t.pass_gap("t", 0, 11, 20);
        assert_eq!(t.receive("t", 0, 20, Instant::now()), Received::Next);
        assert_eq!(t.done("t", 0, 10), Some(11));
        assert_eq!(t.done("t", 0, 20), None, "not past the gap before it is recorded");
        assert_eq!(t.done("t", 0, 11), Some(21), "recorded: the commit passes it");
    }

    /// The same broker answers a fetch inside its last batch with nothing:
    /// a partition that stays quiet after reading restarted is read back.
    #[test]
    fn a_quiet_partition_is_read_back_until_the_broker_serves_it() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(539), start);
        t.assign("t", 1, None, start);
        assert!(t.quiet(later(200), QUIET_READ_BACK).is_empty());
        assert_eq!(
            t.quiet(later(1_000), QUIET_READ_BACK),
            vec![("t".to_string(), 0)],
            "only a partition with a known start waits for confirmation"
        );
        let from = QuietAction::ReadFrom;
        assert_eq!(t.read_back_quiet("t", 0, 0, later(1_000)), Some(from(538)));
        assert!(
            t.quiet(later(1_200), QUIET_READ_BACK).is_empty(),
            "the read-back gets its time"
        );
        assert_eq!(t.read_back_quiet("t", 0, 0, later(2_000)), Some(from(537)));
        assert_eq!(t.read_back_quiet("t", 0, 0, later(3_000)), Some(from(535)));
        assert_eq!(t.read_back_quiet("t", 0, 0, later(4_000)), Some(from(531)));
        // The batch starts at 431: served from there, what was read is dropped.
        assert_eq!(t.read_back_quiet("t", 0, 0, later(5_000)), Some(from(523)));
        assert_eq!(t.read_back_quiet("t", 0, 0, later(6_000)), Some(from(507)));
        assert_eq!(t.read_back_quiet("t", 0, 0, later(7_000)), Some(from(475)));
        assert_eq!(t.read_back_quiet("t", 0, 0, later(8_000)), Some(from(411)));
        for offset in 431..538 {
            assert_eq!(t.receive("t", 0, offset, Instant::now()), Received::Drop);
            assert_eq!(t.quiet(later(60_000), QUIET_READ_BACK).len(), 1, "not before {offset}");
        }
        assert_eq!(t.receive("t", 0, 538, Instant::now()), Received::Drop);
        assert!(
            t.quiet(later(60_000), QUIET_READ_BACK).is_empty(),
            "confirmed up to 539"
        );
        assert_eq!(t.receive("t", 0, 539, Instant::now()), Received::Next);
        // A resume restarts reading: confirmed again by the next message.
        t.restarted(later(61_000));
        assert_eq!(t.quiet(later(62_000), QUIET_READ_BACK).len(), 1);
        assert_eq!(t.receive("t", 0, 540, Instant::now()), Received::Next);
        assert!(t.quiet(later(63_000), QUIET_READ_BACK).is_empty());
    }

    #[test]
    fn an_empty_partition_is_read_back_once_to_its_start() {
        let start = Instant::now();
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(0), start);
        assert_eq!(t.read_back_quiet("t", 0, 0, start), Some(QuietAction::ReadFrom(0)));
        assert_eq!(
            t.read_back_quiet("t", 0, 0, start),
            Some(QuietAction::Done),
            "nothing before the start"
        );
        assert!(t.quiet(start + Duration::from_secs(60), QUIET_READ_BACK).is_empty());
    }

    /// A committed offset past the log's end: a broker may answer the fetch
    /// with nothing rather than "out of range". The read-back finds where
    /// the log ends, and reading starts over there.
    #[test]
    fn a_log_that_ends_below_the_expected_offset_is_found_by_reading_back() {
        let start = Instant::now();
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(50), start);
        let mut action = t.read_back_quiet("t", 0, 0, start);
        while action != Some(QuietAction::ReadFrom(0)) {
            assert!(matches!(action, Some(QuietAction::ReadFrom(_))), "{action:?}");
            action = t.read_back_quiet("t", 0, 0, start);
        }
        for offset in 0..5 {
            assert_eq!(t.receive("t", 0, offset, Instant::now()), Received::Drop);
        }
        let after = |quiet| Instant::now() + quiet;
        assert_eq!(
            t.quiet(after(QUIET_READ_BACK), QUIET_READ_BACK).len(),
            1,
            "quiet again after 4"
        );
        assert_eq!(
            t.read_back_quiet("t", 0, 0, after(QUIET_READ_BACK)),
            Some(QuietAction::Wait),
            "not yet long enough to tell"
        );
        assert_eq!(
            t.read_back_quiet("t", 0, 0, after(LOG_END_QUIET)),
            Some(QuietAction::EndsBefore { end: 5 })
        );
        t.rewind("t", 0, 0);
        assert_eq!(t.receive("t", 0, 0, Instant::now()), Received::Next);
        assert_eq!(t.done("t", 0, 0), Some(1), "committed where the log is");
    }

    /// A pause in the middle of a read-back stops reading, not the log:
    /// what it served until then does not mean the log ends there.
    #[test]
    fn a_read_back_cut_by_a_pause_is_no_sign_of_the_log_ending() {
        let start = Instant::now();
        let mut t = OffsetTracker::default();
        t.assign("t", 0, Some(50), start);
        assert_eq!(t.read_back_quiet("t", 0, 0, start), Some(QuietAction::ReadFrom(49)));
        assert_eq!(t.read_back_quiet("t", 0, 0, start), Some(QuietAction::ReadFrom(48)));
        assert_eq!(t.receive("t", 0, 48, start), Received::Drop);
        t.restarted(start);
        let later = start + LOG_END_QUIET;
        assert_eq!(
            t.read_back_quiet("t", 0, 0, later),
            Some(QuietAction::ReadFrom(46)),
            "read further back, not rewound"
        );
        assert_eq!(
            t.receive("t", 0, 49, later),
            Received::Drop,
            "still within the read-back"
        );
        assert_eq!(t.receive("t", 0, 50, later), Received::Next);
    }

    #[test]
    fn read_backs_are_bounded() {
        let mut t = tracker_at(100_000);
        let mut tries = 0;
        while let Some(GapAction::ReadFrom(_)) = t.gap("t", 0, 100_010, 0) {
            tries += 1;
        }
        assert_eq!(tries, READ_BACKS);
    }

    #[test]
    fn offsets_going_back_unasked_are_a_rewind() {
        let mut t = tracker_at(50);
        assert_eq!(t.receive("t", 0, 50, Instant::now()), Received::Next);
        assert_eq!(t.receive("t", 0, 3, Instant::now()), Received::Rewound { expected: 51 });
        t.rewind("t", 0, 3);
        assert_eq!(t.receive("t", 0, 3, Instant::now()), Received::Next);
        assert_eq!(
            t.done("t", 0, 50),
            None,
            "in flight before the rewind: recorded, not committed"
        );
        assert_eq!(t.done("t", 0, 3), Some(4));
        // Below a read-back's start is a rewind too, not a repeat.
        let mut t = tracker_at(50);
        assert_eq!(t.receive("t", 0, 60, Instant::now()), Received::Gap { expected: 50 });
        assert_eq!(t.gap("t", 0, 60, 0), Some(GapAction::ReadFrom(50)));
        assert_eq!(t.receive("t", 0, 0, Instant::now()), Received::Rewound { expected: 50 });
    }
}
