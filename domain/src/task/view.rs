//! Read models of a task, folded from its events: a summary for lists and a
//! detail view with the request, the policy and every attempt.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AttemptRecord, DeliveryPolicy, DeliveryRequest, Method, TaskEvent, TaskStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSummary {
    pub id: String,
    pub status: TaskStatus,
    /// Sent as `webhook-id`; stable across attempts.
    pub message_id: String,
    pub method: Method,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    /// The consumer the task came from (none for API tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    pub attempt_count: u32,
    pub max_attempts: u32,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::timestamp::option")]
    pub deliver_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::timestamp::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the task was delivered, dead-lettered or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::timestamp::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it was dead-lettered or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptRecord>,
}

impl TaskSummary {
    /// The summary a task starts with; `None` unless `event` is its submission.
    pub fn start(id: &str, event: &TaskEvent) -> Option<Self> {
        let (spec, submitted_at) = event.submission()?;
        let mut summary = Self {
            id: id.to_string(),
            status: TaskStatus::Pending,
            message_id: spec.message_id.clone(),
            method: spec.request.method,
            url: spec.request.url.clone(),
            source_app: spec.source_app.clone(),
            target_app: spec.target_app.clone(),
            consumer_id: spec.origin.as_ref().map(|o| o.consumer_id.clone()),
            attempt_count: 0,
            max_attempts: spec.policy.max_attempts,
            created_at: submitted_at,
            updated_at: submitted_at,
            deliver_at: spec.deliver_at,
            next_attempt_at: None,
            finished_at: None,
            reason: None,
            last_attempt: None,
        };
        summary.apply(event);
        Some(summary)
    }

    pub fn apply(&mut self, event: &TaskEvent) {
        self.updated_at = event.at();
        match event {
            TaskEvent::TaskSubmitted { due_at, .. } => self.next_attempt_at = Some(*due_at),
            TaskEvent::AttemptSucceeded { attempt } | TaskEvent::MessageDelivered { attempt, .. } => {
                self.attempted(attempt);
                self.finish(TaskStatus::Delivered, None);
            }
            TaskEvent::AttemptFailed {
                attempt,
                next_attempt_at,
            } => {
                self.attempted(attempt);
                self.status = TaskStatus::Retrying;
                self.next_attempt_at = *next_attempt_at;
            }
            TaskEvent::TaskDeadLettered { reason, .. } => self.finish(TaskStatus::Dead, Some(reason)),
            TaskEvent::TaskCancelled { reason, .. } => self.finish(TaskStatus::Cancelled, reason.as_ref()),
            TaskEvent::RetryRequested { at, request } => {
                if let Some(request) = request {
                    self.url.clone_from(&request.url);
                }
                self.status = TaskStatus::Retrying;
                self.next_attempt_at = Some(*at);
                self.finished_at = None;
                self.reason = None;
            }
            TaskEvent::TermsAdopted { policy, target, .. } => {
                if let Some(target) = target {
                    self.url.clone_from(&target.url);
                    self.method = target.method;
                }
                if let Some(policy) = policy {
                    self.max_attempts = policy.max_attempts;
                }
            }
        }
    }

    fn attempted(&mut self, attempt: &AttemptRecord) {
        self.attempt_count = self.attempt_count.max(attempt.number);
        self.last_attempt = Some(attempt.clone());
    }

