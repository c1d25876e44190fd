//! Group commit: appends from many actors become one statement per batch.
//!
//! The collector waits for a free committer, then takes everything queued (up
//! to `max_batch_events`) as one batch. While committers are busy, appends pile
//! up in the queue, so batches grow exactly when the database is the
//! bottleneck and stay small (low latency) when it is not.
//!
//! A batch is one statement, hence one implicit transaction: its events and
//! schedule changes commit together or not at all. A taken sequence number
//! fails the statement; the batch is then split into the appends that
//! conflicted (answered with [`StoreError::Conflict`]) and the rest (retried).

use bida_domain::task::ScheduleChange;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Most events in one batch statement.
    pub max_batch_events: usize,
    /// Batches committing at once (each holds a pool connection meanwhile).
    pub concurrency: usize,
    /// Appends waiting for a batch before callers are held back.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 2_000,
            concurrency: 4,
            queue: 50_000,
        }
    }
}

/// One event to append. `payload` and `metadata` are JSON text.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub aggregate_type: Cow<'static, str>,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: Cow<'static, str>,
    pub event_version: Cow<'static, str>,
    pub payload: String,
    pub metadata: Option<String>,
}

/// A task's schedule change, written with its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleWrite {
    pub task_id: String,
    pub change: ScheduleChange,
    /// The node that keeps the task in memory until it is due; `None` leaves it
    /// to whichever node's scheduler claims it.
    pub owner: Option<Uuid>,
}

/// What one caller appends atomically: events of one aggregate, with the
/// expected sequence implied by the first event's `sequence`.
#[derive(Clone, Debug, Default)]
pub struct Append {
    pub events: Vec<NewEvent>,
    pub schedule: Option<ScheduleWrite>,
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub conflicts: AtomicU64,
    pub failures: AtomicU64,
    /// Sum of batch commit times, in microseconds.
    pub commit_micros: AtomicU64,
}

