//! Reading events, the feed (by position: one writer commits in position
//! order), checkpoints and tasks' streams.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use super::{micros, now, time, SqliteStore};
use crate::tasks::body_needle;
use crate::{
    Checkpoints, EventLog, FeedPosition, FeedRead, StoreError, StoredEvent, TaskStreams, STRIP_ABOVE_BYTES, TASK_TYPE,
};

/// The columns of a [`StoredEvent`], in [`Row`]'s order.
pub(super) const COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                                  payload, metadata, recorded_at, epoch";

type Row = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    String,
    i64,
    i32,
);

fn event(row: Row) -> StoredEvent {
    let (position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, at, epoch) =
        row;
    StoredEvent {
        position,
        transaction_id: 0,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload,
        metadata,
        recorded_at: time(at),
        epoch,
    }
}

pub(super) fn events(rows: Vec<Row>) -> Vec<StoredEvent> {
    rows.into_iter().map(event).collect()
}

/// A list for `IN (SELECT value FROM json_each(?))`.
pub(super) fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn events_of(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY sequence");
        let rows: Vec<Row> = sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(self.pool())
            .await?;
        Ok(events(rows))
    }

    async fn events_of_type(&self, aggregate_type: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = ? ORDER BY aggregate_id, sequence");
        let rows: Vec<Row> = sqlx::query_as(&sql).bind(aggregate_type).fetch_all(self.pool()).await?;
        Ok(events(rows))
    }

    async fn events_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? AND sequence > ?
             ORDER BY sequence"
        );
        let rows: Vec<Row> = sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(after_sequence)
            .fetch_all(self.pool())
            .await?;
        Ok(events(rows))
    }

    async fn events_of_many(&self, aggregate_type: &str, ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events
             WHERE aggregate_type = ? AND aggregate_id IN (SELECT value FROM json_each(?))
             ORDER BY aggregate_id, sequence"
        );
        let rows: Vec<Row> = sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(json_list(ids))
            .fetch_all(self.pool())
            .await?;
        Ok(events(rows))
    }

    async fn last_sequence(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = ? AND aggregate_id = ?")
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_one(self.pool())
                .await?;
        Ok(last.unwrap_or(0))
    }

    async fn read_feed(
        &self,
        after: FeedPosition,
        limit: i64,
        read: FeedRead<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // `without` inside the key of the event's type (serde's enum tagging).
        let without: String = read.without.iter().map(|segment| format!(".{segment}")).collect();
        let sql = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                          CASE WHEN ?1 IS NULL OR event_type IN (SELECT value FROM json_each(?1)) THEN
                              CASE WHEN ?2 <> '' AND length(payload) > ?3
                                   THEN json_remove(payload, '$.\"' || event_type || '\"' || ?2) ELSE payload END
                          END AS payload,
                          metadata, recorded_at, epoch
                   FROM events WHERE position > ?4 ORDER BY position LIMIT ?5";
        let rows: Vec<Row> = sqlx::query_as(sql)
            .bind(read.payload_types.map(json_list))
            .bind(without)
            .bind(STRIP_ABOVE_BYTES)
            .bind(after.position)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(events(rows))
    }

    async fn feed_head(&self) -> Result<FeedPosition, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(self.pool())
            .await?;
        Ok(FeedPosition {
            transaction_id: 0,
            position: head.unwrap_or(0),
        })
    }
}

#[async_trait]
impl Checkpoints for SqliteStore {
    async fn saved_checkpoint(&self, name: &str) -> Result<Option<FeedPosition>, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(position.map(|position| FeedPosition {
            transaction_id: 0,
            position,
        }))
    }

    async fn unread_events(&self, name: &str) -> Result<i64, StoreError> {
        let at = self.checkpoint(name).await?;
        Ok(sqlx::query_scalar("SELECT count(*) FROM events WHERE position > ?")
            .bind(at.position)
            .fetch_one(self.pool())
            .await?)
    }

    async fn save_checkpoint(&self, name: &str, at: FeedPosition) -> Result<(), StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        save_checkpoint_in(&mut tx, name, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Saves a checkpoint inside the transaction that folded the events.
pub(super) async fn save_checkpoint_in(
    tx: &mut Transaction<'_, Sqlite>,
    name: &str,
    at: FeedPosition,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(at.position)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl TaskStreams for SqliteStore {
    async fn task_stream_epoch(&self, id: &str) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar("SELECT epoch FROM task_streams WHERE task_id = ?")
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
        let search = sqlx::query_scalar(
            "SELECT aggregate_id FROM events
             WHERE aggregate_type = ? AND sequence = 1 AND recorded_at >= ? AND instr(payload, ?) > 0
             ORDER BY position DESC LIMIT ?",
        )
        .bind(TASK_TYPE)
        .bind(micros(since))
        .bind(&needle)
        .bind(limit)
        .fetch_all(self.pool());
        match tokio::time::timeout(budget, search).await {
            Ok(ids) => Ok(ids?),
            Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        }
    }
}
