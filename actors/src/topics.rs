//! Built-in topics for the API: create, change and delete them (each an
//! event of the topic's aggregate, and its log shaped to match), wake-ups of
//! the topics' readers when messages are published on any node, and the
//! retention pass that drops expired slices of the logs.

use bida_domain::consumer::Consumer;
use bida_domain::kinds::builtin::BuiltinSource;
use bida_domain::kinds::Source;
use bida_domain::topic::{Topic, TopicCommand, TopicError, TopicInput, TopicName, TopicPatch, TopicSpec};
use bida_store::topics::{LogSearch, PartitionBounds};
use bida_store::{Channel, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::brokers::{admin_error, AdminError};
use crate::commands::Commands;

/// How often the logs are maintained (slices made ahead, expired ones dropped).
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

/// Wakes this node's readers of a topic when messages are published to it
/// (on any node): a counter per topic, so a wake-up that comes between a
/// read and the wait is not lost.
#[derive(Clone, Default)]
pub struct TopicWakes(Arc<Mutex<HashMap<String, watch::Sender<u64>>>>);

impl std::fmt::Debug for TopicWakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicWakes")
    }
}

impl TopicWakes {
    pub fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        let mut topics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn wake(&self, topic: &str) {
        let topics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = topics.get(topic) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        let topics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for sender in topics.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Listens for publishes on every node until aborted; readers poll
    /// slowly meanwhile should the listener be lost.
    pub fn spawn_listener(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let wakes = self.clone();
        tokio::spawn(async move {
            loop {
                match store.listen(Channel::Topics).await {
                    Ok(mut listener) => {
                        // What was published while not listening is read now.
                        wakes.wake_all();
                        while let Some(topic) = listener.next().await {
                            wakes.wake(&topic);
                        }
                        tracing::warn!("lost the topics' listener; listening again");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for topics' publishes; trying again"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// A topic as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicView {
    pub name: TopicName,
    pub partitions: u16,
    /// How long messages are kept (`3d`).
    pub retention: bida_domain::topic::Retention,
    pub created_at: Option<DateTime<Utc>>,
    /// Messages the topic holds now.
    pub messages: i64,
    /// Messages ever published to it.
    pub published: i64,
    /// Each partition's first kept offset and next offset.
    pub offsets: Vec<PartitionOffsets>,
    /// Consumers subscribed to it (their ids).
    pub subscriptions: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub next: i64,
}

/// A message found by a search, with where each subscription stands with it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FoundMessage {
    pub id: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body as text when it is UTF-8, else `body_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub published_at: DateTime<Utc>,
    pub subscriptions: Vec<SubscriptionStand>,
}

/// Where one subscription stands with a message: its task's status
/// (`delivered`, `dead`, `retrying`...) once it has one; before that
/// `pending` (not read yet, or being delivered) or `skipped` (the
/// subscription's offsets were moved past it).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionStand {
    pub consumer_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

#[derive(Clone)]
pub struct TopicService {
    store: Store,
    commands: Commands<Topic>,
}

fn topic_error(e: cqrs_es::AggregateError<TopicError>) -> AdminError {
    admin_error(e, |e| matches!(e, TopicError::NotFound))
}

fn log_error(e: StoreError) -> AdminError {
    match e {
        StoreError::Missing(what) => AdminError::NotFound(what),
        e => e.into(),
    }
}

impl TopicService {
    pub fn new(store: Store) -> Self {
        Self {
            commands: Commands::new(&store),
            store,
        }
    }

    async fn load(&self, name: &str) -> Result<(Topic, TopicSpec), AdminError> {
        match self.store.load_aggregate::<Topic>(name).await? {
            Some((topic, _)) => match topic.spec() {
                Some(spec) => Ok((topic.clone(), *spec)),
                None => Err(AdminError::NotFound(format!("no topic named {name}"))),
            },
            None => Err(AdminError::NotFound(format!("no topic named {name}"))),
        }
    }

    /// The topic's spec, for publishers.
    pub async fn spec(&self, name: &str) -> Result<TopicSpec, AdminError> {
        Ok(self.load(name).await?.1)
    }

    pub async fn create(&self, input: TopicInput) -> Result<TopicView, AdminError> {
        let (name, spec) = input.into_spec().map_err(AdminError::Invalid)?;
        // A topic that exists keeps its log as it is.
        if self.load(name.as_str()).await.is_ok() {
            return Err(AdminError::Rejected(TopicError::Exists.to_string()));
        }
        // The log first: a topic on record always has one (a log left by a
        // refused create is shaped again by the next).
        self.store
            .shape_log(name.as_str(), i32::from(spec.partitions), spec.retention.as_duration())
            .await?;
        let command = TopicCommand::Create {
            name: name.clone(),
            spec,
            at: Utc::now(),
        };
        self.commands
            .execute(name.as_str(), command)
            .await
            .map_err(topic_error)?;
        self.view(name.as_str()).await
    }

    pub async fn change(&self, name: &str, patch: TopicPatch) -> Result<TopicView, AdminError> {
        let (_, current) = self.load(name).await?;
        if patch.partitions.is_some_and(|p| (1..current.partitions).contains(&p)) {
            // Well formed, but not for this topic as it is now.
            return Err(AdminError::Rejected(TopicError::Shrunk(current.partitions).to_string()));
        }
        let spec = patch.applied_to(current).map_err(AdminError::Invalid)?;
        self.store
            .shape_log(name, i32::from(spec.partitions), spec.retention.as_duration())
            .await?;
        if spec != current {
            self.commands
                .execute(name, TopicCommand::Change { spec, at: Utc::now() })
                .await
                .map_err(topic_error)?;
        }
        self.view(name).await
    }

    /// Refused while consumers subscribe to it.
    pub async fn delete(&self, name: &str) -> Result<(), AdminError> {
        self.load(name).await?;
        let subscribers = self.subscriptions(name).await?;
        if !subscribers.is_empty() {
            return Err(AdminError::Rejected(format!(
                "consumers subscribe to this topic: {}; delete them first",
                subscribers.join(", ")
            )));
        }
        self.commands
            .execute(name, TopicCommand::Delete { at: Utc::now() })
            .await
            .map_err(topic_error)?;
        self.store.drop_log(name).await?;
        Ok(())
    }

    /// The consumers subscribed to the topic, with their sources.
    pub async fn subscribers(&self, name: &str) -> Result<Vec<(String, BuiltinSource)>, AdminError> {
        Ok(self
            .store
            .load_all::<Consumer>()
            .await?
            .into_iter()
            .filter(|(_, consumer, _)| !consumer.is_deleted())
            .filter_map(|(id, consumer, _)| match &consumer.spec()?.source {
                Source::Builtin(source) if source.topic.as_str() == name => Some((id, source.clone())),
                _ => None,
            })
            .collect())
    }

    async fn subscriptions(&self, name: &str) -> Result<Vec<String>, AdminError> {
        Ok(self.subscribers(name).await?.into_iter().map(|(id, _)| id).collect())
    }

    pub async fn view(&self, name: &str) -> Result<TopicView, AdminError> {
        let (topic, spec) = self.load(name).await?;
        let bounds = self.store.log_bounds(name).await.map_err(log_error)?;
        Ok(Self::describe(&topic, spec, bounds, self.subscriptions(name).await?))
    }

    fn describe(topic: &Topic, spec: TopicSpec, bounds: Vec<PartitionBounds>, subscriptions: Vec<String>) -> TopicView {
        TopicView {
            name: topic.name().cloned().expect("a topic with a spec has a name"),
            partitions: spec.partitions,
            retention: spec.retention,
            created_at: topic.created_at(),
            messages: bounds.iter().map(|b| b.next - b.low).sum(),
            published: bounds.iter().map(|b| b.next).sum(),
            offsets: bounds
                .into_iter()
                .map(|b| PartitionOffsets {
                    partition: b.partition,
                    low: b.low,
                    next: b.next,
                })
                .collect(),
            subscriptions,
        }
    }

    pub async fn list(&self) -> Result<Vec<TopicView>, AdminError> {
        let topics = self.store.load_all::<Topic>().await?;
        let consumers = self.store.load_all::<Consumer>().await?;
        let mut views = Vec::new();
        for (name, topic, _) in topics {
            let Some(spec) = topic.spec().copied() else { continue };
            let bounds = self.store.log_bounds(&name).await.unwrap_or_default();
            let subscriptions = consumers
                .iter()
                .filter(|(_, consumer, _)| !consumer.is_deleted())
                .filter(|(_, consumer, _)| {
                    consumer
                        .spec()
                        .is_some_and(|s| matches!(&s.source, Source::Builtin(b) if b.topic.as_str() == name))
                })
                .map(|(id, _, _)| id.clone())
                .collect();
            views.push(Self::describe(&topic, spec, bounds, subscriptions));
        }
        Ok(views)
    }

    /// Messages of the topic matching `search`, newest first, with where each
    /// of its subscriptions stands with them.
    pub async fn search(&self, name: &str, search: &LogSearch) -> Result<Vec<FoundMessage>, AdminError> {
        self.load(name).await?;
        let found = self.store.search_log(name, search).await.map_err(log_error)?;
        let consumers = self.store.load_all::<Consumer>().await?;
        let mut subscriptions = Vec::new();
        for (id, consumer, _) in &consumers {
            if let Some(Source::Builtin(source)) = consumer.spec().map(|s| &s.source) {
                if !consumer.is_deleted() && source.topic.as_str() == name {
                    let offsets = self.store.subscription_offsets(&source.group, name).await?;
                    subscriptions.push((id.clone(), consumer, offsets));
                }
            }
        }
        let task_ids: Vec<String> = found
            .iter()
            .flat_map(|m| {
                subscriptions
                    .iter()
                    .map(|(id, consumer, _)| consumer.task_id(id, consumer.resets(), &m.id.to_string()))
            })
            .collect();
        let tasks: HashMap<String, String> = self
            .store
            .load_tasks(&task_ids)
            .await?
            .loaded
            .into_iter()
            .map(|loaded| (loaded.id.clone(), loaded.task.status().as_str().to_string()))
            .collect();
        Ok(found
            .into_iter()
            .map(|m| {
                let stands = subscriptions
                    .iter()
                    .map(|(id, consumer, offsets)| {
                        let task_id = consumer.task_id(id, consumer.resets(), &m.id.to_string());
                        let (status, task_id) = match tasks.get(&task_id) {
                            Some(status) => (status.clone(), Some(task_id)),
                            None if offsets.get(&m.partition).is_some_and(|next| *next > m.offset) => {
                                ("skipped".to_string(), None)
                            }
                            None => ("pending".to_string(), None),
                        };
                        SubscriptionStand {
                            consumer_id: id.clone(),
                            status,
                            task_id,
                        }
                    })
                    .collect();
                let (body, body_base64) = match String::from_utf8(m.body) {
                    Ok(text) => (Some(text), None),
                    Err(bytes) => {
                        use base64::Engine;
                        (
                            None,
                            Some(base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes())),
                        )
                    }
                };
                FoundMessage {
                    id: m.id.to_string(),
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key,
                    headers: m.headers,
                    content_type: m.content_type,
                    body,
                    body_base64,
                    published_at: m.published_at,
                    subscriptions: stands,
                }
            })
            .collect())
    }

    /// Runs the logs' maintenance every minute until aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                match store.maintain_logs(Utc::now()).await {
                    Ok(dropped) => {
                        for slice in dropped {
                            tracing::info!(topic = %slice.topic, slice = %slice.slice_start, messages = slice.messages,
                                "dropped a slice of a topic's log after its retention");
                            bida_telemetry::instruments().topic_messages_expired.add(
                                slice.messages.max(0) as u64,
                                &[bida_telemetry::KeyValue::new("bida.topic", slice.topic)],
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot maintain the topics' logs"),
                }
                tokio::time::sleep(MAINTAIN_EVERY).await;
            }
        })
    }
}
