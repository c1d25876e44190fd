//! Delayed messages (`POST /v1/brokers/{id}/messages` with `deliver_at` or
//! `delay_ms`): each message is a callback task whose attempt writes it to
//! the broker. The task's durable schedule holds it until due, through
//! restarts, kill -9 and node loss, as it holds retries; cancel, retries,
//! dead letters and per-app statistics are the task's.

use bida_domain::kinds::produce;
use bida_domain::matcher::judge;
use bida_domain::task::{
    check_deliver_at, DeliveryPolicy, DeliveryRequest, Method, ProduceSpec, TaskSpec, TaskSummary,
};
use bida_domain::{Body, Observation, ValidationErrors};
use bida_telemetry::{instruments, KeyValue};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::brokers::{AdminError, BrokerService};
use crate::delivery::Attempted;
use crate::produce::{ProduceError, Producers};
use crate::{TaskService, TaskServiceError};

#[derive(Debug, thiserror::Error)]
pub enum DelayedError {
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Task(#[from] TaskServiceError),
}

/// What a produce request asks for.
pub enum Submitted {
    /// No message has a time: written now, by the caller.
    Now(Value),
    /// Held until due, one task per message, in the request's order.
    Delayed { tasks: Vec<TaskSummary>, batch: bool },
}

#[derive(Clone)]
pub struct DelayedService {
    tasks: TaskService,
    brokers: BrokerService,
}

impl DelayedService {
    pub fn new(tasks: TaskService, brokers: BrokerService) -> Self {
        Self { tasks, brokers }
    }

