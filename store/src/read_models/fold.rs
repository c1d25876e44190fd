//! What folding a page of the task list writes: count changes and
//! statistics buckets, typed.

use bida_domain::stats::{Counts, Dimension};
use bida_domain::task::TaskStatus;
use chrono::{DateTime, Utc};

/// How many tasks of a status and pair of apps ('' for none) a page adds or removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCountChange {
    pub status: TaskStatus,
    pub source_app: String,
    pub target_app: String,
    pub change: i64,
}

/// What a page adds to one consumer's totals; `retrying` and `dead` are
/// changes of how many tasks are in that state now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerCounterChange {
    pub consumed: i64,
    pub delivered: i64,
    pub failed_attempts: i64,
    pub timeouts: i64,
    pub dead_lettered: i64,
    pub retrying: i64,
    pub dead: i64,
}

/// What a page adds to one minute of one statistics key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsBucket {
    pub minute: DateTime<Utc>,
    pub dimension: Dimension,
    pub key: String,
    pub counts: Counts,
}
