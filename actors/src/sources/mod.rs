//! Message sources: where consumers read from. Each MQ implements the small
//! [`Source`] trait; the consumer pipeline does the rest (concurrency, rate,
//! ordering, delivery, recording, acknowledgement).

mod kafka;
mod offsets;
mod progress;
mod rabbitmq;

pub use kafka::{KafkaAdmin, KafkaSource, PartitionInfo, TopicInfo};
pub use offsets::OffsetTracker;
pub use progress::{BacklogProblem, ProgressWatch, STALL_AFTER};
pub use rabbitmq::{QueueInfo, RabbitAdmin, RabbitNode, RabbitOverview, RabbitSource};

use bida_domain::consumer::{SourceAnomaly, SourceMessage};
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

    /// Positions (`topic/partition@` prefixes) this consumer lost to another
    /// since the last call: messages held from them must be let go.
    fn take_revoked(&mut self) -> Vec<String> {
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

/// The sources Bida knows, behind one type for the pump (one per consumer,
/// so its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnySource {
    Kafka(KafkaSource),
    Rabbitmq(RabbitSource),
}

impl Source for AnySource {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        match self {
            Self::Kafka(source) => source.next().await,
            Self::Rabbitmq(source) => source.next().await,
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        match self {
            Self::Kafka(source) => source.set_paused(paused).await,
            Self::Rabbitmq(source) => source.set_paused(paused).await,
        }
    }

    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        match self {
            Self::Kafka(source) => source.set_prefetch(messages).await,
            Self::Rabbitmq(source) => source.set_prefetch(messages).await,
        }
    }

    fn backlog_probe(&self) -> std::sync::Arc<dyn BacklogProbe> {
        match self {
            Self::Kafka(source) => source.backlog_probe(),
            Self::Rabbitmq(source) => source.backlog_probe(),
        }
    }

    fn take_revoked(&mut self) -> Vec<String> {
        match self {
            Self::Kafka(source) => source.take_revoked(),
            Self::Rabbitmq(source) => source.take_revoked(),
        }
    }

    fn take_anomaly_feed(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Observed>> {
        match self {
            Self::Kafka(source) => source.take_anomaly_feed(),
            Self::Rabbitmq(source) => source.take_anomaly_feed(),
        }
    }

    async fn close(self) {
        match self {
            Self::Kafka(source) => source.close().await,
            Self::Rabbitmq(source) => source.close().await,
        }
    }
}
