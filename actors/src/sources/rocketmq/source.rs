//! A consumer group member that pulls: every node heartbeats to the topic's
//! broker, and a rebalance each second splits the topic's queues among the
//! group's members as RocketMQ's own clients do (sorted queues, sorted
//! client ids, an even share each), so Bida nodes can share a group with
//! Java consumers that use the default strategy. A puller per assigned
//! queue long-polls the broker and hands messages over a bounded channel.
//!
//! Offsets are committed contiguously per queue, only up to the first
//! message whose outcome is not yet recorded: a crash repeats deliveries,
//! never skips one. A queue that moves to another member is committed as
//! far as it is done and its held messages are let go (`take_revoked`);
//! its new owner starts at the committed offset.

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{SourceAnomaly, SourceMessage, StartAt, TopicPartition};
use bida_domain::kinds::rocketmq::{RocketmqConnection, RocketmqSource};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use super::cluster::{Cluster, Route};
use super::message::{StoredMessage, TAGS};
use super::queues::{self, Pulled};
use super::remoting::{code, status, Remote, Request};
use crate::sources::{
    clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Client, Incoming, Observed, Source, SourceError,
};

const REBALANCE_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const COMMIT_EVERY: Duration = Duration::from_secs(1);
const ROUTE_EVERY: Duration = Duration::from_secs(10);
/// Messages one pull may bring.
const PULL_BATCH: u32 = 32;
/// A puller's pause after a refused or failed pull.
const PULL_BACKOFF: Duration = Duration::from_secs(1);
/// A broker unreachable this long ends the source (the consumer restarts it
/// and shows the failure) instead of retrying quietly.
const BROKER_LOST_AFTER: Duration = Duration::from_secs(15);

/// What is done on one assigned queue.
#[derive(Debug)]
struct Progress {
    /// Which assignment of the queue this is: acks from an earlier one are
    /// ignored.
    generation: u64,
    /// Offsets handed out and not yet acknowledged.
    pending: BTreeSet<i64>,
    /// The offset after the last one handed out or passed over.
    next: i64,
    /// What the broker holds, when known.
    committed: Option<i64>,
}

impl Progress {
    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

/// The queues this member holds and how far each is done.
#[derive(Debug, Default)]
struct Queues {
    progress: HashMap<i32, Progress>,
    generation: u64,
}

type SharedQueues = Arc<Mutex<Queues>>;

fn lock(queues: &SharedQueues) -> std::sync::MutexGuard<'_, Queues> {
    queues.lock().unwrap_or_else(|p| p.into_inner())
}

struct Member {
    cluster: Cluster,
    spec: RocketmqSource,
    client_id: String,
    queues: SharedQueues,
    /// The subscription's version, fixed for the member's life: a newer one
    /// tells the broker the subscription changed.
    sub_version: i64,
    /// The tag filter, as the broker takes it and as arrivals are checked
    /// against it (worked out once, not per pull or message).
    expression: String,
    tags: Vec<String>,
}

pub struct RocketmqMessages {
    incoming: mpsc::Receiver<Result<Incoming, SourceError>>,
    anomaly_feed: Option<mpsc::UnboundedReceiver<Observed>>,
    pause: watch::Sender<bool>,
    revoked: Arc<Mutex<Vec<Position>>>,
    member: Arc<Member>,
    driver: tokio::task::JoinHandle<()>,
    pullers: Arc<Mutex<HashMap<i32, tokio::task::JoinHandle<()>>>>,
    route: Arc<Mutex<Option<Route>>>,
}

