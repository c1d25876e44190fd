//! RabbitMQ through lapin: manual acknowledgement, prefetch tied to the
//! consumer's concurrency. QoS is per consumer (quorum queues support nothing
//! else), so a new prefetch takes a new subscription: the old one is cancelled
//! first and its buffered messages drain through the pipeline before the new
//! one is read. (Two subscriptions at once would share the queue round-robin,
//! and reading both would reorder it: a key's messages out of order.) A paused
//! source cancels its subscription and returns what it had buffered to the
//! queue, for other nodes to take.
//!
//! A message's id is the producer's `message-id` property when it has one;
//! otherwise a hash of where it came from and what it carries, so that a
//! redelivery keeps its id (two identical messages without ids share one).

use bida_domain::consumer::{RabbitmqSource as RabbitSpec, SourceMessage};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;

use super::{clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Incoming, Source, SourceError};

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
    /// The current subscription, after cancelled ones still draining, oldest
    /// first: read in that order, they give the queue's order.
    streams: VecDeque<lapin::Consumer>,
    current_tag: Option<String>,
    queue: String,
    tag_base: String,
    generation: u32,
    prefetch: u32,
    paused: bool,
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
        let probe = Arc::new(RabbitProbe {
            channel: channel.clone(),
            queue: spec.queue.clone(),
        });
        let mut source = Self {
            connection,
            channel,
            streams: VecDeque::new(),
            current_tag: None,
            queue: spec.queue.clone(),
            tag_base: consumer_tag.to_string(),
            generation: 0,
            prefetch: prefetch.max(1),
            paused: false,
            probe,
        };
        source.subscribe().await?;
        Ok(source)
    }

    /// Starts a subscription with the current prefetch.
    async fn subscribe(&mut self) -> Result<(), SourceError> {
        let prefetch = self.prefetch.clamp(1, u16::MAX as u32) as u16;
        self.channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(broker_error)?;
        self.generation += 1;
        let tag = format!("{}-{}", self.tag_base, self.generation);
        let consumer = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        self.streams.push_back(consumer);
        self.current_tag = Some(tag);
        Ok(())
    }

    /// Cancels the current subscription; its stream ends once drained.
    async fn unsubscribe(&mut self) -> Result<(), SourceError> {
        if let Some(tag) = self.current_tag.take() {
            self.channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
                .map_err(|e| SourceError::Lost(e.to_string()))?;
        }
        Ok(())
    }

    /// The next delivery in queue order; `None` once every subscription ended.
    async fn next_delivery(&mut self) -> Option<Result<lapin::message::Delivery, lapin::Error>> {
        while let Some(oldest) = self.streams.front_mut() {
            match oldest.next().await {
                Some(delivery) => return Some(delivery),
                None => {
                    self.streams.pop_front();
                }
            }
        }
        None
    }

    fn incoming(&self, delivery: lapin::message::Delivery) -> Incoming {
        let traceparent = amqp_header(&delivery, "traceparent").and_then(|v| header_text(v.as_bytes()));
        let message = SourceMessage {
            message_id: message_id(&self.queue, &delivery),
            position: self.queue.clone(),
            key: ordering_key(&delivery),
            body: Bytes::from(delivery.data),
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .and_then(|c| header_text(c.as_str().as_bytes())),
            traceparent,
        };
        Incoming {
            message,
            ack: Box::new(RabbitAck(delivery.acker)),
        }
    }
}

