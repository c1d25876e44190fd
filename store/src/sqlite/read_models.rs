//! The task list's read models: a page folded in one write transaction with
//! its checkpoint, lists and statistics read back.

use async_trait::async_trait;
use bida_domain::stats::{Overview, StatsQuery, StatsSeries};
use bida_domain::task::{EndpointHost, TaskCursor, TaskFilter, TaskPage, TaskStatus, TaskSummary};
use chrono::{TimeDelta, Utc};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use std::collections::HashMap;

use super::events::{json_list, save_checkpoint_in};
use super::{micros, now, time, SqliteStore};
use crate::read_models::{by_status_of, counts, overview_of, page_of, series_of, summaries_of};
use crate::{
    ConsumerCounterChange, FeedPosition, Fold, FoldPage, Folds, StatsBucket, StatsReads, StatusCountChange, StoreError,
    TaskListReads,
};

struct SqliteFold {
    tx: Transaction<'static, Sqlite>,
    name: String,
}

#[async_trait]
impl Folds for SqliteStore {
    async fn begin_fold(&self, name: &str, at: FeedPosition) -> Result<Option<Fold>, StoreError> {
        // IMMEDIATE: the write lock first, so the fold never fails to upgrade.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if current.unwrap_or(0) != at.position {
            return Ok(None);
        }
        Ok(Some(Box::new(SqliteFold {
            tx,
            name: name.to_string(),
        })))
    }

    async fn begin_rebuild(&self, name: &str) -> Result<Fold, StoreError> {
        Ok(Box::new(SqliteFold {
            tx: self.pool().begin_with("BEGIN IMMEDIATE").await?,
            name: name.to_string(),
        }))
    }
}

#[async_trait]
impl FoldPage for SqliteFold {
    async fn commit(mut self: Box<Self>, last: FeedPosition) -> Result<(), StoreError> {
        save_checkpoint_in(&mut self.tx, &self.name, last).await?;
        self.tx.commit().await?;
        Ok(())
    }

