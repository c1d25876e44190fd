//! Kafka for tests: a real Kafka-protocol broker (tansu) of each test's own,
//! on a free port, with topics and producers.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tansu broker, killed when dropped. `BIDA_TEST_TANSU` names the binary
/// (`tansu` on the PATH by default); `.ci/run` installs it.
pub struct KafkaBroker {
    child: Child,
    pub bootstrap: String,
    port: u16,
    /// `memory://tansu/`, or a SQLite file that survives a restart.
    storage: String,
    /// Holds the SQLite file of a durable broker.
    dir: Option<TempDir>,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tansu() -> String {
    std::env::var("BIDA_TEST_TANSU").unwrap_or_else(|_| "tansu".to_string())
}

/// Starts tansu in `dir` (a SQLite storage URL names its file relative to it).
fn spawn(port: u16, storage: &str, dir: Option<&TempDir>) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(tansu());
    if let Some(dir) = dir {
        command.current_dir(&dir.0);
    }
    command
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", storage])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the Kafka broker `{}` ({e}); install it with \
                 `cargo install tansu --locked --features dynostore,libsql` or set BIDA_TEST_TANSU",
                tansu()
            )
        })
}

impl KafkaBroker {
    /// A broker keeping its log in memory.
    pub async fn start() -> Self {
        Self::launch("memory://tansu/".to_string(), None).await
    }

    /// A broker keeping its log in a SQLite file, so that it survives [`Self::restart`].
    pub async fn start_durable() -> Self {
        let dir = std::env::temp_dir().join(format!("bida-tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("broker directory");
        Self::launch("sqlite://tansu.db".to_string(), Some(TempDir(dir))).await
    }

    async fn launch(storage: String, dir: Option<TempDir>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let broker = Self {
            child: spawn(port, &storage, dir.as_ref()),
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            storage,
            dir,
        };
        broker.wait_listening().await;
        broker
    }

    async fn wait_listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Kafka broker did not start on port {}", self.port);
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub async fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(down_for).await;
        self.child = spawn(self.port, &self.storage, self.dir.as_ref());
        self.wait_listening().await;
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let created = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic");
        for result in created {
            result.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
        }
    }

    /// One record per batch: tansu 0.6 (in memory) answers a fetch that
    /// starts inside a record batch with the batches after it, or with
    /// nothing inside its last one (Kafka serves it). Bida reads such gaps
    /// back, which takes a few fetches; tests that are not about that use
    /// this producer (`tests/stress.rs` batches on purpose).
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("acks", "all")
            .set("batch.num.messages", "1")
            .create()
            .expect("producer")
    }

    /// Produces records with binary keys, waiting for every acknowledgement.
    pub async fn produce_raw(&self, topic: &str, records: Vec<(Vec<u8>, Vec<u8>)>) {
        let producer = self.producer();
        for (key, payload) in &records {
            producer
                .send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    }

    /// Produces `(key, payload)` records, waiting for every acknowledgement.
    pub async fn produce(&self, topic: &str, records: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        Self::send_all(&self.producer(), topic, records).await
    }

    /// A batching producer: fast, and the shape real producers have (several
    /// records per batch, see [`KafkaBroker::producer`]).
    pub fn batching_producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    pub async fn send_all(
        producer: &FutureProducer,
        topic: &str,
        records: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
    ) {
        let records: Vec<(Option<String>, Vec<u8>)> = records.into_iter().collect();
        for chunk in records.chunks(1_000) {
            let sends = chunk.iter().map(|(key, payload)| {
                let mut record = FutureRecord::to(topic)
                    .payload(payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some("application/json"),
                    }));
                if let Some(key) = key {
                    record = record.key(key);
                }
                producer.send(record, Duration::from_secs(30))
            });
            for sent in futures::future::join_all(sends).await {
                sent.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            }
        }
    }
}

impl KafkaBroker {
    /// Writes a group's committed offset from outside the group, as a lost
    /// commit leaves it (tansu accepts commits from non-members).
    pub async fn overwrite_group_offset(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
            .expect("partition");
        tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::commit(&consumer, &list, rdkafka::consumer::CommitMode::Sync)
                .expect("commit from outside the group")
        })
        .await
        .expect("commit task");
    }
}

/// What a fresh reader finds in one partition.
#[derive(Debug)]
pub struct PartitionContents {
    pub partition: i32,
    /// `(low, high)` as the broker reports them.
    pub watermarks: Result<(i64, i64), String>,
    /// Offsets and payloads, in the order read.
    pub records: Vec<(i64, Vec<u8>)>,
}

impl KafkaBroker {
    /// Reads each partition of `topic` from its start with a fresh consumer
    /// until nothing new comes for a few seconds: what the broker serves now.
    pub async fn read_all(&self, topic: &str, partitions: i32) -> Vec<PartitionContents> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let (bootstrap, topic) = (self.bootstrap.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("read-all-{}", uuid::Uuid::new_v4().simple()))
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            (0..partitions)
                .map(|partition| {
                    let watermarks = consumer
                        .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                        .map_err(|e| e.to_string());
                    let mut list = rdkafka::TopicPartitionList::new();
                    list.add_partition_offset(&topic, partition, rdkafka::Offset::Beginning)
                        .expect("partition");
                    consumer.assign(&list).expect("assign");
                    let mut records = Vec::new();
                    let mut idle = std::time::Instant::now();
                    while idle.elapsed() < Duration::from_secs(3) {
                        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                            idle = std::time::Instant::now();
                            records.push((message.offset(), message.payload().unwrap_or_default().to_vec()));
                        }
                    }
                    PartitionContents {
                        partition,
                        watermarks,
                        records,
                    }
                })
                .collect()
        })
        .await
        .expect("read task")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record read back: where it is, its key, headers and payload.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// In the order written; a header without a value has `None`.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaBroker {
    /// Every record of `topic`'s partitions with its key and headers, read
    /// from the start with a fresh consumer until nothing new comes for a
    /// few seconds (as [`KafkaBroker::read_all`]).
    pub async fn read_records(&self, topic: &str, partitions: i32) -> Vec<ReadRecord> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Headers;
        use rdkafka::Message;
        let (bootstrap, topic) = (self.bootstrap.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("read-records-{}", uuid::Uuid::new_v4().simple()))
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            let mut records = Vec::new();
            for partition in 0..partitions {
                let mut list = rdkafka::TopicPartitionList::new();
                list.add_partition_offset(&topic, partition, rdkafka::Offset::Beginning)
                    .expect("partition");
                consumer.assign(&list).expect("assign");
                let mut idle = std::time::Instant::now();
                while idle.elapsed() < Duration::from_secs(3) {
                    if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                        idle = std::time::Instant::now();
                        let headers = message
                            .headers()
                            .map(|headers| {
                                headers
                                    .iter()
                                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        records.push(ReadRecord {
                            partition: message.partition(),
                            offset: message.offset(),
                            key: message.key().map(<[u8]>::to_vec),
                            payload: message.payload().unwrap_or_default().to_vec(),
                            headers,
                        });
                    }
                }
            }
            records
        })
        .await
        .expect("read task")
    }
}
