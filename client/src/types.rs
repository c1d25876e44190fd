//! Requests and answers, mirroring the API's JSON (`/openapi.json`). Where
//! the API takes or answers fields that depend on a broker's kind (a
//! broker's connection, a consumer's source, a message's kind fields, where
//! a message landed), the type holds them as an open JSON object rather
//! than a schema of the client's own.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object: fields whose names and meaning depend on a broker's kind.
pub type Object = Map<String, Value>;

fn is_false(value: &bool) -> bool {
    !*value
}

// ---------------------------------------------------------------- paging

/// A page of a list. Pass `next_cursor` as the next query's `cursor`; it is
/// absent on the last page ([`crate::Pager`] does this for you).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Paging of the lists that have no filters (brokers, consumers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageQuery {
    /// 1 to the server's `api.max_page` (500 by default); 100 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------- tasks

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Delivering,
    Retrying,
    Delivered,
    Dead,
    Cancelled,
}

impl TaskStatus {
    /// Delivered, dead or cancelled: nothing more will happen by itself.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Delivered | TaskStatus::Dead | TaskStatus::Cancelled)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A callback task to submit (`POST /v1/tasks`). `params` (JSON), `body`
/// (text) and `body_base64` (bytes) exclude each other, as do `deliver_at`
/// and `delay_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub url: String,
    /// POST by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as the JSON body (or as the query string of a GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The body as text, sent as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as bytes, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffInput>,
    /// Status code patterns to retry on: `429`, `5xx`, `500-504`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    /// Set from the key for a producer key: leave it out then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    /// First attempt at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
    /// First attempt after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl Submission {
    /// A POST to `url`; the rest is the server's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// The JSON params (the body of a POST).
    pub fn params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }

    /// A body of text, sent as it is (give it a `content-type` header).
    pub fn body_text(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A body of bytes (base64 on the wire).
    pub fn body_bytes(mut self, body: &[u8]) -> Self {
        self.body_base64 = Some(STANDARD.encode(body));
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = Some(expect);
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(timeout.as_millis() as u64);
        self
    }

    pub fn apps(mut self, source_app: Option<&str>, target_app: Option<&str>) -> Self {
        self.source_app = source_app.map(String::from);
        self.target_app = target_app.map(String::from);
        self
    }

    pub fn deliver_at(mut self, at: DateTime<Utc>) -> Self {
        self.deliver_at = Some(at);
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }
}

/// What counts as delivered, besides a 2xx.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    /// Status code patterns that count as success (`2xx`, `200`, `200-204`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonExpectation>,
}

/// A field of a JSON answer that must have a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonExpectation {
    /// A JSON pointer (`/data/code`) or a dotted path (`data.code`).
    pub pointer: String,
    pub equals: Value,
}

/// Retry backoff as a request gives it: any part, the rest from defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackoffInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    #[serde(default)]
    pub jitter: f64,
}

/// A task as lists show it (and as `POST /v1/tasks` answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: String,
    pub status: TaskStatus,
    /// The id the endpoint sees (`webhook-id`).
    pub message_id: String,
    pub method: Method,
    pub url: String,
    pub attempt_count: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptRecord>,
    /// Why it was dead-lettered or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub signed: bool,
}

/// A task with its request, policy and every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub summary: TaskSummary,
    pub request: DeliveryRequest,
    pub policy: DeliveryPolicy,
    /// Oldest first.
    pub attempts: Vec<AttemptRecord>,
    pub version: u64,
    /// The broker write of a delayed message, instead of an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce: Option<ProduceSpec>,
}

/// The request a task sends (sensitive headers redacted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    pub url: String,
    pub method: Method,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as the API shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff: Backoff,
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// Where a delayed message's task writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProduceSpec {
    pub broker_id: String,
    pub destination: String,
    /// The message's fields besides its body; by the broker's kind.
    pub message: Object,
}

/// Filters of `GET /v1/tasks` (newest first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    /// Either the source or the target app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    /// `orders.example.com`, `[::1]`, or a URL (its host is taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// 1 to the server's `api.max_page`; 50 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Changes to a dead or cancelled task's request before it is replayed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestEdit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Replaces the headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// The body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as bytes, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl RequestEdit {
    pub fn body_bytes(mut self, body: &[u8]) -> Self {
        self.body_base64 = Some(STANDARD.encode(body));
        self
    }
}

/// Which dead (or cancelled) tasks `POST /v1/tasks/replay` delivers again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// Dead (the default) or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Most tasks to replay, oldest first (1000 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Count (and list) what the filter matches; replay nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayOutcome {
    pub matched: usize,
    /// On a dry run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_ids: Option<Vec<String>>,
    pub retried: usize,
    pub task_ids: Vec<String>,
    pub skipped: Vec<ReplayFailure>,
    pub failed: Vec<ReplayFailure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayFailure {
    pub id: String,
    pub detail: String,
}

