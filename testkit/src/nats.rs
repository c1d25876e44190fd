//! NATS JetStream for tests: the machine's server, a stream of each test's
//! own (subjects `<stream>.<key>`; in memory, or on disk to outlive a
//! restart of the server), deleted when dropped.

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::time::{Duration, Instant};

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
    /// A stream kept in memory (gone if the server restarts).
    pub async fn create() -> Self {
        Self::with_storage(stream::StorageType::Memory).await
    }

    /// A stream kept in files (the server's `-sd` store directory), which
    /// survives a restart of the server.
    pub async fn create_on_disk() -> Self {
        Self::with_storage(stream::StorageType::File).await
    }

    async fn with_storage(storage: stream::StorageType) -> Self {
        let name = format!("BIDA_TEST_{}", uuid::Uuid::new_v4().simple());
        let jetstream = context().await;
        jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                storage,
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

    /// Every message the stream holds, oldest first.
    pub async fn read_all(&self) -> Vec<StoredMessage> {
        let mut stream = self.jetstream.get_stream(&self.name).await.expect("the test stream");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut messages = Vec::new();
        if state.messages == 0 {
            return messages;
        }
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(sequence).await.expect("a stored message");
            let headers = message
                .headers
                .iter()
                .map(|(name, values)| {
                    let values: Vec<String> = values.iter().map(|v| v.as_str().to_string()).collect();
                    (name.to_string(), values.join(","))
                })
                .collect();
            messages.push(StoredMessage {
                sequence,
                subject: message.subject.to_string(),
                headers,
                payload: message.payload.to_vec(),
            });
        }
        messages
    }
}

/// A message as the stream stored it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    /// Header values by name (several values joined by commas).
    pub headers: std::collections::BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Kills the machine's nats-server (SIGKILL: nothing flushed on the way
/// out), leaves it down for `down`, and starts it again exactly as it was
/// started ([`crate::process`]); returns once JetStream serves `stream`
/// again (a stream on disk: [`TestStream::create_on_disk`]). For the fault
/// suite, which runs alone.
pub async fn restart_server(stream: &TestStream, down: Duration) {
    crate::process::Started::find("nats-server")
        .expect("a running nats-server process (.ci/run starts one)")
        .restart("KILL", down)
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            let client = async_nats::connect(url()).await.ok()?;
            jetstream::new(client).get_stream(&stream.name).await.ok()
        })
        .await;
        if let Ok(Some(_)) = answered {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not serve {} again in 2 minutes",
            stream.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
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
