//! Kafka through rdkafka (librdkafka built from source).
//!
//! A poller task serves the consumer group (rebalances, heartbeats) and hands
//! messages to the pipeline over a bounded channel. When the pipeline is full
//! or the consumer is paused, the poller pauses the assigned partitions and
//! keeps polling, so the group keeps this member and the backlog stays in
//! Kafka, visible as lag. Offsets are stored only once a message's outcome is
//! recorded, contiguously per partition, and committed by librdkafka.
//!
//! Every message is checked against the offset that must come next
//! ([`OffsetTracker::receive`]): offsets the broker skipped are read again,
//! and what it confirms, or offsets that go back, are reported as anomalies
//! (recorded as consumer events before the commit moves past them).

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{KafkaSource as KafkaSpec, SourceAnomaly, SourceMessage, StartAt, TopicPartition};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use super::offsets::{GapAction, OffsetTracker, QuietAction, Received, QUIET_READ_BACK};
use crate::sources::{
    clean_text, header_text, Acknowledge, Backlog, BacklogProbe, BacklogProblem, Incoming, Observed, ProgressWatch,
    Source, SourceError,
};

pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Client settings shared by consumers and admin calls.
pub(super) fn client_config(bootstrap: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in options {
        config.set(key, value);
    }
    config.set("bootstrap.servers", bootstrap);
    config
}

pub(super) fn broker_error(e: rdkafka::error::KafkaError) -> SourceError {
    SourceError::Broker(e.to_string())
}

fn partition_names(partitions: &TopicPartitionList) -> Vec<String> {
    partitions
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

struct GroupContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    paused: Arc<AtomicBool>,
    revoked: Arc<Mutex<Vec<Position>>>,
    /// When the assignment last changed.
    rebalanced_at: Arc<Mutex<Instant>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        *self.rebalanced_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(partitions = ?partition_names(partitions), "Kafka partitions revoked");
            // Commit what is done before the partitions go: fewer repeats for their next owner.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit before revoke");
            }
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            for element in partitions.elements() {
                tracker.revoke(element.topic(), element.partition());
                revoked.push(Position::partition(element.topic(), element.partition()));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        *self.rebalanced_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = ?partition_names(partitions), "Kafka partitions assigned");
            // Where reading must start: the first message is checked against it.
            let committed = match consumer.committed_offsets((*partitions).clone(), METADATA_TIMEOUT) {
                Ok(committed) => committed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the committed offsets of assigned partitions");
                    (*partitions).clone()
                }
            };
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for element in committed.elements() {
                tracker.assign(
                    element.topic(),
                    element.partition(),
                    offset_of(element.offset()),
                    Instant::now(),
                );
            }
            drop(tracker);
            if self.paused.load(Ordering::Relaxed) {
                let _ = consumer.pause(partitions);
            }
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

pub struct KafkaSource {
    consumer: Arc<GroupConsumer>,
    revoked: Arc<Mutex<Vec<Position>>>,
    incoming: mpsc::Receiver<Result<Incoming, SourceError>>,
    anomaly_feed: Option<mpsc::UnboundedReceiver<Observed>>,
    pause: watch::Sender<bool>,
    poller: tokio::task::JoinHandle<()>,
    probe: Arc<KafkaProbe>,
}