// ---------------------------------------------------------------- brokers

/// A broker to register: its name, kind and the kind's connection settings
/// (`url` for RabbitMQ, NATS, Redis, MQTT, ActiveMQ; `bootstrap_servers` for
/// Kafka; `name_server` for RocketMQ... see the README's "Kinds of broker").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerSpec {
    pub name: String,
    /// `kafka`, `rabbitmq`, `nats`, `redis`, `mqtt`, `activemq`, `rocketmq`.
    pub kind: String,
    /// The kind's connection settings, by their API names.
    #[serde(flatten)]
    pub connection: Object,
}

impl BrokerSpec {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            connection: Object::new(),
        }
    }

    /// A connection setting of the kind (`url`, `management_url`...).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.connection.insert(name.into(), value.into());
        self
    }

    /// RabbitMQ at `amqp://user:password@host:5672/vhost`.
    pub fn rabbitmq(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(name, "rabbitmq").setting("url", url.into())
    }

    /// Kafka at `host:port[,host:port...]`.
    pub fn kafka(name: impl Into<String>, bootstrap_servers: impl Into<String>) -> Self {
        Self::new(name, "kafka").setting("bootstrap_servers", bootstrap_servers.into())
    }
}

/// A broker as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerView {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// The kind's connection settings, passwords hidden.
    pub connection: Object,
    pub online: bool,
    #[serde(default)]
    pub deleted: bool,
    pub capabilities: Capabilities,
    /// Present when the broker was looked at live (`GET /v1/brokers/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BrokerHealth>,
    /// What is inside it when looked at live, by kind (Kafka's `topics`,
    /// RabbitMQ's `queues`...).
    #[serde(flatten)]
    pub inside: Object,
}

/// What a kind of broker can do beyond delivering its messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub lag: bool,
    pub offset_reset: bool,
    pub resend_range: bool,
    pub keys: bool,
    pub takeover: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerHealth {
    pub reachable: bool,
    pub checked_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------- produce

/// A message to write to a broker: a body ([`Message::json`] or
/// [`Message::bytes`]), an optional content type and headers, and the
/// broker kind's own fields ([`Message::field`]: Kafka `topic`, `key`,
/// `partition`; RabbitMQ `exchange`, `routing_key`, `message_id`...; see the
/// README's "Writing to a broker over HTTP").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The body as JSON, written as its JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The body as bytes, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// application/json for `body`, application/octet-stream for bytes by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The broker kind's fields, by their API names.
    #[serde(flatten)]
    pub fields: Object,
}

impl Message {
    /// A JSON body.
    pub fn json(body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::default()
        }
    }

    /// A body of bytes (base64 on the wire, written as the bytes).
    pub fn bytes(body: &[u8]) -> Self {
        Self {
            body_base64: Some(STANDARD.encode(body)),
            ..Self::default()
        }
    }

    /// A field of the broker's kind (`topic`, `routing_key`, `key`...).
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// The body's bytes, as they are written.
    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        match (&self.body, &self.body_base64) {
            (Some(json), _) => serde_json::to_vec(json).ok(),
            (None, Some(encoded)) => STANDARD.decode(encoded).ok(),
            (None, None) => None,
        }
    }

    pub(crate) fn delayed(mut self, delay: Delay) -> Self {
        match delay {
            Delay::At(at) => {
                self.fields.remove("delay_ms");
                self.fields.insert("deliver_at".into(), Value::String(at.to_rfc3339()));
            }
            Delay::After(after) => {
                self.fields.remove("deliver_at");
                self.fields
                    .insert("delay_ms".into(), Value::from(after.as_millis() as u64));
            }
        }
        self
    }
}

/// When a delayed message is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// At this time (`deliver_at`).
    At(DateTime<Utc>),
    /// This long from now (`delay_ms`).
    After(Duration),
}

/// Where a message landed: its `index` in the request and the kind's own
/// fields (Kafka `topic`, `partition`, `offset`; RabbitMQ `exchange`,
/// `routing_key`, `confirmed`; NATS `stream`, `sequence`, `duplicate`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub index: usize,
    #[serde(flatten)]
    pub landed: Object,
}

impl Written {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.landed.get(field)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProduceResult {
    pub messages: Vec<Written>,
}

/// A delayed write accepted (`202`): the delayed messages' ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedAccepted {
    /// The message's id, when the request was one message (not a batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub messages: Vec<DelayedId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedId {
    pub index: usize,
    /// For [`crate::Client::delayed`] and [`crate::Client::cancel_delayed`].
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------- delayed

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelayedState {
    /// Waiting for its time.
    Pending,
    /// Due, and being written now.
    Producing,
    /// A write failed; another is scheduled.
    Retrying,
    /// The broker confirmed it.
    Produced,
    /// Every write failed, or the broker is gone (replayable).
    Dead,
    Cancelled,
}

/// A delayed message as lists show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedSummary {
    pub id: String,
    pub state: DelayedState,
    pub broker_id: String,
    /// The topic, subject, `exchange/routing_key`... it is written to.
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub attempt_count: u32,
    /// Where the broker put it, once produced (the kind's fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landed: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A delayed message with the message it will write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedMessage {
    #[serde(flatten)]
    pub summary: DelayedSummary,
    /// The kind's fields, `content_type`, `headers`, and the body as
    /// `body_base64`.
    pub message: Object,
}

