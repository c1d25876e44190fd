//! Claiming and releasing schedule rows; `FOR UPDATE SKIP LOCKED` lets
//! several nodes claim at once without waiting for each other.

use crate::{ClaimedTask, PgStore, Schedule, ScheduleEntry, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl Schedule for PgStore {
    async fn claim_due(&self, node: Uuid, lookahead: Duration, limit: i64) -> Result<Vec<ClaimedTask>, StoreError> {
        Ok(sqlx::query_as(
            "WITH due AS (
                 SELECT task_id FROM task_schedule
                 WHERE owner IS NULL AND lane IS NULL AND due_at <= now() + make_interval(secs => $2)
                 ORDER BY due_at
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE task_schedule s SET owner = $1, updated_at = now()
             FROM due WHERE s.task_id = due.task_id
             RETURNING s.task_id, s.due_at",
        )
        .bind(node)
        .bind(lookahead.as_secs_f64())
        .bind(limit)
        .fetch_all(self.control())
        .await?)
    }

    async fn free_tasks_of_dead_nodes(&self, caller: Uuid, ttl: Duration) -> Result<u64, StoreError> {
        // Owners are few; look each up once rather than per held task.
        let result = sqlx::query(
            "WITH owners AS (SELECT DISTINCT owner FROM task_schedule WHERE owner IS NOT NULL AND owner <> $2),
                  dead AS (
                      SELECT o.owner FROM owners o
                      WHERE NOT EXISTS (
                          SELECT 1 FROM nodes n
                          WHERE n.id = o.owner AND n.stopped_at IS NULL
                            AND n.heartbeat_at > now() - make_interval(secs => $1)))
             UPDATE task_schedule SET owner = NULL, updated_at = now()
             WHERE owner IN (SELECT owner FROM dead)",
        )
        .bind(ttl.as_secs_f64())
        .bind(caller)
        .execute(self.control())
        .await?;
        Ok(result.rows_affected())
    }

    async fn tasks_owned_by(&self, node: Uuid, older_than: Duration) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT task_id FROM task_schedule
             WHERE owner = $1 AND updated_at < now() - make_interval(secs => $2)",
        )
        .bind(node)
        .bind(older_than.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    async fn release_tasks(&self, node: Uuid, task_ids: &[String]) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE task_schedule SET owner = NULL, updated_at = now() WHERE owner = $1 AND task_id = ANY($2)",
        )
        .bind(node)
        .bind(task_ids)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    async fn release_all_tasks(&self, node: Uuid) -> Result<u64, StoreError> {
        let result = sqlx::query("UPDATE task_schedule SET owner = NULL, updated_at = now() WHERE owner = $1")
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn schedule_of(&self, task_ids: &[String]) -> Result<HashMap<String, ScheduleEntry>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>, Option<Uuid>)> =
            sqlx::query_as("SELECT task_id, due_at, owner FROM task_schedule WHERE task_id = ANY($1)")
                .bind(task_ids)
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, due_at, owner)| (id, ScheduleEntry { due_at, owner }))
            .collect())
    }

    async fn schedule_depth(&self, late: Duration) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE due_at < now() - make_interval(secs => $1))
             FROM task_schedule WHERE lane IS NULL",
        )
        .bind(late.as_secs_f64())
        .fetch_one(self.pool())
        .await?)
    }
}
