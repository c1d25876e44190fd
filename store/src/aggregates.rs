//! Loading the low-traffic aggregates (brokers, consumers) whole, and the
//! per-node reports of consumers at work.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

use crate::{Store, StoreError, StoredEvent};

fn fold<A: Aggregate>(stored: &[StoredEvent]) -> Result<A, StoreError> {
    let mut aggregate = A::default();
    for event in stored {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}

/// A node's report on one consumer, as stored.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RuntimeRow {
    pub consumer_id: String,
    pub node_id: Uuid,
    pub node_name: Option<String>,
    pub state: String,
    pub report: Value,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// One aggregate with its version; `None` if it has no events.
    pub async fn load_aggregate<A: Aggregate>(&self, id: &str) -> Result<Option<(A, i64)>, StoreError> {
        let stored = self.events_of(A::TYPE, id).await?;
        match stored.last().map(|e| e.sequence) {
            None => Ok(None),
            Some(version) => Ok(Some((fold(&stored)?, version))),
        }
    }

    /// Every aggregate of a type, by id, with its version. One that cannot be
    /// decoded is left out with an error in the log rather than hiding all
    /// the others.
    pub async fn load_all<A: Aggregate>(&self) -> Result<Vec<(String, A, i64)>, StoreError> {
        let stored = self.events_of_type(A::TYPE).await?;
        let mut all = Vec::new();
        for group in stored.chunk_by(|a, b| a.aggregate_id == b.aggregate_id) {
            let Some(first) = group.first() else { continue };
            let version = group.last().map_or(0, |e| e.sequence);
            match fold::<A>(group) {
                Ok(aggregate) => all.push((first.aggregate_id.clone(), aggregate, version)),
                Err(e) => tracing::error!(aggregate = A::TYPE, id = %first.aggregate_id, error = %e, "cannot load"),
            }
        }
        Ok(all)
    }
}
