//! A Kafka-protocol broker (tansu) of the test's own, with a topic of 4 partitions.

use bida_testkit::kafka::KafkaBroker;
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Topic {
    pub broker: KafkaBroker,
    pub name: String,
}

impl Topic {
    pub async fn new() -> Self {
        let broker = KafkaBroker::start().await;
        broker.create_topic("events", 4).await;
        Self {
            broker,
            name: "events".into(),
        }
    }
}

impl TestMq for Topic {
    async fn publish(&self, records: Vec<Record>) {
        self.broker
            .produce(&self.name, records.into_iter().map(|r| (r.key, r.body)))
            .await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "k", "kind": "kafka", "bootstrap_servers": self.broker.bootstrap})
    }

    fn ids_end_in_a_number(&self) -> bool {
        true
    }

    fn source(&self) -> Value {
        json!({"topics": [self.name], "group": "bida-tests"})
    }

    /// The topic, keyed.
    fn target(&self, key: &str) -> Value {
        json!({"topic": self.name, "key": key})
    }
}
