//! One delivery attempt over HTTP: build the request, send it, observe the
//! response. Judging what was observed is the domain's job.

use bida_domain::matcher::{judge, Verdict, STOP_RETRY_HEADER};
use bida_domain::task::{AttemptReport, TaskSpec};
use bida_domain::{Observation, StatusSet};
use bida_telemetry::{instruments, AttemptSpan, KeyValue};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::cell::RefCell;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::egress::EgressGuard;
use crate::signing::Signer;
use crate::DeliveryConfig;

/// What one attempt produced, ready for `TaskCommand::RecordAttempt`.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    pub observation: Observation,
    pub response_excerpt: Option<String>,
    /// The request carried a `webhook-signature`.
    pub signed: bool,
    /// What the task's policy makes of the observation (judged once, here).
    pub verdict: Verdict,
}

impl Attempted {
    /// An attempt that could not be made at all (nothing was sent).
    pub fn unsendable(error: String) -> Self {
        let observation = Observation::Unsendable { error };
        Self {
            started_at: Utc::now(),
            latency_ms: 0,
            verdict: judge(
                &Default::default(),
                &StatusSet::default_retry_on(),
                &observation,
                Utc::now(),
            ),
            observation,
            response_excerpt: None,
            signed: false,
        }
    }

    /// The attempt as the task records it.
    pub fn into_report(self, number: u32) -> AttemptReport {
        AttemptReport {
            number,
            started_at: self.started_at,
            latency_ms: self.latency_ms,
            observation: self.observation,
            response_excerpt: self.response_excerpt,
            signed: self.signed,
            jitter_sample: rand::random::<f64>(),
        }
    }
}

#[derive(Clone)]
pub struct Delivery {
    client: reqwest::Client,
    config: DeliveryConfig,
    egress: EgressGuard,
    /// Signs deliveries of tasks whose app has a signing secret.
    signer: Option<Arc<Signer>>,
}

impl Delivery {
    pub fn new(config: DeliveryConfig, signer: Option<Arc<Signer>>) -> Result<Self, reqwest::Error> {
        let egress = EgressGuard::new(config.allow_networks.clone());
        let client = reqwest::Client::builder()
            .dns_resolver(egress.resolver())
            // An endpoint's redirect is an answer to judge, not an instruction
            // to send the payload somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_max_idle_per_host(config.idle_connections_per_host)
            .user_agent(config.user_agent.clone())
            .build()?;
        Ok(Self {
            client,
            config,
            egress,
            signer,
        })
    }

    /// Where deliveries may go.
    pub fn egress(&self) -> &EgressGuard {
        &self.egress
    }

    /// Makes attempt number `attempt` of a task, as a span of the message's
    /// trace, and counts it.
    pub async fn attempt(&self, spec: &TaskSpec, attempt: u32) -> Attempted {
        let started_at = Utc::now();
        let clock = Instant::now();
        let target = Target::of(spec);
        let span = AttemptSpan::start(
            spec.request.headers.get(TRACEPARENT).map(String::as_str),
            target.span_attributes(spec, attempt),
        );
        let timeout = Duration::from_millis(spec.policy.timeout_ms);
        let signature = match (&self.signer, &spec.source_app) {
            (Some(signer), Some(app)) => {
                let body = spec.request.body.as_ref().map_or(&[][..], |b| b.as_bytes());
                signer.sign(app, &spec.message_id, started_at.timestamp(), body).await
            }
            _ => None,
        };
        let signed = signature.is_some();
        let observation = match self.request(spec, &target, attempt, started_at, span.traceparent(), signature) {
            Err(error) => Observation::Unsendable { error },
            Ok(request) => match tokio::time::timeout(timeout, self.exchange(request)).await {
                Ok(observation) => observation,
                Err(_) => Observation::Timeout {
                    after_ms: spec.policy.timeout_ms,
                },
            },
        };
        let response_excerpt = match &observation {
            Observation::Response { body, .. } if !body.is_empty() => Some(excerpt(body, self.config.excerpt_bytes)),
            _ => None,
        };
        let elapsed = clock.elapsed();
        let verdict = judge(&spec.policy.expect, &spec.policy.retry_on, &observation, Utc::now());
        target.record(spec, &observation, &verdict, elapsed, span);
        Attempted {
            started_at,
            latency_ms: elapsed.as_millis() as u64,
            observation,
            response_excerpt,
            signed,
            verdict,
        }
    }

