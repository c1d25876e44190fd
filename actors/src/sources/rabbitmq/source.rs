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

use bida_domain::broker::Position;
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
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;

use crate::sources::{clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Incoming, Source, SourceError};

pub(super) fn connect_error(e: lapin::Error) -> SourceError {
    SourceError::Connect(e.to_string())
}

fn broker_error(e: lapin::Error) -> SourceError {
    SourceError::Broker(e.to_string())
}

pub(super) async fn connect(url: &str, name: &str) -> Result<Connection, SourceError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await.map_err(connect_error)
}

pub struct RabbitSource {
    /// Shared with the broker's other consumers (see `shared.rs`): only the
    /// channel is this source's.
    _connection: Arc<Connection>,
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
        let connection = super::shared::connection(url).await?;
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
            _connection: connection,
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
            position: Position::destination(&self.queue),
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

    /// Unacknowledged messages go back to the queue when the channel closes;
    /// the connection stays for the broker's other consumers.
    async fn close(self) {
        let _ = self.channel.close(200, "bida consumer stopping".into()).await;
    }
}

impl Drop for RabbitSource {
    /// A source dropped without `close` (its consumer failed) must still hand
    /// its unacknowledged messages back: the shared connection outlives it,
    /// and its backlog probe may hold the channel a while longer.
    fn drop(&mut self) {
        if !self.channel.status().connected() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let channel = self.channel.clone();
            runtime.spawn(async move {
                let _ = channel.close(200, "bida consumer stopped".into()).await;
            });
        }
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
            Ok(vec![Backlog::of(&self.queue, None, ready)])
        })
    }
}

/// Messages ready and consumers of a queue (a passive declare).
pub(super) async fn queue_counts(channel: &Channel, queue: &str) -> Result<(i64, i64), SourceError> {
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

    /// Consumers of one broker share a connection, a new one for every
    /// `CHANNELS_PER_CONNECTION` of them; a consumer that fails without
    /// closing (dropped) still hands its unacknowledged messages back while
    /// the connection stays open for the others.
    #[tokio::test]
    async fn consumers_share_a_connection_and_a_dropped_one_gives_its_messages_back() {
        use super::super::shared::{open_to, CHANNELS_PER_CONNECTION};
        // A URL of this test's own (the same broker): other tests share theirs.
        let url = format!("{}?heartbeat=57", rabbit::url());
        let queue = TestQueue::declare().await;
        queue.publish([(Some("m1".to_string()), b"1".to_vec())]).await;
        let spec = RabbitSpec {
            queue: queue.name.clone(),
            declare: false,
            exchange: None,
            routing_key: None,
        };
        async fn next(source: &mut RabbitSource) -> Incoming {
            tokio::time::timeout(std::time::Duration::from_secs(10), source.next())
                .await
                .expect("a message in time")
                .expect("a message")
        }
        let mut first = RabbitSource::connect(&url, &spec, "bida-test-shared", 1)
            .await
            .expect("connect");
        let taken = next(&mut first).await;
        assert_eq!(&taken.message.body[..], b"1");
        // The others read a queue of their own: the message handed back must
        // not go to one of them.
        let other_queue = TestQueue::declare().await;
        let other_spec = RabbitSpec {
            queue: other_queue.name.clone(),
            ..spec.clone()
        };
        // Started together, as a node starts its consumers.
        let others: Vec<RabbitSource> = futures_util::future::join_all(
            (1..CHANNELS_PER_CONNECTION).map(|_| RabbitSource::connect(&url, &other_spec, "bida-test-shared", 1)),
        )
        .await
        .into_iter()
        .map(|source| source.expect("connect"))
        .collect();
        assert_eq!(
            open_to(&url).await,
            1,
            "{CHANNELS_PER_CONNECTION} consumers on one connection"
        );
        let one_more = RabbitSource::connect(&url, &other_spec, "bida-test-shared", 1)
            .await
            .expect("connect");
        assert_eq!(open_to(&url).await, 2, "the next consumer opens another");

        // Failed without closing, the message unacknowledged; its backlog
        // probe (kept by the consumer's sampler) still holds the channel.
        let probe = first.backlog_probe();
        drop(taken);
        drop(first);
        let mut again = RabbitSource::connect(&url, &spec, "bida-test-shared", 1)
            .await
            .expect("connect");
        drop(one_more);
        let redelivered = next(&mut again).await;
        assert_eq!(&redelivered.message.body[..], b"1", "handed back to the queue");
        redelivered.ack.ack().await.expect("ack");
        assert_eq!(queue.depth().await, 0);
        drop(probe);

        again.close().await;
        for source in others {
            source.close().await;
        }
        assert_eq!(open_to(&url).await, 0, "closed with its last consumer");
    }
}