impl KafkaSource {
    pub async fn connect(
        bootstrap: &str,
        options: &BTreeMap<String, String>,
        spec: &KafkaSpec,
        client_id: &str,
        capacity: usize,
    ) -> Result<Self, SourceError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let rebalanced_at = Arc::new(Mutex::new(Instant::now()));
        let mut config = client_config(bootstrap, options);
        config
            .set("group.id", &spec.group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match spec.start {
                    StartAt::Earliest => "earliest",
                    StartAt::Latest => "latest",
                },
            );
        // Bida's defaults, unless the broker's options say otherwise: sticky
        // rebalances, and fetches that wait at most 25 ms for data (some
        // brokers, tansu among them, hold a fetch for the whole wait, which
        // then becomes the delivery latency; idle, it costs ~40 small
        // requests a second per broker connection).
        for (key, value) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("fetch.wait.max.ms", "25"),
        ] {
            if !options.contains_key(key) {
                config.set(key, value);
            }
        }
        let consumer: GroupConsumer = config
            .create_with_context(GroupContext {
                tracker: tracker.clone(),
                paused: paused.clone(),
                revoked: revoked.clone(),
                rebalanced_at: rebalanced_at.clone(),
            })
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        // Fail fast on an unreachable cluster rather than polling into the void.
        let consumer = Arc::new(consumer);
        let checked = consumer.clone();
        tokio::task::spawn_blocking(move || checked.fetch_metadata(None, METADATA_TIMEOUT))
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        let compacted = compacted_topics(bootstrap, options, &spec.topics).await;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(broker_error)?;

        let (sender, incoming) = mpsc::channel(capacity.max(1));
        let (pause, pause_rx) = watch::channel(false);
        let (anomalies, anomaly_feed) = mpsc::unbounded_channel();
        let poller = Poller {
            consumer: consumer.clone(),
            tracker: tracker.clone(),
            paused: paused.clone(),
            compacted,
            anomalies: anomalies.clone(),
        };
        let poller = tokio::spawn(poll(poller, pause_rx, sender));
        let probe = Arc::new(KafkaProbe {
            consumer: consumer.clone(),
            tracker,
            group: spec.group.clone(),
            topics: spec.topics.clone(),
            rebalanced_at,
            stuck_after: Arc::new(Mutex::new((STUCK_ASSIGNMENT, 0))),
            paused,
            progress: Arc::default(),
            anomalies,
        });
        Ok(Self {
            consumer,
            revoked,
            incoming,
            anomaly_feed: Some(anomaly_feed),
            pause,
            poller,
            probe,
        })
    }
}

/// How often the poller looks for quiet partitions (not per message).
const QUIET_CHECK_EVERY: Duration = Duration::from_millis(100);

/// A pipeline full for this long gets its partitions paused, so that polling
/// can go on (keeping this member in its group) without taking more messages.
const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(30);

/// What the poller shares with the source: the means to read, judge and
/// acknowledge messages, and where it reports anomalies.
struct Poller {
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    paused: Arc<AtomicBool>,
    /// Topics whose logs are compacted: gaps in them are the broker's right.
    compacted: Vec<String>,
    anomalies: mpsc::UnboundedSender<Observed>,
}

