//! A subscription's member on this node. Two tasks: the *keeper* heartbeats
//! and claims the member's share of the partitions, commits what is done
//! and hands partitions over (once their messages are done) when members
//! come or go; the *reader* reads the held partitions from their offsets
//! and hands messages to the pump, woken by publishes on any node.

use bida_domain::broker::Position;
use bida_domain::consumer::{SourceAnomaly, TopicPartition};
use bida_domain::kinds::builtin::BuiltinSource;
use bida_domain::kinds::kafka::StartAt;
use bida_store::topics::ClaimRequest;
use bida_store::{Store, StoreError};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::tracker::Tracker;
use super::{source_message, store_error};
use crate::sources::{Acknowledge, Backlog, BacklogProbe, Client, Incoming, Observed, Source, SourceError};

/// How often the keeper commits what is done.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How often the member heartbeats and claims its share.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// A member silent this long is gone: its partitions go to the others.
pub(crate) const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);
/// A partition handed over waits this long at most for its messages to be
/// done (a key lane may hold one); then it is let go anyway.
const DRAIN_AT_MOST: Duration = Duration::from_secs(30);
/// Reading again without a wake-up (one may be lost with a connection).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long a closing member tries to write its last commit (within the
/// time the node gives a closing source).
const FINAL_COMMIT_FOR: Duration = Duration::from_secs(2);
/// Messages read from a partition at once.
const READ_BATCH: i64 = 256;

type SharedTracker = Arc<Mutex<Tracker>>;

fn lock(tracker: &SharedTracker) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    store: Store,
    group: String,
    topic: String,
    member: String,
    start: StartAt,
    tracker: SharedTracker,
    revoked: Mutex<Vec<Position>>,
    anomalies: mpsc::UnboundedSender<Observed>,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    fn claim(&self) -> ClaimRequest<'_> {
        ClaimRequest {
            group: &self.group,
            topic: &self.topic,
            member: &self.member,
            member_timeout: MEMBER_TIMEOUT,
        }
    }

    async fn commit(&self) -> Result<(), StoreError> {
        let offsets = self.tracker().to_commit();
        if !offsets.is_empty() {
            self.store.commit_offsets(&self.group, &self.topic, &offsets).await?;
            self.tracker().committed(&offsets);
        }
        Ok(())
    }

    /// Where partitions newly held start: their committed offsets, or the
    /// subscription's start (written at once, so that `latest` stays put).
    async fn starting_offsets(&self, partitions: &[i32]) -> Result<Vec<(i32, i64)>, StoreError> {
        let committed = self.store.subscription_offsets(&self.group, &self.topic).await?;
        let bounds = self.store.log_bounds(&self.topic).await?;
        let mut starts = Vec::new();
        let mut fresh = Vec::new();
        for partition in partitions {
            let offset = match committed.get(partition) {
                Some(offset) => *offset,
                None => {
                    let bound = bounds.iter().find(|b| b.partition == *partition);
                    let offset = match (self.start, bound) {
                        (StartAt::Earliest, Some(b)) => b.low,
                        (StartAt::Latest, Some(b)) => b.next,
                        (_, None) => 0,
                    };
                    fresh.push((*partition, offset));
                    offset
                }
            };
            starts.push((*partition, offset));
        }
        self.store.commit_offsets(&self.group, &self.topic, &fresh).await?;
        Ok(starts)
    }

    /// Offsets a partition lost to retention before they were read: reading
    /// jumps past them, and the commit waits until the loss is on record.
    fn expired(&self, partition: i32, from: i64, to: i64) {
        self.tracker().skip(partition, from, to);
        tracing::warn!(topic = %self.topic, partition, from, to, group = %self.group,
            "messages expired before this subscription read them");
        bida_telemetry::instruments().topic_messages_missed.add(
            (to - from).max(0) as u64,
            &[
                bida_telemetry::KeyValue::new("bida.topic", self.topic.clone()),
                bida_telemetry::KeyValue::new("bida.subscription", self.group.clone()),
            ],
        );
        let _ = self.anomalies.send(Observed {
            anomaly: SourceAnomaly::Expired {
                at: TopicPartition {
                    topic: self.topic.clone(),
                    partition,
                },
                from,
                to,
            },
            ack: Some(Box::new(Done {
                tracker: self.tracker.clone(),
                partition,
                offset: from,
            })),
        });
    }

    fn revoke(&self, partitions: &[i32]) {
        let mut tracker = self.tracker();
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        for partition in partitions {
            tracker.forget(*partition);
            revoked.push(Position::partition(&self.topic, *partition));
        }
    }
}

