//! RocketMQ for tests: the machine's name server (127.0.0.1:9876, or
//! `BIDA_TEST_ROCKETMQ`) and the broker registered with it, a topic (4
//! queues) and a consumer group name of each test's own, and a producer that
//! speaks the remoting protocol by hand (not Bida's client: the two check
//! each other) and waits for the broker's answer to every message.
//!
//! The protocol: each command is a frame `[u32 length][u32 (serialize type
//! << 24) | header length][JSON header][body]`, big-endian, the length
//! counting everything after itself; a response carries its request's
//! `opaque` and bit 0 of `flag`. Everything here sends one request at a time
//! on a connection and reads until its response.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Queues of each test topic.
pub const QUEUES: i32 = 4;

/// The name server's address (`host:port`).
pub fn name_server() -> String {
    std::env::var("BIDA_TEST_ROCKETMQ").unwrap_or_else(|_| "127.0.0.1:9876".to_string())
}

/// Request codes (RocketMQ's `RequestCode`).
mod code {
    pub const SEND_MESSAGE: i32 = 10;
    pub const PULL_MESSAGE: i32 = 11;
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const DELETE_SUBSCRIPTIONGROUP: i32 = 207;
    pub const DELETE_TOPIC_IN_BROKER: i32 = 215;
    pub const DELETE_TOPIC_IN_NAMESRV: i32 = 216;
}

/// Response codes.
const SUCCESS: i32 = 0;
const QUERY_NOT_FOUND: i32 = 22;

const PRODUCER_GROUP: &str = "bida-testkit-producer";
const TIMEOUT: Duration = Duration::from_secs(30);
/// RocketMQ's message property separators.
const NAME_VALUE_SEPARATOR: char = '\u{1}';
const PROPERTY_SEPARATOR: char = '\u{2}';

static OPAQUE: AtomicI32 = AtomicI32::new(1);

/// An answer of the broker or name server.
#[derive(Debug)]
struct Response {
    code: i32,
    remark: Option<String>,
    fields: HashMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("RocketMQ's answer has no {name}: {self:?}"))
    }
}

