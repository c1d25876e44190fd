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
    /// The gRPC status name (`UNAVAILABLE`...), when a gRPC method answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
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
    /// The gRPC method a gRPC delivery calls on `url` (the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcCall>,
}

/// The gRPC method of a gRPC delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpcCall {
    /// `package.Service/Method`.
    pub method: String,
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
    /// A consumer pushing to the HTTP endpoint `url`.
    pub fn new(name: impl Into<String>, broker_id: impl Into<String>, source: Object, url: impl Into<String>) -> Self {
        Self::with_endpoint(name, broker_id, source, EndpointInput::http(url))
    }

    /// A pull consumer: members pull its messages
    /// ([`crate::Client::pull_consumer`]); the pull settings default
    /// (cluster mode, 30 s leases, batches of 100).
    pub fn pull(name: impl Into<String>, broker_id: impl Into<String>, source: Object) -> Self {
        Self::with_endpoint(name, broker_id, source, EndpointInput::pull())
    }

    pub fn with_endpoint(
        name: impl Into<String>,
        broker_id: impl Into<String>,
        source: Object,
        endpoint: EndpointInput,
    ) -> Self {
        Self {
            name: name.into(),
            broker_id: broker_id.into(),
            source,
            endpoint,
            policy: None,
            app_id: None,
        }
    }
}

/// Where a consumer delivers, as a request gives it (the rest defaults):
/// `kind` `http` (the default) with `url`, `method`, `headers`,
/// `timeout_ms`; or `pull` with `mode`, `lease_ms`, `batch`,
/// `member_timeout_ms`, `max_waiting`. A consumer's kind is fixed once it exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInput {
    /// `http` when left out (or the consumer's kind, in a patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EndpointKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Pull: `cluster` (the default) or `broadcast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PullMode>,
    /// Pull: how long a member holds a message before it is given again
    /// (30000 by default; 1000 to 3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Pull: most messages one pull returns (100 by default; up to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// Pull: a member not heard from for this long is gone and its leases
    /// return (30000 by default; 3000 to 3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_timeout_ms: Option<u64>,
    /// Pull: most messages waiting in a lane before the consumer takes no
    /// more from the broker (1000 by default; 1 to 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<u32>,
}

impl EndpointInput {
    /// An HTTP endpoint at `url` (POST, the server's timeout).
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// A pull endpoint with the default settings; set them with
    /// [`mode`](Self::mode), [`lease`](Self::lease), [`batch`](Self::batch)
    /// and [`member_timeout`](Self::member_timeout).
    pub fn pull() -> Self {
        Self {
            kind: Some(EndpointKind::Pull),
            ..Self::default()
        }
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), value.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(millis(timeout));
        self
    }

    pub fn mode(mut self, mode: PullMode) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease_ms = Some(millis(lease));
        self
    }

    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = Some(batch);
        self
    }

    pub fn member_timeout(mut self, timeout: Duration) -> Self {
        self.member_timeout_ms = Some(millis(timeout));
        self
    }

    pub fn max_waiting(mut self, max_waiting: u32) -> Self {
        self.max_waiting = Some(max_waiting);
        self
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How a consumer delivers: pushed to an HTTP endpoint, or pulled by members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Http,
    Pull,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Pull => "pull",
        }
    }
}

/// How a pull consumer's messages go to its members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullMode {
    /// Each message goes to one member at a time.
    #[default]
    Cluster,
    /// Every live member gets every message, each its own copy.
    Broadcast,
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

/// Where a consumer delivers: `{"kind": "http", "url": ...}` or
/// `{"kind": "pull", "mode": ...}`. An endpoint without `kind` (as servers
/// before pull consumers answered) reads as HTTP.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    Http(HttpEndpoint),
    Pull(PullEndpoint),
}

impl Endpoint {
    /// An HTTP endpoint: POST to `url` with no headers of its own.
    pub fn http(url: impl Into<String>, timeout: Duration) -> Self {
        Self::Http(HttpEndpoint {
            url: url.into(),
            method: Method::Post,
            headers: BTreeMap::new(),
            timeout_ms: millis(timeout),
        })
    }

    pub fn kind(&self) -> EndpointKind {
        match self {
            Self::Http(_) => EndpointKind::Http,
            Self::Pull(_) => EndpointKind::Pull,
        }
    }

    pub fn as_http(&self) -> Option<&HttpEndpoint> {
        match self {
            Self::Http(http) => Some(http),
            Self::Pull(_) => None,
        }
    }

    pub fn as_pull(&self) -> Option<&PullEndpoint> {
        match self {
            Self::Pull(pull) => Some(pull),
            Self::Http(_) => None,
        }
    }

    /// The URL of an HTTP endpoint.
    pub fn url(&self) -> Option<&str> {
        self.as_http().map(|http| http.url.as_str())
    }
}

