//! Announcements within the process: the embedded store serves one node, so
//! a broadcast channel per [`Channel`] reaches every listener there is.
//! Configuration changes are announced by the writer once the events of a
//! broker or consumer have committed (the Postgres store's trigger does the
//! same at commit).

use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::broadcast;

use super::SqliteStore;
use crate::{Announcements, Channel, Listener, NewEvent, Notifications, StoreError};

/// Announcements waiting for a slow listener; one that falls further behind
/// is told its listener was lost, and reloads.
const BACKLOG: usize = 1_024;

#[derive(Clone)]
pub(crate) struct Announcer(Arc<[broadcast::Sender<String>; 3]>);

impl Default for Announcer {
    fn default() -> Self {
        Self(Arc::new(std::array::from_fn(|_| broadcast::channel(BACKLOG).0)))
    }
}

impl Announcer {
    fn sender(&self, channel: Channel) -> &broadcast::Sender<String> {
        match channel {
            Channel::Access => &self.0[0],
            Channel::Config => &self.0[1],
            Channel::Topics => &self.0[2],
        }
    }

    pub(crate) fn send(&self, channel: Channel, payload: String) {
        // No listener yet is not an error: nobody needed telling.
        let _ = self.sender(channel).send(payload);
    }

    /// Called for each committed event.
    pub(crate) fn event_recorded(&self, event: &NewEvent) {
        if matches!(event.aggregate_type.as_ref(), "broker" | "consumer") {
            self.send(
                Channel::Config,
                format!("{}:{}", event.aggregate_type, event.aggregate_id),
            );
        }
    }
}

struct Subscription(broadcast::Receiver<String>);

#[async_trait]
impl Listener for Subscription {
    async fn next(&mut self) -> Option<String> {
        self.0.recv().await.ok()
    }
}

#[async_trait]
impl Announcements for SqliteStore {
    async fn listen(&self, channel: Channel) -> Result<Notifications, StoreError> {
        Ok(Notifications(Box::new(Subscription(
            self.announcer.sender(channel).subscribe(),
        ))))
    }

    async fn announce(&self, channel: Channel) -> Result<(), StoreError> {
        self.announcer.send(channel, String::new());
        Ok(())
    }
}
