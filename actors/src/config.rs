use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How deliveries are made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Bytes of a response body read to check it (`expect`); the rest is ignored.
    pub max_response_bytes: usize,
    /// Bytes of the response body kept with each attempt.
    pub excerpt_bytes: usize,
    pub connect_timeout_ms: u64,
    /// Kept-alive connections per endpoint host.
    pub idle_connections_per_host: usize,
    pub user_agent: String,
    /// Threads running delivery actors; 0 means one per CPU.
    pub threads: usize,
    /// Tasks a node keeps in memory at once; beyond this, new work waits in
    /// the durable schedule.
    pub max_in_memory: usize,
    /// Body bytes of the tasks a node keeps in memory at once.
    pub max_in_memory_bytes: usize,
    /// Networks deliveries and notifications may reach although they are
    /// loopback, private, link-local... (CIDR, `["127.0.0.0/8"]`).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Limits on the requests to one endpoint host, for every task and
    /// consumer delivering there, held across the cluster.
    pub host_limits: Vec<HostLimit>,
}

/// A limit on one endpoint host (`[[delivery.host_limits]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLimit {
    /// The host, as a task filter takes it: `orders.example.com`, `[::1]`,
    /// `orders:8443` (the port is not part of it) or a URL.
    pub host: String,
    /// Requests per second to the host; 0: none.
    #[serde(default)]
    pub rate_per_sec: u32,
    /// Requests at the host at once; 0: none.
    #[serde(default)]
    pub concurrency: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_response_bytes: 64 * 1024,
            excerpt_bytes: 1024,
            connect_timeout_ms: 5_000,
            idle_connections_per_host: 256,
            user_agent: concat!("Bida/", env!("CARGO_PKG_VERSION")).to_string(),
            threads: 0,
            max_in_memory: 20_000,
            max_in_memory_bytes: 512 * 1024 * 1024,
            allow_networks: Vec::new(),
            host_limits: Vec::new(),
        }
    }
}

/// The durable scheduler and node liveness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the schedule is polled for due tasks.
    pub poll_interval_ms: u64,
    /// Tasks due within this are claimed early and fired on time from memory.
    pub lookahead_ms: u64,
    /// A retry due within this stays in the node's memory (still recorded in
    /// the schedule); later ones are left to whichever node is free then.
    pub hold_max_ms: u64,
    /// Most tasks claimed per poll.
    pub claim_batch: i64,
    pub heartbeat_interval_ms: u64,
    /// A node silent for this long is dead: its tasks go to the others.
    pub node_ttl_ms: u64,
    /// At shutdown, how long in-flight attempts may take to finish.
    pub shutdown_grace_ms: u64,
    /// A task this node claimed but no actor holds is given back after this
    /// long (covers the gap between an append and the actor's start).
    pub orphan_grace_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            lookahead_ms: 1_000,
            hold_max_ms: 10_000,
            claim_batch: 500,
            heartbeat_interval_ms: 2_000,
            node_ttl_ms: 10_000,
            shutdown_grace_ms: 10_000,
            orphan_grace_ms: 30_000,
        }
    }
}

impl SchedulerConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    pub fn lookahead(&self) -> Duration {
        Duration::from_millis(self.lookahead_ms)
    }

    pub fn hold_max(&self) -> Duration {
        Duration::from_millis(self.hold_max_ms.max(self.lookahead_ms))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(100))
    }

    pub fn orphan_grace(&self) -> Duration {
        Duration::from_millis(self.orphan_grace_ms.max(1_000))
    }

    pub fn node_ttl(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms.max(self.heartbeat_interval_ms * 2))
    }
}

/// Where failure notifications go when a task is dead-lettered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    pub webhooks: Vec<NotifyWebhook>,
    /// Tries per webhook and notification.
    pub attempts: u32,
    pub timeout_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            attempts: 5,
            timeout_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    pub url: String,
    #[serde(default)]
    pub format: NotifyFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// A JSON document describing the dead letter.
    #[default]
    Generic,
    /// A DingTalk group robot markdown message.
    Dingtalk,
    /// A WeCom (企业微信) group robot markdown message.
    Wecom,
}
