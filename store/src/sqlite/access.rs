//! Keys' hashes and usage, console sessions, and retention (which the
//! embedded store does not do: see `Retention`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::{micros, now, time, SqliteStore};
use crate::{AccessRecords, Retention, RetentionPolicy, RetentionReport, SessionRow, Sessions, StoreError};

#[async_trait]
impl AccessRecords for SqliteStore {
    async fn key_id_by_hash(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT aggregate_id FROM events
             WHERE aggregate_type = 'api_key' AND json_extract(payload, '$.KeyIssued.issue.hash') = ?
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
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for (id, at) in used {
            sqlx::query(
                "INSERT INTO api_key_usage (key_id, last_used_at) VALUES (?, ?)
                 ON CONFLICT (key_id) DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)",
            )
            .bind(id)
            .bind(micros(*at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_usage(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT key_id, last_used_at FROM api_key_usage")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(id, at)| (id, time(at))).collect())
    }
}

#[async_trait]
impl Sessions for SqliteStore {
    async fn start_session(
        &self,
        token_hash: &str,
        username: &str,
        role: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
        client_ip: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, username, role, csrf, created_at, expires_at, client_ip)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(username)
        .bind(role)
        .bind(csrf)
        .bind(now())
        .bind(micros(expires_at))
        .bind(client_ip)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT username, role, csrf, expires_at FROM console_sessions WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(token_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(username, role, csrf, expires_at)| SessionRow {
            username,
            role,
            csrf,
            expires_at: time(expires_at),
        }))
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn end_sessions_of(&self, username: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM console_sessions WHERE username = ? OR expires_at <= ?")
                .bind(username)
                .bind(now())
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}

/// Retention drops whole days of finished tasks by their Postgres
/// partitions; the embedded store keeps everything (documented in the
/// README's table of what each store has), and a pass finds nothing to do.
#[async_trait]
impl Retention for SqliteStore {
    async fn ensure_partitions(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn retain(&self, _policy: &RetentionPolicy, _now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        Ok(RetentionReport::default())
    }
}
