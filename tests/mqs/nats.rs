//! A JetStream stream of the test's own on the machine's NATS server.

use bida_testkit::nats::{self, TestStream};
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Stream(pub TestStream);

impl Stream {
    pub async fn new() -> Self {
        Self(TestStream::create().await)
    }
}

impl TestMq for Stream {
    /// The key is the subject's last token (NATS carries no other id than
    /// the stream sequence).
    async fn publish(&self, records: Vec<Record>) {
        self.0.publish(records.into_iter().map(|r| (r.key, r.body))).await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "nats", "kind": "nats", "url": nats::url()})
    }

    fn ids_end_in_a_number(&self) -> bool {
        true
    }

    fn source(&self) -> Value {
        json!({"stream": self.0.name, "durable": "bida-tests"})
    }

    /// A subject of the stream (its key).
    fn target(&self, key: &str) -> Value {
        json!({"subject": format!("{}.{key}", self.0.name)})
    }
}