impl From<HttpEndpoint> for Endpoint {
    fn from(http: HttpEndpoint) -> Self {
        Self::Http(http)
    }
}

impl From<PullEndpoint> for Endpoint {
    fn from(pull: PullEndpoint) -> Self {
        Self::Pull(pull)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = Object::deserialize(deserializer)?;
        let kind = match fields.remove("kind") {
            None => EndpointKind::Http,
            Some(kind) => EndpointKind::deserialize(kind).map_err(D::Error::custom)?,
        };
        let fields = Value::Object(fields);
        match kind {
            EndpointKind::Http => HttpEndpoint::deserialize(fields).map(Self::Http),
            EndpointKind::Pull => PullEndpoint::deserialize(fields).map(Self::Pull),
        }
        .map_err(D::Error::custom)
    }
}

/// An HTTP endpoint messages are pushed to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpEndpoint {
    pub url: String,
    pub method: Method,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

/// A pull endpoint: members pull the messages. Every field is live: members
/// read it from each pull and heartbeat ([`MemberSettings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullEndpoint {
    pub mode: PullMode,
    /// How long a member holds a pulled message before it is given again.
    pub lease_ms: u64,
    /// Most messages one pull returns.
    pub batch: u32,
    /// A member not heard from for this long is gone: its leases return and
    /// (broadcast) it gets no more copies.
    pub member_timeout_ms: u64,
    /// Most messages waiting in a lane before the consumer takes no more
    /// from the broker.
    pub max_waiting: u32,
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

// ---------------------------------------------------------------- pull

/// A pull (`POST /v1/consumers/{id}/pull`): up to `max` messages, waiting
/// up to `wait_ms` for the first one (a long poll). Every pull is also the
/// member's heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The member's name: 1 to 128 of letters, digits and `.`, `_`, `-`,
    /// `:`, `@` (a host or pod name). The same name is the same member.
    pub member: String,
    /// Most messages to return (1 by default; also capped by the
    /// consumer's `batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long to wait when no message is due (0 by default; at most 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Where the member runs, shown in the members list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
}

impl PullRequest {
    /// One message, answered at once.
    pub fn new(member: impl Into<String>) -> Self {
        Self {
            member: member.into(),
            ..Self::default()
        }
    }

    pub fn max(mut self, max: u32) -> Self {
        self.max = Some(max);
        self
    }

    /// Wait up to this long for a message (a long poll).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait_ms = Some(millis(wait));
        self
    }

    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    pub fn client_version(mut self, version: impl Into<String>) -> Self {
        self.client_version = Some(version.into());
        self
    }
}

/// What a pull answers: the messages leased to the member (none when none
/// was due in time, or while the consumer is paused) and the consumer's
/// live settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    pub messages: Vec<PulledMessage>,
    pub settings: MemberSettings,
}

/// What a member reads from every pull and heartbeat: the consumer's
/// settings as they are now (a patch reaches members this way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSettings {
    pub mode: PullMode,
    /// Most messages one pull returns.
    pub batch: u32,
    /// Messages a member should work on at once (the consumer's policy).
    pub concurrency: u32,
    /// While paused (or stopped), pulls return no messages.
    pub paused: bool,
    pub lease_ms: u64,
    /// How often to heartbeat (or pull) to stay alive.
    pub heartbeat_ms: u64,
}

/// One message leased to a member until `leased_until`: ack it
/// ([`crate::Client::ack`]) or nack it ([`crate::Client::nack`]) with its
/// `lease` before then, or it is given again (`attempt` one more).
///
/// Delivery is at least once: a message may come again (a lease that ran
/// out before its ack, a member that crashed between handling and ack);
/// de-duplicate by `task_id`, which stays the same across redeliveries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PulledMessage {
    /// What to ack or nack it with.
    pub lease: String,
    pub leased_until: DateTime<Utc>,
    /// The task recording its attempts (`GET /v1/tasks/{id}`): the same for
    /// every redelivery of the message.
    pub task_id: String,
    /// The source message's id.
    pub message_id: String,
    /// 1 for the first lease, one more for each after it.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where it was read: `topic/partition@offset`, or the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// `content-type` and `traceparent`, as the message carried them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub body: PulledBody,
}

impl PulledMessage {
    /// The body's bytes, as they were produced.
    pub fn bytes(&self) -> Vec<u8> {
        self.body.as_bytes().to_vec()
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        self.body.as_text()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.body.as_bytes())
    }

    /// The `content-type` header, if the message had one.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("content-type").map(String::as_str)
    }
}

/// A pulled message's body: `{"text": "..."}` on the wire when it is UTF-8
/// (without NUL), `{"base64": "..."}` otherwise; held decoded.
#[derive(Clone, PartialEq, Eq)]
pub enum PulledBody {
    Text(String),
    Bytes(Vec<u8>),
}

