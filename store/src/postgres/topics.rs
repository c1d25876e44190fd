//! The built-in topics' log on PostgreSQL: a list partition per topic's log,
//! sliced by publish time into range partitions that retention drops whole.
//! Offsets come from `topic_partitions` under a row lock taken in order, so
//! concurrent publishers on one partition commit in offset order on every
//! node, and readers see no offset before the ones below it.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

use crate::topics::{
    slice_start, slice_width, ClaimRequest, Claimed, LogMessage, LogSearch, PartitionBounds, Publish, Published,
    SliceDropped,
};
use crate::{Channel, PgStore, StoreError, TopicLog};

type MessageRow = (
    Uuid,
    i32,
    i64,
    Option<String>,
    Json<BTreeMap<String, String>>,
    Option<String>,
    Vec<u8>,
    Option<String>,
    DateTime<Utc>,
);

fn message((id, partition, offset, key, headers, content_type, body, app, published_at): MessageRow) -> LogMessage {
    LogMessage {
        id,
        partition,
        offset,
        key,
        headers: headers.0,
        content_type,
        body,
        app,
        published_at,
    }
}

const MESSAGE_COLUMNS: &str = r#"id, partition, "offset", key, headers, content_type, body, app, published_at"#;

fn messages_table(log_id: i64) -> String {
    format!("topic_messages_{log_id}")
}

fn slice_table(log_id: i64, start: DateTime<Utc>) -> String {
    format!("topic_messages_{log_id}_{}", start.format("%Y%m%d%H"))
}

impl PgStore {
    async fn log_id(&self, topic: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT log_id FROM topic_logs WHERE topic = $1")
            .bind(topic)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::Missing(format!("no topic named {topic}")))
    }

    /// Makes the slice of `log_id` starting at `start` unless it exists. Its
    /// own short transaction: creating a partition locks its parent (this
    /// topic's log) for a moment, which a publish must not hold on to.
    async fn ensure_slice(&self, log_id: i64, start: DateTime<Utc>, width: TimeDelta) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bida_topic_slices'), $1::int)")
            .bind((log_id % i64::from(i32::MAX)) as i32)
            .execute(&mut *tx)
            .await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM topic_slices WHERE log_id = $1 AND slice_start = $2)")
                .bind(log_id)
                .bind(start)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            let table = slice_table(log_id, start);
            // Timestamps from chrono's RFC 3339 form, not user text.
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {table} PARTITION OF {parent} FOR VALUES FROM ('{from}') TO ('{to}')",
                parent = messages_table(log_id),
                from = start.to_rfc3339(),
                to = (start + width).to_rfc3339(),
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO topic_slices (log_id, slice_start, table_name) VALUES ($1, $2, $3)")
                .bind(log_id)
                .bind(start)
                .bind(&table)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn slices_exist(&self, log_id: i64, starts: &[DateTime<Utc>]) -> Result<bool, StoreError> {
        let found: i64 =
            sqlx::query_scalar("SELECT count(*) FROM topic_slices WHERE log_id = $1 AND slice_start = ANY($2)")
                .bind(log_id)
                .bind(starts)
                .fetch_one(self.pool())
                .await?;
        Ok(found as usize == starts.len())
    }
}

/// Takes the next `count` offsets of each partition, locking their rows in
/// one order (no deadlock between publishers) until the transaction ends.
async fn take_offsets(
    tx: &mut Transaction<'_, Postgres>,
    counts: &BTreeMap<(i64, i32), i64>,
) -> Result<HashMap<(i64, i32), i64>, StoreError> {
    let (logs, partitions): (Vec<i64>, Vec<i32>) = counts.keys().copied().unzip();
    let locked: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT log_id, partition FROM topic_partitions
         WHERE (log_id, partition) IN (SELECT * FROM unnest($1::bigint[], $2::int[]))
         ORDER BY log_id, partition FOR UPDATE",
    )
    .bind(&logs)
    .bind(&partitions)
    .fetch_all(&mut **tx)
    .await?;
    if locked.len() != counts.len() {
        return Err(StoreError::Missing(
            "a message names a partition the topic does not have".into(),
        ));
    }
    let added: Vec<i64> = counts.values().copied().collect();
    let rows: Vec<(i64, i32, i64)> = sqlx::query_as(
        "UPDATE topic_partitions t SET next_offset = t.next_offset + c.n
         FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS c(log_id, partition, n)
         WHERE t.log_id = c.log_id AND t.partition = c.partition
         RETURNING t.log_id, t.partition, t.next_offset - c.n",
    )
    .bind(&logs)
    .bind(&partitions)
    .bind(&added)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(log, partition, first)| ((log, partition), first))
        .collect())
}

