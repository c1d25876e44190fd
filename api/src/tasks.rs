//! `/v1/tasks`: submit callback tasks, read them, cancel, retry, replay.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bida_domain::task::{EndpointHost, RequestEdit, Submission, TaskDetail, TaskStatus, TaskSummary};
use bida_projections::{TaskCursor, TaskFilter, TaskList};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use bida_actors::TaskServiceError;

use crate::access::caller;
use crate::json::{JsonBody, QueryParams};
use crate::paging::PageQuery;
use crate::problem::Problem;
use crate::{history, ApiState};
use bida_domain::access::Caller;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/tasks")
                .route(web::post().to(submit))
                .route(web::get().to(list)),
        )
        .service(web::resource("/v1/tasks/replay").route(web::post().to(replay)))
        .service(web::resource("/v1/tasks/{id}").route(web::get().to(detail)))
        .service(web::resource("/v1/tasks/{id}/events").route(web::get().to(events)))
        .service(web::resource("/v1/tasks/{id}/retry").route(web::post().to(retry)))
        .service(web::resource("/v1/tasks/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/v1/tasks/{id}/replay").route(web::post().to(replay_one)));
}

/// Submit a callback task.
///
/// The task is recorded durably before the answer; delivery follows. With an
/// `Idempotency-Key`, submitting the same request again returns the same task
/// (`Idempotent-Replayed: true`); the key is scoped to `source_app`.
#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks",
    request_body = Submission,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes resubmission return the same task")),
    responses(
        (status = 202, description = "Accepted", body = TaskSummary),
        (status = 400, description = "Not JSON, or a field of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "source_app names another app than the key's", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over api.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or an Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: JsonBody<Submission>,
) -> Result<HttpResponse, Problem> {
    let key = match request.headers().get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Problem::bad_request("invalid-header", "Idempotency-Key must be visible ASCII"))?
                .to_string(),
        ),
    };
    let accepted = accept(&state, &caller(&request)?, body.0, key).await?;
    let mut response = HttpResponse::Accepted();
    response.insert_header(("location", format!("/v1/tasks/{}", accepted.task.id)));
    if accepted.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.json(accepted.task))
}

/// Accepts a submission from `caller`: a key of an app submits for its app.
pub(crate) async fn accept(
    state: &ApiState,
    caller: &Caller,
    mut submission: Submission,
    idempotency_key: Option<String>,
) -> Result<bida_actors::Accepted, Problem> {
    if let Some(app) = &caller.app_id {
        match &submission.source_app {
            Some(named) if named != app => {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this key belongs to app {app}; source_app is set from the key (leave it out)"),
                ))
            }
            _ => submission.source_app = Some(app.clone()),
        }
    }
    Ok(state.tasks.submit(submission, idempotency_key).await?)
}

/// A task with its request, policy and every attempt.
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = TaskDetail),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(shown_detail(&state, &caller(&request)?, &id).await?))
}

/// A task as `caller` may see it, credentials masked; a task of another app
/// than the caller's is not found.
pub(crate) async fn shown_detail(state: &ApiState, caller: &Caller, id: &str) -> Result<serde_json::Value, Problem> {
    match state.tasks.detail(id).await? {
        Some(detail) if visible(caller, detail.summary.source_app.as_deref()) => {
            Ok(history::shown_task(&detail, &state.config.redact_headers))
        }
        _ => Err(Problem::not_found(format!("no task with id {id}"))),
    }
}

fn shown(state: &ApiState, detail: &TaskDetail) -> HttpResponse {
    HttpResponse::Ok().json(history::shown_task(detail, &state.config.redact_headers))
}

