//! How far each catch-up reader has read the event feed.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use crate::{Checkpoints, FeedPosition, PgStore, StoreError};

#[async_trait]
impl Checkpoints for PgStore {
    async fn saved_checkpoint(&self, name: &str) -> Result<Option<FeedPosition>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT transaction_id::text::bigint, position FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(transaction_id, position)| FeedPosition {
            transaction_id,
            position,
        }))
    }

    async fn unread_events(&self, name: &str) -> Result<i64, StoreError> {
        let at = self.checkpoint(name).await?;
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events
             WHERE (transaction_id, position) > (($1::bigint)::text::xid8, $2)",
        )
        .bind(at.transaction_id)
        .bind(at.position)
        .fetch_one(self.pool())
        .await?;
        Ok(behind)
    }

    async fn save_checkpoint(&self, name: &str, at: FeedPosition) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        save_checkpoint_in(&mut tx, name, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Saves a checkpoint inside the transaction that applied the events, so a
/// projection folds each event exactly once.
pub(crate) async fn save_checkpoint_in(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    at: FeedPosition,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, transaction_id, position, updated_at)
         VALUES ($1, ($2::bigint)::text::xid8, $3, now())
         ON CONFLICT (name) DO UPDATE
             SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position, updated_at = now()",
    )
    .bind(name)
    .bind(at.transaction_id)
    .bind(at.position)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
