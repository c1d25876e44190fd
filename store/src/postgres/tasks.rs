//! Loading tasks from their partition, and searching bodies a day at a time.

use crate::tasks::body_needle;
use crate::{task_epoch, PgStore, StoreError, TaskStreams, TASK_TYPE};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl TaskStreams for PgStore {
    async fn task_stream_epoch(&self, id: &str) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar("SELECT epoch FROM task_streams WHERE task_id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn tasks_whose_body_contains(
        &self,
        text: &str,
        since: DateTime<Utc>,
        limit: i64,
        budget: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        let needle = body_needle(text);
        let mut tx = self.begin().await?;
        sqlx::query(&format!("SET LOCAL statement_timeout = {}", budget.as_millis().max(1)))
            .execute(&mut *tx)
            .await?;
        let ids = sqlx::query_scalar(
            "SELECT aggregate_id FROM events
             WHERE aggregate_type = $1 AND epoch >= $2 AND sequence = 1 AND recorded_at >= $3
               AND strpos(payload::text, $4) > 0
             ORDER BY position DESC LIMIT $5",
        )
        .bind(TASK_TYPE)
        .bind(task_epoch(since))
        .bind(since)
        .bind(&needle)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}
