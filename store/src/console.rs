//! Console sessions: a browser's login, kept by the SHA-256 of its cookie.

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

/// A live session, as a request finds it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub username: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub async fn start_session(
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

    /// The session, unless it expired or ended.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT username, role, csrf, expires_at FROM console_sessions
             WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.control())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (deleted, or its password or role changed),
    /// and forgets expired ones.
    pub async fn end_sessions_of(&self, username: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM console_sessions WHERE username = $1 OR expires_at <= now()")
                .bind(username)
                .execute(self.control())
                .await?
                .rows_affected(),
        )
    }
}
