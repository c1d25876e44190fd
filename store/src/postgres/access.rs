//! What access control needs of the store besides the app and key events:
//! finding a key by its hash, when keys were last used, and telling every
//! node that a key or app changed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use crate::{AccessRecords, PgStore, StoreError};

#[async_trait]
impl AccessRecords for PgStore {
    async fn key_id_by_hash(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT aggregate_id FROM events
             WHERE aggregate_type = 'api_key' AND payload -> 'KeyIssued' -> 'issue' ->> 'hash' = $1
             LIMIT 1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn has_keys(&self) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'api_key')")
                .fetch_one(self.pool())
                .await?,
        )
    }

    async fn touch_keys(&self, used: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = used.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = used.iter().map(|(_, at)| *at).collect();
        sqlx::query(
            "INSERT INTO api_key_usage (key_id, last_used_at)
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[])
             ON CONFLICT (key_id) DO UPDATE
                 SET last_used_at = GREATEST(api_key_usage.last_used_at, EXCLUDED.last_used_at)",
        )
        .bind(&ids)
        .bind(&times)
        .execute(self.control())
        .await?;
        Ok(())
    }

    async fn key_usage(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as("SELECT key_id, last_used_at FROM api_key_usage")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().collect())
    }
}
