use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{
    AttemptRecord, AttemptReport, DeliveryPolicy, DeliveryTarget, TaskCommand, TaskError, TaskEvent, TaskSpec,
    TaskStatus,
};
use crate::matcher::{judge, Verdict};
use crate::Observation;

/// The callback task aggregate: the state needed to decide what happens next.
///
/// Delivery actors call [`CallbackTask::decide`] and apply the events only once
/// they are committed, so a failed append never leaves a half-updated task in
/// memory. The cqrs-es [`Aggregate`] impl wraps the same two functions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackTask {
    spec: Option<Arc<TaskSpec>>,
    status: TaskStatus,
    /// Attempts made in all rounds.
    attempts: u32,
    /// Failed attempts in the current round (since submission or the last manual retry).
    round_failures: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    /// The consumer version whose terms the task runs under.
    #[serde(default)]
    terms_version: Option<i64>,
    /// An operator's edit-and-replay set the request: consumer changes no
    /// longer move it (they still change the policy).
    #[serde(default)]
    request_pinned: bool,
}

impl CallbackTask {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a TaskEvent>) -> Self {
        let mut task = Self::default();
        for event in events {
            task.apply_event(event);
        }
        task
    }

    pub fn spec(&self) -> Option<&Arc<TaskSpec>> {
        self.spec.as_ref()
    }

    pub fn status(&self) -> TaskStatus {
        self.status
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next attempt is due; `None` once the task is final.
    pub fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.next_attempt_at
    }

    /// The consumer version whose terms the task runs under (consumer tasks).
    pub fn terms_version(&self) -> Option<i64> {
        self.terms_version
    }

    /// The event that moves a waiting task to its consumer's terms of
    /// `version`, if they are newer than the task's and differ from them.
    /// Only a task still waiting for an attempt adopts terms.
    pub fn adopt_terms(
        &self,
        version: i64,
        policy: &DeliveryPolicy,
        target: &DeliveryTarget,
        at: DateTime<Utc>,
    ) -> Option<TaskEvent> {
        let spec = self.spec.as_ref()?;
        if !matches!(self.status, TaskStatus::Pending | TaskStatus::Retrying)
            || self.terms_version.is_some_and(|held| held >= version)
        {
            return None;
        }
        let policy = (spec.policy != *policy).then(|| Box::new(policy.clone()));
        let target = (!self.request_pinned && spec.request.target() != *target).then(|| Box::new(target.clone()));
        if policy.is_none() && target.is_none() {
            return None;
        }
        Some(TaskEvent::TermsAdopted {
            at,
            consumer_version: version,
            policy,
            target,
        })
    }

    pub fn decide(&self, command: TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
        match command {
            TaskCommand::Submit { spec, at } => {
                if self.spec.is_some() {
                    return Err(TaskError::AlreadySubmitted);
                }
                let due_at = spec.deliver_at.map_or(at, |when| when.max(at));
                Ok(vec![TaskEvent::TaskSubmitted {
                    spec,
                    submitted_at: at,
                    due_at,
                }])
            }
            TaskCommand::RecordAttempt(report) => self.judge_attempt(report),
            TaskCommand::SubmitAttempted { spec, at, report } => {
                let mut events = self.decide(TaskCommand::Submit { spec, at })?;
                let mut submitted = self.clone();
                for event in &events {
                    submitted.apply_event(event);
                }
                let attempt = submitted.judge_attempt(report)?;
                match (&events[..], &attempt[..]) {
                    (
                        [TaskEvent::TaskSubmitted {
                            spec,
                            submitted_at,
                            due_at,
                        }],
                        [TaskEvent::AttemptSucceeded { attempt }],
                    ) if due_at == submitted_at => Ok(vec![TaskEvent::MessageDelivered {
                        spec: spec.clone(),
                        submitted_at: *submitted_at,
                        attempt: attempt.clone(),
                    }]),
                    _ => {
                        events.extend(attempt);
                        Ok(events)
                    }
                }
            }
            TaskCommand::Cancel { reason, at } => {
                self.spec.as_ref().ok_or(TaskError::NotFound)?;
                match self.status {
                    TaskStatus::Pending | TaskStatus::Retrying => Ok(vec![TaskEvent::TaskCancelled { reason, at }]),
                    status => Err(TaskError::InvalidState {
                        action: "cancel",
                        status,
                    }),
                }
            }
            TaskCommand::Retry { at } => {
                self.spec.as_ref().ok_or(TaskError::NotFound)?;
                match self.status {
                    TaskStatus::Delivered => Err(TaskError::InvalidState {
                        action: "retry",
                        status: self.status,
                    }),
                    _ => Ok(vec![TaskEvent::RetryRequested { at, request: None }]),
                }
            }
            TaskCommand::Replay { at, request } => {
                self.spec.as_ref().ok_or(TaskError::NotFound)?;
                match self.status {
                    TaskStatus::Dead | TaskStatus::Cancelled => Ok(vec![TaskEvent::RetryRequested { at, request }]),
                    status => Err(TaskError::InvalidState {
                        action: "replay",
                        status,
                    }),
                }
            }
        }
    }

    fn judge_attempt(&self, report: AttemptReport) -> Result<Vec<TaskEvent>, TaskError> {
        let spec = self.spec.as_ref().ok_or(TaskError::NotFound)?;
        if !matches!(self.status, TaskStatus::Pending | TaskStatus::Retrying) {
            return Err(TaskError::InvalidState {
                action: "record an attempt for",
                status: self.status,
            });
        }
        let expected = self.attempts + 1;
        if report.number != expected {
            return Err(TaskError::AttemptOutOfOrder {
                expected,
                got: report.number,
            });
        }
        let finished_at = report.started_at + ChronoDuration::milliseconds(report.latency_ms as i64);
        let policy = &spec.policy;
        let mut attempt = AttemptRecord {
            number: report.number,
            started_at: report.started_at,
            latency_ms: report.latency_ms,
            status_code: match report.observation {
                Observation::Response { status, .. } => Some(status),
                _ => None,
            },
            grpc_status: match &report.observation {
                Observation::Rpc(outcome) => Some(outcome.code),
                _ => None,
            },
            error: None,
            response_excerpt: report.response_excerpt,
            timed_out: matches!(report.observation, Observation::Timeout { .. }),
            signed: report.signed,
        };
        let (reason, next_attempt_at) = match judge(&policy.expect, &policy.retry_on, &report.observation, finished_at)
        {
            Verdict::Success => return Ok(vec![TaskEvent::AttemptSucceeded { attempt }]),
            Verdict::GiveUp { reason } => (reason, None),
            Verdict::Retry { reason, .. } if self.round_failures + 1 >= policy.max_attempts => {
                let failures = self.round_failures + 1;
                let reason = format!("gave up after {failures} attempt(s); last: {reason}");
                (reason, None)
            }
            Verdict::Retry { reason, retry_after } => {
                let delay = match retry_after {
                    Some(requested) => policy.backoff.clamp(requested),
                    None => policy
                        .backoff
                        .delay_after(self.round_failures + 1, report.jitter_sample),
                };
                let delay = ChronoDuration::from_std(delay).unwrap_or(ChronoDuration::MAX);
                (reason, Some(finished_at + delay))
            }
        };
        attempt.error = Some(reason.clone());
        let mut events = vec![TaskEvent::AttemptFailed {
            attempt,
            next_attempt_at,
        }];
        if next_attempt_at.is_none() {
            events.push(TaskEvent::TaskDeadLettered {
                reason,
                at: finished_at,
            });
        }
        Ok(events)
    }

    pub fn apply_event(&mut self, event: &TaskEvent) {
        match event {
            TaskEvent::TaskSubmitted { spec, due_at, .. } => {
                self.terms_version = spec.origin.as_ref().and_then(|o| o.terms_version);
                self.spec = Some(spec.clone());
                self.status = TaskStatus::Pending;
                self.next_attempt_at = Some(*due_at);
            }
            TaskEvent::AttemptSucceeded { .. } => {
                self.attempts += 1;
                self.status = TaskStatus::Delivered;
                self.next_attempt_at = None;
            }
            TaskEvent::MessageDelivered { spec, .. } => {
                self.terms_version = spec.origin.as_ref().and_then(|o| o.terms_version);
                self.spec = Some(spec.clone());
                self.attempts = 1;
                self.status = TaskStatus::Delivered;
                self.next_attempt_at = None;
            }
            TaskEvent::AttemptFailed { next_attempt_at, .. } => {
                self.attempts += 1;
                self.round_failures += 1;
                self.status = TaskStatus::Retrying;
                self.next_attempt_at = *next_attempt_at;
            }
            TaskEvent::TaskDeadLettered { .. } => {
                self.status = TaskStatus::Dead;
                self.next_attempt_at = None;
            }
            TaskEvent::TaskCancelled { .. } => {
                self.status = TaskStatus::Cancelled;
                self.next_attempt_at = None;
            }
            TaskEvent::RetryRequested { at, request } => {
                if let (Some(request), Some(spec)) = (request, &self.spec) {
                    self.request_pinned = true;
                    self.spec = Some(Arc::new(TaskSpec {
                        request: super::DeliveryRequest::clone(request),
                        ..TaskSpec::clone(spec)
                    }));
                }
                self.status = TaskStatus::Retrying;
                self.round_failures = 0;
                self.next_attempt_at = Some(*at);
            }
            TaskEvent::TermsAdopted {
                consumer_version,
                policy,
                target,
                ..
            } => {
                self.terms_version = Some(*consumer_version);
                if let Some(spec) = &self.spec {
                    let mut adopted = TaskSpec::clone(spec);
                    if let Some(policy) = policy {
                        adopted.policy = DeliveryPolicy::clone(policy);
                    }
                    if let Some(target) = target {
                        adopted.request = adopted.request.retargeted(target);
                    }
                    self.spec = Some(Arc::new(adopted));
                }
            }
        }
    }
}

