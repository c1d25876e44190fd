//! One node at a time runs each singleton reader (a projection, the notifier).
//!
//! Leadership is a session-level advisory lock on a connection of its own: it
//! holds no transaction open (which would hold back every catch-up reader, see
//! `read_feed`) and is released by Postgres the moment the node dies.

use sqlx::{Connection, PgConnection};

use crate::{Store, StoreError};

/// Advisory lock class of Bida's singletons ("BIDA").
const LOCK_CLASS: i32 = 0x4249_4441;

pub struct Leadership {
    connection: PgConnection,
    name: String,
}

impl Store {
    /// Becomes the leader of `name` if no other node is.
    pub async fn try_lead(&self, name: &str) -> Result<Option<Leadership>, StoreError> {
        let mut connection = PgConnection::connect_with(self.connect_options()).await?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .fetch_one(&mut connection)
            .await?;
        if acquired {
            Ok(Some(Leadership {
                connection,
                name: name.to_string(),
            }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }
}

impl Leadership {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lock is still ours: the connection that holds it is alive.
    pub async fn still_leading(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }
}
