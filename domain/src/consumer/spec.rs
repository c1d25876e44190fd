use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::pull::{PullEndpoint, PullLane, PullMode};
use crate::broker::BrokerKind;
pub use crate::kinds::kafka::{KafkaSource, StartAt};
pub use crate::kinds::rabbitmq::RabbitmqSource;
pub use crate::kinds::{Position, Source, SourceInput};
use crate::task::{BackoffInput, DeliveryPolicy, DeliveryRequest, DeliveryTarget, Method, Origin, TaskSpec};
use crate::{Backoff, Body, Expect, StatusSet, ValidationErrors};

/// Where a consumer delivers: pushed to an HTTP endpoint, or kept for
/// members to pull ([`super::pull`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", from = "EndpointRepr")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Endpoint {
    Http(HttpEndpoint),
    Pull(PullEndpoint),
}

/// How endpoints are read back: consumers recorded before pull endpoints
/// existed have no `kind` and push over HTTP.
#[derive(Deserialize)]
#[serde(untagged)]
enum EndpointRepr {
    Pull {
        #[allow(dead_code)]
        kind: PullTag,
        #[serde(flatten)]
        pull: PullEndpoint,
    },
    Http(HttpEndpoint),
}

#[derive(Deserialize)]
enum PullTag {
    #[serde(rename = "pull")]
    Pull,
}

impl From<EndpointRepr> for Endpoint {
    fn from(repr: EndpointRepr) -> Self {
        match repr {
            EndpointRepr::Pull { pull, .. } => Self::Pull(pull),
            EndpointRepr::Http(http) => Self::Http(http),
        }
    }
}

impl Endpoint {
    pub fn http(&self) -> Option<&HttpEndpoint> {
        match self {
            Self::Http(http) => Some(http),
            Self::Pull(_) => None,
        }
    }

    pub fn pull(&self) -> Option<&PullEndpoint> {
        match self {
            Self::Pull(pull) => Some(pull),
            Self::Http(_) => None,
        }
    }

    /// The longest one delivery may take: the HTTP timeout; for a pull
    /// endpoint, recording the message (the member's lease is not waited for).
    pub fn delivery_timeout_ms(&self) -> u64 {
        match self {
            Self::Http(http) => http.timeout_ms,
            Self::Pull(_) => 10_000,
        }
    }

    /// One line for lists and pages: `POST https://...`, or how members pull.
    pub fn describe(&self) -> String {
        match self {
            Self::Http(http) => format!("{} {}", http.method.as_str(), http.url),
            Self::Pull(pull) => format!(
                "pull ({}, lease {} ms, batch {})",
                match pull.mode {
                    PullMode::Cluster => "cluster",
                    PullMode::Broadcast => "broadcast",
                },
                pull.lease_ms,
                pull.batch
            ),
        }
    }

    pub fn kind(&self) -> EndpointKind {
        match self {
            Self::Http(_) => EndpointKind::Http,
            Self::Pull(_) => EndpointKind::Pull,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EndpointKind {
    Http,
    Pull,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Pull => "pull",
        }
    }
}

/// An HTTP endpoint messages are pushed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpEndpoint {
    pub url: String,
    pub method: Method,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// A gRPC method on `url` (the server), called with each message's JSON
    /// body as its request message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<crate::grpc::GrpcCall>,
}

/// An endpoint as a client gives it: `kind` `http` (the default) with
/// `url`, `method`, `headers`, `timeout_ms`; or `pull` with `mode`,
/// `lease_ms`, `batch`, `member_timeout_ms`, `max_waiting`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointInput {
    /// `http` (default) or `pull`; fixed once the consumer exists.
    pub kind: Option<EndpointKind>,
    pub url: Option<String>,
    /// A gRPC method to call instead of `url` (`{"target", "method"}`).
    pub grpc: Option<crate::grpc::GrpcInput>,
    /// POST (default), PUT or PATCH: the message body is sent as produced.
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<u64>,
    /// Pull: `cluster` (default) or `broadcast`.
    pub mode: Option<PullMode>,
    /// Pull: how long a member holds a message before it is given again (default 30000).
    pub lease_ms: Option<u64>,
    /// Pull: most messages one pull returns (default 100).
    pub batch: Option<u32>,
    /// Pull: silence after which a member is gone (default 30000).
    pub member_timeout_ms: Option<u64>,
    /// Pull: most messages waiting in a lane before the consumer takes no
    /// more from the broker (default 1000).
    pub max_waiting: Option<u32>,
}

