//! The schedule, the node (one) and what it reports of its consumers.

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

use super::events::json_list;
use super::{ago, micros, now, time, SqliteStore};
use crate::{ClaimedTask, ConsumerRuntime, NodeInfo, Nodes, RuntimeRow, Schedule, ScheduleEntry, StoreError};

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or_default()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[async_trait]
impl Schedule for SqliteStore {
    async fn claim_due(&self, node: Uuid, lookahead: Duration, limit: i64) -> Result<Vec<ClaimedTask>, StoreError> {
        let horizon = now().saturating_add(i64::try_from(lookahead.as_micros()).unwrap_or(i64::MAX));
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE task_schedule SET owner = ?1, updated_at = ?2
             WHERE task_id IN (SELECT task_id FROM task_schedule WHERE owner IS NULL AND lane IS NULL AND due_at <= ?3
                               ORDER BY due_at LIMIT ?4)
             RETURNING task_id, due_at",
        )
        .bind(node.to_string())
        .bind(now())
        .bind(horizon)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(task_id, due_at)| ClaimedTask {
                task_id,
                due_at: time(due_at),
            })
            .collect())
    }

    async fn free_tasks_of_dead_nodes(&self, caller: Uuid, ttl: Duration) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE task_schedule SET owner = NULL, updated_at = ?1
             WHERE owner IS NOT NULL AND owner <> ?3 AND owner NOT IN (
                 SELECT id FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > ?2)",
        )
        .bind(now())
        .bind(ago(ttl))
        .bind(caller.to_string())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    async fn tasks_owned_by(&self, node: Uuid, older_than: Duration) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT task_id FROM task_schedule WHERE owner = ? AND updated_at < ?")
                .bind(node.to_string())
                .bind(ago(older_than))
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn release_tasks(&self, node: Uuid, task_ids: &[String]) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE task_schedule SET owner = NULL, updated_at = ?
             WHERE owner = ? AND task_id IN (SELECT value FROM json_each(?))",
        )
        .bind(now())
        .bind(node.to_string())
        .bind(json_list(task_ids))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    async fn release_all_tasks(&self, node: Uuid) -> Result<u64, StoreError> {
        let result = sqlx::query("UPDATE task_schedule SET owner = NULL, updated_at = ? WHERE owner = ?")
            .bind(now())
            .bind(node.to_string())
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn schedule_of(&self, task_ids: &[String]) -> Result<HashMap<String, ScheduleEntry>, StoreError> {
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT task_id, due_at, owner FROM task_schedule WHERE task_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_list(task_ids))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, due_at, owner)| {
                let entry = ScheduleEntry {
                    due_at: time(due_at),
                    owner: owner.as_deref().map(uuid),
                };
                (id, entry)
            })
            .collect())
    }

    async fn schedule_depth(&self, late: Duration) -> Result<(i64, i64), StoreError> {
        Ok(
            sqlx::query_as("SELECT count(*), coalesce(sum(due_at < ?), 0) FROM task_schedule WHERE lane IS NULL")
                .bind(ago(late))
                .fetch_one(self.pool())
                .await?,
        )
    }
}

type NodeRow = (String, String, String, String, i32, i64, i64, Option<i64>, String);

#[async_trait]
impl Nodes for SqliteStore {
    async fn register_node(&self, id: Uuid, name: &str, version: &str, listen: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, name, version, listen, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(version)
        .bind(listen)
        .bind(std::process::id() as i32)
        .bind(now())
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, id: Uuid) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL")
            .bind(now())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn set_node_report(&self, id: Uuid, report: &Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET report = ? WHERE id = ?")
            .bind(report.to_string())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn consumer_actors_on(&self, node: Uuid, fresh_secs: f64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM consumer_runtime r JOIN nodes n ON n.id = r.node_id
                 WHERE r.node_id = ? AND max(r.updated_at, coalesce(n.reports_at, 0)) > ?",
        )
        .bind(node.to_string())
        .bind(ago(Duration::from_secs_f64(fresh_secs.max(0.0))))
        .fetch_one(self.pool())
        .await?)
    }

    async fn mark_node_stopped(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET stopped_at = ? WHERE id = ?")
            .bind(now())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn prune_nodes(&self, age: Duration) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM nodes WHERE coalesce(stopped_at, heartbeat_at) < ?")
            .bind(ago(age))
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let rows: Vec<NodeRow> = sqlx::query_as(
            "SELECT id, name, version, listen, pid, started_at, heartbeat_at, stopped_at, report
             FROM nodes ORDER BY started_at DESC",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, version, listen, pid, started_at, heartbeat_at, stopped_at, report)| NodeInfo {
                    id: uuid(&id),
                    name,
                    version,
                    listen,
                    pid,
                    started_at: time(started_at),
                    heartbeat_at: time(heartbeat_at),
                    stopped_at: stopped_at.map(time),
                    report: json(&report),
                },
            )
            .collect())
    }

    async fn share_busy_gates(
        &self,
        id: Uuid,
        busy: &[String],
        fresh: Duration,
    ) -> Result<Vec<(Uuid, Vec<String>)>, StoreError> {
        sqlx::query("UPDATE nodes SET busy_gates = ? WHERE id = ?")
            .bind(serde_json::to_string(busy).unwrap_or_else(|_| "[]".into()))
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, busy_gates FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > ?")
                .bind(ago(fresh))
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, busy)| (uuid(&id), serde_json::from_str(&busy).unwrap_or_default()))
            .collect())
    }
}