    fn request(
        &self,
        spec: &TaskSpec,
        endpoint: &Target,
        attempt: u32,
        now: DateTime<Utc>,
        traceparent: Option<String>,
        signature: Option<String>,
    ) -> Result<reqwest::Request, String> {
        let target = &spec.request;
        let method = reqwest::Method::from_bytes(target.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::with_capacity(target.headers.len() + 3);
        for (name, value) in &target.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.insert(name, value);
        }
        let stable = |text: &str| HeaderValue::from_str(text).map_err(|e| e.to_string());
        for (name, value) in attempt_headers(&spec.message_id, attempt, now)? {
            headers.insert(name, value);
        }
        if let Some(signature) = signature {
            headers.insert("webhook-signature", stable(&signature)?);
        }
        if let Some(traceparent) = traceparent {
            headers.insert(TRACEPARENT, stable(&traceparent)?);
        }
        let builder = match &endpoint.parsed {
            Some(url) => {
                self.egress.check_url(url).map_err(|blocked| blocked.to_string())?;
                self.client.request(method, url.clone())
            }
            // Unparsable: reqwest reports why.
            None => self.client.request(method, &target.url),
        };
        let mut builder = builder.headers(headers);
        if let Some(body) = &target.body {
            builder = builder.body(body.0.clone());
        }
        builder.build().map_err(describe)
    }

    async fn exchange(&self, request: reqwest::Request) -> Observation {
        let mut response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => return Observation::Failed { error: describe(e) },
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let stop_requested = response.headers().contains_key(STOP_RETRY_HEADER);
        let mut body = BytesMut::new();
        let limit = self.config.max_response_bytes;
        while body.len() < limit {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
                Ok(None) => break,
                Err(e) => {
                    return Observation::Failed {
                        error: format!("reading the response of HTTP {status}: {}", describe(e)),
                    }
                }
            }
        }
        Observation::Response {
            status,
            body: body.freeze(),
            retry_after,
            stop_requested,
        }
    }
}

/// The headers every attempt carries besides the task's own, the signature
/// and the trace context: what the task page shows an attempt sent. Fails
/// only for a message id that is no header value.
pub fn attempt_headers(
    message_id: &str,
    attempt: u32,
    started_at: DateTime<Utc>,
) -> Result<[(&'static str, HeaderValue); 3], String> {
    Ok([
        (
            "webhook-id",
            HeaderValue::from_str(message_id).map_err(|e| format!("webhook-id: {e}"))?,
        ),
        ("webhook-timestamp", HeaderValue::from(started_at.timestamp())),
        ("bida-attempt", HeaderValue::from(attempt)),
    ])
}

/// The W3C trace-context header: taken from the message, sent onwards as the attempt's span.
pub const TRACEPARENT: &str = "traceparent";

/// The endpoint of an attempt: its URL parsed, and as telemetry names it.
struct Target {
    /// The URL as the task has it (what the cache is keyed by).
    url: String,
    parsed: Option<url::Url>,
    host: Arc<str>,
    port: i64,
    /// The URL without credentials or query (tokens often travel there).
    redacted_url: Arc<str>,
}

thread_local! {
    /// The last endpoint seen on this thread: a consumer sends every message
    /// to the same URL, and parsing it (IDNA pass included) for each attempt,
    /// once for telemetry and once for the request, was ~4% of a busy node's CPU.
    static LAST_TARGET: RefCell<Option<Arc<Target>>> = const { RefCell::new(None) };
}

impl Target {
    fn of(spec: &TaskSpec) -> Arc<Self> {
        let url = &spec.request.url;
        LAST_TARGET.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(target) if target.url == *url => target.clone(),
                _ => {
                    let target = Arc::new(Self::parse(url));
                    *last = Some(target.clone());
                    target
                }
            }
        })
    }

    fn parse(text: &str) -> Self {
        let parsed = url::Url::parse(text).ok();
        Self {
            url: text.to_string(),
            host: parsed.as_ref().and_then(url::Url::host_str).unwrap_or_default().into(),
            port: parsed
                .as_ref()
                .and_then(url::Url::port_or_known_default)
                .map_or(0, i64::from),
            redacted_url: parsed
                .clone()
                .map(|mut u| {
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    if u.query().is_some() {
                        u.set_query(Some("REDACTED"));
                    }
                    u.set_fragment(None);
                    u.to_string()
                })
                .unwrap_or_default()
                .into(),
            parsed,
        }
    }

    fn span_attributes(&self, spec: &TaskSpec, attempt: u32) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("bida.message.id", spec.message_id.clone()),
            KeyValue::new("bida.attempt", i64::from(attempt)),
            KeyValue::new("http.request.method", spec.request.method.as_str()),
            KeyValue::new("url.full", self.redacted_url.clone()),
            KeyValue::new("server.address", self.host.clone()),
            KeyValue::new("server.port", self.port),
        ];
        if let Some(origin) = &spec.origin {
            attributes.push(KeyValue::new("bida.consumer", origin.consumer_id.clone()));
        }
        attributes
    }

    /// Counts the attempt and ends its span.
    fn record(
        &self,
        spec: &TaskSpec,
        observation: &Observation,
        verdict: &Verdict,
        elapsed: Duration,
        span: AttemptSpan,
    ) {
        let outcome = match (verdict, observation) {
            (Verdict::Success, _) => "success",
            (_, Observation::Timeout { .. }) => "timeout",
            _ => "failure",
        };
        let mut labels = vec![
            KeyValue::new("server.address", self.host.clone()),
            KeyValue::new("server.port", self.port),
            KeyValue::new("bida.outcome", outcome),
        ];
        let optional = [
            ("bida.consumer", spec.origin.as_ref().map(|o| &o.consumer_id)),
            ("bida.source_app", spec.source_app.as_ref()),
            ("bida.target_app", spec.target_app.as_ref()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                labels.push(KeyValue::new(name, value.clone()));
            }
        }
        let metrics = instruments();
        metrics.delivery_attempts.add(1, &labels);
        let mut http = vec![
            KeyValue::new("http.request.method", spec.request.method.as_str()),
            KeyValue::new("server.address", self.host.clone()),
            KeyValue::new("server.port", self.port),
        ];
        let error = match observation {
            Observation::Response { status, .. } => {
                http.push(KeyValue::new("http.response.status_code", i64::from(*status)));
                (*status >= 400).then(|| status.to_string())
            }
            Observation::Timeout { .. } => Some("timeout".to_string()),
            Observation::Failed { .. } => Some("connection".to_string()),
            Observation::Unsendable { .. } => Some("invalid_request".to_string()),
            Observation::Written { .. } | Observation::Acked { .. } => None,
            Observation::Nacked { .. } => Some("nacked".to_string()),
            Observation::LeaseExpired { .. } => Some("lease_expired".to_string()),
        };
        if let Some(error) = &error {
            http.push(KeyValue::new("error.type", error.clone()));
        }
        metrics.http_duration.record(elapsed.as_secs_f64(), &http);
        let mut finished = vec![KeyValue::new("bida.outcome", outcome)];
        if let Observation::Response { status, .. } = observation {
            finished.push(KeyValue::new("http.response.status_code", i64::from(*status)));
        }
        let reason = match verdict {
            Verdict::Success => None,
            Verdict::Retry { reason, .. } | Verdict::GiveUp { reason } => Some(reason.clone()),
        };
        span.finish(finished, reason);
    }
}

