//! The built-in topics' log on SQLite (see migrations-sqlite/0003_topics.sql).
//!
//! - Messages live in one table per (topic's log, slice of publish time),
//!   `topic_messages_<log_id>_<yyyymmddhh>`, made on demand and listed in
//!   `topic_slices`; retention drops whole tables. Only names made of a log
//!   id and a slice's start (integers) are ever formatted into SQL.
//! - One writer at a time: a publish takes the write lock first (`BEGIN
//!   IMMEDIATE`), so offsets are given and committed in order without row
//!   locks.
//! - A log's publish times never go back (a clock set back publishes at the
//!   last time given), so its slices hold ascending offsets: a read walks
//!   the slices oldest first and stops once it has enough.
//! - Reads run in one read transaction: a slice dropped meanwhile is still
//!   there for them (WAL snapshot).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::SqliteConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

use super::events::json_list;
use super::{micros, now, time, SqliteStore};
use crate::topics::{
    expired, slice_start, slice_width, ClaimRequest, Claimed, LogMessage, LogSearch, PartitionBounds, Publish,
    Published, SliceDropped,
};
use crate::{Channel, StoreError, TopicLog};

/// Members silent this long are forgotten (as on Postgres).
const FORGET_MEMBERS_AFTER: Duration = Duration::from_secs(24 * 3_600);

type MessageRow = (
    String,
    i32,
    i64,
    Option<String>,
    String,
    Option<String>,
    Vec<u8>,
    Option<String>,
    i64,
);

const MESSAGE_COLUMNS: &str = r#"id, partition, "offset", key, headers, content_type, body, app, published_at"#;

fn message((id, partition, offset, key, headers, content_type, body, app, published_at): MessageRow) -> LogMessage {
    LogMessage {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        partition,
        offset,
        key,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        content_type,
        body,
        app,
        published_at: time(published_at),
    }
}

fn span(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The table of a log's slice starting at `start` (microseconds): made of
/// integers only, so it is safe to format into SQL.
fn slice_table(log_id: i64, start: i64) -> String {
    format!("topic_messages_{log_id}_{}", time(start).format("%Y%m%d%H"))
}

/// A topic's log as the store keeps it.
#[derive(Clone, Copy, Debug)]
struct Log {
    id: i64,
    /// The width of its slices.
    width: TimeDelta,
}

impl Log {
    /// The start (microseconds) of the slice holding messages published at `at`.
    fn slice_of(self, at: i64) -> i64 {
        micros(slice_start(time(at), self.width))
    }

    fn width_micros(self) -> i64 {
        self.width.num_microseconds().unwrap_or(i64::MAX)
    }
}

async fn log_of(conn: &mut SqliteConnection, topic: &str) -> Result<Log, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT log_id, slice_ms FROM topic_logs WHERE topic = ?")
        .bind(topic)
        .fetch_optional(&mut *conn)
        .await?;
    let (id, slice_ms) = row.ok_or_else(|| StoreError::Missing(format!("no topic named {topic}")))?;
    Ok(Log {
        id,
        width: TimeDelta::milliseconds(slice_ms),
    })
}

/// A log's slices' starts, oldest first.
async fn slices(conn: &mut SqliteConnection, log_id: i64) -> Result<Vec<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT slice_start FROM topic_slices WHERE log_id = ? ORDER BY slice_start")
            .bind(log_id)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// Makes the slice of `log_id` starting at `start` unless it exists; within
