//! Stored events and positions in the feed that catch-up readers follow.
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// An event as stored; `payload` and `metadata` are JSON text.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// `None` only in feed reads that asked for other event types' payloads.
    pub payload: Option<String>,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    /// The partition holding it: see [`crate::task_epoch`].
    pub epoch: i32,
}

impl StoredEvent {
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, StoreError> {
        let fail = |message: String| StoreError::Decode {
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            message,
        };
        let payload = self
            .payload
            .as_deref()
            .ok_or_else(|| fail("payload was not read".into()))?;
        serde_json::from_str(payload).map_err(|e| fail(e.to_string()))
    }

    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }
}

/// Which payloads a feed read returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeedRead<'a> {
    /// Payloads only for these event types (the others still advance the reader).
    pub payload_types: Option<&'a [&'a str]>,
    /// A JSON path removed from large payloads before they leave the database
    /// (a message body the reader does not need, say), inside the key of the
    /// event's type (serde's enum tagging), so that one path serves every
    /// event type with that field. Payloads up to [`STRIP_ABOVE_BYTES`] come
    /// whole: stripping means parsing them there.
    pub without: &'a [&'a str],
}

/// Payloads longer than this lose [`FeedRead::without`] in the database;
/// shorter ones cost less to send whole than to parse there.
pub const STRIP_ABOVE_BYTES: i32 = 4096;

/// Where a catch-up reader stands in the event stream: events are read in
/// `(transaction_id, position)` order, see `migrations/0001_event_store.up.sql`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FeedPosition {
    pub transaction_id: i64,
    pub position: i64,
}