impl RocketmqMessages {
    pub async fn connect(
        connection: &RocketmqConnection,
        spec: &RocketmqSource,
        client: &Client,
    ) -> Result<Self, SourceError> {
        let (notices, notified) = mpsc::unbounded_channel();
        let member = Arc::new(Member {
            cluster: Cluster::new(connection, Some(notices)),
            spec: spec.clone(),
            client_id: client.id.clone(),
            queues: Arc::default(),
            sub_version: chrono::Utc::now().timestamp_millis(),
            expression: spec.expression(),
            tags: spec.tag_set().into_iter().map(String::from).collect(),
        });
        // Fail fast: the topic must exist and its broker answer.
        let route = member.cluster.route(&spec.topic).await?;
        let broker = member.cluster.remote(&route.address).await?;
        member.heartbeat(&broker).await?;
        let (sender, incoming) = mpsc::channel(client.concurrency.max(1) as usize);
        let (anomalies, anomaly_feed) = mpsc::unbounded_channel();
        let (pause, paused) = watch::channel(false);
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let pullers = Arc::new(Mutex::new(HashMap::new()));
        let route = Arc::new(Mutex::new(Some(route)));
        let driver = Driver {
            member: member.clone(),
            route: route.clone(),
            sender,
            anomalies,
            paused,
            revoked: revoked.clone(),
            pullers: pullers.clone(),
        };
        let driver = tokio::spawn(driver.run(notified));
        Ok(Self {
            incoming,
            anomaly_feed: Some(anomaly_feed),
            pause,
            revoked,
            member,
            driver,
            pullers,
            route,
        })
    }
}

impl Member {
    fn group(&self) -> &str {
        &self.spec.group
    }

    fn topic(&self) -> &str {
        &self.spec.topic
    }

    /// Tells the broker this member is in the group, with its subscription.
    async fn heartbeat(&self, broker: &Remote) -> Result<(), SourceError> {
        let tags = &self.tags;
        let codes: Vec<i32> = tags.iter().map(|tag| java_hash(tag)).collect();
        let body = serde_json::json!({
            "clientID": self.client_id,
            "producerDataSet": [],
            "consumerDataSet": [{
                "groupName": self.group(),
                "consumeType": "CONSUME_ACTIVELY",
                "messageModel": "CLUSTERING",
                "consumeFromWhere": match self.spec.start {
                    StartAt::Earliest => "CONSUME_FROM_FIRST_OFFSET",
                    StartAt::Latest => "CONSUME_FROM_LAST_OFFSET",
                },
                "subscriptionDataSet": [{
                    "classFilterMode": false,
                    "topic": self.topic(),
                    "subString": self.expression,
                    "tagsSet": tags,
                    "codeSet": codes,
                    "subVersion": self.sub_version,
                    "expressionType": "TAG",
                }],
                "unitMode": false,
            }],
            "heartbeatFingerprint": 0,
            "withoutSub": false,
        });
        let body = serde_json::to_vec(&body).map_err(|e| SourceError::Invalid(e.to_string()))?;
        broker
            .call(Request::new(code::HEART_BEAT).body(body), super::cluster::CALL_TIMEOUT)
            .await?
            .ok()
            .map(|_| ())
    }

    /// Where reading a newly assigned queue starts.
    async fn start_offset(&self, broker: &Remote, queue: i32) -> Result<(i64, Option<i64>), SourceError> {
        if let Some(offset) = queues::committed(broker, self.group(), self.topic(), queue).await? {
            return Ok((offset, Some(offset)));
        }
        let start = match self.spec.start {
            StartAt::Earliest => queues::start(broker, self.topic(), queue).await?,
            StartAt::Latest => queues::end(broker, self.topic(), queue).await?,
        };
        Ok((start, None))
    }

    /// Commits every queue whose done offset moved.
    async fn commit(&self, broker: &Remote, only: Option<i32>) {
        let due: Vec<(i32, i64)> = lock(&self.queues)
            .progress
            .iter()
            .filter(|(queue, _)| only.is_none_or(|only| only == **queue))
            .filter(|(_, progress)| progress.committed != Some(progress.committable()))
            .map(|(queue, progress)| (*queue, progress.committable()))
            .collect();
        for (queue, offset) in due {
            match queues::commit(broker, self.group(), self.topic(), queue, offset).await {
                Ok(()) => {
                    if let Some(progress) = lock(&self.queues).progress.get_mut(&queue) {
                        progress.committed = Some(offset);
                    }
                }
                Err(e) => tracing::warn!(queue, offset, error = %e, "RocketMQ offset not committed"),
            }
        }
    }

    fn at(&self, queue: i32) -> TopicPartition {
        TopicPartition {
            topic: self.topic().to_string(),
            partition: queue,
        }
    }
}

