//! Console sessions in a table, found by the hash of their cookie.

use crate::{PgStore, SessionRow, Sessions, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl Sessions for PgStore {
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
            "INSERT INTO console_sessions (token_hash, username, role, csrf, expires_at, client_ip)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(username)
        .bind(role)
        .bind(csrf)
        .bind(expires_at)
        .bind(client_ip)
        .execute(self.control())
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT username, role, csrf, expires_at FROM console_sessions
             WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.control())
            .await?;
        Ok(())
    }

    async fn end_sessions_of(&self, username: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM console_sessions WHERE username = $1 OR expires_at <= now()")
                .bind(username)
                .execute(self.control())
                .await?
                .rows_affected(),
        )
    }
}
