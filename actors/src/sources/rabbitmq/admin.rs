//! Operations on a RabbitMQ broker outside any consumer: health, queues and
//! the cluster's figures from the management API.

use serde::Serialize;
use std::sync::OnceLock;

use super::source::{connect, connect_error, queue_counts};
use crate::sources::SourceError;

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    pub name: String,
    pub vhost: String,
    pub messages: i64,
    pub consumers: i64,
}

/// The management API's HTTP client, built once: building one reads the
/// system's CA bundle (about 0.1 s of CPU), and an admin is made for every
/// broker probe (each broker every 30 s), console view and backlog read.
/// It keeps no idle connections: a pooled connection is driven by the
/// runtime that opened it, and callers run on more than one.
fn management_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .no_proxy()
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// Operations on a RabbitMQ broker outside any consumer.
#[derive(Clone)]
pub struct RabbitAdmin {
    url: String,
    management_url: Option<String>,
    http: reqwest::Client,
}

impl RabbitAdmin {
    pub fn new(url: &str, management_url: Option<&str>) -> Self {
        Self {
            url: url.to_string(),
            management_url: management_url.map(String::from),
            http: management_client(),
        }
    }

    /// Connects and disconnects: is the broker there and does it let us in?
    pub async fn check(&self) -> Result<(), SourceError> {
        let connection = connect(&self.url, "bida-health").await?;
        let _ = connection.close(200, "health check".into()).await;
        Ok(())
    }

    /// Every queue (through the management API) or, without it, the queues named.
    pub async fn queues(&self, known: &[String]) -> Result<Vec<QueueInfo>, SourceError> {
        match &self.management_url {
            Some(management) => self.queues_from_management(management).await,
            None => {
                let connection = connect(&self.url, "bida-inventory").await?;
                let mut queues = Vec::new();
                for queue in known {
                    // A failed passive declare closes the channel: one per queue.
                    let channel = connection.create_channel().await.map_err(connect_error)?;
                    if let Ok((messages, consumers)) = queue_counts(&channel, queue).await {
                        queues.push(QueueInfo {
                            name: queue.clone(),
                            vhost: String::new(),
                            messages,
                            consumers,
                        });
                        let _ = channel.close(200, "inventory".into()).await;
                    }
                }
                let _ = connection.close(200, "inventory".into()).await;
                Ok(queues)
            }
        }
    }

    /// GETs a management API path (`api/...`) and decodes the JSON answer.
    async fn management_get<T: serde::de::DeserializeOwned>(
        &self,
        management: &str,
        path: &str,
    ) -> Result<T, SourceError> {
        let url = url::Url::parse(management).map_err(|e| SourceError::Connect(e.to_string()))?;
        let mut endpoint = url.clone();
        endpoint.set_username("").ok();
        endpoint.set_password(None).ok();
        let endpoint = endpoint.join(path).map_err(|e| SourceError::Connect(e.to_string()))?;
        let response = self
            .http
            .get(endpoint)
            .basic_auth(url.username(), url.password())
            .send()
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        if !response.status().is_success() {
            return Err(SourceError::Broker(format!(
                "management API answered {}",
                response.status()
            )));
        }
        response.json().await.map_err(|e| SourceError::Broker(e.to_string()))
    }

    /// The cluster's figures from the management API (`None` without one).
    pub async fn overview(&self) -> Result<Option<RabbitOverview>, SourceError> {
        let Some(management) = &self.management_url else {
            return Ok(None);
        };
        let overview: ManagementOverview = self.management_get(management, "api/overview").await?;
        let nodes: Vec<RabbitNode> = self.management_get(management, "api/nodes").await?;
        let rate = |details: &Option<RateDetails>| details.as_ref().map_or(0.0, |d| d.rate);
        let stats = overview.message_stats.unwrap_or_default();
        let totals = overview.queue_totals.unwrap_or_default();
        Ok(Some(RabbitOverview {
            version: overview.rabbitmq_version,
            connections: overview.object_totals.connections,
            channels: overview.object_totals.channels,
            consumers: overview.object_totals.consumers,
            queues: overview.object_totals.queues,
            messages: totals.messages,
            messages_ready: totals.messages_ready,
            messages_unacknowledged: totals.messages_unacknowledged,
            publish_rate: rate(&stats.publish_details),
            deliver_rate: rate(&stats.deliver_get_details),
            ack_rate: rate(&stats.ack_details),
            nodes,
        }))
    }

    async fn queues_from_management(&self, management: &str) -> Result<Vec<QueueInfo>, SourceError> {
        #[derive(serde::Deserialize)]
        struct Queue {
            name: String,
            vhost: String,
            #[serde(default)]
            messages: i64,
            #[serde(default)]
            consumers: i64,
        }
        let queues: Vec<Queue> = self
            .management_get(management, "api/queues?columns=name,vhost,messages,consumers")
            .await?;
        Ok(queues
            .into_iter()
            .map(|q| QueueInfo {
                name: q.name,
                vhost: q.vhost,
                messages: q.messages,
                consumers: q.consumers,
            })
            .collect())
    }
}

/// A RabbitMQ cluster as its management API describes it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitOverview {
    pub version: String,
    pub connections: i64,
    pub channels: i64,
    pub consumers: i64,
    pub queues: i64,
    pub messages: i64,
    pub messages_ready: i64,
    pub messages_unacknowledged: i64,
    /// Messages per second, over the management API's last sample window.
    pub publish_rate: f64,
    pub deliver_rate: f64,
    pub ack_rate: f64,
    pub nodes: Vec<RabbitNode>,
}

/// One RabbitMQ node: memory, disk and file descriptors against their limits.
/// A figure the management plugin has not collected yet (just started, or
/// behind under load) is absent rather than 0.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitNode {
    pub name: String,
    #[serde(default)]
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<i64>,
    #[serde(default)]
    pub mem_alarm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_limit: Option<i64>,
    #[serde(default)]
    pub disk_free_alarm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<i64>,
}

#[derive(serde::Deserialize)]
struct ManagementOverview {
    #[serde(default)]
    rabbitmq_version: String,
    #[serde(default)]
    object_totals: ObjectTotals,
    #[serde(default)]
    queue_totals: Option<QueueTotals>,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Default, serde::Deserialize)]
struct ObjectTotals {
    #[serde(default)]
    connections: i64,
    #[serde(default)]
    channels: i64,
    #[serde(default)]
    consumers: i64,
    #[serde(default)]
    queues: i64,
}

#[derive(Default, serde::Deserialize)]
struct QueueTotals {
    #[serde(default)]
    messages: i64,
    #[serde(default)]
    messages_ready: i64,
    #[serde(default)]
    messages_unacknowledged: i64,
}

#[derive(Default, serde::Deserialize)]
struct MessageStats {
    publish_details: Option<RateDetails>,
    deliver_get_details: Option<RateDetails>,
    ack_details: Option<RateDetails>,
}

#[derive(serde::Deserialize)]
struct RateDetails {
    #[serde(default)]
    rate: f64,
}
