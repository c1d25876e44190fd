//! Turning what a client submits into a validated [`TaskSpec`].
//!
//! Every problem is reported at once, each naming its field, so a client can
//! fix a request in one go.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{DeliveryPolicy, DeliveryRequest, Method, TaskSpec};
use crate::{Backoff, Body, Expect, StatusSet, ValidationErrors};

/// Headers Bida sets itself on every delivery; a task may not override them.
pub const RESERVED_HEADERS: [&str; 9] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "bida-attempt",
    "traceparent",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// A callback task as a client submits it (`POST /v1/tasks`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submission {
    /// Where to deliver: an absolute http(s) URL (or give `grpc` instead).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "https://orders.example.com/callbacks/paid"))]
    pub url: String,
    /// A gRPC method to call instead of an HTTP URL; `params` is then its
    /// request message as JSON.
    #[serde(default)]
    pub grpc: Option<crate::grpc::GrpcInput>,
    /// GET, POST, PUT, PATCH or DELETE; POST when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Parameters: the query string for GET (an object), the JSON body otherwise.
    #[serde(default)]
    pub params: Option<Value>,
    /// A raw text body, sent as is (instead of `params`).
    #[serde(default)]
    pub body: Option<String>,
    /// A raw binary body, base64-encoded (instead of `params` or `body`).
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attempts before the task is dead-lettered (per round); at most
    /// `tasks.max_attempts_limit` (100 by default).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_attempts: Option<u32>,
    /// Per-attempt timeout in milliseconds; at most `tasks.timeout_ms_limit`
    /// (300,000 by default).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 300000))]
    pub timeout_ms: Option<u64>,
    /// Retry schedule; missing fields take the configured defaults.
    #[serde(default)]
    pub backoff: Option<BackoffInput>,
    /// Status codes that are retried; others (outside `expect.status`) dead-letter at once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::StatusSet>, example = json!(["5xx", "408", "429"])))]
    pub retry_on: Option<StatusSet>,
    /// What counts as success; any 2xx when absent.
    #[serde(default)]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub source_app: Option<String>,
    #[serde(default)]
    pub target_app: Option<String>,
    /// Deliver no earlier than this instant (RFC 3339).
    #[serde(default)]
    pub deliver_at: Option<DateTime<Utc>>,
    /// Deliver no earlier than this many milliseconds from now (instead of `deliver_at`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackoffInput {
    pub initial_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
}

impl BackoffInput {
    pub fn over(self, defaults: Backoff) -> Backoff {
        Backoff {
            initial_ms: self.initial_ms.unwrap_or(defaults.initial_ms),
            max_ms: self.max_ms.unwrap_or(defaults.max_ms),
            multiplier: self.multiplier.unwrap_or(defaults.multiplier),
            jitter: self.jitter.unwrap_or(defaults.jitter),
        }
    }
}

/// Policy values a task gets when it does not choose its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDefaults {
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff: Backoff,
    pub retry_on: StatusSet,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            timeout_ms: 10_000,
            backoff: Backoff::default(),
            retry_on: StatusSet::default_retry_on(),
        }
    }
}

/// Upper bounds that keep one task from hurting the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub delay: Duration,
    pub headers: usize,
    pub url_len: usize,
    pub app_name_len: usize,
    pub idempotency_key_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attempts: 100,
            timeout_ms: 300_000,
            delay: Duration::from_secs(366 * 24 * 3600),
            headers: 64,
            url_len: 4096,
            app_name_len: 128,
            idempotency_key_len: 255,
        }
    }
}

