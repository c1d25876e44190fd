//! The embedded store on SQLite: one node, no database server, everything
//! in one file of a data directory.
//!
//! - SQLite has one writer at a time. The group commit (`writer.rs`) makes
//!   the most of it: every queued append goes into one transaction, each in
//!   a savepoint of its own, so one fsync covers the batch and a taken
//!   sequence number fails only its append.
//! - With one writer, events become visible in `position` order: the feed
//!   is read by position alone (transaction ids are 0).
//! - WAL journal, `synchronous = FULL`: a committed append survives kill -9
//!   and a power cut.
//! - One node: a lock on the data directory refuses a second process;
//!   leadership of singleton readers is always this node's, and
//!   announcements go through the process (`notifications.rs`).
//! - Times are stored as microseconds since 1970 (see the migration).

mod access;
mod events;
mod notifications;
mod pull;
mod read_models;
mod schedule;
mod topics;
mod writer;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous, SqliteTransactionManager,
};
use sqlx::TransactionManager;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::writer::Writer;
use crate::{Append, Appends, Health, Lead, Leadership, Readiness, Singleton, StoreConfig, StoreError, WriterStats};
use notifications::Announcer;

/// The embedded store's schema, applied at start-up.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations-sqlite");

/// The database file inside the data directory.
const DATABASE_FILE: &str = "bida.db";
/// Held (an exclusive lock) while a node uses the directory.
const LOCK_FILE: &str = "bida.lock";

pub(crate) struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
    announcer: Announcer,
    /// Kept open: the lock lasts as long as the file handle.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating on first start) the store in `dir`; refused when
    /// another process holds the directory.
    pub(crate) async fn open(dir: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::DataDir {
            dir: dir.to_path_buf(),
            message: format!("cannot create it: {e}"),
        })?;
        let lock = lock(dir)?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(false)
            // Writers queue behind each other instead of failing at once.
            .busy_timeout(Duration::from_millis(config.statement_timeout_ms.max(1_000)));
        let pool = SqlitePoolOptions::new()
            .max_connections(config.pool_size.max(2))
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            // A `begin_with` future dropped after its BEGIN ran but before
            // sqlx made the `Transaction` (a timeout, a cancelled task: sqlx
            // checks the custom BEGIN with one more round trip) gives its
            // connection back inside a transaction nobody owns, holding the
            // write lock: every later `begin` on it fails ("non-zero
            // transaction depth"), seen failing a consumer's records at
            // SIGTERM. Such a connection is closed (which rolls back).
            .after_release(|connection, _| {
                Box::pin(async move {
                    // The connection's worker runs commands in order: once
                    // it answers, a BEGIN still queued or waiting has run.
                    drop(connection.lock_handle().await?);
                    Ok(<SqliteTransactionManager as TransactionManager>::get_transaction_depth(connection) == 0)
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let announcer = Announcer::default();
        let writer = writer::spawn(pool.clone(), config.writer.clone(), announcer.clone());
        Ok(Self {
            pool,
            writer,
            announcer,
            _lock: lock,
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A deferred transaction (reads first; the write lock only if it writes).
    /// Safe to cut short: the pool's `after_release` closes a connection
    /// given back inside a transaction.
    #[allow(clippy::disallowed_methods)]
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// Takes the data directory's lock, or says who has it.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::DataDir {
            dir: dir.to_path_buf(),
            message: format!("cannot open {}: {e}", path.display()),
        })?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the next one refused.
            let _ = file.set_len(0);
            let _ = std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(StoreError::DataDir {
                dir: dir.to_path_buf(),
                message: format!(
                    "another Bida node (pid {}) is using it; the embedded store serves one node \
                     (use PostgreSQL, --database-url postgres://..., for several)",
                    holder.trim()
                ),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::DataDir {
            dir: dir.to_path_buf(),
            message: format!("cannot lock {}: {e}", path.display()),
        }),
    }
}

/// A time as stored: microseconds since 1970.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored time back; out of range (never written by Bida) reads as 1970.
pub(crate) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

pub(crate) fn now() -> i64 {
    micros(Utc::now())
}

/// `duration` before now, as stored.
pub(crate) fn ago(duration: Duration) -> i64 {
    now().saturating_sub(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
}

#[async_trait::async_trait]
impl Appends for SqliteStore {
    async fn append(&self, append: Append) -> Result<(), StoreError> {
        self.writer.append(append).await
    }

    fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }
}

#[async_trait::async_trait]
impl Health for SqliteStore {
    async fn readiness(&self) -> Readiness {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await;
        Readiness::of(applied, latest)
    }
}

/// One node holds the data directory, so it leads every singleton.
struct OnlyNode(String);

#[async_trait::async_trait]
impl Lead for OnlyNode {
    fn name(&self) -> &str {
        &self.0
    }

    async fn lead(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }
}

impl Leadership for SqliteStore {
    fn singleton(&self, name: &str) -> Singleton {
        Singleton(Box::new(OnlyNode(name.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use crate::StoreConfig;
    use std::time::Duration;

    /// A connection given back inside a transaction no `Transaction` owns
    /// (what a `begin_with` future dropped between its BEGIN and its check
    /// leaves) is not reused: afterwards every connection of the pool can
    /// begin.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_not_reused() {
        use sqlx::sqlite::SqliteTransactionManager;
        use sqlx::TransactionManager;
        let dir = std::env::temp_dir().join(format!("bida-begin-{}", uuid::Uuid::new_v4()));
        let config = StoreConfig {
            pool_size: 3,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&dir, &config).await.expect("open");
        let pool = store.pool().clone();
        let mut left = pool.acquire().await.expect("acquire");
        SqliteTransactionManager::begin(&mut left, Some("BEGIN IMMEDIATE".into()))
            .await
            .expect("begin");
        drop(left);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = Vec::new();
        for _ in 0..3 {
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .expect("every connection begins");
            sqlx::query("SELECT 1").execute(&mut *tx).await.expect("select");
            tx.rollback().await.expect("rollback");
            all.push(pool.acquire().await.expect("acquire"));
        }
        drop(all);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
