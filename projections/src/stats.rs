//! Per-minute statistics of task events, by consumer, app and endpoint,
//! folded by the task list (which knows each task's consumer, apps and URL)
//! and read back as series at 1-minute, 10-minute and 1-hour steps.

use bida_domain::task::{TaskEvent, TaskStatus, TaskSummary};
use bida_store::Store;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

use crate::ProjectionError;

/// What statistics are kept by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Everything (key `""`).
    All,
    Consumer,
    SourceApp,
    TargetApp,
    /// `scheme://host:port` of the task's URL.
    Endpoint,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Self::All,
        Self::Consumer,
        Self::SourceApp,
        Self::TargetApp,
        Self::Endpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Consumer => "consumer",
            Self::SourceApp => "source_app",
            Self::TargetApp => "target_app",
            Self::Endpoint => "endpoint",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    fn key(self, task: &TaskSummary, endpoints: &mut HashMap<String, Option<String>>) -> Option<String> {
        match self {
            Self::All => Some(String::new()),
            Self::Consumer => task.consumer_id.clone(),
            Self::SourceApp => task.source_app.clone(),
            Self::TargetApp => task.target_app.clone(),
            // A page holds many tasks of few URLs: each is parsed once.
            Self::Endpoint => match endpoints.get(&task.url) {
                Some(endpoint) => endpoint.clone(),
                None => endpoints
                    .entry(task.url.clone())
                    .or_insert_with(|| endpoint_of(&task.url))
                    .clone(),
            },
        }
    }
}

/// The endpoint a URL names: `scheme://host:port` (the path and query vary per message).
pub fn endpoint_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// One bucket's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Tasks submitted (from the API or a consumer).
    pub submitted: i64,
    /// Delivery attempts made.
    pub attempts: i64,
    /// Tasks delivered.
    pub delivered: i64,
    /// Attempts that failed.
    pub failed: i64,
    /// Failed attempts followed by a retry.
    pub retried: i64,
    /// Attempts cut at the timeout.
    pub timeouts: i64,
    /// Tasks dead-lettered.
    pub dead: i64,
    /// Sum of the attempts' latencies.
    pub latency_sum_ms: i64,
    /// Slowest attempt.
    pub latency_max_ms: i64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.submitted += other.submitted;
        self.attempts += other.attempts;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retried += other.retried;
        self.timeouts += other.timeouts;
        self.dead += other.dead;
        self.latency_sum_ms += other.latency_sum_ms;
        self.latency_max_ms = self.latency_max_ms.max(other.latency_max_ms);
    }

    /// What one event adds.
    fn of(event: &TaskEvent) -> Option<Counts> {
        let mut counts = Counts {
            submitted: i64::from(event.submission().is_some()),
            ..Counts::default()
        };
        if let Some(attempt) = event.attempt() {
            counts.attempts = 1;
            counts.latency_sum_ms = attempt.latency_ms as i64;
            counts.latency_max_ms = attempt.latency_ms as i64;
        }
        match event {
            TaskEvent::TaskSubmitted { .. } => {}
            TaskEvent::AttemptSucceeded { .. } | TaskEvent::MessageDelivered { .. } => counts.delivered = 1,
            TaskEvent::AttemptFailed {
                attempt,
                next_attempt_at,
            } => {
                counts.failed = 1;
                counts.retried = i64::from(next_attempt_at.is_some());
                counts.timeouts = i64::from(attempt.timed_out);
            }
            TaskEvent::TaskDeadLettered { .. } => counts.dead = 1,
            TaskEvent::TaskCancelled { .. } | TaskEvent::RetryRequested { .. } => return None,
        }
        Some(counts)
    }
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// What a page of events adds to the buckets.
#[derive(Debug, Default)]
pub struct StatsTally {
    buckets: HashMap<(DateTime<Utc>, Dimension, String), Counts>,
    endpoints: HashMap<String, Option<String>>,
}