/// A message's outcome is recorded: its offset may be committed.
struct Done {
    tracker: SharedTracker,
    partition: i32,
    offset: i64,
}

impl Acknowledge for Done {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        lock(&self.tracker).done(self.partition, self.offset);
        Box::pin(async { Ok(()) })
    }
}

pub struct BuiltinMessages {
    incoming: mpsc::Receiver<Result<Incoming, SourceError>>,
    pause: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    anomalies: Option<mpsc::UnboundedReceiver<Observed>>,
    keeper: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl BuiltinMessages {
    pub async fn open(store: Store, source: &BuiltinSource, client: &Client) -> Result<Self, SourceError> {
        let topic = source.topic.to_string();
        // The topic must exist (its log answers).
        store.log_bounds(&topic).await.map_err(store_error)?;
        let (anomaly_tx, anomaly_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            group: source.group.clone(),
            topic,
            member: client.id.clone(),
            start: source.start,
            tracker: SharedTracker::default(),
            revoked: Mutex::default(),
            anomalies: anomaly_tx,
        });
        let (pause, pause_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let capacity = (client.concurrency as usize * 2).clamp(32, 4_096);
        let (sender, incoming) = mpsc::channel(capacity);
        let keeper = tokio::spawn(keep(shared.clone(), stop_rx.clone(), sender.clone()));
        let wakes = client.topic_wakes.subscribe(&shared.topic);
        let reader = tokio::spawn(read(shared.clone(), pause_rx, stop_rx, wakes, sender));
        Ok(Self {
            incoming,
            pause,
            stop,
            shared,
            anomalies: Some(anomaly_rx),
            keeper,
            reader,
        })
    }
}

/// Heartbeats, claims, commits and hand-overs, until stopped.
async fn keep(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    errors: mpsc::Sender<Result<Incoming, SourceError>>,
) {
    let mut last_claim: Option<Instant> = None;
    let mut draining_since: HashMap<i32, Instant> = HashMap::new();
    loop {
        if last_claim.is_none_or(|at| at.elapsed() >= CLAIM_EVERY) {
            match shared.store.claim_partitions(shared.claim()).await {
                Ok(claim) => {
                    last_claim = Some(Instant::now());
                    let held_now: HashSet<i32> = claim.held.iter().copied().collect();
                    let share: HashSet<i32> = claim.share.iter().copied().collect();
                    let tracked: HashSet<i32> = shared.tracker().held().into_iter().collect();
                    // Lost without giving them up (this member was taken for gone).
                    let lost: Vec<i32> = tracked.difference(&held_now).copied().collect();
                    if !lost.is_empty() {
                        tracing::warn!(topic = %shared.topic, partitions = ?lost, "topic partitions taken over by another member");
                        shared.revoke(&lost);
                    }
                    let new: Vec<i32> = held_now.difference(&tracked).copied().collect();
                    if !new.is_empty() {
                        match shared.starting_offsets(&new).await {
                            Ok(starts) => {
                                let mut tracker = shared.tracker();
                                for (partition, offset) in starts {
                                    tracker.assign(partition, offset);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot read a subscription's offsets"),
                        }
                    }
                    for partition in held_now.difference(&share) {
                        shared.tracker().drain(*partition);
                        draining_since.entry(*partition).or_insert_with(Instant::now);
                    }
                }
                Err(StoreError::Missing(what)) => {
                    let _ = errors.send(Err(SourceError::Invalid(what))).await;
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim topic partitions; trying again"),
            }
        }
        if let Err(e) = shared.commit().await {
            tracing::warn!(error = %e, "cannot commit a subscription's offsets; trying again");
        }
        let mut handed: Vec<i32> = shared.tracker().drained();
        let overdue: Vec<i32> = draining_since
            .iter()
            .filter(|(p, since)| since.elapsed() >= DRAIN_AT_MOST && !handed.contains(p))
            .map(|(p, _)| *p)
            .collect();
        if !overdue.is_empty() {
            tracing::warn!(topic = %shared.topic, partitions = ?overdue, "handing partitions over with messages unfinished");
            shared.revoke(&overdue);
            handed.extend(overdue);
        }
        if !handed.is_empty() {
            match shared
                .store
                .release_partitions(&shared.group, &shared.topic, &shared.member, &handed)
                .await
            {
                Ok(()) => {
                    let mut tracker = shared.tracker();
                    for partition in &handed {
                        tracker.forget(*partition);
                        draining_since.remove(partition);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot hand topic partitions over; trying again"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(COMMIT_EVERY) => {}
        }
    }
}

/// Reads the held partitions into the pump's channel, until stopped.
async fn read(
    shared: Arc<Shared>,
    mut pause: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    mut wakes: watch::Receiver<u64>,
    sender: mpsc::Sender<Result<Incoming, SourceError>>,
) {
    let mut last_bounds = Instant::now() - POLL_EVERY;
    loop {
        if *stop.borrow() {
            return;
        }
        if *pause.borrow() {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                _ = pause.wait_for(|paused| !*paused) => continue,
            }
        }
        wakes.borrow_and_update();
        let readable = shared.tracker().readable();
        // Retention may have dropped what a partition was to read next.
        if last_bounds.elapsed() >= POLL_EVERY && !readable.is_empty() {
            last_bounds = Instant::now();
            if let Ok(bounds) = shared.store.log_bounds(&shared.topic).await {
                for (partition, from) in &readable {
                    if let Some(b) = bounds.iter().find(|b| b.partition == *partition && b.low > *from) {
                        shared.expired(*partition, *from, b.low);
                    }
                }
            }
        }
        let mut read_any = false;
        let readable = shared.tracker().readable();
        for (partition, from) in readable {
            let room = sender.capacity() as i64;
            if room == 0 {
                break;
            }
            let messages = match shared
                .store
                .read_log(&shared.topic, partition, from, room.min(READ_BATCH))
                .await
            {
                Ok(messages) => messages,
                Err(StoreError::Missing(what)) => {
                    let _ = sender.send(Err(SourceError::Invalid(what))).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a topic; trying again");
                    break;
                }
            };
            if let Some(first) = messages.first().filter(|m| m.offset > from) {
                shared.expired(partition, from, first.offset);
            }
            for message in messages {
                if !shared.tracker().read(partition, message.offset) {
                    break; // handed over or taken meanwhile
                }
                read_any = true;
                let ack = Box::new(Done {
                    tracker: shared.tracker.clone(),
                    partition,
                    offset: message.offset,
                });
                let incoming = Incoming {
                    message: source_message(&shared.topic, message),
                    ack,
                };
                if sender.send(Ok(incoming)).await.is_err() {
                    return;
                }
            }
        }
        if read_any {
            continue;
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = pause.changed() => {}
            _ = wakes.changed() => {}
            _ = sender.reserve(), if sender.capacity() == 0 => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

impl Source for BuiltinMessages {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(SourceError::Lost("the topic reader stopped".into())),
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        self.pause.send_replace(paused);
        Ok(())
    }

    async fn set_prefetch(&mut self, _messages: u32) -> Result<(), SourceError> {
        // The hand-over channel bounds what is read ahead.
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(Probe(self.shared.clone()))
    }

    fn take_revoked(&mut self) -> Vec<Position> {
        std::mem::take(&mut *self.shared.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_anomaly_feed(&mut self) -> Option<mpsc::UnboundedReceiver<Observed>> {
        self.anomalies.take()
    }

    async fn close(self) {
        self.stop.send_replace(true);
        let _ = self.reader.await;
        let _ = self.keeper.await;
        let shared = self.shared;
        // Not written, the messages done since the last commit are sent again
        // after a restart: a store busy for a moment is waited for.
        let deadline = Instant::now() + FINAL_COMMIT_FOR;
        let mut delay = Duration::from_millis(50);
        loop {
            match shared.commit().await {
                Ok(()) => break,
                Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, ?delay, "cannot write a subscription's last commit yet; trying again");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a subscription's last commit; its messages done since the last one are sent again");
                    break;
                }
            }
        }
        // At info: where a restart or another member goes on from.
        let committed = shared.tracker().committed_offsets();
        tracing::info!(topic = %shared.topic, group = %shared.group, ?committed, "stopping member leaves a subscription's group");
        // Its partitions go to the others at once, from where it committed.
        if let Err(e) = shared
            .store
            .leave_group(&shared.group, &shared.topic, &shared.member)
            .await
        {
            tracing::warn!(error = %e, "cannot leave a subscription's group; the others take over after its timeout");
        }
    }
}

struct Probe(Arc<Shared>);

impl BacklogProbe for Probe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async move {
            let shared = &self.0;
            let source = BuiltinSource {
                topic: shared.topic.parse().map_err(SourceError::Invalid)?,
                group: shared.group.clone(),
                start: shared.start,
            };
            super::backlog(&shared.store, &source).await
        })
    }
}
