//! Tasks and dead letters: the filtered list, a task's page (its request,
//! every attempt, who changed what), and retry, cancel, edit and replay.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bida_domain::task::{
    attempts_with_requests, AttemptRecord, DeliveryRequest, EndpointHost, RequestEdit, TaskDetail, TaskEvent,
    TaskStatus, TaskSummary,
};
use bida_projections::{TaskCursor, TaskFilter, TaskList};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::session::{ConsoleForm, Empty};
use super::{back, given, history_lines, html, see_other, Chrome, HistoryLine, Notice};
use crate::history::MASK;
use crate::problem::Problem;
use crate::ApiState;

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// A task id, message id (`webhook-id`), idempotency key, or text of a
    /// recent task's body.
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    consumer_id: String,
    #[serde(default)]
    endpoint_host: String,
    /// A day (`2026-12-03`), from the form's date fields.
    #[serde(default)]
    created_after: String,
    #[serde(default)]
    created_before: String,
    cursor: Option<String>,
    /// What a bulk replay did (shown once after it).
    done: Option<String>,
}

/// The form's values, as shown again above the list.
pub struct Filters {
    pub q: String,
    pub status: String,
    pub app: String,
    pub consumer_id: String,
    pub endpoint_host: String,
    pub created_after: String,
    pub created_before: String,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    chrome: Chrome,
    filters: Filters,
    statuses: Vec<&'static str>,
    tasks: Vec<TaskSummary>,
    /// The next page's address, with the same filters.
    next: Option<String>,
    /// Where reading stopped when the page was cut short (no index serves the filter).
    stopped_at: Option<DateTime<Utc>>,
    /// Dead or cancelled tasks are listed: they may be replayed together.
    replayable: bool,
    replay_link: String,
    done: Option<String>,
    /// Which search found the tasks listed (a word key), if one ran.
    searched: Option<&'static str>,
}

fn day(text: &str, field: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Some(d.and_utc()))
        .ok_or_else(|| Problem::bad_request("invalid-query", format!("{field} is a day like 2026-12-03")))
}

pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "tasks")?;
    let mut query = query.into_inner();
    let query_done = query.done.take();
    let mut filter = filter_of(&query)?;
    let cursor = query.cursor.as_deref().and_then(TaskCursor::decode);
    let mut searched = None;
    let q = query.q.trim();
    if !q.is_empty() {
        filter.ids = Some(known_ids(&state, q, filter.app.as_deref()).await?);
        searched = Some("search_exact");
    }
    let mut page = TaskList::page(&state.store, &filter, cursor.as_ref(), PAGE).await?;
    if !q.is_empty() && page.items.is_empty() && cursor.is_none() {
        // Not an id or a key: text in the body of a recent task.
        let since = chrono::Utc::now() - BODY_SEARCH_WINDOW;
        match state
            .store
            .tasks_whose_body_contains(q, since, BODY_SEARCH_LIMIT, BODY_SEARCH_BUDGET)
            .await
        {
            Ok(ids) => {
                filter.ids = Some(ids);
                searched = Some("search_body");
                page = TaskList::page(&state.store, &filter, None, PAGE).await?;
            }
            Err(e) => {
                tracing::info!(error = %e, "a body search was cut off");
                searched = Some("search_cut");
            }
        }
    }
    let filters = Filters::from(query);
    let next = page.next_cursor.map(|cursor| {
        let mut link = filters.query();
        link.append_pair("cursor", &cursor.encode());
        format!("/tasks?{}", link.finish())
    });
    Ok(html(&TasksPage {
        replayable: matches!(filter.status, Some(TaskStatus::Dead | TaskStatus::Cancelled)),
        replay_link: format!("/tasks/replay?{}", filters.query().finish()),
        chrome,
        filters,
        statuses: TaskStatus::ALL.iter().map(|s| s.as_str()).collect(),
        tasks: page.items,
        next,
        stopped_at: page.stopped_at,
        done: query_done,
        searched,
    }))
}

