//! The overview: tasks by status, messages per hour over 7 days, the last
//! hour's rates, apps, the endpoints that fail most, and the nodes. Its
//! figures are one fragment the page fetches again every few seconds.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bida_projections::{Dimension, Stats, StatsQuery, StatsSeries, Step};
use chrono::{DateTime, Duration as TimeDelta, Utc};

use super::charts::Bars;
use super::i18n::{Lang, Tr};
use super::{html, Chrome};
use crate::problem::Problem;
use crate::ApiState;

/// Statuses in the order the overview shows them.
const STATUSES: [&str; 6] = ["pending", "delivering", "retrying", "delivered", "dead", "cancelled"];

pub struct StatusCount {
    pub status: &'static str,
    pub count: i64,
}

pub struct AppLine {
    pub app: String,
    pub sent: i64,
    pub received: i64,
    pub dead: i64,
}

pub struct EndpointLine {
    pub endpoint: String,
    pub attempts: i64,
    pub failed: i64,
}

pub struct NodeLine {
    pub name: String,
    pub version: String,
    pub alive: bool,
    pub heartbeat_at: String,
    pub uptime: String,
}

pub struct Figures {
    pub total: i64,
    pub statuses: Vec<StatusCount>,
    /// The 7-day chart, as SVG.
    pub chart: String,
    pub hour_attempts: i64,
    pub hour_delivered: i64,
    pub hour_failed: i64,
    /// Failed attempts of all attempts in the last hour, in percent.
    pub failure_percent: String,
    pub apps: Vec<AppLine>,
    pub endpoints: Vec<EndpointLine>,
    pub nodes: Vec<NodeLine>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    t: Tr,
    f: Figures,
}

#[derive(Template)]
#[template(path = "overview_live.html")]
struct OverviewLive {
    t: Tr,
    f: Figures,
}

pub async fn page(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "overview")?;
    let t = chrome.t;
    Ok(html(&OverviewPage {
        f: figures(&state, t).await?,
        chrome,
        t,
    }))
}

pub async fn live(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let t = Tr(Lang::of(&request));
    Ok(html(&OverviewLive {
        f: figures(&state, t).await?,
        t,
    }))
}

async fn series(
    state: &ApiState,
    dimension: Dimension,
    step: Step,
    span: TimeDelta,
    max: i64,
) -> Result<Vec<StatsSeries>, Problem> {
    let to = Utc::now();
    let query = StatsQuery {
        dimension,
        key: None,
        step,
        from: to - span,
        to,
    };
    Ok(Stats::series(&state.store, &query, max).await?)
}

fn since(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds().max(0);
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7199 => format!("{} min", seconds / 60),
        _ => format!("{} h", seconds / 3600),
    }
}

async fn figures(state: &ApiState, t: Tr) -> Result<Figures, Problem> {
    let overview = Stats::overview(&state.store).await?;
    let statuses = STATUSES
        .iter()
        .map(|status| StatusCount {
            status,
            count: overview.tasks.by_status.get(*status).copied().unwrap_or(0),
        })
        .collect();

    let week = series(state, Dimension::All, Step::Hour, TimeDelta::days(7), 1).await?;
    let points: Vec<(DateTime<Utc>, i64, i64)> = week
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| (p.at, p.counts.submitted, p.counts.dead))
        .collect();
    let now = Utc::now();
    let chart = Bars {
        title: t.get("messages_7d"),
        from: now - TimeDelta::days(7),
        to: now,
        step: TimeDelta::hours(1),
        points: &points,
    }
    .svg();

    let hour = series(state, Dimension::All, Step::Minute, TimeDelta::hours(1), 1).await?;
    let hour_total = hour.first().map(|s| s.total.clone()).unwrap_or_default();
    let failure_percent = if hour_total.attempts > 0 {
        format!("{:.1} %", hour_total.failed as f64 * 100.0 / hour_total.attempts as f64)
    } else {
        "–".to_string()
    };

    let mut endpoints: Vec<EndpointLine> = series(state, Dimension::Endpoint, Step::Hour, TimeDelta::hours(24), 100)
        .await?
        .into_iter()
        .filter(|s| s.total.failed > 0)
        .map(|s| EndpointLine {
            endpoint: s.key,
            attempts: s.total.attempts,
            failed: s.total.failed,
        })
        .collect();
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.failed));
    endpoints.truncate(5);

    let apps = overview
        .apps
        .iter()
        .map(|a| AppLine {
            app: a.app.clone(),
            sent: a.sent.total,
            received: a.received.total,
            dead: a.sent.by_status.get("dead").copied().unwrap_or(0),
        })
        .collect();

    let nodes = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|info| NodeLine {
            alive: state.is_alive(&info, now),
            heartbeat_at: info.heartbeat_at.to_rfc3339(),
            uptime: since(info.started_at),
            name: info.name,
            version: info.version,
        })
        .collect();

    Ok(Figures {
        total: overview.tasks.total,
        statuses,
        chart,
        hour_attempts: hour_total.attempts,
        hour_delivered: hour_total.delivered,
        hour_failed: hour_total.failed,
        failure_percent,
        apps,
        endpoints,
        nodes,
    })
}
