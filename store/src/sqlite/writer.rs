//! Group commit on SQLite: every append waiting when the writer is free goes
//! into one transaction, so one fsync makes the whole batch durable.
//!
//! Each append runs in a savepoint of its own: a taken sequence number (or
//! a task id submitted before) rolls back that append alone and answers it
//! with [`StoreError::Conflict`]; the others of the batch commit.

use bida_domain::task::ScheduleChange;
use sqlx::{SqliteConnection, SqlitePool};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

use super::notifications::Announcer;
use super::{micros, now};
use crate::writer::{conflict, count_committed, fail_all, Gatherer, Job, Writer};
use crate::{Append, StoreError, WriterConfig, WriterStats, TASK_TYPE};

/// Starts the writer on the current Tokio runtime.
pub(super) fn spawn(pool: SqlitePool, config: WriterConfig, announcer: Announcer) -> Writer {
    let (writer, jobs, stats) = Writer::new(&config);
    tokio::spawn(collect(pool, config, jobs, stats, announcer));
    writer
}

async fn collect(
    pool: SqlitePool,
    config: WriterConfig,
    mut jobs: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
    announcer: Announcer,
) {
    let mut gatherer = Gatherer::new(&config);
    while let Some(batch) = gatherer.next(&mut jobs, &config).await {
        commit(&pool, batch, &stats, &announcer).await;
    }
}

/// Commits a batch and answers every append in it.
async fn commit(pool: &SqlitePool, batch: Vec<Job>, stats: &WriterStats, announcer: &Announcer) {
    let started = Instant::now();
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, e.into(), stats),
    };
    let mut written = Vec::with_capacity(batch.len());
    let mut answered = Vec::new();
    for job in batch {
        let outcome = match sqlx::query("SAVEPOINT append").execute(&mut *tx).await {
            Ok(_) => write(&mut tx, &job.append).await,
            Err(e) => Err(e),
        };
        let undo: &[&str] = if outcome.is_ok() {
            &["RELEASE append"]
        } else {
            &["ROLLBACK TO append", "RELEASE append"]
        };
        let mut undone = Ok(());
        for statement in undo {
            if let Err(e) = sqlx::query(statement).execute(&mut *tx).await {
                undone = Err(e);
                break;
            }
        }
        if let Err(e) = undone {
            answered.push((job, Err(StoreError::from(e))));
            continue;
        }
        match outcome {
            Ok(()) => written.push(job),
            Err(e) if is_sequence_conflict(&e) => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
                let error = job.append.events.first().map_or_else(|| StoreError::from(e), conflict);
                answered.push((job, Err(error)));
            }
            Err(e) => answered.push((job, Err(e.into()))),
        }
    }
    if let Err(e) = tx.commit().await {
        // Nothing of the batch was kept: the refused appends are refused still.
        for (job, outcome) in answered {
            let _ = job.reply.send(outcome);
        }
        return fail_all(written, e.into(), stats);
    }
    if !written.is_empty() {
        count_committed(&written, started, stats);
    }
    for job in written {
        for event in &job.append.events {
            announcer.event_recorded(event);
        }
        let _ = job.reply.send(Ok(()));
    }
    for (job, outcome) in answered {
        let _ = job.reply.send(outcome);
    }
}

async fn write(connection: &mut SqliteConnection, append: &Append) -> Result<(), sqlx::Error> {
    let recorded_at = now();
    for event in &append.events {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                                 metadata, recorded_at, epoch)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(event.aggregate_type.as_ref())
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(event.event_type.as_ref())
        .bind(event.event_version.as_ref())
        .bind(&event.payload)
        .bind(event.metadata.as_deref().unwrap_or("{}"))
        .bind(recorded_at)
        .bind(event.epoch)
        .execute(&mut *connection)
        .await?;
        if event.sequence == 1 && event.aggregate_type == TASK_TYPE {
            sqlx::query("INSERT INTO task_streams (task_id, epoch) VALUES (?, ?)")
                .bind(&event.aggregate_id)
                .bind(event.epoch)
                .execute(&mut *connection)
                .await?;
        }
    }
    if let Some(write) = &append.schedule {
        match write.change {
            ScheduleChange::Due(at) => {
                sqlx::query(
                    "INSERT INTO task_schedule (task_id, due_at, owner, updated_at, lane) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (task_id) DO UPDATE
                         SET due_at = excluded.due_at, owner = excluded.owner, updated_at = excluded.updated_at,
                             lane = coalesce(excluded.lane, task_schedule.lane),
                             lease_member = NULL, lease_id = NULL, leased_at = NULL",
                )
                .bind(&write.task_id)
                .bind(micros(at))
                .bind(write.owner.map(|owner| owner.to_string()))
                .bind(recorded_at)
                .bind(write.lane.as_deref())
                .execute(&mut *connection)
                .await?;
            }
            ScheduleChange::Clear => {
                sqlx::query("DELETE FROM task_schedule WHERE task_id = ?")
                    .bind(&write.task_id)
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }
    Ok(())
}

/// A taken sequence number, or a task id registered already.
fn is_sequence_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