impl EndpointInput {
    /// The endpoint after applying this input over `current` (or the defaults).
    pub fn over(self, current: Option<&Endpoint>, default_timeout_ms: u64, errors: &mut ValidationErrors) -> Endpoint {
        let kind = match (self.kind, current.map(Endpoint::kind)) {
            (Some(asked), Some(now)) if asked != now => {
                errors.add(
                    "endpoint.kind",
                    format!("a {} consumer stays one; create another consumer", now.as_str()),
                );
                now
            }
            (Some(asked), _) => asked,
            (None, now) => now.unwrap_or(EndpointKind::Http),
        };
        match kind {
            EndpointKind::Http => {
                Endpoint::Http(self.http_over(current.and_then(Endpoint::http), default_timeout_ms, errors))
            }
            EndpointKind::Pull => Endpoint::Pull(self.pull_over(current.and_then(Endpoint::pull), errors)),
        }
    }

    fn pull_over(self, current: Option<&PullEndpoint>, errors: &mut ValidationErrors) -> PullEndpoint {
        let unused = [
            ("url", self.url.is_some()),
            ("grpc", self.grpc.is_some()),
            ("method", self.method.is_some()),
            ("headers", self.headers.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
        ];
        for (field, given) in unused {
            if given {
                errors.add(format!("endpoint.{field}"), "is not used by a pull endpoint");
            }
        }
        let current = current.copied().unwrap_or(PullEndpoint::DEFAULT);
        let pull = PullEndpoint {
            mode: self.mode.unwrap_or(current.mode),
            lease_ms: self.lease_ms.unwrap_or(current.lease_ms),
            batch: self.batch.unwrap_or(current.batch),
            member_timeout_ms: self.member_timeout_ms.unwrap_or(current.member_timeout_ms),
            max_waiting: self.max_waiting.unwrap_or(current.max_waiting),
        };
        pull.validate(errors);
        pull
    }

    fn http_over(
        self,
        current: Option<&HttpEndpoint>,
        default_timeout_ms: u64,
        errors: &mut ValidationErrors,
    ) -> HttpEndpoint {
        let unused = [
            ("mode", self.mode.is_some()),
            ("lease_ms", self.lease_ms.is_some()),
            ("batch", self.batch.is_some()),
            ("member_timeout_ms", self.member_timeout_ms.is_some()),
            ("max_waiting", self.max_waiting.is_some()),
        ];
        for (field, given) in unused {
            if given {
                errors.add(
                    format!("endpoint.{field}"),
                    "is only for a pull endpoint (\"kind\": \"pull\")",
                );
            }
        }
        if self.grpc.is_some() && (self.url.is_some() || self.method.is_some()) {
            errors.add("endpoint.grpc", "give url (and method) or grpc, not both");
        }
        let (url_field, url, grpc) = match (self.grpc, self.url, current) {
            (Some(input), _, _) => {
                let call = input.call("endpoint.grpc", errors);
                ("endpoint.grpc.target", input.target, call)
            }
            (None, Some(url), _) => ("endpoint.url", url, None),
            (None, None, Some(current)) => ("endpoint.url", current.url.clone(), current.grpc.clone()),
            (None, None, None) => {
                errors.add("endpoint.url", "is required: where to deliver (or give grpc)");
                ("endpoint.url", String::new(), None)
            }
        };
        if !url.is_empty() {
            match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => errors.add(url_field, format!("`{url}` is not an absolute http(s) URL")),
            }
        }
        let method = match self.method {
            Some(text) => match Method::parse(&text) {
                Some(m @ (Method::Post | Method::Put | Method::Patch)) => m,
                _ => {
                    errors.add(
                        "endpoint.method",
                        format!("`{text}` cannot carry the message; use POST, PUT or PATCH"),
                    );
                    Method::Post
                }
            },
            None => current.map_or(Method::Post, |c| c.method),
        };
        let headers = match self.headers {
            Some(headers) => {
                let mut checked = BTreeMap::new();
                for (name, value) in headers {
                    let lower = name.to_ascii_lowercase();
                    if http::HeaderName::from_bytes(lower.as_bytes()).is_err()
                        || http::HeaderValue::from_str(&value).is_err()
                    {
                        errors.add(format!("endpoint.headers.{name}"), "is not a valid header");
                    } else if crate::task::RESERVED_HEADERS.contains(&lower.as_str()) {
                        errors.add(format!("endpoint.headers.{name}"), "is set by Bida itself");
                    } else {
                        checked.insert(lower, value);
                    }
                }
                checked
            }
            None => current.map(|c| c.headers.clone()).unwrap_or_default(),
        };
        let timeout_ms = self
            .timeout_ms
            .unwrap_or_else(|| current.map_or(default_timeout_ms, |c| c.timeout_ms));
        if timeout_ms == 0 || timeout_ms > 300_000 {
            errors.add("endpoint.timeout_ms", "must be between 1 and 300000");
        }
        HttpEndpoint {
            url,
            method,
            headers,
            timeout_ms,
            grpc,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Ordering {
    /// Messages are delivered concurrently; a failing one is retried on its own.
    #[default]
    None,
    /// Messages with the same key are delivered in order; a failing one holds
    /// back only its key, and after its attempts the key's lane is parked.
    Key,
}

/// When the endpoint keeps failing, stop fetching and probe instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerPolicy {
    /// Consecutive failed deliveries that open the breaker; 0 turns it off.
    pub failures: u32,
    /// How long the breaker stays open before a probe.
    pub open_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            open_ms: 5_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerInput {
    pub failures: Option<u32>,
    pub open_ms: Option<u64>,
}

/// How a consumer delivers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerPolicy {
    /// Requests at the endpoint at once, for the whole cluster (nodes share
    /// it; each reads up to this many messages ahead).
    pub concurrency: u32,
    /// Requests per second to the endpoint, retries included, for the whole
    /// cluster; 0 means unlimited.
    pub rate_per_sec: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::StatusSet))]
    pub retry_on: StatusSet,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default)]
    pub breaker: BreakerPolicy,
}

