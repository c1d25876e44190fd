//! RabbitMQ through lapin: manual acknowledgement, prefetch tied to the
//! consumer's concurrency and changed live (per-channel QoS).
//!
//! A message's id is the producer's `message-id` property when it has one;
//! otherwise a hash of where it came from and what it carries, so that a
//! redelivery keeps its id (two identical messages without ids share one).

use bida_domain::consumer::{RabbitmqSource as RabbitSpec, SourceMessage};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::{Acknowledge, Backlog, BacklogProbe, Incoming, Source, SourceError};

fn connect_error(e: lapin::Error) -> SourceError {
    SourceError::Connect(e.to_string())
}

fn broker_error(e: lapin::Error) -> SourceError {
    SourceError::Broker(e.to_string())
}

async fn connect(url: &str, name: &str) -> Result<Connection, SourceError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await.map_err(connect_error)
}

pub struct RabbitSource {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    probe: Arc<RabbitProbe>,
}

impl RabbitSource {
    pub async fn connect(url: &str, spec: &RabbitSpec, consumer_tag: &str, prefetch: u32) -> Result<Self, SourceError> {
        let connection = connect(url, consumer_tag).await?;
        let channel = connection.create_channel().await.map_err(connect_error)?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        if spec.declare {
            channel
                .queue_declare(spec.queue.as_str().into(), durable, FieldTable::default())
                .await
                .map_err(broker_error)?;
        }
        if let Some(exchange) = &spec.exchange {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(broker_error)?;
            channel
                .queue_bind(
                    spec.queue.as_str().into(),
                    exchange.as_str().into(),
                    spec.routing_key.as_deref().unwrap_or("#").into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker_error)?;
        }
        set_qos(&channel, prefetch).await?;
        let consumer = channel
            .basic_consume(
                spec.queue.as_str().into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        let probe = Arc::new(RabbitProbe {
            channel: channel.clone(),
            queue: spec.queue.clone(),
        });
        Ok(Self {
            connection,
            channel,
            consumer,
            queue: spec.queue.clone(),
            probe,
        })
    }
}

/// Per-channel (global) QoS: unlike per-consumer QoS it applies to the running
/// consumer at once, which is what makes concurrency changes live.
async fn set_qos(channel: &Channel, prefetch: u32) -> Result<(), SourceError> {
    let prefetch = prefetch.clamp(1, u16::MAX as u32) as u16;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: true })
        .await
        .map_err(broker_error)
}

fn message_id(queue: &str, delivery: &lapin::message::Delivery) -> String {
    if let Some(id) = delivery.properties.message_id() {
        return format!("rabbitmq:{queue}:{id}");
    }
    let mut hash = Sha256::new();
    hash.update(delivery.exchange.as_str().as_bytes());
    hash.update([0]);
    hash.update(delivery.routing_key.as_str().as_bytes());
    hash.update([0]);
    if let Some(timestamp) = delivery.properties.timestamp() {
        hash.update(timestamp.to_be_bytes());
    }
    if let Some(correlation) = delivery.properties.correlation_id() {
        hash.update(correlation.as_str().as_bytes());
    }
    hash.update([0]);
    hash.update(&delivery.data);
    let digest = hash.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("rabbitmq:{queue}:sha256:{hex}")
}

/// The header naming a message's ordering key; without it, the routing key.
pub const KEY_HEADER: &str = "bida-key";

fn ordering_key(delivery: &lapin::message::Delivery) -> Option<String> {
    use lapin::types::AMQPValue;
    let header = delivery.properties.headers().as_ref().and_then(|headers| {
        headers.inner().iter().find_map(|(name, value)| {
            if name.as_str() != KEY_HEADER {
                return None;
            }
            match value {
                AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
                AMQPValue::ShortString(text) => Some(text.as_str().to_string()),
                other => Some(format!("{other:?}")),
            }
        })
    });
    header.or_else(|| Some(delivery.routing_key.as_str().to_string()).filter(|k| !k.is_empty()))
}

struct RabbitAck(lapin::Acker);

impl Acknowledge for RabbitAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.0
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(|e| SourceError::Lost(e.to_string()))
        })
    }
}

