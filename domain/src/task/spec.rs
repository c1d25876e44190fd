use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::{Backoff, Body, Expect, StatusSet};

/// Everything needed to deliver a task, fixed when it is submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Stable across attempts and redeliveries: sent as `webhook-id` so the
    /// endpoint can de-duplicate.
    pub message_id: String,
    pub request: DeliveryRequest,
    pub policy: DeliveryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::timestamp::option")]
    pub deliver_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The consumer and source message the task came from (none for API tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A write to a broker instead of an HTTP request (a delayed message);
    /// `request` then holds its locator and body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce: Option<super::ProduceSpec>,
}

impl TaskSpec {
    /// The pull lane a pulled message's task waits in; none for a task
    /// that is pushed or written.
    pub fn pull_lane(&self) -> Option<crate::consumer::pull::PullLane> {
        crate::consumer::pull::PullLane::parse_locator(&self.request.url)
    }
}

/// Where a consumer's task came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Origin {
    pub consumer_id: String,
    /// `topic/partition@offset`, or the queue.
    pub position: String,
    /// The message key, for ordering by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The consumer's version whose endpoint and policy the task was made
    /// with: a later version's terms reach it before its next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_version: Option<i64>,
}

/// Where and how a request goes, without its body: what a consumer's
/// endpoint decides for the tasks it makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryTarget {
    pub url: String,
    pub method: Method,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<crate::grpc::GrpcCall>,
}

impl DeliveryRequest {
    pub fn target(&self) -> DeliveryTarget {
        DeliveryTarget {
            url: self.url.clone(),
            method: self.method,
            headers: self.headers.clone(),
            grpc: self.grpc.clone(),
        }
    }

    /// The same body sent to `target`.
    pub fn retargeted(&self, target: &DeliveryTarget) -> Self {
        Self {
            url: target.url.clone(),
            method: target.method,
            headers: target.headers.clone(),
            body: self.body.clone(),
            grpc: target.grpc.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryRequest {
    /// Absolute http(s) URL, query string included.
    pub url: String,
    pub method: Method,
    /// Header names are lower-case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, example = json!({"text": "{\"city\":\"上海\"}"})))]
    pub body: Option<Body>,
    /// A gRPC call to `url` (the server) instead of an HTTP request; the
    /// body is then the request message as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<crate::grpc::GrpcCall>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryPolicy {
    /// Attempts per round: a manual retry starts a new round.
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff: Backoff,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::StatusSet, example = json!(["5xx", "408", "429"])))]
    pub retry_on: StatusSet,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub const ALL: [Method; 5] = [Self::Get, Self::Post, Self::Put, Self::Patch, Self::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host a task's requests go to, as the task list files and filters it:
/// lowercase, IDNA-encoded, IPv6 in brackets (`url`'s host form).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointHost(String);

impl EndpointHost {
    /// The host of a delivery URL; none when the URL does not parse or has none.
    pub fn of_url(url: &str) -> Option<Self> {
        url::Url::parse(url).ok()?.host_str().map(|host| Self(host.to_string()))
    }

    /// A host as a user types it in a filter (`Example.COM`, `[::1]`, `::1`,
    /// `orders:8443`, or a whole URL), in the form [`EndpointHost::of_url`]
    /// gives. Text that is no host is kept as typed (trimmed, lowercase): it
    /// names no task's host, so such a filter finds nothing rather than failing.
    pub fn typed(text: &str) -> Self {
        let text = text.trim();
        let parsed = if text.contains("://") {
            Self::of_url(text)
        } else if text.is_empty() || text.contains(['/', '?', '#', '@']) {
            None
        } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
            // A bare IPv6 address reads as a host with a port otherwise.
            Self::of_url(&format!("http://[{text}]/"))
        } else {
            Self::of_url(&format!("http://{text}/"))
        };
        parsed.unwrap_or_else(|| Self(text.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod endpoint_host_tests {
    use super::EndpointHost;

    #[test]
    fn a_typed_host_and_a_urls_host_meet_in_one_form() {
        let of_url = |url: &str| EndpointHost::of_url(url).map(|h| h.to_string());
        let typed = |text: &str| EndpointHost::typed(text).to_string();
        assert_eq!(
            of_url("https://user:pw@Orders.Example.COM:8443/hook?x=1").as_deref(),
            Some("orders.example.com")
        );
        assert_eq!(typed(" Orders.Example.COM "), "orders.example.com");
        assert_eq!(typed("orders.example.com:8443"), "orders.example.com");
        assert_eq!(typed("HTTPS://Orders.example.com/hook"), "orders.example.com");
        assert_eq!(of_url("http://[::1]:9000/").as_deref(), Some("[::1]"));
        assert_eq!(typed("::1"), "[::1]");
        assert_eq!(typed("[::1]"), "[::1]");
        assert_eq!(of_url("http://127.0.0.1:8/").as_deref(), Some("127.0.0.1"));
        assert_eq!(typed("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(of_url("not a url"), None);
        // No host: kept as typed, so it names no task's host.
        assert_eq!(typed("a/b"), "a/b");
        assert_eq!(typed("User@Host"), "user@host");
        assert_eq!(typed(""), "");
    }
}
