//! RocketMQ's remoting protocol, as its Java and Rust brokers speak it: a
//! length-prefixed frame holding a JSON header (code, opaque, flag,
//! `extFields`) and a body. Requests and their responses share an opaque, so
//! one connection carries many requests at once (every queue's long poll of
//! a consumer); a reader task routes the answers and hands requests the
//! broker sends (a group's members changed) to whoever listens.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::sources::SourceError;

/// Request codes Bida uses.
pub mod code {
    pub const SEND_MESSAGE: i32 = 10;
    pub const PULL_MESSAGE: i32 = 11;
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    pub const GET_BROKER_RUNTIME_INFO: i32 = 28;
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_MIN_OFFSET: i32 = 31;
    pub const HEART_BEAT: i32 = 34;
    pub const UNREGISTER_CLIENT: i32 = 35;
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const INVOKE_BROKER_TO_RESET_OFFSET: i32 = 222;
}

/// Response codes Bida tells apart.
pub mod status {
    pub const SUCCESS: i32 = 0;
    pub const MESSAGE_ILLEGAL: i32 = 13;
    pub const NO_PERMISSION: i32 = 16;
    pub const TOPIC_NOT_EXIST: i32 = 17;
    pub const PULL_NOT_FOUND: i32 = 19;
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    pub const PULL_OFFSET_MOVED: i32 = 21;
    pub const QUERY_NOT_FOUND: i32 = 22;
}

const RESPONSE_FLAG: i32 = 1;
/// The protocol version Bida announces (RocketMQ 5.x clients send 4xx-5xx).
const VERSION: i32 = 453;
/// Frames above this are refused (a pull answers at most a few MiB).
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Header {
    code: i32,
    #[serde(default)]
    language: String,
    #[serde(default)]
    version: i32,
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remark: Option<String>,
    #[serde(rename = "extFields", default, deserialize_with = "ext_fields")]
    ext_fields: BTreeMap<String, String>,
    #[serde(rename = "serializeTypeCurrentRPC", default)]
    serialize_type: String,
}

/// `extFields` values as strings, whatever JSON type a broker wrote them as.
fn ext_fields<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let fields: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(deserializer)?;
    Ok(fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some((name, text)),
            other => Some((name, other.to_string())),
        })
        .collect())
}

/// A request to send.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub code: i32,
    pub fields: BTreeMap<String, String>,
    pub body: Option<Bytes>,
}

impl Request {
    pub fn new(code: i32) -> Self {
        Self {
            code,
            ..Self::default()
        }
    }

    pub fn field(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.insert(name.to_string(), value.to_string());
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// A response, or a request the broker sent.
#[derive(Clone, Debug)]
pub struct Response {
    pub code: i32,
    pub remark: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Response {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A numeric field, or an error naming it.
    pub fn number(&self, name: &str) -> Result<i64, SourceError> {
        self.field(name)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| SourceError::Broker(format!("the broker's answer has no {name}")))
    }

    /// Success, or the broker's reason as an error.
    pub fn ok(self) -> Result<Self, SourceError> {
        if self.code == status::SUCCESS {
            Ok(self)
        } else {
            Err(self.refusal())
        }
    }

    pub fn refusal(&self) -> SourceError {
        SourceError::Broker(format!(
            "code {}: {}",
            self.code,
            self.remark.as_deref().unwrap_or("no reason given")
        ))
    }

    /// The body as JSON. Java brokers write maps with number keys unquoted
    /// (`{0:"host:10911"}`, fastjson's habit); those are quoted first.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, SourceError> {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_str(&quote_number_keys(&text))
            .map_err(|e| SourceError::Broker(format!("unreadable answer from the broker: {e}")))
    }
}

/// Quotes object keys that are bare numbers, outside strings.
fn quote_number_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    let (mut in_string, mut escaped, mut after_open) = (false, false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if after_open && (c.is_ascii_digit() || c == '-') {
            let mut key = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_ascii_digit() {
                    key.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            let rest_is_colon = chars.peek().is_some_and(|&next| next == ':');
            if rest_is_colon {
                out.push('"');
                out.push_str(&key);
                out.push('"');
            } else {
                out.push_str(&key);
            }
            after_open = false;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | ',' => {
                out.push(c);
                after_open = true;
                continue;
            }
            c if c.is_whitespace() => {
                out.push(c);
                continue;
            }
            _ => {}
        }
        after_open = false;
        out.push(c);
    }
    out
}

fn encode(header: &Header, body: Option<&Bytes>) -> Result<Bytes, SourceError> {
    let header = serde_json::to_vec(header).map_err(|e| SourceError::Invalid(e.to_string()))?;
    let body_len = body.map_or(0, Bytes::len);
    let mut frame = BytesMut::with_capacity(4 + header.len() + body_len);
    // The serialisation type (0: JSON) in the high byte, the header's length below.
    frame.put_u32(header.len() as u32 & 0x00ff_ffff);
    frame.put_slice(&header);
    if let Some(body) = body {
        frame.put_slice(body);
    }
    Ok(frame.freeze())
}

/// A frame's header and body.
fn decode(mut frame: BytesMut) -> Result<(Header, Bytes), SourceError> {
    if frame.len() < 4 {
        return Err(SourceError::Lost("a truncated frame".into()));
    }
    let word = frame.get_u32();
    let (kind, length) = (word >> 24, (word & 0x00ff_ffff) as usize);
    if kind != 0 {
        return Err(SourceError::Lost(
            "the broker answers in RocketMQ's binary header format; Bida reads JSON headers".into(),
        ));
    }
    if length > frame.len() {
        return Err(SourceError::Lost("a frame shorter than its header".into()));
    }
    let header_bytes = frame.split_to(length);
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| SourceError::Lost(format!("an unreadable frame header: {e}")))?;
    Ok((header, frame.freeze()))
}