impl Submission {
    /// Validates the submission and fixes every default, so the recorded spec
    /// does not change meaning if the node's defaults change later.
    pub fn into_spec(
        self,
        message_id: String,
        idempotency_key: Option<String>,
        defaults: &TaskDefaults,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<TaskSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let (url_field, raw_url, grpc) = match &self.grpc {
            None => ("url", self.url.as_str(), None),
            Some(grpc) => {
                if !self.url.is_empty() || self.method.is_some() {
                    errors.add("grpc", "give url (and method) or grpc, not both");
                }
                if self.body.is_some() || self.body_base64.is_some() {
                    errors.add("grpc", "a gRPC request message is given as params (JSON)");
                }
                ("grpc.target", grpc.target.as_str(), grpc.call("grpc", &mut errors))
            }
        };
        let method = match self.method.as_deref() {
            None => Method::Post,
            Some(text) => Method::parse(text).unwrap_or_else(|| {
                errors.add(
                    "method",
                    format!("`{text}` is not supported; use GET, POST, PUT, PATCH or DELETE"),
                );
                Method::Post
            }),
        };
        let mut url = check_url(url_field, raw_url, limits, &mut errors);
        let mut headers = check_headers(self.headers, limits, &mut errors);
        let body = build_body(
            method,
            self.params,
            self.body,
            self.body_base64,
            url.as_mut(),
            &mut headers,
            &mut errors,
        );

        let max_attempts = self.max_attempts.unwrap_or(defaults.max_attempts);
        if max_attempts == 0 || max_attempts > limits.max_attempts {
            errors.add("max_attempts", format!("must be between 1 and {}", limits.max_attempts));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(defaults.timeout_ms);
        if timeout_ms == 0 || timeout_ms > limits.timeout_ms {
            errors.add("timeout_ms", format!("must be between 1 and {} ms", limits.timeout_ms));
        }
        let backoff = self.backoff.unwrap_or_default().over(defaults.backoff);
        backoff.validate("backoff", &mut errors);
        let expect = self.expect.unwrap_or_default().validate(&mut errors);

        let source_app = check_app_name("source_app", self.source_app, limits, &mut errors);
        let target_app = check_app_name("target_app", self.target_app, limits, &mut errors);
        let deliver_at = check_deliver_at(self.deliver_at, self.delay_ms, limits, now, "", &mut errors);
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > limits.idempotency_key_len {
                errors.add(
                    "Idempotency-Key",
                    format!("must be 1 to {} characters", limits.idempotency_key_len),
                );
            }
        }

        errors.finish(())?;
        Ok(TaskSpec {
            message_id,
            request: DeliveryRequest {
                url: url.map(String::from).unwrap_or_default(),
                method,
                headers,
                body,
                grpc,
            },
            policy: DeliveryPolicy {
                max_attempts,
                timeout_ms,
                backoff,
                retry_on: self.retry_on.unwrap_or_else(|| defaults.retry_on.clone()),
                expect,
            },
            source_app,
            target_app,
            deliver_at,
            idempotency_key,
            origin: None,
            produce: None,
        })
    }
}

fn check_url(field: &str, raw: &str, limits: &Limits, errors: &mut ValidationErrors) -> Option<url::Url> {
    if raw.is_empty() {
        errors.add(field, "is required: where to deliver (or give grpc)");
        return None;
    }
    if raw.len() > limits.url_len {
        errors.add(field, format!("is longer than {} characters", limits.url_len));
        return None;
    }
    match url::Url::parse(raw) {
        Err(e) => {
            errors.add(
                field,
                format!("`{raw}` is not an absolute URL ({e}); write it like https://host/path"),
            );
            None
        }
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            errors.add(
                field,
                format!("scheme `{}` is not supported; use http or https", url.scheme()),
            );
            None
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => {
            errors.add(field, "has no host");
            None
        }
        Ok(url) => Some(url),
    }
}

fn check_headers(
    headers: BTreeMap<String, String>,
    limits: &Limits,
    errors: &mut ValidationErrors,
) -> BTreeMap<String, String> {
    if headers.len() > limits.headers {
        errors.add("headers", format!("at most {} headers are allowed", limits.headers));
    }
    let mut checked = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let field = format!("headers.{name}");
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            errors.add(field, "is not a valid header name");
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.add(field, "is set by Bida itself and cannot be overridden");
        } else if http::HeaderValue::from_str(&value).is_err() {
            errors.add(
                field,
                "value has characters a header cannot carry (control characters or non-ASCII)",
            );
        } else {
            checked.insert(lower, value);
        }
    }
    checked
}

fn build_body(
    method: Method,
    params: Option<Value>,
    text: Option<String>,
    base64: Option<String>,
    url: Option<&mut url::Url>,
    headers: &mut BTreeMap<String, String>,
    errors: &mut ValidationErrors,
) -> Option<Body> {
    let given = [params.is_some(), text.is_some(), base64.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.add("params", "give only one of params, body and body_base64");
        return None;
    }
    if method == Method::Get && (text.is_some() || base64.is_some()) {
        errors.add(
            "body",
            "a GET request carries no body; send params (they become the query string) or use POST",
        );
        return None;
    }
    if let Some(params) = params {
        if method == Method::Get {
            match params {
                Value::Object(map) => {
                    if let Some(url) = url {
                        append_query(url, &map);
                    }
                }
                Value::Null => {}
                _ => errors.add(
                    "params",
                    "for GET, params must be an object (it becomes the query string)",
                ),
            }
            return None;
        }
        headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
        return Some(Body::from(params.to_string().into_bytes()));
    }
    if let Some(text) = text {
        return Some(Body::from(text.into_bytes()));
    }
    let encoded = base64?;
    match BASE64.decode(encoded.as_bytes()) {
        Ok(bytes) => Some(Body::from(bytes)),
        Err(e) => {
            errors.add("body_base64", format!("is not valid base64 ({e})"));
            None
        }
    }
}

