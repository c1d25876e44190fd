//! Pull lanes: the schedule rows of pulled messages, leased to members, and
//! the members themselves (see migrations/0011_pull.up.sql).

use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// What one pull took from a lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leased {
    /// Now leased to the member until `until`.
    Granted {
        task_id: String,
        lease_id: Uuid,
        until: DateTime<Utc>,
    },
    /// Its lease to `member` ran out (or that member is gone): the lease is
    /// cleared and the row held back briefly while the caller records the
    /// expired attempt, which sets its next due time.
    Expired { task_id: String, member: String },
}

/// A lease a member holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    pub task_id: String,
    pub lease_id: Uuid,
    pub lane: String,
    pub member: String,
    pub leased_at: DateTime<Utc>,
}

/// What to lease, to whom, for how long.
#[derive(Clone, Debug)]
pub struct LeaseRequest<'a> {
    pub consumer_id: &'a str,
    pub lane: &'a str,
    pub member: &'a str,
    pub lease: Duration,
    /// Members silent for longer are gone: their leases return at once.
    pub member_timeout: Duration,
    pub limit: i64,
}

/// How long an expired lease's row is held back for its attempt to be recorded.
pub const EXPIRY_HOLD: Duration = Duration::from_secs(5);

/// A member as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub member: String,
    pub address: Option<String>,
    pub client_version: Option<String>,
    pub joined_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub acked: i64,
    /// Acks in the current 10-second window, which started at `window_at`,
    /// and in the window before it (0 when that one is older).
    pub window_at: DateTime<Utc>,
    pub window_acked: i64,
    pub previous_acked: i64,
    /// Leases it holds now.
    pub leases: i64,
}

/// The length of an ack-counting window.
pub const ACK_WINDOW_SECS: i64 = 10;

impl MemberRow {
    /// Acks per second over the last 10 to 20 seconds.
    pub fn acked_per_sec(&self, now: DateTime<Utc>) -> f64 {
        let elapsed = (now - self.window_at).num_milliseconds().max(0) as f64 / 1000.0;
        let window = ACK_WINDOW_SECS as f64;
        if elapsed < window {
            (self.previous_acked + self.window_acked) as f64 / (window + elapsed.max(1.0))
        } else if elapsed < 2.0 * window {
            self.window_acked as f64 / elapsed
        } else {
            0.0
        }
    }
}

/// A lane's messages: due and waiting for a pull, and leased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneBacklog {
    pub lane: String,
    /// Waiting: due now or later (retries), not leased.
    pub waiting: i64,
    pub leased: i64,
}