#[async_trait]
impl ConsumerRuntime for SqliteStore {
    async fn publish_consumer_runtime(
        &self,
        node: Uuid,
        running: &[&str],
        changed: &[(String, String, Value)],
    ) -> Result<(), StoreError> {
        let node = node.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "DELETE FROM consumer_runtime WHERE node_id = ? AND consumer_id NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(&node)
        .bind(json_list(running))
        .execute(&mut *tx)
        .await?;
        let at = now();
        sqlx::query("UPDATE nodes SET reports_at = ? WHERE id = ?")
            .bind(at)
            .bind(&node)
            .execute(&mut *tx)
            .await?;
        for (id, state, report) in changed {
            sqlx::query(
                "INSERT INTO consumer_runtime (consumer_id, node_id, state, report, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (consumer_id, node_id) DO UPDATE
                     SET state = excluded.state, report = excluded.report, updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(&node)
            .bind(state)
            .bind(report.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn consumer_runtime(
        &self,
        consumers: Option<&[&str]>,
        fresh_secs: f64,
    ) -> Result<Vec<RuntimeRow>, StoreError> {
        let rows: Vec<(String, String, Option<String>, String, String, i64)> = sqlx::query_as(
            "SELECT consumer_id, node_id, name, state, report, updated_at
             FROM (SELECT r.consumer_id, r.node_id, n.name, r.state, r.report,
                          max(r.updated_at, coalesce(n.reports_at, 0)) AS updated_at
                   FROM consumer_runtime r LEFT JOIN nodes n ON n.id = r.node_id
                   WHERE ?1 IS NULL OR r.consumer_id IN (SELECT value FROM json_each(?1))) AS confirmed
             WHERE updated_at > ?2
             ORDER BY consumer_id, name, node_id",
        )
        .bind(consumers.map(json_list))
        .bind(ago(Duration::from_secs_f64(fresh_secs.max(0.0))))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(consumer_id, node_id, node_name, state, report, updated_at)| RuntimeRow {
                    consumer_id,
                    node_id: uuid(&node_id),
                    node_name,
                    state,
                    report: json(&report),
                    updated_at: time(updated_at),
                },
            )
            .collect())
    }

    async fn consumer_rates(&self, consumers: &[&str]) -> Result<HashMap<String, (f64, f64)>, StoreError> {
        let now_at: DateTime<Utc> = Utc::now();
        let minute = now_at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now_at);
        let seconds = 60.0 + (now_at - minute).as_seconds_f64();
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT key, sum(submitted), sum(delivered) FROM stats_minute
             WHERE dimension = 'consumer' AND key IN (SELECT value FROM json_each(?)) AND minute >= ?
             GROUP BY key",
        )
        .bind(json_list(consumers))
        .bind(micros(minute - TimeDelta::minutes(1)))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, submitted, delivered)| (id, (submitted as f64 / seconds, delivered as f64 / seconds)))
            .collect())
    }

    async fn consumer_counters(&self, consumers: &[&str]) -> Result<HashMap<String, [i64; 7]>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT consumer_id, consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead
             FROM consumer_counters WHERE consumer_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_list(consumers))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, a, b, c, d, e, f, g)| (id, [a, b, c, d, e, f, g]))
            .collect())
    }
}
