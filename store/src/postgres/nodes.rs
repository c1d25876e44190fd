//! Nodes' registrations and heartbeats in a table.

use crate::{NodeInfo, Nodes, PgStore, StoreError};
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl Nodes for PgStore {
    async fn register_node(&self, id: Uuid, name: &str, version: &str, listen: &str) -> Result<(), StoreError> {
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

    async fn heartbeat(&self, id: Uuid) -> Result<bool, StoreError> {
        // On the control pool: a node whose main pool is saturated (commits
        // held up) must still prove it is alive.
        let result = sqlx::query("UPDATE nodes SET heartbeat_at = now() WHERE id = $1 AND stopped_at IS NULL")
            .bind(id)
            .execute(self.control())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn set_node_report(&self, id: Uuid, report: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET report = $2 WHERE id = $1")
            .bind(id)
            .bind(report)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn consumer_actors_on(&self, node: Uuid, fresh_secs: f64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM consumer_runtime r JOIN nodes n ON n.id = r.node_id
             WHERE r.node_id = $1 AND greatest(r.updated_at, n.reports_at) > now() - make_interval(secs => $2)",
        )
        .bind(node)
        .bind(fresh_secs)
        .fetch_one(self.pool())
        .await?)
    }

    async fn mark_node_stopped(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET stopped_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn prune_nodes(&self, age: Duration) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM nodes WHERE coalesce(stopped_at, heartbeat_at) < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, version, listen, pid, started_at, heartbeat_at, stopped_at, report
             FROM nodes ORDER BY started_at DESC",
        )
        .fetch_all(self.pool())
        .await?)
    }

    async fn share_busy_gates(
        &self,
        id: Uuid,
        busy: &[String],
        fresh: Duration,
    ) -> Result<Vec<(Uuid, Vec<String>)>, StoreError> {
        // On the control pool, like the heartbeat: shares must move even
        // while commits queue on the main pool.
        sqlx::query("UPDATE nodes SET busy_gates = $2 WHERE id = $1")
            .bind(id)
            .bind(sqlx::types::Json(busy))
            .execute(self.control())
            .await?;
        let rows: Vec<(Uuid, sqlx::types::Json<Vec<String>>)> = sqlx::query_as(
            "SELECT id, busy_gates FROM nodes
             WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(fresh.as_secs_f64())
        .fetch_all(self.control())
        .await?;
        Ok(rows.into_iter().map(|(id, busy)| (id, busy.0)).collect())
    }
}
