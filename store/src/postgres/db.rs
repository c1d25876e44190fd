//! Opening the Postgres store: the database created if missing, migrations
//! applied, the pools and the group-commit writer started.

use super::writer;
use crate::prelude::*;
use crate::{Channel, Health, PgStore, Readiness, StoreConfig, StoreError};
use async_trait::async_trait;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};
use std::str::FromStr;
use std::time::Duration;

/// The schema, embedded in the binary and applied at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

impl PgStore {
    /// Connects, creating the database if it does not exist and applying
    /// migrations, then starts the group-commit writer on the current runtime.
    pub(crate) async fn open(database_url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        create_database_if_missing(database_url).await?;
        let untimed = PgConnectOptions::from_str(database_url)?
            .application_name("bida")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let options = untimed
            .clone()
            .options([("statement_timeout", config.statement_timeout_ms.to_string())]);
        let acquire = Duration::from_millis(config.acquire_timeout_ms);
        // No ping before every acquire: it is a round trip per statement, and a
        // dead connection fails its statement anyway, which callers retry.
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size.max(2))
            .test_before_acquire(false)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        // Heartbeats and schedule claims get connections of their own: a node
        // whose main pool is saturated must still prove it is alive.
        let control = PgPoolOptions::new()
            .max_connections(2)
            .test_before_acquire(false)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        // Each listener holds its connection for good: one per channel, apart
        // from the pools above, which they would otherwise drain.
        let listeners = PgPoolOptions::new()
            .max_connections(Channel::ALL.len() as u32)
            .acquire_timeout(acquire)
            .connect_lazy_with(options.clone());
        // Without the statement deadline: a migration rewriting a large event
        // store takes as long as it takes, and nothing runs before it is done.
        let mut migrating = PgConnection::connect_with(&untimed).await?;
        MIGRATOR.run(&mut migrating).await?;
        migrating.close().await?;
        let writer = writer::spawn(pool.clone(), config.writer.clone());
        let store = Self {
            pool,
            control,
            listeners,
            options,
            writer,
        };
        // Today's tasks need today's partition (the default one would keep them forever).
        store.ensure_partitions(chrono::Utc::now()).await?;
        Ok(store)
    }
}

#[async_trait]
impl Health for PgStore {
    async fn readiness(&self) -> Readiness {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await;
        Readiness::of(applied, latest)
    }
}

impl PgStore {
    pub(crate) fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }
}

async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    if Postgres::database_exists(url).await? {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => {
            tracing::info!("created database {}", redact(url));
            Ok(())
        }
        // Another node created it between our check and our CREATE.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
