//! A Mosquitto broker of the test's own (MQTT 5).

use bida_testkit::mqtt::TestBroker;
use serde_json::{json, Value};

use super::{Bida, Record, TestMq};

pub struct Broker(pub TestBroker);

impl Broker {
    pub async fn new() -> Self {
        Self(TestBroker::start().await)
    }
}

impl TestMq for Broker {
    /// Each record's id as correlation data, its key as the topic's last level.
    async fn publish(&self, records: Vec<Record>) {
        self.0.publish(records.into_iter().map(|r| (r.id, r.key, r.body))).await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "mqtt", "kind": "mqtt", "url": self.0.url()})
    }

    fn source(&self) -> Value {
        json!({"topic": format!("{}/#", self.0.base), "group": "bida-tests"})
    }

    /// A topic under the source's filter, keyed (`bida-key`).
    fn target(&self, key: &str) -> Value {
        json!({"topic": format!("{}/{key}", self.0.base), "key": key})
    }

    /// MQTT keeps nothing for a group nobody has subscribed to yet.
    async fn ready(&self, bida: &Bida, consumer: &str) {
        bida.every_node_running(consumer).await
    }
}