impl PulledBody {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Text(text) => text.into_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for PulledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Self::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BodyRepr<T> {
    Text(T),
    Base64(T),
}

impl Serialize for PulledBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => BodyRepr::Text(text.as_str()).serialize(serializer),
            Self::Bytes(bytes) => BodyRepr::Base64(STANDARD.encode(bytes)).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PulledBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match BodyRepr::<String>::deserialize(deserializer)? {
            BodyRepr::Text(text) => Ok(Self::Text(text)),
            BodyRepr::Base64(encoded) => STANDARD
                .decode(encoded)
                .map(Self::Bytes)
                .map_err(|e| serde::de::Error::custom(format!("body.base64: {e}"))),
        }
    }
}

/// An ack (`POST /v1/consumers/{id}/ack`): each message was handled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// Up to 1000 leases.
    pub leases: Vec<String>,
    /// The member acking: leases another member holds are then answered
    /// as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// A nack (`POST /v1/consumers/{id}/nack`): the messages are given back,
/// to be pulled again after `delay_ms` (or the consumer's backoff), or
/// dead-lettered now with `dead`. Each counts as a failed attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackRequest {
    /// Up to 1000 leases.
    pub leases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Pull it again after this long instead of the consumer's backoff
    /// (at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Why, recorded with the attempt (up to 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Dead-letter the messages now instead of retrying them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dead: bool,
}

impl NackRequest {
    pub fn new<I>(leases: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self {
            leases: leases.into_iter().map(|lease| lease.as_ref().to_string()).collect(),
            ..Self::default()
        }
    }

    pub fn member(mut self, member: impl Into<String>) -> Self {
        self.member = Some(member.into());
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(millis(delay));
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Dead-letter instead of retrying.
    pub fn dead(mut self) -> Self {
        self.dead = true;
        self
    }
}

/// What became of each lease of an ack or nack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// Recorded as asked.
    pub settled: Vec<String>,
    /// No longer held: the lease ran out (the message goes, or went, to a
    /// member again), it was settled before, or it is not this consumer's
    /// (or, with `member`, not that member's).
    pub expired: Vec<String>,
}

/// A member's heartbeat (`POST /v1/consumers/{id}/members/{member}/heartbeat`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
}

/// A pull consumer's members and lanes (`GET /v1/consumers/{id}/members`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Members {
    pub members: Vec<MemberView>,
    pub lanes: Vec<LaneView>,
    pub settings: MemberSettings,
}

impl Members {
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.member == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    pub joined_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Heard from within the consumer's `member_timeout_ms`.
    pub alive: bool,
    pub leases_in_flight: i64,
    pub acked: i64,
    /// Over the last 10 to 20 seconds.
    pub acked_per_sec: f64,
}

