//! One node at a time runs each singleton reader (a projection, the notifier).
//!
//! Leadership is a session-level advisory lock on a connection of its own: it
//! holds no transaction open (which would hold back every catch-up reader, see
//! `read_feed`) and is released by Postgres the moment the node dies. The
//! connection is kept between tries, so waiting nodes do not churn connections.

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::{Lead, Leadership, PgStore, Singleton, StoreError};

/// Advisory lock class of Bida's singletons ("BIDA").
const LOCK_CLASS: i32 = 0x4249_4441;

struct PgSingleton {
    options: PgConnectOptions,
    name: String,
    connection: Option<PgConnection>,
    leading: bool,
}

impl Leadership for PgStore {
    fn singleton(&self, name: &str) -> Singleton {
        Singleton(Box::new(PgSingleton {
            options: self.connect_options().clone(),
            name: name.to_string(),
            connection: None,
            leading: false,
        }))
    }
}

#[async_trait]
impl Lead for PgSingleton {
    fn name(&self) -> &str {
        &self.name
    }

    /// A lost connection loses the lead (Postgres released the lock with it).
    async fn lead(&mut self) -> Result<bool, StoreError> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(PgConnection::connect_with(&self.options).await?),
        };
        let checked = if self.leading {
            connection.ping().await.map(|()| true)
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(&self.name)
                .fetch_one(&mut *connection)
                .await
        };
        match checked {
            Ok(leading) => {
                self.leading = leading;
                Ok(leading)
            }
            Err(e) => {
                self.connection = None;
                self.leading = false;
                Err(e.into())
            }
        }
    }
}
