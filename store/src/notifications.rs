//! Changes announced to every node: keys and apps (access), brokers and
//! consumers (configuration, announced by a trigger on their events).

use sqlx::postgres::PgListener;

use crate::{Store, StoreError};

/// What a node can listen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A key or an app changed; no payload.
    Access,
    /// A broker or consumer changed; the payload is `aggregate_type:id`.
    Config,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Access => "bida_access",
            Self::Config => "bida_config",
        }
    }
}

/// A connection listening on one channel.
pub struct Notifications(PgListener);

impl Notifications {
    /// The next announcement's payload; `None` once the connection is lost,
    /// after which the caller listens again (and reloads: what was announced
    /// meanwhile was not heard). Cancel-safe.
    pub async fn next(&mut self) -> Option<String> {
        match self.0.try_recv().await {
            Ok(Some(notification)) => Some(notification.payload().to_string()),
            Ok(None) | Err(_) => None,
        }
    }
}

impl Store {
    /// Starts listening on `channel`.
    pub async fn listen(&self, channel: Channel) -> Result<Notifications, StoreError> {
        let mut listener = PgListener::connect_with(self.control()).await?;
        listener.listen(channel.name()).await?;
        Ok(Notifications(listener))
    }

    /// Tells every node (this one too) about a change on `channel`.
    pub async fn announce(&self, channel: Channel) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel.name())
            .execute(self.control())
            .await?;
        Ok(())
    }
}