/// One connection to the name server or a broker.
struct Connection {
    address: String,
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(address: &str) -> Self {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
            .await
            .unwrap_or_else(|_| panic!("connecting to RocketMQ at {address} timed out"))
            .unwrap_or_else(|e| {
                panic!("connect to RocketMQ at {address} ({e}; set BIDA_TEST_ROCKETMQ to the name server, .ci/run starts one)")
            });
        let _ = stream.set_nodelay(true);
        Self {
            address: address.to_string(),
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends a request and reads until its response (anything else skipped).
    async fn request(&mut self, code: i32, fields: &[(&str, &str)], body: &[u8]) -> Response {
        let opaque = OPAQUE.fetch_add(1, Ordering::Relaxed);
        let fields: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
            .collect();
        let header = serde_json::json!({
            "code": code,
            "language": "JAVA",
            "version": 453,
            "opaque": opaque,
            "flag": 0,
            "extFields": fields,
            "serializeTypeCurrentRPC": "JSON",
        });
        let header = serde_json::to_vec(&header).expect("a JSON header");
        let mut frame = Vec::with_capacity(8 + header.len() + body.len());
        frame.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes()); // serialize type 0: JSON
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        let address = self.address.clone();
        self.stream
            .write_all(&frame)
            .await
            .unwrap_or_else(|e| panic!("write to RocketMQ at {address}: {e}"));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (header, body) = self.read_frame(deadline, code).await;
            let flag = header["flag"].as_i64().unwrap_or(0);
            if flag & 1 == 0 || header["opaque"].as_i64() != Some(opaque as i64) {
                continue;
            }
            let fields = match &header["extFields"] {
                Value::Object(map) => map
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (name.clone(), value)
                    })
                    .collect(),
                _ => HashMap::new(),
            };
            return Response {
                code: header["code"].as_i64().expect("a response code") as i32,
                remark: header["remark"].as_str().map(str::to_string),
                fields,
                body,
            };
        }
    }

    async fn read_frame(&mut self, deadline: Instant, code: i32) -> (Value, Vec<u8>) {
        loop {
            if self.buffer.len() >= 8 {
                let length = u32::from_be_bytes(self.buffer[..4].try_into().unwrap()) as usize;
                if self.buffer.len() >= 4 + length {
                    let marked = u32::from_be_bytes(self.buffer[4..8].try_into().unwrap());
                    let header_length = (marked & 0x00FF_FFFF) as usize;
                    assert_eq!(
                        marked >> 24,
                        0,
                        "RocketMQ answered in its binary header encoding, not JSON"
                    );
                    let frame: Vec<u8> = self.buffer.drain(..4 + length).collect();
                    let header = parse_json(&frame[8..8 + header_length]);
                    return (header, frame[8 + header_length..].to_vec());
                }
            }
            let mut chunk = [0u8; 65536];
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no answer from RocketMQ at {} to request {code}", self.address))
                .unwrap_or_else(|e| panic!("read from RocketMQ at {}: {e}", self.address));
            assert!(
                read > 0,
                "RocketMQ at {} closed the connection (request {code})",
                self.address
            );
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Parses JSON, also as Java's fastjson writes it (integer map keys
/// unquoted: `{0:"127.0.0.1:10911"}`).
fn parse_json(bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return value;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut fixed = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    let mut escaped = false;
    let mut key_may_follow = false;
    while let Some(c) = chars.next() {
        if in_string {
            fixed.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if key_may_follow && (c.is_ascii_digit() || c == '-') {
            let mut key = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_ascii_digit() {
                    key.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            fixed.push('"');
            fixed.push_str(&key);
            fixed.push('"');
            key_may_follow = false;
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                key_may_follow = false;
            }
            '{' | ',' => key_may_follow = true,
            c if c.is_whitespace() => {}
            _ => key_may_follow = false,
        }
        fixed.push(c);
    }
    serde_json::from_str(&fixed).unwrap_or_else(|e| panic!("RocketMQ sent JSON that does not parse ({e}): {text}"))
}

/// A one-off request on a connection of its own.
async fn request(address: &str, code: i32, fields: &[(&str, &str)]) -> Response {
    Connection::open(address).await.request(code, fields, &[]).await
}

/// The master broker's address, from the name server's cluster view (waits
/// up to 30 s for a broker to register).
pub async fn broker() -> String {
    let name_server = name_server();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let response = request(&name_server, code::GET_BROKER_CLUSTER_INFO, &[]).await;
        assert_eq!(
            response.code, SUCCESS,
            "GET_BROKER_CLUSTER_INFO from the name server: {:?}",
            response.remark
        );
        let cluster = parse_json(&response.body);
        let master = cluster["brokerAddrTable"].as_object().and_then(|brokers| {
            let mut names: Vec<&String> = brokers.keys().collect();
            names.sort();
            names
                .into_iter()
                .find_map(|name| brokers[name]["brokerAddrs"]["0"].as_str().map(str::to_string))
        });
        if let Some(master) = master {
            return master;
        }
        assert!(
            Instant::now() < deadline,
            "no broker registered with the RocketMQ name server at {name_server}: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A topic of the test's own (`bida-test-<uuid>`, [`QUEUES`] queues) and a
/// consumer group name for it; both deleted when dropped.
pub struct TestTopic {
    pub name: String,
    pub group: String,
    /// The broker's address (`host:port`).
    pub broker: String,
}

impl TestTopic {
    /// Creates the topic on the broker and waits until the name server
    /// routes it (the broker registers topics with it on its own time).
    pub async fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple();
        let topic = Self {
            name: format!("bida-test-{id}"),
            group: format!("bida-test-group-{id}"),
            broker: broker().await,
        };
        let queues = QUEUES.to_string();
        let created = request(
            &topic.broker,
            code::UPDATE_AND_CREATE_TOPIC,
            &[
                ("topic", &topic.name),
                ("defaultTopic", "TBW102"),
                ("readQueueNums", &queues),
                ("writeQueueNums", &queues),
                ("perm", "6"),
                ("topicFilterType", "SINGLE_TAG"),
                ("topicSysFlag", "0"),
                ("order", "false"),
            ],
        )
        .await;
        assert_eq!(
            created.code, SUCCESS,
            "create the topic {} on the broker {}: {:?}",
            topic.name, topic.broker, created.remark
        );
        topic.wait_for_route().await;
        topic
    }

    async fn wait_for_route(&self) {
        let name_server = name_server();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut connection = Connection::open(&name_server).await;
        loop {
            let response = connection
                .request(code::GET_ROUTEINFO_BY_TOPIC, &[("topic", &self.name)], &[])
                .await;
            if response.code == SUCCESS {
                let route = parse_json(&response.body);
                let routed = route["queueDatas"].as_array().is_some_and(|queues| {
                    queues
                        .iter()
                        .any(|queue| queue["writeQueueNums"].as_i64() == Some(QUEUES as i64))
                });
                if routed {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the name server {name_server} has no route to {} a minute after it was created (last answer {} {:?})",
                self.name,
                response.code,
                response.remark
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends each message (its key in `KEYS`; keyed messages to the key's
    /// queue, see [`queue_of`]) and waits for the broker's answer to each.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        self.publish_with_ids(messages).await;
    }

    /// [`Self::publish`], answering the messages' ids (`UNIQ_KEY`, what
    /// RocketMQ clients call the message id), in order.
    pub async fn publish_with_ids(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) -> Vec<String> {
        let mut publisher = Publisher::connect(self).await;
        let mut ids = Vec::new();
        for (key, body) in messages {
            ids.push(publisher.send(key.as_deref(), &body).await.id);
        }
        ids
    }

    /// [`Self::publish`] with the tag `tag` (`TAGS`) on each message.
    pub async fn publish_tagged(&self, tag: &str, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        let mut publisher = Publisher::connect(self).await;
        for (key, body) in messages {
            publisher.send_tagged(Some(tag), key.as_deref(), &body).await;
        }
    }

    /// Each queue's end offset (the offset the next message will get).
    pub async fn end_offsets(&self) -> Vec<i64> {
        let mut connection = Connection::open(&self.broker).await;
        let mut offsets = Vec::new();
        for queue in 0..QUEUES {
            let queue = queue.to_string();
            let response = connection
                .request(code::GET_MAX_OFFSET, &[("topic", &self.name), ("queueId", &queue)], &[])
                .await;
            assert_eq!(
                response.code, SUCCESS,
                "GET_MAX_OFFSET of queue {queue}: {:?}",
                response.remark
            );
            offsets.push(response.field("offset").parse().expect("an offset"));
        }
        offsets
    }

    /// The offsets `group` committed on each queue (`None` where it never did).
    pub async fn committed(&self, group: &str) -> Vec<Option<i64>> {
        let mut connection = Connection::open(&self.broker).await;
        let mut offsets = Vec::new();
        for queue in 0..QUEUES {
            let queue = queue.to_string();
            let response = connection
                .request(
                    code::QUERY_CONSUMER_OFFSET,
                    &[
                        ("consumerGroup", group),
                        ("topic", &self.name),
                        ("queueId", &queue),
                        ("setZeroIfNotFound", "false"),
                    ],
                    &[],
                )
                .await;
            offsets.push(match response.code {
                SUCCESS => Some(response.field("offset").parse().expect("an offset")),
                QUERY_NOT_FOUND => None,
                other => panic!("QUERY_CONSUMER_OFFSET of queue {queue}: {other} {:?}", response.remark),
            });
        }
        offsets
    }
}

/// A message as the broker stored it (read back with `PULL_MESSAGE`).
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub queue: i32,
    pub offset: i64,
    pub body: Vec<u8>,
    pub properties: HashMap<String, String>,
}

impl TestTopic {
    /// Every message of every queue, by queue and then offset, pulled from
    /// the broker by a group of its own (which commits nothing).
    pub async fn read_all(&self) -> Vec<StoredMessage> {
        let ends = self.end_offsets().await;
        let mut connection = Connection::open(&self.broker).await;
        let group = format!("{}-reader", self.group);
        let mut messages = Vec::new();
        for (queue, end) in ends.into_iter().enumerate() {
            let mut offset = 0;
            while offset < end {
                let (queue_id, from) = (queue.to_string(), offset.to_string());
                let subscription_version = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("a clock after 1970")
                    .as_millis()
                    .to_string();
                let response = connection
                    .request(
                        code::PULL_MESSAGE,
                        &[
                            ("consumerGroup", &group),
                            ("topic", &self.name),
                            ("queueId", &queue_id),
                            ("queueOffset", &from),
                            ("maxMsgNums", "32"),
                            ("sysFlag", "4"),
                            ("commitOffset", "0"),
                            ("suspendTimeoutMillis", "0"),
                            ("subscription", "*"),
                            ("subVersion", &subscription_version),
                            ("expressionType", "TAG"),
                        ],
                        &[],
                    )
                    .await;
                assert_eq!(
                    response.code, SUCCESS,
                    "PULL_MESSAGE of queue {queue} at {offset} (end {end}): {:?}",
                    response.remark
                );
                let pulled = decode_stored(&response.body);
                assert!(!pulled.is_empty(), "a pull answer without messages");
                offset = pulled.last().map(|m| m.offset + 1).unwrap_or(end);
                messages.extend(pulled);
            }
        }
        messages
    }
}

/// The messages of a pull answer, in RocketMQ's stored layout: size,
/// magic, CRC, queue, flag, queue offset, commit log offset, system flag,
/// born time and host, store time and host, reconsume times, transaction
/// offset, body, topic, properties.
fn decode_stored(mut bytes: &[u8]) -> Vec<StoredMessage> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(bytes.len() >= n, "a truncated stored message");
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        head
    }
    fn int(bytes: &mut &[u8]) -> i32 {
        i32::from_be_bytes(take(bytes, 4).try_into().unwrap())
    }
    fn long(bytes: &mut &[u8]) -> i64 {
        i64::from_be_bytes(take(bytes, 8).try_into().unwrap())
    }
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let size = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut message = take(&mut bytes, size);
        let _size = int(&mut message);
        let magic = int(&mut message);
        let _crc = int(&mut message);
        let queue = int(&mut message);
        let _flag = int(&mut message);
        let offset = long(&mut message);
        let _commit_log = long(&mut message);
        let system = int(&mut message);
        let _born = long(&mut message);
        take(&mut message, if system & (1 << 4) != 0 { 20 } else { 8 });
        let _stored = long(&mut message);
        take(&mut message, if system & (1 << 5) != 0 { 20 } else { 8 });
        let _reconsumed = int(&mut message);
        let _transaction = long(&mut message);
        let body_length = int(&mut message) as usize;
        let body = take(&mut message, body_length).to_vec();
        let topic_length = if magic == -626_843_477 {
            u16::from_be_bytes(take(&mut message, 2).try_into().unwrap()) as usize
        } else {
            take(&mut message, 1)[0] as usize
        };
        take(&mut message, topic_length);
        let properties_length = u16::from_be_bytes(take(&mut message, 2).try_into().unwrap()) as usize;
        let properties = String::from_utf8_lossy(take(&mut message, properties_length))
            .split(PROPERTY_SEPARATOR)
            .filter_map(|pair| pair.split_once(NAME_VALUE_SEPARATOR))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        messages.push(StoredMessage {
            queue,
            offset,
            body,
            properties,
        });
    }
    messages
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let (topic, group, broker) = (self.name.clone(), self.group.clone(), self.broker.clone());
        crate::run_apart(move || async move {
            let work = async move {
                let mut connection = Connection::open(&broker).await;
                connection
                    .request(code::DELETE_TOPIC_IN_BROKER, &[("topic", &topic)], &[])
                    .await;
                connection
                    .request(
                        code::DELETE_SUBSCRIPTIONGROUP,
                        &[("groupName", &group), ("cleanOffset", "true")],
                        &[],
                    )
                    .await;
                request(&name_server(), code::DELETE_TOPIC_IN_NAMESRV, &[("topic", &topic)]).await;
            };
            // Best effort: a clean-up that fails (or panics) is not the test's failure.
            let _ = tokio::time::timeout(Duration::from_secs(10), tokio::spawn(work)).await;
        });
    }
}

/// The queue of a message with this key: the key's 32-bit FNV-1a hash
/// modulo [`QUEUES`], so that a key's messages stay in order in one queue.
pub fn queue_of(key: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % QUEUES as u32) as i32
}

/// A message the broker stored.
#[derive(Clone, Debug)]
pub struct Sent {
    /// `UNIQ_KEY`: the id the producer gave it (32 hex digits).
    pub id: String,
    pub queue: i32,
    pub offset: i64,
}

/// A connection to the broker that sends again and again (a paced producer
/// would otherwise pay a connection per message).
pub struct Publisher {
    connection: Connection,
    topic: String,
    next_queue: i32,
}

impl Publisher {
    pub async fn connect(topic: &TestTopic) -> Self {
        Self {
            connection: Connection::open(&topic.broker).await,
            topic: topic.name.clone(),
            next_queue: 0,
        }
    }

    /// Sends one message (keyed: to [`queue_of`] its key, with the key in
    /// `KEYS` and `__SHARDINGKEY`; else round robin) and waits for the
    /// broker to store it.
    pub async fn send(&mut self, key: Option<&str>, body: &[u8]) -> Sent {
        self.send_tagged(None, key, body).await
    }

    /// [`Self::send`] with a tag (`TAGS`).
    pub async fn send_tagged(&mut self, tag: Option<&str>, key: Option<&str>, body: &[u8]) -> Sent {
        let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let queue = match key {
            Some(key) => queue_of(key),
            None => {
                let queue = self.next_queue;
                self.next_queue = (self.next_queue + 1) % QUEUES;
                queue
            }
        };
        let mut properties = vec![("UNIQ_KEY", id.as_str()), ("WAIT", "true")];
        if let Some(key) = key {
            properties.push(("KEYS", key));
            properties.push(("__SHARDINGKEY", key));
        }
        if let Some(tag) = tag {
            properties.push(("TAGS", tag));
        }
        let properties: String = properties
            .into_iter()
            .map(|(name, value)| format!("{name}{NAME_VALUE_SEPARATOR}{value}{PROPERTY_SEPARATOR}"))
            .collect();
        let born = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis()
            .to_string();
        let queue_id = queue.to_string();
        let queues = QUEUES.to_string();
        let response = self
            .connection
            .request(
                code::SEND_MESSAGE,
                &[
                    ("producerGroup", PRODUCER_GROUP),
                    ("topic", &self.topic),
                    ("defaultTopic", "TBW102"),
                    ("defaultTopicQueueNums", &queues),
                    ("queueId", &queue_id),
                    ("sysFlag", "0"),
                    ("bornTimestamp", &born),
                    ("flag", "0"),
                    ("properties", &properties),
                    ("reconsumeTimes", "0"),
                    ("unitMode", "false"),
                    ("batch", "false"),
                ],
                body,
            )
            .await;
        let hint = match &response.remark {
            Some(remark) if remark.contains("store_not_writeable") => {
                " (the broker refuses writes once the file system under its store is 90% used: see `df` there)"
            }
            _ => "",
        };
        assert_eq!(
            response.code, SUCCESS,
            "RocketMQ did not store a message to {} (queue {queue}): {:?}{hint}",
            self.topic, response.remark
        );
        Sent {
            id,
            queue: response.field("queueId").parse().expect("a queue id"),
            offset: response.field("queueOffset").parse().expect("a queue offset"),
        }
    }
}

/// Kills the machine's RocketMQ broker (SIGKILL: nothing flushed on the way
/// out), leaves it down for `down`, and starts it again exactly as it was
/// started (its command line, environment, directory, user and log files,
/// read from `/proc`: [`crate::process`]); returns once it takes requests
/// for `topic` again. For the fault suite, which runs alone.
pub async fn restart_broker(topic: &TestTopic, down: Duration) {
    crate::process::Started::find("rocketmq-broker-rust")
        .expect("a running rocketmq-broker-rust process (.ci/run starts one)")
        .restart("KILL", down)
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Ok(mut connection)) = tokio::time::timeout(Duration::from_secs(2), try_open(&topic.broker)).await {
            let response = connection
                .request(code::GET_MAX_OFFSET, &[("topic", &topic.name), ("queueId", "0")], &[])
                .await;
            if response.code == SUCCESS {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the RocketMQ broker did not come back in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection, or `Err` while nothing listens.
async fn try_open(address: &str) -> Result<Connection, ()> {
    let stream = TcpStream::connect(address).await.map_err(|_| ())?;
    let _ = stream.set_nodelay(true);
    Ok(Connection {
        address: address.to_string(),
        stream,
        buffer: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_java_json_with_unquoted_integer_keys() {
        let value = super::parse_json(br#"{"brokerAddrs":{0:"127.0.0.1:10911",1:"a,{2:b"},"n":-1}"#);
        assert_eq!(value["brokerAddrs"]["0"], "127.0.0.1:10911");
        assert_eq!(value["brokerAddrs"]["1"], "a,{2:b");
        assert_eq!(value["n"], -1);
    }
}
