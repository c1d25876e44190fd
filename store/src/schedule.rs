//! The durable schedule: which tasks have an attempt due, and which node holds
//! each. Rows are written with the task's events (see the writer); this module
//! claims and releases them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedTask {
    pub task_id: String,
    pub due_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub due_at: DateTime<Utc>,
    pub owner: Option<Uuid>,
}
