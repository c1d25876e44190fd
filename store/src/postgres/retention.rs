//! Retention: the events of finished tasks go a day at a time, by dropping (or
//! detaching, for archiving) the day's partition rather than deleting rows.
//!
//! A day is expired once all of it is older than the retention age. Its tasks
//! that are still live, that is
//! - due an attempt (in `task_schedule`: pending, retrying, delayed),
//! - or with an event newer than the age (finished recently, replayed),
//! - or dead-lettered more recently than the dead-letter age (an operator may
//!   still replay them),
//!
//! are copied into a fresh partition for that day, with their positions and
//! transaction ids unchanged, which replaces the old one in one transaction.
//!
//! Phase 1 (no lock) finds the tasks to keep under one snapshot, reading the
//! day a bounded run of events per statement (a day of a million tasks
//! outlasts the statement timeout in one), and builds the fresh partition
//! from their events, indexes and all, as a table of its own. Phase 2 locks
//! `events`, takes in what was appended to the day unseen by that snapshot
//! (found by transaction id), and swaps the partitions: appends wait only
//! for the late tasks and a few catalogue changes, not for the kept tasks'
//! copy (4.2 s for 140,000 kept tasks at 10M). A day whose dropped events
//! some catch-up reader has not read yet waits for that reader.

use crate::{
    task_epoch, DayDeferred, DayRetained, PgStore, Retention, RetentionAction, RetentionPolicy, RetentionReport,
    StoreError, TASK_TYPE,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use sqlx::{Connection, PgConnection};

/// Days of partitions made ahead, so that a day's first task never waits for one.
const DAYS_AHEAD: i32 = 2;
/// Rows deleted per statement when cleaning up after a dropped day.
const CLEANUP_BATCH: i64 = 10_000;
/// Longest wait for the lock on `events`; appends queue behind a waiting lock.
const LOCK_TIMEOUT: &str = "5s";

fn partition_name(day: i32) -> String {
    format!("events_{}", day_date(day).format("%Y%m%d"))
}

/// The fresh partition while phase 1 builds it, before it takes the day's name.
fn fresh_name(partition: &str) -> String {
    format!("{partition}_fresh")
}

/// The indexes of a day's partition, by the suffix of their names (see
/// `bida_events_partition` in migrations/0004_retention.up.sql).
const INDEX_SUFFIXES: [&str; 3] = ["pkey", "aggregate_sequence", "catch_up"];

fn day_date(day: i32) -> NaiveDate {
    DateTime::UNIX_EPOCH.date_naive() + ChronoDuration::days(i64::from(day))
}

enum Outcome {
    Retained(DayRetained),
    Deferred(String),
    Nothing,
}

#[async_trait]
impl Retention for PgStore {
    async fn ensure_partitions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let today = task_epoch(now);
        sqlx::query("SELECT bida_events_partition(d) FROM generate_series($1::int, $2::int) AS d")
            .bind(today - 1)
            .bind(today + DAYS_AHEAD)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn retain(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        let last_expired = task_epoch(now - policy.completed_after) - 1;
        let days: Vec<i32> = sqlx::query_scalar(
            "SELECT (regexp_replace(c.relname, '^events_', '')::date - DATE '1970-01-01')::int AS day
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
             ORDER BY day",
        )
        .fetch_all(self.pool())
        .await?;
        let mut report = RetentionReport::default();
        for day in days.into_iter().filter(|d| *d <= last_expired) {
            match self.retain_day(day, policy, now).await? {
                Outcome::Retained(done) => report.retained.push(done),
                Outcome::Deferred(reason) => report.deferred.push(DayDeferred {
                    day: day_date(day),
                    reason,
                }),
                Outcome::Nothing => {}
            }
            report.rows_cleaned += self.clean_up_day(day).await?;
        }
        Ok(report)
    }
}

impl PgStore {
    async fn retain_day(&self, day: i32, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        let mut connection = self.pool().acquire().await?;
        // Not given back to the pool: a caller that gives up in the middle
        // of a transaction's BEGIN would leave one open on it (see
        // `postgres::begin`). A day's retention can afford its own session.
        connection.close_on_drop();
        let outcome = swap_partition(&mut connection, day, policy, now).await;
        // Temporary tables live as long as the session, which the pool keeps;
        // a fresh partition left unswapped (a deferred day) is built again.
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS retention_tasks, {}",
            fresh_name(&partition_name(day))
        ))
        .execute(&mut *connection)
        .await?;
        outcome
    }

    /// Removes the `task_streams` and `task_view` rows of a day's tasks whose
    /// events are gone, a batch of streams per statement with their views in
    /// the same statement (looked up by id: a statement that looked for the
    /// day's views without a stream took 7–9 s per 10,000 at 10M tasks).
    /// Idempotent, so a pass that died halfway is finished by the next one.
    async fn clean_up_day(&self, day: i32) -> Result<u64, StoreError> {
        let partition = partition_name(day);
        let statement = format!(
            "WITH gone AS (
                 DELETE FROM task_streams WHERE ctid IN (
                     SELECT s.ctid FROM task_streams s
                     WHERE s.epoch = $1 AND NOT EXISTS (
                         SELECT 1 FROM {partition} e
                         WHERE e.aggregate_type = '{TASK_TYPE}' AND e.aggregate_id = s.task_id AND e.sequence = 1)
                     LIMIT $2)
                 RETURNING task_id
             ), views AS (
                 DELETE FROM task_view v USING gone WHERE v.id = gone.task_id
                 RETURNING v.status, v.source_app, v.target_app
             ), counted AS (
                 -- Taken off the task counts in the same statement.
                 INSERT INTO task_counts AS c (status, source_app, target_app, n)
                 SELECT status, COALESCE(source_app, ''), COALESCE(target_app, ''), -count(*)
                 FROM views GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                 ON CONFLICT (status, source_app, target_app) DO UPDATE SET n = c.n + EXCLUDED.n
             )
             SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM views)"
        );
        let mut cleaned = 0;
        loop {
            let (streams, views): (i64, i64) = sqlx::query_as(&statement)
                .bind(day)
                .bind(CLEANUP_BATCH)
                .fetch_one(self.pool())
                .await?;
            cleaned += (streams + views) as u64;
            if streams < CLEANUP_BATCH {
                return Ok(cleaned);
            }
        }
    }
}