impl Poller {
    fn tracker(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ack(&self, topic: &str, partition: i32, offset: i64) -> Box<KafkaAck> {
        Box::new(KafkaAck {
            consumer: self.consumer.clone(),
            tracker: self.tracker.clone(),
            topic: topic.to_string(),
            partition,
            offset,
        })
    }

    fn report(&self, anomaly: SourceAnomaly, ack: Option<Box<dyn Acknowledge>>) {
        tracing::warn!(anomaly = %anomaly.describe(), "Kafka source anomaly");
        let _ = self.anomalies.send(Observed { anomaly, ack });
    }

    /// Whether the message is the next one of its partition.
    fn receive(&self, message: &impl Message) -> Received {
        self.tracker()
            .receive(message.topic(), message.partition(), message.offset(), Instant::now())
    }

    /// A message that was not the next one: offsets the broker skipped are
    /// read again first (false: the message waits for that); what the broker
    /// confirms, and offsets going back, are reported, and the message is
    /// taken (true).
    async fn settle(&self, topic: &str, partition: i32, offset: i64, mut received: Received) -> bool {
        let at = || TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        loop {
            match received {
                Received::Next => return true,
                Received::Drop => return false,
                Received::Rewound { expected } => {
                    self.tracker().rewind(topic, partition, offset);
                    let anomaly = SourceAnomaly::OffsetsRewound {
                        at: at(),
                        expected,
                        got: offset,
                    };
                    self.report(anomaly, None);
                }
                Received::Gap { expected } if self.compacted.iter().any(|t| t == topic) => {
                    tracing::debug!(%topic, partition, expected, offset, "offsets compacted away");
                    self.tracker().expect(topic, partition, offset);
                }
                Received::Gap { expected } => {
                    let low = self.low_watermark(topic, partition).await.unwrap_or(0);
                    let action = self.tracker().gap(topic, partition, offset, low);
                    match action {
                        Some(GapAction::ReadFrom(from)) => {
                            tracing::info!(%topic, partition, expected, offset, from, "the broker skipped offsets; reading again");
                            if let Err(e) =
                                self.consumer
                                    .seek(topic, partition, KafkaOffset::Offset(from), Duration::ZERO)
                            {
                                tracing::warn!(%topic, partition, error = %e, "cannot read the skipped offsets again");
                            }
                            return false;
                        }
                        Some(GapAction::Confirmed { from, to }) => {
                            // The gap holds the commit until its record is durable.
                            self.tracker().pass_gap(topic, partition, from, to);
                            let ack = self.ack(topic, partition, from);
                            self.report(SourceAnomaly::OffsetGap { at: at(), from, to }, Some(ack));
                        }
                        None => return false,
                    }
                }
            }
            received = self.tracker().receive(topic, partition, offset, Instant::now());
        }
    }

    /// Reads back partitions that served nothing since reading (re)started
    /// there: a broker that serves only whole batches answers a fetch inside
    /// its last one with nothing.
    async fn read_back_quiet(&self) {
        let quiet = self.tracker().quiet(Instant::now(), QUIET_READ_BACK);
        for (topic, partition) in quiet {
            let low = self.low_watermark(&topic, partition).await.unwrap_or(0);
            let action = self.tracker().read_back_quiet(&topic, partition, low, Instant::now());
            let from = match action {
                Some(QuietAction::ReadFrom(from)) => {
                    tracing::debug!(%topic, partition, from, "nothing served since reading restarted; reading back");
                    from
                }
                // The log ends below where this consumer stands: it starts over at
                // the log's start, as Kafka's "earliest" reset would.
                Some(QuietAction::EndsBefore { end }) => {
                    let expected = self.tracker().next(&topic, partition).unwrap_or(end);
                    self.tracker().rewind(&topic, partition, low);
                    let at = TopicPartition {
                        topic: topic.clone(),
                        partition,
                    };
                    self.report(SourceAnomaly::OffsetsRewound { at, expected, got: low }, None);
                    low
                }
                Some(QuietAction::Done | QuietAction::Wait) | None => continue,
            };
            if let Err(e) = self
                .consumer
                .seek(&topic, partition, KafkaOffset::Offset(from), Duration::ZERO)
            {
                tracing::warn!(%topic, partition, error = %e, "cannot read back a quiet partition");
            }
        }
    }

    async fn low_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let (consumer, topic) = (self.consumer.clone(), topic.to_string());
        let read = tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, METADATA_TIMEOUT));
        match read.await {
            Ok(Ok((low, _))) => Some(low),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the partition's first offset");
                None
            }
            Err(_) => None,
        }
    }

    fn incoming(&self, message: &impl Message) -> Incoming {
        Incoming {
            message: source_message(message),
            ack: self.ack(message.topic(), message.partition(), message.offset()),
        }
    }
}

/// Serves the group and forwards messages. When the pipeline is full, it stops
/// taking messages (librdkafka's own queue bounds what is fetched ahead) and,
/// if that lasts, pauses the partitions and keeps polling. When the consumer is
/// paused (an operator, an open breaker) it pauses the partitions at once.
async fn poll(poller: Poller, mut pause: watch::Receiver<bool>, sender: mpsc::Sender<Result<Incoming, SourceError>>) {
    let consumer = poller.consumer.clone();
    let mut pending: VecDeque<Incoming> = VecDeque::new();
    let mut fetching_paused = false;
    let mut stalled_since: Option<tokio::time::Instant> = None;
    let mut was_stalled = false;
    let mut last_quiet_check = Instant::now();
    loop {
        while let Some(item) = pending.pop_front() {
            match sender.try_send(Ok(item)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Ok(item))) => {
                    pending.push_front(item);
                    break;
                }
                Err(_) => return,
            }
        }
        let stalled = !pending.is_empty();
        if !stalled {
            stalled_since = None;
        } else if stalled_since.is_none() {
            stalled_since = Some(tokio::time::Instant::now());
        }
        let long_stall = stalled_since.is_some_and(|since| since.elapsed() >= STALL_BEFORE_PAUSE);
        let want_paused = *pause.borrow() || long_stall;
        if want_paused != fetching_paused {
            poller.paused.store(want_paused, Ordering::Relaxed);
            if let Ok(assignment) = consumer.assignment() {
                let changed = if want_paused {
                    consumer.pause(&assignment)
                } else {
                    consumer.resume(&assignment)
                };
                if let Err(e) = changed {
                    tracing::warn!(error = %e, "cannot pause or resume partitions");
                }
            }
            fetching_paused = want_paused;
            if !want_paused {
                // librdkafka resumes after the last message taken, wherever that is.
                poller.tracker().restarted(Instant::now());
            }
            tracing::debug!(paused = want_paused, "kafka fetching");
        }
        if was_stalled && !stalled {
            poller.tracker().postpone_quiet(Instant::now());
        }
        was_stalled = stalled;
        if !stalled && !fetching_paused && last_quiet_check.elapsed() >= QUIET_CHECK_EVERY {
            last_quiet_check = Instant::now();
            poller.read_back_quiet().await;
        }
        // Poll when messages can be taken, or when paused (to serve the group).
        let poll_now = !stalled || fetching_paused;
        tokio::select! {
            changed = pause.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            permit = sender.reserve(), if stalled => {
                if permit.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if stalled && !fetching_paused => {}
            received = tokio::time::timeout(Duration::from_millis(500), consumer.recv()), if poll_now => match received {
                Err(_) => {}
                Ok(Ok(message)) => match poller.receive(&message) {
                    Received::Next => pending.push_back(poller.incoming(&message)),
                    Received::Drop => {}
                    other => {
                        // Rare: the message waits, owned, while its partition is settled.
                        let message = message.detach();
                        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
                        if poller.settle(topic, partition, offset, other).await {
                            pending.push_back(poller.incoming(&message));
                        }
                    }
                },
                Ok(Err(e)) => {
                    // librdkafka reconnects by itself; only fatal errors end the source.
                    if matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) {
                        let _ = sender.send(Err(SourceError::Lost(e.to_string()))).await;
                        return;
                    }
                    tracing::warn!(error = %e, "kafka consumer error");
                }
            },
        }
    }
}

