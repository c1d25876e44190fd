//! One delivery attempt: make the call (over HTTP or gRPC), observe the
//! answer. Judging what was observed is the domain's job.

use bida_domain::matcher::{judge, Verdict};
use bida_domain::task::{AttemptReport, TaskSpec};
use bida_domain::{Observation, StatusSet};
use bida_telemetry::{instruments, AttemptSpan, KeyValue};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderValue;
use std::cell::RefCell;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::egress::EgressGuard;
use crate::signing::Signer;
use crate::DeliveryConfig;

mod descriptors;
mod grpc;
mod http;

pub use descriptors::{DescriptorSetView, Descriptors, MAX_SET_BYTES};
pub use grpc::MethodTypes;

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

/// One way of making an attempt — HTTP or gRPC, each in its own module —
/// behind what every attempt shares: the span, the signature, the timeout,
/// the verdict and the attempt counter.
trait Transport {
    /// What the attempt's span says of the call (beside the message id,
    /// the attempt and the server).
    fn span_attributes(&self, spec: &TaskSpec, address: &Address, attributes: &mut Vec<KeyValue>);
    /// Makes the call and observes its answer; the caller cuts it at the
    /// task's timeout.
    fn send(
        &self,
        spec: &TaskSpec,
        address: &Address,
        stamp: &Stamp<'_>,
    ) -> impl std::future::Future<Output = Observation> + Send;
    /// Records the call's duration in the protocol's own histogram.
    fn record(&self, spec: &TaskSpec, address: &Address, observation: &Observation, elapsed: Duration);
    /// What the finished span says of the answer.
    fn finished_attributes(&self, observation: &Observation, attributes: &mut Vec<KeyValue>);
}

/// What marks one attempt beside the task's own headers: sent as HTTP
/// headers or as gRPC metadata.
pub(crate) struct Stamp<'a> {
    message_id: &'a str,
    attempt: u32,
    started_at: DateTime<Utc>,
    traceparent: Option<String>,
    signature: Option<String>,
}

impl Stamp<'_> {
    /// Every header the attempt adds; fails only for a message id that is no header value.
    fn headers(&self) -> Result<Vec<(&'static str, HeaderValue)>, String> {
        let stable = |text: &str| HeaderValue::from_str(text).map_err(|e| e.to_string());
        let mut headers = Vec::with_capacity(5);
        headers.extend(attempt_headers(self.message_id, self.attempt, self.started_at)?);
        if let Some(signature) = &self.signature {
            headers.push(("webhook-signature", stable(signature)?));
        }
        if let Some(traceparent) = &self.traceparent {
            headers.push((TRACEPARENT, stable(traceparent)?));
        }
        Ok(headers)
    }
}

#[derive(Clone)]
pub struct Delivery {
    http: http::HttpTransport,
    grpc: grpc::GrpcTransport,
    config: DeliveryConfig,
    egress: EgressGuard,
    /// Signs deliveries of tasks whose app has a signing secret.
    signer: Option<Arc<Signer>>,
}

impl Delivery {
    pub fn new(
        config: DeliveryConfig,
        signer: Option<Arc<Signer>>,
        descriptors: Descriptors,
    ) -> Result<Self, reqwest::Error> {
        let egress = EgressGuard::new(config.allow_networks.clone());
        Ok(Self {
            http: http::HttpTransport::new(&config, egress.clone())?,
            grpc: grpc::GrpcTransport::new(&config, egress.clone(), descriptors),
            config,
            egress,
            signer,
        })
    }

    /// Where deliveries may go.
    pub fn egress(&self) -> &EgressGuard {
        &self.egress
    }

    /// What this node knows of gRPC messages (uploads go here).
    pub fn descriptors(&self) -> &Descriptors {
        self.grpc.descriptors()
    }

    /// Makes attempt number `attempt` of a task, as a span of the message's
    /// trace, and counts it.
    pub async fn attempt(&self, spec: &TaskSpec, attempt: u32) -> Attempted {
        match &spec.request.grpc {
            Some(_) => self.attempt_with(&self.grpc, spec, attempt).await,
            None => self.attempt_with(&self.http, spec, attempt).await,
        }
    }