/// Recent tasks a body search reads (their days' partitions only).
const BODY_SEARCH_WINDOW: chrono::Duration = chrono::Duration::hours(24);
const BODY_SEARCH_LIMIT: i64 = 200;
/// Longest a body search may take before it gives up.
const BODY_SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// The tasks `text` can name exactly, each found by its primary key: a task
/// id; an API task's message id (its id); the task an `Idempotency-Key`
/// names for the app filtered on, each app tasks name, or none; the task a consumer
/// made of a message id, for each consumer and each of its offset resets.
async fn known_ids(state: &ApiState, text: &str, app: Option<&str>) -> Result<Vec<String>, Problem> {
    let mut ids = vec![text.to_string()];
    // Apps as tasks name them (registered apps' ids, and free names).
    let mut apps: Vec<String> = bida_projections::Stats::overview(&state.store)
        .await?
        .apps
        .into_iter()
        .map(|a| a.app)
        .collect();
    apps.extend(app.map(str::to_string));
    apps.push(String::new());
    ids.extend(apps.iter().map(|app| bida_actors::idempotent_task_id(app, text)));
    for (consumer_id, consumer, _) in state.store.load_all::<bida_domain::consumer::Consumer>().await? {
        for epoch in 0..=consumer.resets() {
            ids.push(consumer.task_id(&consumer_id, epoch, text));
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn filter_of(query: &ListQuery) -> Result<TaskFilter, Problem> {
    Ok(TaskFilter {
        status: TaskStatus::parse(&query.status),
        app: given(&query.app),
        consumer_id: given(&query.consumer_id),
        endpoint_host: given(&query.endpoint_host).as_deref().map(EndpointHost::typed),
        created_after: day(&query.created_after, "created_after")?,
        created_before: day(&query.created_before, "created_before")?,
        ..TaskFilter::default()
    })
}

impl From<ListQuery> for Filters {
    fn from(query: ListQuery) -> Self {
        Self {
            q: query.q,
            status: query.status,
            app: query.app,
            consumer_id: query.consumer_id,
            endpoint_host: query.endpoint_host,
            created_after: query.created_after,
            created_before: query.created_before,
        }
    }
}

impl Filters {
    /// The filters as a query string (empty ones left out).
    fn query(&self) -> form_urlencoded::Serializer<'static, String> {
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("status", &self.status),
            ("app", &self.app),
            ("consumer_id", &self.consumer_id),
            ("endpoint_host", &self.endpoint_host),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
        ] {
            if !value.is_empty() {
                link.append_pair(name, value);
            }
        }
        link
    }
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ReplayPage {
    chrome: Chrome,
    filters: Filters,
    /// Tasks the filter matches now, up to `limit`.
    count: usize,
    limit: i64,
}

/// Bulk replay, step one: how many tasks the filter would replay, and a
/// button to confirm.
pub async fn replay_preview(
    request: HttpRequest,
    state: web::Data<ApiState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "tasks")?;
    let query = query.into_inner();
    let filter = replayable_filter(&query)?;
    let limit = state.config.max_replay;
    let count = TaskList::ids(&state.store, &filter, limit).await?.len();
    Ok(html(&ReplayPage {
        chrome,
        filters: Filters::from(query),
        count,
        limit,
    }))
}

/// Bulk replay covers dead letters (the default) and cancelled tasks only.
fn replayable_filter(query: &ListQuery) -> Result<TaskFilter, Problem> {
    let mut filter = filter_of(query)?;
    match filter.status {
        None => filter.status = Some(TaskStatus::Dead),
        Some(TaskStatus::Dead | TaskStatus::Cancelled) => {}
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-filter",
                format!("replay takes dead or cancelled tasks, not {other}"),
            ))
        }
    }
    Ok(filter)
}

/// Bulk replay, step two: replays what the filter matches now.
pub async fn replay_many(state: web::Data<ApiState>, form: ConsoleForm<ListQuery>) -> Result<HttpResponse, Problem> {
    let query = form.0;
    let filter = replayable_filter(&query)?;
    let ids = TaskList::ids(&state.store, &filter, state.config.max_replay).await?;
    let mut replayed = 0;
    let mut left = 0;
    for (_, outcome) in state.tasks.replay_many(ids).await {
        match outcome {
            Ok(()) => replayed += 1,
            Err(_) => left += 1,
        }
    }
    let mut link = Filters::from(query).query();
    link.append_pair("done", &format!("{replayed} replayed, {left} left as they were"));
    Ok(see_other(&format!("/tasks?{}", link.finish())))
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    task: TaskDetail,
    headers: Vec<(String, String)>,
    body: String,
    /// Every attempt with the request it sent, oldest first.
    attempts: Vec<SentAttempt>,
    history: Vec<HistoryLine>,
    /// Dead or cancelled: it may be delivered again.
    replayable: bool,
    /// Not finished: it may be cancelled.
    cancellable: bool,
    error: Option<String>,
}

