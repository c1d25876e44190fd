//! Copying one store's history into another: the embedded store into
//! PostgreSQL when a project outgrows one node (`bida export`).
//!
//! Every event is copied with its aggregate, sequence, payload, metadata and
//! day; each task's schedule is derived from its events as the writer does.
//! The read models are not copied: the target's projection folds the copied
//! events when a node starts on it, as after `projections rebuild`.

use bida_domain::task::{ScheduleChange, TaskEvent};
use chrono::{DateTime, TimeDelta};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::{Append, FeedPosition, FeedRead, NewEvent, ScheduleWrite, Store, StoreError, StoredEvent, TASK_TYPE};

/// Events read (and appended concurrently, one append per aggregate) at a time.
const PAGE: i64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the target already holds events; copy into a new, empty store")]
    TargetNotEmpty,
}

impl Store {
    /// Copies every event of this store into `target`, which must be empty;
    /// returns how many. `progress` hears the running count after each page.
    pub async fn copy_into(&self, target: &Store, mut progress: impl FnMut(u64)) -> Result<u64, CopyError> {
        if target.feed_head().await? != FeedPosition::default() {
            return Err(CopyError::TargetNotEmpty);
        }
        let mut at = FeedPosition::default();
        let mut copied = 0;
        let mut days: HashSet<i32> = HashSet::new();
        loop {
            let page = self.read_feed(at, PAGE, FeedRead::default()).await?;
            let Some(last) = page.last().map(StoredEvent::feed_position) else {
                return Ok(copied);
            };
            copied += page.len() as u64;
            // A task's events go to the partition of its day, made ahead.
            for day in page.iter().map(|e| e.epoch).filter(|day| *day > 0) {
                if days.insert(day) {
                    let noon = DateTime::UNIX_EPOCH + TimeDelta::days(i64::from(day)) + TimeDelta::hours(12);
                    target.ensure_partitions(noon).await?;
                }
            }
            // Distinct aggregates, so the appends may run at once; an
            // aggregate's later events come in a later page, after these.
            let appends = by_aggregate(page)?;
            let results = futures_util::future::join_all(appends.into_iter().map(|append| target.append(append))).await;
            results.into_iter().collect::<Result<Vec<()>, StoreError>>()?;
            progress(copied);
            at = last;
        }
    }
}

/// One append per aggregate, its events in order, a task's schedule with it.
fn by_aggregate(page: Vec<StoredEvent>) -> Result<Vec<Append>, StoreError> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut events: HashMap<(String, String), Vec<StoredEvent>> = HashMap::new();
    for event in page {
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        if !events.contains_key(&key) {
            order.push(key.clone());
        }
        events.entry(key).or_default().push(event);
    }
    let mut appends = Vec::with_capacity(order.len());
    for key in order {
        let stored = events.remove(&key).unwrap_or_default();
        let schedule = if key.0 == TASK_TYPE {
            let decoded = stored
                .iter()
                .map(|e| e.decode::<TaskEvent>())
                .collect::<Result<Vec<_>, _>>()?;
            ScheduleChange::after(&decoded).map(|change| ScheduleWrite {
                task_id: key.1.clone(),
                change,
                owner: None,
                lane: crate::submission_lane(&decoded),
            })
        } else {
            None
        };
        let events = stored
            .into_iter()
            .map(|e| NewEvent {
                aggregate_type: Cow::Owned(e.aggregate_type),
                aggregate_id: e.aggregate_id,
                sequence: e.sequence,
                event_type: Cow::Owned(e.event_type),
                event_version: Cow::Owned(e.event_version),
                payload: e.payload.unwrap_or_else(|| "null".into()),
                metadata: Some(e.metadata),
                epoch: e.epoch,
            })
            .collect();
        appends.push(Append {
            events,
            schedule,
            patient: false,
        });
    }
    Ok(appends)
}
