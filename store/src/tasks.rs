//! Callback tasks on top of the generic event store: building their appends
//! and loading them back, one or many at a time.

use bida_domain::task::{CallbackTask, ScheduleChange, TaskEvent};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use std::borrow::Cow;
use uuid::Uuid;

use crate::{Append, NewEvent, ScheduleWrite, Store, StoreError, StoredEvent};

/// The aggregate type of callback tasks in the event store.
pub const TASK_TYPE: &str = CallbackTask::TYPE;

/// The partition of a task submitted at `submitted_at`: its UTC day, counted
/// from 1970-01-01 (see migrations/0004_retention.up.sql). Every event of the
/// task carries it.
pub fn task_epoch(submitted_at: DateTime<Utc>) -> i32 {
    submitted_at.timestamp().div_euclid(86_400) as i32
}

/// The epoch of a task whose `events` start with its submission.
pub fn submission_epoch(events: &[TaskEvent]) -> Option<i32> {
    let (_, submitted_at) = events.first()?.submission()?;
    Some(task_epoch(submitted_at))
}

/// The pull lane of a task whose `events` start with its submission.
pub fn submission_lane(events: &[TaskEvent]) -> Option<String> {
    let (spec, _) = events.first()?.submission()?;
    spec.pull_lane().map(|lane| lane.key())
}

/// A task as loaded from its events.
#[derive(Clone, Debug)]
pub struct LoadedTask {
    pub id: String,
    /// The partition its events live in.
    pub epoch: i32,
    pub task: CallbackTask,
    pub events: Vec<TaskEvent>,
    /// The task's version: the sequence number of its last event.
    pub version: i64,
}

#[derive(Debug, Default)]
pub struct LoadedTasks {
    pub loaded: Vec<LoadedTask>,
    pub unreadable: Vec<(String, StoreError)>,
}

/// The append recording `events` on task `id` (in partition `epoch`) at
/// `version`, with the schedule change they imply. `owner` is the node that
/// keeps the task in memory.
pub fn task_append(
    id: &str,
    epoch: i32,
    version: i64,
    events: &[TaskEvent],
    owner: Option<Uuid>,
) -> Result<Append, StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        let sequence = version + 1 + offset as i64;
        let payload = serde_json::to_string(event).map_err(|e| StoreError::Decode {
            aggregate_id: id.to_string(),
            sequence,
            message: e.to_string(),
        })?;
        rows.push(NewEvent {
            aggregate_type: Cow::Borrowed(CallbackTask::TYPE),
            aggregate_id: id.to_string(),
            sequence,
            event_type: Cow::Borrowed(event.name()),
            event_version: Cow::Borrowed("1"),
            payload,
            metadata: None,
            epoch,
        });
    }
    // A task final in its first append never had a schedule entry to clear.
    let schedule = ScheduleChange::after(events)
        .filter(|change| version > 0 || *change != ScheduleChange::Clear)
        .map(|change| ScheduleWrite {
            task_id: id.to_string(),
            change,
            owner: match change {
                ScheduleChange::Due(_) => owner,
                ScheduleChange::Clear => None,
            },
            lane: submission_lane(events),
        });
    Ok(Append {
        events: rows,
        schedule,
        patient: false,
    })
}

/// The append recording a new task: `events` start with its submission.
pub fn new_task_append(id: &str, events: &[TaskEvent], owner: Option<Uuid>) -> Result<Append, StoreError> {
    let epoch = submission_epoch(events).ok_or_else(|| StoreError::Decode {
        aggregate_id: id.to_string(),
        sequence: 1,
        message: "a new task's first event must be its submission".into(),
    })?;
    task_append(id, epoch, 0, events, owner)
}

fn load(id: &str, stored: &[StoredEvent]) -> Result<LoadedTask, StoreError> {
    let events = stored
        .iter()
        .map(StoredEvent::decode)
        .collect::<Result<Vec<TaskEvent>, _>>()?;
    Ok(LoadedTask {
        id: id.to_string(),
        epoch: stored.first().map_or(0, |e| e.epoch),
        task: CallbackTask::from_events(&events),
        events,
        version: stored.last().map_or(0, |e| e.sequence),
    })
}

impl Store {
    pub async fn load_task(&self, id: &str) -> Result<Option<LoadedTask>, StoreError> {
        let stored = self.events_of(TASK_TYPE, id).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        load(id, &stored).map(Some)
    }

    /// Loads many tasks in one query. Unknown ids are left out; tasks whose
    /// events this version cannot decode come back apart, with the reason.
    pub async fn load_tasks(&self, ids: &[String]) -> Result<LoadedTasks, StoreError> {
        let stored = self.events_of_many(TASK_TYPE, ids).await?;
        let mut batch = LoadedTasks::default();
        for group in stored.chunk_by(|a, b| a.aggregate_id == b.aggregate_id) {
            let Some(first) = group.first() else { continue };
            match load(&first.aggregate_id, group) {
                Ok(task) => batch.loaded.push(task),
                Err(e) => batch.unreadable.push((first.aggregate_id.clone(), e)),
            }
        }
        Ok(batch)
    }
}

/// `text` as it stands inside a payload's JSON: bodies are JSON strings
/// there, with quotes and backslashes escaped.
pub(crate) fn body_needle(text: &str) -> String {
    let encoded = serde_json::to_string(text).unwrap_or_default();
    encoded
        .get(1..encoded.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}