/// A record as consumers and resends see it.
pub(super) fn source_message(message: &impl Message) -> SourceMessage {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    SourceMessage {
        message_id: format!("kafka:{topic}:{partition}:{offset}"),
        position: Position::partition(topic, partition).at(Offset::Number(offset)),
        key: message.key().map(clean_text),
        body: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        content_type: content_type(message),
        traceparent: kafka_header(message, "traceparent"),
    }
}

/// A concrete offset, if the list holds one (not "stored", "invalid"...).
fn offset_of(offset: KafkaOffset) -> Option<i64> {
    match offset {
        KafkaOffset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// The record's `content-type` header, if it can be sent as one.
fn content_type<M: Message>(message: &M) -> Option<String> {
    kafka_header(message, "content-type")
}

/// A record header, if it can be sent as an HTTP header value.
fn kafka_header<M: Message>(message: &M, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .and_then(header_text)
}

/// The topics among `topics` whose logs are compacted (offsets may be
/// missing there by design). None when the broker cannot say: every gap is
/// then read again and, if confirmed, reported.
async fn compacted_topics(bootstrap: &str, options: &BTreeMap<String, String>, topics: &[String]) -> Vec<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = match client_config(bootstrap, options).create() {
        Ok(admin) => admin,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the broker which topics are compacted");
            return Vec::new();
        }
    };
    let specifiers: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
    let described = match tokio::time::timeout(METADATA_TIMEOUT, admin.describe_configs(&specifiers, &options)).await {
        Ok(Ok(described)) => described,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot ask the broker which topics are compacted");
            return Vec::new();
        }
        Err(_) => {
            tracing::warn!("the broker did not say which topics are compacted");
            return Vec::new();
        }
    };
    described
        .into_iter()
        .filter_map(Result::ok)
        .filter(|resource| {
            resource
                .get("cleanup.policy")
                .and_then(|entry| entry.value.as_deref())
                .is_some_and(|policy| policy.contains("compact"))
        })
        .filter_map(|resource| match resource.specifier {
            rdkafka::admin::OwnedResourceSpecifier::Topic(topic) => Some(topic),
            _ => None,
        })
        .collect()
}

struct KafkaAck {
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    partition: i32,
    offset: i64,
}

impl Acknowledge for KafkaAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let next =
            self.tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .done(&self.topic, self.partition, self.offset);
        let stored = match next {
            // librdkafka commits the stored offset + 1, the next one to read.
            Some(next) => self.consumer.store_offset(&self.topic, self.partition, next - 1),
            None => Ok(()),
        };
        Box::pin(async move {
            match stored {
                Ok(()) => Ok(()),
                // The partition moved to another member meanwhile: it reads from
                // the committed offset again (a repeat, never a loss).
                Err(e) => {
                    tracing::info!(error = %e, "offset not stored");
                    Ok(())
                }
            }
        })
    }
}

