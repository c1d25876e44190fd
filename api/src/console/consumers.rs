//! Consumers: the list with their state and rates, a consumer's page with
//! its lag, nodes and history; pause, resume, stop, start and a policy form
//! whose changes the running consumer applies live.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bida_actors::consumer::ConsumerView;
use bida_actors::consumer::ResendRequest;
use bida_domain::consumer::{
    BreakerInput, ConsumerInput, ConsumerPatch, EndpointInput, OffsetReset, Ordering, PolicyInput, SourceInput,
};
use bida_domain::task::BackoffInput;
use bida_domain::{Expect, JsonExpectation, StatusSet};
use serde::Deserialize;

use super::charts::sparkline;
use super::i18n::{Lang, Tr};
use super::session::ConsoleForm;
use super::{back, given, history_lines, html, see_other, Chrome, HistoryLine, KindFields, Notice};
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
    let consumers = lines(&state, chrome.t).await?;
    Ok(html(&ConsumersPage { chrome, consumers }))
}

#[derive(Template)]
#[template(path = "consumers_live.html")]
struct ConsumersLive {
    chrome: LiveChrome,
    consumers: Vec<ConsumerLine>,
}

/// What the refreshed table needs of the page around it.
pub struct LiveChrome {
    pub t: Tr,
}

/// The consumer table alone, fetched again every few seconds by the page.
pub async fn live(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let t = Tr(Lang::of(&request));
    Ok(html(&ConsumersLive {
        consumers: lines(&state, t).await?,
        chrome: LiveChrome { t },
    }))
}

/// Every consumer with its failure rate and a day's activity, by name.
async fn lines(state: &ApiState, t: Tr) -> Result<Vec<ConsumerLine>, Problem> {
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
    Ok(consumers
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
                    t.get("activity"),
                    activity.get(&consumer.id).map_or(&[][..], Vec::as_slice),
                ),
                consumer,
            }
        })
        .collect())
}

#[derive(Template)]
#[template(path = "consumer.html")]
struct ConsumerPage {
    chrome: Chrome,
    consumer: ConsumerView,
    /// What a viewer may see of the source (passwords never).
    source: String,
    history: Vec<HistoryLine>,
    error: Option<String>,
    v: PolicyValues,
    /// What its kind can do: the buttons it cannot use are not shown.
    can: bida_domain::broker::Capabilities,
    /// A pull consumer's members and lanes.
    members: Option<bida_actors::pull::Members>,
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
    let mut events = state
        .store
        .events_of(<bida_domain::consumer::Consumer as cqrs_es::Aggregate>::TYPE, &id)
        .await?;
    // The latest 50 changes, newest first.
    events.reverse();
    events.truncate(50);
    let history = history_lines(events, &[]);
    let members = match consumer.spec.endpoint.pull() {
        Some(_) => Some(state.pulls.members(&id).await?),
        None => None,
    };
    Ok(html(&ConsumerPage {
        chrome,
        members,
        v: PolicyValues::of(&consumer),
        can: consumer.spec.source.kind().capabilities(),
        source: source.to_string(),
        history,
        error: notice.into_inner().error,
        consumer,
    }))
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
    back(&format!("/consumers/{id}"), outcome)
}

/// The values a policy form shows: a consumer's, or none for a new one.
#[derive(Default)]
pub struct PolicyValues {
    pub concurrency: String,
    pub rate_per_sec: String,
    pub max_attempts: String,
    pub timeout_ms: String,
    pub url: String,
    pub method: String,
    pub backoff_initial_ms: String,
    pub backoff_max_ms: String,
    pub backoff_multiplier: String,
    pub retry_on: String,
    pub expect_status: String,
    pub expect_body_contains: String,
    pub expect_json_pointer: String,
    /// The value as JSON (`0`, `"ok"`, `true`).
    pub expect_json_equals: String,
    pub ordering: String,
    pub breaker_failures: String,
    pub breaker_open_ms: String,
}

