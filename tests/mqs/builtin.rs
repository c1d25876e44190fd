//! A topic of the test's own on the node's built-in broker (4 partitions):
//! it lives in the node's store, so it is made, and published to, through
//! the node's API once the test has a node.

use base64::Engine;
use serde_json::{json, Value};
use std::sync::Mutex;

use super::super::support::Bida;
use super::{Record, TestMq};

pub struct Topic {
    pub name: String,
    /// The node the test started (its URL and keyed client), once known.
    node: Mutex<Option<(String, reqwest::Client)>>,
}

impl Topic {
    pub async fn new() -> Self {
        Self {
            name: format!("t-{}", uuid::Uuid::new_v4().simple()),
            node: Mutex::new(None),
        }
    }

    fn node(&self) -> (String, reqwest::Client) {
        self.node
            .lock()
            .unwrap()
            .clone()
            .expect("a built-in topic is published to through a node: make the consumer or broker first")
    }
}

impl TestMq for Topic {
    async fn publish(&self, records: Vec<Record>) {
        let (url, http) = self.node();
        let engine = base64::engine::general_purpose::STANDARD;
        for chunk in records.chunks(1_000) {
            let messages: Vec<Value> = chunk
                .iter()
                .map(|r| match &r.key {
                    Some(key) => json!({"key": key, "body_base64": engine.encode(&r.body)}),
                    None => json!({"body_base64": engine.encode(&r.body)}),
                })
                .collect();
            let response = http
                .post(format!("{url}/v1/topics/{}/messages", self.name))
                .json(&json!({"messages": messages}))
                .send()
                .await
                .expect("the node answers");
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert_eq!(status, 200, "publish: {text}");
        }
    }

    fn broker_body(&self) -> Value {
        unreachable!("the built-in broker is never registered")
    }

    fn source(&self) -> Value {
        json!({"topic": self.name})
    }

    fn target(&self, key: &str) -> Value {
        json!({"topic": self.name, "key": key})
    }

    /// The built-in broker, with this test's topic made on it.
    async fn broker(&self, bida: &Bida) -> String {
        *self.node.lock().unwrap() = Some((bida.url.clone(), bida.http.clone()));
        let (status, topic) = bida
            .post("/v1/topics", json!({"name": self.name, "partitions": 4}))
            .await;
        // A second node of the test's cluster finds it made.
        assert!(status == 201 || status == 409, "{status} {topic}");
        "builtin".into()
    }
}
