//! An ActiveMQ queue of the test's own on the machine's broker (STOMP).

use bida_testkit::activemq::{self, TestQueue};
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Queue(pub TestQueue);

impl Queue {
    pub async fn new() -> Self {
        Self(TestQueue::create())
    }
}

impl TestMq for Queue {
    /// Persistent messages, their keys in `bida-key` (ActiveMQ gives each its id).
    async fn publish(&self, records: Vec<Record>) {
        self.0.publish(records.into_iter().map(|r| (r.key, r.body))).await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "activemq", "kind": "activemq", "url": activemq::url()})
    }

    fn ids_end_in_a_number(&self) -> bool {
        true
    }

    fn source(&self) -> Value {
        json!({"queue": self.0.name})
    }

    /// The queue, keyed (`bida-key`).
    fn target(&self, key: &str) -> Value {
        json!({"queue": self.0.name, "key": key})
    }
}
