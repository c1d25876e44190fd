//! `/v1/consumers`: bind a broker source to an endpoint, operate it live.

use actix_web::{web, HttpResponse};
use bida_actors::consumer::service::{LaneReplay, ResendOutcome};
use bida_actors::consumer::{ConsumerView, ResendRequest};
use bida_domain::consumer::{ConsumerInput, ConsumerPatch, OffsetReset, PartitionOffset};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

use crate::json::{JsonBody, QueryParams};
use crate::paging::{page, PageQuery};
use crate::problem::Problem;
use crate::{history, ApiState};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/consumers")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/consumers/{id}")
                .route(web::get().to(view))
                .route(web::patch().to(patch))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/v1/consumers/{id}/events").route(web::get().to(events)))
        .service(web::resource("/v1/consumers/{id}/reset-offsets").route(web::post().to(reset_offsets)))
        .service(web::resource("/v1/consumers/{id}/resend").route(web::post().to(resend)))
        .service(web::resource("/v1/consumers/{id}/lanes/{key}/replay").route(web::post().to(replay_lane)))
        .service(web::resource("/v1/consumers/{id}/{action}").route(web::post().to(lifecycle)));
}

#[derive(Serialize, ToSchema)]
pub struct ConsumerList {
    pub items: Vec<ConsumerView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Create a consumer: a source on a broker bound to an endpoint with a delivery
/// policy. It starts running on every node. Like every answer to a change,
/// the view's backlog is what the nodes last reported; `GET` asks the broker.
#[utoipa::path(post, path = "/v1/consumers", tag = "consumers", request_body = ConsumerInput,
    responses((status = 201, body = ConsumerView),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create(state: web::Data<ApiState>, body: JsonBody<ConsumerInput>) -> Result<HttpResponse, Problem> {
    let view = state.consumers.create(body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/consumers/{}", view.id)))
        .json(view))
}

/// Every consumer, without live lag, a page at a time.
#[utoipa::path(get, path = "/v1/consumers", tag = "consumers", params(PageQuery), responses((status = 200, body = ConsumerList)))]
pub async fn list(state: web::Data<ApiState>, query: QueryParams<PageQuery>) -> Result<HttpResponse, Problem> {
    let page = page(
        state.consumers.live().await?,
        |(id, _)| id.clone(),
        &query.0,
        state.config.max_page,
    )?;
    let consumers: Vec<_> = page.items.iter().map(|(id, c)| (id.as_str(), c)).collect();
    let items = state.consumers.summaries(&consumers).await?;
    Ok(HttpResponse::Ok().json(ConsumerList {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// A consumer: state, counters, lag per partition or queue, each node's report.
#[utoipa::path(get, path = "/v1/consumers/{id}", tag = "consumers", params(("id" = String, Path)),
    responses((status = 200, body = ConsumerView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn view(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    let view = state.consumers.view(&id).await?;
    if view.deleted {
        return Err(Problem::gone_to_history("consumer", &id, "consumers"));
    }
    Ok(HttpResponse::Ok().json(view))
}

/// Change the endpoint or the policy (concurrency, rate, timeout, retries...);
/// running actors apply it without a restart. The view's backlog is what the
/// nodes last reported; `GET` asks the broker.
#[utoipa::path(patch, path = "/v1/consumers/{id}", tag = "consumers", params(("id" = String, Path)), request_body = ConsumerPatch,
    responses((status = 200, body = ConsumerView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn patch(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<ConsumerPatch>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.consumers.patch(&id, body.0).await?))
}

/// Delete a consumer: it stops on every node; its tasks stay queryable.
#[utoipa::path(delete, path = "/v1/consumers/{id}", tag = "consumers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    state.consumers.delete(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `pause`, `resume`, `stop` or `start` the consumer on every node.
#[utoipa::path(post, path = "/v1/consumers/{id}/{action}", tag = "consumers",
    params(("id" = String, Path), ("action" = String, Path, description = "pause, resume, stop or start")),
    responses((status = 200, body = ConsumerView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not possible in the current state", body = Problem, content_type = "application/problem+json")))]
pub async fn lifecycle(state: web::Data<ApiState>, path: web::Path<(String, String)>) -> Result<HttpResponse, Problem> {
    let (id, action) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.consumers.lifecycle(&id, &action).await?))
}

#[derive(Serialize, ToSchema)]
pub struct OffsetsCommitted {
    pub committed: Vec<PartitionOffset>,
}

/// Kafka: move the (stopped) consumer's group to `earliest`, `latest`, a
/// `timestamp` or explicit `offsets`.
#[utoipa::path(post, path = "/v1/consumers/{id}/reset-offsets", tag = "consumers", params(("id" = String, Path)),
    request_body = OffsetReset,
    responses((status = 200, body = OffsetsCommitted),
              (status = 409, description = "Not stopped, or not Kafka", body = Problem, content_type = "application/problem+json"),
              (status = 502, description = "Kafka refused", body = Problem, content_type = "application/problem+json")))]
pub async fn reset_offsets(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<OffsetReset>,
) -> Result<HttpResponse, Problem> {
    let committed = state.consumers.reset_offsets(&id, body.0).await?;
    Ok(HttpResponse::Ok().json(OffsetsCommitted { committed }))
}

/// Deliver again a recorded message (`task_id`) or a Kafka offset range
/// (`topic`, `partition`, `from`, `to`).
#[utoipa::path(post, path = "/v1/consumers/{id}/resend", tag = "consumers", params(("id" = String, Path)),
    request_body = ResendRequest,
    responses((status = 200, body = ResendOutcome), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn resend(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<ResendRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.consumers.resend(&id, body.0).await?))
}

/// Ordering by key: deliver the parked lane's dead task again and, once it is
/// delivered, let the lane's held messages follow in order.
#[utoipa::path(post, path = "/v1/consumers/{id}/lanes/{key}/replay", tag = "consumers",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = LaneReplay), (status = 404, description = "No such parked lane", body = Problem, content_type = "application/problem+json")))]
pub async fn replay_lane(
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, key) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.consumers.replay_lane(&id, &key, Duration::from_secs(30)).await?))
}

/// The consumer's history: who changed what, when (credentials masked).
#[utoipa::path(get, path = "/v1/consumers/{id}/events", tag = "consumers", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = history::EventHistory), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    if state.consumers.reported(&id).await?.deleted {
        return Err(Problem::gone_to_history("consumer", &id, "consumers"));
    }
    history::of::<bida_domain::consumer::Consumer>(&state, &id, &query.0, "consumer").await
}
