//! What counts as a successful delivery, and what to do when it is not one.
//!
//! The endpoint stays in control: its status code decides between success,
//! retry and giving up; `Retry-After` on 429/503 sets the next delay; a
//! `bida-stop-retry` header ends the retries at once.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use crate::retry::parse_retry_after;
use crate::{StatusSet, ValidationErrors};

/// An endpoint that answers with this header (any value) is not retried again.
pub const STOP_RETRY_HEADER: &str = "bida-stop-retry";

/// What the endpoint's response must look like for a delivery to succeed.
/// All given conditions must hold; with none given, any 2xx succeeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Expect {
    /// Status codes that count as success; `["2xx"]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::StatusSet>, example = json!(["2xx"])))]
    pub status: Option<StatusSet>,
    /// The response body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// A field of the JSON response body must equal a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonExpectation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonExpectation {
    /// Where the field is: a JSON pointer (`/data/code`) or a dotted path (`data.code`).
    pub pointer: String,
    /// The value it must equal (numbers compare by value: 0 equals 0.0).
    pub equals: Value,
}

impl Expect {
    /// Checks the matcher and normalises dotted paths to JSON pointers.
    pub fn validate(mut self, errors: &mut ValidationErrors) -> Self {
        if let Some(text) = &self.body_contains {
            if text.is_empty() {
                errors.add("expect.body_contains", "must not be empty; omit it to accept any body");
            } else if text.contains('\0') {
                errors.add("expect.body_contains", "must not contain the NUL character");
            }
        }
        if let Some(json) = &mut self.json {
            if json.pointer.contains('\0') || crate::has_nul(&json.equals) {
                errors.add("expect.json", "must not contain the NUL character");
            }
            if json.pointer.trim().is_empty() {
                errors.add("expect.json.pointer", "must name a field, e.g. `/code` or `data.code`");
            } else if !json.pointer.starts_with('/') {
                json.pointer = dotted_to_pointer(&json.pointer);
            }
        }
        self
    }

    fn success_status(&self, status: u16) -> bool {
        match &self.status {
            Some(set) => set.contains(status),
            None => (200..300).contains(&status),
        }
    }

    /// `None` when the body satisfies every body condition, else why not.
    fn body_mismatch(&self, body: &[u8]) -> Option<String> {
        if let Some(needle) = &self.body_contains {
            if !contains(body, needle.as_bytes()) {
                return Some(format!("response body does not contain {needle:?}"));
            }
        }
        let json = self.json.as_ref()?;
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) => {
                return Some(format!(
                    "response body is not JSON (expected {} = {})",
                    json.pointer, json.equals
                ))
            }
        };
        match parsed.pointer(&json.pointer) {
            None => Some(format!("response JSON has no {}", json.pointer)),
            Some(actual) if json_equal(actual, &json.equals) => None,
            Some(actual) => Some(format!(
                "response JSON {} is {actual}, expected {}",
                json.pointer, json.equals
            )),
        }
    }
}

fn dotted_to_pointer(path: &str) -> String {
    path.split('.')
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

fn json_equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => actual == expected,
    }
}

/// What one attempt observed: a response, or why there was none.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Response {
        status: u16,
        /// The body, cut at the configured inspection limit.
        body: Bytes,
        retry_after: Option<String>,
        stop_requested: bool,
    },
    Timeout {
        after_ms: u64,
    },
    /// Connection refused, DNS, TLS, a broken response...
    Failed {
        error: String,
    },
    /// The request could not be built from the task (a header the message
    /// brought cannot be sent): no endpoint is at fault and retrying is useless.
    Unsendable {
        error: String,
    },
    /// A broker confirmed the write of a broker-writing task (a delayed
    /// message), which lands at `at` (a partition and offset...).
    Written {
        at: String,
    },
    /// A pulled message's member acknowledged it within its lease.
    Acked {
        member: String,
    },
    /// A member gave a pulled message back: to retry after `retry_after`
    /// (or the backoff), or (`give_up`) to dead-letter it now.
    Nacked {
        member: String,
        reason: Option<String>,
        retry_after: Option<Duration>,
        give_up: bool,
    },
    /// A member neither acked nor nacked a pulled message within its lease
    /// (or stopped heartbeating meanwhile).
    LeaseExpired {
        member: String,
    },
    /// A gRPC method answered (with any status: a status is an answer).
    Rpc(crate::grpc::RpcOutcome),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Success,
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    GiveUp {
        reason: String,
    },
}

