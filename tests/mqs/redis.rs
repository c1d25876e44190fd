//! A Redis stream of the test's own on the machine's Redis server.

use bida_testkit::redis::{self, TestStream};
use serde_json::{json, Value};

use super::{Record, TestMq};

pub struct Stream(pub TestStream);

impl Stream {
    pub async fn new() -> Self {
        Self(TestStream::create())
    }
}

impl TestMq for Stream {
    /// Entries with `body` and `key` fields (Redis gives each its own id).
    async fn publish(&self, records: Vec<Record>) {
        self.0.publish(records.into_iter().map(|r| (r.key, r.body))).await
    }

    fn broker_body(&self) -> Value {
        json!({"name": "redis", "kind": "redis", "url": redis::url()})
    }

    fn source(&self) -> Value {
        json!({"stream": self.0.name, "group": "bida-tests"})
    }

    /// The stream, keyed.
    fn target(&self, key: &str) -> Value {
        json!({"stream": self.0.name, "key": key})
    }
}
