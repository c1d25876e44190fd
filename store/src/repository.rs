//! cqrs-es's `PersistedEventRepository` over Bida's event store, so cqrs-es's
//! `PersistedEventStore`/`CqrsFramework` run on the same table, go through the
//! same group-commit writer and keep the task schedule in step.

use bida_domain::task::{CallbackTask, ScheduleChange, TaskEvent};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use cqrs_es::Aggregate;
use futures_core::Stream;
use serde_json::Value;
use std::borrow::Cow;

use crate::{submission_epoch, submission_lane, Append, NewEvent, ScheduleWrite, Store, StoreError, StoredEvent};

#[derive(Clone)]
pub struct EventRepository {
    store: Store,
}

impl EventRepository {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn persistence(e: StoreError) -> PersistenceError {
    match e {
        StoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
        StoreError::Database(_) | StoreError::WriterStopped => PersistenceError::ConnectionError(Box::new(e)),
        StoreError::Decode { .. } => PersistenceError::DeserializationError(Box::new(e)),
        StoreError::Migration(_) | StoreError::DataDir { .. } | StoreError::Missing(_) => {
            PersistenceError::UnknownError(Box::new(e))
        }
    }
}

fn serialized(event: StoredEvent) -> Result<SerializedEvent, PersistenceError> {
    let payload: Value = serde_json::from_str(event.payload.as_deref().unwrap_or("null"))?;
    let metadata: Value = serde_json::from_str(&event.metadata)?;
    Ok(SerializedEvent::new(
        event.aggregate_id,
        event.sequence as usize,
        event.aggregate_type,
        event.event_type,
        event.event_version,
        payload,
        metadata,
    ))
}

/// Tasks appended through cqrs-es are left for any node's scheduler (or, in
/// a pull lane, any member's pull) to claim.
fn task_schedule(task_id: &str, events: &[TaskEvent], lane: Option<String>) -> Option<ScheduleWrite> {
    ScheduleChange::after(events).map(|change| ScheduleWrite {
        task_id: task_id.to_string(),
        change,
        owner: None,
        lane,
    })
}

impl EventRepository {
    /// The partition and schedule change of events about to be persisted.
    async fn placement(&self, events: &[SerializedEvent]) -> Result<(i32, Option<ScheduleWrite>), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok((0, None));
        };
        if first.aggregate_type != CallbackTask::TYPE {
            return Ok((0, None));
        }
        let decoded = events
            .iter()
            .map(|e| serde_json::from_value::<TaskEvent>(e.payload.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = match submission_epoch(&decoded) {
            Some(epoch) => epoch,
            None => self
                .store
                .task_stream_epoch(&first.aggregate_id)
                .await
                .map_err(persistence)?
                .ok_or(PersistenceError::OptimisticLockError)?,
        };
        // A retried pulled message goes back to its lane: a final task has
        // no schedule row left to keep the lane in.
        let lane = match submission_lane(&decoded) {
            Some(lane) => Some(lane),
            None if decoded.iter().any(|e| matches!(e, TaskEvent::RetryRequested { .. })) => self
                .store
                .load_task(&first.aggregate_id)
                .await
                .map_err(persistence)?
                .and_then(|task| task.task.spec().and_then(|spec| spec.pull_lane()))
                .map(|lane| lane.key()),
            None => None,
        };
        Ok((epoch, task_schedule(&first.aggregate_id, &decoded, lane)))
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.store.events_of(A::TYPE, aggregate_id).await.map_err(persistence)?;
        events.into_iter().map(serialized).collect()
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .store
            .events_after(A::TYPE, aggregate_id, last_sequence as i64)
            .await
            .map_err(persistence)?;
        events.into_iter().map(serialized).collect()
    }

    /// Bida keeps no snapshots: its aggregates live a handful of events.
    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "Bida's event repository keeps no snapshots: use PersistedEventStore::new_event_store".into(),
            ));
        }
        let (epoch, schedule) = self.placement(events).await?;
        let events = events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    aggregate_type: Cow::Owned(e.aggregate_type.clone()),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: e.sequence as i64,
                    event_type: Cow::Owned(e.event_type.clone()),
                    event_version: Cow::Owned(e.event_version.clone()),
                    payload: serde_json::to_string(&e.payload)?,
                    metadata: Some(serde_json::to_string(&e.metadata)?),
                    epoch,
                })
            })
            .collect::<Result<Vec<_>, PersistenceError>>()?;
        self.store
            .append(Append {
                events,
                schedule,
                patient: false,
            })
            .await
            .map_err(persistence)
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        let events = self.store.events_of(A::TYPE, aggregate_id).await.map_err(persistence)?;
        Ok(replay(futures_util::stream::iter(events.into_iter().map(Ok))))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let events = self.store.events_of_type(A::TYPE).await.map_err(persistence)?;
        Ok(replay(futures_util::stream::iter(events.into_iter().map(Ok))))
    }
}

fn replay(events: impl Stream<Item = Result<StoredEvent, StoreError>> + Send + 'static) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(100);
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let item = event.map_err(persistence).and_then(serialized);
            if feed.push(item).await.is_err() {
                return;
            }
        }
    });
    stream
}
