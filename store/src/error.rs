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
    #[error("the event writer has stopped")]
    WriterStopped,
}

impl StoreError {
    /// True for failures that may pass when tried again (connection lost, pool timeout...).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => !matches!(**e, sqlx::Error::Database(_)),
            _ => false,
        }
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
