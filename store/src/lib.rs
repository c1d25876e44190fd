//! Bida's store: events, the durable schedule, checkpoints, leadership of
//! singleton readers, announcements and the read models, behind one
//! interface ([`Backend`], one trait per concern) so that nothing above this
//! crate knows which store runs.
//!
//! - Appends are group-committed: many actors' appends become one write per
//!   batch. Optimistic concurrency is kept per aggregate (a taken sequence
//!   number is a [`StoreError::Conflict`]).
//! - The task schedule is written with the task's events, atomically.
//! - Catch-up readers follow the feed by [`FeedPosition`], in commit order.
//! - [`EventRepository`] implements cqrs-es's `PersistedEventRepository`.
//!
//! Stores: `postgres/` (production, several nodes) and `sqlite/` (embedded,
//! one node, the default when no database URL is given).

mod aggregates;
mod backend;
mod console;
mod db;
mod error;
mod events;
mod export;
mod nodes;
mod notifications;
mod postgres;
mod pull;
mod read_models;
mod repository;
mod retention;
mod schedule;
mod sqlite;
mod tasks;
pub mod topics;
mod writer;

pub use aggregates::RuntimeRow;
pub use backend::*;
pub use console::SessionRow;
pub use db::{Readiness, StoreConfig};
pub use error::StoreError;
pub use events::{FeedPosition, FeedRead, StoredEvent, STRIP_ABOVE_BYTES};
pub use export::CopyError;
pub use nodes::NodeInfo;
pub use notifications::Channel;
pub(crate) use postgres::PgStore;

pub use pull::{HeldLease, LaneBacklog, LeaseRequest, Leased, MemberRow, ACK_WINDOW_SECS, EXPIRY_HOLD};
pub use read_models::{ConsumerCounterChange, StatsBucket, StatusCountChange};
pub use repository::EventRepository;
pub use retention::{DayDeferred, DayRetained, RetentionAction, RetentionConfig, RetentionPolicy, RetentionReport};
pub use schedule::{ClaimedTask, ScheduleEntry};
pub use tasks::{
    new_task_append, submission_epoch, submission_lane, task_append, task_epoch, LoadedTask, LoadedTasks, TASK_TYPE,
};
pub use writer::{Append, NewEvent, ScheduleWrite, WriterConfig, WriterStats};

use std::sync::Arc;

/// A handle on the store: cheap to clone, shared by every actor and handler.
/// What it can do is the [`Backend`]'s; callers never learn which store runs.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Where the store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A PostgreSQL database (its URL): production, several nodes.
    Postgres(String),
    /// The embedded store in this data directory: one node, no server.
    Embedded(std::path::PathBuf),
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(url) => write!(f, "the database at {}", postgres::redact(url)),
            Self::Embedded(dir) => write!(f, "the embedded store in {}", dir.display()),
        }
    }
}

impl Store {
    /// Opens the store at `location`, creating and migrating it as needed.
    /// The only place that chooses a store.
    pub async fn open_at(location: &StoreLocation, config: &StoreConfig) -> Result<Self, StoreError> {
        Ok(match location {
            StoreLocation::Postgres(url) => Self(Arc::new(PgStore::open(url, config).await?)),
            StoreLocation::Embedded(dir) => Self(Arc::new(sqlite::SqliteStore::open(dir, config).await?)),
        })
    }

    /// Opens the PostgreSQL store `database_url` names.
    pub async fn open(database_url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        Ok(Self(Arc::new(PgStore::open(database_url, config).await?)))
    }
}
