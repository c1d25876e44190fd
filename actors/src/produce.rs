//! Writing messages to a registered broker for the API
//! (`POST /v1/brokers/{id}/messages`): a producer per broker, kept while its
//! connection settings stay the same and replaced when it breaks; each kind
//! writes in its own folder (`sources/<kind>/producer.rs`) behind
//! [`Produce`], joined by the `producers!` line.

use bida_domain::broker::Connection;
use bida_domain::kinds::produce::{self, Outgoing, Target};
use bida_domain::ValidationErrors;
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::brokers::{AdminError, BrokerService};
use crate::sources::activemq::producer::ActivemqProducer;
use crate::sources::kafka::producer::KafkaProducer;
use crate::sources::mqtt::producer::MqttProducer;
use crate::sources::nats::producer::NatsProducer;
use crate::sources::rabbitmq::producer::RabbitProducer;
use crate::sources::redis::producer::RedisProducer;
use crate::sources::rocketmq::producer::RocketmqProducer;
use crate::sources::SourceError;

/// Where a message landed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Landed {
    /// Kafka, or a built-in topic: the partition and offset the record got
    /// (and, on a built-in topic, the message's id).
    Partition {
        topic: String,
        partition: i32,
        offset: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// RabbitMQ: the exchange and routing key, confirmed by the broker.
    Exchange {
        exchange: String,
        routing_key: String,
        confirmed: bool,
    },
    /// NATS JetStream: the stream that stored it and its sequence there
    /// (`duplicate`: the stream had this `msg_id` already and kept the first).
    Stream {
        subject: String,
        stream: String,
        sequence: u64,
        duplicate: bool,
    },
    /// Redis: the stream's key and the entry's id.
    Entry { stream: String, id: String },
    /// MQTT: the topic and QoS; `confirmed` once the broker acknowledged it
    /// (QoS 1 and 2; a QoS 0 message is only sent).
    Topic { topic: String, qos: u8, confirmed: bool },
    /// ActiveMQ: the STOMP destination (`/queue/orders`), with the broker's receipt.
    Destination { destination: String, confirmed: bool },
    /// RocketMQ: the queue and queue offset the broker stored it at, and
    /// its message id (`UNIQ_KEY`, the id Bida's consumers give it).
    Queue {
        topic: String,
        broker: String,
        queue: i32,
        offset: i64,
        message_id: String,
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

/// Why a message was not written.
#[derive(Debug)]
pub enum Failure {
    /// The broker refused it for what the message says (a topic that does
    /// not exist): `field` names the message's field at fault (`topic`,
    /// `headers.x`).
    Refused { field: String, reason: String },
    /// The broker is down, or did not answer.
    Unavailable(SourceError),
}

/// What a kind's producer did with a request's messages.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<Written>,
    /// The first message that was not written, and why.
    pub failed: Option<(usize, Failure)>,
}

impl Outcome {
    /// Message `index` was not written: the broker could not take it.
    pub fn fail(&mut self, index: usize, error: SourceError) {
        self.failure(index, Failure::Unavailable(error));
    }

    /// Message `index` was refused for what its `field` says.
    pub fn refuse(&mut self, index: usize, field: &str, reason: impl Into<String>) {
        self.failure(
            index,
            Failure::Refused {
                field: field.to_string(),
                reason: reason.into(),
            },
        );
    }

    fn failure(&mut self, index: usize, failure: Failure) {
        if self.failed.as_ref().is_none_or(|(first, _)| index < *first) {
            self.failed = Some((index, failure));
        }
    }

    /// Message `index` landed `at`.
    pub fn wrote(&mut self, index: usize, at: Landed) {
        self.written.push(Written { index, at });
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

/// One kind's producer, kept per broker by [`Producers`]: each lives in
/// its kind's folder (`sources/<kind>/producer.rs`), and the `producers!`
/// line below is the only place that names them.
pub trait Produce: Sized + Send + Sync + 'static {
    /// The broker's connection settings.
    type Connection: Sync;
    /// Where a message of this kind goes (`bida_domain::kinds::<kind>`'s target).
    type Target: Sync;

    /// Connects; an error answers 503.
    fn open(connection: &Self::Connection) -> impl Future<Output = Result<Self, SourceError>> + Send;

    /// Whether it can still write; one that cannot is replaced.
    fn usable(&self) -> bool {
        true
    }

    /// Writes the messages (each with its place in the request) and tells
    /// which the broker confirmed, and the first it did not.
    fn write(&self, messages: &[(usize, &Outgoing, &Self::Target)]) -> impl Future<Output = Outcome> + Send;
}

/// A kind's producer as the pool keeps it.
trait Pooling: Send + Sync {
    fn usable(&self) -> bool;
    fn write<'a>(&'a self, messages: &'a [Outgoing]) -> BoxFuture<'a, Outcome>;
}

/// A producer and how it finds its kind's targets among a request's.
struct Kind<P: Produce> {
    producer: P,
    target: fn(&Target) -> Option<&P::Target>,
}

impl<P: Produce> Pooling for Kind<P> {
    fn usable(&self) -> bool {
        self.producer.usable()
    }

    fn write<'a>(&'a self, messages: &'a [Outgoing]) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let batch: Vec<(usize, &Outgoing, &P::Target)> = messages
                .iter()
                .enumerate()
                .filter_map(|(index, message)| Some((index, message, (self.target)(&message.target)?)))
                .collect();
            self.producer.write(&batch).await
        })
    }
}