type Waiting = Arc<Mutex<HashMap<i32, oneshot::Sender<Response>>>>;

/// One connection to a name server or a broker.
pub struct Remote {
    pub address: String,
    writer: tokio::sync::Mutex<FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>>,
    waiting: Waiting,
    opaque: AtomicI32,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

impl Remote {
    /// Connects; requests the broker sends (with their code) go to `notices`.
    pub async fn connect(address: &str, notices: Option<mpsc::UnboundedSender<i32>>) -> Result<Arc<Self>, SourceError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| SourceError::Connect(format!("{address}: no answer in {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| SourceError::Connect(format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let waiting: Waiting = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read_frames(
            FramedRead::new(read, codec()),
            waiting.clone(),
            alive.clone(),
            notices,
            address.to_string(),
        ));
        Ok(Arc::new(Self {
            address: address.to_string(),
            writer: tokio::sync::Mutex::new(FramedWrite::new(write, codec())),
            waiting,
            opaque: AtomicI32::new(1),
            alive,
            reader,
        }))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    fn header(&self, request: &Request, flag: i32) -> Header {
        Header {
            code: request.code,
            language: "RUST".into(),
            version: VERSION,
            opaque: self.opaque.fetch_add(1, Ordering::Relaxed),
            flag,
            remark: None,
            ext_fields: request.fields.clone(),
            serialize_type: "JSON".into(),
        }
    }

    async fn write(&self, header: &Header, body: Option<&Bytes>) -> Result<(), SourceError> {
        let frame = encode(header, body)?;
        let mut writer = self.writer.lock().await;
        writer.send(frame).await.map_err(|e| {
            self.alive.store(false, Ordering::Relaxed);
            SourceError::Lost(format!("{}: {e}", self.address))
        })
    }

    /// Sends a request and waits up to `timeout` for its response.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, SourceError> {
        if !self.is_alive() {
            return Err(SourceError::Lost(format!("{}: the connection is closed", self.address)));
        }
        let header = self.header(&request, 0);
        let (answer, answered) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(header.opaque, answer);
        let forget = Forget {
            waiting: &self.waiting,
            opaque: header.opaque,
        };
        self.write(&header, request.body.as_ref()).await?;
        let response = tokio::time::timeout(timeout, answered).await;
        drop(forget);
        match response {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(SourceError::Lost(format!("{}: the connection closed", self.address))),
            Err(_) => Err(SourceError::Broker(format!(
                "{}: no answer to request {} in {timeout:?}",
                self.address, request.code
            ))),
        }
    }
}

/// Removes a request's slot however its wait ends (a dropped call included).
struct Forget<'a> {
    waiting: &'a Waiting,
    opaque: i32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.opaque);
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_frames(
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    waiting: Waiting,
    alive: Arc<AtomicBool>,
    notices: Option<mpsc::UnboundedSender<i32>>,
    address: String,
) {
    while let Some(frame) = frames.next().await {
        let Ok(frame) = frame else { break };
        let (header, body) = match decode(frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(%address, error = %e, "RocketMQ connection closed");
                break;
            }
        };
        if header.flag & RESPONSE_FLAG != 0 {
            let answer = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&header.opaque);
            if let Some(answer) = answer {
                let _ = answer.send(Response {
                    code: header.code,
                    remark: header.remark,
                    fields: header.ext_fields,
                    body,
                });
            }
        } else if let Some(notices) = &notices {
            let _ = notices.send(header.code);
        }
    }
    alive.store(false, Ordering::Relaxed);
    waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_keys_are_quoted_outside_strings() {
        let java = r#"{"brokerAddrs":{0:"127.0.0.1:10911",1:"h:1"},"n":[1,2],"s":"{0:x}","neg":{-1:2}}"#;
        let fixed = quote_number_keys(java);
        assert_eq!(
            fixed,
            r#"{"brokerAddrs":{"0":"127.0.0.1:10911","1":"h:1"},"n":[1,2],"s":"{0:x}","neg":{"-1":2}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(value["brokerAddrs"]["0"], "127.0.0.1:10911");
        assert_eq!(quote_number_keys(r#"{"a":[1, 2]}"#), r#"{"a":[1, 2]}"#);
    }

    #[test]
    fn frames_carry_a_json_header_and_a_body() {
        let header = Header {
            code: code::PULL_MESSAGE,
            opaque: 7,
            ext_fields: BTreeMap::from([("topic".to_string(), "t".to_string())]),
            ..Header::default()
        };
        let frame = encode(&header, Some(&Bytes::from_static(b"body"))).unwrap();
        let (decoded, body) = decode(BytesMut::from(&frame[..])).unwrap();
        assert_eq!((decoded.code, decoded.opaque), (code::PULL_MESSAGE, 7));
        assert_eq!(decoded.ext_fields["topic"], "t");
        assert_eq!(&body[..], b"body");
    }
}
