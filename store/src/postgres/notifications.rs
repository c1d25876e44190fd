//! Announcements as Postgres LISTEN/NOTIFY.

use crate::{Announcements, Channel, Listener, Notifications, PgStore, StoreError};
use async_trait::async_trait;
use sqlx::postgres::PgListener;

/// A Postgres connection listening on one channel.
struct PgChannel(PgListener);

#[async_trait]
impl Listener for PgChannel {
    async fn next(&mut self) -> Option<String> {
        match self.0.try_recv().await {
            Ok(Some(notification)) => Some(notification.payload().to_string()),
            Ok(None) | Err(_) => None,
        }
    }
}

#[async_trait]
impl Announcements for PgStore {
    async fn listen(&self, channel: Channel) -> Result<Notifications, StoreError> {
        let mut listener = PgListener::connect_with(self.listeners()).await?;
        listener.listen(channel.name()).await?;
        Ok(Notifications(Box::new(PgChannel(listener))))
    }

    async fn announce(&self, channel: Channel) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel.name())
            .execute(self.control())
            .await?;
        Ok(())
    }
}
