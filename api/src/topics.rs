//! `/v1/topics`: Bida's own topics (the built-in broker, `builtin`). A
//! consumer whose source is `{"broker_id": "builtin", "source": {"topic"}}`
//! subscribes to one.

use actix_web::{web, HttpRequest, HttpResponse};
use bida_actors::topics::{FoundMessage, TopicView};
use bida_domain::kinds::builtin::BROKER_ID;
use bida_domain::topic::{TopicInput, TopicName, TopicPatch};
use bida_store::topics::LogSearch;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::access::caller;
use crate::json::{JsonBody, QueryParams};
use crate::paging::{page, PageQuery};
use crate::problem::Problem;
use crate::{history, ApiState};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/topics")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/topics/{name}")
                .route(web::get().to(view))
                .route(web::patch().to(change))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/v1/topics/{name}/events").route(web::get().to(events)))
        .service(
            web::resource("/v1/topics/{name}/messages")
                .route(web::post().to(publish))
                .route(web::get().to(search)),
        );
}

/// A name from the path, checked like a new topic's.
fn topic_name(raw: &str) -> Result<TopicName, Problem> {
    raw.parse()
        .map_err(|e: String| Problem::not_found(format!("no topic named {raw}: {e}")))
}

#[derive(Serialize, ToSchema)]
pub struct TopicList {
    pub items: Vec<TopicView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Create a topic: `{"name": "orders", "partitions": 8, "retention": "3d"}`
/// (1 partition and 3 days by default).
#[utoipa::path(post, path = "/v1/topics", tag = "topics", request_body = TopicInput,
    responses(
        (status = 201, body = TopicView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(state: web::Data<ApiState>, body: JsonBody<TopicInput>) -> Result<HttpResponse, Problem> {
    let view = state.topics.create(body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/topics/{}", view.name)))
        .json(view))
}

/// Every topic with its offsets and subscriptions, a page at a time.
#[utoipa::path(get, path = "/v1/topics", tag = "topics", params(PageQuery), responses((status = 200, body = TopicList)))]
pub async fn list(state: web::Data<ApiState>, query: QueryParams<PageQuery>) -> Result<HttpResponse, Problem> {
    let items = state.topics.list().await?;
    let page = page(items, |t| t.name.to_string(), &query.0, state.config.max_page)?;
    Ok(HttpResponse::Ok().json(TopicList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/topics/{name}", tag = "topics", params(("name" = String, Path)),
    responses((status = 200, body = TopicView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn view(state: web::Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    Ok(HttpResponse::Ok().json(state.topics.view(name.as_str()).await?))
}

/// Change a topic: more `partitions` (never fewer), another `retention`.
#[utoipa::path(patch, path = "/v1/topics/{name}", tag = "topics", params(("name" = String, Path)), request_body = TopicPatch,
    responses(
        (status = 200, body = TopicView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Fewer partitions than the topic has", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change(
    state: web::Data<ApiState>,
    name: web::Path<String>,
    body: JsonBody<TopicPatch>,
) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    Ok(HttpResponse::Ok().json(state.topics.change(name.as_str(), body.0).await?))
}

/// Delete a topic and its messages; refused while consumers subscribe to it.
#[utoipa::path(delete, path = "/v1/topics/{name}", tag = "topics", params(("name" = String, Path)),
    responses(
        (status = 204),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(state: web::Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    state.topics.delete(name.as_str()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/topics/{name}/events", tag = "topics", params(("name" = String, Path), PageQuery),
    responses((status = 200, body = crate::history::EventHistory), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    state: web::Data<ApiState>,
    name: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    history::of::<bida_domain::topic::Topic>(&state, name.as_str(), &query.0, "topic").await
}

/// A search of a topic's messages; each field narrows it.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Messages with this key.
    #[param(max_length = 1024)]
    key: Option<String>,
    /// The message with this id (as publishing answered it).
    #[param(format = Uuid)]
    id: Option<String>,
    /// Messages whose body contains this text (1 to 256 characters): a scan
    /// of the time range, the day before `to` unless `from` says otherwise,
    /// and never more than the 7 days before `to`.
    #[param(min_length = 1, max_length = 256)]
    contains: Option<String>,
    /// Published at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Published before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the page before.
    #[param(pattern = "^[0-9]{1,16}_[0-9]{1,3}_[0-9]{1,18}$")]
    cursor: Option<String>,
}

/// A page of found messages, newest first.
#[derive(Serialize, ToSchema)]
pub struct FoundPage {
    pub items: Vec<FoundMessage>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How far back a body search looks unless `from` says, and at most.
const CONTAINS_DEFAULT: chrono::TimeDelta = chrono::TimeDelta::days(1);
const CONTAINS_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::days(7);

fn cursor_of(message: &FoundMessage) -> String {
    format!(
        "{}_{}_{}",
        message.published_at.timestamp_micros(),
        message.partition,
        message.offset
    )
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, i32, i64)> {
    let mut parts = text.split('_');
    let micros: i64 = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((DateTime::from_timestamp_micros(micros)?, partition, offset))
}

/// Find a topic's messages within its retention by key, id, text in the
/// body and time range, newest first, with where each subscription stands
/// with each (its task's status: delivered, dead, retrying..., or pending).
#[utoipa::path(get, path = "/v1/topics/{name}/messages", tag = "topics", params(("name" = String, Path), SearchQuery),
    responses(
        (status = 200, body = FoundPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    state: web::Data<ApiState>,
    name: web::Path<String>,
    query: QueryParams<SearchQuery>,
) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    let query = query.0;
    let invalid = |detail: &str| Problem::bad_request("invalid-query", detail.to_string());
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit must be between 1 and 100"));
    }
    let before = match &query.cursor {
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| invalid("the cursor is not one this search gave"))?),
        None => None,
    };
    let mut from = query.from;
    if let Some(text) = &query.contains {
        if text.is_empty() || text.chars().count() > 256 || text.contains('\0') {
            return Err(invalid("contains must be 1 to 256 characters"));
        }
        let to = query.to.unwrap_or_else(Utc::now);
        let start = from.unwrap_or(to - CONTAINS_DEFAULT).max(to - CONTAINS_AT_MOST);
        from = Some(start);
    }
    if query.key.as_deref().is_some_and(|k| k.len() > 1024 || k.contains('\0')) {
        return Err(invalid("key must be at most 1024 bytes"));
    }
    let id = match &query.id {
        Some(id) => Some(id.parse().map_err(|_| invalid("id must be a message id (a UUID)"))?),
        None => None,
    };
    let search = LogSearch {
        key: query.key,
        id,
        contains: query.contains,
        from,
        to: query.to,
        before,
        limit: limit + 1,
    };
    let mut items = state.topics.search(name.as_str(), &search).await?;
    let next_cursor = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items.last().map(cursor_of)
    });
    Ok(HttpResponse::Ok().json(FoundPage {
        items,
        next_cursor: next_cursor.flatten(),
    }))
}

/// Publish to a topic: one message (`key`, `headers`, `body` as JSON or
/// `body_base64`, `content_type`) or a batch (`{"messages": [...]}`, 1 to
/// 1,000), answered once every one is durable, with its partition, offset
/// and id; messages with the same key keep their order. With `deliver_at`
/// or `delay_ms` the messages are held and published when due (202, as for
/// `/v1/brokers/{id}/messages`).
#[utoipa::path(post, path = "/v1/topics/{name}/messages", tag = "topics", params(("name" = String, Path)),
    request_body = crate::brokers::ProduceRequest,
    responses(
        (status = 200, body = crate::brokers::ProduceResult),
        (status = 202, description = "Delayed: held until due", body = crate::brokers::DelayedAccepted),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn publish(
    state: web::Data<ApiState>,
    request: HttpRequest,
    name: web::Path<String>,
    body: JsonBody<Value>,
) -> Result<HttpResponse, Problem> {
    let name = topic_name(&name)?;
    let caller = caller(&request)?;
    if !caller.may_publish_on(name.as_str()) {
        return Err(crate::access::forbidden(format!(
            "this key publishes only on the topics it names, not on {name}"
        )));
    }
    state.topics.spec(name.as_str()).await?;
    Ok(
        crate::brokers::write_as(&state, caller.app_id, BROKER_ID, aimed_at(body.0, name.as_str())?)
            .await?
            .into(),
    )
}

/// The request with `topic` set on its message, or on each of its batch's.
fn aimed_at(mut body: Value, topic: &str) -> Result<Value, Problem> {
    let aim = |message: &mut Value, context: &str| match message {
        Value::Object(fields) if fields.contains_key("topic") => {
            Err(Problem::validation(bida_domain::ValidationErrors::single(
                format!("{context}topic"),
                "the topic is the one in the path; leave `topic` out",
            )))
        }
        Value::Object(fields) => {
            fields.insert("topic".into(), Value::String(topic.to_string()));
            Ok(())
        }
        _ => Ok(()), // the parser names what is wrong with it
    };
    match &mut body {
        Value::Object(fields) if fields.contains_key("messages") => {
            if let Some(Value::Array(messages)) = fields.get_mut("messages") {
                for (index, message) in messages.iter_mut().enumerate() {
                    aim(message, &format!("messages[{index}]."))?;
                }
            }
        }
        message => aim(message, "")?,
    }
    Ok(body)
}
