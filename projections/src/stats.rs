//! Per-minute statistics of task events, by consumer, app and endpoint,
//! folded by the task list (which knows each task's consumer, apps and URL)
//! and read back as series at 1-minute, 10-minute and 1-hour steps.

use bida_domain::stats::{Counts, Dimension, Overview, StatsQuery, StatsSeries};
use bida_domain::task::{TaskEvent, TaskSummary};
use bida_store::{Fold, StatsBucket, Store};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::collections::HashMap;

use crate::ProjectionError;

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// What a page of events adds to the buckets.
#[derive(Debug, Default)]
pub struct StatsTally {
    buckets: HashMap<(DateTime<Utc>, Dimension, String), Counts>,
    endpoints: HashMap<String, Option<String>>,
}

impl StatsTally {
    /// Counts `event` of `task` (the task's summary after the event).
    pub fn count(&mut self, task: &TaskSummary, event: &TaskEvent) {
        let Some(counts) = Counts::of(event) else {
            return;
        };
        let minute = minute_of(event.at());
        for dimension in Dimension::ALL {
            if let Some(key) = dimension.key(task, &mut self.endpoints) {
                self.buckets.entry((minute, dimension, key)).or_default().add(&counts);
            }
        }
    }

    /// Adds the tally to the stored buckets.
    pub async fn save(self, fold: &mut Fold) -> Result<(), ProjectionError> {
        let buckets = self
            .buckets
            .into_iter()
            .map(|((minute, dimension, key), counts)| StatsBucket {
                minute,
                dimension,
                key,
                counts,
            })
            .collect();
        fold.add_stats(buckets).await?;
        Ok(())
    }
}

/// The statistics the task list keeps, read back (kept here for the
/// callers that knew them as the projection's).
pub struct Stats;

impl Stats {
    /// Series of the query, at most `max_series` of them (the busiest first).
    pub async fn series(
        store: &Store,
        query: &StatsQuery,
        max_series: i64,
    ) -> Result<Vec<StatsSeries>, ProjectionError> {
        Ok(store.stats_series(query, max_series).await?)
    }

    /// Tasks by status, from the task list (every status, zeros included).
    pub async fn by_status(store: &Store) -> Result<HashMap<String, i64>, ProjectionError> {
        Ok(store.tasks_by_status().await?)
    }

    /// Tasks by status, and per app, from the task list.
    pub async fn overview(store: &Store) -> Result<Overview, ProjectionError> {
        Ok(store.task_overview().await?)
    }

    /// Drops buckets older than `keep`; returns how many.
    pub async fn prune(store: &Store, keep: TimeDelta) -> Result<u64, ProjectionError> {
        Ok(store.prune_stats(keep).await?)
    }
}
