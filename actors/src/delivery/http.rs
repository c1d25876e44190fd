//! Attempts over HTTP: the request from the task, the response observed.

use bida_domain::matcher::STOP_RETRY_HEADER;
use bida_domain::task::TaskSpec;
use bida_domain::Observation;
use bida_telemetry::{instruments, KeyValue};
use bytes::BytesMut;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::time::Duration;

use super::{describe, Address, Stamp, Transport};
use crate::egress::EgressGuard;
use crate::DeliveryConfig;

#[derive(Clone)]
pub(super) struct HttpTransport {
    client: reqwest::Client,
    egress: EgressGuard,
    max_response_bytes: usize,
}

impl HttpTransport {
    pub(super) fn new(config: &DeliveryConfig, egress: EgressGuard) -> Result<Self, reqwest::Error> {
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
            egress,
            max_response_bytes: config.max_response_bytes,
        })
    }

    fn request(&self, spec: &TaskSpec, address: &Address, stamp: &Stamp<'_>) -> Result<reqwest::Request, String> {
        let target = &spec.request;
        let method = reqwest::Method::from_bytes(target.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::with_capacity(target.headers.len() + 5);
        for (name, value) in &target.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.insert(name, value);
        }
        for (name, value) in stamp.headers()? {
            headers.insert(name, value);
        }
        let builder = match &address.parsed {
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
        let limit = self.max_response_bytes;
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

impl Transport for HttpTransport {
    fn span_attributes(&self, spec: &TaskSpec, address: &Address, attributes: &mut Vec<KeyValue>) {
        attributes.push(KeyValue::new("http.request.method", spec.request.method.as_str()));
        attributes.push(KeyValue::new("url.full", address.redacted_url.clone()));
    }

    async fn send(&self, spec: &TaskSpec, address: &Address, stamp: &Stamp<'_>) -> Observation {
        match self.request(spec, address, stamp) {
            Err(error) => Observation::Unsendable { error },
            Ok(request) => self.exchange(request).await,
        }
    }

    fn record(&self, spec: &TaskSpec, address: &Address, observation: &Observation, elapsed: Duration) {
        let mut http = vec![
            KeyValue::new("http.request.method", spec.request.method.as_str()),
            KeyValue::new("server.address", address.host.clone()),
            KeyValue::new("server.port", address.port),
        ];
        let error = match observation {
            Observation::Response { status, .. } => {
                http.push(KeyValue::new("http.response.status_code", i64::from(*status)));
                (*status >= 400).then(|| status.to_string())
            }
            Observation::Timeout { .. } => Some("timeout".to_string()),
            Observation::Failed { .. } => Some("connection".to_string()),
            Observation::Unsendable { .. } => Some("invalid_request".to_string()),
            _ => None,
        };
        if let Some(error) = error {
            http.push(KeyValue::new("error.type", error));
        }
        instruments().http_duration.record(elapsed.as_secs_f64(), &http);
    }

    fn finished_attributes(&self, observation: &Observation, attributes: &mut Vec<KeyValue>) {
        if let Observation::Response { status, .. } = observation {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(*status)));
        }
    }
}