/// The group's members as the broker knows them.
pub(super) async fn members(broker: &Remote, group: &str) -> Result<Vec<String>, SourceError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Members {
        #[serde(default)]
        consumer_id_list: Vec<String>,
    }
    let request = Request::new(code::GET_CONSUMER_LIST_BY_GROUP).field("consumerGroup", group);
    let response = broker.call(request, super::cluster::CALL_TIMEOUT).await?;
    // An empty group is an error to RocketMQ ("no consumer for this group").
    if response.code != status::SUCCESS && response.remark.as_deref().is_some_and(|r| r.contains("no consumer")) {
        return Ok(Vec::new());
    }
    let members: Members = response.ok()?.json()?;
    Ok(members.consumer_id_list)
}

/// Java's `String.hashCode`, which RocketMQ filters tags by.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16()
        .fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(unit as i32))
}

/// RocketMQ's `AllocateMessageQueueAveragely`: queues and members sorted,
/// each member a contiguous, even share.
pub(super) fn share(queues: &[i32], members: &[String], me: &str) -> Vec<i32> {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    let Some(index) = members.iter().position(|member| *member == me) else {
        return Vec::new();
    };
    let (count, total) = (members.len(), queues.len());
    if total == 0 {
        return Vec::new();
    }
    let rest = total % count;
    let size = if total <= count {
        1
    } else if rest > 0 && index < rest {
        total / count + 1
    } else {
        total / count
    };
    let first = if rest > 0 && index < rest {
        index * size
    } else {
        index * size + rest
    };
    let mut sorted = queues.to_vec();
    sorted.sort_unstable();
    (0..size.min(total.saturating_sub(first)))
        .map(|i| sorted[(first + i) % total])
        .collect()
}

struct Driver {
    member: Arc<Member>,
    route: Arc<Mutex<Option<Route>>>,
    sender: mpsc::Sender<Result<Incoming, SourceError>>,
    anomalies: mpsc::UnboundedSender<Observed>,
    paused: watch::Receiver<bool>,
    revoked: Arc<Mutex<Vec<Position>>>,
    pullers: Arc<Mutex<HashMap<i32, tokio::task::JoinHandle<()>>>>,
}