#[async_trait]
impl TopicLog for PgStore {
    async fn shape_log(&self, topic: &str, partitions: i32, retention: TimeDelta) -> Result<(), StoreError> {
        let width = slice_width(retention);
        let mut tx = self.begin().await?;
        let (log_id, created): (i64, bool) = sqlx::query_as(
            "INSERT INTO topic_logs (topic, partitions, retention_ms, slice_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (topic) DO UPDATE SET
                 partitions = GREATEST(topic_logs.partitions, excluded.partitions),
                 retention_ms = excluded.retention_ms
             RETURNING log_id, (xmax = 0)",
        )
        .bind(topic)
        .bind(partitions)
        .bind(retention.num_milliseconds())
        .bind(width.num_milliseconds())
        .fetch_one(&mut *tx)
        .await?;
        if created {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF topic_messages FOR VALUES IN ({log_id}) PARTITION BY RANGE (published_at)",
                messages_table(log_id)
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO topic_partitions (log_id, partition)
             SELECT $1, generate_series(0, $2 - 1) ON CONFLICT DO NOTHING",
        )
        .bind(log_id)
        .bind(partitions)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let now = Utc::now();
        let width: TimeDelta = sqlx::query_scalar::<_, i64>("SELECT slice_ms FROM topic_logs WHERE log_id = $1")
            .bind(log_id)
            .fetch_one(self.pool())
            .await
            .map(TimeDelta::milliseconds)?;
        for start in [slice_start(now, width), slice_start(now, width) + width] {
            self.ensure_slice(log_id, start, width).await?;
        }
        Ok(())
    }

    async fn drop_log(&self, topic: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let log_id: Option<i64> = sqlx::query_scalar("DELETE FROM topic_logs WHERE topic = $1 RETURNING log_id")
            .bind(topic)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(log_id) = log_id {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", messages_table(log_id)))
                .execute(&mut *tx)
                .await?;
            for table in ["topic_partitions", "topic_slices"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE log_id = $1"))
                    .bind(log_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for table in ["topic_offsets", "topic_members", "topic_claims"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE topic = $1"))
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
        // As stored (microseconds): what `Published` says is what a read gives.
        let now = Utc::now().trunc_subsecs(6);
        let mut topics: Vec<String> = messages.iter().map(|m| m.topic.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        let logs: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT topic, log_id, slice_ms FROM topic_logs WHERE topic = ANY($1)")
                .bind(&topics)
                .fetch_all(self.pool())
                .await?;
        let logs: HashMap<String, (i64, TimeDelta)> = logs
            .into_iter()
            .map(|(topic, log_id, ms)| (topic, (log_id, TimeDelta::milliseconds(ms))))
            .collect();
        for topic in &topics {
            let (log_id, width) = *logs
                .get(topic)
                .ok_or_else(|| StoreError::Missing(format!("no topic named {topic}")))?;
            let start = slice_start(now, width);
            if !self.slices_exist(log_id, &[start]).await? {
                self.ensure_slice(log_id, start, width).await?;
            }
        }
        let mut counts: BTreeMap<(i64, i32), i64> = BTreeMap::new();
        for m in &messages {
            *counts.entry((logs[&m.topic].0, m.partition)).or_default() += 1;
        }
        let mut tx = self.begin().await?;
        // A topic dropped meanwhile takes its log with it: the share lock
        // keeps it until this commit.
        sqlx::query("SELECT 1 FROM topic_logs WHERE topic = ANY($1) FOR SHARE")
            .bind(&topics)
            .execute(&mut *tx)
            .await?;
        let mut next = take_offsets(&mut tx, &counts).await?;
        let mut published = Vec::with_capacity(messages.len());
        let mut columns = (
            Vec::with_capacity(messages.len()),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for m in messages {
            let log_id = logs[&m.topic].0;
            let offset = next
                .get_mut(&(log_id, m.partition))
                .expect("every partition was counted");
            published.push(Published {
                id: m.id,
                partition: m.partition,
                offset: *offset,
                published_at: now,
            });
            columns.0.push(log_id);
            columns.1.push(m.partition);
            columns.2.push(*offset);
            columns.3.push(m.id);
            columns.4.push(m.key);
            columns.5.push(Json(m.headers));
            columns.6.push(m.content_type);
            columns.7.push(m.body);
            columns.8.push(m.app);
            *offset += 1;
        }
        sqlx::query(
            r#"INSERT INTO topic_messages (log_id, partition, "offset", id, key, headers, content_type, body, app, published_at)
               SELECT l, p, o, i, k, h, c, b, a, $10
               FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::uuid[], $5::text[], $6::jsonb[], $7::text[], $8::bytea[], $9::text[])
                    AS m(l, p, o, i, k, h, c, b, a)"#,
        )
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&columns.4)
        .bind(&columns.5)
        .bind(&columns.6)
        .bind(&columns.7)
        .bind(&columns.8)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
            .bind(Channel::Topics.name())
            .bind(&topics)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(published)
    }

    async fn read_log(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        limit: i64,
    ) -> Result<Vec<LogMessage>, StoreError> {
        let log_id = self.log_id(topic).await?;
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            r#"SELECT {MESSAGE_COLUMNS} FROM topic_messages
               WHERE log_id = $1 AND partition = $2 AND "offset" >= $3
               ORDER BY "offset" LIMIT $4"#
        ))
        .bind(log_id)
        .bind(partition)
        .bind(from)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    async fn log_bounds(&self, topic: &str) -> Result<Vec<PartitionBounds>, StoreError> {
        let log_id = self.log_id(topic).await?;
        let rows: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(
            r#"SELECT p.partition, p.next_offset,
                      (SELECT m."offset" FROM topic_messages m
                       WHERE m.log_id = p.log_id AND m.partition = p.partition
                       ORDER BY m."offset" LIMIT 1)
               FROM topic_partitions p WHERE p.log_id = $1 ORDER BY p.partition"#,
        )
        .bind(log_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(partition, next, low)| PartitionBounds {
                partition,
                low: low.unwrap_or(next),
                next,
            })
            .collect())
    }

    async fn offsets_at(&self, topic: &str, at: DateTime<Utc>) -> Result<Vec<(i32, i64)>, StoreError> {
        let log_id = self.log_id(topic).await?;
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            r#"SELECT p.partition,
                      COALESCE((SELECT min(m."offset") FROM topic_messages m
                                WHERE m.log_id = p.log_id AND m.partition = p.partition AND m.published_at >= $2),
                               p.next_offset)
               FROM topic_partitions p WHERE p.log_id = $1 ORDER BY p.partition"#,
        )
        .bind(log_id)
        .bind(at)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    async fn subscription_offsets(&self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM topic_offsets WHERE group_id = $1 AND topic = $2")
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
            "GREATEST(topic_offsets.next_offset, excluded.next_offset)",
        )
        .await
    }

    async fn reset_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), StoreError> {
        write_offsets(self, group, topic, offsets, "excluded.next_offset").await
    }

