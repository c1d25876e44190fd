use chrono::{DateTime, Utc};

use super::TaskEvent;

/// How a task's entry in the durable schedule changes after some events.
///
/// The schedule is a synchronous projection of the task's events, written in
/// the same statement, so a due time can never exist only in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleChange {
    /// The next attempt is due at this time.
    Due(DateTime<Utc>),
    /// No attempt is due: the task is final.
    Clear,
}

impl ScheduleChange {
    /// The change made by `events`: every task event but a change of terms
    /// moves or clears the schedule entry, so the last such one decides.
    pub fn after<'a>(events: impl IntoIterator<Item = &'a TaskEvent>) -> Option<Self> {
        events.into_iter().filter_map(Self::of).last()
    }

    fn of(event: &TaskEvent) -> Option<Self> {
        Some(match event {
            TaskEvent::TaskSubmitted { due_at: at, .. }
            | TaskEvent::AttemptFailed {
                next_attempt_at: Some(at),
                ..
            }
            | TaskEvent::RetryRequested { at, .. } => Self::Due(*at),
            TaskEvent::AttemptFailed {
                next_attempt_at: None, ..
            }
            | TaskEvent::AttemptSucceeded { .. }
            | TaskEvent::MessageDelivered { .. }
            | TaskEvent::TaskDeadLettered { .. }
            | TaskEvent::TaskCancelled { .. } => Self::Clear,
            TaskEvent::TermsAdopted { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_decides() {
        let now = Utc::now();
        assert_eq!(ScheduleChange::after(&[]), None);
        assert_eq!(
            ScheduleChange::after(&[TaskEvent::RetryRequested { at: now, request: None }]),
            Some(ScheduleChange::Due(now))
        );
        assert_eq!(
            ScheduleChange::after(&[
                TaskEvent::RetryRequested { at: now, request: None },
                TaskEvent::TaskCancelled { reason: None, at: now },
            ]),
            Some(ScheduleChange::Clear)
        );
    }
}
