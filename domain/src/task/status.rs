use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a task stands.
///
/// `Delivering` is never recorded as an event: it is derived from the durable
/// schedule (the task is due and a node has claimed it), which saves an event
/// per attempt on the hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskStatus {
    #[default]
    Pending,
    Delivering,
    Retrying,
    Delivered,
    Dead,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        Self::Pending,
        Self::Delivering,
        Self::Retrying,
        Self::Delivered,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivering => "delivering",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No more attempts will be made unless an operator asks.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Dead | Self::Cancelled)
    }

    /// The status a reader should see, given the task's schedule entry
    /// (`due_at`, and whether a node has claimed it).
    pub fn observed(self, schedule: Option<(DateTime<Utc>, bool)>, now: DateTime<Utc>) -> Self {
        match (self, schedule) {
            (Self::Pending | Self::Retrying, Some((due_at, true))) if due_at <= now => Self::Delivering,
            _ => self,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn delivering_is_derived_from_a_due_claimed_schedule_entry() {
        let now = Utc::now();
        let past = now - Duration::seconds(1);
        let future = now + Duration::seconds(60);
        assert_eq!(
            TaskStatus::Retrying.observed(Some((past, true)), now),
            TaskStatus::Delivering
        );
        assert_eq!(
            TaskStatus::Pending.observed(Some((past, true)), now),
            TaskStatus::Delivering
        );
        assert_eq!(
            TaskStatus::Retrying.observed(Some((future, true)), now),
            TaskStatus::Retrying
        );
        assert_eq!(
            TaskStatus::Retrying.observed(Some((past, false)), now),
            TaskStatus::Retrying
        );
        assert_eq!(TaskStatus::Dead.observed(Some((past, true)), now), TaskStatus::Dead);
        assert_eq!(TaskStatus::Pending.observed(None, now), TaskStatus::Pending);
    }

    #[test]
    fn names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TaskStatus::parse("gone"), None);
    }
}