    /// Holds the request's messages until their time, if they have one
    /// (every message of a batch, then). Each is checked as an immediate
    /// write would be, so a message that cannot be written is refused now,
    /// not when due.
    pub async fn submit(
        &self,
        broker_id: &str,
        app: Option<String>,
        mut request: Value,
    ) -> Result<Submitted, DelayedError> {
        let now = Utc::now();
        let mut errors = ValidationErrors::default();
        let Some(dues) = take_schedules(&mut request, self.tasks.limits(), now, &mut errors) else {
            return Ok(Submitted::Now(request));
        };
        let broker = self.brokers.load(broker_id).await?;
        let spec = match broker.spec() {
            Some(spec) if !broker.is_deleted() => spec,
            _ => return Err(AdminError::NotFound(format!("no broker with id {broker_id}")).into()),
        };
        let mut parsed = produce::parse_request(spec.connection.kind(), request.clone(), &mut errors)
            .map_err(|e| AdminError::Rejected(e.to_string()))?;
        if !errors.is_empty() {
            return Err(AdminError::Invalid(errors).into());
        }
        let defaults = self.tasks.defaults();
        let mut specs = Vec::with_capacity(parsed.messages.len());
        for ((outgoing, fields), due) in std::mem::take(&mut parsed.messages)
            .into_iter()
            .zip(messages(request))
            .zip(dues)
        {
            let mut message = fields;
            message.remove("body");
            message.remove("body_base64");
            message.insert("content_type".into(), Value::String(outgoing.content_type.clone()));
            let produce = ProduceSpec {
                broker_id: broker_id.to_string(),
                destination: outgoing.target.destination(),
                message,
            };
            let id = Uuid::now_v7().to_string();
            specs.push(TaskSpec {
                message_id: id,
                request: DeliveryRequest {
                    url: produce.locator(),
                    method: Method::Post,
                    headers: Default::default(),
                    body: Some(Body(outgoing.body)),
                    grpc: None,
                },
                policy: DeliveryPolicy {
                    max_attempts: defaults.max_attempts,
                    timeout_ms: defaults.timeout_ms,
                    backoff: defaults.backoff,
                    retry_on: defaults.retry_on.clone(),
                    expect: Default::default(),
                },
                source_app: app.clone(),
                target_app: None,
                deliver_at: Some(due),
                idempotency_key: None,
                origin: None,
                produce: Some(produce),
            });
        }
        // Together, so that the writer commits a batch's tasks in one group.
        let accepted = futures_util::future::try_join_all(
            specs
                .into_iter()
                .map(|spec| self.tasks.accept(spec.message_id.clone(), spec, None, now)),
        )
        .await?
        .into_iter()
        .map(|accepted| accepted.task)
        .collect();
        Ok(Submitted::Delayed {
            tasks: accepted,
            batch: parsed.batch,
        })
    }
}

/// The message objects of a produce request: itself, or its `messages`.
fn messages(request: Value) -> Vec<Map<String, Value>> {
    match request {
        Value::Object(mut request) => match request.remove("messages") {
            Some(Value::Array(batch)) => batch
                .into_iter()
                .filter_map(|m| match m {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => vec![request],
        },
        _ => Vec::new(),
    }
}

/// Takes `deliver_at` and `delay_ms` out of each message of a produce
/// request and resolves them: none when no message has either.
fn take_schedules(
    request: &mut Value,
    limits: &bida_domain::task::Limits,
    now: DateTime<Utc>,
    errors: &mut ValidationErrors,
) -> Option<Vec<DateTime<Utc>>> {
    let Value::Object(object) = request else {
        return None;
    };
    let batch = matches!(object.get("messages"), Some(Value::Array(_)));
    let mut found = Vec::new();
    if batch {
        if let Some(Value::Array(list)) = object.get_mut("messages") {
            for (index, message) in list.iter_mut().enumerate() {
                if let Value::Object(message) = message {
                    found.push((format!("messages[{index}]."), take(message)));
                }
            }
        }
        for name in ["deliver_at", "delay_ms"] {
            if object.contains_key(name) {
                errors.add(name, "give each message of a batch its own time");
            }
        }
    } else {
        found.push((String::new(), take(object)));
    }
    if found.iter().all(|(_, (at, delay))| at.is_none() && delay.is_none()) {
        // Times given beside a batch only: said in `errors`.
        return if errors.is_empty() { None } else { Some(Vec::new()) };
    }
    let mut dues = Vec::with_capacity(found.len());
    for (context, (at, delay)) in found {
        let at = match at {
            None => None,
            Some(Value::String(text)) => match DateTime::parse_from_rfc3339(&text) {
                Ok(at) => Some(at.with_timezone(&Utc)),
                Err(e) => {
                    errors.add(format!("{context}deliver_at"), format!("is not an RFC 3339 time: {e}"));
                    continue;
                }
            },
            Some(_) => {
                errors.add(format!("{context}deliver_at"), "must be an RFC 3339 time text");
                continue;
            }
        };
        let delay = match delay {
            None => None,
            Some(value) => match value.as_u64() {
                Some(ms) => Some(ms),
                None => {
                    errors.add(
                        format!("{context}delay_ms"),
                        "must be a whole number of milliseconds, 0 or more",
                    );
                    continue;
                }
            },
        };
        match check_deliver_at(at, delay, limits, now, &context, errors) {
            Some(due) => dues.push(due),
            None if at.is_none() && delay.is_none() => errors.add(
                format!("{context}deliver_at"),
                "a batch is delayed as a whole: give every message deliver_at or delay_ms",
            ),
            None => {}
        }
    }
    Some(dues)
}

fn take(message: &mut Map<String, Value>) -> (Option<Value>, Option<Value>) {
    (message.remove("deliver_at"), message.remove("delay_ms"))
}

/// Makes attempt number `attempt` of a broker-writing task: writes its message.
pub async fn attempt(producers: &Producers, spec: &TaskSpec, produce: &ProduceSpec, attempt: u32) -> Attempted {
    let started_at = Utc::now();
    let clock = Instant::now();
    let request = produce.request(spec.request.body.as_ref());
    let timeout = Duration::from_millis(spec.policy.timeout_ms);
    let observation = match tokio::time::timeout(timeout, producers.produce(&produce.broker_id, request)).await {
        Err(_) => Observation::Timeout {
            after_ms: spec.policy.timeout_ms,
        },
        Ok(Ok(written)) => Observation::Written {
            at: written
                .first()
                .and_then(|w| serde_json::to_string(&w.at).ok())
                .unwrap_or_default(),
        },
        // The broker is gone or the message no longer fits it: no retry helps.
        Ok(Err(ProduceError::Admin(
            e @ (AdminError::NotFound(_) | AdminError::Invalid(_) | AdminError::Rejected(_)),
        ))) => Observation::Unsendable { error: e.to_string() },
        Ok(Err(e)) => Observation::Failed { error: e.to_string() },
    };
    let elapsed = clock.elapsed();
    let verdict = judge(&spec.policy.expect, &spec.policy.retry_on, &observation, Utc::now());
    let outcome = match (&verdict, &observation) {
        (bida_domain::matcher::Verdict::Success, _) => "success",
        (_, Observation::Timeout { .. }) => "timeout",
        _ => "failure",
    };
    let mut labels = vec![
        KeyValue::new("bida.broker", produce.broker_id.clone()),
        KeyValue::new("bida.outcome", outcome),
    ];
    if let Some(app) = &spec.source_app {
        labels.push(KeyValue::new("bida.source_app", app.clone()));
    }
    instruments().delivery_attempts.add(1, &labels);
    tracing::debug!(task = %spec.message_id, attempt, broker = %produce.broker_id, outcome, "delayed message written");
    Attempted {
        started_at,
        latency_ms: elapsed.as_millis() as u64,
        response_excerpt: match &observation {
            Observation::Written { at } => Some(at.clone()),
            _ => None,
        },
        observation,
        signed: false,
        verdict,
    }
}
