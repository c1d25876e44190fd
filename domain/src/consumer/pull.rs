//! Pull consumers: instead of pushing to an HTTP endpoint, the consumer
//! keeps its messages as tasks that client processes ("members") pull over
//! HTTP, holding each under a lease until they ack or nack it.
//!
//! Every pulled message is a callback task whose attempt is a lease: an ack
//! is a successful attempt, a nack or an expired lease a failed one, so
//! retries, backoff, dead letters and replay are the task's as for push.
//! Its `url` names its lane, the queue it is pulled from: the consumer's own
//! in cluster mode, one per member in broadcast mode.

use serde::{Deserialize, Serialize};

use crate::ValidationErrors;

/// The scheme of a pulled message's task `url`: `pull://<consumer>` or
/// `pull://<consumer>/<member>`.
pub const PULL_SCHEME: &str = "pull";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PullMode {
    /// Each message goes to one member at a time.
    #[default]
    Cluster,
    /// Every live member gets every message, each its own copy.
    Broadcast,
}

/// How members pull a consumer's messages. Every field is live: members
/// read it from each pull and heartbeat response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullEndpoint {
    pub mode: PullMode,
    /// How long a member holds a pulled message before it is given again.
    pub lease_ms: u64,
    /// Most messages one pull returns.
    pub batch: u32,
    /// A member not heard from for this long is gone: its leases return and
    /// broadcast stops copying messages to it.
    pub member_timeout_ms: u64,
    /// Most messages waiting in a lane for a pull: beyond it the consumer
    /// takes no more from the broker, so that a backlog stays (and shows as
    /// lag) in the broker rather than in Bida's store.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: u32,
}

fn default_max_waiting() -> u32 {
    PullEndpoint::DEFAULT.max_waiting
}

impl PullEndpoint {
    pub const DEFAULT: Self = Self {
        mode: PullMode::Cluster,
        lease_ms: 30_000,
        batch: 100,
        member_timeout_ms: 30_000,
        max_waiting: 1_000,
    };

    /// How often a member should heartbeat to stay alive.
    pub fn heartbeat_ms(&self) -> u64 {
        (self.member_timeout_ms / 3).max(1)
    }

    pub(crate) fn validate(&self, errors: &mut ValidationErrors) {
        if !(1_000..=3_600_000).contains(&self.lease_ms) {
            errors.add("endpoint.lease_ms", "must be between 1000 and 3600000");
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            errors.add("endpoint.batch", format!("must be between 1 and {MAX_BATCH}"));
        }
        if !(3_000..=3_600_000).contains(&self.member_timeout_ms) {
            errors.add("endpoint.member_timeout_ms", "must be between 3000 and 3600000");
        }
        if !(1..=1_000_000).contains(&self.max_waiting) {
            errors.add("endpoint.max_waiting", "must be between 1 and 1000000");
        }
    }
}

/// Most messages one pull may return.
pub const MAX_BATCH: u32 = 1_000;

/// A member's name as it gives it: a host or pod name, an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberName(String);

impl MemberName {
    /// 1 to 128 of letters, digits and `.`, `_`, `-`, `:`, `@`: names that
    /// need no escaping in a lane or a path.
    pub fn parse(text: &str) -> Option<Self> {
        let fits = (1..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'));
        fits.then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MemberName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The queue a pulled message waits in: the consumer's (cluster mode) or one
/// member's (broadcast mode). Its text form is the schedule's `lane`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PullLane {
    pub consumer_id: String,
    pub member: Option<MemberName>,
}

impl PullLane {
    pub fn cluster(consumer_id: &str) -> Self {
        Self {
            consumer_id: consumer_id.to_string(),
            member: None,
        }
    }

    pub fn member(consumer_id: &str, member: MemberName) -> Self {
        Self {
            consumer_id: consumer_id.to_string(),
            member: Some(member),
        }
    }

    /// The key the schedule files the lane's tasks under.
    pub fn key(&self) -> String {
        match &self.member {
            None => self.consumer_id.clone(),
            Some(member) => format!("{}/{member}", self.consumer_id),
        }
    }

    /// The task `url` of a message in this lane.
    pub fn locator(&self) -> String {
        format!("{PULL_SCHEME}://{}", self.key())
    }

    /// The lane of a task `url` made by [`PullLane::locator`]; none for
    /// another task's.
    pub fn parse_locator(url: &str) -> Option<Self> {
        let key = url.strip_prefix(PULL_SCHEME)?.strip_prefix("://")?;
        Some(match key.split_once('/') {
            None => Self::cluster(key),
            Some((consumer, member)) => Self::member(consumer, MemberName::parse(member)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_read_back_from_their_locator() {
        let cluster = PullLane::cluster("c-1");
        assert_eq!(cluster.locator(), "pull://c-1");
        assert_eq!(PullLane::parse_locator(&cluster.locator()), Some(cluster));
        let member = PullLane::member("c-1", MemberName::parse("host-1.example:80").unwrap());
        assert_eq!(member.key(), "c-1/host-1.example:80");
        assert_eq!(PullLane::parse_locator(&member.locator()), Some(member));
        assert_eq!(PullLane::parse_locator("http://c-1"), None);
        assert_eq!(PullLane::parse_locator("pull://c/bad name"), None);
    }

    #[test]
    fn member_names_need_no_escaping() {
        assert!(MemberName::parse("pod-7f9c_x@10.0.0.1").is_some());
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(129)] {
            assert!(MemberName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        let mut errors = ValidationErrors::default();
        PullEndpoint {
            mode: PullMode::Cluster,
            lease_ms: 10,
            batch: 0,
            member_timeout_ms: 1,
            max_waiting: 0,
        }
        .validate(&mut errors);
        let fields: Vec<_> = errors.0.into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "endpoint.lease_ms",
                "endpoint.batch",
                "endpoint.member_timeout_ms",
                "endpoint.max_waiting"
            ]
        );
    }
}
