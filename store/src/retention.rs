//! Retention of finished tasks: how long each outcome is kept and what
//! happens to an expired day (dropped, or kept apart for archiving), and
//! what a pass did.

use chrono::{NaiveDate, TimeDelta};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    /// The expired partition is dropped.
    #[default]
    Drop,
    /// The expired partition is kept as a table of its own,
    /// `events_archive_<day>_<unix time>`, outside `events`: to dump and drop.
    Detach,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub enabled: bool,
    /// Delivered and cancelled tasks are kept this many days after their last event.
    pub completed_days: u32,
    /// Dead-lettered tasks wait this many days for a replay.
    pub dead_days: u32,
    pub action: RetentionAction,
    /// How often the leading node looks for expired days.
    pub every_minutes: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            completed_days: 7,
            dead_days: 30,
            action: RetentionAction::Drop,
            every_minutes: 60,
        }
    }
}

impl RetentionConfig {
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            completed_after: TimeDelta::days(i64::from(self.completed_days.max(1))),
            dead_after: TimeDelta::days(i64::from(self.dead_days.max(self.completed_days).max(1))),
            action: self.action,
            scan_events: RetentionPolicy::SCAN_EVENTS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetentionPolicy {
    pub completed_after: TimeDelta,
    pub dead_after: TimeDelta,
    pub action: RetentionAction,
    /// Events read per statement while a day's tasks are sorted into kept
    /// and dropped, so that each statement stays well inside the store's
    /// statement timeout however large the day (10M tasks: README, "Cost as
    /// the work grows").
    pub scan_events: i64,
}

impl RetentionPolicy {
    pub const SCAN_EVENTS: i64 = 100_000;
}

/// What a pass did to one expired day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayRetained {
    pub day: NaiveDate,
    pub dropped_tasks: i64,
    pub kept_tasks: i64,
    pub dropped_events: i64,
    /// The old partition's size on disk, indexes included.
    pub dropped_bytes: i64,
    pub archived_as: Option<String>,
}

/// Why a day was left for a later pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayDeferred {
    pub day: NaiveDate,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub retained: Vec<DayRetained>,
    pub deferred: Vec<DayDeferred>,
    /// `task_streams` and `task_view` rows of dropped tasks removed.
    pub rows_cleaned: u64,
}
