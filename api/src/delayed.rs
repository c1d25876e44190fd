//! `/v1/delayed`: messages held until their time, then written to a broker
//! (`POST /v1/brokers/{id}/messages` with `deliver_at` or `delay_ms`).
//! Each is a callback task whose attempt is the write; these routes show
//! them in the producer's words (state, broker, destination, where it landed).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use bida_domain::access::Caller;
use bida_domain::task::{ProduceSpec, ProducedTo, TaskDetail, TaskStatus, TaskSummary};
use bida_projections::{TaskFilter, TaskList};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::access::caller;
use crate::json::QueryParams;
use crate::problem::Problem;
use crate::ApiState;

/// How long before its time a delayed message can no longer be cancelled.
const CANCEL_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/v1/delayed").route(web::get().to(list)))
        .service(
            web::resource("/v1/delayed/{id}")
                .route(web::get().to(detail))
                .route(web::delete().to(cancel)),
        );
}

/// Where a delayed message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DelayedState {
    /// Waiting for its time.
    Pending,
    /// Due, and being written now.
    Producing,
    /// A write failed; another is scheduled.
    Retrying,
    /// The broker confirmed it.
    Produced,
    /// Every write failed, or the broker is gone: a dead letter (replayable).
    Dead,
    Cancelled,
}

impl DelayedState {
    const ALL: [Self; 6] = [
        Self::Pending,
        Self::Producing,
        Self::Retrying,
        Self::Produced,
        Self::Dead,
        Self::Cancelled,
    ];

    fn of(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Pending => Self::Pending,
            TaskStatus::Delivering => Self::Producing,
            TaskStatus::Retrying => Self::Retrying,
            TaskStatus::Delivered => Self::Produced,
            TaskStatus::Dead => Self::Dead,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }

    fn status(self) -> TaskStatus {
        match self {
            Self::Pending => TaskStatus::Pending,
            Self::Producing => TaskStatus::Delivering,
            Self::Retrying => TaskStatus::Retrying,
            Self::Produced => TaskStatus::Delivered,
            Self::Dead => TaskStatus::Dead,
            Self::Cancelled => TaskStatus::Cancelled,
        }
    }

    fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }
}

/// A delayed message as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DelayedSummary {
    pub id: String,
    pub state: DelayedState,
    pub broker_id: String,
    /// The topic, subject, `exchange/routing_key`... it is written to.
    pub destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it was produced, dead-lettered or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Writes tried so far.
    pub attempt_count: u32,
    /// Where the broker put it (a partition and offset...), once produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub landed: Option<Value>,
    /// Why it was dead-lettered or cancelled, or why the last write failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DelayedSummary {
    /// The task as a delayed message; none for a task that writes no message.
    fn of(task: &TaskSummary) -> Option<Self> {
        let (broker_id, destination) = ProduceSpec::parse_locator(&task.url)?;
        let last = task.last_attempt.as_ref();
        Some(Self {
            id: task.id.clone(),
            state: DelayedState::of(task.status),
            broker_id: broker_id.to_string(),
            destination: destination.to_string(),
            source_app: task.source_app.clone(),
            deliver_at: task.deliver_at,
            created_at: task.created_at,
            finished_at: task.finished_at,
            attempt_count: task.attempt_count,
            landed: match task.status {
                TaskStatus::Delivered => last
                    .and_then(|a| a.response_excerpt.as_deref())
                    .and_then(|text| serde_json::from_str(text).ok()),
                _ => None,
            },
            reason: task.reason.clone().or_else(|| last.and_then(|a| a.error.clone())),
        })
    }
}

/// A delayed message with the message itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct DelayedMessage {
    #[serde(flatten)]
    pub summary: DelayedSummary,
    /// The message as it will be written: the kind's fields, `content_type`,
    /// `headers`, and the body as `body_base64`.
    #[schema(value_type = Object)]
    pub message: Value,
}

