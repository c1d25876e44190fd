use std::sync::Arc;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer recorded this sequence number first: the caller's view
    /// of the aggregate is stale (another node took it over, or a command
    /// raced it).
    #[error("{aggregate_type} {aggregate_id} changed concurrently: sequence {sequence} is already taken")]
    Conflict {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
    },
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("database migration failed: {0}")]
    Migration(Arc<sqlx::migrate::MigrateError>),
    #[error("stored event {aggregate_id}#{sequence} cannot be decoded: {message}")]
    Decode {
        aggregate_id: String,
        sequence: i64,
        message: String,
    },
    /// What the request names is not in the store (a topic's log, a partition).
    #[error("{0}")]
    Missing(String),
    #[error("the event writer has stopped")]
    WriterStopped,
    /// The embedded store's data directory cannot be used.
    #[error("data directory {}: {message}", dir.display())]
    DataDir { dir: std::path::PathBuf, message: String },
}

impl StoreError {
    /// True for failures that may pass when tried again (connection lost, pool
    /// timeout, deadlock, failover...).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => is_transient(e),
            Self::WriterStopped => true,
            _ => false,
        }
    }
}

/// SQLSTATE classes and codes worth retrying: connection exceptions (08),
/// serialization failure, deadlock, admin or crash shutdown, cannot connect
/// now, too many connections, statement timeout.
const TRANSIENT_STATES: [&str; 9] = [
    "40001", "40P01", "57P01", "57P02", "57P03", "53300", "53400", "57014", "55P03",
];

/// SQLite's extended result codes for a database another connection holds
/// (`SQLITE_BUSY`, `_RECOVERY`, `_SNAPSHOT`, `_TIMEOUT`; `SQLITE_LOCKED`,
/// `_SHAREDCACHE`): the busy timeout ran out under a long write (an fsync
/// on a slow disk), which passes.
const SQLITE_BUSY_CODES: [&str; 6] = ["5", "261", "517", "773", "6", "262"];

pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || TRANSIENT_STATES.contains(&code.as_ref())
                || SQLITE_BUSY_CODES.contains(&code.as_ref())
        }),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    use std::time::Duration;

    /// A write refused because another connection holds the database is
    /// tried again; a broken constraint is not.
    #[tokio::test]
    async fn a_busy_sqlite_database_is_transient_a_broken_constraint_is_not() {
        let file = std::env::temp_dir().join(format!("bida-busy-{}.db", uuid::Uuid::new_v4()));
        let options = SqliteConnectOptions::new().filename(&file).create_if_missing(true);
        let mut holder = options.clone().connect().await.expect("open");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut holder)
            .await
            .expect("create");
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut holder)
            .await
            .expect("insert");
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut holder)
            .await
            .expect_err("a duplicate key");
        assert!(!StoreError::from(duplicate).is_transient());

        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("hold");
        let mut other = options.busy_timeout(Duration::ZERO).connect().await.expect("open");
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .expect_err("the database is held");
        let busy = StoreError::from(busy);
        assert!(busy.is_transient(), "{busy}");
        sqlx::query("ROLLBACK").execute(&mut holder).await.expect("release");
        let _ = (holder.close().await, other.close().await);
        let _ = std::fs::remove_file(&file);
    }
}
