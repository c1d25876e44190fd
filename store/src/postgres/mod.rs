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
use sqlx::{Postgres, Transaction};

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

    /// A transaction on the main pool; see [`begin`].
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        begin(&self.pool).await
    }
}

/// Begins a transaction on a task of its own, so that it cannot be cut in
/// half. sqlx counts a transaction only once its BEGIN has answered; a
/// `begin` future dropped while waiting for that answer (a timeout or a
/// cancelled caller around a store call; at SIGTERM several are) gives the
/// connection back inside a transaction nothing will end. The next
/// statement on it without a transaction of its own (the writer's append)
/// would then run inside it, uncommitted while reported done, holding its
/// locks; a kill would lose it.
#[allow(clippy::disallowed_methods)] // the one place that may, on its own task
pub(crate) async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
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

#[cfg(test)]
mod tests {
    use bida_testkit::TestDatabase;
    use sqlx::postgres::PgPoolOptions;
    use std::time::Duration;

    /// A transaction's start cut short by its caller leaves no transaction
    /// open on the connection: the next autocommit statement on it is
    /// committed (seen from another connection).
    #[tokio::test]
    async fn a_begin_cut_short_leaves_no_transaction_behind() {
        let db = TestDatabase::create().await;
        // One connection: the cut begin's and the next statement's.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(db.url())
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE marks (n int)")
            .execute(&pool)
            .await
            .expect("create");
        let other = PgPoolOptions::new()
            .max_connections(1)
            .connect(db.url())
            .await
            .expect("connect");
        for n in 0..20 {
            // Polled once: the BEGIN goes out, and the caller gives up.
            let _ = tokio::time::timeout(Duration::ZERO, super::begin(&pool)).await;
            sqlx::query("INSERT INTO marks VALUES ($1)")
                .bind(n)
                .execute(&pool)
                .await
                .expect("insert");
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM marks WHERE n = $1")
                .bind(n)
                .fetch_one(&other)
                .await
                .expect("count");
            assert_eq!(seen, 1, "insert {n} committed");
        }
    }
}
