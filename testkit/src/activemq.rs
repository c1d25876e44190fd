//! ActiveMQ for tests: the machine's broker (STOMP on 127.0.0.1:61613, or
//! `BIDA_TEST_ACTIVEMQ`), a queue of each test's own, and a publisher that
//! writes STOMP by hand (not Bida's client: the two check each other) and
//! waits for the broker's receipt of every message; the broker restarted
//! with its init script for the fault suite.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn url() -> String {
    std::env::var("BIDA_TEST_ACTIVEMQ").unwrap_or_else(|_| "stomp://127.0.0.1:61613".to_string())
}

pub struct TestQueue {
    pub name: String,
}

/// STOMP 1.2 header escaping.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace(':', "\\c")
}

fn frame(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{command}\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{}:{}\n", escape(name), escape(value)).as_bytes());
    }
    out.extend_from_slice(format!("content-length:{}\n\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// Reads frames until `count` have the command `command` (heart-beats and
/// other frames skipped); panics on an ERROR frame.
async fn read_until(stream: &mut (impl AsyncReadExt + Unpin), buffer: &mut Vec<u8>, command: &str, count: usize) {
    let mut seen = 0;
    while seen < count {
        while let Some(end) = buffer.iter().position(|b| *b == 0) {
            let text = String::from_utf8_lossy(&buffer[..end]).to_string();
            buffer.drain(..=end);
            let text = text.trim_start_matches(['\n', '\r']);
            assert!(!text.starts_with("ERROR"), "ActiveMQ refused: {text}");
            if text.starts_with(command) {
                seen += 1;
            }
        }
        if seen >= count {
            break;
        }
        let mut chunk = [0u8; 65536];
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{seen} of {count} {command} frames from ActiveMQ"))
            .expect("read from ActiveMQ");
        assert!(read > 0, "ActiveMQ closed the connection ({seen} of {count} {command})");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

impl TestQueue {
    pub fn create() -> Self {
        Self {
            name: format!("bida-test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Sends each message (persistent, its key in `bida-key`) to the queue.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        publish(&format!("/queue/{}", self.name), messages).await
    }
}

/// A message as a STOMP subscriber received it: its headers (unescaped)
/// and its body (as long as its `content-length` says).
#[derive(Clone, Debug)]
pub struct ReadMessage {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReadMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// One whole frame from `buffer` (heart-beats skipped), if it holds one.
fn parse_frame(buffer: &mut Vec<u8>) -> Option<(String, ReadMessage)> {
    while buffer.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buffer.remove(0);
    }
    let head_end = buffer.windows(2).position(|w| w == b"\n\n")? + 2;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.lines().map(|line| line.trim_end_matches('\r'));
    let command = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (unescape(name), unescape(value)))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<usize>().expect("a content-length"));
    let body_end = match length {
        Some(length) => (buffer.len() > head_end + length).then_some(head_end + length)?,
        None => head_end + buffer[head_end..].iter().position(|b| *b == 0)?,
    };
    let body = buffer[head_end..body_end].to_vec();
    buffer.drain(..=body_end);
    Some((command, ReadMessage { headers, body }))
}

impl TestQueue {
    /// Takes `count` messages off the queue (acknowledged as they come),
    /// on a connection of its own; panics if they do not come in 30 s.
    pub async fn take(&self, count: usize) -> Vec<ReadMessage> {
        let address = url();
        let host_port = address.trim_start_matches("stomp://").trim_end_matches('/');
        let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
        let mut stream = TcpStream::connect(host_port).await.expect("connect to ActiveMQ");
        stream
            .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
            .await
            .expect("CONNECT");
        let subscribe = frame(
            "SUBSCRIBE",
            &[
                ("destination", &format!("/queue/{}", self.name)),
                ("id", "0"),
                ("ack", "auto"),
            ],
            &[],
        );
        stream.write_all(&subscribe).await.expect("SUBSCRIBE");
        let mut buffer = Vec::new();
        let mut taken = Vec::new();
        while taken.len() < count {
            while let Some((command, message)) = parse_frame(&mut buffer) {
                assert_ne!(command, "ERROR", "ActiveMQ refused: {message:?}");
                if command == "MESSAGE" {
                    taken.push(message);
                }
            }
            if taken.len() >= count {
                break;
            }
            let mut chunk = [0u8; 65536];
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{} of {count} messages from {}", taken.len(), self.name))
                .expect("read from ActiveMQ");
            assert!(read > 0, "ActiveMQ closed the connection");
            buffer.extend_from_slice(&chunk[..read]);
        }
        let _ = stream.write_all(b"DISCONNECT\n\n\0").await;
        taken
    }
}

/// Sends each message to `destination` (`/queue/...` or `/topic/...`) and
/// waits for a receipt of each, on a connection of its own.
pub async fn publish(destination: &str, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
    let mut publisher = Publisher::connect().await;
    publisher.send(destination, messages).await;
    publisher.disconnect().await;
}

/// A connection that publishes again and again (a paced producer would
/// otherwise pay a connection per batch).
pub struct Publisher {
    stream: TcpStream,
    buffer: Vec<u8>,
    sent: usize,
}

impl Publisher {
    pub async fn connect() -> Self {
        let address = url();
        let host_port = address.trim_start_matches("stomp://").trim_end_matches('/');
        let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
        let mut stream = TcpStream::connect(host_port)
            .await
            .unwrap_or_else(|e| panic!("connect to ActiveMQ at {host_port} ({e}; set BIDA_TEST_ACTIVEMQ)"));
        let mut buffer = Vec::new();
        stream
            .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
            .await
            .expect("CONNECT");
        read_until(&mut stream, &mut buffer, "CONNECTED", 1).await;
        Self {
            stream,
            buffer,
            sent: 0,
        }
    }

    /// Sends each message (persistent, its key in `bida-key`) and waits for
    /// the broker's receipt of each.
    pub async fn send(&mut self, destination: &str, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        let mut frames = Vec::new();
        let mut count = 0;
        for (key, body) in messages {
            let receipt = format!("m{}", self.sent + count);
            let mut headers = vec![
                ("destination", destination),
                ("persistent", "true"),
                ("receipt", &receipt),
            ];
            if let Some(key) = &key {
                headers.push(("bida-key", key));
            }
            frames.extend_from_slice(&frame("SEND", &headers, &body));
            count += 1;
        }
        self.sent += count;
        // Written while the receipts are read: a broker whose answers are
        // not read stops reading too.
        let (mut reading, mut writing) = self.stream.split();
        let write = async {
            writing.write_all(&frames).await.expect("SEND");
            writing.flush().await.expect("SEND");
        };
        tokio::join!(write, read_until(&mut reading, &mut self.buffer, "RECEIPT", count));
    }

    pub async fn disconnect(mut self) {
        let _ = self.stream.write_all(b"DISCONNECT\n\n\0").await;
    }
}

/// The packaged broker's init script (`.ci/run` starts ActiveMQ with it).
const INIT_SCRIPT: &str = "/etc/init.d/activemq";

/// Runs the init script with `action`.
async fn init_script(action: &'static str) {
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(INIT_SCRIPT)
            .arg(action)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await
    .expect("init script");
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{INIT_SCRIPT} {action}: {status:?}"
    );
}

/// Whether the broker answers a STOMP `CONNECT`.
async fn answers() -> bool {
    let address = url();
    let host_port = address.trim_start_matches("stomp://").trim_end_matches('/');
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port).to_string();
    tokio::time::timeout(Duration::from_secs(5), async move {
        let mut stream = TcpStream::connect(&host_port).await.ok()?;
        stream
            .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !answer.contains(&0) {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..read]);
        }
        let _ = stream.write_all(b"DISCONNECT\n\n\0").await;
        Some(String::from_utf8_lossy(&answer).trim_start().starts_with("CONNECTED"))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Stops the machine's ActiveMQ with its init script (SIGTERM, and SIGKILL
/// if it still runs 2 s later: the script's way), leaves it down for
/// `down`, starts it again with the script, and returns once STOMP answers.
/// Persistent messages are in KahaDB's journal. For the fault suite, which
/// runs alone.
pub async fn restart_broker(down: Duration) {
    init_script("stop").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answers().await {
        assert!(
            std::time::Instant::now() < deadline,
            "ActiveMQ still answers after `{INIT_SCRIPT} stop`"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(down).await;
    init_script("start").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !answers().await {
        assert!(
            std::time::Instant::now() < deadline,
            "ActiveMQ did not answer STOMP within 3 minutes of `{INIT_SCRIPT} start`"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
