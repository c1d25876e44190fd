//! The built-in topics' log: messages by topic, partition and offset,
//! subscriptions' committed offsets, and which node reads which partition
//! of a subscription (see migrations/0012_topics.up.sql).
//!
//! A topic's log is created with the topic and keyed by a log id of its own,
//! so a topic deleted and created again starts afresh. Messages are kept in
//! slices by publish time (an hour, or a day for retentions of two days and
//! more): retention drops whole slices, never rows one by one.

use chrono::{DateTime, Duration, DurationRound, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A message to append to a topic's partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub partition: i32,
    pub id: Uuid,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The app whose key published it.
    pub app: Option<String>,
}

/// Where a published message landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub id: Uuid,
    pub partition: i32,
    pub offset: i64,
    pub published_at: DateTime<Utc>,
}

/// A message as the log holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogMessage {
    pub id: Uuid,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub app: Option<String>,
    pub published_at: DateTime<Utc>,
}

/// A partition's bounds: the first offset it still holds (`low`) and the
/// next it will give (`next`); equal when it holds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionBounds {
    pub partition: i32,
    pub low: i64,
    pub next: i64,
}

/// What a search of a topic's messages looks for; every field narrows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSearch {
    pub key: Option<String>,
    pub id: Option<Uuid>,
    /// Text the body contains (a scan of the time range: bound it with `from`).
    pub contains: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// A page's cursor: messages before this (published_at, partition,
    /// offset), exclusive, newest first.
    pub before: Option<(DateTime<Utc>, i32, i64)>,
    pub limit: i64,
}

/// A member of a subscription asking for its share of a topic's partitions.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// The subscription (its consumer's id).
    pub group: &'a str,
    pub topic: &'a str,
    /// The node's name for itself in the group (`bida-<node>-<consumer>`).
    pub member: &'a str,
    /// Members silent for longer are gone: their partitions are free.
    pub member_timeout: std::time::Duration,
}

/// What a member holds after a claim, and what is its share among the live
/// members: what it holds beyond its share it hands over once done with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    pub held: Vec<i32>,
    pub share: Vec<i32>,
}

/// A slice of a topic's log dropped by retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceDropped {
    pub topic: String,
    pub slice_start: DateTime<Utc>,
    /// How many messages it held: exact on the embedded store, the
    /// planner's estimate on PostgreSQL (0 for a slice never analysed).
    pub messages: i64,
}

/// How a topic's log is sliced: by the hour for short retentions, by the
/// day from two days on (fewer tables, and a day dropped in one statement).
pub fn slice_width(retention: Duration) -> Duration {
    if retention >= Duration::days(2) {
        Duration::days(1)
    } else {
        Duration::hours(1)
    }
}

/// The start of the slice holding messages published at `at`.
pub fn slice_start(at: DateTime<Utc>, width: Duration) -> DateTime<Utc> {
    at.duration_trunc(width).unwrap_or(at)
}

/// The slices every message of which is older than `retention` at `now`:
/// those whose end is at or before `now - retention`.
pub fn expired(
    slices: &[DateTime<Utc>],
    width: Duration,
    retention: Duration,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    slices
        .iter()
        .copied()
        .filter(|start| *start + width <= now - retention)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn slices_are_hours_or_days_and_expire_whole() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 13, 45, 10).unwrap();
        assert_eq!(slice_width(Duration::hours(36)), Duration::hours(1));
        assert_eq!(slice_width(Duration::days(3)), Duration::days(1));
        let day = slice_start(at, Duration::days(1));
        assert_eq!(day, Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap());
        let hour = slice_start(at, Duration::hours(1));
        assert_eq!(hour, Utc.with_ymd_and_hms(2026, 12, 5, 13, 0, 0).unwrap());
        let days: Vec<_> = (0..5).map(|n| day - Duration::days(n)).collect();
        // Three days kept at 13:45 on the 5th: the 1st ended before the 2nd 13:45.
        let gone = expired(&days, Duration::days(1), Duration::days(3), at);
        assert_eq!(gone, vec![day - Duration::days(4)]);
    }
}
