//! Statistics read from `stats_minute` and `task_counts`.

use async_trait::async_trait;
use bida_domain::stats::{AppCounts, Counts, Overview, StatsPoint, StatsQuery, StatsSeries, TaskCounts};
use bida_domain::task::TaskStatus;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;

use crate::{PgStore, StatsReads, StoreError};

#[async_trait]
impl StatsReads for PgStore {
    async fn stats_series(&self, query: &StatsQuery, max_series: i64) -> Result<Vec<StatsSeries>, StoreError> {
        type Row = (String, DateTime<Utc>, i64, i64, i64, i64, i64, i64, i64, i64, i64);
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
        .fetch_all(self.pool())
        .await?;
        let mut series: Vec<StatsSeries> = Vec::new();
        for (
            key,
            at,
            submitted,
            attempts,
            delivered,
            failed,
            retried,
            timeouts,
            dead,
            latency_sum_ms,
            latency_max_ms,
        ) in rows
        {
            let counts = Counts {
                submitted,
                attempts,
                delivered,
                failed,
                retried,
                timeouts,
                dead,
                latency_sum_ms,
                latency_max_ms,
            };
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

    async fn tasks_by_status(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, sum(n)::bigint FROM task_counts GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        let mut counts: HashMap<String, i64> = TaskStatus::ALL
            .iter()
            .map(|status| (status.as_str().to_string(), 0))
            .collect();
        counts.extend(rows);
        Ok(counts)
    }

    async fn task_overview(&self) -> Result<Overview, StoreError> {
        let rows: Vec<(Option<String>, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT NULLIF(source_app, ''), NULLIF(target_app, ''), status, n FROM task_counts WHERE n <> 0",
        )
        .fetch_all(self.pool())
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

    async fn prune_stats(&self, keep: TimeDelta) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM stats_minute WHERE minute < $1")
            .bind(Utc::now() - keep)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
