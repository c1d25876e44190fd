//! Whether a partition moves. A lag clamped at zero hid a partition stuck
//! behind a broker that reported its end below the group's committed
//! offset, and a lag that never shrinks looks like a busy consumer: each
//! backlog reading is judged here, and a partition that stops moving while it
//! has messages to read (and its consumer is fetching) is reported as stalled.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// A partition whose committed offset has not moved for this long while it
/// had messages to read and its consumer was fetching is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// What is wrong with a partition's backlog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BacklogProblem {
    /// The committed offset is past the end the broker reports.
    EndBelowCommitted,
    /// Messages to read, and the committed offset has not moved since then.
    Stalled { since: DateTime<Utc> },
}

#[derive(Clone, Copy, Debug)]
struct Watch {
    committed: i64,
    since: DateTime<Utc>,
    told: bool,
}

/// What the last readings showed, per partition.
#[derive(Debug, Default)]
pub struct ProgressWatch {
    moving: HashMap<String, Watch>,
    end_below: HashMap<String, bool>,
}

/// A reading's verdict on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub problem: Option<BacklogProblem>,
    /// The problem is new: it is to be reported.
    pub news: bool,
}

impl ProgressWatch {
    /// Judges one reading of a partition (`source`): its committed and end
    /// offsets, and whether its consumer was fetching since the last reading.
    pub fn judge(&mut self, source: &str, committed: i64, end: i64, fetching: bool, now: DateTime<Utc>) -> Judged {
        if end < committed {
            self.moving.remove(source);
            let told = self.end_below.insert(source.to_string(), true).unwrap_or(false);
            return Judged {
                problem: Some(BacklogProblem::EndBelowCommitted),
                news: !told,
            };
        }
        self.end_below.remove(source);
        if end == committed || !fetching {
            self.moving.remove(source);
            return Judged {
                problem: None,
                news: false,
            };
        }
        let watch = self.moving.entry(source.to_string()).or_insert(Watch {
            committed,
            since: now,
            told: false,
        });
        if watch.committed != committed {
            *watch = Watch {
                committed,
                since: now,
                told: false,
            };
        }
        let stalled = (now - watch.since).to_std().unwrap_or_default() >= STALL_AFTER;
        let news = stalled && !watch.told;
        watch.told |= stalled;
        Judged {
            problem: stalled.then_some(BacklogProblem::Stalled { since: watch.since }),
            news,
        }
    }

    /// Forgets partitions no longer read.
    pub fn keep(&mut self, sources: &[&str]) {
        self.moving.retain(|source, _| sources.contains(&source.as_str()));
        self.end_below.retain(|source, _| sources.contains(&source.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_partition_that_does_not_move_with_work_is_stalled_once() {
        let mut watch = ProgressWatch::default();
        assert_eq!(watch.judge("t/0", 625, 768, true, at(0)).problem, None);
        assert_eq!(watch.judge("t/0", 625, 768, true, at(30)).problem, None);
        let stalled = watch.judge("t/0", 625, 768, true, at(60));
        assert_eq!(stalled.problem, Some(BacklogProblem::Stalled { since: at(0) }));
        assert!(stalled.news);
        let again = watch.judge("t/0", 625, 800, true, at(70));
        assert!(again.problem.is_some() && !again.news, "told once per stall");
        assert_eq!(watch.judge("t/0", 626, 800, true, at(80)).problem, None, "it moved");
    }

    #[test]
    fn idle_or_held_partitions_are_not_stalled() {
        let mut watch = ProgressWatch::default();
        watch.judge("t/0", 5, 5, true, at(0));
        assert_eq!(watch.judge("t/0", 5, 5, true, at(600)).problem, None, "nothing to read");
        watch.judge("t/1", 5, 9, false, at(0));
        assert_eq!(
            watch.judge("t/1", 5, 9, false, at(600)).problem,
            None,
            "paused: the backlog waits by design"
        );
        assert_eq!(
            watch.judge("t/1", 5, 9, true, at(601)).problem,
            None,
            "the clock starts when fetching does"
        );
    }

    #[test]
    fn an_end_below_the_committed_offset_is_reported_not_clamped() {
        let mut watch = ProgressWatch::default();
        let judged = watch.judge("t/0", 625, 591, true, at(0));
        assert_eq!(judged.problem, Some(BacklogProblem::EndBelowCommitted));
        assert!(judged.news);
        assert!(!watch.judge("t/0", 625, 591, true, at(10)).news);
        watch.keep(&[]);
        assert!(
            watch.judge("t/0", 625, 591, true, at(20)).news,
            "forgotten once the partition went away"
        );
    }
}
