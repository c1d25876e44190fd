//! NATS JetStream for tests: the machine's server, a stream of each test's
//! own (subjects `<stream>.<key>`), deleted when dropped.

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

pub fn url() -> String {
    std::env::var("BIDA_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

pub struct TestStream {
    pub name: String,
    jetstream: jetstream::Context,
}

async fn context() -> jetstream::Context {
    let client = async_nats::connect(url())
        .await
        .expect("connect to NATS (set BIDA_TEST_NATS if it is not at 127.0.0.1:4222)");
    jetstream::new(client)
}

impl TestStream {
    pub async fn create() -> Self {
        let name = format!("BIDA_TEST_{}", uuid::Uuid::new_v4().simple());
        let jetstream = context().await;
        jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .expect("create the test stream (is JetStream enabled: nats-server -js?)");
        Self { name, jetstream }
    }

    /// The subject of a message with this key (`<stream>.<key>`, `<stream>._` without one).
    pub fn subject(&self, key: Option<&str>) -> String {
        let token: String = key
            .unwrap_or("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}.{token}", self.name)
    }

    /// Publishes each message and waits for the stream to acknowledge it.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        let mut acks = Vec::new();
        for (key, body) in messages {
            let ack = self
                .jetstream
                .publish(self.subject(key.as_deref()), Bytes::from(body))
                .await
                .expect("publish");
            acks.push(ack);
            // Bounded in flight: the server acknowledges in order.
            if acks.len() >= 512 {
                for ack in acks.drain(..) {
                    ack.await.expect("stream acknowledgement");
                }
            }
        }
        for ack in acks {
            ack.await.expect("stream acknowledgement");
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::run_apart(move || async move {
            let _ = context().await.delete_stream(&name).await;
        });
    }
}