/// Builds the day's fresh partition from the kept tasks' events as seen by the
/// snapshot, shaped as `bida_events_partition` shapes a day, under names of
/// its own until the swap. (An index of `events` missing here would not be
/// missed for long: the attach builds it, though under the lock.)
async fn build_fresh_partition(connection: &mut PgConnection, day: i32) -> Result<(), StoreError> {
    let partition = partition_name(day);
    let fresh = fresh_name(&partition);
    sqlx::query(&format!("DROP TABLE IF EXISTS {fresh}"))
        .execute(&mut *connection)
        .await?;
    sqlx::query(&format!("CREATE TABLE {fresh} (LIKE events INCLUDING DEFAULTS)"))
        .execute(&mut *connection)
        .await?;
    // Task by task through the index: the kept are few, the partition large.
    sqlx::query(&format!(
        "INSERT INTO {fresh}
         SELECT e.* FROM retention_tasks t
         CROSS JOIN LATERAL (SELECT * FROM {partition} e
                             WHERE e.aggregate_type = '{TASK_TYPE}' AND e.aggregate_id = t.task_id) e
         WHERE t.keep"
    ))
    .execute(&mut *connection)
    .await?;
    // Indexes once the rows are in: quicker than row by row.
    sqlx::query(&format!(
        "ALTER TABLE {fresh} ADD CONSTRAINT {fresh}_pkey PRIMARY KEY (position, epoch),
             ADD CONSTRAINT {fresh}_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence, epoch),
             ADD CONSTRAINT {partition}_epoch CHECK (epoch >= {day} AND epoch < {})",
        day + 1
    ))
    .execute(&mut *connection)
    .await?;
    sqlx::query(&format!(
        "CREATE INDEX {fresh}_catch_up ON {fresh} (transaction_id, position)"
    ))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Tallies the day's events per task into `retention_tasks`, a bounded run