macro_rules! producers {
    ($($variant:ident => $producer:ty),+ $(,)?) => {
        /// A producer for the broker's kind.
        async fn open(connection: &Connection) -> Result<Arc<dyn Pooling>, SourceError> {
            match connection {
                $(Connection::$variant(connection) => {
                    fn target(target: &Target) -> Option<&<$producer as Produce>::Target> {
                        match target {
                            Target::$variant(target) => Some(target),
                            #[allow(unreachable_patterns)]
                            _ => None,
                        }
                    }
                    let producer = <$producer as Produce>::open(connection).await?;
                    Ok(Arc::new(Kind { producer, target }))
                })+
                #[allow(unreachable_patterns)]
                other => Err(SourceError::Unsupported(
                    produce::CannotProduce(other.kind()).to_string(),
                )),
            }
        }
    };
}

producers! {
    Kafka => KafkaProducer,
    Rabbitmq => RabbitProducer,
    Nats => NatsProducer,
    Redis => RedisProducer,
    Mqtt => MqttProducer,
    Activemq => ActivemqProducer,
    Rocketmq => RocketmqProducer,
}

/// The built-in broker's producer writes to Bida's own store.
fn builtin_producer(store: bida_store::Store) -> Arc<dyn Pooling> {
    fn target(target: &Target) -> Option<&bida_domain::kinds::builtin::BuiltinTarget> {
        match target {
            Target::Builtin(target) => Some(target),
            _ => None,
        }
    }
    Arc::new(Kind {
        producer: crate::sources::builtin::producer::BuiltinProducer::new(store),
        target,
    })
}

struct Pooled {
    connection: Connection,
    producer: Arc<dyn Pooling>,
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
        let mut outcome = producer.write(messages).await;
        outcome.written.sort_by_key(|written| written.index);
        match outcome.failed {
            None => Ok(outcome.written),
            Some((index, Failure::Refused { field, reason })) => Err(ProduceError::Refused {
                errors: ValidationErrors::single(request.field(index, &field), reason),
                written: outcome.written,
            }),
            Some((_, Failure::Unavailable(e))) => {
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
    async fn producer(&self, broker_id: &str, connection: &Connection) -> Result<Arc<dyn Pooling>, SourceError> {
        if let Some(pooled) = self.pool.lock().await.get(broker_id) {
            if &pooled.connection == connection && pooled.producer.usable() {
                return Ok(pooled.producer.clone());
            }
        }
        let producer = match connection {
            Connection::Builtin(_) => builtin_producer(self.brokers.store().clone()),
            _ => open(connection).await?,
        };
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