/// Decides the fate of one attempt from what it observed.
pub fn judge(expect: &Expect, retry_on: &StatusSet, observed: &Observation, now: DateTime<Utc>) -> Verdict {
    let (status, body, retry_after, stop_requested) = match observed {
        Observation::Timeout { after_ms } => {
            return Verdict::Retry {
                reason: format!("timed out after {after_ms} ms"),
                retry_after: None,
            }
        }
        Observation::Failed { error } => {
            return Verdict::Retry {
                reason: error.clone(),
                retry_after: None,
            }
        }
        Observation::Unsendable { error } => {
            return Verdict::GiveUp {
                reason: format!("the request cannot be sent: {error}"),
            }
        }
        Observation::Written { .. } | Observation::Acked { .. } => return Verdict::Success,
        Observation::Nacked {
            member,
            reason,
            retry_after,
            give_up,
        } => {
            let reason = match reason {
                Some(reason) => format!("nacked by member {member}: {reason}"),
                None => format!("nacked by member {member}"),
            };
            return match give_up {
                true => Verdict::GiveUp { reason },
                false => Verdict::Retry {
                    reason,
                    retry_after: *retry_after,
                },
            };
        }
        Observation::LeaseExpired { member } => {
            return Verdict::Retry {
                reason: format!("member {member} held its lease to the end without an ack"),
                retry_after: None,
            }
        }
        Observation::Rpc(outcome) => return judge_rpc(expect, outcome),
        Observation::Response {
            status,
            body,
            retry_after,
            stop_requested,
        } => (*status, body, retry_after, *stop_requested),
    };
    let failure = if expect.success_status(status) {
        match expect.body_mismatch(body) {
            None => return Verdict::Success,
            Some(mismatch) => (mismatch, true),
        }
    } else {
        let retryable = retry_on.contains(status);
        let reason = if retryable {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status} is not retried (retry_on: {retry_on})")
        };
        (reason, retryable)
    };
    match failure {
        (reason, _) if stop_requested => Verdict::GiveUp {
            reason: format!("{reason}; endpoint asked to stop retrying ({STOP_RETRY_HEADER})"),
        },
        (reason, true) => Verdict::Retry {
            reason,
            retry_after: match status {
                429 | 503 => retry_after.as_deref().and_then(|v| parse_retry_after(v, now)),
                _ => None,
            },
        },
        (reason, false) => Verdict::GiveUp { reason },
    }
}

