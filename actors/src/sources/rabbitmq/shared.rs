//! One AMQP connection for many consumers of a broker. Each lapin connection
//! runs an I/O thread of its own with its own buffers and allocator heap:
//! about 10 MiB of RSS per idle consumer when every consumer had one
//! (`bida-bench scale --only consumers`, RabbitMQ only). Consumers now share a
//! connection per broker URL, each on a channel of its own (its QoS, its
//! subscription, its unacknowledged messages), up to
//! [`CHANNELS_PER_CONNECTION`] on one connection.
//!
//! A connection lives as long as a consumer uses it (the map keeps weak
//! references). One that failed is not handed out again: consumers that
//! restart after it failed open a new one.

use lapin::Connection;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use super::source::connect;
use crate::sources::SourceError;

/// Consumers on one connection before another is opened: one I/O thread
/// reads and writes every channel of a connection (RabbitMQ allows 2,047).
pub(super) const CHANNELS_PER_CONNECTION: usize = 64;

/// Per broker URL, the connections open to it. Consumers starting together
/// wait for one another's opening (an async lock per URL) instead of each
/// opening a connection.
type Connections = Arc<tokio::sync::Mutex<Vec<Weak<Connection>>>>;

static OPEN: LazyLock<Mutex<HashMap<String, Connections>>> = LazyLock::new(Mutex::default);

fn connections_to(url: &str) -> Connections {
    OPEN.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(url.to_string())
        .or_default()
        .clone()
}

/// A connection to `url` with room for one more consumer, opened if none has.
pub(super) async fn connection(url: &str) -> Result<Arc<Connection>, SourceError> {
    let connections = connections_to(url);
    let mut connections = connections.lock().await;
    connections.retain(|weak| weak.upgrade().is_some_and(|c| c.status().connected()));
    // The upgrade held here is one of the strong references.
    let with_room = connections
        .iter()
        .filter_map(Weak::upgrade)
        .find(|c| Arc::strong_count(c) <= CHANNELS_PER_CONNECTION);
    if let Some(open) = with_room {
        return Ok(open);
    }
    let opened = Arc::new(connect(url, "bida-consumers").await?);
    connections.push(Arc::downgrade(&opened));
    Ok(opened)
}

/// Connections to `url` open now, for tests.
#[cfg(test)]
pub(super) async fn open_to(url: &str) -> usize {
    let connections = connections_to(url);
    let connections = connections.lock().await;
    connections.iter().filter(|w| w.strong_count() > 0).count()
}
