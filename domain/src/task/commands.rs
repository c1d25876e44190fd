use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::{DeliveryRequest, TaskSpec};
use crate::Observation;

#[derive(Clone, Debug, PartialEq)]
pub enum TaskCommand {
    Submit {
        spec: Arc<TaskSpec>,
        at: DateTime<Utc>,
    },
    RecordAttempt(AttemptReport),
    /// A consumed message, attempted once before anything was recorded
    /// (the consumer delivers while the broker still holds the message):
    /// `Submit` and `RecordAttempt` in one, so that a first-attempt success
    /// is a single [`super::TaskEvent::MessageDelivered`].
    SubmitAttempted {
        spec: Arc<TaskSpec>,
        at: DateTime<Utc>,
        report: AttemptReport,
    },
    Cancel {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// Deliver again now, with a fresh round of attempts (any task not delivered).
    Retry {
        at: DateTime<Utc>,
    },
    /// Deliver a dead or cancelled task again (bulk replay): unlike `Retry`,
    /// refused for tasks still pending or retrying, so replays cannot stack.
    Replay {
        at: DateTime<Utc>,
        /// The request to deliver instead (a fixed URL, headers or body).
        request: Option<Arc<DeliveryRequest>>,
    },
}

/// What a delivery actor saw during one attempt. The aggregate judges it
/// against the task's policy; `jitter_sample` (uniform in [0, 1)) is passed in
/// so that the decision stays deterministic.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptReport {
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    pub observation: Observation,
    pub response_excerpt: Option<String>,
    /// The request carried a `webhook-signature`.
    pub signed: bool,
    pub jitter_sample: f64,
}
