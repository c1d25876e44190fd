//! Monitoring reads: statistics series, task overview, the node list, and the
//! Prometheus text of this node's instruments.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use bida_projections::{Dimension, Overview, Stats, StatsQuery, StatsSeries, Step};
use bida_store::NodeInfo;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::json::QueryParams;
use crate::paging::{page, PageQuery};
use crate::problem::Problem;
use crate::ApiState;

/// Longest range a series may cover (the statistics are kept 7 days).
const MAX_RANGE: TimeDelta = TimeDelta::days(8);
/// Most points one answer holds, over all its series.
const MAX_POINTS: i64 = 20_000;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/stats", web::get().to(series))
        .route("/v1/stats/overview", web::get().to(overview))
        .route("/v1/nodes", web::get().to(nodes))
        .route("/metrics", web::get().to(metrics));
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// all (default), consumer, source_app, target_app or endpoint
    #[param(pattern = "^(all|consumer|source_app|target_app|endpoint)$")]
    dimension: Option<String>,
    /// One consumer id, app or endpoint (`scheme://host:port`); without it, a series per value.
    key: Option<String>,
    /// 1m, 10m (default) or 1h
    #[param(pattern = "^(1m|10m|1h)$")]
    step: Option<String>,
    /// RFC 3339; default: 24 hours before `to`. A range starts no earlier
    /// than 8 days before `to` (statistics are kept 7) nor than 20,000
    /// points per answer allow; the answer's `from` says where it starts.
    from: Option<DateTime<Utc>>,
    /// RFC 3339; default: now.
    to: Option<DateTime<Utc>>,
    /// Most series (the busiest first), 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsAnswer {
    pub dimension: String,
    pub step: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub series: Vec<StatsSeries>,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid-query", detail)
}

/// Per-minute statistics as series: submitted, attempts, delivered, failed,
/// retried, timeouts, dead, latency; by consumer, app or endpoint.
#[utoipa::path(
    get, path = "/v1/stats", tag = "monitoring",
    params(StatsParams),
    responses(
        (status = 200, description = "Series, oldest point first", body = StatsAnswer),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn series(state: web::Data<ApiState>, params: QueryParams<StatsParams>) -> Result<HttpResponse, Problem> {
    let params = params.0;
    let dimension_text = params.dimension.as_deref().unwrap_or("all");
    let dimension = Dimension::parse(dimension_text).ok_or_else(|| {
        invalid(format!(
            "dimension `{dimension_text}` is unknown; use all, consumer, source_app, target_app or endpoint"
        ))
    })?;
    let step_text = params.step.as_deref().unwrap_or("10m");
    let step =
        Step::parse(step_text).ok_or_else(|| invalid(format!("step `{step_text}` is unknown; use 1m, 10m or 1h")))?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit must be between 1 and 100"));
    }
    let key = params.key.filter(|k| dimension != Dimension::All || !k.is_empty());
    let series_count = if key.is_some() || dimension == Dimension::All {
        1
    } else {
        limit
    };
    let to = params.to.unwrap_or_else(Utc::now);
    // A range starts no earlier than the statistics kept (MAX_RANGE) and
    // than the points one answer carries (MAX_POINTS); the answer's `from`
    // says where it starts.
    let steps = (MAX_POINTS / series_count - 1) * step.seconds();
    let earliest = [MAX_RANGE, TimeDelta::seconds(steps)]
        .into_iter()
        .filter_map(|span| to.checked_sub_signed(span))
        .max()
        .unwrap_or(to);
    let from = params
        .from
        .unwrap_or_else(|| to.checked_sub_signed(TimeDelta::hours(24)).unwrap_or(to))
        .max(earliest);
    // An empty range has no points; no consumer, app or endpoint has a
    // control character in its name.
    if from >= to || key.as_deref().is_some_and(|k| k.chars().any(char::is_control)) {
        return Ok(HttpResponse::Ok().json(StatsAnswer {
            dimension: dimension.as_str().to_string(),
            step: step_text.to_string(),
            from,
            to,
            series: Vec::new(),
        }));
    }
    let query = StatsQuery {
        dimension,
        key,
        step,
        from,
        to,
    };
    let series = Stats::series(&state.store, &query, limit).await?;
    Ok(HttpResponse::Ok().json(StatsAnswer {
        dimension: dimension.as_str().to_string(),
        step: step_text.to_string(),
        from,
        to,
        series,
    }))
}

/// Tasks by status, and per app (sent and received), from the task list.
#[utoipa::path(
    get, path = "/v1/stats/overview", tag = "monitoring",
    responses((status = 200, body = Overview))
)]
pub async fn overview(state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(Stats::overview(&state.store).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub info: NodeInfo,
    /// Heartbeat within the node timeout and not stopped.
    pub alive: bool,
    pub uptime_secs: i64,
}

/// Every Bida node sharing the database: heartbeat, version, uptime, memory,
/// CPU and actors (as it last reported them).
#[utoipa::path(
    get, path = "/v1/nodes", tag = "monitoring",
    params(PageQuery),
    responses((status = 200, body = NodeList))
)]
pub async fn nodes(state: web::Data<ApiState>, query: QueryParams<PageQuery>) -> Result<HttpResponse, Problem> {
    let nodes = state.store.nodes().await.map_err(|e| {
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Problem::new(status, "unavailable", e.to_string())
    })?;
    let now = Utc::now();
    let views: Vec<NodeView> = nodes
        .into_iter()
        .map(|info| NodeView {
            alive: state.is_alive(&info, now),
            uptime_secs: (info.stopped_at.unwrap_or(now) - info.started_at).num_seconds(),
            info,
        })
        .collect();
    let page = page(
        views,
        |n| format!("{}\n{}", n.info.name, n.info.id),
        &query.0,
        state.config.max_page,
    )?;
    Ok(HttpResponse::Ok().json(NodeList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// This node's metrics as Prometheus text (see docs/metrics.md).
#[utoipa::path(
    get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    match &state.metrics {
        Some(metrics) => HttpResponse::Ok()
            .content_type(bida_telemetry::MetricsText::CONTENT_TYPE)
            .body(metrics.render()),
        None => HttpResponse::NotFound().finish(),
    }
}
