//! Nodes' reports on the consumers they run, and consumers' totals and rates, in tables.

use crate::{ConsumerRuntime, PgStore, RuntimeRow, StoreError};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

#[async_trait]
impl ConsumerRuntime for PgStore {
    async fn publish_consumer_runtime(
        &self,
        node: Uuid,
        running: &[&str],
        changed: &[(String, String, Value)],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = changed.iter().map(|(id, _, _)| id.as_str()).collect();
        let states: Vec<&str> = changed.iter().map(|(_, state, _)| state.as_str()).collect();
        let reports: Vec<String> = changed.iter().map(|(_, _, report)| report.to_string()).collect();
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM consumer_runtime WHERE node_id = $1 AND consumer_id <> ALL($5::text[])
             ), stamped AS (
                 UPDATE nodes SET reports_at = now() WHERE id = $1
             )
             INSERT INTO consumer_runtime (consumer_id, node_id, state, report, updated_at)
             SELECT t.id, $1, t.state, t.report::jsonb, now()
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS t(id, state, report)
             ON CONFLICT (consumer_id, node_id) DO UPDATE
                 SET state = EXCLUDED.state, report = EXCLUDED.report, updated_at = EXCLUDED.updated_at",
        )
        .bind(node)
        .bind(&ids)
        .bind(&states)
        .bind(&reports)
        .bind(running)
        .execute(self.control())
        .await?;
        Ok(())
    }

    async fn consumer_runtime(
        &self,
        consumers: Option<&[&str]>,
        fresh_secs: f64,
    ) -> Result<Vec<RuntimeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT consumer_id, node_id, node_name, state, report, updated_at
             FROM (SELECT r.consumer_id, r.node_id, n.name AS node_name, r.state, r.report,
                          greatest(r.updated_at, n.reports_at) AS updated_at
                   FROM consumer_runtime r LEFT JOIN nodes n ON n.id = r.node_id
                   WHERE $1::text[] IS NULL OR r.consumer_id = ANY($1)) AS confirmed
             WHERE updated_at > now() - make_interval(secs => $2)
             ORDER BY consumer_id, node_name, node_id",
        )
        .bind(consumers)
        .bind(fresh_secs)
        .fetch_all(self.pool())
        .await?)
    }

    async fn consumer_rates(&self, consumers: &[&str]) -> Result<HashMap<String, (f64, f64)>, StoreError> {
        let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(
            "SELECT key, sum(submitted)::bigint, sum(delivered)::bigint,
                    60 + extract(epoch FROM now() - date_trunc('minute', now()))::float8
             FROM stats_minute
             WHERE dimension = 'consumer' AND key = ANY($1)
               AND minute >= date_trunc('minute', now()) - interval '1 minute'
             GROUP BY key",
        )
        .bind(consumers)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, submitted, delivered, seconds)| (id, (submitted as f64 / seconds, delivered as f64 / seconds)))
            .collect())
    }

    async fn consumer_counters(&self, consumers: &[&str]) -> Result<HashMap<String, [i64; 7]>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT consumer_id, consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead
             FROM consumer_counters WHERE consumer_id = ANY($1)",
        )
        .bind(consumers)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, a, b, c, d, e, f, g)| (id, [a, b, c, d, e, f, g]))
            .collect())
    }
}
