//! Pull lanes on SQLite: one node, so one statement per lease is enough to
//! keep two pulls from taking the same message.

use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

use super::events::json_list;
use super::{ago, now, time, SqliteStore};
use crate::{
    HeldLease, LaneBacklog, LeaseRequest, Leased, MemberRow, PullQueues, StoreError, ACK_WINDOW_SECS, EXPIRY_HOLD,
};

fn span(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

type MemberTuple = (
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

#[async_trait]
impl PullQueues for SqliteStore {
    async fn lease_due(&self, request: LeaseRequest<'_>) -> Result<Vec<Leased>, StoreError> {
        let at = now();
        // Every SET expression reads the row as it was; an expired row keeps
        // `lease_member` (who lost it) with no `lease_id` until its attempt is
        // recorded, and comes back expired again, never leased, if that
        // record was lost (the node died first).
        let rows: Vec<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
            "UPDATE task_schedule SET
                 lease_member = CASE WHEN lease_member IS NOT NULL THEN lease_member ELSE ?3 END,
                 leased_at = CASE WHEN lease_member IS NOT NULL THEN NULL ELSE ?4 END,
                 due_at = CASE WHEN lease_member IS NOT NULL THEN ?4 + ?8 ELSE ?4 + ?5 END,
                 lease_id = CASE WHEN lease_member IS NOT NULL THEN NULL ELSE lower(hex(randomblob(16))) END,
                 updated_at = ?4
             WHERE task_id IN (
                 SELECT s.task_id FROM task_schedule s
                 WHERE s.lane = ?1
                   AND (s.due_at <= ?4
                        OR (s.lease_id IS NOT NULL AND NOT EXISTS (
                                SELECT 1 FROM pull_members m
                                WHERE m.consumer_id = ?2 AND m.member = s.lease_member AND m.heartbeat_at > ?6)))
                 ORDER BY s.due_at LIMIT ?7)
             RETURNING task_id, lease_member, lease_id, due_at",
        )
        .bind(request.lane)
        .bind(request.consumer_id)
        .bind(request.member)
        .bind(at)
        .bind(span(request.lease))
        .bind(ago(request.member_timeout))
        .bind(request.limit)
        .bind(span(EXPIRY_HOLD))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(task_id, member, lease_id, until)| {
                match lease_id.as_deref().and_then(|id| Uuid::parse_str(id).ok()) {
                    Some(lease_id) => Leased::Granted {
                        task_id,
                        lease_id,
                        until: time(until),
                    },
                    None => Leased::Expired {
                        task_id,
                        member: member.unwrap_or_default(),
                    },
                }
            })
            .collect())
    }

    async fn held_leases(&self, lease_ids: &[Uuid]) -> Result<Vec<HeldLease>, StoreError> {
        let ids: Vec<String> = lease_ids.iter().map(|id| id.simple().to_string()).collect();
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT task_id, lease_id, lane, lease_member, leased_at FROM task_schedule
             WHERE lease_id IN (SELECT value FROM json_each(?))
               AND lane IS NOT NULL AND lease_member IS NOT NULL AND leased_at IS NOT NULL",
        )
        .bind(json_list(&ids))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(task_id, lease_id, lane, member, leased_at)| {
                Some(HeldLease {
                    task_id,
                    lease_id: Uuid::parse_str(&lease_id).ok()?,
                    lane,
                    member,
                    leased_at: time(leased_at),
                })
            })
            .collect())
    }

    async fn touch_member(
        &self,
        consumer_id: &str,
        member: &str,
        address: Option<&str>,
        client_version: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pull_members (consumer_id, member, address, client_version, joined_at, heartbeat_at, window_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)
             ON CONFLICT (consumer_id, member) DO UPDATE SET
                 heartbeat_at = excluded.heartbeat_at,
                 address = coalesce(excluded.address, pull_members.address),
                 client_version = coalesce(excluded.client_version, pull_members.client_version)",
        )
        .bind(consumer_id)
        .bind(member)
        .bind(address)
        .bind(client_version)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn count_acks(&self, consumer_id: &str, member: &str, acked: i64) -> Result<(), StoreError> {
        let window = ACK_WINDOW_SECS * 1_000_000;
        sqlx::query(
            "UPDATE pull_members SET
                 acked = acked + ?3,
                 previous_acked = CASE WHEN ?4 - window_at < ?5 THEN previous_acked
                                       WHEN ?4 - window_at < 2 * ?5 THEN window_acked
                                       ELSE 0 END,
                 window_acked = CASE WHEN ?4 - window_at < ?5 THEN window_acked + ?3 ELSE ?3 END,
                 window_at = CASE WHEN ?4 - window_at < ?5 THEN window_at ELSE ?4 END
             WHERE consumer_id = ?1 AND member = ?2",
        )
        .bind(consumer_id)
        .bind(member)
        .bind(acked)
        .bind(now())
        .bind(window)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn members(&self, consumer_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows: Vec<MemberTuple> = sqlx::query_as(
            "SELECT m.member, m.address, m.client_version, m.joined_at, m.heartbeat_at, m.acked,
                    m.window_at, m.window_acked, m.previous_acked,
                    (SELECT count(*) FROM task_schedule s
                     WHERE s.lane IN (m.consumer_id, m.consumer_id || '/' || m.member)
                       AND s.lease_member = m.member AND s.lease_id IS NOT NULL AND s.due_at > ?2)
             FROM pull_members m WHERE m.consumer_id = ?1 ORDER BY m.member",
        )
        .bind(consumer_id)
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    member,
                    address,
                    client_version,
                    joined,
                    heartbeat,
                    acked,
                    window_at,
                    window_acked,
                    previous,
                    leases,
                )| {
                    MemberRow {
                        member,
                        address,
                        client_version,
                        joined_at: time(joined),
                        heartbeat_at: time(heartbeat),
                        acked,
                        window_at: time(window_at),
                        window_acked,
                        previous_acked: previous,
                        leases,
                    }
                },
            )
            .collect())
    }

    async fn live_members(&self, consumer_id: &str, timeout: Duration) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT member FROM pull_members WHERE consumer_id = ? AND heartbeat_at > ? ORDER BY member",
        )
        .bind(consumer_id)
        .bind(ago(timeout))
        .fetch_all(self.pool())
        .await?)
    }

    async fn lane_backlogs(&self, consumer_id: &str) -> Result<Vec<LaneBacklog>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "WITH lanes AS (
                 SELECT ?1 AS lane
                 UNION SELECT consumer_id || '/' || member FROM pull_members WHERE consumer_id = ?1
             )
             SELECT l.lane,
                    count(s.task_id) - count(s.lease_id),
                    count(s.lease_id)
             FROM lanes l LEFT JOIN task_schedule s ON s.lane = l.lane
             GROUP BY l.lane ORDER BY l.lane",
        )
        .bind(consumer_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(lane, waiting, leased)| LaneBacklog { lane, waiting, leased })
            .collect())
    }

    async fn forget_members(&self, consumer_id: &str) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM pull_members WHERE consumer_id = ?")
            .bind(consumer_id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn forget_member(&self, consumer_id: &str, member: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM pull_members WHERE consumer_id = ? AND member = ?")
            .bind(consumer_id)
            .bind(member)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn most_waiting(&self, lanes: &[String]) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(n), 0) FROM (
                 SELECT count(*) AS n FROM task_schedule
                 WHERE lane IN (SELECT value FROM json_each(?)) AND lease_id IS NULL GROUP BY lane)",
        )
        .bind(json_list(lanes))
        .fetch_one(self.pool())
        .await?)
    }

    async fn lane_tasks(&self, lane: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT task_id FROM task_schedule WHERE lane = ? ORDER BY due_at LIMIT ?")
                .bind(lane)
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
        )
    }
}
