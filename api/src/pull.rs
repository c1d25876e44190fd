//! Pull consumers' members over HTTP: `POST /v1/consumers/{id}/pull` (a long
//! poll), `ack`, `nack`, `members/{member}/heartbeat`, and
//! `GET /v1/consumers/{id}/members`. A key of an app pulls only its app's
//! consumers.

use actix_web::{web, HttpRequest, HttpResponse};
use bida_actors::pull::{
    AckRequest, HeartbeatRequest, MemberRemoved, MemberSettings, Members, NackRequest, PullRequest, Pulled, Scope,
    Settled,
};

use crate::access::caller;
use crate::json::JsonBody;
use crate::problem::Problem;
use crate::ApiState;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/v1/consumers/{id}/pull").route(web::post().to(pull)))
        .service(web::resource("/v1/consumers/{id}/ack").route(web::post().to(ack)))
        .service(web::resource("/v1/consumers/{id}/nack").route(web::post().to(nack)))
        .service(web::resource("/v1/consumers/{id}/members").route(web::get().to(members)))
        .service(web::resource("/v1/consumers/{id}/members/{member}").route(web::delete().to(remove_member)))
        .service(web::resource("/v1/consumers/{id}/members/{member}/heartbeat").route(web::post().to(heartbeat)));
}

fn scope(app: &Option<String>) -> Scope<'_> {
    match app {
        Some(app) => Scope::App(app),
        None => Scope::Any,
    }
}

/// Lease up to `max` of the pull consumer's messages to a member, waiting up
/// to `wait_ms` for one (long poll). Also the member's heartbeat; the
/// response carries the consumer's live settings.
#[utoipa::path(post, path = "/v1/consumers/{id}/pull", tag = "pull", params(("id" = String, Path)),
    request_body = PullRequest,
    responses((status = 200, body = Pulled),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn pull(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<PullRequest>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    let pulled = state.pulls.pull(&id, scope(&caller.app_id), body.0).await?;
    Ok(HttpResponse::Ok().json(pulled))
}

/// Acknowledge leased messages: each is delivered (its task records the
/// member's ack). Leases no longer held are listed as `expired`.
#[utoipa::path(post, path = "/v1/consumers/{id}/ack", tag = "pull", params(("id" = String, Path)),
    request_body = AckRequest,
    responses((status = 200, body = Settled),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn ack(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<AckRequest>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    Ok(HttpResponse::Ok().json(state.pulls.ack(&id, scope(&caller.app_id), body.0).await?))
}

/// Give leased messages back: retried after `delay_ms` (or the consumer's
/// backoff), or dead-lettered now with `"dead": true`.
#[utoipa::path(post, path = "/v1/consumers/{id}/nack", tag = "pull", params(("id" = String, Path)),
    request_body = NackRequest,
    responses((status = 200, body = Settled),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn nack(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<NackRequest>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    Ok(HttpResponse::Ok().json(state.pulls.nack(&id, scope(&caller.app_id), body.0).await?))
}

/// Keep an idle member alive; answers the consumer's live settings.
#[utoipa::path(post, path = "/v1/consumers/{id}/members/{member}/heartbeat", tag = "pull",
    params(("id" = String, Path), ("member" = String, Path, pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    request_body(content = Option<HeartbeatRequest>, description = "Optional: where the member runs, its version"),
    responses((status = 200, body = MemberSettings),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn heartbeat(
    state: web::Data<ApiState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody<Option<HeartbeatRequest>>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    let (id, member) = path.into_inner();
    let body = body.0.unwrap_or_default();
    Ok(HttpResponse::Ok().json(state.pulls.heartbeat(&id, scope(&caller.app_id), &member, body).await?))
}

/// The pull consumer's members (alive or gone, leases in flight, acks per
/// second) and what waits in each of its lanes.
#[utoipa::path(get, path = "/v1/consumers/{id}/members", tag = "pull", params(("id" = String, Path)),
    responses((status = 200, body = Members),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json")))]
pub async fn members(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.pulls.members(&id).await?))
}

/// Remove a member for good: the leases it holds return at the next pull,
/// and the broadcast copies waiting for it are cancelled. (A member that is
/// only gone keeps its copies for when it comes back.)
#[utoipa::path(delete, path = "/v1/consumers/{id}/members/{member}", tag = "pull",
    params(("id" = String, Path), ("member" = String, Path, pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses((status = 200, body = MemberRemoved),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not a pull consumer", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_member(
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, member) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.pulls.remove_member(&id, &member).await?))
}