impl Driver {
    fn route(&self) -> Option<Route> {
        self.route.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Heartbeats, rebalances and commits until the broker stays out of
    /// reach (then the source reports it lost).
    async fn run(self, mut notified: mpsc::UnboundedReceiver<i32>) {
        let mut last_heartbeat = Instant::now();
        let mut last_route = Instant::now();
        let mut last_commit = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let mut ticks = tokio::time::interval(REBALANCE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some(notice) = notified.recv() => {
                    if notice != code::NOTIFY_CONSUMER_IDS_CHANGED {
                        continue;
                    }
                }
            }
            let outcome = self.round(&mut last_heartbeat, &mut last_route, &mut last_commit).await;
            match outcome {
                Ok(()) => failing_since = None,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    tracing::warn!(error = %e, "RocketMQ rebalance failed");
                    if since.elapsed() >= BROKER_LOST_AFTER {
                        let _ = self.sender.send(Err(SourceError::Lost(e.to_string()))).await;
                        return;
                    }
                }
            }
        }
    }

    async fn round(
        &self,
        last_heartbeat: &mut Instant,
        last_route: &mut Instant,
        last_commit: &mut Instant,
    ) -> Result<(), SourceError> {
        let member = &self.member;
        if self.route().is_none() || last_route.elapsed() >= ROUTE_EVERY {
            let route = member.cluster.route(member.topic()).await?;
            *last_route = Instant::now();
            let moved = self.route().is_some_and(|old| old != route);
            *self.route.lock().unwrap_or_else(|p| p.into_inner()) = Some(route);
            if moved {
                // A new master or queue count: every queue starts over from its commit.
                self.release(None).await;
            }
        }
        let Some(route) = self.route() else {
            return Ok(());
        };
        let broker = member.cluster.remote(&route.address).await?;
        if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            member.heartbeat(&broker).await?;
            *last_heartbeat = Instant::now();
        }
        let members = members(&broker, member.group()).await?;
        if !members.contains(&member.client_id) {
            // The broker forgot this member (it restarted, or the connection
            // was lost): join again first, and commit every queue again, for
            // a restarted broker may have lost its latest offsets.
            member.heartbeat(&broker).await?;
            *last_heartbeat = Instant::now();
            for progress in lock(&member.queues).progress.values_mut() {
                progress.committed = None;
            }
            return Ok(());
        }
        let all: Vec<i32> = route.queue_ids().collect();
        let mine = share(&all, &members, &member.client_id);
        let held: Vec<i32> = lock(&member.queues).progress.keys().copied().collect();
        for queue in held.iter().filter(|queue| !mine.contains(queue)) {
            self.release(Some(*queue)).await;
        }
        for queue in mine.iter().filter(|queue| !held.contains(queue)) {
            self.take(&broker, *queue).await?;
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            member.commit(&broker, None).await;
            *last_commit = Instant::now();
        }
        Ok(())
    }

    /// Starts reading a queue the rebalance gave this member.
    async fn take(&self, broker: &Arc<Remote>, queue: i32) -> Result<(), SourceError> {
        let member = &self.member;
        let (offset, committed) = member.start_offset(broker, queue).await?;
        let generation = {
            let mut queues = lock(&member.queues);
            queues.generation += 1;
            let generation = queues.generation;
            queues.progress.insert(
                queue,
                Progress {
                    generation,
                    pending: BTreeSet::new(),
                    next: offset,
                    committed,
                },
            );
            generation
        };
        tracing::info!(topic = %member.topic(), queue, offset, "RocketMQ queue assigned");
        let puller = Puller {
            member: member.clone(),
            broker: broker.clone(),
            queue,
            generation,
            sender: self.sender.clone(),
            anomalies: self.anomalies.clone(),
            paused: self.paused.clone(),
        };
        let task = tokio::spawn(puller.run(offset));
        if let Some(old) = self
            .pullers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue, task)
        {
            old.abort();
        }
        Ok(())
    }

    /// Stops reading a queue (all when `None`), committing what is done.
    async fn release(&self, only: Option<i32>) {
        let member = &self.member;
        let stopped: Vec<i32> = {
            let mut pullers = self.pullers.lock().unwrap_or_else(|p| p.into_inner());
            let queues: Vec<i32> = pullers
                .keys()
                .copied()
                .filter(|queue| only.is_none_or(|only| only == *queue))
                .collect();
            for queue in &queues {
                if let Some(task) = pullers.remove(queue) {
                    task.abort();
                }
            }
            queues
        };
        if let Some(route) = self.route() {
            if let Ok(broker) = member.cluster.remote(&route.address).await {
                for queue in &stopped {
                    member.commit(&broker, Some(*queue)).await;
                }
            }
        }
        let mut queues = lock(&member.queues);
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        for queue in stopped {
            queues.progress.remove(&queue);
            revoked.push(Position::partition(member.topic(), queue));
            tracing::info!(topic = %member.topic(), queue, "RocketMQ queue released");
        }
    }
}

/// Long-polls one queue and hands its messages over.
struct Puller {
    member: Arc<Member>,
    broker: Arc<Remote>,
    queue: i32,
    generation: u64,
    sender: mpsc::Sender<Result<Incoming, SourceError>>,
    anomalies: mpsc::UnboundedSender<Observed>,
    paused: watch::Receiver<bool>,
}

impl Puller {
    async fn run(mut self, mut offset: i64) {
        loop {
            while *self.paused.borrow() {
                if self.paused.changed().await.is_err() {
                    return;
                }
            }
            if !self.broker.is_alive() {
                match self.member.cluster.remote(&self.broker.address).await {
                    Ok(broker) => self.broker = broker,
                    Err(_) => {
                        tokio::time::sleep(PULL_BACKOFF).await;
                        continue;
                    }
                }
            }
            let member = &self.member;
            let pulled = queues::pull(
                &self.broker,
                member.group(),
                member.topic(),
                self.queue,
                offset,
                PULL_BATCH,
                &member.expression,
                true,
            )
            .await;
            match pulled {
                Ok(Pulled::Messages(messages, next)) => {
                    for message in messages {
                        if message.queue_offset < offset {
                            continue;
                        }
                        if !self.hand_over(message).await {
                            return;
                        }
                    }
                    self.pass(next);
                    offset = offset.max(next);
                }
                Ok(Pulled::Nothing(next)) => {
                    self.pass(next);
                    offset = offset.max(next);
                }
                Ok(Pulled::Moved(next)) => {
                    self.moved(offset, next);
                    offset = next;
                }
                Err(e) => {
                    tracing::warn!(queue = self.queue, offset, error = %e, "RocketMQ pull failed");
                    tokio::time::sleep(PULL_BACKOFF).await;
                }
            }
        }
    }

