use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

use crate::{Store, StoreError};

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

impl Store {
    pub async fn register_node(&self, id: Uuid, name: &str, version: &str, listen: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO nodes (id, name, version, listen, pid) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(name)
            .bind(version)
            .bind(listen)
            .bind(std::process::id() as i32)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records that the node is alive. `false` when the node was declared
    /// stopped meanwhile (then its tasks may already belong to others).
    pub async fn heartbeat(&self, id: Uuid) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE nodes SET heartbeat_at = now() WHERE id = $1 AND stopped_at IS NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores what the node says about itself, shown in the node list.
    pub async fn set_node_report(&self, id: Uuid, report: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET report = $2 WHERE id = $1")
            .bind(id)
            .bind(report)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Consumer actors that reported from a node in the last `fresh_secs`.
    pub async fn consumer_actors_on(&self, node: Uuid, fresh_secs: f64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM consumer_runtime WHERE node_id = $1 AND updated_at > now() - make_interval(secs => $2)",
        )
        .bind(node)
        .bind(fresh_secs)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn mark_node_stopped(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET stopped_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets nodes that stopped (or went silent) more than `age` ago.
    pub async fn prune_nodes(&self, age: Duration) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM nodes WHERE coalesce(stopped_at, heartbeat_at) < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, version, listen, pid, started_at, heartbeat_at, stopped_at, report
             FROM nodes ORDER BY started_at DESC",
        )
        .fetch_all(self.pool())
        .await?)
    }
}