/// The error with its causes ("error sending request: connection refused").
fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of a body as text, cut on a character boundary. NUL becomes
/// U+FFFD, like invalid UTF-8: the excerpt goes into a `jsonb` event.
fn excerpt(body: &Bytes, limit: usize) -> String {
    let cut = &body[..body.len().min(limit)];
    let mut text = String::from_utf8_lossy(cut).replace('\0', "\u{FFFD}");
    if body.len() > limit && text.ends_with('\u{FFFD}') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_once_per_url_and_lose_their_secrets() {
        let spec = |url: &str| {
            let mut spec: TaskSpec = serde_json::from_value(serde_json::json!({
                "message_id": "m",
                "request": {"url": url, "method": "POST"},
                "policy": {"max_attempts": 1, "timeout_ms": 1000, "backoff": {"initial_ms": 1, "max_ms": 1, "multiplier": 1.0},
                           "retry_on": "5xx", "expect": {}}
            }))
            .unwrap();
            spec.request.url = url.to_string();
            spec
        };
        let first = Target::of(&spec("https://user:secret@hooks.example.com/in?token=t#top"));
        assert_eq!(&*first.redacted_url, "https://hooks.example.com/in?REDACTED");
        assert_eq!((&*first.host, first.port), ("hooks.example.com", 443));
        let again = Target::of(&spec("https://user:secret@hooks.example.com/in?token=t#top"));
        assert!(Arc::ptr_eq(&first, &again), "the same URL is not parsed again");
        let other = Target::of(&spec("http://127.0.0.1:9/x"));
        assert_eq!((&*other.host, other.port), ("127.0.0.1", 9));
        assert!(Target::of(&spec("not a url")).parsed.is_none());
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        let body = Bytes::from("上海上海");
        assert_eq!(excerpt(&body, 4), "上");
        assert_eq!(excerpt(&body, 100), "上海上海");
        assert_eq!(excerpt(&Bytes::from_static(&[0xff, b'a']), 10), "\u{FFFD}a");
        assert_eq!(excerpt(&Bytes::from_static(b"a\0b"), 10), "a\u{FFFD}b");
    }
}