/// A gRPC status: `OK` succeeds when the response message (as JSON) meets
/// the body conditions of `expect`; other codes are retried or not as
/// [`GrpcCode::retryable`](crate::grpc::GrpcCode::retryable) says, after the
/// delay the server's `RetryInfo` asks for, if it gave one.
fn judge_rpc(expect: &Expect, outcome: &crate::grpc::RpcOutcome) -> Verdict {
    use crate::grpc::GrpcCode;
    if outcome.code == GrpcCode::Ok {
        return match expect.body_mismatch(&outcome.body) {
            None => Verdict::Success,
            Some(reason) => Verdict::Retry {
                reason,
                retry_after: None,
            },
        };
    }
    let mut reason = format!("gRPC {}", outcome.code);
    if !outcome.message.is_empty() {
        reason.push_str(": ");
        reason.push_str(&outcome.message);
    }
    match outcome.code.retryable() {
        true => Verdict::Retry {
            reason,
            retry_after: outcome.retry_after,
        },
        false => Verdict::GiveUp {
            reason: format!("{reason} (not retried)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: u16, body: &str) -> Observation {
        Observation::Response {
            status,
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after: None,
            stop_requested: false,
        }
    }

    fn verdict(expect: &Expect, observed: &Observation) -> Verdict {
        judge(expect, &StatusSet::default_retry_on(), observed, Utc::now())
    }

    fn rpc(code: crate::grpc::GrpcCode, body: &str, retry_after: Option<Duration>) -> Observation {
        Observation::Rpc(crate::grpc::RpcOutcome {
            code,
            message: "said the server".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after,
        })
    }

    #[test]
    fn grpc_statuses_are_judged_by_their_code_and_retry_info() {
        use crate::grpc::GrpcCode;
        assert_eq!(
            verdict(&Expect::default(), &rpc(GrpcCode::Ok, "{}", None)),
            Verdict::Success
        );
        let later = Some(Duration::from_secs(7));
        assert_eq!(
            verdict(&Expect::default(), &rpc(GrpcCode::Unavailable, "", later)),
            Verdict::Retry {
                reason: "gRPC UNAVAILABLE: said the server".into(),
                retry_after: later
            }
        );
        let Verdict::GiveUp { reason } = verdict(&Expect::default(), &rpc(GrpcCode::InvalidArgument, "", later)) else {
            panic!("a bad argument is not retried");
        };
        assert_eq!(reason, "gRPC INVALID_ARGUMENT: said the server (not retried)");
        let expect = Expect {
            json: Some(JsonExpectation {
                pointer: "/accepted".into(),
                equals: json!(true),
            }),
            ..Expect::default()
        };
        assert_eq!(
            verdict(&expect, &rpc(GrpcCode::Ok, r#"{"accepted":true}"#, None)),
            Verdict::Success
        );
        assert!(matches!(
            verdict(&expect, &rpc(GrpcCode::Ok, r#"{"accepted":false}"#, None)),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn any_2xx_succeeds_by_default() {
        assert_eq!(verdict(&Expect::default(), &response(204, "")), Verdict::Success);
    }

    #[test]
    fn server_errors_timeouts_and_network_errors_are_retried() {
        for observed in [
            response(503, ""),
            response(408, ""),
            response(429, ""),
            Observation::Timeout { after_ms: 100 },
            Observation::Failed {
                error: "connection refused".into(),
            },
        ] {
            assert!(
                matches!(verdict(&Expect::default(), &observed), Verdict::Retry { .. }),
                "{observed:?}"
            );
        }
    }

    #[test]
    fn an_unsendable_request_gives_up_at_once() {
        let observed = Observation::Unsendable {
            error: "header content-type: invalid value".into(),
        };
        let Verdict::GiveUp { reason } = verdict(&Expect::default(), &observed) else {
            panic!("retrying cannot help");
        };
        assert!(reason.contains("cannot be sent"), "{reason}");
    }

    #[test]
    fn other_client_errors_give_up_with_the_reason() {
        let Verdict::GiveUp { reason } = verdict(&Expect::default(), &response(404, "")) else {
            panic!("404 must not be retried");
        };
        assert_eq!(reason, "HTTP 404 is not retried (retry_on: 5xx, 408, 429)");
    }

    #[test]
    fn body_must_contain_the_expected_text() {
        let expect = Expect {
            body_contains: Some("成功".into()),
            ..Expect::default()
        };
        assert_eq!(verdict(&expect, &response(200, "{\"msg\":\"成功\"}")), Verdict::Success);
        let Verdict::Retry { reason, .. } = verdict(&expect, &response(200, "失败")) else {
            panic!("wrong body must be retried");
        };
        assert!(reason.contains("does not contain"), "{reason}");
    }

    #[test]
    fn json_field_must_equal_the_value() {
        let mut errors = ValidationErrors::default();
        let expect = Expect {
            json: Some(JsonExpectation {
                pointer: "data.code".into(),
                equals: json!(0),
            }),
            ..Expect::default()
        }
        .validate(&mut errors);
        assert!(errors.is_empty());
        assert_eq!(expect.json.as_ref().unwrap().pointer, "/data/code");
        assert_eq!(
            verdict(&expect, &response(200, r#"{"data":{"code":0.0}}"#)),
            Verdict::Success
        );
        for (body, needle) in [
            (r#"{"data":{"code":1}}"#, "is 1, expected 0"),
            (r#"{"data":{}}"#, "has no /data/code"),
            ("<html>", "not JSON"),
        ] {
            let Verdict::Retry { reason, .. } = verdict(&expect, &response(200, body)) else {
                panic!("{body} must be retried");
            };
            assert!(reason.contains(needle), "{reason}");
        }
    }

    #[test]
    fn nul_cannot_enter_a_matcher() {
        let mut errors = ValidationErrors::default();
        Expect {
            body_contains: Some("a\0b".into()),
            json: Some(JsonExpectation {
                pointer: "/code".into(),
                equals: json!({"k": ["x\0"]}),
            }),
            ..Expect::default()
        }
        .validate(&mut errors);
        let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["expect.body_contains", "expect.json"]);
    }

    #[test]
    fn custom_success_statuses() {
        let expect = Expect {
            status: Some(StatusSet::parse(["200"]).unwrap()),
            ..Expect::default()
        };
        assert_eq!(verdict(&expect, &response(200, "")), Verdict::Success);
        assert!(matches!(verdict(&expect, &response(202, "")), Verdict::GiveUp { .. }));
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let with_retry_after = |status| Observation::Response {
            status,
            body: Bytes::new(),
            retry_after: Some("7".into()),
            stop_requested: false,
        };
        let expect = Expect::default();
        for (status, expected) in [
            (429, Some(Duration::from_secs(7))),
            (503, Some(Duration::from_secs(7))),
            (500, None),
        ] {
            let Verdict::Retry { retry_after, .. } = verdict(&expect, &with_retry_after(status)) else {
                panic!("{status} must be retried");
            };
            assert_eq!(retry_after, expected, "{status}");
        }
    }

    #[test]
    fn stop_header_ends_retries_but_not_success() {
        let stop = |status| Observation::Response {
            status,
            body: Bytes::new(),
            retry_after: None,
            stop_requested: true,
        };
        let Verdict::GiveUp { reason } = verdict(&Expect::default(), &stop(503)) else {
            panic!("stop header must end retries");
        };
        assert!(reason.contains(STOP_RETRY_HEADER), "{reason}");
        assert_eq!(verdict(&Expect::default(), &stop(200)), Verdict::Success);
    }
}
