//! Group commit: appends from many actors become one statement per batch.
//!
//! The collector waits for a free committer, then takes everything queued (up
//! to `max_batch_events`) as one batch. While committers are busy, appends pile
//! up in the queue, so batches grow exactly when the database is the
//! bottleneck and stay small (low latency) when it is not.
//!
//! A batch is one statement, hence one implicit transaction: its events and
//! schedule changes commit together or not at all. When it fails, the failure
//! is confined to the appends that caused it:
//! - a taken sequence number: the appends that conflicted are answered with
//!   [`StoreError::Conflict`], the rest are retried;
//! - a transient error (connection lost, deadlock, failover): the batch is
//!   retried a few times before the error is reported;
//! - any other error (data the database refuses): the batch is split in
//!   halves until the append at fault fails alone.
//!
//! Rows are written in a fixed order (aggregate, sequence; task id) so that
//! concurrent batches lock in the same order and cannot deadlock each other.

use crate::error::is_transient;
use crate::writer::{conflict, count_committed, fail_all, Gatherer, Job, Writer};
use crate::{NewEvent, ScheduleWrite, WriterConfig, WriterStats, TASK_TYPE};
use bida_domain::task::ScheduleChange;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

/// Starts the collector on the current Tokio runtime.
pub(super) fn spawn(pool: PgPool, config: WriterConfig) -> Writer {
    let (writer, jobs, stats) = Writer::new(&config);
    tokio::spawn(collect(pool, config, jobs, stats));
    writer
}

async fn collect(pool: PgPool, config: WriterConfig, mut jobs: mpsc::Receiver<Job>, stats: Arc<WriterStats>) {
    let committers = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut gatherer = Gatherer::new(&config);
    loop {
        let Ok(permit) = committers.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = gatherer.next(&mut jobs, &config).await else {
            return;
        };
        let (pool, stats) = (pool.clone(), stats.clone());
        tokio::spawn(async move {
            commit(&pool, batch, &stats).await;
            drop(permit);
        });
    }
}

/// Rounds of conflict splitting before the remaining appends are failed.
const CONFLICT_ROUNDS: usize = 4;
/// Tries of a batch that failed for a transient reason.
const TRANSIENT_TRIES: u32 = 3;
/// Longest wait for one batch statement.
const STATEMENT_DEADLINE: Duration = Duration::from_secs(60);

async fn commit(pool: &PgPool, batch: Vec<Job>, stats: &WriterStats) {
    let (winners, deferred) = split_duplicates(batch);
    settle(pool, winners, stats).await;
    // Appends that claimed a sequence another append of the batch also claimed
    // learn their fate only now: a conflict if the other committed, a fresh
    // try if it failed.
    if !deferred.is_empty() {
        Box::pin(commit(pool, deferred, stats)).await;
    }
}

/// Commits `jobs` and answers every one of them.
async fn settle(pool: &PgPool, mut jobs: Vec<Job>, stats: &WriterStats) {
    let mut conflict_rounds = 0;
    let mut transient_tries = 0;
    // After a transient failure the batch may have committed after all: then
    // a retry meets its own events, which is success, not a conflict.
    let mut outcome_unknown = false;
    while !jobs.is_empty() {
        let started = Instant::now();
        let error = match execute(pool, &jobs).await {
            Ok(()) => return succeed(jobs, started, stats),
            Err(e) => e,
        };
        if is_sequence_conflict(&error) && conflict_rounds < CONFLICT_ROUNDS {
            conflict_rounds += 1;
            match taken_sequences(pool, &jobs).await {
                Ok(taken) => jobs = reject_taken(jobs, &taken, outcome_unknown, stats),
                Err(e) => return fail_all(jobs, e.into(), stats),
            }
        } else if is_transient(&error) && transient_tries < TRANSIENT_TRIES {
            transient_tries += 1;
            outcome_unknown = true;
            tokio::time::sleep(Duration::from_millis(100 << transient_tries)).await;
        } else if jobs.len() > 1 && !is_transient(&error) {
            // Find the append at fault: the others must not fail with it.
            let right = jobs.split_off(jobs.len() / 2);
            Box::pin(settle(pool, jobs, stats)).await;
            Box::pin(settle(pool, right, stats)).await;
            return;
        } else {
            return fail_all(jobs, error.into(), stats);
        }
    }
}

fn succeed(jobs: Vec<Job>, started: Instant, stats: &WriterStats) {
    count_committed(&jobs, started, stats);
    for job in jobs {
        let _ = job.reply.send(Ok(()));
    }
}

type EventKey<'a> = (&'a str, &'a str, i64);

fn key(event: &NewEvent) -> EventKey<'_> {
    (&event.aggregate_type, &event.aggregate_id, event.sequence)
}

