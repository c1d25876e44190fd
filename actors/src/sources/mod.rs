//! Message sources: where consumers read from. Each broker kind is a folder
//! here implementing [`Kind`] (its [`Source`], acknowledgement, backlog probe
//! and admin operations); `registry.rs` joins them. The consumer pipeline
//! does the rest (concurrency, rate, ordering, delivery, recording,
//! acknowledgement), whatever the kind.

pub mod activemq;
pub mod builtin;
mod dynamic;
pub mod kafka;
#[cfg(test)]
pub mod memory;
pub mod mqtt;
pub mod nats;
mod progress;
pub mod rabbitmq;
pub mod redis;
mod registry;
pub mod rocketmq;

pub use dynamic::BoxedSource;
pub use progress::{BacklogProblem, ProgressWatch, STALL_AFTER};
pub use registry::{backlog, look, open, read_range, reset_offsets};

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceAnomaly, SourceMessage};
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::future::Future;

/// Text from a message that will travel in events and headers: kept when it is
/// clean UTF-8 without control characters, otherwise base64 with a `base64:`
/// prefix (so that distinct binary keys stay distinct and no NUL reaches
/// Postgres).
pub fn clean_text(bytes: &[u8]) -> String {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// A header value from a message (a content type), if it can be one.
pub fn header_text(bytes: &[u8]) -> Option<String> {
    http::HeaderValue::from_bytes(bytes)
        .ok()?
        .to_str()
        .ok()
        .map(String::from)
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    #[error("the broker refused: {0}")]
    Broker(String),
    #[error("the connection to the broker was lost: {0}")]
    Lost(String),
    /// The request does not fit the broker's data (a partition that does not exist...).
    #[error("{0}")]
    Invalid(String),
    /// The kind of broker cannot do it (see its capabilities).
    #[error("{0}")]
    Unsupported(String),
}

/// Confirms a message to its broker once its outcome is recorded.
pub trait Acknowledge: Send {
    /// Done with: the broker may forget the message.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
}

/// A message and the means to acknowledge it.
pub struct Incoming {
    pub message: SourceMessage,
    pub ack: Box<dyn Acknowledge>,
}

/// Something a source saw that must be recorded (a consumer event, an
/// alert) before the consumer moves past it.
pub struct Observed {
    pub anomaly: SourceAnomaly,
    /// Acknowledged once the anomaly is recorded: a skipped range's place in
    /// the commit order.
    pub ack: Option<Box<dyn Acknowledge>>,
}

/// Backlog of one partition or queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backlog {
    /// `topic/partition`, or the queue name.
    pub source: String,
    /// The topic, queue or stream.
    pub destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Messages not yet consumed (Kafka: end offset minus committed offset;
    /// RabbitMQ: messages ready in the queue).
    pub lag: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    /// What is wrong with it (a lag of 0 does not hide a stuck partition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<BacklogProblem>,
}

impl Backlog {
    /// The backlog of one partition (or of a destination without partitions).
    pub fn of(destination: &str, partition: Option<i32>, lag: i64) -> Self {
        let at = match partition {
            Some(partition) => Position::partition(destination, partition),
            None => Position::destination(destination),
        };
        Self {
            source: at.to_string(),
            destination: destination.to_string(),
            partition,
            lag,
            committed: None,
            end: None,
            problem: None,
        }
    }
}

/// Reads the backlog without borrowing the source, which the pump holds.
pub trait BacklogProbe: Send + Sync {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>>;
}

/// A stream of messages from one broker source.
pub trait Source: Send + 'static {
    /// The next message. Cancel-safe: a dropped call loses nothing.
    fn next(&mut self) -> impl Future<Output = Result<Incoming, SourceError>> + Send;

    /// Stops (or restarts) fetching from the broker, keeping the connection, so
    /// that the backlog stays in the broker (Kafka: partitions paused).
    fn set_paused(&mut self, paused: bool) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// How many messages the broker may hand out unacknowledged.
    fn set_prefetch(&mut self, messages: u32) -> impl Future<Output = Result<(), SourceError>> + Send;

    fn backlog_probe(&self) -> std::sync::Arc<dyn BacklogProbe>;

    /// Partitions this consumer lost to another since the last call:
    /// messages held from them must be let go.
    fn take_revoked(&mut self) -> Vec<Position> {
        Vec::new()
    }

    /// Where the source reports anomalies, taken once by the pump.
    fn take_anomaly_feed(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Observed>> {
        None
    }

    /// Leaves cleanly: Kafka commits what is done and leaves the group;
    /// RabbitMQ returns unacknowledged messages to the queue.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// What a consumer's source is opened with.
#[derive(Clone, Debug)]
pub struct Client {
    /// How the consumer names itself to the broker (`bida-<node>-<consumer>`).
    pub id: String,
    /// The consumer's concurrency, which sizes its fetching.
    pub concurrency: u32,
    /// How long one delivery may take at the endpoint: brokers that hand an
    /// unacknowledged message to another member after a deadline (NATS) set
    /// it above this.
    pub delivery_timeout: std::time::Duration,
    /// Wake-ups of built-in topics' readers (the only kind that needs them).
    pub topic_wakes: crate::topics::TopicWakes,
}

/// A look inside a broker, for its view, the console and the gauges.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// What the kind shows in the API, by name (Kafka's `topics`,
    /// RabbitMQ's `queues`...).
    pub sections: serde_json::Map<String, serde_json::Value>,
    /// Its topics, queues or streams, for people and gauges.
    pub destinations: Vec<Destination>,
    /// Figures about the broker as a whole, for people.
    pub facts: Vec<Fact>,
    /// Messages published per second, where the broker tells.
    pub publish_rate: Option<f64>,
}

/// A topic, queue or stream inside a broker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Destination {
    pub name: String,
    /// Messages it holds now.
    pub messages: Option<i64>,
    /// Messages ever written to it.
    pub written: Option<i64>,
    pub partitions: Option<usize>,
    /// Consumers attached to it (Bida's and others).
    pub consumers: Option<i64>,
}