    async fn mark(&mut self, name: &str) -> Result<Option<FeedPosition>, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(position.map(|position| FeedPosition {
            transaction_id: 0,
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
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, doc FROM task_view WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json_list(ids))
                .fetch_all(&mut *self.tx)
                .await?;
        summaries_of(rows)
    }

    async fn save_task_summaries(&mut self, summaries: Vec<TaskSummary>) -> Result<(), StoreError> {
        // A consumer's tasks share one URL: parse it once per run of them.
        let mut last: Option<(String, Option<String>)> = None;
        for summary in summaries {
            let host = match &last {
                Some((url, host)) if *url == summary.url => host.clone(),
                _ => {
                    let host = EndpointHost::of_url(&summary.url).map(|host| host.to_string());
                    last = Some((summary.url.clone(), host.clone()));
                    host
                }
            };
            let doc = serde_json::to_string(&summary).map_err(|e| StoreError::Decode {
                aggregate_id: summary.id.clone(),
                sequence: 0,
                message: e.to_string(),
            })?;
            sqlx::query(
                "INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id,
                                        endpoint_host)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE
                     SET status = excluded.status, updated_at = excluded.updated_at, doc = excluded.doc,
                         endpoint_host = excluded.endpoint_host",
            )
            .bind(&summary.id)
            .bind(summary.status.as_str())
            .bind(&summary.source_app)
            .bind(&summary.target_app)
            .bind(micros(summary.created_at))
            .bind(micros(summary.updated_at))
            .bind(doc)
            .bind(&summary.consumer_id)
            .bind(host)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn add_status_counts(&mut self, changes: &[StatusCountChange]) -> Result<(), StoreError> {
        for change in changes.iter().filter(|c| c.change != 0) {
            sqlx::query(
                "INSERT INTO task_counts (status, source_app, target_app, n) VALUES (?, ?, ?, ?)
                 ON CONFLICT (status, source_app, target_app) DO UPDATE SET n = n + excluded.n",
            )
            .bind(change.status.as_str())
            .bind(&change.source_app)
            .bind(&change.target_app)
            .bind(change.change)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn add_consumer_counters(&mut self, changes: Vec<(String, ConsumerCounterChange)>) -> Result<(), StoreError> {
        for (id, c) in changes {
            sqlx::query(
                "INSERT INTO consumer_counters
                     (consumer_id, consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (consumer_id) DO UPDATE SET
                     consumed = consumed + excluded.consumed,
                     delivered = delivered + excluded.delivered,
                     failed_attempts = failed_attempts + excluded.failed_attempts,
                     timeouts = timeouts + excluded.timeouts,
                     dead_lettered = dead_lettered + excluded.dead_lettered,
                     retrying = retrying + excluded.retrying,
                     dead = dead + excluded.dead",
            )
            .bind(id)
            .bind(c.consumed)
            .bind(c.delivered)
            .bind(c.failed_attempts)
            .bind(c.timeouts)
            .bind(c.dead_lettered)
            .bind(c.retrying)
            .bind(c.dead)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn add_stats(&mut self, buckets: Vec<StatsBucket>) -> Result<(), StoreError> {
        for StatsBucket {
            minute,
            dimension,
            key,
            counts: c,
        } in buckets
        {
            sqlx::query(
                "INSERT INTO stats_minute (minute, dimension, key, submitted, attempts, delivered, failed, retried,
                                           timeouts, dead, latency_sum_ms, latency_max_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (dimension, key, minute) DO UPDATE SET
                     submitted = submitted + excluded.submitted,
                     attempts = attempts + excluded.attempts,
                     delivered = delivered + excluded.delivered,
                     failed = failed + excluded.failed,
                     retried = retried + excluded.retried,
                     timeouts = timeouts + excluded.timeouts,
                     dead = dead + excluded.dead,
                     latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms,
                     latency_max_ms = max(latency_max_ms, excluded.latency_max_ms)",
            )
            .bind(micros(minute))
            .bind(dimension.as_str())
            .bind(key)
            .bind(c.submitted)
            .bind(c.attempts)
            .bind(c.delivered)
            .bind(c.failed)
            .bind(c.retried)
            .bind(c.timeouts)
            .bind(c.dead)
            .bind(c.latency_sum_ms)
            .bind(c.latency_max_ms)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn clear_task_list(&mut self) -> Result<(), StoreError> {
        for table in ["task_view", "task_counts", "consumer_counters", "stats_minute"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }
}

/// Newest first (pages) or oldest first (replay).
#[derive(Clone, Copy, PartialEq)]
enum Order {
    NewestFirst,
    OldestFirst,
}

impl Order {
    fn sql(self, table: &str) -> String {
        match self {
            Self::NewestFirst => format!(" ORDER BY {table}created_at DESC, {table}id DESC"),
            Self::OldestFirst => format!(" ORDER BY {table}created_at, {table}id"),
        }
    }
}

/// Each branch walks one index in list order and stops at the limit; an
/// `app` filter is two branches (source, then target app), merged after.
/// Rows: id, summary document, observed status.
fn select<'a>(
    filter: &'a TaskFilter,
    after: Option<&'a TaskCursor>,
    order: Order,
    limit: i64,
    now: i64,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::new("SELECT id, doc, observed FROM (");
    let branches: Vec<Option<(&str, &String)>> = match &filter.app {
        Some(app) => vec![Some(("source_app", app)), Some(("target_app", app))],
        None => vec![None],
    };
    for (n, branch) in branches.iter().enumerate() {
        if n > 0 {
            query.push(" UNION ALL ");
        }
        // A due task claimed by the node is being delivered.
        query.push("SELECT * FROM (SELECT v.id, v.created_at, v.doc, CASE WHEN v.status IN ('pending', 'retrying') AND s.owner IS NOT NULL AND s.due_at <= ");
        query
            .push_bind(now)
            .push(" THEN 'delivering' ELSE v.status END AS observed");
        if filter.status == Some(TaskStatus::Delivering) {
            query.push(
                " FROM task_schedule s JOIN task_view v ON v.id = s.task_id WHERE s.owner IS NOT NULL AND s.due_at <= ",
            );
            query.push_bind(now).push(" AND v.status IN ('pending', 'retrying')");
        } else {
            query.push(" FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id WHERE 1");
            // A literal: only then may the planner use the partial status index.
            if let Some(status) = filter.status {
                query.push(format_args!(" AND v.status = '{}'", status.as_str()));
            }
            if matches!(filter.status, Some(TaskStatus::Pending | TaskStatus::Retrying)) {
                query
                    .push(" AND NOT (s.owner IS NOT NULL AND s.due_at <= ")
                    .push_bind(now)
                    .push(")");
            }
        }
        if let Some((column, app)) = branch {
            query.push(format!(" AND v.{column} = ")).push_bind(*app);
            if n > 0 {
                // Counted once when it is both the source and the target.
                query.push(" AND v.source_app IS NOT ").push_bind(*app);
            }
        }
        if let Some(app) = &filter.source_app {
            query.push(" AND v.source_app = ").push_bind(app);
        }
        if let Some(app) = &filter.target_app {
            query.push(" AND v.target_app = ").push_bind(app);
        }
        if let Some(consumer) = &filter.consumer_id {
            query.push(" AND v.consumer_id = ").push_bind(consumer);
        }
        if let Some(host) = &filter.endpoint_host {
            query.push(" AND v.endpoint_host = ").push_bind(host.as_str());
        }
        if let Some(produced_to) = &filter.produced_to {
            query
                .push(" AND json_extract(v.doc, '$.url') LIKE ")
                .push_bind(produced_to.like_pattern())
                .push(" ESCAPE '\\'");
        }
        if let Some(ids) = &filter.ids {
            query
                .push(" AND v.id IN (SELECT value FROM json_each(")
                .push_bind(json_list(ids))
                .push("))");
        }
        if let Some(after) = filter.created_after {
            query.push(" AND v.created_at >= ").push_bind(micros(after));
        }
        if let Some(before) = filter.created_before {
            query.push(" AND v.created_at < ").push_bind(micros(before));
        }
        if let Some(cursor) = after {
            query
                .push(" AND (v.created_at, v.id) < (")
                .push_bind(micros(cursor.created_at));
            query.push(", ").push_bind(&cursor.id).push(")");
        }
        query.push(order.sql("v."));
        query.push(" LIMIT ").push_bind(limit).push(")");
    }
    query.push(")").push(order.sql("")).push(" LIMIT ").push_bind(limit);
    query
}

#[async_trait]
impl TaskListReads for SqliteStore {
    async fn task_page(
        &self,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, StoreError> {
        if filter.matches_nothing() {
            return Ok(TaskPage::default());
        }
        let rows: Vec<(String, String, String)> = select(filter, after, Order::NewestFirst, limit + 1, now())
            .build_query_as()
            .fetch_all(self.pool())
            .await?;
        page_of(rows, limit)
    }

    async fn task_ids(&self, filter: &TaskFilter, limit: i64) -> Result<Vec<String>, StoreError> {
        if filter.matches_nothing() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, String)> = select(filter, None, Order::OldestFirst, limit, now())
            .build_query_as()
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(id, _, _)| id).collect())
    }
}

#[async_trait]
impl StatsReads for SqliteStore {
    async fn stats_series(&self, query: &StatsQuery, max_series: i64) -> Result<Vec<StatsSeries>, StoreError> {
        type Row = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
        let step = query.step.seconds() * 1_000_000;
        let rows: Vec<Row> = sqlx::query_as(
            "WITH chosen AS (
                 SELECT key FROM stats_minute
                 WHERE dimension = ?1 AND (?2 IS NULL OR key = ?2) AND minute >= ?4 AND minute < ?5
                 GROUP BY key ORDER BY sum(submitted + attempts) DESC, key LIMIT ?6
             )
             SELECT s.key, (s.minute / ?3) * ?3 AS at,
                    sum(submitted), sum(attempts), sum(delivered), sum(failed), sum(retried), sum(timeouts),
                    sum(dead), sum(latency_sum_ms), max(latency_max_ms)
             FROM stats_minute s JOIN chosen USING (key)
             WHERE s.dimension = ?1 AND s.minute >= ?4 AND s.minute < ?5
             GROUP BY s.key, at ORDER BY s.key, at",
        )
        .bind(query.dimension.as_str())
        .bind(&query.key)
        .bind(step)
        .bind(micros(query.from))
        .bind(micros(query.to))
        .bind(max_series)
        .fetch_all(self.pool())
        .await?;
        Ok(series_of(rows.into_iter().map(
            |(key, at, a, b, c, d, e, f, g, h, i)| (key, time(at), counts([a, b, c, d, e, f, g, h, i])),
        )))
    }

    async fn tasks_by_status(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, sum(n) FROM task_counts GROUP BY status")
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
        let done = sqlx::query("DELETE FROM stats_minute WHERE minute < ?")
            .bind(micros(Utc::now() - keep))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