impl PolicyValues {
    fn of(consumer: &ConsumerView) -> Self {
        let policy = &consumer.spec.policy;
        let endpoint = &consumer.spec.endpoint;
        Self {
            concurrency: policy.concurrency.to_string(),
            rate_per_sec: policy.rate_per_sec.to_string(),
            max_attempts: policy.max_attempts.to_string(),
            // A pull endpoint has none of these: left empty, the form keeps it as it is.
            timeout_ms: endpoint.http().map(|h| h.timeout_ms.to_string()).unwrap_or_default(),
            url: endpoint.http().map(|h| h.url.clone()).unwrap_or_default(),
            method: endpoint
                .http()
                .map(|h| h.method.as_str().to_string())
                .unwrap_or_default(),
            backoff_initial_ms: policy.backoff.initial_ms.to_string(),
            backoff_max_ms: policy.backoff.max_ms.to_string(),
            backoff_multiplier: policy.backoff.multiplier.to_string(),
            retry_on: policy.retry_on.patterns().join(", "),
            expect_status: policy
                .expect
                .status
                .as_ref()
                .map(|s| s.patterns().join(", "))
                .unwrap_or_default(),
            expect_body_contains: policy.expect.body_contains.clone().unwrap_or_default(),
            expect_json_pointer: policy
                .expect
                .json
                .as_ref()
                .map(|j| j.pointer.clone())
                .unwrap_or_default(),
            expect_json_equals: policy
                .expect
                .json
                .as_ref()
                .map(|j| j.equals.to_string())
                .unwrap_or_default(),
            ordering: match policy.ordering {
                Ordering::Key => "key".into(),
                Ordering::None => "none".into(),
            },
            breaker_failures: policy.breaker.failures.to_string(),
            breaker_open_ms: policy.breaker.open_ms.to_string(),
        }
    }
}

/// The consumer form's fields (all text, as forms send them); an empty
/// field takes the current value (or the default, for a new consumer).
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct PolicyForm {
    concurrency: String,
    rate_per_sec: String,
    max_attempts: String,
    timeout_ms: String,
    url: String,
    method: String,
    backoff_initial_ms: String,
    backoff_max_ms: String,
    backoff_multiplier: String,
    /// Status patterns, separated by commas (`5xx, 429`).
    retry_on: String,
    expect_status: String,
    expect_body_contains: String,
    /// A field of the JSON response (`/code` or `data.code`) ...
    expect_json_pointer: String,
    /// ... and the value it must equal, as JSON; text that is not JSON is
    /// taken as a string (`ok` is `"ok"`).
    expect_json_equals: String,
    /// none or key
    ordering: String,
    breaker_failures: String,
    breaker_open_ms: String,
}

fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<Option<T>, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Problem::bad_request("invalid-form", format!("{field} must be a number")))
}

fn statuses(text: &str, field: &str) -> Result<Option<StatusSet>, Problem> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    StatusSet::parse(text.split(','))
        .map(Some)
        .map_err(|e| Problem::bad_request("invalid-form", format!("{field}: {e}")))
}

impl PolicyForm {
    fn policy(&self) -> Result<PolicyInput, Problem> {
        let backoff = BackoffInput {
            initial_ms: number(&self.backoff_initial_ms, "backoff_initial_ms")?,
            max_ms: number(&self.backoff_max_ms, "backoff_max_ms")?,
            multiplier: number(&self.backoff_multiplier, "backoff_multiplier")?,
            jitter: None,
        };
        let breaker = BreakerInput {
            failures: number(&self.breaker_failures, "breaker_failures")?,
            open_ms: number(&self.breaker_open_ms, "breaker_open_ms")?,
        };
        let ordering = match self.ordering.as_str() {
            "" => None,
            "key" => Some(Ordering::Key),
            "none" => Some(Ordering::None),
            other => {
                return Err(Problem::bad_request(
                    "invalid-form",
                    format!("no ordering named {other}"),
                ))
            }
        };
        Ok(PolicyInput {
            concurrency: number(&self.concurrency, "concurrency")?,
            rate_per_sec: number(&self.rate_per_sec, "rate_per_sec")?,
            max_attempts: number(&self.max_attempts, "max_attempts")?,
            backoff: Some(backoff),
            retry_on: statuses(&self.retry_on, "retry_on")?,
            // The form shows the whole expectation: every field empty is
            // "any 2xx" (and clears one a consumer had).
            expect: Some(self.expect()?),
            ordering,
            breaker: Some(breaker),
        })
    }

    fn expect(&self) -> Result<Expect, Problem> {
        let json = match (self.expect_json_pointer.trim(), self.expect_json_equals.trim()) {
            ("", "") => None,
            ("", _) => {
                return Err(Problem::bad_request(
                    "invalid-form",
                    "expect_json_pointer: name the response field the value is for",
                ))
            }
            (pointer, equals) => Some(JsonExpectation {
                pointer: pointer.to_string(),
                equals: serde_json::from_str(equals).unwrap_or_else(|_| serde_json::Value::String(equals.to_string())),
            }),
        };
        Ok(Expect {
            status: statuses(&self.expect_status, "expect_status")?,
            body_contains: given(&self.expect_body_contains),
            json,
        })
    }

    fn endpoint(&self) -> Result<EndpointInput, Problem> {
        Ok(EndpointInput {
            url: given(&self.url),
            method: given(&self.method),
            timeout_ms: number(&self.timeout_ms, "timeout_ms")?,
            ..EndpointInput::default()
        })
    }
}