impl Source for KafkaSource {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(SourceError::Lost("the Kafka poller stopped".into())),
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        self.pause.send_replace(paused);
        Ok(())
    }

    async fn set_prefetch(&mut self, _messages: u32) -> Result<(), SourceError> {
        // The hand-over channel bounds what is fetched ahead; librdkafka's own
        // prefetch is per partition and is left to its defaults.
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        self.probe.clone()
    }

    fn take_revoked(&mut self) -> Vec<Position> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_anomaly_feed(&mut self) -> Option<mpsc::UnboundedReceiver<Observed>> {
        self.anomaly_feed.take()
    }

    async fn close(self) {
        self.poller.abort();
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "final commit");
            }
            consumer.unsubscribe();
        })
        .await;
    }
}

#[derive(Clone)]
struct KafkaProbe {
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    group: String,
    topics: Vec<String>,
    rebalanced_at: Arc<Mutex<Instant>>,
    /// How long an empty assignment is waited out before rejoining, and how
    /// many rejoins in a row changed nothing: the wait doubles after the
    /// first few, so a group where an empty assignment is normal is not
    /// rebalanced over and over.
    stuck_after: Arc<Mutex<(Duration, u32)>>,
    /// Whether fetching is paused (a stalled partition is one that does not
    /// move while fetching).
    paused: Arc<AtomicBool>,
    progress: Arc<Mutex<ProgressWatch>>,
    anomalies: mpsc::UnboundedSender<Observed>,
}

/// An empty assignment this old, in a group with no more members than
/// partitions, is a rebalance that never finished. A minute was too long:
/// with a survivor revoked late under load, the rejoin and its own rebalance
/// did not fit in the three minutes a test allows for a takeover.
const STUCK_ASSIGNMENT: Duration = Duration::from_secs(20);
const STUCK_ASSIGNMENT_MAX: Duration = Duration::from_secs(1800);
/// Rejoins made every `STUCK_ASSIGNMENT` before the wait starts doubling.
const FRUITLESS_REJOINS_AT_FIRST_PACE: u32 = 5;

impl KafkaProbe {
    /// Joins the group again when it left this member without partitions it
    /// should have. Seen with tansu after a member died: the survivor got an
    /// empty assignment and no further rebalance came. Real Kafka clusters
    /// do not need it; there it costs a membership look-up after 20 s, then
    /// at doubling intervals, only while this member has no partitions.
    fn rejoin_if_stuck(&self, consumer: &GroupConsumer, assigned: usize) {
        let since = self.rebalanced_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let mut stuck = self.stuck_after.lock().unwrap_or_else(|p| p.into_inner());
        if assigned > 0 {
            *stuck = (STUCK_ASSIGNMENT, 0);
            return;
        }
        let (wait, fruitless) = *stuck;
        if since < wait {
            return;
        }
        // tansu sometimes needs a few rejoins (seen: two in a row gave the
        // survivor nothing under load); the wait grows only after those.
        let next = if fruitless < FRUITLESS_REJOINS_AT_FIRST_PACE {
            STUCK_ASSIGNMENT
        } else {
            (wait * 2).min(STUCK_ASSIGNMENT_MAX)
        };
        *stuck = (next, fruitless.saturating_add(1));
        drop(stuck);
        *self.rebalanced_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let members = match consumer.fetch_group_list(Some(&self.group), METADATA_TIMEOUT) {
            Ok(list) => list.groups().first().map_or(0, |g| g.members().len()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot describe the consumer group");
                return;
            }
        };
        let partitions: usize = match consumer.fetch_metadata(None, METADATA_TIMEOUT) {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .filter(|t| self.topics.iter().any(|wanted| wanted == t.name()))
                .map(|t| t.partitions().len())
                .sum(),
            Err(_) => return,
        };
        // As many partitions as members or more: every member should have one.
        // (Fewer members only was not enough: a survivor alone in the group
        // of a one-partition topic, given nothing, waited for good.)
        if members <= partitions {
            tracing::warn!(
                group = %self.group, members, partitions, ?since,
                "no partitions assigned to this member since the last rebalance; joining the group again"
            );
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&topics) {
                tracing::warn!(error = %e, "cannot subscribe again");
            }
        }
    }

    /// Commits again what the broker shows apart from this consumer's
    /// progress. librdkafka auto-commits only offsets it has not seen
    /// committed, so a commit the broker acknowledged but lost (seen with
    /// tansu) would leave the group's offset, and its lag, stuck until the
    /// next message; and it never commits below the group's offset, which a
    /// partition read again from the start of a log that went back needs.
    fn commit_where_apart(consumer: &GroupConsumer, tracker: &Mutex<OffsetTracker>, committed: &TopicPartitionList) {
        let mut behind = TopicPartitionList::new();
        {
            let tracker = tracker.lock().unwrap_or_else(|p| p.into_inner());
            for element in committed.elements() {
                let Some(ours) = tracker.committable(element.topic(), element.partition()) else {
                    continue;
                };
                let theirs = offset_of(element.offset());
                if theirs != Some(ours) {
                    let _ =
                        behind.add_partition_offset(element.topic(), element.partition(), KafkaOffset::Offset(ours));
                }
            }
        }
        if behind.count() > 0 {
            tracing::debug!(partitions = ?partition_names(&behind), "group offsets apart from this consumer's progress; committing them again");
            if let Err(e) = consumer.commit(&behind, CommitMode::Async) {
                tracing::debug!(error = %e, "commit of offsets apart");
            }
        }
    }
}