/// Splits off the appends that claim a sequence an earlier append of the same
/// batch claims too.
fn split_duplicates(batch: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    // Keys borrowed from the batch: owned ones cost four strings an event.
    let clashes: Vec<bool> = {
        let mut claimed: HashSet<EventKey<'_>> = HashSet::with_capacity(batch.len() * 2);
        batch
            .iter()
            .map(|job| {
                let clash = job.append.events.iter().any(|e| claimed.contains(&key(e)));
                if !clash {
                    claimed.extend(job.append.events.iter().map(key));
                }
                clash
            })
            .collect()
    };
    let (mut winners, mut deferred) = (Vec::with_capacity(batch.len()), Vec::new());
    for (job, clash) in batch.into_iter().zip(clashes) {
        if clash {
            deferred.push(job);
        } else {
            winners.push(job);
        }
    }
    (winners, deferred)
}

/// Answers the appends whose sequences are taken: `Ok` when the stored events
/// are theirs (committed by an earlier try whose outcome was unknown),
/// `Conflict` otherwise. Returns the appends still to commit.
fn reject_taken(
    jobs: Vec<Job>,
    taken: &HashMap<(String, String, i64), String>,
    outcome_unknown: bool,
    stats: &WriterStats,
) -> Vec<Job> {
    let mut kept = Vec::with_capacity(jobs.len());
    for job in jobs {
        let stored = |e: &NewEvent| taken.get(&(e.aggregate_type.to_string(), e.aggregate_id.clone(), e.sequence));
        let Some(clash) = job.append.events.iter().find(|e| stored(e).is_some()) else {
            kept.push(job);
            continue;
        };
        let ours = outcome_unknown
            && job
                .append
                .events
                .iter()
                .all(|e| stored(e).is_some_and(|payload| same_json(payload, &e.payload)));
        if ours {
            let _ = job.reply.send(Ok(()));
        } else {
            stats.conflicts.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(conflict(clash)));
        }
    }
    kept
}

/// Compared as JSON values: rows written before `json` replaced `jsonb` come
/// back with their keys reordered.
fn same_json(stored: &str, ours: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(stored),
        serde_json::from_str::<serde_json::Value>(ours),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A taken sequence number: in any day's partition (each names its constraint
/// `<partition>_aggregate_sequence`), or a task id registered already.
fn is_sequence_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.constraint().is_some_and(|c| c.ends_with("aggregate_sequence") || c == "task_streams_pkey"))
}

async fn taken_sequences(pool: &PgPool, jobs: &[Job]) -> Result<HashMap<(String, String, i64), String>, sqlx::Error> {
    let mut types = Vec::new();
    let mut ids = Vec::new();
    let mut sequences = Vec::new();
    for event in jobs.iter().flat_map(|j| &j.append.events) {
        types.push(event.aggregate_type.as_ref());
        ids.push(event.aggregate_id.as_str());
        sequences.push(event.sequence);
    }
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, payload::text FROM events
         WHERE (aggregate_type, aggregate_id, sequence) IN
               (SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]))",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, id, seq, payload)| ((t, id, seq), payload))
        .collect())
}

const APPEND_SQL: &str = "
WITH appended AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, epoch)
    SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version,
           t.payload::json, COALESCE(t.metadata::json, '{}'::json), t.epoch
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $12::int[])
         AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, epoch)
    RETURNING 1
), registered AS (
    INSERT INTO task_streams (task_id, epoch)
    SELECT * FROM UNNEST($13::text[], $14::int[])
    RETURNING 1
), scheduled AS (
    INSERT INTO task_schedule (task_id, due_at, owner, updated_at, lane)
    SELECT t.task_id, t.due_at, t.owner, now(), t.lane
    FROM UNNEST($8::text[], $9::timestamptz[], $10::uuid[], $15::text[]) AS t(task_id, due_at, owner, lane)
    ON CONFLICT (task_id) DO UPDATE
        SET due_at = EXCLUDED.due_at, owner = EXCLUDED.owner, updated_at = EXCLUDED.updated_at,
            lane = COALESCE(EXCLUDED.lane, task_schedule.lane),
            lease_member = NULL, lease_id = NULL, leased_at = NULL
    RETURNING 1
), cleared AS (
    DELETE FROM task_schedule WHERE task_id = ANY($11::text[]) RETURNING 1
)
SELECT (SELECT count(*) FROM appended)";

