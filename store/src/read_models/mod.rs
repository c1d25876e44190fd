//! What the task list projection writes into its read models (task
//! summaries, counts by status and app, consumers' totals, per-minute
//! statistics), beside its checkpoint.
//!
//! The folding itself (what an event changes) is the projections crate's;
//! the store only keeps what it is given.

mod fold;

pub use fold::{ConsumerCounterChange, StatsBucket, StatusCountChange};

use bida_domain::stats::{AppCounts, Counts, Overview, StatsPoint, StatsSeries, TaskCounts};
use bida_domain::task::{TaskCursor, TaskPage, TaskStatus, TaskSummary};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use crate::StoreError;

/// Task summaries from (id, document) rows.
pub(crate) fn summaries_of(rows: Vec<(String, String)>) -> Result<HashMap<String, TaskSummary>, StoreError> {
    let mut summaries = HashMap::with_capacity(rows.len());
    for (id, doc) in rows {
        let summary = serde_json::from_str(&doc).map_err(|e| StoreError::Decode {
            aggregate_id: id.clone(),
            sequence: 0,
            message: format!("task_view document: {e}"),
        })?;
        summaries.insert(id, summary);
    }
    Ok(summaries)
}

/// The counts of a statistics row, in the table's column order.
pub(crate) fn counts(columns: [i64; 9]) -> Counts {
    let [submitted, attempts, delivered, failed, retried, timeouts, dead, latency_sum_ms, latency_max_ms] = columns;
    Counts {
        submitted,
        attempts,
        delivered,
        failed,
        retried,
        timeouts,
        dead,
        latency_sum_ms,
        latency_max_ms,
    }
}

/// A page from the rows a list query returned (id, summary document, status
/// as observed), `limit + 1` of them at most: one more tells there is a next page.
pub(crate) fn page_of(rows: Vec<(String, String, String)>, limit: i64) -> Result<TaskPage, StoreError> {
    let mut items = Vec::with_capacity(rows.len());
    for (id, doc, status) in rows {
        let mut summary: TaskSummary = serde_json::from_str(&doc).map_err(|e| StoreError::Decode {
            aggregate_id: id,
            sequence: 0,
            message: format!("task_view document: {e}"),
        })?;
        summary.status = TaskStatus::parse(&status).unwrap_or(summary.status);
        items.push(summary);
    }
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(usize::try_from(limit).unwrap_or(0));
        items.last().map(|last| TaskCursor {
            created_at: last.created_at,
            id: last.id.clone(),
        })
    } else {
        None
    };
    Ok(TaskPage {
        items,
        next_cursor,
        stopped_at: None,
    })
}

/// Series from rows (key, start of step, counts) ordered by key and step:
/// the busiest series first.
pub(crate) fn series_of(rows: impl Iterator<Item = (String, DateTime<Utc>, Counts)>) -> Vec<StatsSeries> {
    let mut series: Vec<StatsSeries> = Vec::new();
    for (key, at, counts) in rows {
        match series.last_mut() {
            Some(current) if current.key == key => {
                current.total.add(&counts);
                current.points.push(StatsPoint { at, counts });
            }
            _ => series.push(StatsSeries {
                key,
                total: counts.clone(),
                points: vec![StatsPoint { at, counts }],
            }),
        }
    }
    series.sort_by(|a, b| {
        (b.total.submitted + b.total.attempts)
            .cmp(&(a.total.submitted + a.total.attempts))
            .then_with(|| a.key.cmp(&b.key))
    });
    series
}

/// Tasks by status from (status, count) rows, every status present.
pub(crate) fn by_status_of(rows: Vec<(String, i64)>) -> HashMap<String, i64> {
    let mut counts: HashMap<String, i64> = TaskStatus::ALL
        .iter()
        .map(|status| (status.as_str().to_string(), 0))
        .collect();
    counts.extend(rows);
    counts
}

/// The overview from `task_counts` rows (source app, target app, status, n).
pub(crate) fn overview_of(rows: Vec<(Option<String>, Option<String>, String, i64)>) -> Overview {
    let mut tasks = TaskCounts::default();
    let mut apps: HashMap<String, (TaskCounts, TaskCounts)> = HashMap::new();
    let tally = |counts: &mut TaskCounts, status: &str, n: i64| {
        counts.total += n;
        *counts.by_status.entry(status.to_string()).or_default() += n;
    };
    for (source, target, status, n) in rows {
        tally(&mut tasks, &status, n);
        if let Some(app) = source {
            tally(&mut apps.entry(app).or_default().0, &status, n);
        }
        if let Some(app) = target {
            tally(&mut apps.entry(app).or_default().1, &status, n);
        }
    }
    for status in TaskStatus::ALL {
        tasks.by_status.entry(status.as_str().to_string()).or_default();
    }
    let mut apps: Vec<AppCounts> = apps
        .into_iter()
        .map(|(app, (sent, received))| AppCounts { app, sent, received })
        .collect();
    apps.sort_by(|a, b| a.app.cmp(&b.app));
    Overview {
        tasks,
        app_count: apps.len(),
        apps,
    }
}
