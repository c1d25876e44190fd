//! Pull lanes on PostgreSQL: `FOR UPDATE SKIP LOCKED` lets members on every
//! node lease from one lane at once without taking the same message.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use crate::{HeldLease, LaneBacklog, LeaseRequest, Leased, MemberRow, PgStore, PullQueues, StoreError, EXPIRY_HOLD};

type MemberTuple = (
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
    DateTime<Utc>,
    i64,
    i64,
    i64,
);

#[async_trait]
impl PullQueues for PgStore {
    async fn lease_due(&self, request: LeaseRequest<'_>) -> Result<Vec<Leased>, StoreError> {
        // An expired row keeps `lease_member` (who lost it) with no
        // `lease_id` until its expired attempt is recorded, and comes back
        // expired again, never leased, if that record was lost (the node
        // died first).
        let rows: Vec<(String, bool, Option<String>, Option<Uuid>, DateTime<Utc>)> = sqlx::query_as(
            "WITH due AS (
                 SELECT s.task_id, (s.lease_member IS NOT NULL) AS expired
                 FROM task_schedule s
                 WHERE s.lane = $1
                   AND (s.due_at <= now()
                        OR (s.lease_id IS NOT NULL AND NOT EXISTS (
                                SELECT 1 FROM pull_members m
                                WHERE m.consumer_id = $2 AND m.member = s.lease_member
                                  AND m.heartbeat_at > now() - make_interval(secs => $5))))
                 ORDER BY s.due_at
                 LIMIT $6
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE task_schedule s SET
                 lease_member = CASE WHEN due.expired THEN s.lease_member ELSE $3 END,
                 lease_id = CASE WHEN due.expired THEN NULL ELSE gen_random_uuid() END,
                 leased_at = CASE WHEN due.expired THEN NULL ELSE now() END,
                 due_at = now() + make_interval(secs => CASE WHEN due.expired THEN $7 ELSE $4 END),
                 updated_at = now()
             FROM due WHERE s.task_id = due.task_id
             RETURNING s.task_id, due.expired, s.lease_member, s.lease_id, s.due_at",
        )
        .bind(request.lane)
        .bind(request.consumer_id)
        .bind(request.member)
        .bind(request.lease.as_secs_f64())
        .bind(request.member_timeout.as_secs_f64())
        .bind(request.limit)
        .bind(EXPIRY_HOLD.as_secs_f64())
        .fetch_all(self.control())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(task_id, expired, member, lease_id, until)| match (expired, lease_id) {
                    (false, Some(lease_id)) => Leased::Granted {
                        task_id,
                        lease_id,
                        until,
                    },
                    _ => Leased::Expired {
                        task_id,
                        member: member.unwrap_or_default(),
                    },
                },
            )
            .collect())
    }

    async fn held_leases(&self, lease_ids: &[Uuid]) -> Result<Vec<HeldLease>, StoreError> {
        let rows: Vec<(String, Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT task_id, lease_id, lane, lease_member, leased_at FROM task_schedule
             WHERE lease_id = ANY($1) AND lane IS NOT NULL AND lease_member IS NOT NULL AND leased_at IS NOT NULL",
        )
        .bind(lease_ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(task_id, lease_id, lane, member, leased_at)| HeldLease {
                task_id,
                lease_id,
                lane,
                member,
                leased_at,
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
            "INSERT INTO pull_members (consumer_id, member, address, client_version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer_id, member) DO UPDATE SET
                 heartbeat_at = now(),
                 address = COALESCE(EXCLUDED.address, pull_members.address),
                 client_version = COALESCE(EXCLUDED.client_version, pull_members.client_version)",
        )
        .bind(consumer_id)
        .bind(member)
        .bind(address)
        .bind(client_version)
        .execute(self.control())
        .await?;
        Ok(())
    }

    async fn count_acks(&self, consumer_id: &str, member: &str, acked: i64) -> Result<(), StoreError> {
        // Every SET expression reads the row as it was.
        sqlx::query(
            "UPDATE pull_members SET
                 acked = acked + $3,
                 previous_acked = CASE WHEN now() - window_at < interval '10 seconds' THEN previous_acked
                                       WHEN now() - window_at < interval '20 seconds' THEN window_acked
                                       ELSE 0 END,
                 window_acked = CASE WHEN now() - window_at < interval '10 seconds' THEN window_acked + $3 ELSE $3 END,
                 window_at = CASE WHEN now() - window_at < interval '10 seconds' THEN window_at ELSE now() END
             WHERE consumer_id = $1 AND member = $2",
        )
        .bind(consumer_id)
        .bind(member)
        .bind(acked)
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
                       AND s.lease_member = m.member AND s.lease_id IS NOT NULL AND s.due_at > now())
             FROM pull_members m WHERE m.consumer_id = $1 ORDER BY m.member",
        )
        .bind(consumer_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(member_row).collect())
    }

    async fn live_members(&self, consumer_id: &str, timeout: Duration) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT member FROM pull_members
             WHERE consumer_id = $1 AND heartbeat_at > now() - make_interval(secs => $2) ORDER BY member",
        )
        .bind(consumer_id)
        .bind(timeout.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    async fn lane_backlogs(&self, consumer_id: &str) -> Result<Vec<LaneBacklog>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "WITH lanes AS (
                 SELECT $1::text AS lane
                 UNION SELECT consumer_id || '/' || member FROM pull_members WHERE consumer_id = $1
             )
             SELECT l.lane,
                    count(s.task_id) FILTER (WHERE s.lease_id IS NULL),
                    count(s.task_id) FILTER (WHERE s.lease_id IS NOT NULL)
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
        let result = sqlx::query("DELETE FROM pull_members WHERE consumer_id = $1")
            .bind(consumer_id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn forget_member(&self, consumer_id: &str, member: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM pull_members WHERE consumer_id = $1 AND member = $2")
            .bind(consumer_id)
            .bind(member)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn most_waiting(&self, lanes: &[String]) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(n), 0)::bigint FROM (
                 SELECT count(*) AS n FROM task_schedule
                 WHERE lane = ANY($1) AND lease_id IS NULL GROUP BY lane) waiting",
        )
        .bind(lanes)
        .fetch_one(self.pool())
        .await?)
    }

    async fn lane_tasks(&self, lane: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT task_id FROM task_schedule WHERE lane = $1 ORDER BY due_at LIMIT $2")
                .bind(lane)
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
        )
    }
}

fn member_row(
    (member, address, client_version, joined_at, heartbeat_at, acked, window_at, window_acked, previous_acked, leases): MemberTuple,
) -> MemberRow {
    MemberRow {
        member,
        address,
        client_version,
        joined_at,
        heartbeat_at,
        acked,
        window_at,
        window_acked,
        previous_acked,
        leases,
    }
}