/// the caller's write transaction.
async fn ensure_slice(conn: &mut SqliteConnection, log_id: i64, start: i64) -> Result<(), StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM topic_slices WHERE log_id = ? AND slice_start = ?)")
            .bind(log_id)
            .bind(start)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        return Ok(());
    }
    let table = slice_table(log_id, start);
    // A rowid table: rows are never deleted one by one, so its largest rowid
    // is how many messages it holds.
    let statements = [
        format!(
            r#"CREATE TABLE IF NOT EXISTS {table} (
                   partition     INTEGER NOT NULL,
                   "offset"      INTEGER NOT NULL,
                   id            TEXT NOT NULL,
                   key           TEXT,
                   headers       TEXT NOT NULL,
                   content_type  TEXT,
                   body          BLOB NOT NULL,
                   app           TEXT,
                   published_at  INTEGER NOT NULL,
                   PRIMARY KEY (partition, "offset")
               )"#
        ),
        format!(r#"CREATE INDEX IF NOT EXISTS {table}_time ON {table} (published_at, partition, "offset")"#),
        format!("CREATE INDEX IF NOT EXISTS {table}_id ON {table} (id)"),
        format!("CREATE INDEX IF NOT EXISTS {table}_key ON {table} (key, published_at) WHERE key IS NOT NULL"),
    ];
    for statement in &statements {
        sqlx::query(statement).persistent(false).execute(&mut *conn).await?;
    }
    sqlx::query("INSERT INTO topic_slices (log_id, slice_start, table_name) VALUES (?, ?, ?)")
        .bind(log_id)
        .bind(start)
        .bind(&table)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The latest publish time of a log in its slices starting at `from` or
/// later (a clock set back leaves later ones behind it).
async fn last_published(conn: &mut SqliteConnection, log_id: i64, from: i64) -> Result<Option<i64>, StoreError> {
    let starts: Vec<i64> = sqlx::query_scalar(
        "SELECT slice_start FROM topic_slices WHERE log_id = ? AND slice_start >= ? ORDER BY slice_start DESC",
    )
    .bind(log_id)
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    for start in starts {
        let last: Option<i64> =
            sqlx::query_scalar(&format!("SELECT max(published_at) FROM {}", slice_table(log_id, start)))
                .fetch_one(&mut *conn)
                .await?;
        if last.is_some() {
            return Ok(last);
        }
    }
    Ok(None)
}

/// Each partition of `open`'s first offset in a slice's table (published at
/// or after `at`, if given), or `None` when the slice holds none of it.
async fn first_offsets(
    conn: &mut SqliteConnection,
    table: &str,
    open: &BTreeSet<i32>,
    at: Option<i64>,
) -> Result<Vec<(i32, Option<i64>)>, StoreError> {
    let partitions: Vec<i32> = open.iter().copied().collect();
    let sql = match at {
        None => format!(
            r#"SELECT CAST(p.value AS INTEGER), (SELECT min("offset") FROM {table} WHERE partition = p.value)
               FROM json_each(?1) p"#
        ),
        Some(_) => format!(
            r#"SELECT CAST(p.value AS INTEGER),
                      (SELECT min("offset") FROM {table} WHERE partition = p.value AND published_at >= ?2)
               FROM json_each(?1) p"#
        ),
    };
    let query = sqlx::query_as(&sql).bind(json_list(&partitions));
    let query = match at {
        Some(at) => query.bind(at),
        None => query,
    };
    Ok(query.fetch_all(&mut *conn).await?)
}