impl KafkaProbe {
    /// Marks partitions that stopped moving or whose end is below their
    /// committed offset, and reports each such problem once.
    fn judge(&self, committed: &TopicPartitionList, backlog: &mut [Backlog]) {
        let fetching = !self.paused.load(Ordering::Relaxed);
        let now = chrono::Utc::now();
        let mut watch = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        watch.keep(&backlog.iter().map(|b| b.source.as_str()).collect::<Vec<_>>());
        for (element, entry) in committed.elements().iter().zip(backlog.iter_mut()) {
            let (Some(done), Some(end)) = (entry.committed, entry.end) else {
                continue;
            };
            let judged = watch.judge(&entry.source, done, end, fetching, now);
            if judged.news {
                let at = TopicPartition {
                    topic: element.topic().to_string(),
                    partition: element.partition(),
                };
                let anomaly = match &judged.problem {
                    Some(BacklogProblem::EndBelowCommitted) => SourceAnomaly::EndBelowCommitted {
                        at,
                        committed: done,
                        end,
                    },
                    Some(BacklogProblem::Stalled { since }) => SourceAnomaly::PartitionStalled {
                        at,
                        committed: done,
                        end,
                        since: *since,
                    },
                    None => continue,
                };
                tracing::warn!(anomaly = %anomaly.describe(), "Kafka partition anomaly");
                let _ = self.anomalies.send(Observed { anomaly, ack: None });
            }
            entry.problem = judged.problem;
        }
    }
}

impl BacklogProbe for KafkaProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        let probe = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let consumer = probe.consumer.clone();
                let assignment = consumer.assignment().map_err(broker_error)?;
                probe.rejoin_if_stuck(&consumer, assignment.count());
                let committed = consumer
                    .committed_offsets(assignment, METADATA_TIMEOUT)
                    .map_err(broker_error)?;
                Self::commit_where_apart(&consumer, &probe.tracker, &committed);
                let mut backlog = partition_backlog(&*consumer, &committed)?;
                probe.judge(&committed, &mut backlog);
                Ok(backlog)
            })
            .await
            .map_err(|e| SourceError::Broker(e.to_string()))?
        })
    }
}

/// End offset minus committed offset, per partition of `committed`.
pub(super) fn partition_backlog<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    committed: &TopicPartitionList,
) -> Result<Vec<Backlog>, SourceError> {
    let mut backlog = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), METADATA_TIMEOUT)
            .map_err(broker_error)?;
        let done = match element.offset() {
            KafkaOffset::Offset(offset) => offset,
            _ => low,
        };
        backlog.push(Backlog {
            committed: Some(done),
            end: Some(high),
            // The group-wide view has no history: only what one reading shows.
            problem: (high < done).then_some(BacklogProblem::EndBelowCommitted),
            ..Backlog::of(element.topic(), Some(element.partition()), (high - done).max(0))
        });
    }
    Ok(backlog)
}
