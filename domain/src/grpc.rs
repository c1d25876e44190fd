//! Deliveries to gRPC methods: which method a task calls, and what the
//! method's status code means for the task.
//!
//! A gRPC delivery keeps the task's model: its request's `url` is the
//! server (`http://orders:50051`), its body the request message as JSON, and
//! `grpc` names the method. Turning JSON into the method's message and back
//! needs the method's descriptors, which the node learns at run time
//! (reflection or an uploaded descriptor set); nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

use crate::ValidationErrors;

/// A fully qualified method, `package.Service/Method`, as gRPC paths name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, example = "orders.v1.Callbacks/Paid")
)]
pub struct GrpcMethod(String);

impl GrpcMethod {
    /// `orders.v1.Callbacks/Paid`; a leading `/` (the HTTP/2 path) is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.strip_prefix('/').unwrap_or(text);
        let (service, method) = trimmed
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not `package.Service/Method`"))?;
        let ident = |part: &str| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if service.len() + method.len() > 512 || !service.split('.').all(ident) || !ident(method) {
            return Err(format!(
                "`{text}` is not `package.Service/Method` (names of letters, digits and `_`)"
            ));
        }
        Ok(Self(trimmed.to_string()))
    }

    fn parts(&self) -> (&str, &str) {
        self.0.split_once('/').unwrap_or((&self.0, ""))
    }

    /// The service's full name, `orders.v1.Callbacks`.
    pub fn service(&self) -> &str {
        self.parts().0
    }

    /// The method's own name, `Paid`.
    pub fn method(&self) -> &str {
        self.parts().1
    }

    /// The HTTP/2 path a call goes to, `/orders.v1.Callbacks/Paid`.
    pub fn path(&self) -> String {
        format!("/{}", self.0)
    }
}

impl fmt::Display for GrpcMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for GrpcMethod {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<GrpcMethod> for String {
    fn from(method: GrpcMethod) -> Self {
        method.0
    }
}

/// The gRPC call a delivery makes, kept in the task's request beside its
/// `url` (the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrpcCall {
    pub method: GrpcMethod,
}

/// A gRPC endpoint as a client gives it, in place of `url` and `method`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrpcInput {
    /// The server: `http://host:port` (plaintext HTTP/2) or `https://host:port`.
    #[cfg_attr(feature = "openapi", schema(example = "http://orders:50051"))]
    pub target: String,
    /// The method, `package.Service/Method`.
    #[cfg_attr(feature = "openapi", schema(example = "orders.v1.Callbacks/Paid"))]
    pub method: String,
}

impl GrpcInput {
    /// The method, checked; the target is checked as any endpoint URL is
    /// (`url` is its field), and must name no path.
    pub fn call(&self, field: &str, errors: &mut ValidationErrors) -> Option<GrpcCall> {
        if let Ok(url) = url::Url::parse(&self.target) {
            if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
                errors.add(
                    format!("{field}.target"),
                    "is the server only (`http://host:port`); the method goes in `method`",
                );
            }
        }
        match GrpcMethod::parse(&self.method) {
            Ok(method) => Some(GrpcCall { method }),
            Err(why) => {
                errors.add(format!("{field}.method"), why);
                None
            }
        }
    }
}

/// The status codes of gRPC, as the protocol numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GrpcCode {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcCode {
    const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code of a number on the wire; numbers gRPC does not define are
    /// `UNKNOWN`, as the protocol says.
    pub fn from_number(number: i32) -> Self {
        usize::try_from(number)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Unknown)
    }

    pub fn number(self) -> i32 {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(2) as i32
    }

    pub fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES[self.number() as usize]
    }

    /// Whether a later attempt may succeed. Transient conditions of the
    /// server or the path to it are retried (the gRPC retry design's
    /// `UNAVAILABLE`, plus what a delivery that is at-least-once anyway can
    /// repeat: a deadline, exhausted quota, an abort, an internal or unknown
    /// error, a cancellation, data loss). The rest say the request itself is
    /// wrong for this server (a bad argument, a missing method or entity,
    /// refused credentials, a failed precondition) and would fail the same
    /// way again: the task is dead-lettered with the reason.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Cancelled
                | Self::Unknown
                | Self::DeadlineExceeded
                | Self::ResourceExhausted
                | Self::Aborted
                | Self::Internal
                | Self::Unavailable
                | Self::DataLoss
        )
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a gRPC call came back with: its status, and on `OK` the response
/// message as JSON (what the task's `expect` looks at).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcOutcome {
    pub code: GrpcCode,
    pub message: String,
    /// The response message as JSON on `OK`; empty otherwise.
    pub body: bytes::Bytes,
    /// The server's `google.rpc.RetryInfo` detail: when to try again.
    pub retry_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_package_service_slash_method() {
        let method = GrpcMethod::parse("orders.v1.Callbacks/Paid").unwrap();
        assert_eq!((method.service(), method.method()), ("orders.v1.Callbacks", "Paid"));
        assert_eq!(method.path(), "/orders.v1.Callbacks/Paid");
        assert_eq!(GrpcMethod::parse("/Svc/Call").unwrap().to_string(), "Svc/Call");
        for bad in [
            "",
            "Paid",
            "orders.v1.Callbacks/",
            "/Paid",
            "a..b/C",
            "a.b/C/D",
            "a-b/C",
            "1a/B",
            "a/ B",
        ] {
            assert!(GrpcMethod::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let json = serde_json::to_value(&method).unwrap();
        assert_eq!(json, "orders.v1.Callbacks/Paid");
        assert!(serde_json::from_value::<GrpcMethod>(serde_json::json!("nope")).is_err());
    }

    #[test]
    fn codes_keep_their_numbers_and_names() {
        for number in 0..17 {
            assert_eq!(GrpcCode::from_number(number).number(), number);
        }
        assert_eq!(GrpcCode::from_number(14), GrpcCode::Unavailable);
        assert_eq!(GrpcCode::from_number(99), GrpcCode::Unknown);
        assert_eq!(GrpcCode::from_number(-1), GrpcCode::Unknown);
        assert_eq!(GrpcCode::InvalidArgument.name(), "INVALID_ARGUMENT");
        assert_eq!(
            serde_json::to_value(GrpcCode::DeadlineExceeded).unwrap(),
            "DEADLINE_EXCEEDED"
        );
    }

    #[test]
    fn transient_codes_are_retried_and_the_request_s_own_faults_are_not() {
        for code in [
            GrpcCode::Unavailable,
            GrpcCode::DeadlineExceeded,
            GrpcCode::ResourceExhausted,
        ] {
            assert!(code.retryable(), "{code}");
        }
        for code in [
            GrpcCode::InvalidArgument,
            GrpcCode::NotFound,
            GrpcCode::PermissionDenied,
            GrpcCode::Unimplemented,
            GrpcCode::Unauthenticated,
        ] {
            assert!(!code.retryable(), "{code}");
        }
    }

    #[test]
    fn a_target_names_the_server_only() {
        let mut errors = ValidationErrors::default();
        let input = GrpcInput {
            target: "http://orders:50051/orders.v1.Callbacks".into(),
            method: "Paid".into(),
        };
        assert!(input.call("grpc", &mut errors).is_none());
        let text = format!("{:?}", errors.finish(()).unwrap_err());
        assert!(text.contains("grpc.target") && text.contains("grpc.method"), "{text}");
    }
}