/// of positions per statement: how many, the last transaction, and the time
/// and type of the last event (by sequence, across runs).
async fn tally_tasks(connection: &mut PgConnection, partition: &str, scan_events: i64) -> Result<(), StoreError> {
    let mut from: Option<i64> = sqlx::query_scalar(&format!("SELECT min(position) FROM {partition}"))
        .fetch_one(&mut *connection)
        .await?;
    while let Some(start) = from {
        let next: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT position FROM {partition} WHERE position >= $1 ORDER BY position OFFSET $2 LIMIT 1"
        ))
        .bind(start)
        .bind(scan_events.max(1))
        .fetch_optional(&mut *connection)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO retention_tasks AS r (task_id, events, last_tx, last_at, last_sequence, last_type)
             SELECT aggregate_id, count(*), max(transaction_id::text::bigint), max(recorded_at), max(sequence),
                    (array_agg(event_type ORDER BY sequence DESC))[1]
             FROM {partition}
             WHERE aggregate_type = '{TASK_TYPE}' AND position >= $1 AND position < $2
             GROUP BY aggregate_id
             ON CONFLICT (task_id) DO UPDATE SET
                 events = r.events + EXCLUDED.events,
                 last_tx = greatest(r.last_tx, EXCLUDED.last_tx),
                 last_at = greatest(r.last_at, EXCLUDED.last_at),
                 last_sequence = greatest(r.last_sequence, EXCLUDED.last_sequence),
                 last_type = CASE WHEN EXCLUDED.last_sequence > r.last_sequence
                                  THEN EXCLUDED.last_type ELSE r.last_type END"
        ))
        .bind(start)
        // The last run goes to the end: a bound, not NULL, keeps the index range.
        .bind(next.unwrap_or(i64::MAX))
        .execute(&mut *connection)
        .await?;
        from = next;
    }
    Ok(())
}