pub async fn detail(
    request: HttpRequest,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "tasks")?;
    let task = state
        .tasks
        .detail(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no task with id {id}")))?;
    let redact = &state.config.redact_headers;
    let headers = redacted(&task.request, redact).collect();
    let body = body_text(&task.request);
    let stored = state.tasks.events(&id).await?;
    let events: Vec<TaskEvent> = stored.iter().filter_map(|e| e.decode().ok()).collect();
    let attempts = attempts_with_requests(&events)
        .into_iter()
        .map(|(attempt, sent)| SentAttempt::of(attempt, &sent, &task.summary.message_id, redact))
        .collect();
    let history = history_lines(stored, &["spec", "request"]);
    let status = task.summary.status;
    Ok(html(&TaskPage {
        chrome,
        headers,
        body,
        attempts,
        history,
        replayable: matches!(status, TaskStatus::Dead | TaskStatus::Cancelled),
        cancellable: !matches!(status, TaskStatus::Delivered | TaskStatus::Dead | TaskStatus::Cancelled),
        error: notice.into_inner().error,
        task,
    }))
}

pub async fn retry(state: web::Data<ApiState>, id: web::Path<String>, _form: ConsoleForm<Empty>) -> HttpResponse {
    let outcome = state.tasks.retry(&id).await.map(drop).map_err(Problem::from);
    back(&format!("/tasks/{id}"), outcome)
}

#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    reason: String,
}

pub async fn cancel(state: web::Data<ApiState>, id: web::Path<String>, form: ConsoleForm<CancelForm>) -> HttpResponse {
    let outcome = state
        .tasks
        .cancel(&id, given(&form.0.reason))
        .await
        .map(drop)
        .map_err(Problem::from);
    back(&format!("/tasks/{id}"), outcome)
}

/// A request's headers as the page shows them: credentials masked.
fn redacted<'a>(
    request: &'a bida_domain::task::DeliveryRequest,
    redact: &'a [String],
) -> impl Iterator<Item = (String, String)> + 'a {
    request.headers.iter().map(|(name, value)| {
        let hidden = redact.iter().any(|r| r.eq_ignore_ascii_case(name));
        (name.clone(), if hidden { MASK.to_string() } else { value.clone() })
    })
}

/// One attempt on the task page, with what it sent.
struct SentAttempt {
    attempt: AttemptRecord,
    /// `POST https://…`
    request_line: String,
    /// The headers as sent (credentials masked), Bida's own included.
    headers: Vec<(String, String)>,
}

impl SentAttempt {
    fn of(attempt: &AttemptRecord, sent: &DeliveryRequest, message_id: &str, redact: &[String]) -> Self {
        use bida_actors::delivery::{attempt_headers, TRACEPARENT};
        let mut headers: Vec<(String, String)> =
            redacted(sent, redact).filter(|(name, _)| name != TRACEPARENT).collect();
        // A message id that is no header value was never sent: nothing to show.
        let ours = attempt_headers(message_id, attempt.number, attempt.started_at)
            .into_iter()
            .flatten();
        headers.extend(ours.map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_string())));
        if attempt.signed {
            headers.push(("webhook-signature".into(), MASK.into()));
        }
        // The attempt's own span replaced the message's: only its trace is known.
        if let Some(trace) = sent.headers.get(TRACEPARENT).and_then(|t| t.split('-').nth(1)) {
            headers.push((TRACEPARENT.into(), format!("00-{trace}-… (this attempt's span)")));
        }
        Self {
            attempt: attempt.clone(),
            request_line: match &sent.grpc {
                Some(call) => format!("gRPC {} {}", sent.url, call.method),
                None => format!("{} {}", sent.method.as_str(), sent.url),
            },
            headers,
        }
    }
}

/// A request's body as the page shows and edits it (bytes that are not
/// UTF-8 shown replaced).
fn body_text(request: &bida_domain::task::DeliveryRequest) -> String {
    request
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned())
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct ReplayForm {
    url: String,
    /// One `name: value` per line.
    #[serde(default)]
    headers: String,
    #[serde(default)]
    body: String,
}

pub async fn replay(state: web::Data<ApiState>, id: web::Path<String>, form: ConsoleForm<ReplayForm>) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let current = state
            .tasks
            .detail(&id)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no task with id {id}")))?;
        let mut headers = BTreeMap::new();
        for line in form.headers.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| Problem::bad_request("invalid-form", format!("`{line}` is not `name: value`")))?;
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            // A redacted value left as shown keeps the one the task has.
            let value = match current.request.headers.get(&name) {
                Some(kept) if value == MASK => kept.clone(),
                _ => value,
            };
            headers.insert(name, value);
        }
        let current_body = body_text(&current.request);
        let edit = RequestEdit {
            url: Some(form.url.trim().to_string()).filter(|url| *url != current.request.url),
            headers: Some(headers).filter(|h| *h != current.request.headers),
            // Bodies that are not text are kept unless one is typed in.
            body: Some(form.body).filter(|b| *b != current_body && !(b.is_empty() && current.request.body.is_some())),
            body_base64: None,
        };
        state.tasks.replay(&id, Some(edit)).await?;
        Ok(())
    }
    .await;
    back(&format!("/tasks/{id}"), outcome)
}