decided_aggregate!(CallbackTask, "callback_task", TaskCommand, TaskEvent, TaskError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{DeliveryPolicy, DeliveryRequest, Method, ScheduleChange};
    use crate::{Backoff, Expect, StatusSet};
    use bytes::Bytes;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Framework = TestFramework<CallbackTask>;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
    }

    fn spec(max_attempts: u32) -> Arc<TaskSpec> {
        Arc::new(TaskSpec {
            message_id: "msg-1".into(),
            request: DeliveryRequest {
                url: "http://example.com/hook".into(),
                method: Method::Post,
                headers: Default::default(),
                body: None,
                grpc: None,
            },
            policy: DeliveryPolicy {
                max_attempts,
                timeout_ms: 1_000,
                backoff: Backoff {
                    initial_ms: 1_000,
                    max_ms: 60_000,
                    multiplier: 2.0,
                    jitter: 0.0,
                },
                retry_on: StatusSet::default_retry_on(),
                expect: Expect::default(),
            },
            source_app: Some("orders".into()),
            target_app: None,
            deliver_at: None,
            idempotency_key: None,
            origin: None,
            produce: None,
        })
    }

    fn submitted(max_attempts: u32) -> TaskEvent {
        TaskEvent::TaskSubmitted {
            spec: spec(max_attempts),
            submitted_at: t0(),
            due_at: t0(),
        }
    }

    fn report(number: u32, status: u16) -> AttemptReport {
        AttemptReport {
            number,
            started_at: t0(),
            latency_ms: 10,
            observation: Observation::Response {
                status,
                body: Bytes::new(),
                retry_after: None,
                stop_requested: false,
            },
            response_excerpt: None,
            signed: false,
            jitter_sample: 0.5,
        }
    }

    fn record(number: u32, status: u16, error: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            number,
            started_at: t0(),
            latency_ms: 10,
            status_code: Some(status),
            grpc_status: None,
            error: error.map(String::from),
            response_excerpt: None,
            timed_out: false,
            signed: false,
        }
    }

    fn after(ms: i64) -> Option<DateTime<Utc>> {
        Some(t0() + ChronoDuration::milliseconds(ms))
    }

    #[test]
    fn submitting_records_the_spec_and_first_due_time() {
        let deliver_at = t0() + ChronoDuration::minutes(5);
        let mut delayed = spec(3);
        Arc::make_mut(&mut delayed).deliver_at = Some(deliver_at);
        Framework::with(())
            .given_no_previous_events()
            .when(TaskCommand::Submit {
                spec: delayed.clone(),
                at: t0(),
            })
            .then_expect_events(vec![TaskEvent::TaskSubmitted {
                spec: delayed,
                submitted_at: t0(),
                due_at: deliver_at,
            }]);
    }

    #[test]
    fn a_task_is_submitted_once() {
        Framework::with(())
            .given(vec![submitted(3)])
            .when(TaskCommand::Submit {
                spec: spec(3),
                at: t0(),
            })
            .then_expect_error(TaskError::AlreadySubmitted);
    }

    #[test]
    fn success_delivers() {
        Framework::with(())
            .given(vec![submitted(3)])
            .when(TaskCommand::RecordAttempt(report(1, 200)))
            .then_expect_events(vec![TaskEvent::AttemptSucceeded {
                attempt: record(1, 200, None),
            }]);
    }

    #[test]
    fn a_consumed_message_delivered_at_once_is_one_event() {
        let delivered = TaskEvent::MessageDelivered {
            spec: spec(3),
            submitted_at: t0(),
            attempt: record(1, 200, None),
        };
        Framework::with(())
            .given_no_previous_events()
            .when(TaskCommand::SubmitAttempted {
                spec: spec(3),
                at: t0(),
                report: report(1, 200),
            })
            .then_expect_events(vec![delivered.clone()]);
        let task = CallbackTask::from_events([&delivered]);
        assert_eq!(task.status(), TaskStatus::Delivered);
        assert_eq!(task.attempts(), 1);
        assert_eq!(task.spec(), Some(&spec(3)));
        assert_eq!(task.next_attempt_at(), None);
        // It is a submission: the id is taken.
        Framework::with(())
            .given(vec![delivered])
            .when(TaskCommand::Submit {
                spec: spec(3),
                at: t0(),
            })
            .then_expect_error(TaskError::AlreadySubmitted);
    }

    #[test]
    fn a_consumed_message_whose_attempt_failed_keeps_its_submission_apart() {
        Framework::with(())
            .given_no_previous_events()
            .when(TaskCommand::SubmitAttempted {
                spec: spec(3),
                at: t0(),
                report: report(1, 503),
            })
            .then_expect_events(vec![
                submitted(3),
                TaskEvent::AttemptFailed {
                    attempt: record(1, 503, Some("HTTP 503")),
                    next_attempt_at: after(10 + 1_000),
                },
            ]);
        Framework::with(())
            .given(vec![submitted(3)])
            .when(TaskCommand::SubmitAttempted {
                spec: spec(3),
                at: t0(),
                report: report(1, 200),
            })
            .then_expect_error(TaskError::AlreadySubmitted);
    }

    #[test]
    fn a_retryable_failure_schedules_the_next_attempt_with_backoff() {
        Framework::with(())
            .given(vec![
                submitted(5),
                TaskEvent::AttemptFailed {
                    attempt: record(1, 503, Some("HTTP 503")),
                    next_attempt_at: after(1_010),
                },
            ])
            .when(TaskCommand::RecordAttempt(report(2, 503)))
            .then_expect_events(vec![TaskEvent::AttemptFailed {
                attempt: record(2, 503, Some("HTTP 503")),
                next_attempt_at: after(10 + 2_000),
            }]);
    }

    #[test]
    fn retry_after_sets_the_delay_within_bounds() {
        let mut throttled = report(1, 429);
        throttled.observation = Observation::Response {
            status: 429,
            body: Bytes::new(),
            retry_after: Some("3600".into()),
            stop_requested: false,
        };
        Framework::with(())
            .given(vec![submitted(5)])
            .when(TaskCommand::RecordAttempt(throttled))
            .then_expect_events(vec![TaskEvent::AttemptFailed {
                attempt: record(1, 429, Some("HTTP 429")),
                next_attempt_at: after(10 + 60_000),
            }]);
    }

    #[test]
    fn the_last_allowed_failure_dead_letters() {
        let reason = "gave up after 2 attempt(s); last: HTTP 500";
        Framework::with(())
            .given(vec![
                submitted(2),
                TaskEvent::AttemptFailed {
                    attempt: record(1, 500, Some("HTTP 500")),
                    next_attempt_at: after(1_010),
                },
            ])
            .when(TaskCommand::RecordAttempt(report(2, 500)))
            .then_expect_events(vec![
                TaskEvent::AttemptFailed {
                    attempt: record(2, 500, Some(reason)),
                    next_attempt_at: None,
                },
                TaskEvent::TaskDeadLettered {
                    reason: reason.into(),
                    at: after(10).unwrap(),
                },
            ]);
    }

    #[test]
    fn a_non_retryable_status_dead_letters_at_once() {
        let reason = "HTTP 404 is not retried (retry_on: 5xx, 408, 429)";
        Framework::with(())
            .given(vec![submitted(10)])
            .when(TaskCommand::RecordAttempt(report(1, 404)))
            .then_expect_events(vec![
                TaskEvent::AttemptFailed {
                    attempt: record(1, 404, Some(reason)),
                    next_attempt_at: None,
                },
                TaskEvent::TaskDeadLettered {
                    reason: reason.into(),
                    at: after(10).unwrap(),
                },
            ]);
    }

    #[test]
    fn attempts_must_come_in_order() {
        Framework::with(())
            .given(vec![submitted(3)])
            .when(TaskCommand::RecordAttempt(report(2, 200)))
            .then_expect_error(TaskError::AttemptOutOfOrder { expected: 1, got: 2 });
    }

    #[test]
    fn a_finished_task_takes_no_attempts_and_cannot_be_cancelled() {
        let delivered = vec![
            submitted(3),
            TaskEvent::AttemptSucceeded {
                attempt: record(1, 200, None),
            },
        ];
        Framework::with(())
            .given(delivered.clone())
            .when(TaskCommand::RecordAttempt(report(2, 200)))
            .then_expect_error(TaskError::InvalidState {
                action: "record an attempt for",
                status: TaskStatus::Delivered,
            });
        Framework::with(())
            .given(delivered.clone())
            .when(TaskCommand::Cancel { reason: None, at: t0() })
            .then_expect_error(TaskError::InvalidState {
                action: "cancel",
                status: TaskStatus::Delivered,
            });
        Framework::with(())
            .given(delivered)
            .when(TaskCommand::Retry { at: t0() })
            .then_expect_error(TaskError::InvalidState {
                action: "retry",
                status: TaskStatus::Delivered,
            });
    }

    #[test]
    fn cancel_stops_a_waiting_task() {
        Framework::with(())
            .given(vec![submitted(3)])
            .when(TaskCommand::Cancel {
                reason: Some("order voided".into()),
                at: t0(),
            })
            .then_expect_events(vec![TaskEvent::TaskCancelled {
                reason: Some("order voided".into()),
                at: t0(),
            }]);
    }

    #[test]
    fn manual_retry_revives_a_dead_task_with_a_fresh_round() {
        let dead = vec![
            submitted(1),
            TaskEvent::AttemptFailed {
                attempt: record(1, 500, Some("x")),
                next_attempt_at: None,
            },
            TaskEvent::TaskDeadLettered {
                reason: "x".into(),
                at: t0(),
            },
        ];
        Framework::with(())
            .given(dead.clone())
            .when(TaskCommand::Retry { at: t0() })
            .then_expect_events(vec![TaskEvent::RetryRequested {
                at: t0(),
                request: None,
            }]);

        // In the new round, one more failure is allowed before dead-lettering again.
        let mut task = CallbackTask::from_events(&dead);
        task.apply_event(&TaskEvent::RetryRequested {
            at: t0(),
            request: None,
        });
        assert_eq!(task.status(), TaskStatus::Retrying);
        assert_eq!(task.next_attempt_at(), Some(t0()));
        let events = task.decide(TaskCommand::RecordAttempt(report(2, 200))).unwrap();
        assert!(matches!(events[..], [TaskEvent::AttemptSucceeded { .. }]));
    }

    #[test]
    fn replay_takes_only_dead_or_cancelled_tasks() {
        let dead = vec![
            submitted(1),
            TaskEvent::AttemptFailed {
                attempt: record(1, 500, Some("x")),
                next_attempt_at: None,
            },
            TaskEvent::TaskDeadLettered {
                reason: "x".into(),
                at: t0(),
            },
        ];
        Framework::with(())
            .given(dead.clone())
            .when(TaskCommand::Replay {
                at: t0(),
                request: None,
            })
            .then_expect_events(vec![TaskEvent::RetryRequested {
                at: t0(),
                request: None,
            }]);
        // A second replay racing the first finds the task retrying already.
        let mut replayed = dead;
        replayed.push(TaskEvent::RetryRequested {
            at: t0(),
            request: None,
        });
        Framework::with(())
            .given(replayed)
            .when(TaskCommand::Replay {
                at: t0(),
                request: None,
            })
            .then_expect_error(TaskError::InvalidState {
                action: "replay",
                status: TaskStatus::Retrying,
            });
    }

    #[test]
    fn commands_on_an_unknown_task_fail() {
        Framework::with(())
            .given_no_previous_events()
            .when(TaskCommand::Cancel { reason: None, at: t0() })
            .then_expect_error(TaskError::NotFound);
    }

    #[test]
    fn events_serialize_with_their_type_names() {
        let delivered = TaskEvent::MessageDelivered {
            spec: spec(1),
            submitted_at: t0(),
            attempt: record(1, 200, None),
        };
        for event in [
            submitted(1),
            delivered,
            TaskEvent::RetryRequested {
                at: t0(),
                request: None,
            },
            TaskEvent::TermsAdopted {
                at: t0(),
                consumer_version: 2,
                policy: Some(Box::new(spec(3).policy.clone())),
                target: Some(Box::new(spec(3).request.target())),
            },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert!(json.get(event.name()).is_some(), "{json}");
            let back: TaskEvent = serde_json::from_value(json).unwrap();
            assert_eq!(back, event);
        }
    }

    /// A consumer's task made at consumer version 3.
    fn consumer_task() -> CallbackTask {
        let mut spec = TaskSpec::clone(&spec(10));
        spec.origin = Some(crate::task::Origin {
            consumer_id: "c1".into(),
            position: "q".into(),
            key: None,
            terms_version: Some(3),
        });
        let mut task = CallbackTask::from_events(&[TaskEvent::TaskSubmitted {
            spec: Arc::new(spec),
            submitted_at: t0(),
            due_at: t0(),
        }]);
        for event in task.decide(TaskCommand::RecordAttempt(report(1, 503))).unwrap() {
            task.apply_event(&event);
        }
        task
    }

    #[test]
    fn a_waiting_task_adopts_newer_terms_only() {
        let task = consumer_task();
        let current = task.spec().unwrap().clone();
        let mut shorter = current.policy.clone();
        shorter.max_attempts = 2;
        let same_target = current.request.target();
        assert_eq!(task.adopt_terms(3, &shorter, &same_target, t0()), None, "not newer");
        assert_eq!(
            task.adopt_terms(4, &current.policy, &same_target, t0()),
            None,
            "nothing differs"
        );
        let adopted = task
            .adopt_terms(4, &shorter, &same_target, t0())
            .expect("newer and different");
        assert_eq!(
            adopted,
            TaskEvent::TermsAdopted {
                at: t0(),
                consumer_version: 4,
                policy: Some(Box::new(shorter.clone())),
                target: None,
            }
        );
        let mut moved = task.clone();
        moved.apply_event(&adopted);
        assert_eq!(moved.next_attempt_at(), task.next_attempt_at(), "the due time stays");
        assert_eq!(
            moved.adopt_terms(4, &current.policy, &same_target, t0()),
            None,
            "held at version 4"
        );
        // Two attempts in all now: the next failure is the last.
        let events = moved.decide(TaskCommand::RecordAttempt(report(2, 503))).unwrap();
        assert!(
            matches!(events.last(), Some(TaskEvent::TaskDeadLettered { .. })),
            "{events:?}"
        );
        assert_eq!(
            ScheduleChange::after(std::slice::from_ref(&adopted)),
            None,
            "terms move no due time"
        );
    }

    #[test]
    fn an_edited_request_keeps_its_target_and_a_final_task_adopts_nothing() {
        let mut task = consumer_task();
        for event in task.decide(TaskCommand::RecordAttempt(report(2, 404))).unwrap() {
            task.apply_event(&event);
        }
        assert_eq!(task.status(), TaskStatus::Dead);
        let spec = task.spec().unwrap().clone();
        let mut elsewhere = spec.request.target();
        elsewhere.url = "http://elsewhere/".into();
        assert_eq!(task.adopt_terms(9, &spec.policy, &elsewhere, t0()), None, "dead");
        let mut fixed = spec.request.clone();
        fixed.url = "http://fixed/".into();
        for event in task
            .decide(TaskCommand::Replay {
                at: t0(),
                request: Some(Arc::new(fixed)),
            })
            .unwrap()
        {
            task.apply_event(&event);
        }
        let mut policy = spec.policy.clone();
        policy.timeout_ms = 99;
        let adopted = task
            .adopt_terms(9, &policy, &elsewhere, t0())
            .expect("the policy follows");
        assert!(
            matches!(&adopted, TaskEvent::TermsAdopted { target: None, policy: Some(p), .. } if p.timeout_ms == 99)
        );
        task.apply_event(&adopted);
        assert_eq!(task.spec().unwrap().request.url, "http://fixed/");
    }
}
