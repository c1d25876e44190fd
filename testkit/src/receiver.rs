use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names; the last value of repeated headers.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `webhook-id` Bida sends (stable per message).
    pub fn message_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answer only after this long (to provoke timeouts).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Decides the reply from the request and how many times (1, 2, ...) this
/// message id has been received, counting this one.
pub type Behavior = Arc<dyn Fn(&Hit, u32) -> Reply + Send + Sync>;

struct Shared {
    behavior: Mutex<Behavior>,
    hits: Mutex<Vec<Hit>>,
    per_message: Mutex<HashMap<String, u32>>,
    arrived: Notify,
    /// Requests being answered now, and the most at once since the last
    /// [`Receiver::reset_most_at_once`].
    answering: AtomicUsize,
    most_at_once: AtomicUsize,
}

/// A real HTTP server on a free local port, running until dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(behavior: impl Fn(&Hit, u32) -> Reply + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            behavior: Mutex::new(Arc::new(behavior)),
            hits: Mutex::new(Vec::new()),
            per_message: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            answering: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, server }
    }

    /// Always answers 200.
    pub async fn ok() -> Self {
        Self::start(|_, _| Reply::ok()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_behavior(&self, behavior: impl Fn(&Hit, u32) -> Reply + Send + Sync + 'static) {
        *self.shared.behavior.lock().unwrap() = Arc::new(behavior);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    pub fn hit_count(&self) -> usize {
        self.shared.hits.lock().unwrap().len()
    }

    /// Distinct `webhook-id`s received.
    pub fn distinct_messages(&self) -> usize {
        self.shared.per_message.lock().unwrap().len()
    }

    /// Waits until `done` holds over the hits so far, or `timeout` passes.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Hit]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            if done(&self.shared.hits.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return done(&self.shared.hits.lock().unwrap());
            }
        }
    }

    /// The most requests this receiver was answering at once since it
    /// started or since [`Receiver::reset_most_at_once`]: what a sender's
    /// concurrency really was, whatever the machine's speed.
    pub fn most_at_once(&self) -> usize {
        self.shared.most_at_once.load(Ordering::SeqCst)
    }

    /// Starts counting [`Receiver::most_at_once`] again from those being answered now.
    pub fn reset_most_at_once(&self) {
        let now = self.shared.answering.load(Ordering::SeqCst);
        self.shared.most_at_once.store(now, Ordering::SeqCst);
    }

    pub async fn wait_for_hits(&self, count: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |hits| hits.len() >= count).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let hit = Hit {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    value.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
    };
    let nth = {
        let mut counts = shared.per_message.lock().unwrap();
        let key = hit.message_id().unwrap_or_default().to_string();
        let count = counts.entry(key).or_insert(0);
        *count += 1;
        *count
    };
    let behavior = shared.behavior.lock().unwrap().clone();
    let reply = behavior(&hit, nth);
    let answering = Answering::start(&shared);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    shared.hits.lock().unwrap().push(hit);
    drop(answering);
    shared.arrived.notify_waiters();
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Counts one request as being answered while it lives (a dropped
/// connection drops it too).
struct Answering<'a>(&'a Shared);

impl<'a> Answering<'a> {
    fn start(shared: &'a Shared) -> Self {
        let now = shared.answering.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_at_once.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::SeqCst);
    }
}
