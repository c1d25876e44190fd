//! RabbitMQ for tests: the machine's broker, a queue name of each test's own.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub fn url() -> String {
    std::env::var("BIDA_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A durable queue named for one test, deleted when dropped.
pub struct TestQueue {
    pub name: String,
    channel: Channel,
    _connection: Connection,
}

/// Deletes a queue on a connection and runtime of its own, on another thread:
/// the caller's runtime may be blocked (a panic unwinding through a drop).
fn delete_queue_now(name: String) {
    crate::run_apart(move || async move {
        if let Ok(connection) = Connection::connect(&url(), ConnectionProperties::default()).await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = connection.close(200, "done".into()).await;
        }
    });
}

/// Makes sure the queue is gone (after a test that declared it through Bida).
pub fn delete_queue_later(name: &str) -> impl Drop {
    struct Deleter(String);
    impl Drop for Deleter {
        fn drop(&mut self) {
            delete_queue_now(self.0.clone());
        }
    }
    Deleter(name.to_string())
}

impl TestQueue {
    pub async fn declare() -> Self {
        Self::declare_named(&format!("bida-test-{}", uuid::Uuid::new_v4().simple())).await
    }

    /// A quorum queue (replicated; it only supports per-consumer prefetch).
    pub async fn declare_quorum() -> Self {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        Self::declare_with(&format!("bida-test-q-{}", uuid::Uuid::new_v4().simple()), arguments).await
    }

    /// A queue with a name chosen by the test (one it used before, say).
    pub async fn declare_named(name: &str) -> Self {
        Self::declare_with(name, FieldTable::default()).await
    }

    async fn declare_with(name: &str, arguments: FieldTable) -> Self {
        let name = name.to_string();
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ (set BIDA_TEST_AMQP if it is not at 127.0.0.1:5672)");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .expect("declare queue");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Self {
            name,
            channel,
            _connection: connection,
        }
    }

    /// Publishes with publisher confirms, each with its `message_id` when given.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        self.publish_keyed(messages.into_iter().map(|(id, body)| (id, None, body)))
            .await
    }

    /// Publishes `(message_id, ordering key, body)`; the key goes in the `bida-key` header.
    pub async fn publish_keyed(&self, messages: impl IntoIterator<Item = (Option<String>, Option<String>, Vec<u8>)>) {
        let mut confirms = Vec::new();
        for (id, key, body) in messages {
            let mut properties = BasicProperties::default().with_delivery_mode(2);
            if let Some(id) = id {
                properties = properties.with_message_id(id.as_str().into());
            }
            if let Some(key) = key {
                let mut headers = FieldTable::default();
                headers.insert(
                    "bida-key".into(),
                    lapin::types::AMQPValue::LongString(key.as_str().into()),
                );
                properties = properties.with_headers(headers);
            }
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.name.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
            if confirms.len() >= 1_000 {
                for confirm in confirms.drain(..) {
                    confirm.await.expect("confirm");
                }
            }
        }
        for confirm in confirms {
            confirm.await.expect("confirm");
        }
    }

    /// Publishes one message with string headers (a `traceparent`, say).
    pub async fn publish_with_headers(&self, message_id: &str, body: &[u8], headers: &[(&str, &str)]) {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert((*name).into(), lapin::types::AMQPValue::LongString((*value).into()));
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_headers(table);
        self.channel
            .basic_publish(
                "".into(),
                self.name.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes to an exchange with a routing key (the exchange must exist).
    pub async fn publish_to(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Messages ready in the queue.
    pub async fn depth(&self) -> u32 {
        self.channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0)
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        delete_queue_now(self.name.clone());
    }
}

/// A message read back from a queue: its body, headers and properties.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// String headers as they are; other values in their debug form.
    pub headers: std::collections::BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// 2: persistent, 1: transient.
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    /// Milliseconds, as the property's text.
    pub expiration: Option<String>,
}

impl ReadMessage {
    fn of(delivery: &lapin::message::Delivery) -> Self {
        let properties = &delivery.properties;
        let text = |value: &Option<lapin::types::ShortString>| value.as_ref().map(|s| s.as_str().to_string());
        let headers = properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            lapin::types::AMQPValue::LongString(s) => {
                                String::from_utf8_lossy(s.as_bytes()).into_owned()
                            }
                            lapin::types::AMQPValue::ShortString(s) => s.as_str().to_string(),
                            other => format!("{other:?}"),
                        };
                        (name.as_str().to_string(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            exchange: delivery.exchange.as_str().to_string(),
            routing_key: delivery.routing_key.as_str().to_string(),
            body: delivery.data.clone(),
            headers,
            content_type: text(properties.content_type()),
            message_id: text(properties.message_id()),
            correlation_id: text(properties.correlation_id()),
            delivery_mode: *properties.delivery_mode(),
            priority: *properties.priority(),
            expiration: text(properties.expiration()),
        }
    }
}

impl TestQueue {
    /// Takes every message ready in the queue (basic.get, no ack), in order.
    pub async fn get_all(&self) -> Vec<ReadMessage> {
        let mut messages = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                self.name.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            messages.push(ReadMessage::of(&message.delivery));
        }
        messages
    }
}

/// A direct exchange named for one test (transient), deleted when dropped.
pub struct TestExchange {
    pub name: String,
    channel: Channel,
    _connection: Connection,
}

impl TestExchange {
    pub async fn declare_direct() -> Self {
        let name = format!("bida-test-x-{}", uuid::Uuid::new_v4().simple());
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ (set BIDA_TEST_AMQP if it is not at 127.0.0.1:5672)");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        Self {
            name,
            channel,
            _connection: connection,
        }
    }

    /// Binds `queue` to the exchange with `routing_key`.
    pub async fn bind(&self, queue: &str, routing_key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                self.name.as_str().into(),
                routing_key.into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
    }
}

impl Drop for TestExchange {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::run_apart(move || async move {
            if let Ok(connection) = Connection::connect(&url(), ConnectionProperties::default()).await {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .exchange_delete(name.as_str().into(), lapin::options::ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "done".into()).await;
            }
        });
    }
}
