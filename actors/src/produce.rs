//! Writing messages to a registered broker for the API
//! (`POST /v1/brokers/{id}/messages`): a producer per broker, kept while its
//! connection settings stay the same and replaced when it breaks; each kind
//! writes in its own folder (`sources/<kind>/producer.rs`).

use bida_domain::broker::Connection;
use bida_domain::kinds::produce::{self, Outgoing, Target};
use bida_domain::ValidationErrors;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

use crate::brokers::{AdminError, BrokerService};
use crate::sources::kafka::producer::KafkaProducer;
use crate::sources::rabbitmq::producer::RabbitProducer;
use crate::sources::SourceError;

/// Where a message landed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Landed {
    /// Kafka: the partition and offset the record got.
    Partition { topic: String, partition: i32, offset: i64 },
    /// RabbitMQ: the exchange and routing key, confirmed by the broker.
    Exchange {
        exchange: String,
        routing_key: String,
        confirmed: bool,
    },
}

/// A message the broker confirmed: its place in the request, and where it landed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Written {
    pub index: usize,
    #[serde(flatten)]
    pub at: Landed,
}

/// What a kind's producer did with a request's messages.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<Written>,
    /// The first message that was not written, and why.
    pub failed: Option<(usize, SourceError)>,
}

impl Outcome {
    pub fn fail(&mut self, index: usize, error: SourceError) {
        if self.failed.as_ref().is_none_or(|(first, _)| index < *first) {
            self.failed = Some((index, error));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{0}")]
    Admin(#[from] AdminError),
    /// Not written, and why; `written` were confirmed before.
    #[error("{reason}")]
    Unavailable { reason: String, written: Vec<Written> },
    /// The broker refused a message for what it says (a topic that does not
    /// exist, a routing key no queue is bound to).
    #[error("{}", errors)]
    Refused {
        errors: ValidationErrors,
        written: Vec<Written>,
    },
}

/// One per broker, kept: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Producer {
    Kafka(KafkaProducer),
    Rabbitmq(RabbitProducer),
}

impl Producer {
    async fn open(connection: &Connection) -> Result<Self, SourceError> {
        match connection {
            Connection::Kafka(connection) => KafkaProducer::new(connection).map(Self::Kafka),
            Connection::Rabbitmq(connection) => RabbitProducer::new(connection).await.map(Self::Rabbitmq),
            other => Err(SourceError::Unsupported(format!(
                "Bida cannot write to {} brokers yet",
                other.kind().title()
            ))),
        }
    }

    fn usable(&self) -> bool {
        match self {
            Self::Kafka(_) => true,
            Self::Rabbitmq(producer) => producer.usable(),
        }
    }

    async fn write(&self, messages: &[Outgoing]) -> Outcome {
        match self {
            Self::Kafka(producer) => {
                let batch: Vec<_> = messages
                    .iter()
                    .enumerate()
                    .filter_map(|(index, message)| match &message.target {
                        Target::Kafka(target) => Some((index, message, target)),
                        _ => None,
                    })
                    .collect();
                producer.write(&batch).await
            }
            Self::Rabbitmq(producer) => {
                let batch: Vec<_> = messages
                    .iter()
                    .enumerate()
                    .filter_map(|(index, message)| match &message.target {
                        Target::Rabbitmq(target) => Some((index, message, target)),
                        _ => None,
                    })
                    .collect();
                producer.write(&batch).await
            }
        }
    }
}

struct Pooled {
    connection: Connection,
    producer: Arc<Producer>,
}

pub struct Producers {
    brokers: BrokerService,
    pool: tokio::sync::Mutex<HashMap<String, Pooled>>,
}

impl Producers {
    pub fn new(brokers: BrokerService) -> Self {
        Self {
            brokers,
            pool: tokio::sync::Mutex::default(),
        }
    }

    /// Writes a request's messages (one, or `{"messages": [...]}`) to the
    /// broker and answers where each landed, once the broker confirmed all.
    pub async fn produce(&self, broker_id: &str, request: serde_json::Value) -> Result<Vec<Written>, ProduceError> {
        let broker = self.brokers.load(broker_id).await?;
        let spec = match broker.spec() {
            Some(spec) if !broker.is_deleted() => spec,
            _ => return Err(AdminError::NotFound(format!("no broker with id {broker_id}")).into()),
        };
        let kind = spec.connection.kind();
        let mut errors = ValidationErrors::default();
        let request =
            produce::parse_request(kind, request, &mut errors).map_err(|e| AdminError::Rejected(e.to_string()))?;
        if !errors.is_empty() {
            return Err(AdminError::Invalid(errors).into());
        }
        let producer = self
            .producer(broker_id, &spec.connection)
            .await
            .map_err(|e| unavailable(e, Vec::new()))?;
        let messages = &request.messages;
        let outcome = producer.write(messages).await;
        match outcome.failed {
            None => Ok(outcome.written),
            Some((index, SourceError::Invalid(reason))) => {
                let field = match &messages[index].target {
                    Target::Kafka(_) => "topic",
                    Target::Rabbitmq(_) => "routing_key",
                };
                Err(ProduceError::Refused {
                    errors: ValidationErrors::single(request.field(index, field), reason),
                    written: outcome.written,
                })
            }
            Some((_, e)) => {
                // A producer that failed may be broken: the next request opens another.
                let pooled = self.pool.lock().await.remove(broker_id);
                let_go((producer, pooled));
                Err(unavailable(e, outcome.written))
            }
        }
    }

    /// The broker's pooled producer, or a new one. A new one is opened
    /// outside the pool's lock (a connection may take seconds), so other
    /// brokers' requests do not wait for it.
    async fn producer(&self, broker_id: &str, connection: &Connection) -> Result<Arc<Producer>, SourceError> {
        if let Some(pooled) = self.pool.lock().await.get(broker_id) {
            if &pooled.connection == connection && pooled.producer.usable() {
                return Ok(pooled.producer.clone());
            }
        }
        let producer = Arc::new(Producer::open(connection).await?);
        let replaced = self.pool.lock().await.insert(
            broker_id.to_string(),
            Pooled {
                connection: connection.clone(),
                producer: producer.clone(),
            },
        );
        let_go(replaced);
        Ok(producer)
    }
}

/// Drops producers off the async workers: librdkafka's flushes on the way out.
fn let_go<T: Send + 'static>(producers: T) {
    tokio::task::spawn_blocking(move || drop(producers));
}

fn unavailable(e: SourceError, written: Vec<Written>) -> ProduceError {
    ProduceError::Unavailable {
        reason: format!("the broker did not take the message: {e}"),
        written,
    }
}
