//! Appends: the events of one aggregate (with the task schedule change they
//! imply) handed to the store's group commit, and its settings and counters.

use bida_domain::task::ScheduleChange;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Most events in one batch statement.
    pub max_batch_events: usize,
    /// Most payload bytes in one batch statement.
    pub max_batch_bytes: usize,
    /// Batches committing at once (each holds a pool connection meanwhile).
    pub concurrency: usize,
    /// Appends waiting for a batch before callers are held back.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 2_000,
            max_batch_bytes: 16 * 1024 * 1024,
            concurrency: 4,
            queue: 50_000,
        }
    }
}

/// One event to append. `payload` and `metadata` are JSON text.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub aggregate_type: Cow<'static, str>,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: Cow<'static, str>,
    pub event_version: Cow<'static, str>,
    pub payload: String,
    pub metadata: Option<String>,
    /// The partition the event goes to: a task's submission day
    /// ([`crate::task_epoch`]), 0 for aggregates kept for good.
    pub epoch: i32,
}

/// A task's schedule change, written with its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleWrite {
    pub task_id: String,
    pub change: ScheduleChange,
    /// The node that keeps the task in memory until it is due; `None` leaves it
    /// to whichever node's scheduler claims it.
    pub owner: Option<Uuid>,
}

/// What one caller appends atomically: events of one aggregate, with the
/// expected sequence implied by the first event's `sequence`.
#[derive(Clone, Debug, Default)]
pub struct Append {
    pub events: Vec<NewEvent>,
    pub schedule: Option<ScheduleWrite>,
}

impl Append {
    pub(crate) fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.payload.len() + e.metadata.as_ref().map_or(0, String::len))
            .sum()
    }
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub conflicts: AtomicU64,
    pub failures: AtomicU64,
    /// Sum of batch commit times, in microseconds.
    pub commit_micros: AtomicU64,
}

/// Counts a committed batch's events by aggregate type.
pub(crate) fn record_batch<'a>(appends: impl Iterator<Item = &'a Append>, events: usize, took: Duration) {
    let metrics = bida_telemetry::instruments();
    metrics.append_duration.record(took.as_secs_f64(), &[]);
    metrics.append_batch_size.record(events as u64, &[]);
    let mut by_type: Vec<(&str, u64)> = Vec::new();
    for event in appends.flat_map(|a| &a.events) {
        match by_type.iter_mut().find(|(t, _)| *t == event.aggregate_type) {
            Some((_, n)) => *n += 1,
            None => by_type.push((&event.aggregate_type, 1)),
        }
    }
    for (aggregate_type, n) in by_type {
        metrics.events_appended.add(
            n,
            &[bida_telemetry::KeyValue::new(
                "bida.aggregate_type",
                aggregate_type.to_string(),
            )],
        );
    }
}
