//! Loading the low-traffic aggregates (brokers, consumers) whole, and the
//! per-node reports of consumers at work.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

use crate::events::COLUMNS;
use crate::{Store, StoreError, StoredEvent};

fn fold<A: Aggregate>(stored: &[StoredEvent]) -> Result<A, StoreError> {
    let mut aggregate = A::default();
    for event in stored {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}

/// A node's report on one consumer, as stored.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RuntimeRow {
    pub consumer_id: String,
    pub node_id: Uuid,
    pub node_name: Option<String>,
    pub state: String,
    pub report: Value,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// One aggregate with its version; `None` if it has no events.
    pub async fn load_aggregate<A: Aggregate>(&self, id: &str) -> Result<Option<(A, i64)>, StoreError> {
        let stored = self.events_of(A::TYPE, id).await?;
        match stored.last().map(|e| e.sequence) {
            None => Ok(None),
            Some(version) => Ok(Some((fold(&stored)?, version))),
        }
    }

    /// Every aggregate of a type, by id, with its version. One that cannot be
    /// decoded is left out with an error in the log rather than hiding all
    /// the others.
    pub async fn load_all<A: Aggregate>(&self) -> Result<Vec<(String, A, i64)>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence");
        let stored: Vec<StoredEvent> = sqlx::query_as(&sql).bind(A::TYPE).fetch_all(self.pool()).await?;
        let mut all = Vec::new();
        for group in stored.chunk_by(|a, b| a.aggregate_id == b.aggregate_id) {
            let Some(first) = group.first() else { continue };
            let version = group.last().map_or(0, |e| e.sequence);
            match fold::<A>(group) {
                Ok(aggregate) => all.push((first.aggregate_id.clone(), aggregate, version)),
                Err(e) => tracing::error!(aggregate = A::TYPE, id = %first.aggregate_id, error = %e, "cannot load"),
            }
        }
        Ok(all)
    }

    /// Replaces this node's consumer reports with `rows` (consumer id, state, report).
    pub async fn replace_consumer_runtime(
        &self,
        node: Uuid,
        rows: &[(String, String, Value)],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
        let states: Vec<&str> = rows.iter().map(|(_, state, _)| state.as_str()).collect();
        let reports: Vec<String> = rows.iter().map(|(_, _, report)| report.to_string()).collect();
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM consumer_runtime WHERE node_id = $1 AND consumer_id <> ALL($2::text[])
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
        .execute(self.control())
        .await?;
        Ok(())
    }

    /// Reports on a consumer from nodes that reported within `fresh_secs`.
    pub async fn consumer_runtime(&self, consumer_id: &str, fresh_secs: f64) -> Result<Vec<RuntimeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT r.consumer_id, r.node_id, n.name AS node_name, r.state, r.report, r.updated_at
             FROM consumer_runtime r LEFT JOIN nodes n ON n.id = r.node_id
             WHERE r.consumer_id = $1 AND r.updated_at > now() - make_interval(secs => $2)
             ORDER BY n.name, r.node_id",
        )
        .bind(consumer_id)
        .bind(fresh_secs)
        .fetch_all(self.pool())
        .await?)
    }

    /// Tasks submitted and delivered per second over the last minute, from the
    /// per-minute statistics (the current minute counts for what has passed of it).
    pub async fn consumer_rates(&self, consumer_id: &str) -> Result<(f64, f64), StoreError> {
        let (submitted, delivered, seconds): (i64, i64, f64) = sqlx::query_as(
            "SELECT coalesce(sum(submitted), 0)::bigint, coalesce(sum(delivered), 0)::bigint,
                    60 + extract(epoch FROM now() - date_trunc('minute', now()))::float8
             FROM stats_minute
             WHERE dimension = 'consumer' AND key = $1 AND minute >= date_trunc('minute', now()) - interval '1 minute'",
        )
        .bind(consumer_id)
        .fetch_one(self.pool())
        .await?;
        Ok((submitted as f64 / seconds, delivered as f64 / seconds))
    }

    /// Running totals and gauges of a consumer's tasks (from the task list projection).
    pub async fn consumer_counters(&self, consumer_id: &str) -> Result<Option<[i64; 7]>, StoreError> {
        let row: Option<(i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead
             FROM consumer_counters WHERE consumer_id = $1",
        )
        .bind(consumer_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(a, b, c, d, e, f, g)| [a, b, c, d, e, f, g]))
    }
}
