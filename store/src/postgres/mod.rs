//! The store on PostgreSQL: the production store, shared by several nodes.
//!
//! - The group-commit writer (`writer.rs`) turns appends from many actors
//!   into one multi-row statement per batch, so throughput follows the
//!   database's batch rate, not its commit latency.
//! - The task schedule is written in the same statement as the task's events.
//! - Catch-up readers follow `(transaction_id, position)`, see `migrations/`.
//! - Leadership of singleton readers is an advisory lock (`leader.rs`);
//!   announcements are LISTEN/NOTIFY (`notifications.rs`).

mod access;
mod aggregates;
pub(crate) mod checkpoints;
mod console;
mod db;
pub(crate) mod events;
mod leader;
mod nodes;
mod notifications;
mod pull;
mod read_models;
mod retention;
mod schedule;
mod tasks;
mod topics;
mod writer;

pub(crate) use db::redact;

use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::writer::Writer;
use crate::{Append, Appends, StoreError, WriterStats};

/// The store on PostgreSQL: several nodes share it.
pub(crate) struct PgStore {
    pool: PgPool,
    /// A small pool for liveness and scheduling, apart from the busy one.
    control: PgPool,
    /// Connections of LISTEN, one per channel.
    listeners: PgPool,
    options: PgConnectOptions,
    writer: Writer,
}

impl PgStore {
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn control(&self) -> &PgPool {
        &self.control
    }

    pub(crate) fn listeners(&self) -> &PgPool {
        &self.listeners
    }
}

#[async_trait::async_trait]
impl Appends for PgStore {
    async fn append(&self, append: Append) -> Result<(), StoreError> {
        self.writer.append(append).await
    }

    fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    fn postgres_pool(&self) -> Option<&PgPool> {
        Some(&self.pool)
    }
}