pub async fn change_policy(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<PolicyForm>,
) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let patch = ConsumerPatch {
            endpoint: Some(form.endpoint()?),
            policy: Some(form.policy()?),
        };
        state.consumers.patch(&id, patch).await?;
        Ok(())
    }
    .await;
    back(&format!("/consumers/{id}"), outcome)
}

#[derive(Template)]
#[template(path = "consumer_new.html")]
struct NewConsumerPage {
    chrome: Chrome,
    v: PolicyValues,
    brokers: Vec<(String, String)>,
    apps: Vec<(String, String)>,
    kinds: Vec<KindFields>,
    error: Option<String>,
}

pub async fn new_consumer(
    request: HttpRequest,
    state: web::Data<ApiState>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "consumers")?;
    let mut brokers: Vec<_> = state.brokers.list().await?.into_iter().filter(|b| !b.deleted).collect();
    // The operator's own brokers first: the form selects the first.
    brokers.sort_by_key(|b| !b.kind.registered());
    let brokers = brokers
        .into_iter()
        .map(|b| (b.id, format!("{} ({})", b.name, b.kind.as_str())))
        .collect();
    let apps = state.access.apps().await?.into_iter().map(|a| (a.id, a.name)).collect();
    Ok(html(&NewConsumerPage {
        chrome,
        v: PolicyValues::default(),
        brokers,
        apps,
        kinds: KindFields::sources(),
        error: notice.into_inner().error,
    }))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    broker_id: String,
    #[serde(default)]
    app_id: String,
    #[serde(flatten)]
    policy: PolicyForm,
    /// The source fields of every kind (`<kind>.<field>`); those of the
    /// broker's kind are taken.
    #[serde(flatten)]
    source: HashMap<String, String>,
}

pub async fn create(state: web::Data<ApiState>, form: ConsoleForm<CreateForm>) -> HttpResponse {
    let form = form.0;
    let created = async {
        let kind = state.brokers.view(&form.broker_id, false).await?.kind;
        let source = SourceInput(
            KindFields {
                kind,
                fields: kind.source_form(),
            }
            .values(&form.source),
        );
        let input = ConsumerInput {
            name: form.name,
            broker_id: form.broker_id,
            source,
            endpoint: form.policy.endpoint()?,
            policy: form.policy.policy()?,
            app_id: Some(form.app_id).filter(|a| !a.is_empty()),
        };
        Ok::<_, Problem>(state.consumers.create(input).await?)
    }
    .await;
    match created {
        Ok(view) => see_other(&format!("/consumers/{}", view.id)),
        Err(problem) => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("error", &problem.detail)
                .finish();
            see_other(&format!("/consumers/new?{query}"))
        }
    }
}

#[derive(Deserialize)]
pub struct OffsetForm {
    /// earliest, latest or timestamp
    to: String,
    /// `2026-12-03T10:00` (a datetime-local field, UTC)
    #[serde(default)]
    timestamp: String,
}

pub async fn reset_offsets(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<OffsetForm>,
) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let reset = match form.to.as_str() {
            "earliest" => OffsetReset::Earliest,
            "latest" => OffsetReset::Latest,
            "timestamp" => {
                let at = chrono::NaiveDateTime::parse_from_str(&form.timestamp, "%Y-%m-%dT%H:%M")
                    .map_err(|_| Problem::bad_request("invalid-form", "the time is like 2026-12-03T10:00 (UTC)"))?;
                OffsetReset::Timestamp {
                    timestamp: at.and_utc(),
                }
            }
            other => return Err(Problem::bad_request("invalid-form", format!("no reset to {other}"))),
        };
        state.consumers.reset_offsets(&id, reset).await?;
        Ok(())
    }
    .await;
    back(&format!("/consumers/{id}"), outcome)
}

#[derive(Deserialize)]
pub struct ResendForm {
    topic: String,
    partition: String,
    from: String,
    to: String,
}

pub async fn resend(state: web::Data<ApiState>, id: web::Path<String>, form: ConsoleForm<ResendForm>) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let request = ResendRequest {
            task_id: None,
            topic: Some(form.topic.trim().to_string()),
            partition: number(&form.partition, "partition")?,
            from: number(&form.from, "from")?,
            to: number(&form.to, "to")?,
        };
        state.consumers.resend(&id, request).await?;
        Ok(())
    }
    .await;
    back(&format!("/consumers/{id}"), outcome)
}

#[derive(Deserialize)]
pub struct LaneForm {
    key: String,
}

pub async fn replay_lane(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<LaneForm>,
) -> HttpResponse {
    let outcome = state
        .consumers
        .replay_lane(&id, &form.0.key, std::time::Duration::from_secs(5))
        .await
        .map(drop)
        .map_err(Problem::from);
    back(&format!("/consumers/{id}"), outcome)
}
