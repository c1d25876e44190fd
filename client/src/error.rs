//! What a call can fail with.

use serde::{Deserialize, Serialize};

use crate::types::Written;

/// The `Content-Type` of Bida's error answers (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer of the API (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Identifies the kind of problem (`urn:bida:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The fields at fault, for validation problems (`messages[2].topic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// A produce that failed part way (`503`, `422`): the messages the broker
    /// did confirm; the others were not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<Vec<Written>>,
}

impl Problem {
    /// The part of `type` after `urn:bida:problem:` (`validation-failed`,
    /// `not-found`, `invalid-state`...).
    pub fn short_kind(&self) -> &str {
        self.kind.strip_prefix("urn:bida:problem:").unwrap_or(&self.kind)
    }

    /// The error about `field`, if the problem names it.
    pub fn field(&self, field: &str) -> Option<&FieldError> {
        self.errors.iter().find(|e| e.field == field)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

/// A field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's path in the request (`url`, `messages[2].topic`).
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem document.
    #[error("{0}")]
    Api(Box<Problem>),
    /// An answer the client did not expect: an error status without a
    /// problem document (from a proxy, say), or a status the route does not
    /// answer with for this call.
    #[error("unexpected answer {status}: {body}")]
    Unexpected { status: u16, body: String },
    /// An answer whose body is not what the route documents.
    #[error("cannot read the answer ({status}): {source}; body: {body}")]
    Decode {
        status: u16,
        body: String,
        #[source]
        source: serde_json::Error,
    },
    /// A request the client cannot send as given (an `Idempotency-Key` that
    /// is not visible ASCII, say).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The base URL given to the client cannot be used.
    #[error("invalid base URL: {0}")]
    BaseUrl(String),
    /// The request did not get an answer (connection, timeout, TLS...).
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl Error {
    /// The problem document, when the API answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(problem) => Some(problem),
            _ => None,
        }
    }

    /// The HTTP status of an answer (none when there was no answer).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(problem) => Some(problem.status),
            Error::Unexpected { status, .. } | Error::Decode { status, .. } => Some(*status),
            Error::Http(e) => e.status().map(|s| s.as_u16()),
            Error::BaseUrl(_) | Error::Invalid(_) => None,
        }
    }

    /// Worth trying again as it is: no answer (connecting, a timeout, a
    /// connection closed), or `408`, `429` or a `5xx` (a node restarting,
    /// its store unavailable, a proxy without a node behind it). A `4xx`
    /// problem is not: the request or the resource must change first.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http(e) if e.status().is_none() => !e.is_builder() && !e.is_redirect(),
            Error::BaseUrl(_) | Error::Invalid(_) | Error::Decode { .. } => false,
            _ => self.status().is_some_and(|s| s >= 500 || s == 408 || s == 429),
        }
    }
}