    fn finish(&mut self, status: TaskStatus, reason: Option<&String>) {
        self.status = status;
        self.next_attempt_at = None;
        self.finished_at = Some(self.updated_at);
        self.reason = reason.cloned();
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDetail {
    #[serde(flatten)]
    pub summary: TaskSummary,
    pub request: DeliveryRequest,
    pub policy: DeliveryPolicy,
    /// The broker write a delayed message makes instead of an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce: Option<super::ProduceSpec>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Sequence number of the last event (the task's version).
    pub version: u64,
}

impl TaskDetail {
    pub fn fold<'a>(id: &str, events: impl IntoIterator<Item = &'a TaskEvent>) -> Option<Self> {
        let mut events = events.into_iter();
        let first = events.next()?;
        let (spec, _) = first.submission()?;
        let mut detail = Self {
            summary: TaskSummary::start(id, first)?,
            request: spec.request.clone(),
            policy: spec.policy.clone(),
            produce: spec.produce.clone(),
            attempts: first.attempt().into_iter().cloned().collect(),
            version: 1,
        };
        for event in events {
            if let TaskEvent::RetryRequested {
                request: Some(request), ..
            } = event
            {
                detail.request = DeliveryRequest::clone(request);
            }
            if let TaskEvent::TermsAdopted { policy, target, .. } = event {
                if let Some(target) = target {
                    detail.request = detail.request.retargeted(target);
                }
                if let Some(policy) = policy {
                    detail.policy = DeliveryPolicy::clone(policy);
                }
            }
            detail.summary.apply(event);
            detail.version += 1;
            if let Some(attempt) = event.attempt() {
                detail.attempts.push(attempt.clone());
            }
        }
        Some(detail)
    }
}

/// Every attempt with the request it sent: the submission's, the one an
/// edit-and-replay put in its place, or the submission's body sent where the
/// consumer's newer terms said. Oldest first.
pub fn attempts_with_requests<'a>(
    events: impl IntoIterator<Item = &'a TaskEvent>,
) -> Vec<(&'a AttemptRecord, DeliveryRequest)> {
    let mut request: Option<DeliveryRequest> = None;
    let mut attempts = Vec::new();
    for event in events {
        if let Some((spec, _)) = event.submission() {
            request = Some(spec.request.clone());
        }
        match event {
            TaskEvent::RetryRequested {
                request: Some(edited), ..
            } => request = Some(DeliveryRequest::clone(edited)),
            TaskEvent::TermsAdopted {
                target: Some(target), ..
            } => request = request.map(|sent| sent.retargeted(target)),
            _ => {}
        }
        if let (Some(attempt), Some(request)) = (event.attempt(), &request) {
            attempts.push((attempt, request.clone()));
        }
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{CallbackTask, TaskCommand, TaskSpec};
    use crate::{Backoff, Expect, StatusSet};
    use std::sync::Arc;

    fn spec() -> TaskSpec {
        TaskSpec {
            message_id: "m".into(),
            request: DeliveryRequest {
                url: "http://h/".into(),
                method: Method::Put,
                headers: Default::default(),
                body: None,
                grpc: None,
            },
            policy: DeliveryPolicy {
                max_attempts: 1,
                timeout_ms: 10,
                backoff: Backoff::default(),
                retry_on: StatusSet::default_retry_on(),
                expect: Expect::default(),
            },
            source_app: None,
            target_app: Some("billing".into()),
            deliver_at: None,
            idempotency_key: None,
            origin: None,
            produce: None,
        }
    }

    /// Attempt `number`, cut at the task's timeout.
    fn timed_out(number: u32, at: DateTime<Utc>) -> TaskCommand {
        TaskCommand::RecordAttempt(crate::task::AttemptReport {
            number,
            started_at: at,
            latency_ms: 5,
            observation: crate::Observation::Timeout { after_ms: 10 },
            response_excerpt: None,
            signed: false,
            jitter_sample: 0.0,
        })
    }

    #[test]
    fn a_message_delivered_at_once_is_a_delivered_task_with_one_attempt() {
        let now = Utc::now();
        let attempt = crate::task::AttemptRecord {
            number: 1,
            started_at: now,
            latency_ms: 7,
            status_code: Some(204),
            grpc_status: None,
            error: None,
            response_excerpt: None,
            timed_out: false,
            signed: false,
        };
        let event = TaskEvent::MessageDelivered {
            spec: Arc::new(spec()),
            submitted_at: now,
            attempt: attempt.clone(),
        };
        let detail = TaskDetail::fold("t1", [&event]).unwrap();
        assert_eq!(detail.summary.status, TaskStatus::Delivered);
        assert_eq!(detail.summary.created_at, now);
        assert_eq!(detail.summary.attempt_count, 1);
        assert_eq!(detail.summary.last_attempt.as_ref(), Some(&attempt));
        assert_eq!(
            detail.summary.finished_at,
            Some(now + chrono::Duration::milliseconds(7))
        );
        assert_eq!(detail.summary.next_attempt_at, None);
        assert_eq!(detail.attempts, vec![attempt]);
        assert_eq!(detail.version, 1);
        assert_eq!(detail.summary.target_app.as_deref(), Some("billing"));
    }

    #[test]
    fn the_detail_follows_the_aggregate_through_a_retry_and_a_dead_letter() {
        let now = Utc::now();
        let spec = spec();
        let mut task = CallbackTask::default();
        let mut events = Vec::new();
        let run = |task: &mut CallbackTask, events: &mut Vec<TaskEvent>, command| {
            for event in task.decide(command).unwrap() {
                task.apply_event(&event);
                events.push(event);
            }
        };
        run(
            &mut task,
            &mut events,
            TaskCommand::Submit {
                spec: Arc::new(spec),
                at: now,
            },
        );
        run(&mut task, &mut events, timed_out(1, now));
        let detail = TaskDetail::fold("t1", &events).unwrap();
        assert_eq!(detail.summary.status, TaskStatus::Dead);
        assert_eq!(detail.summary.status, task.status());
        assert_eq!(detail.summary.attempt_count, 1);
        assert_eq!(detail.attempts.len(), 1);
        assert_eq!(detail.version, 3);
        assert!(detail.summary.reason.as_deref().unwrap().contains("timed out"));
        assert!(detail.summary.finished_at.is_some());

        run(&mut task, &mut events, TaskCommand::Retry { at: now });
        let detail = TaskDetail::fold("t1", &events).unwrap();
        assert_eq!(detail.summary.status, TaskStatus::Retrying);
        assert_eq!(detail.summary.reason, None);
        assert_eq!(detail.summary.next_attempt_at, Some(now));
    }

    #[test]
    fn each_attempt_is_paired_with_the_request_it_sent() {
        let now = Utc::now();
        let mut task = CallbackTask::default();
        let mut events = Vec::new();
        let mut run = |command| {
            for event in task.decide(command).unwrap() {
                task.apply_event(&event);
                events.push(event);
            }
        };
        run(TaskCommand::Submit {
            spec: Arc::new(spec()),
            at: now,
        });
        run(timed_out(1, now));
        let mut fixed = spec().request;
        fixed.url = "http://fixed/".into();
        run(TaskCommand::Replay {
            at: now,
            request: Some(Arc::new(fixed)),
        });
        run(timed_out(2, now));
        let urls: Vec<(u32, String)> = attempts_with_requests(&events)
            .into_iter()
            .map(|(attempt, request)| (attempt.number, request.url))
            .collect();
        assert_eq!(urls, vec![(1, "http://h/".into()), (2, "http://fixed/".into())]);
    }

    #[test]
    fn attempts_after_new_terms_show_where_they_went() {
        let now = Utc::now();
        let mut task = CallbackTask::default();
        let mut events = Vec::new();
        let mut record = |task: &mut CallbackTask, new: Vec<TaskEvent>| {
            for event in new {
                task.apply_event(&event);
                events.push(event);
            }
        };
        let mut patient = spec();
        patient.policy.max_attempts = 5;
        let submit = task
            .decide(TaskCommand::Submit {
                spec: Arc::new(patient),
                at: now,
            })
            .unwrap();
        record(&mut task, submit);
        let first = task.decide(timed_out(1, now)).unwrap();
        record(&mut task, first);
        let mut moved = spec().request.target();
        moved.url = "http://moved/".into();
        let mut policy = spec().policy;
        policy.max_attempts = 9;
        let adopted = task.adopt_terms(7, &policy, &moved, now).expect("new terms");
        record(&mut task, vec![adopted]);
        let second = task.decide(timed_out(2, now)).unwrap();
        record(&mut task, second);
        let urls: Vec<(u32, String)> = attempts_with_requests(&events)
            .into_iter()
            .map(|(attempt, request)| (attempt.number, request.url))
            .collect();
        assert_eq!(urls, vec![(1, "http://h/".into()), (2, "http://moved/".into())]);
        let detail = TaskDetail::fold("t1", &events).unwrap();
        assert_eq!(
            (detail.request.url.as_str(), detail.summary.url.as_str()),
            ("http://moved/", "http://moved/")
        );
        assert_eq!((detail.policy.max_attempts, detail.summary.max_attempts), (9, 9));
        assert_eq!(detail.request.body, spec().request.body, "the body stays");
    }
}
