//! A page of the task list folded in one transaction: the checkpoint row
//! locked first, multi-row upserts (UNNEST), the checkpoint moved last.

use crate::postgres::checkpoints::save_checkpoint_in;
use crate::read_models::summaries_of;
use crate::{
    ConsumerCounterChange, FeedPosition, Fold, FoldPage, Folds, PgStore, StatsBucket, StatusCountChange, StoreError,
};
use async_trait::async_trait;
use bida_domain::task::{EndpointHost, TaskSummary};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

/// A page being folded in a Postgres transaction.
struct PgFold {
    tx: Transaction<'static, Postgres>,
    name: String,
}

#[async_trait]
impl Folds for PgStore {
    async fn begin_fold(&self, name: &str, at: FeedPosition) -> Result<Option<Fold>, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let current: (i64, i64) = sqlx::query_as(
            "SELECT transaction_id::text::bigint, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if current != (at.transaction_id, at.position) {
            return Ok(None);
        }
        Ok(Some(Box::new(PgFold {
            tx,
            name: name.to_string(),
        })))
    }

    async fn begin_rebuild(&self, name: &str) -> Result<Fold, StoreError> {
        Ok(Box::new(PgFold {
            tx: self.begin().await?,
            name: name.to_string(),
        }))
    }
}

#[async_trait]
impl FoldPage for PgFold {
    async fn commit(mut self: Box<Self>, last: FeedPosition) -> Result<(), StoreError> {
        save_checkpoint_in(&mut self.tx, &self.name, last).await?;
        self.tx.commit().await?;
        Ok(())
    }

    async fn mark(&mut self, name: &str) -> Result<Option<FeedPosition>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT transaction_id::text::bigint, position FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.map(|(transaction_id, position)| FeedPosition {
            transaction_id,
            position,
        }))
    }

    async fn set_mark(&mut self, name: &str, at: FeedPosition) -> Result<(), StoreError> {
        save_checkpoint_in(&mut self.tx, name, at).await
    }

    async fn task_summaries(&mut self, ids: &[&str]) -> Result<HashMap<String, TaskSummary>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, doc::text FROM task_view WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await?;
        summaries_of(rows)
    }

    async fn save_task_summaries(&mut self, summaries: Vec<TaskSummary>) -> Result<(), StoreError> {
        let mut ids = Vec::new();
        let mut statuses = Vec::new();
        let mut consumers = Vec::new();
        let mut sources = Vec::new();
        let mut targets = Vec::new();
        let mut created = Vec::new();
        let mut updated = Vec::new();
        let mut docs = Vec::new();
        let mut hosts: Vec<Option<String>> = Vec::new();
        // A consumer's tasks share one URL: parse it once per run of them.
        let mut last_url: Option<String> = None;
        for summary in summaries {
            match (&last_url, hosts.last()) {
                (Some(url), Some(host)) if *url == summary.url => hosts.push(host.clone()),
                _ => {
                    hosts.push(EndpointHost::of_url(&summary.url).map(|host| host.to_string()));
                    last_url = Some(summary.url.clone());
                }
            }
            docs.push(serde_json::to_string(&summary).map_err(|e| StoreError::Decode {
                aggregate_id: summary.id.clone(),
                sequence: 0,
                message: e.to_string(),
            })?);
            ids.push(summary.id);
            statuses.push(summary.status.as_str());
            consumers.push(summary.consumer_id);
            sources.push(summary.source_app);
            targets.push(summary.target_app);
            created.push(summary.created_at);
            updated.push(summary.updated_at);
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id,
                                    endpoint_host)
             SELECT t.id, t.status, t.source_app, t.target_app, t.created_at, t.updated_at, t.doc::json,
                    t.consumer_id, t.endpoint_host
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                         $7::text[], $8::text[], $9::text[])
                  AS t(id, status, source_app, target_app, created_at, updated_at, doc, consumer_id, endpoint_host)
             ON CONFLICT (id) DO UPDATE
                 SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc,
                     endpoint_host = EXCLUDED.endpoint_host",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&sources)
        .bind(&targets)
        .bind(&created)
        .bind(&updated)
        .bind(&docs)
        .bind(&consumers)
        .bind(&hosts)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn add_status_counts(&mut self, changes: &[StatusCountChange]) -> Result<(), StoreError> {
        let changes: Vec<_> = changes.iter().filter(|c| c.change != 0).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let statuses: Vec<&str> = changes.iter().map(|c| c.status.as_str()).collect();
        let sources: Vec<&str> = changes.iter().map(|c| c.source_app.as_str()).collect();
        let targets: Vec<&str> = changes.iter().map(|c| c.target_app.as_str()).collect();
        let counts: Vec<i64> = changes.iter().map(|c| c.change).collect();
        sqlx::query(
            "INSERT INTO task_counts AS c (status, source_app, target_app, n)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (status, source_app, target_app) DO UPDATE SET n = c.n + EXCLUDED.n",
        )
        .bind(&statuses)
        .bind(&sources)
        .bind(&targets)
        .bind(&counts)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn add_consumer_counters(&mut self, changes: Vec<(String, ConsumerCounterChange)>) -> Result<(), StoreError> {
        let mut ids = Vec::new();
        let mut columns: [Vec<i64>; 7] = Default::default();
        for (id, c) in changes {
            ids.push(id);
            let values = [
                c.consumed,
                c.delivered,
                c.failed_attempts,
                c.timeouts,
                c.dead_lettered,
                c.retrying,
                c.dead,
            ];
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let [consumed, delivered, failed, timeouts, dead_lettered, retrying, dead] = columns;
        sqlx::query(
            "INSERT INTO consumer_counters AS c
                 (consumer_id, consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                                  $7::bigint[], $8::bigint[])
             ON CONFLICT (consumer_id) DO UPDATE SET
                 consumed = c.consumed + EXCLUDED.consumed,
                 delivered = c.delivered + EXCLUDED.delivered,
                 failed_attempts = c.failed_attempts + EXCLUDED.failed_attempts,
                 timeouts = c.timeouts + EXCLUDED.timeouts,
                 dead_lettered = c.dead_lettered + EXCLUDED.dead_lettered,
                 retrying = c.retrying + EXCLUDED.retrying,
                 dead = c.dead + EXCLUDED.dead",
        )
        .bind(&ids)
        .bind(&consumed)
        .bind(&delivered)
        .bind(&failed)
        .bind(&timeouts)
        .bind(&dead_lettered)
        .bind(&retrying)
        .bind(&dead)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn add_stats(&mut self, buckets: Vec<StatsBucket>) -> Result<(), StoreError> {
        let mut minutes = Vec::new();
        let mut dimensions = Vec::new();
        let mut keys = Vec::new();
        let mut columns: [Vec<i64>; 9] = Default::default();
        for StatsBucket {
            minute,
            dimension,
            key,
            counts: c,
        } in buckets
        {
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
        if minutes.is_empty() {
            return Ok(());
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
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn clear_task_list(&mut self) -> Result<(), StoreError> {
        sqlx::query("TRUNCATE task_view, task_counts, consumer_counters, stats_minute")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