impl StatsTally {
    /// Counts `event` of `task` (the task's summary after the event).
    pub fn count(&mut self, task: &TaskSummary, event: &TaskEvent) {
        let Some(counts) = Counts::of(event) else {
            return;
        };
        let minute = minute_of(event.at());
        for dimension in Dimension::ALL {
            if let Some(key) = dimension.key(task, &mut self.endpoints) {
                self.buckets.entry((minute, dimension, key)).or_default().add(&counts);
            }
        }
    }

    /// Adds the tally to the stored buckets.
    pub async fn save(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), ProjectionError> {
        if self.buckets.is_empty() {
            return Ok(());
        }
        let mut minutes = Vec::new();
        let mut dimensions = Vec::new();
        let mut keys = Vec::new();
        let mut columns: [Vec<i64>; 9] = Default::default();
        for ((minute, dimension, key), c) in self.buckets {
            minutes.push(minute);
            dimensions.push(dimension.as_str());
            keys.push(key);
            let values = [
                c.submitted,
                c.attempts,
                c.delivered,
                c.failed,
                c.retried,
                c.timeouts,
                c.dead,
                c.latency_sum_ms,
                c.latency_max_ms,
            ];
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value);
            }
        }
        let [submitted, attempts, delivered, failed, retried, timeouts, dead, latency_sum, latency_max] = columns;
        sqlx::query(
            "INSERT INTO stats_minute AS s (minute, dimension, key, submitted, attempts, delivered, failed, retried,
                                            timeouts, dead, latency_sum_ms, latency_max_ms)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                  $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                                  $11::bigint[], $12::bigint[])
             ON CONFLICT (dimension, key, minute) DO UPDATE SET
                 submitted = s.submitted + EXCLUDED.submitted,
                 attempts = s.attempts + EXCLUDED.attempts,
                 delivered = s.delivered + EXCLUDED.delivered,
                 failed = s.failed + EXCLUDED.failed,
                 retried = s.retried + EXCLUDED.retried,
                 timeouts = s.timeouts + EXCLUDED.timeouts,
                 dead = s.dead + EXCLUDED.dead,
                 latency_sum_ms = s.latency_sum_ms + EXCLUDED.latency_sum_ms,
                 latency_max_ms = GREATEST(s.latency_max_ms, EXCLUDED.latency_max_ms)",
        )
        .bind(&minutes)
        .bind(&dimensions)
        .bind(&keys)
        .bind(&submitted)
        .bind(&attempts)
        .bind(&delivered)
        .bind(&failed)
        .bind(&retried)
        .bind(&timeouts)
        .bind(&dead)
        .bind(&latency_sum)
        .bind(&latency_max)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Width of one point of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Minute,
    TenMinutes,
    Hour,
}

impl Step {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1m" => Some(Self::Minute),
            "10m" => Some(Self::TenMinutes),
            "1h" => Some(Self::Hour),
            _ => None,
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::TenMinutes => 600,
            Self::Hour => 3600,
        }
    }
}

/// Which series to read.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsQuery {
    pub dimension: Dimension,
    /// One value of the dimension; `None`: a series per value.
    pub key: Option<String>,
    pub step: Step,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsPoint {
    /// Start of the step.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSeries {
    pub key: String,
    /// Totals over the whole range.
    pub total: Counts,
    /// Steps with activity, oldest first (steps without any are left out).
    pub points: Vec<StatsPoint>,
}

/// Tasks by status, and per app.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCounts {
    pub total: i64,
    pub by_status: HashMap<String, i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppCounts {
    pub app: String,
    /// Tasks it sent (source app).
    pub sent: TaskCounts,
    /// Tasks sent to it (target app).
    pub received: TaskCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    pub tasks: TaskCounts,
    /// Distinct apps, as source or target.
    pub app_count: usize,
    pub apps: Vec<AppCounts>,
}

pub struct Stats;