/// Policy values a consumer gets when it does not choose its own.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDefaults {
    pub policy: ConsumerPolicy,
    pub timeout_ms: u64,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            policy: ConsumerPolicy {
                concurrency: 16,
                rate_per_sec: 0,
                max_attempts: 10,
                backoff: Backoff::default(),
                retry_on: StatusSet::default_retry_on(),
                expect: Expect::default(),
                ordering: Ordering::None,
                breaker: BreakerPolicy::default(),
            },
            timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyInput {
    pub concurrency: Option<u32>,
    /// 0 removes the limit.
    pub rate_per_sec: Option<u32>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<BackoffInput>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::StatusSet>))]
    pub retry_on: Option<StatusSet>,
    pub expect: Option<Expect>,
    pub ordering: Option<Ordering>,
    pub breaker: Option<BreakerInput>,
}

/// Most deliveries in flight one consumer may ask for on one node.
pub const MAX_CONCURRENCY: u32 = 1_024;

impl PolicyInput {
    pub fn over(self, current: &ConsumerPolicy, errors: &mut ValidationErrors) -> ConsumerPolicy {
        let policy = ConsumerPolicy {
            concurrency: self.concurrency.unwrap_or(current.concurrency),
            rate_per_sec: self.rate_per_sec.unwrap_or(current.rate_per_sec),
            max_attempts: self.max_attempts.unwrap_or(current.max_attempts),
            backoff: self.backoff.unwrap_or_default().over(current.backoff),
            retry_on: self.retry_on.unwrap_or_else(|| current.retry_on.clone()),
            expect: match self.expect {
                Some(expect) => expect.validate(errors),
                None => current.expect.clone(),
            },
            ordering: self.ordering.unwrap_or(current.ordering),
            breaker: BreakerPolicy {
                failures: self
                    .breaker
                    .and_then(|b| b.failures)
                    .unwrap_or(current.breaker.failures),
                open_ms: self.breaker.and_then(|b| b.open_ms).unwrap_or(current.breaker.open_ms),
            },
        };
        if policy.concurrency == 0 || policy.concurrency > MAX_CONCURRENCY {
            errors.add("policy.concurrency", format!("must be between 1 and {MAX_CONCURRENCY}"));
        }
        if policy.max_attempts == 0 || policy.max_attempts > 100 {
            errors.add("policy.max_attempts", "must be between 1 and 100");
        }
        policy.backoff.validate("policy.backoff", errors);
        if policy.breaker.open_ms == 0 || policy.breaker.open_ms > 3_600_000 {
            errors.add("policy.breaker.open_ms", "must be between 1 and 3600000");
        }
        policy
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerSpec {
    pub name: String,
    pub broker_id: String,
    pub source: Source,
    pub endpoint: Endpoint,
    pub policy: ConsumerPolicy,
    /// The app its messages belong to: their tasks' `source_app`, signed
    /// with the app's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// A consumer as a client creates it (`POST /v1/consumers`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerInput {
    pub name: String,
    pub broker_id: String,
    pub source: SourceInput,
    pub endpoint: EndpointInput,
    #[serde(default)]
    pub policy: PolicyInput,
    /// The app its messages belong to (`/v1/apps`): deliveries are signed
    /// with its secret and counted as its traffic.
    #[serde(default)]
    pub app_id: Option<String>,
}

impl ConsumerInput {
    /// Validates against the broker's kind; every default is fixed into the spec.
    pub fn into_spec(self, kind: BrokerKind, defaults: &PolicyDefaults) -> Result<ConsumerSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim().to_string();
        if !crate::validation::is_printable_name(&self.name, 128) {
            errors.add("name", "must be 1 to 128 printable characters");
        }
        let source = self.source.validate(kind, &mut errors);
        let endpoint = self.endpoint.over(None, defaults.timeout_ms, &mut errors);
        let policy = self.policy.over(&defaults.policy, &mut errors);
        check_pairing(&endpoint, &policy, &mut errors);
        errors.finish(())?;
        Ok(ConsumerSpec {
            name,
            broker_id: self.broker_id,
            source: source.ok_or_else(|| ValidationErrors::single("source", "is required"))?,
            endpoint,
            policy,
            app_id: self.app_id,
        })
    }
}

/// Settings that do not go together: members pull in no key order.
pub fn check_pairing(endpoint: &Endpoint, policy: &ConsumerPolicy, errors: &mut ValidationErrors) {
    if endpoint.pull().is_some() && policy.ordering == Ordering::Key {
        errors.add(
            "policy.ordering",
            "`key` is not available for a pull endpoint: members pull and ack in their own order",
        );
    }
}

/// A live change (`PATCH /v1/consumers/{id}`): any of endpoint and policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerPatch {
    pub endpoint: Option<EndpointInput>,
    pub policy: Option<PolicyInput>,
}