/// One figure about a broker: `key` names it in the page (`broker-fact-version`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub key: &'static str,
    /// In English and in Chinese.
    pub label: (&'static str, &'static str),
    pub value: String,
}

impl Inspection {
    pub fn section(&mut self, name: &str, value: impl Serialize) {
        if let Ok(value) = serde_json::to_value(value) {
            self.sections.insert(name.to_string(), value);
        }
    }
}

/// A range of one partition's (or destination's) messages to read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub destination: String,
    pub partition: Option<i32>,
    /// First offset or id (inclusive).
    pub from: Offset,
    /// Last offset or id (inclusive).
    pub to: Offset,
    /// At most this many messages.
    pub limit: usize,
}

impl Range {
    /// The range as numbers, for kinds whose offsets are numbers.
    pub fn numbers(&self, kind: &str) -> Result<(i64, i64), SourceError> {
        match (self.from.number(), self.to.number()) {
            (Some(from), Some(to)) => Ok((from, to)),
            _ => Err(SourceError::Invalid(format!("{kind} offsets are numbers"))),
        }
    }
}

/// One broker kind at run time. The registry hands each kind its own
/// connection and source types; what a kind cannot do it leaves to the
/// defaults, which say so.
pub trait Kind {
    type Connection;
    type Source;

    /// Connects a consumer's source.
    fn open<'a>(
        connection: &'a Self::Connection,
        source: &'a Self::Source,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>>;

    /// Whether the broker answers, and what is inside it. `known` are the
    /// sources of its consumers (for brokers that cannot list everything).
    fn look<'a>(
        connection: &'a Self::Connection,
        known: Vec<&'a Self::Source>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>>;

    /// The backlog of a consumer's source as the broker sees it now.
    fn backlog<'a>(
        connection: &'a Self::Connection,
        source: &'a Self::Source,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>>;

    /// Moves the consumer's position (it is stopped) and says where to.
    fn reset_offsets<'a>(
        _connection: &'a Self::Connection,
        _source: &'a Self::Source,
        _reset: &'a OffsetReset,
    ) -> BoxFuture<'a, Result<Vec<PartitionOffset>, SourceError>> {
        Box::pin(async {
            Err(SourceError::Unsupported(
                "this kind of broker has no offsets to reset".into(),
            ))
        })
    }

    /// The messages of a range, to deliver again.
    fn read_range<'a>(
        _connection: &'a Self::Connection,
        _source: &'a Self::Source,
        _range: &'a Range,
    ) -> BoxFuture<'a, Result<Vec<SourceMessage>, SourceError>> {
        Box::pin(async {
            Err(SourceError::Unsupported(
                "this kind of broker cannot read past messages again".into(),
            ))
        })
    }
}
