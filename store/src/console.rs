//! Console sessions: a browser's login, kept by the SHA-256 of its cookie.

use chrono::{DateTime, Utc};

/// A live session, as a request finds it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub username: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}