/// One message read from a source, as the consumer hands it to delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceMessage {
    /// Stable and unique per source message (Kafka: topic, partition and offset).
    pub message_id: String,
    /// Where it was read.
    pub position: Position,
    pub key: Option<String>,
    pub body: Bytes,
    pub content_type: Option<String>,
    /// The W3C `traceparent` the message carried: its delivery joins that trace.
    pub traceparent: Option<String>,
}

impl ConsumerSpec {
    /// The callback task delivering one message, with the policy of the moment
    /// (the consumer's `version`): to the HTTP endpoint, or (a pull consumer)
    /// held in the lane `pull` for a member to pull.
    pub fn task_for(&self, consumer: (&str, i64), message: &SourceMessage, pull: Option<&PullLane>) -> Arc<TaskSpec> {
        let (consumer_id, version) = consumer;
        let (url, method, mut headers, timeout_ms, grpc) = match (&self.endpoint, pull) {
            (Endpoint::Http(http), _) => (
                http.url.clone(),
                http.method,
                http.headers.clone(),
                http.timeout_ms,
                http.grpc.clone(),
            ),
            (Endpoint::Pull(settings), lane) => (
                lane.cloned()
                    .unwrap_or_else(|| PullLane::cluster(consumer_id))
                    .locator(),
                Method::Post,
                BTreeMap::new(),
                settings.lease_ms,
                None,
            ),
        };
        if let Some(content_type) = &message.content_type {
            headers
                .entry("content-type".into())
                .or_insert_with(|| content_type.clone());
        }
        if let Some(traceparent) = &message.traceparent {
            headers.insert("traceparent".into(), traceparent.clone());
        }
        Arc::new(TaskSpec {
            message_id: message.message_id.clone(),
            request: DeliveryRequest {
                url,
                method,
                headers,
                body: Some(Body(message.body.clone())),
                grpc,
            },
            policy: self.delivery_policy(timeout_ms),
            source_app: self.app_id.clone(),
            target_app: None,
            deliver_at: None,
            idempotency_key: None,
            origin: Some(Origin {
                consumer_id: consumer_id.to_string(),
                position: message.position.to_string(),
                key: message.key.clone(),
                terms_version: Some(version),
            }),
            produce: None,
        })
    }