/// Writes a subscription's offsets, each with `update` on conflict.
async fn write_offsets(
    store: &SqliteStore,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
    update: &str,
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO topic_offsets (group_id, topic, partition, next_offset) VALUES (?, ?, ?, ?)
         ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = {update}"
    );
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    for (partition, offset) in offsets {
        sqlx::query(&sql)
            .bind(group)
            .bind(topic)
            .bind(partition)
            .bind(offset)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

impl SqliteStore {
    /// Each partition's next offset, and the first offset it still holds
    /// (published at or after `at`, in µs, when given): publish times
    /// ascend with offsets, so the first slice holding one of a
    /// partition's messages (ending after `at`) has its first.
    async fn first_kept(
        &self,
        topic: &str,
        at: Option<i64>,
    ) -> Result<(Vec<(i32, i64)>, HashMap<i32, i64>), StoreError> {
        let mut tx = self.begin().await?;
        let log = log_of(&mut tx, topic).await?;
        let partitions: Vec<(i32, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM topic_partitions WHERE log_id = ? ORDER BY partition")
                .bind(log.id)
                .fetch_all(&mut *tx)
                .await?;
        let mut open: BTreeSet<i32> = partitions.iter().map(|(p, _)| *p).collect();
        let mut found: HashMap<i32, i64> = HashMap::new();
        for start in slices(&mut tx, log.id).await? {
            if open.is_empty() {
                break;
            }
            if at.is_some_and(|at| start.saturating_add(log.width_micros()) <= at) {
                continue;
            }
            let table = slice_table(log.id, start);
            let within = at.filter(|at| start < *at);
            for (partition, first) in first_offsets(&mut tx, &table, &open, within).await? {
                if let Some(first) = first {
                    found.insert(partition, first);
                    open.remove(&partition);
                }
            }
        }
        tx.commit().await?;
        Ok((partitions, found))
    }
}

#[async_trait]
impl TopicLog for SqliteStore {
    async fn shape_log(&self, topic: &str, partitions: i32, retention: TimeDelta) -> Result<(), StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        // The width of a log's slices is set when it is made.
        let (log_id, slice_ms): (i64, i64) = sqlx::query_as(
            "INSERT INTO topic_logs (topic, partitions, retention_ms, slice_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (topic) DO UPDATE SET
                 partitions = max(topic_logs.partitions, excluded.partitions),
                 retention_ms = excluded.retention_ms
             RETURNING log_id, slice_ms",
        )
        .bind(topic)
        .bind(partitions)
        .bind(retention.num_milliseconds())
        .bind(slice_width(retention).num_milliseconds())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "WITH RECURSIVE seq(p) AS (SELECT 0 UNION ALL SELECT p + 1 FROM seq WHERE p + 1 < ?2)
             INSERT INTO topic_partitions (log_id, partition, next_offset)
             SELECT ?1, p, 0 FROM seq WHERE p < ?2
             ON CONFLICT DO NOTHING",
        )
        .bind(log_id)
        .bind(partitions)
        .execute(&mut *tx)
        .await?;
        let log = Log {
            id: log_id,
            width: TimeDelta::milliseconds(slice_ms),
        };
        let current = log.slice_of(now());
        for start in [current, current + log.width_micros()] {
            ensure_slice(&mut tx, log_id, start).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn drop_log(&self, topic: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let log_id: Option<i64> = sqlx::query_scalar("SELECT log_id FROM topic_logs WHERE topic = ?")
            .bind(topic)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(log_id) = log_id {
            for start in slices(&mut tx, log_id).await? {
                sqlx::query(&format!("DROP TABLE IF EXISTS {}", slice_table(log_id, start)))
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
            for table in ["topic_slices", "topic_partitions", "topic_logs"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE log_id = ?"))
                    .bind(log_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for table in ["topic_offsets", "topic_members", "topic_claims"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE topic = ?"))
                .bind(topic)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn publish(&self, messages: Vec<Publish>) -> Result<Vec<Published>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        // The write lock first: offsets are given in commit order.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut logs: HashMap<&str, Log> = HashMap::with_capacity(topics.len());
        for topic in &topics {
            logs.insert(topic, log_of(&mut tx, topic).await?);
        }
        // Now, or a log's last publish time if the clock was set back.
        let clock = now();
        let mut at = clock;
        for log in logs.values() {
            if let Some(last) = last_published(&mut tx, log.id, log.slice_of(clock)).await? {
                at = at.max(last);
            }
        }
        let mut tables: HashMap<&str, String> = HashMap::with_capacity(topics.len());
        for (topic, log) in &logs {
            let start = log.slice_of(at);
            ensure_slice(&mut tx, log.id, start).await?;
            tables.insert(topic, slice_table(log.id, start));
        }
        let mut counts: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in &messages {
            *counts.entry((m.topic.as_str(), m.partition)).or_default() += 1;
        }
        let mut next: HashMap<(&str, i32), i64> = HashMap::with_capacity(counts.len());
        for (&(topic, partition), &count) in &counts {
            let first: Option<i64> = sqlx::query_scalar(
                "UPDATE topic_partitions SET next_offset = next_offset + ?3
                 WHERE log_id = ?1 AND partition = ?2
                 RETURNING next_offset - ?3",
            )
            .bind(logs[topic].id)
            .bind(partition)
            .bind(count)
            .fetch_optional(&mut *tx)
            .await?;
            let first =
                first.ok_or_else(|| StoreError::Missing(format!("topic {topic} has no partition {partition}")))?;
            next.insert((topic, partition), first);
        }
        let mut published = Vec::with_capacity(messages.len());
        for m in &messages {
            let offset = next
                .get_mut(&(m.topic.as_str(), m.partition))
                .expect("every partition was counted");
            sqlx::query(&format!(
                r#"INSERT INTO {} (partition, "offset", id, key, headers, content_type, body, app, published_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
                tables[m.topic.as_str()]
            ))
            .bind(m.partition)
            .bind(*offset)
            .bind(m.id.to_string())
            .bind(&m.key)
            .bind(serde_json::to_string(&m.headers).unwrap_or_else(|_| "{}".into()))
            .bind(&m.content_type)
            .bind(&m.body)
            .bind(&m.app)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            published.push(Published {
                id: m.id,
                partition: m.partition,
                offset: *offset,
                published_at: time(at),
            });
            *offset += 1;
        }
        tx.commit().await?;
        for topic in topics {
            self.announcer.send(Channel::Topics, topic.to_string());
        }
        Ok(published)
    }

    async fn read_log(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        limit: i64,
    ) -> Result<Vec<LogMessage>, StoreError> {
        let mut tx = self.begin().await?;
        let log = log_of(&mut tx, topic).await?;
        let mut read = Vec::new();
        // Slices hold ascending offsets: the oldest first, until enough.
        for start in slices(&mut tx, log.id).await? {
            let wanted = limit - read.len() as i64;
            if wanted <= 0 {
                break;
            }
            let rows: Vec<MessageRow> = sqlx::query_as(&format!(
                r#"SELECT {MESSAGE_COLUMNS} FROM {} WHERE partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?"#,
                slice_table(log.id, start)
            ))
            .bind(partition)
            .bind(from)
            .bind(wanted)
            .fetch_all(&mut *tx)
            .await?;
            read.extend(rows.into_iter().map(message));
        }
        tx.commit().await?;
        Ok(read)
    }

    async fn log_bounds(&self, topic: &str) -> Result<Vec<PartitionBounds>, StoreError> {
        let (partitions, low) = self.first_kept(topic, None).await?;
        Ok(partitions
            .into_iter()
            .map(|(partition, next)| PartitionBounds {
                partition,
                low: low.get(&partition).copied().unwrap_or(next),
                next,
            })
            .collect())
    }

    async fn offsets_at(&self, topic: &str, at: DateTime<Utc>) -> Result<Vec<(i32, i64)>, StoreError> {
        let (partitions, found) = self.first_kept(topic, Some(micros(at))).await?;
        Ok(partitions
            .into_iter()
            .map(|(partition, next)| (partition, found.get(&partition).copied().unwrap_or(next)))
            .collect())
    }

    async fn subscription_offsets(&self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM topic_offsets WHERE group_id = ? AND topic = ?")
                .bind(group)
                .bind(topic)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn commit_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), StoreError> {
        write_offsets(
            self,
            group,
            topic,
            offsets,
            "max(topic_offsets.next_offset, excluded.next_offset)",
        )
        .await
    }

    async fn reset_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), StoreError> {
        write_offsets(self, group, topic, offsets, "excluded.next_offset").await
    }

    async fn forget_subscription(&self, group: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for table in ["topic_offsets", "topic_members", "topic_claims"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = ?"))
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_partitions(&self, claim: ClaimRequest<'_>) -> Result<Claimed, StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let at = now();
        sqlx::query(
            "INSERT INTO topic_members (group_id, topic, member, seen_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_id, topic, member) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(claim.member)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        // Gone for a day: forgotten.
        sqlx::query("DELETE FROM topic_members WHERE group_id = ? AND topic = ? AND seen_at < ?")
            .bind(claim.group)
            .bind(claim.topic)
            .bind(at.saturating_sub(span(FORGET_MEMBERS_AFTER)))
            .execute(&mut *tx)
            .await?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT member FROM topic_members WHERE group_id = ? AND topic = ? AND seen_at > ? ORDER BY member",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(at.saturating_sub(span(claim.member_timeout)))
        .fetch_all(&mut *tx)
        .await?;
        let partitions: Vec<i32> = sqlx::query_scalar(
            "SELECT p.partition FROM topic_partitions p JOIN topic_logs l ON l.log_id = p.log_id
             WHERE l.topic = ? ORDER BY p.partition",
        )
        .bind(claim.topic)
        .fetch_all(&mut *tx)
        .await?;
        if partitions.is_empty() {
            return Err(StoreError::Missing(format!("no topic named {}", claim.topic)));
        }
        // Its share: partitions p with p mod n = its place among the n live
        // members, taken when free or held by a member gone silent.
        let mut share = Vec::new();
        if let Some(place) = live.iter().position(|m| m == claim.member) {
            let n = live.len() as i64;
            let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
            for partition in partitions {
                if i64::from(partition) % n != place as i64 {
                    continue;
                }
                share.push(partition);
                let holder: Option<String> = sqlx::query_scalar(
                    "SELECT member FROM topic_claims WHERE group_id = ? AND topic = ? AND partition = ?",
                )
                .bind(claim.group)
                .bind(claim.topic)
                .bind(partition)
                .fetch_optional(&mut *tx)
                .await?;
                if holder.as_deref().is_some_and(|holder| live.contains(holder)) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO topic_claims (group_id, topic, partition, member, claimed_at) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (group_id, topic, partition) DO UPDATE SET
                         member = excluded.member, claimed_at = excluded.claimed_at",
                )
                .bind(claim.group)
                .bind(claim.topic)
                .bind(partition)
                .bind(claim.member)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        let held: Vec<i32> = sqlx::query_scalar(
            "SELECT partition FROM topic_claims WHERE group_id = ? AND topic = ? AND member = ? ORDER BY partition",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(claim.member)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Claimed { held, share })
    }

    async fn group_members(
        &self,
        group: &str,
        topic: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT member FROM topic_members WHERE group_id = ? AND topic = ? AND seen_at > ? ORDER BY member",
        )
        .bind(group)
        .bind(topic)
        .bind(now().saturating_sub(span(timeout)))
        .fetch_all(self.pool())
        .await?)
    }

    async fn leave_group(&self, group: &str, topic: &str, member: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for table in ["topic_members", "topic_claims"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE group_id = ? AND topic = ? AND member = ?"
            ))
            .bind(group)
            .bind(topic)
            .bind(member)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release_partitions(
        &self,
        group: &str,
        topic: &str,
        member: &str,
        partitions: &[i32],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM topic_claims WHERE group_id = ? AND topic = ? AND member = ?
                 AND partition IN (SELECT value FROM json_each(?))",
        )
        .bind(group)
        .bind(topic)
        .bind(member)
        .bind(json_list(partitions))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn maintain_logs(&self, now: DateTime<Utc>) -> Result<Vec<SliceDropped>, StoreError> {
        let logs: Vec<(String, i64, i64, i64)> =
            sqlx::query_as("SELECT topic, log_id, retention_ms, slice_ms FROM topic_logs ORDER BY log_id")
                .fetch_all(self.pool())
                .await?;
        let mut dropped = Vec::new();
        for (topic, log_id, retention_ms, slice_ms) in logs {
            let log = Log {
                id: log_id,
                width: TimeDelta::milliseconds(slice_ms),
            };
            let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
            let current = log.slice_of(micros(now));
            for start in [current, current + log.width_micros()] {
                ensure_slice(&mut tx, log_id, start).await?;
            }
            let starts: Vec<DateTime<Utc>> = slices(&mut tx, log_id).await?.into_iter().map(time).collect();
            tx.commit().await?;
            // One transaction per slice: the write lock is held for one drop at a time.
            for start in expired(&starts, log.width, TimeDelta::milliseconds(retention_ms), now) {
                let start = micros(start);
                let table = slice_table(log_id, start);
                let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
                // Exact and cheap: rows are never deleted from a slice, so
                // its largest rowid is how many it holds (no count read).
                let messages: i64 = sqlx::query_scalar(&format!("SELECT coalesce(max(rowid), 0) FROM {table}"))
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM topic_slices WHERE log_id = ? AND slice_start = ?")
                    .bind(log_id)
                    .bind(start)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                dropped.push(SliceDropped {
                    topic: topic.clone(),
                    slice_start: time(start),
                    messages,
                });
            }
        }
        Ok(dropped)
    }

    async fn search_log(&self, topic: &str, search: &LogSearch) -> Result<Vec<LogMessage>, StoreError> {
        // Only the conditions asked for, so each slice's indexes can serve them.
        let mut conditions: Vec<&str> = Vec::new();
        if search.key.is_some() {
            conditions.push("key = ?");
        }
        if search.id.is_some() {
            conditions.push("id = ?");
        }
        if search.from.is_some() {
            conditions.push("published_at >= ?");
        }
        if search.to.is_some() {
            conditions.push("published_at < ?");
        }
        if search.contains.is_some() {
            conditions.push("instr(body, ?) > 0");
        }
        if search.before.is_some() {
            conditions.push(r#"(published_at, partition, "offset") < (?, ?, ?)"#);
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let from = search.from.map(micros);
        let to = search.to.map(micros);
        let before = search
            .before
            .map(|(at, partition, offset)| (micros(at), partition, offset));
        let id = search.id.map(|id| id.to_string());
        // Bytes, so `instr` compares bytes (a text needle would read the body as text).
        let contains = search.contains.as_ref().map(|text| text.as_bytes().to_vec());

        let mut tx = self.begin().await?;
        let log = log_of(&mut tx, topic).await?;
        let mut found = Vec::new();
        // Newest slice first: every message of a slice is newer than the ones before it.
        for start in slices(&mut tx, log.id).await?.into_iter().rev() {
            let wanted = search.limit - found.len() as i64;
            if wanted <= 0 {
                break;
            }
            let end = start.saturating_add(log.width_micros());
            if from.is_some_and(|from| end <= from)
                || to.is_some_and(|to| start >= to)
                || before.is_some_and(|(at, _, _)| start > at)
            {
                continue;
            }
            let sql = format!(
                r#"SELECT {MESSAGE_COLUMNS} FROM {} {filter}
                   ORDER BY published_at DESC, partition DESC, "offset" DESC LIMIT ?"#,
                slice_table(log.id, start)
            );
            let mut query = sqlx::query_as::<_, MessageRow>(&sql).persistent(false);
            if let Some(key) = &search.key {
                query = query.bind(key);
            }
            if let Some(id) = &id {
                query = query.bind(id);
            }
            if let Some(from) = from {
                query = query.bind(from);
            }
            if let Some(to) = to {
                query = query.bind(to);
            }
            if let Some(contains) = &contains {
                query = query.bind(contains);
            }
            if let Some((at, partition, offset)) = before {
                query = query.bind(at).bind(partition).bind(offset);
            }
            let rows = query.bind(wanted).fetch_all(&mut *tx).await?;
            found.extend(rows.into_iter().map(message));
        }
        tx.commit().await?;
        Ok(found)
    }
}