    /// Passes over offsets below `next` that brought nothing to deliver.
    fn pass(&self, next: i64) {
        let mut queues = lock(&self.member.queues);
        if let Some(progress) = queues.progress.get_mut(&self.queue) {
            if progress.generation == self.generation {
                progress.next = progress.next.max(next);
            }
        }
    }

    /// Messages the broker no longer has (aged out), or a queue that went
    /// back: recorded as an anomaly; a gap holds the commit until its record
    /// is durable.
    fn moved(&self, expected: i64, next: i64) {
        let at = self.member.at(self.queue);
        let (anomaly, ack) = if next > expected {
            let mut queues = lock(&self.member.queues);
            if let Some(progress) = queues.progress.get_mut(&self.queue) {
                progress.pending.insert(expected);
                progress.next = progress.next.max(next);
            }
            let anomaly = SourceAnomaly::OffsetGap {
                at,
                from: expected,
                to: next,
            };
            (anomaly, Some(self.ack(expected)))
        } else {
            let mut queues = lock(&self.member.queues);
            if let Some(progress) = queues.progress.get_mut(&self.queue) {
                progress.next = next;
            }
            (
                SourceAnomaly::OffsetsRewound {
                    at,
                    expected,
                    got: next,
                },
                None,
            )
        };
        tracing::warn!(anomaly = %anomaly.describe(), "RocketMQ source anomaly");
        let _ = self.anomalies.send(Observed { anomaly, ack });
    }

    fn ack(&self, offset: i64) -> Box<dyn Acknowledge> {
        Box::new(RocketmqAck {
            queues: self.member.queues.clone(),
            queue: self.queue,
            generation: self.generation,
            offset,
        })
    }

    /// Hands one message to the pipeline (or passes it when the tag filter
    /// refuses it: the broker filters by the tags' hashes, which collide).
    /// False when the source is gone.
    async fn hand_over(&self, message: StoredMessage) -> bool {
        let tags = &self.member.tags;
        if !tags.is_empty() && !message.property(TAGS).is_some_and(|tag| tags.iter().any(|t| t == tag)) {
            self.pass(message.queue_offset + 1);
            return true;
        }
        let Ok(permit) = self.sender.reserve().await else {
            return false;
        };
        let offset = message.queue_offset;
        {
            let mut queues = lock(&self.member.queues);
            match queues.progress.get_mut(&self.queue) {
                Some(progress) if progress.generation == self.generation => {
                    progress.pending.insert(offset);
                    progress.next = progress.next.max(offset + 1);
                }
                _ => return false,
            }
        }
        if message.still_compressed {
            tracing::warn!(
                queue = self.queue,
                offset,
                "a RocketMQ message compressed with LZ4 or Zstandard is delivered as stored"
            );
        }
        permit.send(Ok(Incoming {
            message: source_message(&message),
            ack: self.ack(offset),
        }));
        true
    }
}

/// A stored message as consumers and resends see it.
pub(super) fn source_message(message: &StoredMessage) -> SourceMessage {
    SourceMessage {
        message_id: format!("rocketmq:{}", message.id()),
        position: Position::partition(&message.topic, message.queue_id).at(Offset::Number(message.queue_offset)),
        key: message.key().map(|key| clean_text(key.as_bytes())),
        body: message.body.clone(),
        content_type: message
            .property("content-type")
            .and_then(|text| header_text(text.as_bytes())),
        traceparent: message
            .property("traceparent")
            .and_then(|text| header_text(text.as_bytes())),
    }
}

struct RocketmqAck {
    queues: SharedQueues,
    queue: i32,
    generation: u64,
    offset: i64,
}

impl Acknowledge for RocketmqAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let mut queues = lock(&self.queues);
        if let Some(progress) = queues.progress.get_mut(&self.queue) {
            if progress.generation == self.generation {
                progress.pending.remove(&self.offset);
            }
        }
        // Committed by the driver within a second.
        Box::pin(async { Ok(()) })
    }
}

/// This member's queues: end offset minus the group's committed offset.
struct RocketmqProbe {
    member: Arc<Member>,
    route: Arc<Mutex<Option<Route>>>,
}