fn message_id(queue: &str, delivery: &lapin::message::Delivery) -> String {
    if let Some(id) = delivery.properties.message_id() {
        if header_text(id.as_str().as_bytes()).is_some() {
            return format!("rabbitmq:{queue}:{id}");
        }
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

/// A message header's value as clean text.
fn amqp_header(delivery: &lapin::message::Delivery, wanted: &str) -> Option<String> {
    use lapin::types::AMQPValue;
    delivery.properties.headers().as_ref().and_then(|headers| {
        headers.inner().iter().find_map(|(name, value)| {
            if name.as_str() != wanted {
                return None;
            }
            match value {
                AMQPValue::LongString(text) => Some(clean_text(text.as_bytes())),
                AMQPValue::ShortString(text) => Some(clean_text(text.as_str().as_bytes())),
                other => Some(clean_text(format!("{other:?}").as_bytes())),
            }
        })
    })
}

fn ordering_key(delivery: &lapin::message::Delivery) -> Option<String> {
    let header = amqp_header(delivery, KEY_HEADER);
    header.or_else(|| Some(clean_text(delivery.routing_key.as_str().as_bytes())).filter(|k| !k.is_empty()))
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
        loop {
            if self.streams.is_empty() {
                // Paused: nothing is subscribed (the pump does not ask then).
                std::future::pending::<()>().await;
            }
            match self.next_delivery().await {
                Some(Ok(delivery)) => {
                    return Ok(self.incoming(delivery));
                }
                Some(Err(e)) => return Err(SourceError::Lost(e.to_string())),
                None if self.paused => continue,
                None => return Err(SourceError::Lost("the broker cancelled the consumer".into())),
            }
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        if paused == self.paused {
            return Ok(());
        }
        self.paused = paused;
        if !paused {
            return self.subscribe().await;
        }
        self.unsubscribe().await?;
        // Hand back what was buffered and not yet taken by the pipeline.
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(2), self.next_delivery()).await {
                Ok(Some(Ok(delivery))) => {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    delivery
                        .acker
                        .nack(requeue)
                        .await
                        .map_err(|e| SourceError::Lost(e.to_string()))?;
                }
                Ok(Some(Err(e))) => return Err(SourceError::Lost(e.to_string())),
                Ok(None) | Err(_) => break,
            }
        }
        self.streams.clear();
        Ok(())
    }

    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        let messages = messages.max(1);
        if messages == self.prefetch {
            return Ok(());
        }
        self.prefetch = messages;
        if self.paused {
            return Ok(());
        }
        // The old subscription ends before the new one starts: delivery waits
        // a round trip, and the queue's order holds.
        self.unsubscribe().await?;
        self.subscribe().await
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
                problem: None,
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

    /// GETs a management API path (`api/...`) and decodes the JSON answer.
    async fn management_get<T: serde::de::DeserializeOwned>(
        &self,
        management: &str,
        path: &str,
    ) -> Result<T, SourceError> {
        let url = url::Url::parse(management).map_err(|e| SourceError::Connect(e.to_string()))?;
        let mut endpoint = url.clone();
        endpoint.set_username("").ok();
        endpoint.set_password(None).ok();
        let endpoint = endpoint.join(path).map_err(|e| SourceError::Connect(e.to_string()))?;
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
        response.json().await.map_err(|e| SourceError::Broker(e.to_string()))
    }

    /// The cluster's figures from the management API (`None` without one).
    pub async fn overview(&self) -> Result<Option<RabbitOverview>, SourceError> {
        let Some(management) = &self.management_url else {
            return Ok(None);
        };
        let overview: ManagementOverview = self.management_get(management, "api/overview").await?;
        let nodes: Vec<RabbitNode> = self.management_get(management, "api/nodes").await?;
        let rate = |details: &Option<RateDetails>| details.as_ref().map_or(0.0, |d| d.rate);
        let stats = overview.message_stats.unwrap_or_default();
        let totals = overview.queue_totals.unwrap_or_default();
        Ok(Some(RabbitOverview {
            version: overview.rabbitmq_version,
            connections: overview.object_totals.connections,
            channels: overview.object_totals.channels,
            consumers: overview.object_totals.consumers,
            queues: overview.object_totals.queues,
            messages: totals.messages,
            messages_ready: totals.messages_ready,
            messages_unacknowledged: totals.messages_unacknowledged,
            publish_rate: rate(&stats.publish_details),
            deliver_rate: rate(&stats.deliver_get_details),
            ack_rate: rate(&stats.ack_details),
            nodes,
        }))
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
        let queues: Vec<Queue> = self
            .management_get(management, "api/queues?columns=name,vhost,messages,consumers")
            .await?;
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

/// A RabbitMQ cluster as its management API describes it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitOverview {
    pub version: String,
    pub connections: i64,
    pub channels: i64,
    pub consumers: i64,
    pub queues: i64,
    pub messages: i64,
    pub messages_ready: i64,
    pub messages_unacknowledged: i64,
    /// Messages per second, over the management API's last sample window.
    pub publish_rate: f64,
    pub deliver_rate: f64,
    pub ack_rate: f64,
    pub nodes: Vec<RabbitNode>,
}

/// One RabbitMQ node: memory, disk and file descriptors against their limits.
/// A figure the management plugin has not collected yet (just started, or
/// behind under load) is absent rather than 0.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitNode {
    pub name: String,
    #[serde(default)]
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<i64>,
    #[serde(default)]
    pub mem_alarm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_limit: Option<i64>,
    #[serde(default)]
    pub disk_free_alarm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<i64>,
}

#[derive(serde::Deserialize)]
struct ManagementOverview {
    #[serde(default)]
    rabbitmq_version: String,
    #[serde(default)]
    object_totals: ObjectTotals,
    #[serde(default)]
    queue_totals: Option<QueueTotals>,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Default, serde::Deserialize)]
struct ObjectTotals {
    #[serde(default)]
    connections: i64,
    #[serde(default)]
    channels: i64,
    #[serde(default)]
    consumers: i64,
    #[serde(default)]
    queues: i64,
}

#[derive(Default, serde::Deserialize)]
struct QueueTotals {
    #[serde(default)]
    messages: i64,
    #[serde(default)]
    messages_ready: i64,
    #[serde(default)]
    messages_unacknowledged: i64,
}

#[derive(Default, serde::Deserialize)]
struct MessageStats {
    publish_details: Option<RateDetails>,
    deliver_get_details: Option<RateDetails>,
    ack_details: Option<RateDetails>,
}

#[derive(serde::Deserialize)]
struct RateDetails {
    #[serde(default)]
    rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Source;
    use bida_testkit::rabbit::{self, TestQueue};

    /// A prefetch change while messages are buffered (the pump sets the
    /// live prefetch right after connecting) must not reorder the queue.
    #[tokio::test]
    async fn a_new_prefetch_keeps_the_queues_order() {
        let queue = TestQueue::declare().await;
        queue
            .publish((0..300).map(|n| (Some(format!("m{n}")), n.to_string().into_bytes())))
            .await;
        let spec = RabbitSpec {
            queue: queue.name.clone(),
            declare: false,
            exchange: None,
            routing_key: None,
        };
        let mut source = RabbitSource::connect(&rabbit::url(), &spec, "bida-test-order", 2)
            .await
            .expect("connect");
        let mut seen = Vec::new();
        for round in 0..30 {
            // Prefetch changes while the old subscription holds messages.
            source.set_prefetch(2 + (round % 3) * 40).await.expect("prefetch");
            for _ in 0..10 {
                let incoming = tokio::time::timeout(std::time::Duration::from_secs(10), source.next())
                    .await
                    .expect("a message in time")
                    .expect("a message");
                seen.push(String::from_utf8_lossy(&incoming.message.body).parse::<u32>().unwrap());
                incoming.ack.ack().await.expect("ack");
            }
        }
        let expected: Vec<u32> = (0..300).collect();
        assert_eq!(seen, expected);
        source.close().await;
    }
}