/// Whether a task of `source_app` is visible to the caller; a producer's
/// view of another app's task is a 404, so that ids do not leak.
fn visible(caller: &Caller, source_app: Option<&str>) -> bool {
    caller.only_app().is_none_or(|own| source_app == Some(own))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, delivering, retrying, delivered, dead or cancelled
    #[param(pattern = "^(pending|delivering|retrying|delivered|dead|cancelled)$")]
    status: Option<String>,
    source_app: Option<String>,
    target_app: Option<String>,
    /// Either the source or the target app.
    app: Option<String>,
    /// Tasks of one consumer.
    consumer_id: Option<String>,
    /// Tasks whose requests go to this host (`orders.example.com`, `[::1]`, or
    /// a URL, whose host is taken).
    endpoint_host: Option<String>,
    /// RFC 3339; tasks created at or after.
    created_after: Option<DateTime<Utc>>,
    /// RFC 3339; tasks created before.
    created_before: Option<DateTime<Utc>>,
    /// 1 to `api.max_page` (500 by default); 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}\.[0-9A-Za-z_-]{0,64}$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskListPage {
    pub items: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Present when the page was cut short: a filter no index serves (the
    /// delivered tasks of one host) is read for about 5 seconds per page,
    /// and tasks created before this time were not read yet. `next_cursor`
    /// goes on from there; the page may hold fewer tasks than `limit`, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
}

/// A task list's page size (50 by default) and where it starts.
pub(crate) fn list_page(
    state: &ApiState,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<(i64, Option<TaskCursor>), Problem> {
    let limit = limit.unwrap_or(50);
    if !(1..=state.config.max_page).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {}", state.config.max_page),
        ));
    }
    let cursor = match cursor {
        Some(text) => Some(TaskCursor::decode(text).ok_or_else(|| {
            Problem::bad_request(
                "invalid-query",
                "cursor is not one this API returned; start again without it",
            )
        })?),
        None => None,
    };
    Ok((limit, cursor))
}

fn parse_status(text: &str) -> Result<TaskStatus, Problem> {
    TaskStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        Problem::bad_request(
            "invalid-query",
            format!("status `{text}` is unknown; use one of {}", known.join(", ")),
        )
    })
}

/// List tasks, newest first, with filters and cursor pagination.
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks", body = TaskListPage),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    request: HttpRequest,
    query: QueryParams<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let mut query = query.0;
    if let Some(own) = caller(&request)?.only_app() {
        query.source_app = Some(own.to_string());
    }
    let (limit, cursor) = list_page(&state, query.limit, query.cursor.as_deref())?;
    let filter = TaskFilter {
        status: query.status.as_deref().map(parse_status).transpose()?,
        source_app: query.source_app,
        target_app: query.target_app,
        app: query.app,
        consumer_id: query.consumer_id,
        endpoint_host: query.endpoint_host.as_deref().map(EndpointHost::typed),
        created_after: query.created_after,
        created_before: query.created_before,
        produced_to: None,
        ids: None,
    };
    let page = TaskList::page(&state.store, &filter, cursor.as_ref(), limit).await?;
    Ok(HttpResponse::Ok().json(TaskListPage {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.encode()),
        stopped_at: page.stopped_at,
    }))
}

/// The task's raw event history, oldest first.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id"), PageQuery),
    responses(
        (status = 200, description = "The events", body = history::EventHistory),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    if caller.only_app().is_some() {
        let source_app = state.tasks.detail(&id).await?.and_then(|d| d.summary.source_app);
        if !visible(&caller, source_app.as_deref()) {
            return Err(Problem::not_found(format!("no task with id {id}")));
        }
    }
    let stored = state.tasks.events(&id).await?;
    history::answer(stored, "task", &id, &query.0, state.config.max_page)
}

/// Deliver a task again now (manual compensation): a dead, cancelled or
/// waiting task gets a fresh round of attempts. Refused (409) while an
/// attempt is in flight.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/retry", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task, due now", body = TaskDetail),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task was already delivered, or an attempt is in flight", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(shown(&state, &state.tasks.retry(&id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, for the record.
    pub reason: Option<String>,
}