    async fn attempt_with(&self, transport: &impl Transport, spec: &TaskSpec, attempt: u32) -> Attempted {
        let started_at = Utc::now();
        let clock = Instant::now();
        let address = Address::of(spec);
        let attributes = || {
            let mut attributes = vec![
                KeyValue::new("bida.message.id", spec.message_id.clone()),
                KeyValue::new("bida.attempt", i64::from(attempt)),
                KeyValue::new("server.address", address.host.clone()),
                KeyValue::new("server.port", address.port),
            ];
            if let Some(origin) = &spec.origin {
                attributes.push(KeyValue::new("bida.consumer", origin.consumer_id.clone()));
            }
            transport.span_attributes(spec, &address, &mut attributes);
            attributes
        };
        let span = AttemptSpan::start(spec.request.headers.get(TRACEPARENT).map(String::as_str), attributes);
        let timeout = Duration::from_millis(spec.policy.timeout_ms);
        let signature = match (&self.signer, &spec.source_app) {
            (Some(signer), Some(app)) => {
                let body = spec.request.body.as_ref().map_or(&[][..], |b| b.as_bytes());
                signer.sign(app, &spec.message_id, started_at.timestamp(), body).await
            }
            _ => None,
        };
        let signed = signature.is_some();
        let stamp = Stamp {
            message_id: &spec.message_id,
            attempt,
            started_at,
            traceparent: span.traceparent(),
            signature,
        };
        let observation = match tokio::time::timeout(timeout, transport.send(spec, &address, &stamp)).await {
            Ok(observation) => observation,
            Err(_) => Observation::Timeout {
                after_ms: spec.policy.timeout_ms,
            },
        };
        let response_excerpt = match &observation {
            Observation::Response { body, .. } if !body.is_empty() => Some(excerpt(body, self.config.excerpt_bytes)),
            Observation::Rpc(outcome) if !outcome.body.is_empty() => {
                Some(excerpt(&outcome.body, self.config.excerpt_bytes))
            }
            _ => None,
        };
        let elapsed = clock.elapsed();
        let verdict = judge(&spec.policy.expect, &spec.policy.retry_on, &observation, Utc::now());
        transport.record(spec, &address, &observation, elapsed);
        let outcome = match (&verdict, &observation) {
            (Verdict::Success, _) => "success",
            (_, Observation::Timeout { .. }) => "timeout",
            _ => "failure",
        };
        address.count(spec, outcome);
        let finished = || {
            let mut finished = vec![KeyValue::new("bida.outcome", outcome)];
            transport.finished_attributes(&observation, &mut finished);
            finished
        };
        let reason = match &verdict {
            Verdict::Success => None,
            Verdict::Retry { reason, .. } | Verdict::GiveUp { reason } => Some(reason.clone()),
        };
        span.finish(finished, reason);
        Attempted {
            started_at,
            latency_ms: elapsed.as_millis() as u64,
            observation,
            response_excerpt,
            signed,
            verdict,
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

/// The server of an attempt (an HTTP endpoint or a gRPC server): its URL
/// parsed, and as telemetry names it.
struct Address {
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
    static LAST_ADDRESS: RefCell<Option<Arc<Address>>> = const { RefCell::new(None) };
}

impl Address {
    fn of(spec: &TaskSpec) -> Arc<Self> {
        let url = &spec.request.url;
        LAST_ADDRESS.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(address) if address.url == *url => address.clone(),
                _ => {
                    let address = Arc::new(Self::parse(url));
                    *last = Some(address.clone());
                    address
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

    /// Counts the attempt under the server and the task's consumer and apps.
    fn count(&self, spec: &TaskSpec, outcome: &'static str) {
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
        instruments().delivery_attempts.add(1, &labels);
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
        let first = Address::of(&spec("https://user:secret@hooks.example.com/in?token=t#top"));
        assert_eq!(&*first.redacted_url, "https://hooks.example.com/in?REDACTED");
        assert_eq!((&*first.host, first.port), ("hooks.example.com", 443));
        let again = Address::of(&spec("https://user:secret@hooks.example.com/in?token=t#top"));
        assert!(Arc::ptr_eq(&first, &again), "the same URL is not parsed again");
        let other = Address::of(&spec("http://127.0.0.1:9/x"));
        assert_eq!((&*other.host, other.port), ("127.0.0.1", 9));
        assert!(Address::of(&spec("not a url")).parsed.is_none());
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
