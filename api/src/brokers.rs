//! `/v1/brokers`: register the MQ clusters consumers read from, look inside them.

use actix_web::{web, HttpRequest, HttpResponse};
use bida_actors::brokers::{BrokerPatch, BrokerView};
use bida_actors::delayed::Submitted;
use bida_domain::broker::BrokerSpec;
use serde::Serialize;
use utoipa::ToSchema;

use crate::access::caller;
use crate::json::{JsonBody, QueryParams};
use crate::paging::{page, PageQuery};
use crate::problem::Problem;
use crate::{history, ApiState};
use bida_domain::access::Caller;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/brokers")
                .route(web::post().to(register))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/brokers/{id}")
                .route(web::get().to(view))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/v1/brokers/{id}/events").route(web::get().to(events)))
        .service(web::resource("/v1/brokers/{id}/offline").route(web::post().to(offline)))
        .service(web::resource("/v1/brokers/{id}/online").route(web::post().to(online)))
        .service(web::resource("/v1/brokers/{id}/messages").route(web::post().to(produce)));
}

#[derive(Serialize, ToSchema)]
pub struct BrokerList {
    pub items: Vec<BrokerView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Register a broker: `{"name", "kind": "rabbitmq", "url"}` or `{"name", "kind": "kafka", "bootstrap_servers"}`.
#[utoipa::path(post, path = "/v1/brokers", tag = "brokers", request_body = BrokerSpec,
    responses(
        (status = 201, body = BrokerView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(state: web::Data<ApiState>, body: JsonBody<BrokerSpec>) -> Result<HttpResponse, Problem> {
    let view = state.brokers.register(body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/brokers/{}", view.id)))
        .json(view))
}

/// Every broker (without looking inside them), a page at a time.
#[utoipa::path(get, path = "/v1/brokers", tag = "brokers", params(PageQuery), responses((status = 200, body = BrokerList)))]
pub async fn list(state: web::Data<ApiState>, query: QueryParams<PageQuery>) -> Result<HttpResponse, Problem> {
    let items = state.brokers.list().await?.into_iter().filter(|b| !b.deleted).collect();
    let page = page(items, |b| b.id.clone(), &query.0, state.config.max_page)?;
    Ok(HttpResponse::Ok().json(BrokerList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// A broker, its health (reachable now?) and what is inside it: Kafka topics
/// with partitions and offsets, RabbitMQ queues with message and consumer counts.
#[utoipa::path(get, path = "/v1/brokers/{id}", tag = "brokers", params(("id" = String, Path)),
    responses((status = 200, body = BrokerView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn view(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    let view = state.brokers.view(&id, true).await?;
    if view.deleted {
        return Err(Problem::gone_to_history("broker", &id, "brokers"));
    }
    Ok(HttpResponse::Ok().json(view))
}

/// Edit a broker's name or connection; consumers on it reconnect.
#[utoipa::path(patch, path = "/v1/brokers/{id}", tag = "brokers", params(("id" = String, Path)), request_body = BrokerPatch,
    responses((status = 200, body = BrokerView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<BrokerPatch>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.brokers.update(&id, body.0).await?))
}

/// Delete a broker no consumer uses.
#[utoipa::path(delete, path = "/v1/brokers/{id}", tag = "brokers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Consumers still use it", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    state.brokers.delete(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Take a broker offline: its consumers stop cleanly on every node.
#[utoipa::path(post, path = "/v1/brokers/{id}/offline", tag = "brokers", params(("id" = String, Path)),
    responses((status = 200, body = BrokerView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn offline(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.brokers.set_online(&id, false).await?))
}

/// Bring a broker back online: its running consumers start again.
#[utoipa::path(post, path = "/v1/brokers/{id}/online", tag = "brokers", params(("id" = String, Path)),
    responses((status = 200, body = BrokerView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn online(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.brokers.set_online(&id, true).await?))
}

/// The broker's history: who changed what, when (passwords masked).
#[utoipa::path(get, path = "/v1/brokers/{id}/events", tag = "brokers", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = history::EventHistory), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    if state.brokers.view(&id, false).await?.deleted {
        return Err(Problem::gone_to_history("broker", &id, "brokers"));
    }
    history::of::<bida_domain::broker::Broker>(&state, &id, &query.0, "broker").await
}

/// What a write answers: where each message landed, in the request's order.
#[derive(Serialize, ToSchema)]
pub struct ProduceResult {
    pub messages: Vec<bida_actors::produce::Written>,
}

/// A message to write: `body` (JSON) or `body_base64` (bytes), an optional
/// `content_type` and `headers`, and the broker kind's own fields (Kafka:
/// `topic`, `key`, `partition`; RabbitMQ: `exchange`, `routing_key`,
/// `message_id`, `correlation_id`, `priority`, `expiration_ms`, `persistent`;
/// NATS: `subject`, `msg_id`; Redis: `stream`, `key`, `id`, `maxlen`; MQTT:
/// `topic`, `qos`, `retain`, `key`, `message_id`, `expiry_seconds`;
/// ActiveMQ: `queue`, `virtual_topic` or `topic`, `key`, `correlation_id`,
/// `priority`, `expiration_ms`, `persistent`; RocketMQ: `topic`, `tags`,
/// `keys`, `sharding_key`). Or a batch: `{"messages": [ ... ]}` (1 to 1,000).
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ProduceRequest {
    /// The body as JSON, written as its JSON text.
    #[schema(value_type = Option<Object>)]
    body: Option<serde_json::Value>,
    /// The body as bytes, base64-encoded.
    body_base64: Option<String>,
    /// Defaults to application/json for `body`, application/octet-stream for `body_base64`.
    content_type: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(flatten)]
    #[schema(inline, value_type = Object)]
    target: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A write held until its time: the delayed messages' ids, in the request's order.
#[derive(Serialize, ToSchema)]
pub struct DelayedAccepted {
    /// The message's id, when the request was one message (not a batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub messages: Vec<DelayedId>,
}

#[derive(Serialize, ToSchema)]
pub struct DelayedId {
    pub index: usize,
    /// For `GET` and `DELETE /v1/delayed/{id}`.
    pub id: String,
    pub deliver_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Write messages to the broker (Kafka: acks=all; RabbitMQ: publisher
/// confirms, mandatory): answered once the broker confirmed every one, with
/// where each landed. A broker that is down or does not confirm answers 503
/// with the messages it did confirm (`written`); the others were not written.
///
/// With `deliver_at` (RFC 3339) or `delay_ms` on the message (on every
/// message of a batch), the messages are held durably and written when due:
/// the answer is 202 with their ids (`/v1/delayed/{id}` shows and cancels
/// them). A delayed write that fails is retried with the task defaults'
/// backoff, then dead-lettered.
#[utoipa::path(post, path = "/v1/brokers/{id}/messages", tag = "brokers", params(("id" = String, Path)),
    request_body = ProduceRequest,
    responses(
        (status = 200, body = ProduceResult),
        (status = 202, description = "Delayed: held until due", body = DelayedAccepted),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn produce(
    state: web::Data<ApiState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<serde_json::Value>,
) -> Result<HttpResponse, Problem> {
    let caller = caller(&request)?;
    Ok(write(&state, &caller, &id, body.0).await?.into())
}

/// A write done now, or held until due.
pub(crate) enum Produced {
    Now(ProduceResult),
    Delayed(DelayedAccepted),
}

impl From<Produced> for HttpResponse {
    fn from(produced: Produced) -> Self {
        match produced {
            Produced::Now(result) => HttpResponse::Ok().json(result),
            Produced::Delayed(accepted) => HttpResponse::Accepted().json(accepted),
        }
    }
}

/// Writes messages to broker `id` for `caller` (a key of an app writes as its app).
pub(crate) async fn write(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    body: serde_json::Value,
) -> Result<Produced, Problem> {
    if !caller.may_write_to_brokers() {
        return Err(crate::access::forbidden(
            "this key publishes only on the topics it names: POST /v1/topics/{name}/messages",
        ));
    }
    write_as(state, caller.app_id.clone(), id, body).await
}

/// Writes to broker `id` now, or holds the write until due.
pub(crate) async fn write_as(
    state: &ApiState,
    app: Option<String>,
    id: &str,
    body: serde_json::Value,
) -> Result<Produced, Problem> {
    match state.delayed.submit(id, app, body).await? {
        Submitted::Now(request) => {
            let messages = state.producers.produce(id, request).await?;
            Ok(Produced::Now(ProduceResult { messages }))
        }
        Submitted::Delayed { tasks, batch } => {
            let messages: Vec<DelayedId> = tasks
                .into_iter()
                .enumerate()
                .map(|(index, task)| DelayedId {
                    index,
                    id: task.id,
                    deliver_at: task.deliver_at,
                })
                .collect();
            Ok(Produced::Delayed(DelayedAccepted {
                id: (!batch).then(|| messages.first().map(|m| m.id.clone())).flatten(),
                messages,
            }))
        }
    }
}