/// Stop a task's retries. An attempt already in flight is not recalled.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body(content = Option<CancelRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The cancelled task", body = TaskDetail),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is already delivered, dead or cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<Option<CancelRequest>>,
) -> Result<HttpResponse, Problem> {
    let reason = body.0.unwrap_or_default().reason;
    Ok(shown(&state, &state.tasks.cancel(&id, reason).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// `dead` (the default) or `cancelled`.
    #[schema(pattern = "^(dead|cancelled)$")]
    pub status: Option<String>,
    pub source_app: Option<String>,
    pub target_app: Option<String>,
    pub app: Option<String>,
    pub consumer_id: Option<String>,
    /// Tasks whose requests go to this host (`orders.example.com`, `[::1]`, or
    /// a URL, whose host is taken).
    pub endpoint_host: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Most tasks to replay, oldest first; 1000 by default, at most
    /// `api.max_replay` (10,000 by default).
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// Count (and list) what the filter matches; replay nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayFailure {
    pub id: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOutcome {
    /// Tasks the filter matched in the task list.
    pub matched: usize,
    /// Ids of the matched tasks, oldest first: on a dry run only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_ids: Option<Vec<String>>,
    /// Tasks put back in delivery.
    pub retried: usize,
    pub task_ids: Vec<String>,
    /// Tasks no longer dead or cancelled when their turn came (replayed by a
    /// concurrent request, say): left as they are.
    pub skipped: Vec<ReplayFailure>,
    pub failed: Vec<ReplayFailure>,
}

/// Deliver again every dead (or cancelled) task matching a filter.
#[utoipa::path(
    post, path = "/v1/tasks/replay", tag = "tasks",
    request_body(content = Option<ReplayRequest>, description = "Optional: without it, every dead task (up to 1000)"),
    responses(
        (status = 200, description = "What was replayed", body = ReplayOutcome),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay(
    state: web::Data<ApiState>,
    body: JsonBody<Option<ReplayRequest>>,
) -> Result<HttpResponse, Problem> {
    let request = body.0.unwrap_or_default();
    let status = match request.status.as_deref() {
        None => TaskStatus::Dead,
        Some(text) => match parse_status(text)? {
            status @ (TaskStatus::Dead | TaskStatus::Cancelled) => status,
            other => {
                return Err(Problem::bad_request(
                    "invalid-filter",
                    format!("replay takes dead or cancelled tasks, not {other}"),
                ))
            }
        },
    };
    let limit = request.limit.unwrap_or(1_000);
    if !(1..=state.config.max_replay).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-filter",
            format!("limit must be between 1 and {}", state.config.max_replay),
        ));
    }
    let filter = TaskFilter {
        status: Some(status),
        source_app: request.source_app,
        target_app: request.target_app,
        app: request.app,
        consumer_id: request.consumer_id,
        endpoint_host: request.endpoint_host.as_deref().map(EndpointHost::typed),
        created_after: request.created_after,
        created_before: request.created_before,
        produced_to: None,
        ids: None,
    };
    let ids = TaskList::ids(&state.store, &filter, limit).await?;
    let matched = ids.len();
    let mut outcome = ReplayOutcome {
        matched,
        matched_ids: None,
        retried: 0,
        task_ids: Vec::with_capacity(matched),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    if request.dry_run {
        outcome.matched_ids = Some(ids);
        return Ok(HttpResponse::Ok().json(outcome));
    }
    for (id, result) in state.tasks.replay_many(ids).await {
        match result {
            Ok(()) => {
                outcome.retried += 1;
                outcome.task_ids.push(id);
            }
            Err(e @ TaskServiceError::Rejected(_)) => outcome.skipped.push(ReplayFailure {
                id,
                detail: e.to_string(),
            }),
            Err(e) => outcome.failed.push(ReplayFailure {
                id,
                detail: e.to_string(),
            }),
        }
    }
    Ok(HttpResponse::build(StatusCode::OK).json(outcome))
}

/// Deliver a dead or cancelled task again, optionally fixing its request
/// first (`url`, `headers`, `body` or `body_base64`). The change is recorded
/// with who made it; the original request stays in the task's history.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/replay", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body(content = Option<RequestEdit>, description = "Optional changes"),
    responses(
        (status = 200, description = "The task, due now", body = TaskDetail),
        (status = 400, description = "Not JSON, or a field of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is not dead or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The edited request is not valid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay_one(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<Option<RequestEdit>>,
) -> Result<HttpResponse, Problem> {
    Ok(shown(&state, &state.tasks.replay(&id, body.0).await?))
}
