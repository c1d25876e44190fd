//! Reading events: one aggregate's, many at once, and the feed in commit order.

use crate::{EventLog, FeedPosition, FeedRead, PgStore, StoreError, StoredEvent, STRIP_ABOVE_BYTES};
use async_trait::async_trait;

/// The columns of a [`StoredEvent`], for queries on `events`.
pub(crate) const COLUMNS: &str =
    "position, transaction_id::text::bigint AS transaction_id, aggregate_type, aggregate_id,
                       sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata,
                       recorded_at, epoch";

#[async_trait]
impl EventLog for PgStore {
    async fn events_of(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence");
        Ok(sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(self.pool())
            .await?)
    }

    async fn events_of_type(&self, aggregate_type: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence");
        Ok(sqlx::query_as(&sql).bind(aggregate_type).fetch_all(self.pool()).await?)
    }

    async fn events_after(
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

    async fn events_of_many(&self, aggregate_type: &str, ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
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

    async fn last_sequence(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_one(self.pool())
                .await?;
        Ok(last.unwrap_or(0))
    }

    async fn read_feed(
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

    async fn feed_head(&self) -> Result<FeedPosition, StoreError> {
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