impl Source for RabbitSource {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        let delivery = match self.consumer.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(SourceError::Lost(e.to_string())),
            None => return Err(SourceError::Lost("the broker cancelled the consumer".into())),
        };
        let message = SourceMessage {
            message_id: message_id(&self.queue, &delivery),
            position: self.queue.clone(),
            key: ordering_key(&delivery),
            body: Bytes::from(delivery.data),
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str().to_string()),
        };
        Ok(Incoming {
            message,
            ack: Box::new(RabbitAck(delivery.acker)),
        })
    }

    /// Not pulling is enough: the broker hands out no more than the prefetch.
    async fn set_paused(&mut self, _paused: bool) -> Result<(), SourceError> {
        Ok(())
    }

    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        set_qos(&self.channel, messages).await
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        self.probe.clone()
    }

    /// Unacknowledged messages go back to the queue when the channel closes.
    async fn close(self) {
        let _ = self.channel.close(200, "bida consumer stopping".into()).await;
        let _ = self.connection.close(200, "bida consumer stopping".into()).await;
    }
}

struct RabbitProbe {
    channel: Channel,
    queue: String,
}

impl BacklogProbe for RabbitProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async move {
            let (ready, _) = queue_counts(&self.channel, &self.queue).await?;
            Ok(vec![Backlog {
                source: self.queue.clone(),
                lag: ready,
                committed: None,
                end: None,
            }])
        })
    }
}

/// Messages ready and consumers of a queue (a passive declare).
async fn queue_counts(channel: &Channel, queue: &str) -> Result<(i64, i64), SourceError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let info = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map_err(broker_error)?;
    Ok((info.message_count() as i64, info.consumer_count() as i64))
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    pub name: String,
    pub vhost: String,
    pub messages: i64,
    pub consumers: i64,
}

/// Operations on a RabbitMQ broker outside any consumer.
#[derive(Clone)]
pub struct RabbitAdmin {
    url: String,
    management_url: Option<String>,
    http: reqwest::Client,
}

impl RabbitAdmin {
    pub fn new(url: &str, management_url: Option<&str>) -> Self {
        Self {
            url: url.to_string(),
            management_url: management_url.map(String::from),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// Connects and disconnects: is the broker there and does it let us in?
    pub async fn check(&self) -> Result<(), SourceError> {
        let connection = connect(&self.url, "bida-health").await?;
        let _ = connection.close(200, "health check".into()).await;
        Ok(())
    }

    /// Every queue (through the management API) or, without it, the queues named.
    pub async fn queues(&self, known: &[String]) -> Result<Vec<QueueInfo>, SourceError> {
        match &self.management_url {
            Some(management) => self.queues_from_management(management).await,
            None => {
                let connection = connect(&self.url, "bida-inventory").await?;
                let mut queues = Vec::new();
                for queue in known {
                    // A failed passive declare closes the channel: one per queue.
                    let channel = connection.create_channel().await.map_err(connect_error)?;
                    if let Ok((messages, consumers)) = queue_counts(&channel, queue).await {
                        queues.push(QueueInfo {
                            name: queue.clone(),
                            vhost: String::new(),
                            messages,
                            consumers,
                        });
                        let _ = channel.close(200, "inventory".into()).await;
                    }
                }
                let _ = connection.close(200, "inventory".into()).await;
                Ok(queues)
            }
        }
    }

    async fn queues_from_management(&self, management: &str) -> Result<Vec<QueueInfo>, SourceError> {
        #[derive(serde::Deserialize)]
        struct Queue {
            name: String,
            vhost: String,
            #[serde(default)]
            messages: i64,
            #[serde(default)]
            consumers: i64,
        }
        let url = url::Url::parse(management).map_err(|e| SourceError::Connect(e.to_string()))?;
        let mut endpoint = url.clone();
        endpoint.set_username("").ok();
        endpoint.set_password(None).ok();
        let endpoint = endpoint
            .join("api/queues?columns=name,vhost,messages,consumers")
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        let response = self
            .http
            .get(endpoint)
            .basic_auth(url.username(), url.password())
            .send()
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        if !response.status().is_success() {
            return Err(SourceError::Broker(format!(
                "management API answered {}",
                response.status()
            )));
        }
        let queues: Vec<Queue> = response.json().await.map_err(|e| SourceError::Broker(e.to_string()))?;
        Ok(queues
            .into_iter()
            .map(|q| QueueInfo {
                name: q.name,
                vhost: q.vhost,
                messages: q.messages,
                consumers: q.consumers,
            })
            .collect())
    }
}