/// Filters of `GET /v1/delayed`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DelayedQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DelayedState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<String>,
    /// The destination: a topic, subject, stream, queue...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------- consumers

/// A consumer to create: a source on a broker, bound to an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerInput {
    pub name: String,
    pub broker_id: String,
    /// The broker kind's source fields: `{"queue": "q"}` (RabbitMQ),
    /// `{"topics": ["t"], "group": "g"}` (Kafka), `{"stream": "S",
    /// "durable": "d"}` (NATS)... see the README's "A consumer".
    pub source: Object,
    pub endpoint: EndpointInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

impl ConsumerInput {
    pub fn new(name: impl Into<String>, broker_id: impl Into<String>, source: Object, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            broker_id: broker_id.into(),
            source,
            endpoint: EndpointInput {
                url: Some(url.into()),
                ..EndpointInput::default()
            },
            policy: None,
            app_id: None,
        }
    }
}

/// Where a consumer delivers, as a request gives it (the rest defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A consumer's delivery policy as a request gives it (the rest defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// Deliveries in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerInput>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Deliveries in parallel.
    None,
    /// One at a time per message key, in order.
    Key,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ms: Option<u64>,
}

/// A live change of a consumer: its endpoint, its policy or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInput>,
}

/// What the operator wants a consumer to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Paused,
    Stopped,
}

/// Where a consumer is, as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerState {
    Running,
    BreakerOpen,
    Paused,
    Restarting,
    Starting,
    Stopping,
    Stopped,
    BrokerOffline,
    Deleted,
}

/// A consumer: what it reads, where it delivers, its state and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerView {
    pub id: String,
    pub name: String,
    pub broker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The source with its `kind` and the kind's fields.
    pub source: Object,
    pub endpoint: Endpoint,
    /// The delivery policy in full (`ConsumerPolicy` in `/openapi.json`).
    pub policy: Value,
    pub desired_state: DesiredState,
    pub state: ConsumerState,
    pub counters: Counters,
    /// Backlog per partition or queue (`Backlog` in `/openapi.json`).
    #[serde(default)]
    pub lag: Vec<Value>,
    pub lag_total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Each node's report (`NodeReport` in `/openapi.json`).
    #[serde(default)]
    pub nodes: Vec<Value>,
    /// Ordering by key: parked lanes (key → the dead task holding it).
    #[serde(default)]
    pub parked_lanes: BTreeMap<String, String>,
    pub crashes: u64,
    /// Anomalies of the source seen (`RecordedAnomaly` in `/openapi.json`).
    #[serde(default)]
    pub anomalies: Vec<Value>,
    #[serde(default)]
    pub deleted: bool,
}

/// Where a consumer delivers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub url: String,
    pub method: Method,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub consumed: i64,
    pub delivered: i64,
    pub failed_attempts: i64,
    pub retrying: i64,
    pub dead: i64,
    pub timeouts: i64,
    pub consumed_per_sec: f64,
    pub delivered_per_sec: f64,
}

/// A consumer's lifecycle action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerAction {
    Pause,
    Resume,
    Stop,
    Start,
}

impl ConsumerAction {
    pub const ALL: [ConsumerAction; 4] = [Self::Pause, Self::Resume, Self::Stop, Self::Start];

    /// The action's path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Stop => "stop",
            Self::Start => "start",
        }
    }
}

/// Where a (stopped) Kafka consumer's group starts again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
    Timestamp { timestamp: DateTime<Utc> },
    Offsets { offsets: Vec<PartitionOffset> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffsetsCommitted {
    pub committed: Vec<PartitionOffset>,
}

/// Deliver again a recorded message (`task_id`) or a range of a partition
/// or stream (`topic`, `partition`, `from`, `to`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResendRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// First position (inclusive): an offset or sequence number, or an
    /// entry id for kinds whose positions are not numbers (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// Last position (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

impl ResendRequest {
    pub fn task(task_id: impl Into<String>) -> Self {
        Self {
            task_id: Some(task_id.into()),
            ..Self::default()
        }
    }

    pub fn range(
        topic: impl Into<String>,
        partition: Option<i32>,
        from: impl Into<Value>,
        to: impl Into<Value>,
    ) -> Self {
        Self {
            topic: Some(topic.into()),
            partition,
            from: Some(from.into()),
            to: Some(to.into()),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResendOutcome {
    pub task_ids: Vec<String>,
}
