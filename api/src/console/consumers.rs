//! Consumers: the list with their state and rates, a consumer's page with
//! its lag, nodes and history; pause, resume, stop, start and a policy form
//! whose changes the running consumer applies live.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bida_actors::consumer::ConsumerView;
use bida_domain::consumer::{ConsumerPatch, EndpointInput, PolicyInput};
use serde::Deserialize;

use super::charts::sparkline;
use super::session::ConsoleForm;
use super::{html, see_other, Chrome};
use crate::history::mask_secrets;
use crate::problem::Problem;
use crate::ApiState;
use bida_projections::{Dimension, Stats, StatsQuery, Step};
use chrono::{Duration as TimeDelta, Utc};
use std::collections::HashMap;

pub struct ConsumerLine {
    pub consumer: ConsumerView,
    /// Failed attempts of all attempts, in percent, over its life.
    pub failure_percent: String,
    /// Deliveries per hour over the last day, as SVG.
    pub sparkline: String,
}

#[derive(Template)]
#[template(path = "consumers.html")]
struct ConsumersPage {
    chrome: Chrome,
    consumers: Vec<ConsumerLine>,
}

pub async fn list(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "consumers")?;
    let mut consumers: Vec<ConsumerView> = state
        .consumers
        .list()
        .await?
        .into_iter()
        .filter(|c| !c.deleted)
        .collect();
    consumers.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let to = Utc::now();
    let from = to - TimeDelta::hours(24);
    let query = StatsQuery {
        dimension: Dimension::Consumer,
        key: None,
        step: Step::Hour,
        from,
        to,
    };
    let activity: HashMap<String, Vec<i64>> = Stats::series(&state.store, &query, 100)
        .await?
        .into_iter()
        .map(|series| {
            let mut hours = vec![0; 25];
            for point in &series.points {
                if let Some(slot) = usize::try_from((point.at - from).num_hours())
                    .ok()
                    .and_then(|h| hours.get_mut(h))
                {
                    *slot += point.counts.delivered;
                }
            }
            (series.key, hours)
        })
        .collect();
    let consumers = consumers
        .into_iter()
        .map(|consumer| {
            let counters = &consumer.counters;
            let attempts = counters.delivered + counters.failed_attempts;
            ConsumerLine {
                failure_percent: if attempts > 0 {
                    format!("{:.1} %", counters.failed_attempts as f64 * 100.0 / attempts as f64)
                } else {
                    "–".into()
                },
                sparkline: sparkline(
                    chrome.t.get("activity"),
                    activity.get(&consumer.id).map_or(&[][..], Vec::as_slice),
                ),
                consumer,
            }
        })
        .collect();
    Ok(html(&ConsumersPage { chrome, consumers }))
}

pub struct ChangeLine {
    pub at: String,
    pub event: String,
    pub who: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "consumer.html")]
struct ConsumerPage {
    chrome: Chrome,
    consumer: ConsumerView,
    /// What a viewer may see of the source (passwords never).
    source: String,
    history: Vec<ChangeLine>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct Notice {
    error: Option<String>,
}

pub async fn detail(
    request: HttpRequest,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "consumers")?;
    let consumer = state.consumers.view(&id).await?;
    if consumer.deleted {
        return Err(Problem::gone_to_history("consumer", &id, "consumers"));
    }
    let mut source = serde_json::to_value(&consumer.spec.source).unwrap_or_default();
    mask_secrets(&mut source);
    let history = state
        .store
        .events_of(<bida_domain::consumer::Consumer as cqrs_es::Aggregate>::TYPE, &id)
        .await?
        .into_iter()
        .rev()
        .take(50)
        .map(|event| {
            let metadata: serde_json::Value = serde_json::from_str(&event.metadata).unwrap_or_default();
            let mut payload: serde_json::Value = event
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            mask_secrets(&mut payload);
            let detail = payload[&event.event_type].to_string();
            ChangeLine {
                at: event.recorded_at.to_rfc3339(),
                who: metadata["key_id"].as_str().unwrap_or("bida").to_string(),
                detail: detail.chars().take(300).collect(),
                event: event.event_type,
            }
        })
        .collect();
    Ok(html(&ConsumerPage {
        chrome,
        source: source.to_string(),
        history,
        error: notice.into_inner().error,
        consumer,
    }))
}

fn back(id: &str, outcome: Result<(), Problem>) -> HttpResponse {
    match outcome {
        Ok(()) => see_other(&format!("/consumers/{id}")),
        Err(problem) => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("error", &problem.detail)
                .finish();
            see_other(&format!("/consumers/{id}?{query}"))
        }
    }
}

#[derive(Deserialize)]
pub struct StateForm {
    /// pause, resume, stop or start
    action: String,
}

pub async fn change_state(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<StateForm>,
) -> HttpResponse {
    let outcome = state
        .consumers
        .lifecycle(&id, &form.0.action)
        .await
        .map(drop)
        .map_err(Problem::from);
    back(&id, outcome)
}

/// The policy fields the form shows; an empty field stays as it is.
#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    rate_per_sec: String,
    #[serde(default)]
    max_attempts: String,
    #[serde(default)]
    timeout_ms: String,
}

fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<Option<T>, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Problem::bad_request("invalid-form", format!("{field} must be a whole number")))
}

pub async fn change_policy(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<PolicyForm>,
) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let policy = PolicyInput {
            concurrency: number(&form.concurrency, "concurrency")?,
            rate_per_sec: number(&form.rate_per_sec, "rate_per_sec")?,
            max_attempts: number(&form.max_attempts, "max_attempts")?,
            ..PolicyInput::default()
        };
        let endpoint = number::<u64>(&form.timeout_ms, "timeout_ms")?.map(|timeout_ms| EndpointInput {
            timeout_ms: Some(timeout_ms),
            ..EndpointInput::default()
        });
        let patch = ConsumerPatch {
            endpoint,
            policy: Some(policy),
        };
        state.consumers.patch(&id, patch).await?;
        Ok(())
    }
    .await;
    back(&id, outcome)
}