impl Stats {
    /// Series of the query, at most `max_series` of them (the busiest first).
    pub async fn series(
        store: &Store,
        query: &StatsQuery,
        max_series: i64,
    ) -> Result<Vec<StatsSeries>, ProjectionError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            key: String,
            at: DateTime<Utc>,
            #[sqlx(flatten)]
            counts: Counts,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "WITH chosen AS (
                 SELECT key FROM stats_minute
                 WHERE dimension = $1 AND ($2::text IS NULL OR key = $2) AND minute >= $4 AND minute < $5
                 GROUP BY key ORDER BY sum(submitted + attempts) DESC, key LIMIT $6
             )
             SELECT s.key, to_timestamp(floor(extract(epoch FROM s.minute) / $3) * $3) AS at,
                    sum(submitted)::bigint AS submitted, sum(attempts)::bigint AS attempts,
                    sum(delivered)::bigint AS delivered, sum(failed)::bigint AS failed,
                    sum(retried)::bigint AS retried, sum(timeouts)::bigint AS timeouts, sum(dead)::bigint AS dead,
                    sum(latency_sum_ms)::bigint AS latency_sum_ms, max(latency_max_ms) AS latency_max_ms
             FROM stats_minute s JOIN chosen USING (key)
             WHERE s.dimension = $1 AND s.minute >= $4 AND s.minute < $5
             GROUP BY s.key, at ORDER BY s.key, at",
        )
        .bind(query.dimension.as_str())
        .bind(&query.key)
        .bind(query.step.seconds() as f64)
        .bind(query.from)
        .bind(query.to)
        .bind(max_series)
        .fetch_all(store.pool())
        .await?;
        let mut series: Vec<StatsSeries> = Vec::new();
        for Row { key, at, counts } in rows {
            if series.last().is_none_or(|s| s.key != key) {
                series.push(StatsSeries {
                    key,
                    total: Counts::default(),
                    points: Vec::new(),
                });
            }
            let current = series.last_mut().expect("pushed above");
            current.total.add(&counts);
            current.points.push(StatsPoint { at, counts });
        }
        series.sort_by(|a, b| {
            (b.total.submitted + b.total.attempts)
                .cmp(&(a.total.submitted + a.total.attempts))
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(series)
    }

    /// Tasks by status, from the task list (every status, zeros included).
    pub async fn by_status(store: &Store) -> Result<HashMap<String, i64>, ProjectionError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, sum(n)::bigint FROM task_counts GROUP BY status")
            .fetch_all(store.pool())
            .await?;
        let mut counts: HashMap<String, i64> = TaskStatus::ALL
            .iter()
            .map(|status| (status.as_str().to_string(), 0))
            .collect();
        counts.extend(rows);
        Ok(counts)
    }

    /// Tasks by status, and per app, from the task list.
    pub async fn overview(store: &Store) -> Result<Overview, ProjectionError> {
        let rows: Vec<(Option<String>, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT NULLIF(source_app, ''), NULLIF(target_app, ''), status, n FROM task_counts WHERE n <> 0",
        )
        .fetch_all(store.pool())
        .await?;
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
        Ok(Overview {
            tasks,
            app_count: apps.len(),
            apps,
        })
    }

    /// Drops buckets older than `keep`; returns how many.
    pub async fn prune(store: &Store, keep: TimeDelta) -> Result<u64, ProjectionError> {
        let done = sqlx::query("DELETE FROM stats_minute WHERE minute < $1")
            .bind(Utc::now() - keep)
            .execute(store.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_and_port() {
        assert_eq!(
            endpoint_of("https://a.example.com/x?y=1").as_deref(),
            Some("https://a.example.com:443")
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:8081/hook").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(endpoint_of("not a url"), None);
    }

    #[test]
    fn steps_parse() {
        assert_eq!(Step::parse("10m"), Some(Step::TenMinutes));
        assert_eq!(Step::parse("5m"), None);
        assert_eq!(Dimension::parse("endpoint"), Some(Dimension::Endpoint));
    }
}
