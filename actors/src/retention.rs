//! Keeps the event store's day partitions ahead of time on every node and,
//! on the one node that leads, drops the expired days (see
//! `bida_store::Store::retain`).

use bida_store::{RetentionConfig, Store};
use chrono::Utc;
use std::time::Duration;

const LEADERSHIP: &str = "retention";

pub fn spawn(store: Store, config: RetentionConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(config.every_minutes.max(1) * 60);
        let policy = config.policy();
        let mut singleton = store.singleton(LEADERSHIP);
        loop {
            if let Err(e) = store.ensure_partitions(Utc::now()).await {
                tracing::warn!(error = %e, "cannot create the next days' event partitions");
            }
            if config.enabled {
                match singleton.lead().await {
                    Ok(true) => match store.retain(&policy, Utc::now()).await {
                        Ok(report) => {
                            for day in &report.retained {
                                tracing::info!(
                                    day = %day.day,
                                    dropped_tasks = day.dropped_tasks,
                                    kept_tasks = day.kept_tasks,
                                    dropped_events = day.dropped_events,
                                    dropped_bytes = day.dropped_bytes,
                                    archived_as = day.archived_as.as_deref().unwrap_or("-"),
                                    "retention: expired day removed"
                                );
                            }
                            for day in &report.deferred {
                                tracing::warn!(day = %day.day, reason = %day.reason, "retention: day deferred");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "retention cannot reach the store"),
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}
