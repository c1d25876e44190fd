//! Task events this node has just committed, kept for the task list's fold:
//! the fold then takes each one as it was built instead of decoding the
//! JSON it reads back (README, "The task list folds what this node just
//! committed"). The feed still decides what is folded and in which order;
//! this only spares the decoding of events whose typed form is at hand.

use bida_domain::task::TaskEvent;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most events kept. A fold that falls further behind than this (a drain)
/// finds the oldest of its events here and decodes the rest; a full cache
/// refuses new events rather than dropping the ones the fold reads next.
const CAPACITY: usize = 32_768;

/// An event nobody took for this long (its fold ran on another node, or a
/// rebuild moved the checkpoint past it) makes room for newer ones.
const MAX_AGE: Duration = Duration::from_secs(30);

/// Committed task events by task id and sequence, kept only while this
/// node's task list folds ([`RecentTaskEvents::want`]).
#[derive(Debug, Default)]
pub struct RecentTaskEvents {
    wanted: AtomicBool,
    kept: Mutex<Kept>,
    taken: AtomicU64,
}

#[derive(Debug, Default)]
struct Kept {
    /// A task's events not taken yet, by sequence, with when the last of them came.
    by_task: HashMap<String, Waiting>,
    /// Tasks in the order their events came, to let old ones go.
    arrivals: VecDeque<(Instant, String)>,
    events: usize,
}

#[derive(Debug)]
struct Waiting {
    last_arrival: Instant,
    events: Vec<(i64, TaskEvent)>,
}

impl RecentTaskEvents {
    /// Whether this node's task list folds: only then are events kept. Not
    /// wanted, everything kept is let go.
    pub fn want(&self, wanted: bool) {
        self.wanted.store(wanted, Ordering::Relaxed);
        if !wanted {
            *self.lock() = Kept::default();
        }
    }

    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Keeps events of `task` committed with sequences from `first_sequence` on.
    pub(crate) fn keep(&self, task: &str, first_sequence: i64, events: Vec<TaskEvent>) {
        if events.is_empty() || !self.wanted() {
            return;
        }
        let now = Instant::now();
        let mut kept = self.lock();
        kept.let_go_before(now.checked_sub(MAX_AGE).unwrap_or(now));
        // Arrivals whose events were taken leave the queue only from its
        // front: one never taken holds the others behind it until it ages.
        if kept.events + events.len() > CAPACITY || kept.arrivals.len() >= 4 * CAPACITY {
            return;
        }
        kept.events += events.len();
        kept.arrivals.push_back((now, task.to_string()));
        let sequences = (first_sequence..).zip(events);
        match kept.by_task.get_mut(task) {
            Some(waiting) => {
                waiting.last_arrival = now;
                waiting.events.extend(sequences);
            }
            None => {
                let waiting = Waiting {
                    last_arrival: now,
                    events: sequences.collect(),
                };
                kept.by_task.insert(task.to_string(), waiting);
            }
        }
    }

    /// The event at `sequence` of `task`, if this node committed it lately.
    pub fn take(&self, task: &str, sequence: i64) -> Option<TaskEvent> {
        let mut kept = self.lock();
        let waiting = kept.by_task.get_mut(task)?;
        let index = waiting.events.iter().position(|(s, _)| *s == sequence)?;
        let (_, event) = waiting.events.swap_remove(index);
        if waiting.events.is_empty() {
            kept.by_task.remove(task);
        }
        kept.events -= 1;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(event)
    }

    /// Events taken so far (each spared a decode).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kept {
    /// Drops the oldest arrivals whose events were all taken, and forgets
    /// tasks whose last events came before `cutoff` and were not all taken.
    fn let_go_before(&mut self, cutoff: Instant) {
        while let Some((at, task)) = self.arrivals.front() {
            let waiting = self.by_task.get(task).filter(|w| w.last_arrival <= *at);
            match waiting {
                // Taken, or the task came again since: that later arrival stands for it.
                None => {}
                Some(_) if *at >= cutoff => break,
                Some(waiting) => {
                    self.events -= waiting.events.len();
                    let task = task.clone();
                    self.by_task.remove(&task);
                }
            }
            self.arrivals.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event(n: i64) -> TaskEvent {
        TaskEvent::TaskDeadLettered {
            reason: format!("event {n}"),
            at: chrono::DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn events(n: usize) -> Vec<TaskEvent> {
        (0..n as i64).map(event).collect()
    }

    #[test]
    fn events_are_kept_only_while_wanted_and_taken_once() {
        let recent = RecentTaskEvents::default();
        recent.keep("t1", 1, events(2));
        assert_eq!(recent.take("t1", 1), None, "not wanted: nothing kept");

        recent.want(true);
        recent.keep("t1", 1, events(2));
        recent.keep("t1", 3, events(1));
        assert_eq!(recent.take("t1", 2), Some(event(1)));
        assert_eq!(recent.take("t1", 2), None, "taken once");
        assert_eq!(recent.take("t1", 3), Some(event(0)));
        assert_eq!(recent.take("t2", 1), None);
        assert_eq!(recent.taken(), 2);

        recent.want(false);
        assert_eq!(recent.take("t1", 1), None, "let go when no longer wanted");
    }

    #[test]
    fn a_full_cache_refuses_new_events_and_keeps_those_read_next() {
        let recent = RecentTaskEvents::default();
        recent.want(true);
        for n in 0..CAPACITY / 4 {
            recent.keep(&format!("t{n}"), 1, events(4));
        }
        recent.keep("late", 1, events(1));
        assert_eq!(recent.take("late", 1), None, "refused when full");
        assert!(recent.take("t0", 4).is_some(), "the oldest stay");
        recent.keep("late", 1, events(1));
        assert!(recent.take("late", 1).is_some(), "room again once one is taken");
    }

    #[test]
    fn events_nobody_takes_are_let_go_when_old_and_taken_ones_leave_the_queue() {
        let recent = RecentTaskEvents::default();
        recent.want(true);
        recent.keep("old", 1, events(3));
        recent.keep("taken", 1, events(1));
        assert!(recent.take("taken", 1).is_some());
        std::thread::sleep(Duration::from_millis(2));
        recent.keep("old", 4, events(1));
        let mut kept = recent.lock();
        // Nothing is old yet; the arrivals of taken tasks and the first of
        // `old` (which came again) leave the queue.
        let first = kept.arrivals.front().map(|(at, _)| *at).unwrap();
        kept.let_go_before(first);
        assert_eq!((kept.events, kept.arrivals.len()), (4, 1));
        kept.let_go_before(Instant::now() + Duration::from_secs(1));
        assert_eq!((kept.events, kept.arrivals.len(), kept.by_task.len()), (0, 0, 0));
    }
}
