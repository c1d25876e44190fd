//! One delivery attempt over HTTP: build the request, send it, observe the
//! response. Judging what was observed is the domain's job.

use bida_domain::matcher::STOP_RETRY_HEADER;
use bida_domain::task::TaskSpec;
use bida_domain::Observation;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::error::Error as _;
use std::time::{Duration, Instant};

use crate::DeliveryConfig;

/// What one attempt produced, ready for `TaskCommand::RecordAttempt`.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    pub observation: Observation,
    pub response_excerpt: Option<String>,
}

#[derive(Clone)]
pub struct Delivery {
    client: reqwest::Client,
    config: DeliveryConfig,
}

impl Delivery {
    pub fn new(config: DeliveryConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // An endpoint's redirect is an answer to judge, not an instruction
            // to send the payload somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_max_idle_per_host(config.idle_connections_per_host)
            .user_agent(config.user_agent.clone())
            .build()?;
        Ok(Self { client, config })
    }

    /// Makes attempt number `attempt` of a task.
    pub async fn attempt(&self, spec: &TaskSpec, attempt: u32) -> Attempted {
        let started_at = Utc::now();
        let clock = Instant::now();
        let timeout = Duration::from_millis(spec.policy.timeout_ms);
        let observation = match self.request(spec, attempt, started_at) {
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
        Attempted {
            started_at,
            latency_ms: clock.elapsed().as_millis() as u64,
            observation,
            response_excerpt,
        }
    }

    fn request(&self, spec: &TaskSpec, attempt: u32, now: DateTime<Utc>) -> Result<reqwest::Request, String> {
        let target = &spec.request;
        let method = reqwest::Method::from_bytes(target.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::with_capacity(target.headers.len() + 3);
        for (name, value) in &target.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.insert(name, value);
        }
        let stable = |text: &str| HeaderValue::from_str(text).map_err(|e| e.to_string());
        headers.insert("webhook-id", stable(&spec.message_id)?);
        headers.insert("webhook-timestamp", HeaderValue::from(now.timestamp()));
        headers.insert("bida-attempt", HeaderValue::from(attempt));
        let mut builder = self.client.request(method, &target.url).headers(headers);
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
    fn excerpts_cut_on_character_boundaries() {
        let body = Bytes::from("上海上海");
        assert_eq!(excerpt(&body, 4), "上");
        assert_eq!(excerpt(&body, 100), "上海上海");
        assert_eq!(excerpt(&Bytes::from_static(&[0xff, b'a']), 10), "\u{FFFD}a");
        assert_eq!(excerpt(&Bytes::from_static(b"a\0b"), 10), "a\u{FFFD}b");
    }
}
