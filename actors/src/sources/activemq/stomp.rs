//! A STOMP 1.2 client, as much of it as a consumer needs: frames with
//! escaped headers and length-delimited bodies, CONNECT with heart-beats,
//! a writer task that keeps the connection alive, and a reader that calls
//! the connection lost when the broker falls silent.
//!
//! Our own rather than a crate's: the STOMP crates are unmaintained or
//! bring aws-lc as a second TLS provider next to our ring (which leaves
//! rustls without a default provider).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

use crate::sources::SourceError;

/// The largest frame taken.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// How often each side promises to show it is alive.
const HEART_BEAT: Duration = Duration::from_secs(10);
/// Silence past this many promised beats means the connection is gone.
const MISSED_BEATS: u32 = 3;

/// One STOMP frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_string(),
            ..Self::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    #[cfg(test)]
    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// A header's value: the first one given, as STOMP 1.2 says.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// What an ERROR frame says.
    pub fn error_text(&self) -> String {
        let detail = String::from_utf8_lossy(&self.body);
        let detail = detail.trim();
        match (self.get("message"), detail.is_empty()) {
            (Some(message), true) => message.to_string(),
            (Some(message), false) => format!("{message}: {}", detail.lines().next().unwrap_or("")),
            (None, _) => detail.to_string(),
        }
    }
}

/// What comes from the broker: a frame, or a heart-beat.
#[derive(Debug, PartialEq)]
pub enum Received {
    Frame(Frame),
    HeartBeat,
}

/// What goes to the broker.
#[derive(Debug)]
enum Sent {
    Frame(Frame),
    HeartBeat,
}

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

impl From<WireError> for SourceError {
    fn from(error: WireError) -> Self {
        match error {
            WireError::Io(e) => SourceError::Lost(e.to_string()),
            WireError::Protocol(text) => SourceError::Broker(text),
        }
    }
}

/// Frames on the wire. Headers of CONNECT and CONNECTED are not escaped
/// (STOMP 1.2 keeps them readable by 1.0 brokers); all others are.
#[derive(Default)]
pub struct Codec;

fn escape(text: &str, into: &mut BytesMut) {
    for c in text.chars() {
        match c {
            '\\' => into.put_slice(b"\\\\"),
            '\n' => into.put_slice(b"\\n"),
            '\r' => into.put_slice(b"\\r"),
            ':' => into.put_slice(b"\\c"),
            c => {
                let mut buffer = [0; 4];
                into.put_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
}

fn unescape(text: &str) -> Result<String, WireError> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('c') => ':',
            other => {
                return Err(WireError::Protocol(format!(
                    "a STOMP header with an undefined escape: \\{}",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        });
    }
    Ok(out)
}

impl Decoder for Codec {
    type Item = Received;
    type Error = WireError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Received>, WireError> {
        // End-of-lines between frames are heart-beats.
        if buffer.first() == Some(&b'\n') {
            buffer.advance(1);
            return Ok(Some(Received::HeartBeat));
        }
        if buffer.starts_with(b"\r\n") {
            buffer.advance(2);
            return Ok(Some(Received::HeartBeat));
        }
        // The first blank line ends the headers, whichever line ends it uses.
        let bare = buffer.windows(2).position(|w| w == b"\n\n").map(|at| (at, at + 2));
        let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, at + 4));
        let Some((_, head_end)) = [bare, crlf].into_iter().flatten().min() else {
            return too_large(buffer.len());
        };
        let head = std::str::from_utf8(&buffer[..head_end])
            .map_err(|_| WireError::Protocol("a STOMP frame whose headers are not UTF-8".into()))?;
        let mut lines = head.lines().map(|line| line.trim_end_matches('\r'));
        let command = lines.next().unwrap_or_default().to_string();
        let raw = command == "CONNECTED";
        let mut headers = Vec::new();
        for line in lines.filter(|line| !line.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| WireError::Protocol(format!("a STOMP header without a colon: {line}")))?;
            headers.push(if raw {
                (name.to_string(), value.to_string())
            } else {
                (unescape(name)?, unescape(value)?)
            });
        }
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.trim().parse::<usize>())
            .transpose()
            .map_err(|_| WireError::Protocol("a STOMP content-length that is not a number".into()))?;
        let body_end = match length {
            Some(length) => {
                if head_end + length + 1 > buffer.len() {
                    buffer.reserve(head_end + length + 1 - buffer.len());
                    return too_large(head_end + length);
                }
                if buffer[head_end + length] != 0 {
                    return Err(WireError::Protocol(
                        "a STOMP body longer than its content-length".into(),
                    ));
                }
                head_end + length
            }
            None => match buffer[head_end..].iter().position(|b| *b == 0) {
                Some(at) => head_end + at,
                None => return too_large(buffer.len()),
            },
        };
        let mut frame = buffer.split_to(body_end + 1);
        frame.truncate(body_end);
        let body = frame.split_off(head_end).freeze();
        Ok(Some(Received::Frame(Frame { command, headers, body })))
    }
}