impl BacklogProbe for RocketmqProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async move {
            let route = self.route.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(route) = route else {
                return Ok(Vec::new());
            };
            let broker = self.member.cluster.remote(&route.address).await?;
            let mut held: Vec<i32> = lock(&self.member.queues).progress.keys().copied().collect();
            held.sort_unstable();
            let mut backlog = Vec::with_capacity(held.len());
            for queue in held {
                backlog.push(queue_backlog(&broker, self.member.group(), self.member.topic(), queue).await?);
            }
            Ok(backlog)
        })
    }
}

/// One queue's backlog for a group.
pub(super) async fn queue_backlog(
    broker: &Remote,
    group: &str,
    topic: &str,
    queue: i32,
) -> Result<Backlog, SourceError> {
    let end = queues::end(broker, topic, queue).await?;
    let committed = match queues::committed(broker, group, topic, queue).await? {
        Some(committed) => committed,
        None => queues::start(broker, topic, queue).await?,
    };
    Ok(Backlog {
        committed: Some(committed),
        end: Some(end),
        ..Backlog::of(topic, Some(queue), (end - committed).max(0))
    })
}

impl Source for RocketmqMessages {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(SourceError::Lost("the RocketMQ source stopped".into())),
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        self.pause.send_replace(paused);
        Ok(())
    }

    async fn set_prefetch(&mut self, _messages: u32) -> Result<(), SourceError> {
        // The hand-over channel and one pull's batch bound what is read ahead.
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(RocketmqProbe {
            member: self.member.clone(),
            route: self.route.clone(),
        })
    }

    fn take_revoked(&mut self) -> Vec<Position> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_anomaly_feed(&mut self) -> Option<mpsc::UnboundedReceiver<Observed>> {
        self.anomaly_feed.take()
    }

    /// Commits what is done and leaves the group, so that the others take
    /// its queues at once.
    async fn close(self) {
        self.driver.abort();
        for (_, task) in self.pullers.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
        let route = self.route.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(route) = route else { return };
        let member = &self.member;
        if let Ok(broker) = member.cluster.remote(&route.address).await {
            member.commit(&broker, None).await;
            let leave = Request::new(code::UNREGISTER_CLIENT)
                .field("clientID", &member.client_id)
                .field("consumerGroup", member.group());
            if let Err(e) = broker.call(leave, super::cluster::CALL_TIMEOUT).await {
                tracing::debug!(error = %e, "RocketMQ unregister");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn queues_are_shared_as_rocketmq_clients_share_them() {
        let queues = [3, 0, 2, 1, 4];
        let members = ids(&["b", "a"]);
        assert_eq!(share(&queues, &members, "a"), [0, 1, 2]);
        assert_eq!(share(&queues, &members, "b"), [3, 4]);
        assert_eq!(share(&queues, &members, "c"), Vec::<i32>::new());
        // More members than queues: one each, the last ones idle.
        let crowd = ids(&["a", "b", "c"]);
        assert_eq!(share(&[0, 1], &crowd, "b"), [1]);
        assert_eq!(share(&[0, 1], &crowd, "c"), Vec::<i32>::new());
        // Every queue has exactly one owner, whatever the sizes.
        for total in 0..12 {
            for count in 1..6 {
                let queues: Vec<i32> = (0..total).collect();
                let members: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
                let mut owned: Vec<i32> = members.iter().flat_map(|m| share(&queues, &members, m)).collect();
                owned.sort_unstable();
                assert_eq!(owned, queues, "{total} queues, {count} members");
            }
        }
    }

    #[test]
    fn tags_hash_as_java_strings_do() {
        assert_eq!(java_hash("TagA"), 2598919);
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("支付"), 0x652F * 31 + 0x4ED8);
    }

    #[test]
    fn the_commit_waits_for_the_first_pending_offset() {
        let mut progress = Progress {
            generation: 1,
            pending: BTreeSet::from([5, 7]),
            next: 8,
            committed: None,
        };
        assert_eq!(progress.committable(), 5);
        progress.pending.remove(&5);
        assert_eq!(progress.committable(), 7);
        progress.pending.remove(&7);
        assert_eq!(progress.committable(), 8);
    }
}
