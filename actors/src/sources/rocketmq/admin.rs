//! A RocketMQ cluster's brokers and the consumers' topics, a group's
//! backlog, offsets moved for a stopped consumer, and past messages read
//! again by queue offset.

use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::rocketmq::{RocketmqConnection, RocketmqSource};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::cluster::{Cluster, Route};
use super::queues::{self, Pulled};
use super::remoting::{code, Remote, Request};
use super::source::{queue_backlog, source_message};
use crate::sources::{Backlog, Destination, Fact, Inspection, Range, SourceError};

/// A pull for a resend brings at most this many messages at a time.
const READ_BATCH: u32 = 64;

async fn topic_broker(cluster: &Cluster, topic: &str) -> Result<(Route, std::sync::Arc<Remote>), SourceError> {
    let route = cluster.route(topic).await?;
    let broker = cluster.remote(&route.address).await?;
    Ok((route, broker))
}

/// The brokers the name servers know, their figures, and the topics of
/// Bida's consumers with their queues.
pub(super) async fn look(
    connection: &RocketmqConnection,
    known: Vec<&RocketmqSource>,
) -> Result<Inspection, SourceError> {
    let cluster = Cluster::new(connection, None);
    let brokers = cluster.brokers().await?;
    let mut shown_brokers = Vec::new();
    let mut facts = Vec::new();
    let mut put_tps = None;
    for (name, addresses) in &brokers {
        let Some(address) = addresses.get("0") else {
            shown_brokers.push(serde_json::json!({"name": name, "addresses": addresses, "master": false}));
            continue;
        };
        let runtime = runtime_info(&cluster, address).await.unwrap_or_default();
        if facts.is_empty() {
            if let Some(version) = runtime.get("brokerVersionDesc") {
                facts.push(Fact {
                    key: "version",
                    label: ("Version", "版本"),
                    value: format!("RocketMQ {version}"),
                });
            }
        }
        if let Some(tps) = runtime
            .get("putTps")
            .and_then(|tps| tps.split(' ').next()?.parse::<f64>().ok())
        {
            *put_tps.get_or_insert(0.0) += tps;
        }
        shown_brokers.push(serde_json::json!({
            "name": name,
            "addresses": addresses,
            "version": runtime.get("brokerVersionDesc"),
            "put_tps": runtime.get("putTps"),
            "get_tps": runtime.get("getTransferredTps"),
            "messages_put_today": runtime.get("msgPutTotalTodayNow"),
        }));
    }
    facts.push(Fact {
        key: "brokers",
        label: ("Broker groups", "Broker 组"),
        value: brokers.len().to_string(),
    });
    let mut topics: Vec<&str> = known.iter().map(|source| source.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut destinations = Vec::new();
    let mut shown_topics = Vec::new();
    for topic in topics {
        let Ok((route, broker)) = topic_broker(&cluster, topic).await else {
            shown_topics.push(serde_json::json!({"name": topic, "exists": false}));
            continue;
        };
        let (mut stored, mut written) = (0, 0);
        for queue in route.queue_ids() {
            let end = queues::end(&broker, topic, queue).await?;
            let start = queues::start(&broker, topic, queue).await?;
            stored += end - start;
            written += end;
        }
        destinations.push(Destination {
            name: topic.to_string(),
            messages: Some(stored),
            written: Some(written),
            partitions: Some(route.queues as usize),
            consumers: None,
        });
        shown_topics.push(serde_json::json!({
            "name": topic, "broker": route.broker_name, "queues": route.queues,
            "messages": stored, "written": written,
        }));
    }
    let mut inspection = Inspection {
        destinations,
        facts,
        publish_rate: put_tps,
        ..Inspection::default()
    };
    inspection.section("brokers", shown_brokers);
    inspection.section("topics", shown_topics);
    Ok(inspection)
}

/// A broker's runtime figures (`GET_BROKER_RUNTIME_INFO`).
async fn runtime_info(cluster: &Cluster, address: &str) -> Result<BTreeMap<String, String>, SourceError> {
    #[derive(Deserialize)]
    struct Table {
        #[serde(default)]
        table: BTreeMap<String, String>,
    }
    let table: Table = cluster
        .call(address, Request::new(code::GET_BROKER_RUNTIME_INFO))
        .await?
        .ok()?
        .json()?;
    Ok(table.table)
}

/// Every queue's backlog for the consumer's group.
pub(super) async fn backlog(
    connection: &RocketmqConnection,
    source: &RocketmqSource,
) -> Result<Vec<Backlog>, SourceError> {
    let cluster = Cluster::new(connection, None);
    let (route, broker) = topic_broker(&cluster, &source.topic).await?;
    let mut backlog = Vec::new();
    for queue in route.queue_ids() {
        backlog.push(queue_backlog(&broker, &source.group, &source.topic, queue).await?);
    }
    Ok(backlog)
}

/// Sets the group's offset on every queue (or those named) of its topic.
pub(super) async fn reset_offsets(
    connection: &RocketmqConnection,
    source: &RocketmqSource,
    reset: &OffsetReset,
) -> Result<Vec<PartitionOffset>, SourceError> {
    let cluster = Cluster::new(connection, None);
    let topic = source.topic.as_str();
    let (route, broker) = topic_broker(&cluster, topic).await?;
    // A member still there (a node finishing its stop) would commit over the
    // reset: the caller tries again until the group is empty.
    let members = super::source::members(&broker, &source.group).await?;
    if !members.is_empty() {
        return Err(SourceError::Broker(format!(
            "the group {} still has members ({}); offsets move once they left",
            source.group,
            members.join(", ")
        )));
    }
    let mut targets = Vec::new();
    for queue in route.queue_ids() {
        let offset = match reset {
            OffsetReset::Earliest => queues::start(&broker, topic, queue).await?,
            OffsetReset::Latest => queues::end(&broker, topic, queue).await?,
            OffsetReset::Timestamp { timestamp } => {
                queues::at_time(&broker, topic, queue, timestamp.timestamp_millis()).await?
            }
            OffsetReset::Offsets { .. } => continue,
        };
        targets.push(PartitionOffset {
            topic: topic.to_string(),
            partition: queue,
            offset,
        });
    }
    if let OffsetReset::Offsets { offsets } = reset {
        for wanted in offsets {
            if wanted.topic != topic || !route.queue_ids().contains(&wanted.partition) {
                return Err(SourceError::Invalid(format!(
                    "{}/{} is not a queue of the consumer's topic ({topic} has queues 0 to {})",
                    wanted.topic,
                    wanted.partition,
                    route.queues - 1
                )));
            }
        }
        targets = offsets.clone();
    }
    for target in &targets {
        queues::set(&broker, &source.group, topic, target.partition, target.offset).await?;
    }
    targets.sort_by_key(|target| target.partition);
    Ok(targets)
}

/// The messages of one queue from offset `from` to `to` (inclusive) that
/// pass the consumer's tag filter; offsets no longer stored are skipped.
pub(super) async fn read_range(
    connection: &RocketmqConnection,
    source: &RocketmqSource,
    range: &Range,
) -> Result<Vec<SourceMessage>, SourceError> {
    let queue = range
        .partition
        .ok_or_else(|| SourceError::Invalid("a RocketMQ range names its queue as the partition".into()))?;
    let (from, to) = range.numbers("RocketMQ queue")?;
    if range.destination != source.topic {
        return Err(SourceError::Invalid(format!(
            "the consumer reads {}, not {}",
            source.topic, range.destination
        )));
    }
    let cluster = Cluster::new(connection, None);
    let (route, broker) = topic_broker(&cluster, &source.topic).await?;
    if !route.queue_ids().contains(&queue) {
        return Err(SourceError::Invalid(format!(
            "{} has queues 0 to {}, not {queue}",
            source.topic,
            route.queues - 1
        )));
    }
    let tags = source.tag_set();
    let mut messages = Vec::new();
    let mut offset = from.max(0);
    while offset <= to && messages.len() < range.limit {
        let pulled = queues::pull(
            &broker,
            &source.group,
            &source.topic,
            queue,
            offset,
            READ_BATCH,
            &source.expression(),
            false,
        )
        .await?;
        match pulled {
            Pulled::Messages(batch, next) => {
                for message in batch {
                    let wanted = tags.is_empty()
                        || message
                            .property(super::message::TAGS)
                            .is_some_and(|tag| tags.contains(&tag));
                    if message.queue_offset >= offset && message.queue_offset <= to && wanted {
                        messages.push(source_message(&message));
                    }
                }
                if next <= offset {
                    break;
                }
                offset = next;
            }
            // Below the queue's first stored offset: go on from there.
            Pulled::Moved(next) if next > offset => offset = next,
            Pulled::Moved(_) | Pulled::Nothing(_) => break,
        }
    }
    messages.truncate(range.limit);
    Ok(messages)
}
