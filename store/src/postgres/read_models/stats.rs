//! Statistics read from `stats_minute` and `task_counts`.

use async_trait::async_trait;
use bida_domain::stats::{Overview, StatsQuery, StatsSeries};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;

use crate::read_models::{by_status_of, counts, overview_of, series_of};
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
        Ok(series_of(rows.into_iter().map(
            |(key, at, a, b, c, d, e, f, g, h, i)| (key, at, counts([a, b, c, d, e, f, g, h, i])),
        )))
    }

    async fn tasks_by_status(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, sum(n)::bigint FROM task_counts GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        Ok(by_status_of(rows))
    }

    async fn task_overview(&self) -> Result<Overview, StoreError> {
        let rows: Vec<(Option<String>, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT NULLIF(source_app, ''), NULLIF(target_app, ''), status, n FROM task_counts WHERE n <> 0",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(overview_of(rows))
    }

    async fn prune_stats(&self, keep: TimeDelta) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM stats_minute WHERE minute < $1")
            .bind(Utc::now() - keep)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
