//! Operations on a Kafka cluster outside any consumer.

use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::source::{broker_error, client_config, partition_backlog, source_message, METADATA_TIMEOUT};
use crate::sources::{Backlog, SourceError};

/// A topic as the broker view shows it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionInfo {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// Operations on a Kafka cluster outside any consumer: health, topics, group
/// offsets, resets, reading a range. All blocking calls run off the runtime.
#[derive(Clone)]
pub struct KafkaAdmin {
    bootstrap: String,
    options: BTreeMap<String, String>,
}

impl KafkaAdmin {
    pub fn new(bootstrap: &str, options: &BTreeMap<String, String>) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            options: options.clone(),
        }
    }

    fn consumer(&self, group: Option<&str>) -> Result<BaseConsumer, SourceError> {
        let mut config = client_config(&self.bootstrap, &self.options);
        config.set("enable.auto.commit", "false");
        config.set("group.id", group.unwrap_or("bida-admin"));
        config.create().map_err(|e| SourceError::Connect(e.to_string()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Self) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let admin = self.clone();
        tokio::task::spawn_blocking(move || work(admin))
            .await
            .map_err(|e| SourceError::Broker(e.to_string()))?
    }

    /// Topics (internal ones left out) with their partitions and offsets.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, SourceError> {
        self.blocking(|admin| {
            let consumer = admin.consumer(None)?;
            let metadata = consumer
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(|e| SourceError::Connect(e.to_string()))?;
            let mut topics = Vec::new();
            for topic in metadata.topics().iter().filter(|t| !t.name().starts_with("__")) {
                let mut partitions = Vec::new();
                for partition in topic.partitions() {
                    let (low, high) = consumer
                        .fetch_watermarks(topic.name(), partition.id(), METADATA_TIMEOUT)
                        .map_err(broker_error)?;
                    partitions.push(PartitionInfo {
                        partition: partition.id(),
                        start_offset: low,
                        end_offset: high,
                    });
                }
                partitions.sort_by_key(|p| p.partition);
                topics.push(TopicInfo {
                    name: topic.name().to_string(),
                    partitions,
                });
            }
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(topics)
        })
        .await
    }

    /// The partitions of `topics`.
    fn partitions(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i32)>, SourceError> {
        let mut found = Vec::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| SourceError::Connect(e.to_string()))?;
            for t in metadata.topics() {
                if t.error().is_some() {
                    return Err(SourceError::Broker(format!("topic {topic}: {:?}", t.error())));
                }
                found.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
            }
        }
        Ok(found)
    }

    /// Lag of a consumer group over all partitions of its topics.
    pub async fn group_backlog(&self, group: &str, topics: &[String]) -> Result<Vec<Backlog>, SourceError> {
        let (group, topics) = (group.to_string(), topics.to_vec());
        self.blocking(move |admin| {
            let consumer = admin.consumer(Some(&group))?;
            let mut list = TopicPartitionList::new();
            for (topic, partition) in Self::partitions(&consumer, &topics)? {
                list.add_partition(&topic, partition);
            }
            let committed = consumer
                .committed_offsets(list, METADATA_TIMEOUT)
                .map_err(broker_error)?;
            partition_backlog(&consumer, &committed)
        })
        .await
    }

    /// Commits new offsets for the group (which must have no active members)
    /// and returns them.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topics: &[String],
        reset: &OffsetReset,
    ) -> Result<Vec<PartitionOffset>, SourceError> {
        let (group, topics, reset) = (group.to_string(), topics.to_vec(), reset.clone());
        self.blocking(move |admin| {
            let consumer = admin.consumer(Some(&group))?;
            let partitions = Self::partitions(&consumer, &topics)?;
            let mut targets: Vec<PartitionOffset> = Vec::new();
            match &reset {
                OffsetReset::Earliest | OffsetReset::Latest => {
                    for (topic, partition) in &partitions {
                        let (low, high) = consumer
                            .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
                            .map_err(broker_error)?;
                        let offset = if matches!(reset, OffsetReset::Earliest) {
                            low
                        } else {
                            high
                        };
                        targets.push(PartitionOffset {
                            topic: topic.clone(),
                            partition: *partition,
                            offset,
                        });
                    }
                }
                OffsetReset::Timestamp { timestamp } => {
                    let mut query = TopicPartitionList::new();
                    for (topic, partition) in &partitions {
                        query
                            .add_partition_offset(topic, *partition, Offset::Offset(timestamp.timestamp_millis()))
                            .map_err(broker_error)?;
                    }
                    let found = consumer
                        .offsets_for_times(query, METADATA_TIMEOUT)
                        .map_err(broker_error)?;
                    for element in found.elements() {
                        let offset = match element.offset() {
                            Offset::Offset(offset) => offset,
                            // No message at or after the time: start at the end.
                            _ => {
                                consumer
                                    .fetch_watermarks(element.topic(), element.partition(), METADATA_TIMEOUT)
                                    .map_err(broker_error)?
                                    .1
                            }
                        };
                        targets.push(PartitionOffset {
                            topic: element.topic().to_string(),
                            partition: element.partition(),
                            offset,
                        });
                    }
                }
                OffsetReset::Offsets { offsets } => {
                    for wanted in offsets {
                        if !partitions.contains(&(wanted.topic.clone(), wanted.partition)) {
                            return Err(SourceError::Invalid(format!(
                                "{}/{} is not a partition of the consumer's topics",
                                wanted.topic, wanted.partition
                            )));
                        }
                    }
                    targets = offsets.clone();
                }
            }
            let mut commit = TopicPartitionList::new();
            for target in &targets {
                commit
                    .add_partition_offset(&target.topic, target.partition, Offset::Offset(target.offset))
                    .map_err(broker_error)?;
            }
            consumer.commit(&commit, CommitMode::Sync).map_err(broker_error)?;
            targets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            Ok(targets)
        })
        .await
    }

    /// The messages of one partition from `from` to `to` (inclusive).
    pub async fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let topic = topic.to_string();
        self.blocking(move |admin| {
            let consumer = admin.consumer(None)?;
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(broker_error)?;
            let last = to.min(high - 1);
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topic, partition, Offset::Offset(from))
                .map_err(broker_error)?;
            consumer.assign(&list).map_err(broker_error)?;
            let mut messages = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while messages.last().is_none_or(|m: &(i64, SourceMessage)| m.0 < last) && last >= from {
                if std::time::Instant::now() > deadline {
                    return Err(SourceError::Broker(format!(
                        "timed out reading {topic}/{partition} at {from}..={to}"
                    )));
                }
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(message)) if message.offset() <= last => {
                        let offset = message.offset();
                        messages.push((offset, source_message(&message)));
                    }
                    Some(Ok(_)) => break,
                    Some(Err(e)) => return Err(broker_error(e)),
                    None => {}
                }
            }
            Ok(messages.into_iter().map(|(_, m)| m).collect())
        })
        .await
    }
}
