//! A RocketMQ topic of the test's own (4 queues) on the machine's name
//! server and broker, read by a consumer group of its own.

use bida_testkit::rocketmq::{self, TestTopic};
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Topic(pub TestTopic);

impl Topic {
    pub async fn new() -> Self {
        Self(TestTopic::create().await)
    }
}

impl TestMq for Topic {
    /// A key's messages go to one queue (its hash), in order.
    async fn publish(&self, records: Vec<Record>) {
        self.0.publish(records.into_iter().map(|r| (r.key, r.body))).await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "rocketmq", "kind": "rocketmq", "name_server": rocketmq::name_server()})
    }

    fn source(&self) -> Value {
        json!({"topic": self.0.name, "group": self.0.group})
    }

    /// The topic, by sharding key.
    fn target(&self, key: &str) -> Value {
        json!({"topic": self.0.name, "sharding_key": key})
    }
}
