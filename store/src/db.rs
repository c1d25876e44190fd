//! What every store is configured with and answers about its health.

use serde::{Deserialize, Serialize};

use crate::WriterConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Connections in the pool shared by the writer, the API and the schedulers.
    pub pool_size: u32,
    /// How long a caller waits for a free connection before failing.
    pub acquire_timeout_ms: u64,
    /// Longest a statement may run before Postgres cancels it.
    pub statement_timeout_ms: u64,
    pub writer: WriterConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            writer: WriterConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub database: bool,
    pub migrations_applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    /// From the newest migration the store has applied (`None`: none),
    /// against the newest this build knows.
    pub(crate) fn of(applied: Result<Option<i64>, sqlx::Error>, latest: i64) -> Self {
        match applied {
            Ok(applied) => Readiness {
                database: true,
                migrations_applied: applied.unwrap_or(0) >= latest,
                error: None,
            },
            Err(e) => Readiness {
                database: false,
                migrations_applied: false,
                error: Some(e.to_string()),
            },
        }
    }

    pub fn is_ready(&self) -> bool {
        self.database && self.migrations_applied
    }
}
