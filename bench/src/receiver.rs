//! A lean receiver: counts distinct `webhook-id`s and records the latency from
//! the `sent_at_us` stamped in each payload.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Tally {
    ids: HashSet<String>,
    latency: Histogram<u64>,
    /// Per second of sending: the slowest delivery of a message sent then, in µs.
    slowest: BTreeMap<u64, u64>,
    requests: usize,
}

pub struct BenchReceiver {
    url: String,
    epoch: Instant,
    tally: Arc<Mutex<Tally>>,
}

impl BenchReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let epoch = Instant::now();
        let tally = Arc::new(Mutex::new(Tally {
            ids: HashSet::new(),
            latency: Histogram::new(3)?,
            slowest: BTreeMap::new(),
            requests: 0,
        }));
        let app = axum::Router::new().fallback(receive).with_state((tally.clone(), epoch));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/receive", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, epoch, tally })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The clock payload timestamps are measured on.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn delivered(&self) -> usize {
        self.tally.lock().unwrap().ids.len()
    }

    pub fn requests(&self) -> usize {
        self.tally.lock().unwrap().requests
    }

    /// Forgets the latencies measured so far (ids stay counted).
    pub fn reset_latency(&self) {
        let mut tally = self.tally.lock().unwrap();
        tally.latency.reset();
        tally.slowest.clear();
    }

    /// The slowest delivery of each second's messages (µs), in sending order:
    /// a few slow seconds mean stalls, many mean a steady queue.
    pub fn slowest_per_second(&self) -> Vec<u64> {
        self.tally.lock().unwrap().slowest.values().copied().collect()
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.tally.lock().unwrap().latency.clone()
    }

    /// Waits until `count` distinct messages arrived (or `timeout`); returns how many did.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.delivered() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.delivered()
    }
}

async fn receive(
    State((tally, epoch)): State<(Arc<Mutex<Tally>>, Instant)>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let now = epoch.elapsed().as_micros() as u64;
    let sent = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("sent_at_us").and_then(|s| s.as_u64()));
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut tally = tally.lock().unwrap();
    tally.requests += 1;
    if tally.ids.insert(id.to_string()) {
        if let Some(sent) = sent {
            let took = now.saturating_sub(sent);
            let _ = tally.latency.record(took);
            let slowest = tally.slowest.entry(sent / 1_000_000).or_default();
            *slowest = (*slowest).max(took);
        }
    }
    "ok"
}