/// More is needed, unless the frame is already too large.
fn too_large(length: usize) -> Result<Option<Received>, WireError> {
    if length > MAX_FRAME {
        Err(WireError::Protocol(format!(
            "a STOMP frame larger than {MAX_FRAME} bytes"
        )))
    } else {
        Ok(None)
    }
}

impl Encoder<Sent> for Codec {
    type Error = WireError;

    fn encode(&mut self, sent: Sent, out: &mut BytesMut) -> Result<(), WireError> {
        let frame = match sent {
            Sent::HeartBeat => {
                out.put_u8(b'\n');
                return Ok(());
            }
            Sent::Frame(frame) => frame,
        };
        let raw = frame.command == "CONNECT";
        out.put_slice(frame.command.as_bytes());
        out.put_u8(b'\n');
        for (name, value) in &frame.headers {
            if raw {
                out.put_slice(name.as_bytes());
                out.put_u8(b':');
                out.put_slice(value.as_bytes());
            } else {
                escape(name, out);
                out.put_u8(b':');
                escape(value, out);
            }
            out.put_u8(b'\n');
        }
        if !frame.body.is_empty() {
            out.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        out.put_u8(b'\n');
        out.put_slice(&frame.body);
        out.put_u8(0);
        Ok(())
    }
}

/// Where frames go to the broker; clones share the connection.
#[derive(Clone)]
pub struct Sender(mpsc::UnboundedSender<Sent>);

impl Sender {
    pub fn send(&self, frame: Frame) -> Result<(), SourceError> {
        self.0
            .send(Sent::Frame(frame))
            .map_err(|_| SourceError::Lost("the STOMP connection is closed".into()))
    }
}

/// A connection to a STOMP broker.
pub struct Connection {
    pub sender: Sender,
    reader: FramedRead<OwnedReadHalf, Codec>,
    /// Silence longer than this means the connection is gone.
    silence: Option<Duration>,
    writer: JoinHandle<()>,
    next_receipt: u64,
}

/// Where and as whom to connect, from a `stomp://` URL.
pub struct Address {
    pub host: String,
    pub port: u16,
    pub login: Option<(String, String)>,
}

impl Address {
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let url = url::Url::parse(url).map_err(|e| SourceError::Connect(e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| SourceError::Connect("the URL names no host".into()))?
            .to_string();
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let login =
            (!url.username().is_empty()).then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
        Ok(Self {
            host,
            port: url.port().unwrap_or(61613),
            login,
        })
    }
}

/// Beats every `interval` while nothing else was written.
async fn write(
    mut sink: FramedWrite<OwnedWriteHalf, Codec>,
    mut frames: mpsc::UnboundedReceiver<Sent>,
    interval: Option<Duration>,
) {
    let interval = interval.unwrap_or(Duration::from_secs(3600));
    loop {
        let sent = match tokio::time::timeout(interval, frames.recv()).await {
            Ok(Some(sent)) => sent,
            Ok(None) => return,
            Err(_) => Sent::HeartBeat,
        };
        if sink.feed(sent).await.is_err() {
            return;
        }
        // Whatever else is waiting goes in the same write.
        while let Ok(sent) = frames.try_recv() {
            if sink.feed(sent).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

impl Connection {
    pub async fn open(address: &Address) -> Result<Self, SourceError> {
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| SourceError::Connect("no answer within 10 s".into()))?
        .map_err(|e| SourceError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, write_half) = stream.into_split();
        let mut reader = FramedRead::new(read, Codec);
        let mut sink = FramedWrite::new(write_half, Codec);
        let beat = HEART_BEAT.as_millis();
        let mut connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", address.host.clone())
            .header("heart-beat", format!("{beat},{beat}"));
        if let Some((login, passcode)) = &address.login {
            connect = connect
                .header("login", login.clone())
                .header("passcode", passcode.clone());
        }
        sink.send(Sent::Frame(connect))
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        let connected = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match reader.next().await {
                    Some(Ok(Received::Frame(frame))) if frame.command == "CONNECTED" => return Ok(frame),
                    Some(Ok(Received::Frame(frame))) if frame.command == "ERROR" => {
                        return Err(SourceError::Connect(frame.error_text()))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(SourceError::Connect(e.to_string())),
                    None => return Err(SourceError::Connect("the broker closed the connection".into())),
                }
            }
        })
        .await
        .map_err(|_| SourceError::Connect("no CONNECTED within 15 s".into()))??;
        // heart-beat: <the broker sends every x ms>,<it wants ours every y ms>.
        let (theirs, wanted) = connected
            .get("heart-beat")
            .and_then(|beats| beats.split_once(','))
            .and_then(|(x, y)| Some((x.trim().parse::<u64>().ok()?, y.trim().parse::<u64>().ok()?)))
            .unwrap_or((0, 0));
        let every = |theirs: u64| (theirs > 0).then(|| Duration::from_millis(theirs.max(beat as u64)));
        let (sender, frames) = mpsc::unbounded_channel();
        Ok(Self {
            sender: Sender(sender),
            reader,
            silence: every(theirs).map(|interval| interval * MISSED_BEATS),
            writer: tokio::spawn(write(sink, frames, every(wanted))),
            next_receipt: 0,
        })
    }

    /// The next frame (heart-beats are taken silently); an ERROR frame is
    /// the connection's end. Cancel-safe.
    pub async fn next(&mut self) -> Result<Frame, SourceError> {
        loop {
            let received = match self.silence {
                Some(silence) => tokio::time::timeout(silence, self.reader.next())
                    .await
                    .map_err(|_| SourceError::Lost(format!("the broker was silent for {silence:?}")))?,
                None => self.reader.next().await,
            };
            match received {
                Some(Ok(Received::Frame(frame))) if frame.command == "ERROR" => {
                    return Err(SourceError::Broker(frame.error_text()))
                }
                Some(Ok(Received::Frame(frame))) => return Ok(frame),
                Some(Ok(Received::HeartBeat)) => {}
                Some(Err(e)) => return Err(SourceError::Lost(e.to_string())),
                None => return Err(SourceError::Lost("the broker closed the connection".into())),
            }
        }
    }

    /// Sends a frame and waits for its receipt; MESSAGE frames that come
    /// first are handed to `meanwhile`.
    pub async fn request(&mut self, frame: Frame, mut meanwhile: impl FnMut(Frame)) -> Result<(), SourceError> {
        self.next_receipt += 1;
        let receipt = format!("bida-{}", self.next_receipt);
        self.sender.send(frame.header("receipt", receipt.clone()))?;
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let frame = self.next().await?;
                if frame.command == "RECEIPT" && frame.get("receipt-id") == Some(receipt.as_str()) {
                    return Ok(());
                }
                if frame.command == "MESSAGE" {
                    meanwhile(frame);
                }
            }
        })
        .await
        .map_err(|_| SourceError::Lost("no RECEIPT within 15 s".into()))?
    }

    /// Says goodbye (the broker then takes back what was not acknowledged)
    /// and closes.
    pub async fn close(mut self) {
        let _ = self.request(Frame::new("DISCONNECT"), drop).await;
        self.writer.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        Codec.encode(Sent::Frame(frame), &mut out).unwrap();
        out
    }

    #[test]
    fn frames_go_out_and_come_back_with_their_headers_and_bodies() {
        let frame = Frame::new("MESSAGE")
            .header("message-id", "ID:host-1:2:3")
            .header("odd", "a\\b\nc")
            .body(Bytes::from_static(b"with\0nul"));
        let mut wire = encoded(frame.clone());
        assert!(wire.starts_with(b"MESSAGE\nmessage-id:ID\\chost-1\\c2\\c3\nodd:a\\\\b\\nc\n"));
        wire.extend_from_slice(b"\n\r\n");
        // Byte by byte: nothing comes out until the frame is whole.
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buffer.put_u8(byte);
            while let Some(received) = Codec.decode(&mut buffer).unwrap() {
                decoded.push(received);
            }
        }
        let mut expected = frame;
        expected.headers.push(("content-length".into(), "8".into()));
        assert_eq!(
            decoded,
            [Received::Frame(expected), Received::HeartBeat, Received::HeartBeat]
        );
    }

    #[test]
    fn bodies_without_a_length_end_at_nul_and_connected_is_not_unescaped() {
        let mut buffer = BytesMut::from(&b"CONNECTED\nversion:1.2\nserver:a\\cb\n\nhello\0"[..]);
        let Some(Received::Frame(frame)) = Codec.decode(&mut buffer).unwrap() else {
            panic!("a frame")
        };
        assert_eq!(frame.get("server"), Some("a\\cb"));
        assert_eq!(&frame.body[..], b"hello");
        assert!(buffer.is_empty());
        let mut bad = BytesMut::from(&b"MESSAGE\nx:\\t\n\n\0"[..]);
        assert!(Codec.decode(&mut bad).is_err());
    }

    #[test]
    fn errors_say_what_the_broker_said() {
        let frame = Frame::new("ERROR")
            .header("message", "User name [x] or password is invalid.")
            .body(Bytes::from_static(b"java.lang.SecurityException: no\n\tat ..."));
        assert_eq!(
            frame.error_text(),
            "User name [x] or password is invalid.: java.lang.SecurityException: no"
        );
    }
}