    fn delivery_policy(&self, timeout_ms: u64) -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: self.policy.max_attempts,
            timeout_ms,
            backoff: self.policy.backoff,
            retry_on: self.policy.retry_on.clone(),
            expect: self.policy.expect.clone(),
        }
    }

    /// The policy and target this consumer gives its pushed tasks now, for a
    /// task that sent `sent` so far: the endpoint's headers, with the
    /// message's own `content-type` and `traceparent` kept. `None` for a pull
    /// endpoint, whose tasks wait for members instead.
    pub fn terms_for(&self, sent: &DeliveryRequest) -> Option<(DeliveryPolicy, DeliveryTarget)> {
        let http = self.endpoint.http()?;
        // As `task_for` makes them: the endpoint's content type wins, the
        // message's trace context always goes.
        let mut headers = http.headers.clone();
        if let Some(content_type) = sent.headers.get("content-type") {
            headers
                .entry("content-type".into())
                .or_insert_with(|| content_type.clone());
        }
        if let Some(traceparent) = sent.headers.get("traceparent") {
            headers.insert("traceparent".into(), traceparent.clone());
        }
        let target = DeliveryTarget {
            url: http.url.clone(),
            method: http.method,
            headers,
            grpc: http.grpc.clone(),
        };
        Some((self.delivery_policy(http.timeout_ms), target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: ValidationErrors) -> Vec<String> {
        errors.0.into_iter().map(|e| e.field).collect()
    }

    fn input(value: serde_json::Value) -> ConsumerInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_api_shapes_validate_against_the_broker_kind() {
        let rabbit = input(json!({
            "name": "orders", "broker_id": "b1", "source": {"queue": "q"},
            "endpoint": {"url": "http://h/cb", "timeout_ms": 3000},
            "policy": {"concurrency": 8, "rate_per_sec": 100, "ordering": "key"}
        }))
        .into_spec(BrokerKind::Rabbitmq, &PolicyDefaults::default())
        .unwrap();
        assert_eq!(rabbit.policy.concurrency, 8);
        assert_eq!(rabbit.policy.ordering, Ordering::Key);
        assert_eq!(rabbit.policy.max_attempts, 10, "defaults fixed in");
        assert!(matches!(rabbit.source, Source::Rabbitmq(ref s) if s.queue == "q" && !s.declare));
        let kafka = input(json!({
            "name": "k", "broker_id": "b2", "source": {"topics": ["t"], "group": "g"},
            "endpoint": {"url": "http://h/cb"}
        }))
        .into_spec(BrokerKind::Kafka, &PolicyDefaults::default())
        .unwrap();
        assert!(matches!(kafka.source, Source::Kafka(ref s) if s.group == "g" && s.start == StartAt::Earliest));
        assert_eq!(kafka.endpoint.http().unwrap().timeout_ms, 10_000);
    }

    #[test]
    fn mismatches_and_bad_values_name_their_fields() {
        let errors = input(json!({
            "name": "", "broker_id": "b", "source": {"queue": "q"},
            "endpoint": {"url": "ftp://h", "method": "GET"},
            "policy": {"concurrency": 0, "max_attempts": 0}
        }))
        .into_spec(BrokerKind::Kafka, &PolicyDefaults::default())
        .unwrap_err();
        assert_eq!(
            fields(errors),
            [
                "name",
                "source.queue",
                "source.topics",
                "source.group",
                "endpoint.url",
                "endpoint.method",
                "policy.concurrency",
                "policy.max_attempts"
            ]
        );
    }

    #[test]
    fn a_pull_endpoint_takes_its_own_fields_and_keeps_its_kind() {
        let spec = input(json!({
            "name": "p", "broker_id": "b", "source": {"queue": "q"},
            "endpoint": {"kind": "pull", "mode": "broadcast", "lease_ms": 5000}
        }))
        .into_spec(BrokerKind::Rabbitmq, &PolicyDefaults::default())
        .unwrap();
        let pull = *spec.endpoint.pull().unwrap();
        assert_eq!((pull.mode, pull.lease_ms, pull.batch), (PullMode::Broadcast, 5000, 100));
        let stored = serde_json::to_value(&spec.endpoint).unwrap();
        assert_eq!(stored["kind"], "pull");
        assert_eq!(serde_json::from_value::<Endpoint>(stored).unwrap(), spec.endpoint);
        // Recorded before endpoints had a kind: an HTTP one.
        let legacy: Endpoint =
            serde_json::from_value(json!({"url": "http://h/cb", "method": "POST", "timeout_ms": 5})).unwrap();
        assert_eq!(legacy.http().unwrap().url, "http://h/cb");
        assert_eq!(serde_json::to_value(&legacy).unwrap()["kind"], "http");

        let mut errors = ValidationErrors::default();
        let http_patch: EndpointInput = serde_json::from_value(json!({"kind": "http", "url": "http://h"})).unwrap();
        http_patch.over(Some(&spec.endpoint), 1000, &mut errors);
        let mixed: EndpointInput = serde_json::from_value(json!({"url": "http://h", "batch": 5})).unwrap();
        mixed.over(Some(&spec.endpoint), 1000, &mut errors);
        // The first names its kind and its URL (a pull endpoint has none), the second its URL.
        assert_eq!(fields(errors), ["endpoint.kind", "endpoint.url", "endpoint.url"]);

        let keyed = input(json!({
            "name": "p", "broker_id": "b", "source": {"queue": "q"},
            "endpoint": {"kind": "pull"}, "policy": {"ordering": "key"}
        }))
        .into_spec(BrokerKind::Rabbitmq, &PolicyDefaults::default())
        .unwrap_err();
        assert_eq!(fields(keyed), ["policy.ordering"]);
    }

    #[test]
    fn patches_change_only_what_they_name() {
        let defaults = PolicyDefaults::default();
        let mut errors = ValidationErrors::default();
        let changed = PolicyInput {
            concurrency: Some(64),
            breaker: Some(BreakerInput {
                failures: Some(0),
                open_ms: None,
            }),
            ..PolicyInput::default()
        }
        .over(&defaults.policy, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(changed.concurrency, 64);
        assert_eq!(changed.breaker.failures, 0);
        assert_eq!(changed.breaker.open_ms, defaults.policy.breaker.open_ms);
        assert_eq!(changed.backoff, defaults.policy.backoff);
    }

    #[test]
    fn a_message_becomes_a_task_with_its_bytes_unchanged() {
        let spec = input(json!({
            "name": "k", "broker_id": "b", "source": {"topics": ["t"], "group": "g"},
            "endpoint": {"url": "http://h/cb", "headers": {"X-Team": "pay"}}
        }))
        .into_spec(BrokerKind::Kafka, &PolicyDefaults::default())
        .unwrap();
        let message = SourceMessage {
            message_id: "kafka:t:0:42".into(),
            position: Position::partition("t", 0).at(crate::kinds::Offset::Number(42)),
            key: Some("order-1".into()),
            body: Bytes::from_static(&[0, 1, 2, 255]),
            content_type: Some("application/octet-stream".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let task = spec.task_for(("c1", 3), &message, None);
        assert_eq!(
            task.request.headers.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(task.message_id, "kafka:t:0:42");
        assert_eq!(task.request.body.as_ref().unwrap().as_bytes(), [0, 1, 2, 255]);
        assert_eq!(task.request.headers["x-team"], "pay");
        assert_eq!(task.request.headers["content-type"], "application/octet-stream");
        assert_eq!(task.origin.as_ref().unwrap().consumer_id, "c1");
        assert_eq!(task.origin.as_ref().unwrap().position, "t/0@42");
    }
}
