//! Kafka through rdkafka (librdkafka built from source): a consumer group
//! member per consumer and node, offsets stored only once an outcome is
//! recorded; admin operations on topics and group offsets.

mod admin;
mod offsets;
pub(crate) mod producer;
mod source;

pub use admin::{KafkaAdmin, PartitionInfo, TopicInfo};
pub use offsets::OffsetTracker;
pub use source::KafkaSource;

use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::kafka::{KafkaConnection, KafkaSource as KafkaSpec};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Destination, Inspection, Kind, Range, SourceError};

pub struct Kafka;

impl Kind for Kafka {
    type Connection = KafkaConnection;
    type Source = KafkaSpec;

    fn open<'a>(
        connection: &'a KafkaConnection,
        source: &'a KafkaSpec,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            let source = KafkaSource::connect(
                &connection.bootstrap_servers,
                &connection.options,
                source,
                &client.id,
                client.concurrency as usize,
            )
            .await?;
            Ok(BoxedSource::new(source))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a KafkaConnection,
        _: Vec<&'a KafkaSpec>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        async move {
            let topics = admin(connection).topics().await?;
            let mut inspection = Inspection {
                destinations: topics
                    .iter()
                    .map(|topic| Destination {
                        name: topic.name.clone(),
                        messages: Some(topic.partitions.iter().map(|p| p.end_offset - p.start_offset).sum()),
                        written: Some(topic.partitions.iter().map(|p| p.end_offset.max(0)).sum()),
                        partitions: Some(topic.partitions.len()),
                        consumers: None,
                    })
                    .collect(),
                ..Inspection::default()
            };
            inspection.section("topics", topics);
            Ok(inspection)
        }
        .boxed()
    }

    fn backlog<'a>(
        connection: &'a KafkaConnection,
        source: &'a KafkaSpec,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        async move { admin(connection).group_backlog(&source.group, &source.topics).await }.boxed()
    }

    fn reset_offsets<'a>(
        connection: &'a KafkaConnection,
        source: &'a KafkaSpec,
        reset: &'a OffsetReset,
    ) -> BoxFuture<'a, Result<Vec<PartitionOffset>, SourceError>> {
        async move {
            admin(connection)
                .reset_offsets(&source.group, &source.topics, reset)
                .await
        }
        .boxed()
    }

    fn read_range<'a>(
        connection: &'a KafkaConnection,
        _: &'a KafkaSpec,
        range: &'a Range,
    ) -> BoxFuture<'a, Result<Vec<SourceMessage>, SourceError>> {
        async move {
            let partition = range
                .partition
                .ok_or_else(|| SourceError::Invalid("a Kafka range names its partition".into()))?;
            let (from, to) = range.numbers("Kafka")?;
            admin(connection)
                .read_range(&range.destination, partition, from, to)
                .await
        }
        .boxed()
    }
}

fn admin(connection: &KafkaConnection) -> KafkaAdmin {
    KafkaAdmin::new(&connection.bootstrap_servers, &connection.options)
}
