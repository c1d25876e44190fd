//! Bida's event store on Postgres.
//!
//! - [`Writer`] group-commits appends from many actors: one multi-row statement
//!   per batch, so throughput follows the database's batch rate, not its commit
//!   latency. Optimistic concurrency is kept per aggregate (a taken sequence
//!   number is a [`StoreError::Conflict`]).
//! - The task schedule is written in the same statement as the task's events.
//! - Catch-up readers follow `(transaction_id, position)`, see `migrations/`.
//! - [`EventRepository`] implements cqrs-es's `PersistedEventRepository`.

mod access;
mod aggregates;
mod checkpoints;
mod console;
mod db;
mod error;
mod events;
mod leader;
mod nodes;
mod notifications;
mod read_models;
mod repository;
mod retention;
mod schedule;
mod tasks;
mod writer;

pub use aggregates::RuntimeRow;
pub use console::SessionRow;
pub use db::{Readiness, StoreConfig, MIGRATOR};
pub use error::StoreError;
pub use events::{FeedPosition, FeedRead, StoredEvent, STRIP_ABOVE_BYTES};
pub use leader::Singleton;
pub use nodes::NodeInfo;
pub use notifications::{Channel, Notifications};
pub use read_models::{ConsumerCounterChange, Fold, StatsBucket, StatusCountChange};
pub use repository::EventRepository;
pub use retention::{DayDeferred, DayRetained, RetentionAction, RetentionConfig, RetentionPolicy, RetentionReport};
pub use schedule::{ClaimedTask, ScheduleEntry};
pub use tasks::{new_task_append, submission_epoch, task_append, task_epoch, LoadedTask, LoadedTasks, TASK_TYPE};
pub use writer::{Append, NewEvent, ScheduleWrite, Writer, WriterConfig, WriterStats};

use sqlx::postgres::{PgConnectOptions, PgPool};

/// A handle on the store: cheap to clone, shared by every actor and handler.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// A small pool for liveness and scheduling, apart from the busy one.
    control: PgPool,
    options: PgConnectOptions,
    writer: Writer,
}

impl Store {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn control(&self) -> &PgPool {
        &self.control
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Appends through the group-commit writer and waits until it is durable.
    pub async fn append(&self, append: Append) -> Result<(), StoreError> {
        self.writer.append(append).await
    }
}