async fn execute(pool: &PgPool, jobs: &[Job]) -> Result<(), sqlx::Error> {
    let mut events: Vec<&NewEvent> = jobs.iter().flat_map(|j| &j.append.events).collect();
    events.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    let capacity = events.len();
    let mut types = Vec::with_capacity(capacity);
    let mut ids = Vec::with_capacity(capacity);
    let mut sequences = Vec::with_capacity(capacity);
    let mut event_types = Vec::with_capacity(capacity);
    let mut versions = Vec::with_capacity(capacity);
    let mut payloads = Vec::with_capacity(capacity);
    let mut metadata = Vec::with_capacity(capacity);
    let mut epochs = Vec::with_capacity(capacity);
    // A task's first event registers its id for every day at once (see
    // migrations/0004_retention.up.sql).
    let mut new_tasks = Vec::new();
    let mut new_task_epochs = Vec::new();
    for event in events {
        if event.sequence == 1 && event.aggregate_type == TASK_TYPE {
            new_tasks.push(event.aggregate_id.as_str());
            new_task_epochs.push(event.epoch);
        }
        types.push(event.aggregate_type.as_ref());
        ids.push(event.aggregate_id.as_str());
        sequences.push(event.sequence);
        event_types.push(event.event_type.as_ref());
        versions.push(event.event_version.as_ref());
        payloads.push(event.payload.as_str());
        metadata.push(event.metadata.as_deref());
        epochs.push(event.epoch);
    }

    // Later appends of a batch win: one row per task in each statement part.
    let mut schedule: HashMap<&str, &ScheduleWrite> = HashMap::new();
    for write in jobs.iter().filter_map(|j| j.append.schedule.as_ref()) {
        schedule.insert(&write.task_id, write);
    }
    let mut schedule: Vec<(&str, &ScheduleWrite)> = schedule.into_iter().collect();
    schedule.sort_unstable_by_key(|(task_id, _)| *task_id);
    let mut due_ids: Vec<&str> = Vec::new();
    let mut due_at: Vec<DateTime<Utc>> = Vec::new();
    let mut owners: Vec<Option<Uuid>> = Vec::new();
    let mut lanes: Vec<Option<&str>> = Vec::new();
    let mut cleared: Vec<&str> = Vec::new();
    for (task_id, write) in schedule {
        match write.change {
            ScheduleChange::Due(at) => {
                due_ids.push(task_id);
                due_at.push(at);
                owners.push(write.owner);
                lanes.push(write.lane.as_deref());
            }
            ScheduleChange::Clear => cleared.push(task_id),
        }
    }

    let statement = sqlx::query(APPEND_SQL)
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .bind(&due_ids)
        .bind(&due_at)
        .bind(&owners)
        .bind(&cleared)
        .bind(&epochs)
        .bind(&new_tasks)
        .bind(&new_task_epochs)
        .bind(&lanes)
        .execute(pool);
    // A connection that went silent must not hold the batch (and its callers)
    // until TCP gives up; the server's statement_timeout cannot reach it.
    match tokio::time::timeout(STATEMENT_DEADLINE, statement).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from Postgres within {} s", STATEMENT_DEADLINE.as_secs()),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Append;
    use std::borrow::Cow;
    use tokio::sync::oneshot;

    /// An append of events `(aggregate id, sequence)` on one aggregate type.
    fn append(events: &[(&str, i64)]) -> Job {
        let events = events
            .iter()
            .map(|(id, sequence)| NewEvent {
                aggregate_type: Cow::Borrowed("task"),
                aggregate_id: id.to_string(),
                sequence: *sequence,
                event_type: Cow::Borrowed("Happened"),
                event_version: Cow::Borrowed("1"),
                payload: "{}".into(),
                metadata: None,
                epoch: 0,
            })
            .collect();
        let (reply, _) = oneshot::channel();
        Job {
            append: Append {
                events,
                schedule: None,
                patient: false,
            },
            reply,
        }
    }

    fn keys(jobs: &[Job]) -> Vec<Vec<(String, i64)>> {
        jobs.iter()
            .map(|j| {
                j.append
                    .events
                    .iter()
                    .map(|e| (e.aggregate_id.clone(), e.sequence))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_first_claim_of_a_sequence_wins_and_later_ones_wait() {
        let batch = vec![
            append(&[("a", 1), ("a", 2)]),
            append(&[("b", 1)]),
            // Claims a's second sequence again: deferred, and its b-2 is not claimed by it.
            append(&[("a", 2), ("b", 2)]),
            append(&[("b", 2)]),
            append(&[("b", 1)]),
            append(&[("a", 3)]),
        ];
        let (winners, deferred) = split_duplicates(batch);
        let owned = |v: &[(&str, i64)]| v.iter().map(|(id, s)| (id.to_string(), *s)).collect::<Vec<_>>();
        assert_eq!(
            keys(&winners),
            vec![
                owned(&[("a", 1), ("a", 2)]),
                owned(&[("b", 1)]),
                owned(&[("b", 2)]),
                owned(&[("a", 3)])
            ]
        );
        assert_eq!(keys(&deferred), vec![owned(&[("a", 2), ("b", 2)]), owned(&[("b", 1)])]);
    }

    #[test]
    fn the_same_id_on_two_aggregate_types_is_no_clash() {
        let mut other = append(&[("a", 1)]);
        other.append.events[0].aggregate_type = Cow::Borrowed("consumer");
        let (winners, deferred) = split_duplicates(vec![append(&[("a", 1)]), other]);
        assert_eq!((winners.len(), deferred.len()), (2, 0));
    }
}
