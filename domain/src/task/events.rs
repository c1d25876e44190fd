use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{DeliveryPolicy, DeliveryRequest, DeliveryTarget, TaskSpec};

/// Everything that happens to a callback task. The first event carries the
/// whole spec (payload included), so the events alone can redeliver a task
/// after a restart: the event store is the retry queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskEvent {
    TaskSubmitted {
        spec: Arc<TaskSpec>,
        #[serde(with = "crate::timestamp")]
        submitted_at: DateTime<Utc>,
        /// When the first attempt is due.
        #[serde(with = "crate::timestamp")]
        due_at: DateTime<Utc>,
    },
    AttemptSucceeded {
        attempt: AttemptRecord,
    },
    /// A consumed message delivered on its first attempt, made before
    /// anything was recorded: its submission and that attempt in one event,
    /// so the common case of a consumer costs one row, not two.
    MessageDelivered {
        spec: Arc<TaskSpec>,
        #[serde(with = "crate::timestamp")]
        submitted_at: DateTime<Utc>,
        attempt: AttemptRecord,
    },
    AttemptFailed {
        attempt: AttemptRecord,
        /// `None` when no attempt follows (a `TaskDeadLettered` comes next).
        #[serde(default, with = "crate::timestamp::option")]
        next_attempt_at: Option<DateTime<Utc>>,
    },
    TaskDeadLettered {
        reason: String,
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
    },
    TaskCancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
    },
    /// An operator asked for the task to be delivered again: a new round of
    /// `max_attempts` starts now, to the amended request if there is one
    /// (the original stays in `TaskSubmitted`).
    RetryRequested {
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<Arc<DeliveryRequest>>,
    },
    /// The task's consumer changed its endpoint or policy while the task
    /// waited for an attempt: the attempts after this event run under the
    /// consumer's terms of `consumer_version` (what is absent is unchanged).
    TermsAdopted {
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
        consumer_version: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<Box<DeliveryPolicy>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Box<DeliveryTarget>>,
    },
}

/// One try of a task, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptRecord {
    /// 1, 2, ... across rounds (the `bida-attempt` header).
    pub number: u32,
    #[serde(with = "crate::timestamp")]
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    /// HTTP status, when a response came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The gRPC status, when a gRPC method answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<crate::grpc::GrpcCode>,
    /// Why the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    /// The attempt was cut at the task's timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The request carried a `webhook-signature` (its app had a signing secret).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed: bool,
}

impl TaskEvent {
    pub const TYPES: [&'static str; 8] = [
        "TaskSubmitted",
        "AttemptSucceeded",
        "AttemptFailed",
        "TaskDeadLettered",
        "TaskCancelled",
        "RetryRequested",
        "MessageDelivered",
        "TermsAdopted",
    ];

    pub fn name(&self) -> &'static str {
        let index = match self {
            Self::TaskSubmitted { .. } => 0,
            Self::AttemptSucceeded { .. } => 1,
            Self::AttemptFailed { .. } => 2,
            Self::TaskDeadLettered { .. } => 3,
            Self::TaskCancelled { .. } => 4,
            Self::RetryRequested { .. } => 5,
            Self::MessageDelivered { .. } => 6,
            Self::TermsAdopted { .. } => 7,
        };
        Self::TYPES[index]
    }

    /// When it happened, by the clock of the node that recorded it.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::TaskSubmitted { submitted_at, .. } => *submitted_at,
            Self::AttemptSucceeded { attempt }
            | Self::AttemptFailed { attempt, .. }
            | Self::MessageDelivered { attempt, .. } => {
                attempt.started_at + chrono::Duration::milliseconds(attempt.latency_ms as i64)
            }
            Self::TaskDeadLettered { at, .. }
            | Self::TaskCancelled { at, .. }
            | Self::RetryRequested { at, .. }
            | Self::TermsAdopted { at, .. } => *at,
        }
    }

    /// The task's spec, when this event starts the task.
    pub fn submission(&self) -> Option<(&Arc<TaskSpec>, DateTime<Utc>)> {
        match self {
            Self::TaskSubmitted { spec, submitted_at, .. } | Self::MessageDelivered { spec, submitted_at, .. } => {
                Some((spec, *submitted_at))
            }
            _ => None,
        }
    }

    /// The attempt this event records, if it records one.
    pub fn attempt(&self) -> Option<&AttemptRecord> {
        match self {
            Self::AttemptSucceeded { attempt }
            | Self::AttemptFailed { attempt, .. }
            | Self::MessageDelivered { attempt, .. } => Some(attempt),
            _ => None,
        }
    }
}

impl DomainEvent for TaskEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
