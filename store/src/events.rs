use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Store, StoreError};

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

/// The columns of a [`StoredEvent`], for queries on `events`.
pub(crate) const COLUMNS: &str =
    "position, transaction_id::text::bigint AS transaction_id, aggregate_type, aggregate_id,
                       sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata,
                       recorded_at, epoch";

impl Store {
    /// One aggregate's events, in order.
    pub async fn events_of(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence");
        Ok(sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// One aggregate's events after `after_sequence`, in order.
    pub async fn events_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
             ORDER BY sequence"
        );
        Ok(sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(after_sequence)
            .fetch_all(self.pool())
            .await?)
    }

    /// The events of many aggregates of one type, ordered by aggregate then sequence.
    pub async fn events_of_many(&self, aggregate_type: &str, ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
             ORDER BY aggregate_id, sequence"
        );
        Ok(sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(ids)
            .fetch_all(self.pool())
            .await?)
    }

    /// The aggregate's current version: its last sequence number, 0 if it has none.
    pub async fn last_sequence(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_one(self.pool())
                .await?;
        Ok(last.unwrap_or(0))
    }

    /// Up to `limit` events after `after`, from transactions that can no longer
    /// be overtaken by a running one.
    pub async fn read_feed(
        &self,
        after: FeedPosition,
        limit: i64,
        read: FeedRead<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        const SQL: &str =
            "SELECT position, transaction_id::text::bigint AS transaction_id, aggregate_type, aggregate_id,
                    sequence, event_type, event_version,
                    CASE WHEN $4::text[] IS NULL OR event_type = ANY($4) THEN
                        CASE WHEN cardinality($5::text[]) > 0 AND octet_length(payload::text) > $6
                             THEN bida_payload_without(payload, event_type || $5::text[]) ELSE payload::text END
                    END AS payload,
                    metadata::text AS metadata, recorded_at, epoch
             FROM events
             WHERE (transaction_id, position) > (($1::bigint)::text::xid8, $2)
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
             -- The table's columns, not the bigint alias: only they follow the index.
             ORDER BY events.transaction_id, events.position
             LIMIT $3";
        Ok(sqlx::query_as(SQL)
            .bind(after.transaction_id)
            .bind(after.position)
            .bind(limit)
            .bind(read.payload_types)
            .bind(read.without)
            .bind(STRIP_ABOVE_BYTES)
            .fetch_all(self.pool())
            .await?)
    }

    /// The last readable position of the feed, to measure how far readers lag.
    pub async fn feed_head(&self) -> Result<FeedPosition, StoreError> {
        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id::text::bigint, position FROM events
             WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY transaction_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(head
            .map(|(transaction_id, position)| FeedPosition {
                transaction_id,
                position,
            })
            .unwrap_or_default())
    }
}