    async fn forget_subscription(&self, group: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for table in ["topic_offsets", "topic_members", "topic_claims"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1"))
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_partitions(&self, claim: ClaimRequest<'_>) -> Result<Claimed, StoreError> {
        let timeout = claim.member_timeout.as_secs_f64();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO topic_members (group_id, topic, member, seen_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (group_id, topic, member) DO UPDATE SET seen_at = now()",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(claim.member)
        .execute(&mut *tx)
        .await?;
        // Gone for a day: forgotten.
        sqlx::query(
            "DELETE FROM topic_members WHERE group_id = $1 AND topic = $2 AND seen_at < now() - interval '1 day'",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .execute(&mut *tx)
        .await?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT member FROM topic_members
             WHERE group_id = $1 AND topic = $2 AND seen_at > now() - make_interval(secs => $3) ORDER BY member",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(timeout)
        .fetch_all(&mut *tx)
        .await?;
        let partitions: Vec<i32> = sqlx::query_scalar(
            "SELECT p.partition FROM topic_partitions p JOIN topic_logs l ON l.log_id = p.log_id
             WHERE l.topic = $1 ORDER BY p.partition",
        )
        .bind(claim.topic)
        .fetch_all(&mut *tx)
        .await?;
        if partitions.is_empty() {
            return Err(StoreError::Missing(format!("no topic named {}", claim.topic)));
        }
        // Its share: partitions p with p mod n = its place among the n live
        // members, taken when free or held by a member gone silent.
        let share: Vec<i32> = match live.iter().position(|m| m == claim.member) {
            Some(place) => partitions
                .into_iter()
                .filter(|p| *p as usize % live.len() == place)
                .collect(),
            None => Vec::new(),
        };
        sqlx::query(
            "INSERT INTO topic_claims (group_id, topic, partition, member)
             SELECT $1, $2, p, $3 FROM unnest($5::int[]) AS p
             ON CONFLICT (group_id, topic, partition) DO UPDATE SET member = excluded.member, claimed_at = now()
             WHERE topic_claims.member <> excluded.member AND NOT EXISTS (
                 SELECT 1 FROM topic_members m
                 WHERE m.group_id = topic_claims.group_id AND m.topic = topic_claims.topic
                   AND m.member = topic_claims.member AND m.seen_at > now() - make_interval(secs => $4))",
        )
        .bind(claim.group)
        .bind(claim.topic)
        .bind(claim.member)
        .bind(timeout)
        .bind(&share)
        .execute(&mut *tx)
        .await?;
        let held: Vec<i32> = sqlx::query_scalar(
            "SELECT partition FROM topic_claims WHERE group_id = $1 AND topic = $2 AND member = $3 ORDER BY partition",
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
            "SELECT member FROM topic_members
             WHERE group_id = $1 AND topic = $2 AND seen_at > now() - make_interval(secs => $3) ORDER BY member",
        )
        .bind(group)
        .bind(topic)
        .bind(timeout.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    async fn leave_group(&self, group: &str, topic: &str, member: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // In the order every other writer of both takes them: no deadlock.
        for table in ["topic_members", "topic_claims"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE group_id = $1 AND topic = $2 AND member = $3"
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
            "DELETE FROM topic_claims WHERE group_id = $1 AND topic = $2 AND member = $3 AND partition = ANY($4)",
        )
        .bind(group)
        .bind(topic)
        .bind(member)
        .bind(partitions)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn maintain_logs(&self, now: DateTime<Utc>) -> Result<Vec<SliceDropped>, StoreError> {
        let logs: Vec<(String, i64, i64, i64)> =
            sqlx::query_as("SELECT topic, log_id, retention_ms, slice_ms FROM topic_logs")
                .fetch_all(self.pool())
                .await?;
        let mut dropped = Vec::new();
        for (topic, log_id, retention_ms, slice_ms) in logs {
            let width = TimeDelta::milliseconds(slice_ms);
            let current = slice_start(now, width);
            if !self.slices_exist(log_id, &[current, current + width]).await? {
                for start in [current, current + width] {
                    self.ensure_slice(log_id, start, width).await?;
                }
            }
            let horizon = now - TimeDelta::milliseconds(retention_ms);
            let expired: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
                "SELECT slice_start, table_name FROM topic_slices
                 WHERE log_id = $1 AND slice_start + make_interval(secs => $2) <= $3 ORDER BY slice_start",
            )
            .bind(log_id)
            .bind(slice_ms as f64 / 1000.0)
            .bind(horizon)
            .fetch_all(self.pool())
            .await?;
            for (start, table) in expired {
                let mut tx = self.begin().await?;
                let estimate: Option<f32> = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = $1")
                    .bind(&table)
                    .fetch_optional(&mut *tx)
                    .await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM topic_slices WHERE log_id = $1 AND slice_start = $2")
                    .bind(log_id)
                    .bind(start)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                dropped.push(SliceDropped {
                    topic: topic.clone(),
                    slice_start: start,
                    messages: estimate.map_or(0, |n| n.max(0.0) as i64),
                });
            }
        }
        Ok(dropped)
    }

    async fn search_log(&self, topic: &str, search: &LogSearch) -> Result<Vec<LogMessage>, StoreError> {
        let log_id = self.log_id(topic).await?;
        let (before_at, before_partition, before_offset) = search.before.unzip3();
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            r#"SELECT {MESSAGE_COLUMNS} FROM topic_messages
               WHERE log_id = $1
                 AND ($2::text IS NULL OR key = $2)
                 AND ($3::uuid IS NULL OR id = $3)
                 AND ($4::timestamptz IS NULL OR published_at >= $4)
                 AND ($5::timestamptz IS NULL OR published_at < $5)
                 AND ($6::text IS NULL OR position(convert_to($6, 'UTF8') IN body) > 0)
                 AND ($7::timestamptz IS NULL OR (published_at, partition, "offset") < ($7, $8, $9))
               ORDER BY published_at DESC, partition DESC, "offset" DESC
               LIMIT $10"#
        ))
        .bind(log_id)
        .bind(&search.key)
        .bind(search.id)
        .bind(search.from)
        .bind(search.to)
        .bind(&search.contains)
        .bind(before_at)
        .bind(before_partition)
        .bind(before_offset)
        .bind(search.limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }
}

async fn write_offsets(
    store: &PgStore,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
    update: &str,
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let (partitions, next): (Vec<i32>, Vec<i64>) = offsets.iter().copied().unzip();
    sqlx::query(&format!(
        "INSERT INTO topic_offsets (group_id, topic, partition, next_offset)
         SELECT $1, $2, p, o FROM unnest($3::int[], $4::bigint[]) AS c(p, o)
         ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = {update}"
    ))
    .bind(group)
    .bind(topic)
    .bind(&partitions)
    .bind(&next)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// `Option<(a, b, c)>` as three options, for binding.
trait Unzip3<A, B, C> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>);
}

impl<A, B, C> Unzip3<A, B, C> for Option<(A, B, C)> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}