struct Job {
    append: Append,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the collector on the current Tokio runtime.
    pub fn spawn(pool: PgPool, config: WriterConfig) -> Self {
        let (queue, jobs) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(collect(pool, config, jobs, stats.clone()));
        Self { queue, stats }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Appends and waits until the batch holding it has committed.
    pub async fn append(&self, append: Append) -> Result<(), StoreError> {
        if append.events.is_empty() && append.schedule.is_none() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { append, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn collect(
    pool: PgPool,
    config: WriterConfig,
    mut jobs: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
) {
    let committers = Arc::new(Semaphore::new(config.concurrency.max(1)));
    loop {
        let Ok(permit) = committers.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut size = first.append.events.len();
        let mut batch = vec![first];
        while size < config.max_batch_events {
            match jobs.try_recv() {
                Ok(job) => {
                    size += job.append.events.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (pool, stats) = (pool.clone(), stats.clone());
        tokio::spawn(async move {
            commit(&pool, batch, &stats).await;
            drop(permit);
        });
    }
}

/// How often a batch is split and retried after conflicts before giving up.
const CONFLICT_ROUNDS: usize = 4;

async fn commit(pool: &PgPool, batch: Vec<Job>, stats: &WriterStats) {
    let mut pending = reject_duplicates_within(batch, stats);
    for _ in 0..CONFLICT_ROUNDS {
        if pending.is_empty() {
            return;
        }
        let started = Instant::now();
        match execute(pool, &pending).await {
            Ok(()) => {
                let events: usize = pending.iter().map(|j| j.append.events.len()).sum();
                stats.events.fetch_add(events as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .commit_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                for job in pending {
                    let _ = job.reply.send(Ok(()));
                }
                return;
            }
            Err(e) if is_sequence_conflict(&e) => match taken_sequences(pool, &pending).await {
                Ok(taken) => pending = reject_taken(pending, &taken, stats),
                Err(e) => return fail_all(pending, e.into(), stats),
            },
            Err(e) => return fail_all(pending, e.into(), stats),
        }
    }
    let still = StoreError::Database(Arc::new(sqlx::Error::Protocol(
        "appends kept conflicting with concurrent writers".into(),
    )));
    fail_all(pending, still, stats);
}

fn fail_all(jobs: Vec<Job>, error: StoreError, stats: &WriterStats) {
    tracing::warn!(appends = jobs.len(), %error, "batch append failed");
    stats.failures.fetch_add(1, Ordering::Relaxed);
    for job in jobs {
        let _ = job.reply.send(Err(error.clone()));
    }
}

fn conflict(event: &NewEvent) -> StoreError {
    StoreError::Conflict {
        aggregate_type: event.aggregate_type.to_string(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
    }
}

type EventKey<'a> = (&'a str, &'a str, i64);

fn key(event: &NewEvent) -> EventKey<'_> {
    (&event.aggregate_type, &event.aggregate_id, event.sequence)
}

/// Two appends of one batch claiming the same sequence: the first one wins.
fn reject_duplicates_within(batch: Vec<Job>, stats: &WriterStats) -> Vec<Job> {
    let mut seen: HashSet<(String, String, i64)> = HashSet::new();
    let mut kept = Vec::with_capacity(batch.len());
    for job in batch {
        let clash = job.append.events.iter().find(|e| {
            let (t, id, seq) = key(e);
            seen.contains(&(t.to_string(), id.to_string(), seq))
        });
        if let Some(event) = clash {
            stats.conflicts.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(conflict(event)));
            continue;
        }
        for e in &job.append.events {
            seen.insert((
                e.aggregate_type.to_string(),
                e.aggregate_id.clone(),
                e.sequence,
            ));
        }
        kept.push(job);
    }
    kept
}

fn reject_taken(
    jobs: Vec<Job>,
    taken: &HashSet<(String, String, i64)>,
    stats: &WriterStats,
) -> Vec<Job> {
    let mut kept = Vec::with_capacity(jobs.len());
    for job in jobs {
        let clash = job.append.events.iter().find(|e| {
            taken.contains(&(
                e.aggregate_type.to_string(),
                e.aggregate_id.clone(),
                e.sequence,
            ))
        });
        match clash {
            Some(event) => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Err(conflict(event)));
            }
            None => kept.push(job),
        }
    }
    kept
}

fn is_sequence_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("events_aggregate_sequence"))
}

async fn taken_sequences(
    pool: &PgPool,
    jobs: &[Job],
) -> Result<HashSet<(String, String, i64)>, sqlx::Error> {
    let mut types = Vec::new();
    let mut ids = Vec::new();
    let mut sequences = Vec::new();
    for event in jobs.iter().flat_map(|j| &j.append.events) {
        types.push(event.aggregate_type.as_ref());
        ids.push(event.aggregate_id.as_str());
        sequences.push(event.sequence);
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence FROM events
         WHERE (aggregate_type, aggregate_id, sequence) IN
               (SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]))",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

const APPEND_SQL: &str = "
WITH appended AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version,
           t.payload::jsonb, COALESCE(t.metadata::jsonb, '{}'::jsonb)
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
         AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    RETURNING 1
), scheduled AS (
    INSERT INTO task_schedule (task_id, due_at, owner, updated_at)
    SELECT t.task_id, t.due_at, t.owner, now()
    FROM UNNEST($8::text[], $9::timestamptz[], $10::uuid[]) AS t(task_id, due_at, owner)
    ON CONFLICT (task_id) DO UPDATE
        SET due_at = EXCLUDED.due_at, owner = EXCLUDED.owner, updated_at = EXCLUDED.updated_at
    RETURNING 1
), cleared AS (
    DELETE FROM task_schedule WHERE task_id = ANY($11::text[]) RETURNING 1
)
SELECT (SELECT count(*) FROM appended)";

async fn execute(pool: &PgPool, jobs: &[Job]) -> Result<(), sqlx::Error> {
    let capacity: usize = jobs.iter().map(|j| j.append.events.len()).sum();
    let events = jobs.iter().flat_map(|j| &j.append.events);
    let mut types = Vec::with_capacity(capacity);
    let mut ids = Vec::with_capacity(capacity);
    let mut sequences = Vec::with_capacity(capacity);
    let mut event_types = Vec::with_capacity(capacity);
    let mut versions = Vec::with_capacity(capacity);
    let mut payloads = Vec::with_capacity(capacity);
    let mut metadata = Vec::with_capacity(capacity);
    for event in events {
        types.push(event.aggregate_type.as_ref());
        ids.push(event.aggregate_id.as_str());
        sequences.push(event.sequence);
        event_types.push(event.event_type.as_ref());
        versions.push(event.event_version.as_ref());
        payloads.push(event.payload.as_str());
        metadata.push(event.metadata.as_deref());
    }

    // Later appends of a batch win: one row per task in each statement part.
    let mut schedule: HashMap<&str, &ScheduleWrite> = HashMap::new();
    for write in jobs.iter().filter_map(|j| j.append.schedule.as_ref()) {
        schedule.insert(&write.task_id, write);
    }
    let mut due_ids: Vec<&str> = Vec::new();
    let mut due_at: Vec<DateTime<Utc>> = Vec::new();
    let mut owners: Vec<Option<Uuid>> = Vec::new();
    let mut cleared: Vec<&str> = Vec::new();
    for (task_id, write) in schedule {
        match write.change {
            ScheduleChange::Due(at) => {
                due_ids.push(task_id);
                due_at.push(at);
                owners.push(write.owner);
            }
            ScheduleChange::Clear => cleared.push(task_id),
        }
    }

    sqlx::query(APPEND_SQL)
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
        .execute(pool)
        .await?;
    Ok(())
}