impl DelayedMessage {
    fn of(detail: &TaskDetail) -> Option<Self> {
        let produce = detail.produce.as_ref()?;
        let mut message = produce.message.clone();
        let body = detail.request.body.as_ref().map_or(&[][..], |b| b.as_bytes());
        message.insert(
            "body_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        );
        Some(Self {
            summary: DelayedSummary::of(&detail.summary)?,
            message: Value::Object(message),
        })
    }
}

/// A delayed message as answered: the values of credential headers masked.
fn shown(state: &ApiState, message: DelayedMessage) -> serde_json::Value {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    crate::history::mask_headers(&mut value, "/message/headers", &state.config.redact_headers);
    value
}

/// Whether a message of `source_app` is visible to the caller; another app's
/// is a 404 to a producer key, so that ids do not leak.
fn visible(caller: &Caller, source_app: Option<&str>) -> bool {
    caller.only_app().is_none_or(|own| source_app == Some(own))
}

async fn find(state: &ApiState, caller: &Caller, id: &str) -> Result<DelayedMessage, Problem> {
    state
        .tasks
        .detail(id)
        .await?
        .filter(|detail| visible(caller, detail.summary.source_app.as_deref()))
        .and_then(|detail| DelayedMessage::of(&detail))
        .ok_or_else(|| Problem::not_found(format!("no delayed message with id {id}")))
}

/// A delayed message: where it stands, where it goes, and the message.
#[utoipa::path(
    get, path = "/v1/delayed/{id}", tag = "delayed",
    params(("id" = String, Path, description = "The id the write answered")),
    responses(
        (status = 200, description = "The message", body = DelayedMessage),
        (status = 404, description = "No such delayed message", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(shown_delayed(&state, &caller(&request)?, &id).await?))
}

/// A delayed message as `caller` may see it.
pub(crate) async fn shown_delayed(state: &ApiState, caller: &Caller, id: &str) -> Result<Value, Problem> {
    Ok(shown(state, find(state, caller, id).await?))
}

/// Cancel a delayed message that is not due yet. From one second before
/// its time, and once produced, the answer is a 409 (`too-late`,
/// `invalid-state`): a node may be writing it, and what is in the broker
/// stays there. A 200 means it is never written.
#[utoipa::path(
    delete, path = "/v1/delayed/{id}", tag = "delayed",
    params(("id" = String, Path, description = "The id the write answered")),
    responses(
        (status = 200, description = "The message, cancelled", body = DelayedMessage),
        (status = 404, description = "No such delayed message", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Due within a second, already produced, or cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(cancel_delayed(&state, &caller(&request)?, &id).await?))
}

/// Cancels a delayed message of `caller`'s that is not due yet.
pub(crate) async fn cancel_delayed(state: &ApiState, caller: &Caller, id: &str) -> Result<Value, Problem> {
    find(state, caller, id).await?;
    let detail = state.tasks.cancel_unless_due(id, None, CANCEL_MARGIN).await?;
    let message =
        DelayedMessage::of(&detail).ok_or_else(|| Problem::not_found(format!("no delayed message with id {id}")))?;
    Ok(shown(state, message))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DelayedQuery {
    /// pending, producing, retrying, produced, dead or cancelled
    #[param(pattern = "^(pending|producing|retrying|produced|dead|cancelled)$")]
    state: Option<String>,
    /// Messages of one app (the app of the key that wrote them).
    app: Option<String>,
    /// Messages to one broker.
    broker_id: Option<String>,
    /// Messages to one destination (a topic, `exchange/routing_key`...).
    topic: Option<String>,
    /// 1 to `api.max_page` (500 by default); 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}\.[0-9A-Za-z_-]{0,64}$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DelayedPage {
    pub items: Vec<DelayedSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Delayed messages, newest first, by state, app, broker and destination.
#[utoipa::path(
    get, path = "/v1/delayed", tag = "delayed",
    params(DelayedQuery),
    responses(
        (status = 200, description = "A page of delayed messages", body = DelayedPage),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    request: HttpRequest,
    query: QueryParams<DelayedQuery>,
) -> Result<HttpResponse, Problem> {
    let mut query = query.0;
    if let Some(own) = caller(&request)?.only_app() {
        query.app = Some(own.to_string());
    }
    let (limit, cursor) = crate::tasks::list_page(&state, query.limit, query.cursor.as_deref())?;
    let status = match query.state.as_deref() {
        None => None,
        Some(text) => Some(
            DelayedState::ALL
                .into_iter()
                .find(|s| s.name() == text)
                .ok_or_else(|| {
                    let known: Vec<String> = DelayedState::ALL.iter().map(|s| s.name()).collect();
                    Problem::bad_request(
                        "invalid-query",
                        format!("state `{text}` is unknown; use one of {}", known.join(", ")),
                    )
                })?
                .status(),
        ),
    };
    let filter = TaskFilter {
        status,
        source_app: query.app,
        produced_to: Some(ProducedTo {
            broker_id: query.broker_id,
            destination: query.topic,
        }),
        ..TaskFilter::default()
    };
    let page = TaskList::page(&state.store, &filter, cursor.as_ref(), limit).await?;
    Ok(HttpResponse::Ok().json(DelayedPage {
        items: page.items.iter().filter_map(DelayedSummary::of).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}
