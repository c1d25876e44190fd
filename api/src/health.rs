//! Liveness and readiness probes.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::ApiState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub node: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        node: state.node_id.clone(),
    })
}

/// Ready to serve: the database answers and the schema is up to date.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Not ready, with the reason", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let readiness = state.store.readiness().await;
    if readiness.is_ready() {
        return Ok(HttpResponse::Ok().json(Health {
            status: "ready",
            version: env!("CARGO_PKG_VERSION"),
            node: state.node_id.clone(),
        }));
    }
    let detail = match (&readiness.error, readiness.database) {
        (Some(error), _) => format!("the database is unreachable: {error}"),
        (None, true) => "database migrations are not applied yet".to_string(),
        (None, false) => "the database is unreachable".to_string(),
    };
    Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", detail))
}
