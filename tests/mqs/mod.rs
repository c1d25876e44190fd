//! The broker kinds the conformance suite runs against: one file per kind,
//! each a [`TestMq`] (a broker of the test's own: a queue, a topic, a
//! stream), and one line per kind in [`on_every_mq!`].

pub mod activemq;
pub mod builtin;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub mod rocketmq;

use super::support::Bida;
use serde_json::{json, Value};

/// One message: its id (where the kind carries one), ordering key, body.
pub struct Record {
    pub id: String,
    pub key: Option<String>,
    pub body: Vec<u8>,
}

/// A broker for one test.
pub trait TestMq {
    /// Publishes and waits for the broker to confirm.
    async fn publish(&self, records: Vec<Record>);

    /// The broker as `POST /v1/brokers` takes it.
    fn broker_body(&self) -> Value;

    /// The consumer's source as `POST /v1/consumers` takes it.
    fn source(&self) -> Value;

    /// Where a message written over HTTP (`POST /v1/brokers/{id}/messages`)
    /// goes to reach the source, with this ordering key: the kind's own
    /// message fields.
    #[allow(dead_code)] // not every test binary sharing the kinds writes over HTTP
    fn target(&self, key: &str) -> Value;

    /// Whether the kind's message ids end in a number that tells messages
    /// of one partition, stream or producer apart (a Kafka offset, a stream
    /// sequence, ActiveMQ's producer sequence): consumers' task ids then
    /// grow with it.
    #[allow(dead_code)] // read by the conformance suite only
    fn ids_end_in_a_number(&self) -> bool {
        false
    }

    /// Registers the broker.
    async fn broker(&self, bida: &Bida) -> String {
        let (status, broker) = bida.post("/v1/brokers", self.broker_body()).await;
        assert_eq!(status, 201, "{broker}");
        broker["id"].as_str().unwrap().to_string()
    }

    /// Registers the broker (unless given) and creates a consumer.
    async fn consumer(&self, bida: &Bida, broker: Option<&str>, endpoint: &str, policy: Value) -> String {
        let broker = match broker {
            Some(id) => id.to_string(),
            None => self.broker(bida).await,
        };
        let (status, consumer) = bida
            .post(
                "/v1/consumers",
                json!({"name": "c", "broker_id": broker, "source": self.source(),
                       "endpoint": {"url": endpoint, "timeout_ms": 2000}, "policy": policy}),
            )
            .await;
        assert_eq!(status, 201, "{consumer}");
        let id = consumer["id"].as_str().unwrap().to_string();
        self.ready(bida, &id).await;
        id
    }

    /// Waits until the consumer takes what is published from now on, for
    /// kinds whose brokers keep nothing for a subscriber not yet there.
    async fn ready(&self, _bida: &Bida, _consumer: &str) {}
}

/// Each scenario (`async fn scenario(mq: impl TestMq)`) as a module with one
/// test per kind: `scenario::kafka`, `scenario::rabbitmq`...
macro_rules! on_every_mq {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn rabbitmq() {
                    super::$scenario(super::mqs::rabbitmq::Queue::new().await).await
                }

                #[tokio::test]
                async fn kafka() {
                    super::$scenario(super::mqs::kafka::Topic::new().await).await
                }

                #[tokio::test]
                async fn nats() {
                    super::$scenario(super::mqs::nats::Stream::new().await).await
                }

                #[tokio::test]
                async fn redis() {
                    super::$scenario(super::mqs::redis::Stream::new().await).await
                }

                #[tokio::test]
                async fn activemq() {
                    super::$scenario(super::mqs::activemq::Queue::new().await).await
                }

                #[tokio::test]
                async fn mqtt() {
                    super::$scenario(super::mqs::mqtt::Broker::new().await).await
                }

                #[tokio::test]
                async fn rocketmq() {
                    super::$scenario(super::mqs::rocketmq::Topic::new().await).await
                }

                #[tokio::test]
                async fn builtin() {
                    super::$scenario(super::mqs::builtin::Topic::new().await).await
                }
            }
        )*
    };
}

pub(crate) use on_every_mq;