async fn swap_partition(
    connection: &mut PgConnection,
    day: i32,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<Outcome, StoreError> {
    let partition = partition_name(day);

    // Phase 1: one snapshot, no lock.
    let mut snapshot = connection.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await?;
    let (seen, seen_xmin): (String, i64) =
        sqlx::query_as("SELECT pg_current_snapshot()::text, pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *snapshot)
            .await?;
    sqlx::query(
        "CREATE TEMP TABLE retention_tasks (
             task_id TEXT PRIMARY KEY, keep BOOLEAN NOT NULL DEFAULT false, events BIGINT NOT NULL,
             last_tx BIGINT NOT NULL, last_at TIMESTAMPTZ, last_sequence BIGINT NOT NULL DEFAULT 0, last_type TEXT)",
    )
    .execute(&mut *snapshot)
    .await?;
    tally_tasks(&mut snapshot, &partition, policy.scan_events).await?;
    // A temporary table has no statistics until asked; the joins below need them.
    sqlx::query("ANALYZE retention_tasks").execute(&mut *snapshot).await?;
    // Only the few tasks kept are written; the rest stay as they were tallied.
    sqlx::query(
        "UPDATE retention_tasks t SET keep = true
         WHERE t.last_at > $1
            OR (t.last_type = 'TaskDeadLettered' AND t.last_at > $2)
            OR EXISTS (SELECT 1 FROM task_schedule s WHERE s.task_id = t.task_id)",
    )
    .bind(now - policy.completed_after)
    .bind(now - policy.dead_after)
    .execute(&mut *snapshot)
    .await?;
    // Counted here rather than under the lock of phase 2, which only corrects
    // them for the tasks that changed since.
    let (mut dropped_tasks, mut dropped_events, last_dropped_tx, mut kept_tasks): (i64, i64, Option<i64>, i64) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE NOT keep), COALESCE(sum(events) FILTER (WHERE NOT keep), 0)::bigint,
                    max(last_tx) FILTER (WHERE NOT keep), count(*) FILTER (WHERE keep)
             FROM retention_tasks",
        )
        .fetch_one(&mut *snapshot)
        .await?;
    if dropped_tasks == 0 {
        snapshot.commit().await?;
        return Ok(Outcome::Nothing);
    }
    let behind: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM projection_checkpoints WHERE transaction_id::text::bigint <= $1 ORDER BY name",
    )
    .bind(last_dropped_tx)
    .fetch_all(&mut *snapshot)
    .await?;
    if !behind.is_empty() {
        snapshot.commit().await?;
        return Ok(Outcome::Deferred(format!(
            "readers that have not read the day's events yet: {}",
            behind.join(", ")
        )));
    }
    build_fresh_partition(&mut snapshot, day).await?;
    snapshot.commit().await?;

    // Phase 2: the swap, with appends held back.
    let fresh = fresh_name(&partition);
    let mut swap = connection.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *swap)
        .await?;
    // Appends queue behind the lock from the moment it is asked for.
    let locking = std::time::Instant::now();
    if let Err(e) = sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *swap)
        .await
    {
        if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03")) {
            return Ok(Outcome::Deferred(format!("events stayed busy for {LOCK_TIMEOUT}")));
        }
        return Err(e.into());
    }
    // Tasks of the day that changed unseen by the snapshot are kept, as they are now.
    let late: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT aggregate_id FROM {partition}
         WHERE transaction_id >= ($1::bigint)::text::xid8
           AND NOT pg_visible_in_snapshot(transaction_id, $2::pg_snapshot)
           AND aggregate_type = '{TASK_TYPE}'"
    ))
    .bind(seen_xmin)
    .bind(&seen)
    .fetch_all(&mut *swap)
    .await?;
    if !late.is_empty() {
        let (were_dropped, their_events, were_kept): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE NOT keep), COALESCE(sum(events) FILTER (WHERE NOT keep), 0)::bigint,
                    count(*) FILTER (WHERE keep)
             FROM retention_tasks WHERE task_id = ANY($1)",
        )
        .bind(&late)
        .fetch_one(&mut *swap)
        .await?;
        dropped_tasks -= were_dropped;
        dropped_events -= their_events;
        kept_tasks += late.len() as i64 - were_kept;
        sqlx::query(
            "INSERT INTO retention_tasks (task_id, keep, events, last_tx) SELECT id, true, 0, 0 FROM UNNEST($1::text[]) AS id
             ON CONFLICT (task_id) DO UPDATE SET keep = true",
        )
        .bind(&late)
        .execute(&mut *swap)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM {fresh} WHERE aggregate_type = '{TASK_TYPE}' AND aggregate_id = ANY($1)"
        ))
        .bind(&late)
        .execute(&mut *swap)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {fresh}
             SELECT * FROM {partition} WHERE aggregate_type = '{TASK_TYPE}' AND aggregate_id = ANY($1)"
        ))
        .bind(&late)
        .execute(&mut *swap)
        .await?;
    }
    let dropped_bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
        .bind(&partition)
        .fetch_one(&mut *swap)
        .await?;
    sqlx::query(&format!("ALTER TABLE events DETACH PARTITION {partition}"))
        .execute(&mut *swap)
        .await?;
    let archived_as = match policy.action {
        RetentionAction::Drop => {
            sqlx::query(&format!("DROP TABLE {partition}"))
                .execute(&mut *swap)
                .await?;
            None
        }
        RetentionAction::Detach => {
            let archive = format!("events_archive_{}_{}", day_date(day).format("%Y%m%d"), now.timestamp());
            // Index names are schema-wide: the new partition needs its own.
            for suffix in INDEX_SUFFIXES {
                sqlx::query(&format!(
                    "ALTER INDEX {partition}_{suffix} RENAME TO {archive}_{suffix}"
                ))
                .execute(&mut *swap)
                .await?;
            }
            sqlx::query(&format!("ALTER TABLE {partition} RENAME TO {archive}"))
                .execute(&mut *swap)
                .await?;
            Some(archive)
        }
    };
    for suffix in INDEX_SUFFIXES {
        sqlx::query(&format!("ALTER INDEX {fresh}_{suffix} RENAME TO {partition}_{suffix}"))
            .execute(&mut *swap)
            .await?;
    }
    sqlx::query(&format!("ALTER TABLE {fresh} RENAME TO {partition}"))
        .execute(&mut *swap)
        .await?;
    // Its check constraint spares the attach a scan of the rows.
    sqlx::query(&format!(
        "ALTER TABLE events ATTACH PARTITION {partition} FOR VALUES FROM ({day}) TO ({})",
        day + 1
    ))
    .execute(&mut *swap)
    .await?;
    let action = match policy.action {
        RetentionAction::Drop => "drop",
        RetentionAction::Detach => "detach",
    };
    sqlx::query(
        "INSERT INTO retention_log (day, action, dropped_tasks, kept_tasks, dropped_events, dropped_bytes, archived_as, held_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(day_date(day))
    .bind(action)
    .bind(dropped_tasks)
    .bind(kept_tasks)
    .bind(dropped_events)
    .bind(dropped_bytes)
    .bind(&archived_as)
    // All but the commit, which follows at once.
    .bind(locking.elapsed().as_millis() as i64)
    .execute(&mut *swap)
    .await?;
    swap.commit().await?;
    tracing::info!(
        partition,
        kept_tasks,
        late_tasks = late.len(),
        held_ms = locking.elapsed().as_millis() as u64,
        "retention swapped a day's partition; appends were held back meanwhile"
    );
    Ok(Outcome::Retained(DayRetained {
        day: day_date(day),
        dropped_tasks,
        kept_tasks,
        dropped_events,
        dropped_bytes,
        archived_as,
    }))
}
