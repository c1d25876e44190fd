//! Every error the API returns is `application/problem+json` (RFC 9457) with
//! a `detail` a person can act on.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError};
use bida_actors::TaskServiceError;
use bida_domain::task::TaskError;
use bida_domain::{FieldError, ValidationErrors};
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Identifies the kind of problem (`urn:bida:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The fields at fault, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// When messages were written to a broker before the failure: those the
    /// broker confirmed (the others were not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub written: Option<Box<Vec<serde_json::Value>>>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:bida:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            written: None,
        }
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// A deleted resource: gone from its route, its history kept for audit.
    pub fn gone_to_history(what: &str, id: &str, collection: &str) -> Self {
        Self::not_found(format!(
            "{what} {id} was deleted; its history stays at /v1/audit/{collection}/{id}"
        ))
    }

    pub fn validation(errors: ValidationErrors) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            format!("the request has {} invalid field(s): {errors}", errors.0.len()),
        );
        problem.errors = errors.0;
        problem
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        HttpResponse::build(self.status_code())
            .content_type(PROBLEM_JSON)
            .json(self)
    }
}

impl From<TaskServiceError> for Problem {
    fn from(e: TaskServiceError) -> Self {
        let text = e.to_string();
        match e {
            TaskServiceError::Invalid(errors) => Self::validation(errors),
            TaskServiceError::NotFound(_) => Self::not_found(text),
            TaskServiceError::Rejected(TaskError::NotFound) => Self::not_found(text),
            TaskServiceError::Rejected(_) => Self::new(StatusCode::CONFLICT, "invalid-state", text),
            TaskServiceError::Conflict => Self::new(StatusCode::CONFLICT, "concurrent-change", text),
            TaskServiceError::InFlight(_) => Self::new(StatusCode::CONFLICT, "attempt-in-flight", text),
            TaskServiceError::TooLate { .. } => Self::new(StatusCode::CONFLICT, "too-late", text),
            TaskServiceError::IdempotencyMismatch { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", text)
            }
            TaskServiceError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", text),
            TaskServiceError::Internal(_) => {
                tracing::error!(error = %text, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", text)
            }
        }
    }
}

impl From<bida_projections::ProjectionError> for Problem {
    fn from(e: bida_projections::ProjectionError) -> Self {
        use bida_projections::ProjectionError;
        if let ProjectionError::Store(store) = &e {
            if !store.is_transient() {
                tracing::error!(error = %e, "read model error");
                return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
            }
        }
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
    }
}

/// Turns the framework's own error responses (unknown route, wrong method...)
/// into problem documents too.
pub fn problem_responses<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|response: ServiceResponse<B>| {
        // Problems stay as they are; so do the console's own HTML pages.
        let already = response.headers().get(CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()) || v.as_bytes().starts_with(b"text/html")
        });
        if already {
            return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
        }
        let status = response.status();
        let (kind, detail) = match status {
            StatusCode::NOT_FOUND => (
                "not-found",
                format!("no route for {}; see /openapi.json", response.request().path()),
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                format!(
                    "{} is not allowed on {}; see /openapi.json",
                    response.request().method(),
                    response.request().path()
                ),
            ),
            _ => ("http-error", status.canonical_reason().unwrap_or("error").to_string()),
        };
        let problem = Problem::new(status, kind, detail);
        let (request, mut plain) = response.into_parts();
        plain
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let plain = plain.set_body(body).map_into_boxed_body();
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(request, plain).map_into_right_body(),
        ))
    })
}

impl From<bida_actors::brokers::AdminError> for Problem {
    fn from(e: bida_actors::brokers::AdminError) -> Self {
        use bida_actors::brokers::AdminError;
        let text = e.to_string();
        match e {
            AdminError::Invalid(errors) => Self::validation(errors),
            AdminError::NotFound(_) => Self::not_found(text),
            AdminError::Rejected(_) => Self::new(StatusCode::CONFLICT, "invalid-state", text),
            AdminError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", text),
            AdminError::Broker(_) => Self::new(StatusCode::BAD_GATEWAY, "broker-error", text),
            AdminError::Internal(_) => {
                tracing::error!(error = %text, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", text)
            }
        }
    }
}

impl From<bida_store::StoreError> for Problem {
    fn from(e: bida_store::StoreError) -> Self {
        if e.is_transient() {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
        } else {
            tracing::error!(error = %e, "store error");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

impl From<bida_actors::delayed::DelayedError> for Problem {
    fn from(e: bida_actors::delayed::DelayedError) -> Self {
        match e {
            bida_actors::delayed::DelayedError::Admin(e) => e.into(),
            bida_actors::delayed::DelayedError::Task(e) => e.into(),
        }
    }
}

impl From<bida_actors::produce::ProduceError> for Problem {
    fn from(e: bida_actors::produce::ProduceError) -> Self {
        use bida_actors::produce::ProduceError;
        let written = |written: Vec<bida_actors::produce::Written>| {
            Some(Box::new(
                written.iter().filter_map(|w| serde_json::to_value(w).ok()).collect(),
            ))
        };
        match e {
            ProduceError::Admin(e) => e.into(),
            ProduceError::Unavailable { reason, written: done } => {
                let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", reason);
                problem.written = written(done);
                problem
            }
            ProduceError::Refused { errors, written: done } => {
                let mut problem = Self::validation(errors);
                problem.written = written(done);
                problem
            }
        }
    }
}
