//! The nodes sharing a store, as listed to operators.
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A running Bida process, as the other nodes see it.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct NodeInfo {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub listen: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// What the node last said about itself (memory, CPU, actors).
    pub report: serde_json::Value,
}
