//! The name servers and the brokers behind them: where a topic's queues
//! are, and one connection per broker, opened again when it drops.

use bida_domain::kinds::rocketmq::RocketmqConnection;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::remoting::{code, status, Remote, Request, Response};
use crate::sources::SourceError;

/// How long a name server or admin request may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker id of a broker group's master.
const MASTER: &str = "0";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicRouteData {
    #[serde(default)]
    queue_datas: Vec<QueueData>,
    #[serde(default)]
    broker_datas: Vec<BrokerData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueData {
    broker_name: String,
    read_queue_nums: i32,
    #[serde(default)]
    write_queue_nums: i32,
    #[serde(default = "readable")]
    perm: i32,
}

fn readable() -> i32 {
    PERM_READ
}

const PERM_READ: i32 = 0x1 << 2;
const PERM_WRITE: i32 = 0x1 << 1;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BrokerData {
    broker_name: String,
    #[serde(default)]
    broker_addrs: BTreeMap<String, String>,
}

/// Where a topic's readable queues are. Bida reads a topic from one broker
/// group (its queue ids are the partitions); a topic spread over several is
/// refused by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub broker_name: String,
    /// The broker group's master.
    pub address: String,
    pub queues: i32,
}

impl Route {
    pub fn queue_ids(&self) -> std::ops::Range<i32> {
        0..self.queues
    }
}

fn route_of(topic: &str, data: TopicRouteData) -> Result<Route, SourceError> {
    route_with(topic, data, Access::Read)
}

/// Reading a topic's queues, or writing to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

fn route_with(topic: &str, data: TopicRouteData, access: Access) -> Result<Route, SourceError> {
    let (perm, what) = match access {
        Access::Read => (PERM_READ, "readable"),
        Access::Write => (PERM_WRITE, "writable"),
    };
    let count = |queue: &QueueData| match access {
        Access::Read => queue.read_queue_nums,
        Access::Write => queue.write_queue_nums,
    };
    let readable: Vec<&QueueData> = data
        .queue_datas
        .iter()
        .filter(|queue| queue.perm & perm != 0 && count(queue) > 0)
        .collect();
    let queue = match readable.as_slice() {
        [] => return Err(SourceError::Invalid(format!("the topic {topic} has no {what} queues"))),
        [one] => *one,
        many => {
            return Err(SourceError::Unsupported(format!(
                "the topic {topic} is spread over {} broker groups; Bida reads a topic from one broker group",
                many.len()
            )))
        }
    };
    let address = data
        .broker_datas
        .iter()
        .find(|broker| broker.broker_name == queue.broker_name)
        .and_then(|broker| broker.broker_addrs.get(MASTER))
        .ok_or_else(|| {
            SourceError::Broker(format!(
                "the broker group {} of topic {topic} has no master online",
                queue.broker_name
            ))
        })?;
    Ok(Route {
        broker_name: queue.broker_name.clone(),
        address: address.clone(),
        queues: count(queue),
    })
}

pub struct Cluster {
    name_servers: Vec<String>,
    /// Requests brokers send this client (a group's members changed).
    notices: Option<mpsc::UnboundedSender<i32>>,
    remotes: tokio::sync::Mutex<HashMap<String, Arc<Remote>>>,
}

impl Cluster {
    pub fn new(connection: &RocketmqConnection, notices: Option<mpsc::UnboundedSender<i32>>) -> Self {
        Self {
            name_servers: connection.name_servers().into_iter().map(String::from).collect(),
            notices,
            remotes: tokio::sync::Mutex::default(),
        }
    }

    /// The open connection to `address`, or a new one.
    pub async fn remote(&self, address: &str) -> Result<Arc<Remote>, SourceError> {
        let mut remotes = self.remotes.lock().await;
        if let Some(remote) = remotes.get(address).filter(|remote| remote.is_alive()) {
            return Ok(remote.clone());
        }
        let remote = Remote::connect(address, self.notices.clone()).await?;
        remotes.insert(address.to_string(), remote.clone());
        Ok(remote)
    }

    /// Asks the name servers in turn until one answers.
    async fn ask_name_server(&self, request: Request) -> Result<Response, SourceError> {
        let mut last = SourceError::Connect("no name server configured".into());
        for address in &self.name_servers {
            let remote = match self.remote(address).await {
                Ok(remote) => remote,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match remote.call(request.clone(), CALL_TIMEOUT).await {
                Ok(response) => return Ok(response),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Where the topic's queues are.
    pub async fn route(&self, topic: &str) -> Result<Route, SourceError> {
        let response = self
            .ask_name_server(Request::new(code::GET_ROUTEINFO_BY_TOPIC).field("topic", topic))
            .await?;
        if response.code == status::TOPIC_NOT_EXIST {
            return Err(SourceError::Invalid(format!("the topic {topic} does not exist")));
        }
        route_of(topic, response.ok()?.json()?)
    }

    /// Where the topic's queues take messages (a topic in one broker group).
    pub async fn write_route(&self, topic: &str) -> Result<Route, SourceError> {
        let response = self
            .ask_name_server(Request::new(code::GET_ROUTEINFO_BY_TOPIC).field("topic", topic))
            .await?;
        if response.code == status::TOPIC_NOT_EXIST {
            return Err(SourceError::Invalid(format!("the topic {topic} does not exist")));
        }
        route_with(topic, response.ok()?.json()?, Access::Write)
    }

    /// The cluster as the name server knows it: broker groups and their addresses.
    pub async fn brokers(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, SourceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ClusterInfo {
            #[serde(default)]
            broker_addr_table: BTreeMap<String, BrokerData>,
        }
        let info: ClusterInfo = self
            .ask_name_server(Request::new(code::GET_BROKER_CLUSTER_INFO))
            .await?
            .ok()?
            .json()?;
        Ok(info
            .broker_addr_table
            .into_iter()
            .map(|(name, broker)| (name, broker.broker_addrs))
            .collect())
    }

    /// A request to a broker.
    pub async fn call(&self, address: &str, request: Request) -> Result<Response, SourceError> {
        self.remote(address).await?.call(request, CALL_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Result<Route, SourceError> {
        route_of("t", serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_topic_is_read_from_its_broker_groups_master() {
        let one = route(
            r#"{"queueDatas":[{"brokerName":"a","readQueueNums":4,"writeQueueNums":4,"perm":6}],
               "brokerDatas":[{"cluster":"c","brokerName":"a","brokerAddrs":{"0":"h:10911","1":"s:10911"}}]}"#,
        )
        .unwrap();
        assert_eq!((one.address.as_str(), one.queues), ("h:10911", 4));
        assert!(matches!(
            route(
                r#"{"queueDatas":[{"brokerName":"a","readQueueNums":4,"perm":6},{"brokerName":"b","readQueueNums":4,"perm":6}],
                   "brokerDatas":[]}"#
            ),
            Err(SourceError::Unsupported(_))
        ));
        assert!(matches!(
            route(
                r#"{"queueDatas":[{"brokerName":"a","readQueueNums":4,"perm":6}],
                   "brokerDatas":[{"brokerName":"a","brokerAddrs":{"1":"s:10911"}}]}"#
            ),
            Err(SourceError::Broker(_))
        ));
    }
}
