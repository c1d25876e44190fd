//! Event histories (`/v1/{tasks,brokers,consumers,apps}/{id}/events`, and
//! `/v1/audit/{kind}/{id}` for what was deleted): who changed what, when.
//! Credentials inside payloads are masked on the way out.

use actix_web::{web, HttpResponse};
use bida_store::StoredEvent;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::json::QueryParams;
use crate::paging::{numeric_key, page, PageQuery};
use crate::problem::Problem;

/// Field names whose values are credentials, wherever they appear.
const SECRET_NAMES: [&str; 4] = ["password", "secret", "token", "api_key"];
const SECRET_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];
pub const MASK: &str = "***";

#[derive(Debug, Serialize, ToSchema)]
pub struct EventRecord {
    pub position: i64,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub payload: Value,
    /// Who made the change: `key_id`, `app_id`, `role`, `client_ip`.
    pub metadata: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventHistory {
    pub events: Vec<EventRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A page of the history of aggregate `id` of type `A` (`what` names it in a 404).
pub async fn of<A: cqrs_es::Aggregate>(
    state: &crate::ApiState,
    id: &str,
    query: &PageQuery,
    what: &str,
) -> Result<HttpResponse, Problem> {
    let stored = state.store.events_of(A::TYPE, id).await?;
    answer(stored, what, id, query, state.config.max_page)
}

/// A page of the history of one aggregate, oldest first; 404 when it has no events.
pub fn answer(
    stored: Vec<StoredEvent>,
    what: &str,
    id: &str,
    query: &PageQuery,
    max: i64,
) -> Result<HttpResponse, Problem> {
    if stored.is_empty() {
        return Err(Problem::not_found(format!("no {what} with id {id}")));
    }
    let stored = page(stored, |e| numeric_key(e.sequence), query, max)?;
    let events = stored
        .items
        .into_iter()
        .map(|e| {
            let mut payload = e
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(Value::Null);
            mask_secrets(&mut payload);
            EventRecord {
                position: e.position,
                sequence: e.sequence,
                payload,
                metadata: serde_json::from_str(&e.metadata).unwrap_or(Value::Null),
                event_type: e.event_type,
                event_version: e.event_version,
                recorded_at: e.recorded_at,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventHistory {
        events,
        next_cursor: stored.next_cursor,
    }))
}

/// What the audit trail keeps a history of.
#[derive(Clone, Copy, Debug, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    Tasks,
    Brokers,
    Consumers,
    Apps,
    Keys,
}

impl AuditKind {
    fn aggregate_type(self) -> &'static str {
        use bida_domain::{access, broker, consumer, task};
        match self {
            Self::Tasks => <task::CallbackTask as Aggregate>::TYPE,
            Self::Brokers => <broker::Broker as Aggregate>::TYPE,
            Self::Consumers => <consumer::Consumer as Aggregate>::TYPE,
            Self::Apps => <access::App as Aggregate>::TYPE,
            Self::Keys => <access::ApiKey as Aggregate>::TYPE,
        }
    }
}

/// The whole history of a task, broker, consumer, app or key, deleted or
/// not: a deleted one is gone from its own routes, its history stays here.
#[utoipa::path(get, path = "/v1/audit/{kind}/{id}", tag = "apps",
    params(("kind" = AuditKind, Path), ("id" = String, Path), PageQuery),
    responses((status = 200, body = EventHistory), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn audit(
    state: web::Data<crate::ApiState>,
    path: web::Path<(AuditKind, String)>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let (kind, id) = path.into_inner();
    let stored = state.store.events_of(kind.aggregate_type(), &id).await?;
    answer(stored, "history", &id, &query.0, state.config.max_page)
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// Masks credentials in a JSON document: values of fields named like one, and
/// the password of any URL.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                if is_secret_name(name) && !inner.is_null() {
                    *inner = Value::String(MASK.into());
                } else {
                    mask_secrets(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        Value::String(text) if text.contains('@') && text.contains("://") => {
            if let Ok(mut url) = url::Url::parse(text) {
                if url.password().is_some() && url.set_password(Some(MASK)).is_ok() {
                    *text = url.to_string();
                }
            }
        }
        _ => {}
    }
}

/// A task as answered: the values of credential headers masked, in its
/// request and in the message a delayed write carries.
pub fn shown_task(detail: &bida_domain::task::TaskDetail, redact: &[String]) -> Value {
    let mut value = serde_json::to_value(detail).unwrap_or(Value::Null);
    for headers in ["/request/headers", "/produce/message/headers"] {
        mask_headers(&mut value, headers, redact);
    }
    value
}

/// Masks the values of credential headers (and those of `redact`) in the
/// header object at `pointer`, if there is one.
pub fn mask_headers(value: &mut Value, pointer: &str, redact: &[String]) {
    if let Some(Value::Object(headers)) = value.pointer_mut(pointer) {
        for (name, inner) in headers.iter_mut() {
            let secret = SECRET_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name));
            if secret || redact.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                *inner = Value::String(MASK.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_masked_wherever_they_are() {
        let mut doc = json!({
            "spec": {"url": "amqp://guest:hunter2@mq:5672/%2f", "options": {"sasl.password": "p4ss"}},
            "request": {"headers": {"Authorization": "Bearer abc", "x-trace": "1"}},
            "list": [{"webhook_token": "t0k"}],
            "plain": "https://example.com/a@b"
        });
        mask_secrets(&mut doc);
        let text = doc.to_string();
        for secret in ["hunter2", "p4ss", "Bearer abc", "t0k"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("x-trace"));
        assert!(text.contains("https://example.com/a@b"));
    }
}