/// The queue messages wait in for a pull: the consumer's (cluster mode) or
/// one member's (`<consumer>/<member>`, broadcast mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneView {
    pub lane: String,
    /// Due now or at their retry time.
    pub waiting: i64,
    pub leased: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pull_answer_reads_with_its_bodies_as_bytes() {
        let answer = json!({
            "messages": [
                {
                    "lease": "0190f3a4-7c1e-7d2a-9a6b-1f2e3d4c5b6a",
                    "leased_until": "2026-01-02T03:04:05.678Z",
                    "task_id": "t-1",
                    "message_id": "orders/0@42",
                    "attempt": 2,
                    "key": "order-42",
                    "position": "orders/0@42",
                    "headers": {"content-type": "application/json", "traceparent": "00-abc-def-01"},
                    "body": {"text": "{\"id\": 42}"}
                },
                {
                    "lease": "0190f3a4-7c1e-7d2a-9a6b-1f2e3d4c5b6b",
                    "leased_until": "2026-01-02T03:04:05Z",
                    "task_id": "t-2",
                    "message_id": "m-2",
                    "attempt": 1,
                    "body": {"base64": "AP8="}
                }
            ],
            "settings": {"mode": "broadcast", "batch": 100, "concurrency": 16, "paused": false,
                         "lease_ms": 30000, "heartbeat_ms": 10000}
        });
        let pulled: Pulled = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(pulled.settings.mode, PullMode::Broadcast);
        assert_eq!(
            (pulled.settings.concurrency, pulled.settings.heartbeat_ms),
            (16, 10_000)
        );
        let [first, second] = &pulled.messages[..] else {
            panic!("two messages")
        };
        assert_eq!(first.json::<Value>().unwrap(), json!({"id": 42}));
        assert_eq!(first.text(), Some("{\"id\": 42}"));
        assert_eq!(first.content_type(), Some("application/json"));
        assert_eq!((first.attempt, first.key.as_deref()), (2, Some("order-42")));
        assert_eq!(first.leased_until.timestamp_subsec_millis(), 678);
        assert_eq!(second.bytes(), vec![0, 255]);
        assert_eq!(second.text(), None);
        assert!(second.json::<Value>().is_err());
        assert!(second.headers.is_empty() && second.key.is_none() && second.position.is_none());
        // And back as the server writes it.
        assert_eq!(serde_json::to_value(&pulled).unwrap(), answer);
    }

    #[test]
    fn endpoints_are_tagged_by_kind() {
        let http = json!({"kind": "http", "url": "https://x.example/hook", "method": "POST",
                          "headers": {"x-a": "1"}, "timeout_ms": 10000});
        let endpoint: Endpoint = serde_json::from_value(http.clone()).unwrap();
        assert_eq!(endpoint.kind(), EndpointKind::Http);
        assert_eq!(endpoint.url(), Some("https://x.example/hook"));
        assert_eq!(serde_json::to_value(&endpoint).unwrap(), http);

        let pull = json!({"kind": "pull", "mode": "cluster", "lease_ms": 30000, "batch": 100,
                          "member_timeout_ms": 30000, "max_waiting": 1000});
        let endpoint: Endpoint = serde_json::from_value(pull.clone()).unwrap();
        assert_eq!(
            endpoint.as_pull(),
            Some(&PullEndpoint {
                mode: PullMode::Cluster,
                lease_ms: 30_000,
                batch: 100,
                member_timeout_ms: 30_000,
                max_waiting: 1000
            })
        );
        assert_eq!(endpoint.url(), None);
        assert_eq!(serde_json::to_value(&endpoint).unwrap(), pull);

        // As servers before pull consumers answered: HTTP.
        let old: Endpoint =
            serde_json::from_value(json!({"url": "http://a/", "method": "PUT", "timeout_ms": 5})).unwrap();
        let Endpoint::Http(mut expected) = Endpoint::http("http://a/", Duration::from_millis(5)) else {
            unreachable!()
        };
        expected.method = Method::Put;
        assert_eq!(old, Endpoint::Http(expected));
        assert!(serde_json::from_value::<Endpoint>(json!({"kind": "carrier-pigeon"})).is_err());
        assert!(serde_json::from_value::<Endpoint>(json!({"kind": "pull", "mode": "cluster"})).is_err());
    }

    #[test]
    fn endpoint_inputs_send_only_what_is_set() {
        assert_eq!(
            serde_json::to_value(EndpointInput::http("http://a/").timeout(Duration::from_secs(2))).unwrap(),
            json!({"url": "http://a/", "timeout_ms": 2000})
        );
        let pull = EndpointInput::pull()
            .mode(PullMode::Broadcast)
            .lease(Duration::from_secs(5))
            .batch(10)
            .member_timeout(Duration::from_secs(9));
        assert_eq!(
            serde_json::to_value(pull).unwrap(),
            json!({"kind": "pull", "mode": "broadcast", "lease_ms": 5000, "batch": 10, "member_timeout_ms": 9000})
        );
        let consumer = ConsumerInput::pull("c", "b", Object::new());
        assert_eq!(
            serde_json::to_value(&consumer).unwrap()["endpoint"],
            json!({"kind": "pull"})
        );
    }

    #[test]
    fn acks_nacks_and_members_have_the_servers_shapes() {
        let nack = NackRequest::new(["l-1", "l-2"])
            .member("host-1")
            .delay(Duration::from_secs(5))
            .reason("busy");
        assert_eq!(
            serde_json::to_value(&nack).unwrap(),
            json!({"leases": ["l-1", "l-2"], "member": "host-1", "delay_ms": 5000, "reason": "busy"})
        );
        assert_eq!(
            serde_json::to_value(NackRequest::new(["l"]).dead()).unwrap()["dead"],
            json!(true)
        );
        assert_eq!(
            serde_json::to_value(PullRequest::new("host-1").max(100).wait(Duration::from_secs(20))).unwrap(),
            json!({"member": "host-1", "max": 100, "wait_ms": 20000})
        );
        let members: Members = serde_json::from_value(json!({
            "members": [{"member": "host-1", "address": "10.0.0.1", "joined_at": "2026-01-01T00:00:00Z",
                         "last_heartbeat_at": "2026-01-01T00:00:10Z", "alive": true,
                         "leases_in_flight": 3, "acked": 120, "acked_per_sec": 12.5}],
            "lanes": [{"lane": "c-1", "waiting": 7, "leased": 3}],
            "settings": {"mode": "cluster", "batch": 100, "concurrency": 16, "paused": true,
                         "lease_ms": 30000, "heartbeat_ms": 10000}
        }))
        .unwrap();
        let member = members.member("host-1").unwrap();
        assert!(member.alive && member.client_version.is_none());
        assert_eq!((member.leases_in_flight, member.acked_per_sec), (3, 12.5));
        assert_eq!(members.lanes[0].waiting, 7);
        assert!(members.settings.paused);
    }
}
