//! Bida's own topics as a source: the log lives in Bida's store
//! (`bida_store::TopicLog`), so this kind is handed the store rather than a
//! connection. A subscription reads its share of the topic's partitions by
//! offset, commits offsets like a Kafka group, and is woken by publishes on
//! any node (with a slow poll in case a wake-up is missed).

pub(crate) mod producer;
mod source;
mod tracker;

pub use source::BuiltinMessages;

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::builtin::BuiltinSource;
use bida_store::topics::LogMessage;
use bida_store::{Store, StoreError};

use super::{Backlog, BoxedSource, Client, Destination, Fact, Inspection, Range, SourceError};

pub(crate) fn store_error(e: StoreError) -> SourceError {
    match e {
        StoreError::Missing(what) => SourceError::Invalid(what),
        e if e.is_transient() => SourceError::Lost(e.to_string()),
        e => SourceError::Broker(e.to_string()),
    }
}

/// A logged message as consumers see it.
pub(crate) fn source_message(topic: &str, message: LogMessage) -> SourceMessage {
    SourceMessage {
        message_id: message.id.to_string(),
        position: Position::partition(topic, message.partition).at(Offset::Number(message.offset)),
        traceparent: message.headers.get("traceparent").cloned(),
        key: message.key,
        body: message.body.into(),
        content_type: message.content_type,
    }
}

/// Checks that a new subscription's topic exists and fixes where it starts
/// before any node reads it: `latest` is the topic's end at the
/// subscription's creation, not at its first read (what is published
/// between is its own).
pub async fn place_new(store: &Store, source: &BuiltinSource) -> Result<(), SourceError> {
    let topic = source.topic.as_str();
    let bounds = store.log_bounds(topic).await.map_err(store_error)?;
    if source.start == bida_domain::kinds::kafka::StartAt::Latest {
        let ends: Vec<(i32, i64)> = bounds.iter().map(|b| (b.partition, b.next)).collect();
        store
            .commit_offsets(&source.group, topic, &ends)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

pub async fn open(store: &Store, source: &BuiltinSource, client: &Client) -> Result<BoxedSource, SourceError> {
    Ok(BoxedSource::new(
        BuiltinMessages::open(store.clone(), source, client).await?,
    ))
}

/// The topics of the built-in broker with their messages and partitions.
pub async fn look(store: &Store, known: Vec<&BuiltinSource>) -> Result<Inspection, SourceError> {
    let mut names: Vec<String> = store
        .load_all::<bida_domain::topic::Topic>()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|(_, topic, _)| topic.spec().is_some())
        .map(|(name, _, _)| name)
        .collect();
    names.extend(known.iter().map(|source| source.topic.to_string()));
    names.sort();
    names.dedup();
    let mut inspection = Inspection::default();
    let mut shown = Vec::new();
    for name in names {
        let Ok(bounds) = store.log_bounds(&name).await else {
            continue;
        };
        let held: i64 = bounds.iter().map(|b| b.next - b.low).sum();
        let written: i64 = bounds.iter().map(|b| b.next).sum();
        inspection.destinations.push(Destination {
            name: name.clone(),
            messages: Some(held),
            written: Some(written),
            partitions: Some(bounds.len()),
            consumers: Some(known.iter().filter(|s| s.topic.as_str() == name).count() as i64),
        });
        shown.push(serde_json::json!({"name": name, "partitions": bounds.len(), "messages": held, "written": written}));
    }
    inspection.facts.push(Fact {
        key: "topics",
        label: ("Topics", "主题数"),
        value: shown.len().to_string(),
    });
    inspection.section("topics", shown);
    Ok(inspection)
}

pub async fn backlog(store: &Store, source: &BuiltinSource) -> Result<Vec<Backlog>, SourceError> {
    let topic = source.topic.as_str();
    let bounds = store.log_bounds(topic).await.map_err(store_error)?;
    let committed = store
        .subscription_offsets(&source.group, topic)
        .await
        .map_err(store_error)?;
    Ok(bounds
        .into_iter()
        .map(|b| {
            // Not started yet: it reads from where its start says.
            let at = committed.get(&b.partition).copied().unwrap_or(match source.start {
                bida_domain::kinds::kafka::StartAt::Earliest => b.low,
                bida_domain::kinds::kafka::StartAt::Latest => b.next,
            });
            Backlog {
                committed: Some(at),
                end: Some(b.next),
                ..Backlog::of(topic, Some(b.partition), (b.next - at.max(b.low)).max(0))
            }
        })
        .collect())
}

pub async fn reset_offsets(
    store: &Store,
    source: &BuiltinSource,
    reset: &OffsetReset,
) -> Result<Vec<PartitionOffset>, SourceError> {
    let topic = source.topic.as_str();
    // A node still in the group commits on its way out, over the reset:
    // the caller tries again once every node has left.
    let members = store
        .group_members(&source.group, topic, source::MEMBER_TIMEOUT)
        .await
        .map_err(store_error)?;
    if !members.is_empty() {
        return Err(SourceError::Lost(format!(
            "nodes still read the subscription ({}); they leave within moments of the stop",
            members.join(", ")
        )));
    }
    let bounds = store.log_bounds(topic).await.map_err(store_error)?;
    let offsets: Vec<(i32, i64)> = match reset {
        OffsetReset::Earliest => bounds.iter().map(|b| (b.partition, b.low)).collect(),
        OffsetReset::Latest => bounds.iter().map(|b| (b.partition, b.next)).collect(),
        OffsetReset::Timestamp { timestamp } => store.offsets_at(topic, *timestamp).await.map_err(store_error)?,
        OffsetReset::Offsets { offsets } => {
            let mut chosen = Vec::new();
            for wanted in offsets {
                let Some(b) = bounds.iter().find(|b| b.partition == wanted.partition) else {
                    return Err(SourceError::Invalid(format!(
                        "topic {topic} has no partition {}",
                        wanted.partition
                    )));
                };
                if wanted.topic != topic {
                    return Err(SourceError::Invalid(format!(
                        "the subscription reads {topic}, not {}",
                        wanted.topic
                    )));
                }
                chosen.push((b.partition, wanted.offset.clamp(b.low, b.next)));
            }
            chosen
        }
    };
    store
        .reset_offsets(&source.group, topic, &offsets)
        .await
        .map_err(store_error)?;
    Ok(offsets
        .into_iter()
        .map(|(partition, offset)| PartitionOffset {
            topic: topic.to_string(),
            partition,
            offset,
        })
        .collect())
}

pub async fn read_range(
    store: &Store,
    source: &BuiltinSource,
    range: &Range,
) -> Result<Vec<SourceMessage>, SourceError> {
    let topic = source.topic.as_str();
    let partition = range
        .partition
        .ok_or_else(|| SourceError::Invalid("name the partition of the range".into()))?;
    let (from, to) = range.numbers("Topic")?;
    let want = (to - from + 1).max(0);
    if want as usize > range.limit {
        return Err(SourceError::Invalid(format!(
            "more than {} messages from {from} to {to}: resend a shorter range",
            range.limit
        )));
    }
    let messages = store
        .read_log(topic, partition, from, want)
        .await
        .map_err(store_error)?;
    Ok(messages
        .into_iter()
        .filter(|m| m.offset <= to)
        .map(|m| source_message(topic, m))
        .collect())
}
