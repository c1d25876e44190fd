//! A RabbitMQ queue of the test's own on the machine's broker.

use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Queue(pub TestQueue);

impl Queue {
    pub async fn new() -> Self {
        Self(TestQueue::declare().await)
    }
}

impl TestMq for Queue {
    async fn publish(&self, records: Vec<Record>) {
        self.0
            .publish_keyed(records.into_iter().map(|r| (Some(r.id), r.key, r.body)))
            .await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url()})
    }

    fn source(&self) -> Value {
        json!({"queue": self.0.name})
    }

    /// The queue, through the default exchange (a RabbitMQ message's key
    /// is its `bida-key` header, which no message field sets).
    fn target(&self, _key: &str) -> Value {
        json!({"routing_key": self.0.name})
    }
}