fn append_query(url: &mut url::Url, params: &serde_json::Map<String, Value>) {
    let mut pairs = url.query_pairs_mut();
    for (key, value) in params {
        match value {
            Value::Null => {}
            Value::String(text) => {
                pairs.append_pair(key, text);
            }
            Value::Array(items) => {
                for item in items {
                    pairs.append_pair(key, &scalar_text(item));
                }
            }
            other => {
                pairs.append_pair(key, &scalar_text(other));
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn check_app_name(field: &str, name: Option<String>, limits: &Limits, errors: &mut ValidationErrors) -> Option<String> {
    let name = name?;
    if !crate::validation::is_printable_name(&name, limits.app_name_len) {
        errors.add(
            field,
            format!("must be 1 to {} printable characters", limits.app_name_len),
        );
        return None;
    }
    Some(name.trim().to_string())
}

/// When something asked for at `deliver_at`, or `delay_ms` from `now`, is
/// due; none when neither is given. Mistakes are named under `context`
/// (`messages[2].` in a batch).
pub fn check_deliver_at(
    deliver_at: Option<DateTime<Utc>>,
    delay_ms: Option<u64>,
    limits: &Limits,
    now: DateTime<Utc>,
    context: &str,
    errors: &mut ValidationErrors,
) -> Option<DateTime<Utc>> {
    let latest = ChronoDuration::from_std(limits.delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let when = match (deliver_at, delay_ms) {
        (Some(_), Some(_)) => {
            errors.add(format!("{context}delay_ms"), "give deliver_at or delay_ms, not both");
            return None;
        }
        (Some(at), None) => at,
        (None, Some(ms)) => i64::try_from(ms)
            .ok()
            .and_then(ChronoDuration::try_milliseconds)
            .and_then(|delay| now.checked_add_signed(delay))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        (None, None) => return None,
    };
    if when > latest {
        let field = if deliver_at.is_some() { "deliver_at" } else { "delay_ms" };
        errors.add(
            format!("{context}{field}"),
            format!("is more than {} days ahead", limits.delay.as_secs() / 86_400),
        );
        return None;
    }
    Some(when)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(submission: Submission) -> Result<TaskSpec, ValidationErrors> {
        submission.into_spec(
            "msg-1".into(),
            None,
            &TaskDefaults::default(),
            &Limits::default(),
            Utc::now(),
        )
    }

    fn fields(errors: ValidationErrors) -> Vec<String> {
        errors.0.into_iter().map(|e| e.field).collect()
    }

    fn submission(url: &str) -> Submission {
        Submission {
            url: url.into(),
            ..Submission::default()
        }
    }

    #[test]
    fn defaults_are_fixed_into_the_spec() {
        let spec = spec(submission("http://example.com/hook")).unwrap();
        assert_eq!(spec.request.method, Method::Post);
        assert_eq!(spec.policy.max_attempts, 10);
        assert_eq!(spec.policy.backoff, Backoff::default());
        assert_eq!(spec.policy.retry_on, StatusSet::default_retry_on());
        assert!(spec.request.body.is_none());
    }

    #[test]
    fn get_params_become_the_query_string() {
        let spec = spec(Submission {
            method: Some("get".into()),
            params: Some(json!({"city": "上海", "n": 3, "tags": ["a", "b"], "skip": null})),
            ..submission("http://example.com/weather?v=1")
        })
        .unwrap();
        assert_eq!(spec.request.method, Method::Get);
        assert_eq!(
            spec.request.url,
            "http://example.com/weather?v=1&city=%E4%B8%8A%E6%B5%B7&n=3&tags=a&tags=b"
        );
        assert!(spec.request.body.is_none());
    }

    #[test]
    fn post_params_become_a_json_body() {
        let spec = spec(Submission {
            params: Some(json!({"order": 42})),
            ..submission("https://example.com/hook")
        })
        .unwrap();
        assert_eq!(spec.request.body.unwrap().as_bytes(), br#"{"order":42}"#);
        assert_eq!(spec.request.headers["content-type"], "application/json");
    }

    #[test]
    fn raw_bodies_are_kept_byte_for_byte() {
        let spec = spec(Submission {
            body_base64: Some(BASE64.encode([0u8, 159, 146, 150])),
            headers: BTreeMap::from([("Content-Type".into(), "application/octet-stream".into())]),
            ..submission("https://example.com/hook")
        })
        .unwrap();
        assert_eq!(spec.request.body.unwrap().as_bytes(), [0u8, 159, 146, 150]);
        assert_eq!(spec.request.headers["content-type"], "application/octet-stream");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let errors = spec(Submission {
            url: "ftp://example.com".into(),
            method: Some("BREW".into()),
            max_attempts: Some(0),
            timeout_ms: Some(0),
            backoff: Some(BackoffInput {
                multiplier: Some(0.1),
                ..BackoffInput::default()
            }),
            headers: BTreeMap::from([("webhook-id".into(), "x".into()), ("bad header".into(), "x".into())]),
            source_app: Some("   ".into()),
            ..Submission::default()
        })
        .unwrap_err();
        assert_eq!(
            fields(errors),
            [
                "method",
                "url",
                "headers.bad header",
                "headers.webhook-id",
                "max_attempts",
                "timeout_ms",
                "backoff.multiplier",
                "source_app"
            ]
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        for bad in ["not a url", "/relative", "mailto:a@b.c", "file:///etc/passwd"] {
            let errors = spec(submission(bad)).unwrap_err();
            assert_eq!(fields(errors), ["url"], "{bad}");
        }
    }

    #[test]
    fn body_choices_are_exclusive_and_get_has_none() {
        let both = spec(Submission {
            params: Some(json!({})),
            body: Some("x".into()),
            ..submission("http://h/")
        });
        assert_eq!(fields(both.unwrap_err()), ["params"]);
        let get_body = spec(Submission {
            method: Some("GET".into()),
            body: Some("x".into()),
            ..submission("http://h/")
        });
        assert_eq!(fields(get_body.unwrap_err()), ["body"]);
        let get_array = spec(Submission {
            method: Some("GET".into()),
            params: Some(json!([1])),
            ..submission("http://h/")
        });
        assert_eq!(fields(get_array.unwrap_err()), ["params"]);
    }

    #[test]
    fn delays() {
        let now = Utc::now();
        let delayed = Submission {
            delay_ms: Some(60_000),
            ..submission("http://h/")
        }
        .into_spec("m".into(), None, &TaskDefaults::default(), &Limits::default(), now)
        .unwrap();
        assert_eq!(delayed.deliver_at, Some(now + ChronoDuration::seconds(60)));
        let too_far = spec(Submission {
            deliver_at: Some(now + ChronoDuration::days(400)),
            ..submission("http://h/")
        });
        assert_eq!(fields(too_far.unwrap_err()), ["deliver_at"]);
        let huge = spec(Submission {
            delay_ms: Some(u64::MAX),
            ..submission("http://h/")
        });
        assert_eq!(fields(huge.unwrap_err()), ["delay_ms"]);
        let both = spec(Submission {
            deliver_at: Some(now),
            delay_ms: Some(1),
            ..submission("http://h/")
        });
        assert_eq!(fields(both.unwrap_err()), ["delay_ms"]);
    }
}

/// Changes to a dead or cancelled task's request before it is delivered
/// again (a wrong URL, a bad payload); absent fields stay as they were.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestEdit {
    pub url: Option<String>,
    /// Replaces every extra header.
    pub headers: Option<BTreeMap<String, String>>,
    /// A raw text body.
    pub body: Option<String>,
    /// A raw binary body, base64-encoded.
    pub body_base64: Option<String>,
}

impl RequestEdit {
    /// The request with these changes, checked as a submission is.
    pub fn over(
        self,
        current: &DeliveryRequest,
        defaults: &TaskDefaults,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<DeliveryRequest, ValidationErrors> {
        let keeps_body = self.body.is_none() && self.body_base64.is_none();
        if let Some(call) = &current.grpc {
            return self.over_grpc(call, current, defaults, limits, now);
        }
        let submission = Submission {
            url: self.url.unwrap_or_else(|| current.url.clone()),
            method: Some(current.method.as_str().to_string()),
            headers: self.headers.unwrap_or_else(|| current.headers.clone()),
            body: self.body,
            body_base64: match (keeps_body, &current.body) {
                (true, Some(body)) => Some(BASE64.encode(body.as_bytes())),
                _ => self.body_base64,
            },
            ..Submission::default()
        };
        submission
            .into_spec(String::new(), None, defaults, limits, now)
            .map(|spec| spec.request)
    }

    /// A gRPC request edited: `url` is its server, the body its message as JSON.
    fn over_grpc(
        self,
        call: &crate::grpc::GrpcCall,
        current: &DeliveryRequest,
        defaults: &TaskDefaults,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<DeliveryRequest, ValidationErrors> {
        if self.body_base64.is_some() {
            return Err(ValidationErrors::single(
                "body_base64",
                "a gRPC request message is JSON: give it as body",
            ));
        }
        let text = match self.body {
            Some(text) => Some(text),
            None => current
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned()),
        };
        let params = match text.as_deref().map(serde_json::from_str::<Value>) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => return Err(ValidationErrors::single("body", format!("is not JSON ({e})"))),
        };
        let mut headers = self.headers.unwrap_or_else(|| current.headers.clone());
        headers.remove("content-type");
        Submission {
            grpc: Some(crate::grpc::GrpcInput {
                target: self.url.unwrap_or_else(|| current.url.clone()),
                method: call.method.to_string(),
            }),
            headers,
            params,
            ..Submission::default()
        }
        .into_spec(String::new(), None, defaults, limits, now)
        .map(|spec| spec.request)
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    fn request() -> DeliveryRequest {
        Submission {
            url: "https://old.example.com/cb".into(),
            body: Some("{\"a\":1}".into()),
            headers: BTreeMap::from([("x-tenant".into(), "7".into())]),
            ..Submission::default()
        }
        .into_spec(
            "m".into(),
            None,
            &TaskDefaults::default(),
            &Limits::default(),
            Utc::now(),
        )
        .unwrap()
        .request
    }

    #[test]
    fn a_grpc_request_is_edited_as_one() {
        let (defaults, limits) = (TaskDefaults::default(), Limits::default());
        let current = Submission {
            grpc: Some(crate::grpc::GrpcInput {
                target: "http://orders:50051".into(),
                method: "orders.v1.Callbacks/Paid".into(),
            }),
            params: Some(serde_json::json!({"order_id": "A-1"})),
            ..Submission::default()
        }
        .into_spec("m".into(), None, &defaults, &limits, Utc::now())
        .unwrap()
        .request;
        let moved = RequestEdit {
            url: Some("http://orders-2:50051".into()),
            ..RequestEdit::default()
        }
        .over(&current, &defaults, &limits, Utc::now())
        .unwrap();
        assert_eq!(moved.url, "http://orders-2:50051/");
        assert_eq!(moved.grpc, current.grpc, "still the same method");
        assert_eq!(moved.body, current.body);
        let fixed = RequestEdit {
            body: Some(r#"{"order_id": "A-2"}"#.into()),
            ..RequestEdit::default()
        }
        .over(&current, &defaults, &limits, Utc::now())
        .unwrap();
        assert_eq!(fixed.body.unwrap().as_bytes(), br#"{"order_id":"A-2"}"#);
        for refused in [
            RequestEdit {
                body: Some("not json".into()),
                ..RequestEdit::default()
            },
            RequestEdit {
                body_base64: Some("AAAA".into()),
                ..RequestEdit::default()
            },
        ] {
            assert!(refused.over(&current, &defaults, &limits, Utc::now()).is_err());
        }
    }

    #[test]
    fn an_edit_changes_only_what_it_names_and_is_checked() {
        let (defaults, limits) = (TaskDefaults::default(), Limits::default());
        let edit = RequestEdit {
            url: Some("https://new.example.com/cb".into()),
            ..RequestEdit::default()
        };
        let edited = edit.over(&request(), &defaults, &limits, Utc::now()).unwrap();
        assert_eq!(edited.url, "https://new.example.com/cb");
        assert_eq!(edited.body, request().body);
        assert_eq!(edited.headers, request().headers);
        let bad = RequestEdit {
            url: Some("ftp://x".into()),
            ..RequestEdit::default()
        };
        assert!(bad.over(&request(), &defaults, &limits, Utc::now()).is_err());
        let body = RequestEdit {
            body: Some("fixed".into()),
            ..RequestEdit::default()
        };
        let edited = body.over(&request(), &defaults, &limits, Utc::now()).unwrap();
        assert_eq!(edited.body.unwrap().as_bytes(), b"fixed");
    }
}
