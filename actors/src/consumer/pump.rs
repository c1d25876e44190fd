//! The pump: fetches a message only when the consumer may take one (not
//! paused, breaker closed or probing, under its concurrency) and hands
//! it to a delivery on the node's work runtime. Long holds (a paused consumer,
//! an open breaker) pause the source itself, so the backlog stays in the MQ.
//!
//! Two bounds: `concurrency` deliveries started at once, and up to
//! [`RECORDING_WINDOW`] delivered messages whose outcomes are being recorded
//! (not yet acknowledged). A slow commit then holds back only the
//! acknowledgements, not the next deliveries, until the window is full. The
//! consumer's rate and its concurrency at the endpoint are held for the whole
//! cluster, retries included, by its gate ([`crate::limits`]), which every
//! delivery passes just before its request.

use bida_domain::broker::Position;
use bida_domain::consumer::Ordering as Ordered;
use bida_domain::consumer::SourceMessage;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::breaker::{Admission, Breaker, BreakerState};
use super::pipeline::{Done, Health, LiveConfig, Outcome, Pipeline, PipelineError};
use crate::sources::{BacklogProbe, Incoming, Observed, Source, SourceError};

/// Messages a consumer holds back in parked or busy key lanes (ordering by key).
pub const LANE_BUFFER: usize = 1_000;

/// Delivered messages a consumer may have waiting for their outcomes to be
/// recorded. Enough to ride out a few hundred milliseconds of slow commits at
/// thousands of messages a second; after a crash, at most this many (plus
/// those at the endpoint) are delivered again.
pub const RECORDING_WINDOW: usize = 1_024;

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What a pump reports of itself: a node's part of the consumer.
pub use bida_domain::consumer::NodeState as RunState;

/// What the pump shows of itself, read by the consumer actor's reports.
#[derive(Default)]
pub struct PumpStatus {
    pub state: Mutex<RunState>,
    /// Deliveries at the endpoint.
    pub in_flight: AtomicUsize,
    /// Delivered messages whose outcomes are being recorded.
    pub recording: AtomicUsize,
    pub held: AtomicUsize,
    pub last_error: Mutex<Option<(DateTime<Utc>, String)>>,
    pub probe: Mutex<Option<Arc<dyn BacklogProbe>>>,
}

impl PumpStatus {
    fn set_state(&self, state: RunState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((Utc::now(), error));
    }
}

/// Key lanes: one message in delivery per key; the rest wait in order.
#[derive(Default)]
struct Lanes {
    lanes: HashMap<String, Lane>,
    held: usize,
}

#[derive(Default)]
struct Lane {
    busy: bool,
    waiting: VecDeque<Incoming>,
}

impl Lanes {
    /// The message, if its lane may deliver it now; otherwise it waits.
    fn offer(&mut self, key: String, incoming: Incoming, blocked: bool) -> Option<Incoming> {
        let lane = self.lanes.entry(key).or_default();
        if lane.busy || blocked || !lane.waiting.is_empty() {
            lane.waiting.push_back(incoming);
            self.held += 1;
            return None;
        }
        lane.busy = true;
        Some(incoming)
    }

    /// A lane's delivery ended: its next message, unless the lane is blocked.
    fn finished(&mut self, key: &str, blocked: bool) -> Option<Incoming> {
        let lane = self.lanes.get_mut(key)?;
        lane.busy = false;
        if blocked {
            return None;
        }
        match lane.waiting.pop_front() {
            Some(next) => {
                lane.busy = true;
                self.held -= 1;
                Some(next)
            }
            None => {
                self.lanes.remove(key);
                None
            }
        }
    }

    /// Idle lanes that may move again: their next messages.
    fn released(&mut self, blocked: impl Fn(&str) -> bool) -> Vec<Incoming> {
        let mut ready = Vec::new();
        for (key, lane) in self.lanes.iter_mut() {
            if !lane.busy && !blocked(key) {
                if let Some(next) = lane.waiting.pop_front() {
                    lane.busy = true;
                    self.held -= 1;
                    ready.push(next);
                }
            }
        }
        ready
    }

    /// Drops waiting messages read from partitions this consumer lost: their
    /// new owner reads them again from the committed offset, in order.
    fn forget(&mut self, partitions: &[Position]) {
        for lane in self.lanes.values_mut() {
            let before = lane.waiting.len();
            lane.waiting
                .retain(|held| !partitions.iter().any(|p| held.message.position.same_partition(p)));
            self.held -= before - lane.waiting.len();
        }
    }
}

/// What a dispatched delivery tells the pump.
enum Progress {
    /// The endpoint answered: the delivery's slot is free; recording goes on.
    Attempted(Health),
    /// Recorded and acknowledged (or abandoned). `attempted`: whether the
    /// slot was given back before.
    Finished {
        attempted: bool,
        result: Result<Done, PipelineError>,
    },
}

/// A delivery's place under the consumer's concurrency, given back when the
/// endpoint has answered (at most once).
pub struct Slot {
    progress: mpsc::UnboundedSender<Progress>,
    attempted: bool,
}

impl Slot {
    pub fn attempted(&mut self, health: Health) {
        if !std::mem::replace(&mut self.attempted, true) {
            let _ = self.progress.send(Progress::Attempted(health));
        }
    }
}

/// Messages unacknowledged at once: at the endpoint, being recorded, and
/// (ordering by key) waiting in lanes.
pub fn prefetch(config: &LiveConfig) -> u32 {
    let unacknowledged = config.spec.policy.concurrency.saturating_add(RECORDING_WINDOW as u32);
    match config.spec.policy.ordering {
        Ordered::None => unacknowledged,
        Ordered::Key => unacknowledged.saturating_add(LANE_BUFFER as u32),
    }
}

/// `messaging.client.consumed.messages`, with the conventions' attributes.
/// A consumer's messages come from one destination or a few: the labels of
/// the last are kept rather than built (four string copies) per message.
#[derive(Default)]
struct Consumed {
    last: Option<(String, Vec<bida_telemetry::KeyValue>)>,
}

impl Consumed {
    fn count(&mut self, config: &LiveConfig, message: &SourceMessage) {
        let destination = &message.position.destination;
        if !matches!(&self.last, Some((last, _)) if last == destination) {
            self.last = Some((destination.clone(), Self::labels(config, destination)));
        }
        if let Some((_, labels)) = &self.last {
            bida_telemetry::instruments().messages_consumed.add(1, labels);
        }
    }

    fn labels(config: &LiveConfig, destination: &str) -> Vec<bida_telemetry::KeyValue> {
        use bida_telemetry::KeyValue;
        let source = &config.spec.source;
        let mut labels = vec![
            KeyValue::new("bida.consumer", config.consumer_id.clone()),
            KeyValue::new("messaging.system", source.kind().as_str()),
            KeyValue::new("messaging.destination.name", destination.to_string()),
        ];
        if let Some(group) = source.exclusive_group() {
            labels.push(KeyValue::new("messaging.consumer.group.name", group.to_string()));
        }
        labels
    }
}

/// The next anomaly the source reports, if it reports any.
async fn next_anomaly(feed: &mut Option<mpsc::UnboundedReceiver<Observed>>) -> Option<Observed> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

/// Keys this pump parked itself, until the configuration shows the park.
#[derive(Default)]
struct Parking {
    /// key → the consumer version at which its park was recorded.
    pending: HashMap<String, i64>,
}

impl Parking {
    fn parked(&self, config: &LiveConfig, key: &str) -> bool {
        config.parked.contains(key) || self.pending.contains_key(key)
    }

    /// A configuration at least as new as a park is authoritative for its key
    /// (still parked, or released since).
    fn settle(&mut self, config: &LiveConfig) {
        self.pending.retain(|_, version| *version > config.version);
    }
}

pub struct Pump<S: Source> {
    pub source: S,
    pub pipeline: Arc<Pipeline>,
    pub config: watch::Receiver<Arc<LiveConfig>>,
    pub stop: watch::Receiver<bool>,
    pub status: Arc<PumpStatus>,
    pub work: Handle,
    /// How long deliveries in flight may take to finish once stopping.
    pub grace: Duration,
}

/// Deliveries this pump started and has not seen finish.
struct Flights {
    in_flight: usize,
    recording: usize,
    done_tx: mpsc::UnboundedSender<Progress>,
    done_rx: mpsc::UnboundedReceiver<Progress>,
}

impl Flights {
    fn new() -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            in_flight: 0,
            recording: 0,
            done_tx,
            done_rx,
        }
    }

    fn open(&self) -> usize {
        self.in_flight + self.recording
    }

    /// Waits (up to `grace`) for the deliveries started to finish: after a
    /// failure none may outlive its pump, or a graceful stop of the node
    /// would not wait for it and its restarted consumer would send its
    /// message again.
    async fn settle(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.open() > 0 {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(Progress::Attempted(_))) => {
                    self.in_flight -= 1;
                    self.recording += 1;
                }
                Ok(Some(Progress::Finished { attempted: true, .. })) => self.recording -= 1,
                Ok(Some(Progress::Finished { attempted: false, .. })) => self.in_flight -= 1,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

impl<S: Source> Pump<S> {
    /// Runs until stopped or failed; the source is closed either way.
    pub async fn run(mut self) -> Result<(), PumpError> {
        let result = self.pump().await;
        self.status.set_state(RunState::Stopping);
        self.source.close().await;
        result
    }

    async fn pump(&mut self) -> Result<(), PumpError> {
        let mut flights = Flights::new();
        let result = self.pump_with(&mut flights).await;
        if result.is_err() && flights.open() > 0 {
            tracing::warn!(
                open = flights.open(),
                "consumer failed; its deliveries in flight finish first"
            );
            flights.settle(self.grace).await;
        }
        result
    }

    fn dispatch(
        &self,
        incoming: Incoming,
        probe: bool,
        ordered: bool,
        config: &Arc<LiveConfig>,
        progress: &mpsc::UnboundedSender<Progress>,
    ) {
        let (pipeline, config) = (self.pipeline.clone(), config.clone());
        let mut slot = Slot {
            progress: progress.clone(),
            attempted: false,
        };
        self.work.spawn(async move {
            // Boxed: the delivery's state holds its HTTP exchange and its
            // append; unboxed, the task copied all of it when spawned and
            // again when it finished (a third of the node's memmove in a
            // profile of a Kafka drain).
            let delivery = Box::pin(async {
                if ordered {
                    pipeline.deliver_in_order(config, incoming, &mut slot).await
                } else {
                    pipeline.deliver(config, incoming, probe, &mut slot).await
                }
            });
            // A panic is a bug: it must surface as a crash, not leak a slot.
            let result = match AssertUnwindSafe(delivery).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Err(PipelineError::Panicked),
            };
            let attempted = slot.attempted;
            let _ = slot.progress.send(Progress::Finished { attempted, result });
        });
    }

    async fn pump_with(&mut self, flights: &mut Flights) -> Result<(), PumpError> {
        let mut live = self.config.borrow_and_update().clone();
        let mut breaker = Breaker::new(live.spec.policy.breaker);
        let mut lanes = Lanes::default();
        let mut parking = Parking::default();
        let mut source_held = false;
        let mut stop_deadline: Option<Instant> = None;
        self.source.set_prefetch(prefetch(&live)).await?;
        *self.status.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.source.backlog_probe());
        let mut anomalies = self.source.take_anomaly_feed();
        // The source (kind, group) and consumer id are the actor's for its
        // whole life: a change of either starts a new pump.
        let mut consumed = Consumed::default();

        loop {
            let stopping = *self.stop.borrow();
            if stopping {
                let deadline = *stop_deadline.get_or_insert_with(|| {
                    tracing::info!(in_flight = flights.in_flight, recording = flights.recording, grace = ?self.grace, "consumer stopping");
                    Instant::now() + self.grace
                });
                if flights.in_flight + flights.recording == 0 || Instant::now() >= deadline {
                    if flights.in_flight + flights.recording > 0 {
                        tracing::warn!(
                            in_flight = flights.in_flight,
                            recording = flights.recording,
                            "consumer stopped with deliveries unfinished; the broker delivers them again"
                        );
                    }
                    return Ok(());
                }
            }
            let revoked = self.source.take_revoked();
            if !revoked.is_empty() {
                lanes.forget(&revoked);
            }
            let policy = &live.spec.policy;
            let ordered = policy.ordering == Ordered::Key;
            let now = Instant::now();
            let room = flights.in_flight < policy.concurrency as usize
                && flights.recording < RECORDING_WINDOW
                && lanes.held < LANE_BUFFER;
            let admission = if stopping || live.paused || !room {
                Admission::Wait(None)
            } else if ordered {
                // Lanes retry in place: a failing endpoint fills them and
                // fetching stops by itself, so the breaker stays out of it.
                Admission::Deliver
            } else {
                breaker.admission(now.into_std())
            };
            let fetch_now = matches!(admission, Admission::Deliver | Admission::Probe);
            // The source pauses only for long holds; a full pipeline simply
            // stops pulling for a moment, and a due probe needs the source.
            let breaker_holding = matches!(breaker.state(), BreakerState::Open { until } if now.into_std() < until);
            let hold_source = stopping || live.paused || (!ordered && breaker_holding);
            if hold_source != source_held {
                self.source.set_paused(hold_source).await?;
                source_held = hold_source;
            }
            self.status.set_state(match (stopping, live.paused, breaker.state()) {
                (true, _, _) => RunState::Stopping,
                (_, true, _) => RunState::Paused,
                (_, _, BreakerState::Open { .. } | BreakerState::Probing) if !ordered => RunState::BreakerOpen,
                _ => RunState::Running,
            });
            self.status.in_flight.store(flights.in_flight, Ordering::Relaxed);
            self.status.recording.store(flights.recording, Ordering::Relaxed);
            self.status.held.store(lanes.held, Ordering::Relaxed);
            let wake = match admission {
                Admission::Wait(Some(until)) => Some(Instant::from_std(until)),
                _ => None,
            };

            tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() && !*self.stop.borrow() {
                        return Ok(()); // the actor is gone
                    }
                }
                changed = self.config.changed() => {
                    if changed.is_ok() {
                        let new = self.config.borrow_and_update().clone();
                        breaker.set_policy(new.spec.policy.breaker);
                        if prefetch(&new) != prefetch(&live) {
                            self.source.set_prefetch(prefetch(&new)).await?;
                        }
                        live = new;
                        parking.settle(&live);
                        if !live.paused {
                            for next in lanes.released(|key| parking.parked(&live, key)) {
                                flights.in_flight += 1;
                                self.dispatch(next, false, true, &live, &flights.done_tx);
                            }
                        }
                    }
                }
                Some(progress) = flights.done_rx.recv() => match progress {
                    Progress::Attempted(health) => {
                        flights.in_flight -= 1;
                        flights.recording += 1;
                        breaker.record(health.healthy, health.probe, std::time::Instant::now());
                        if let Some(error) = health.error {
                            self.status.set_error(error);
                        }
                    }
                    Progress::Finished { attempted, result } => {
                        if attempted {
                            flights.recording -= 1;
                        } else {
                            flights.in_flight -= 1;
                        }
                        let done = result?;
                        if let (true, Some(key)) = (ordered, &done.key) {
                            if let Some(version) = done.parked_at {
                                parking.pending.insert(key.clone(), version);
                            }
                            // An abandoned message comes back first after a restart:
                            // the lane must not move past it.
                            let hold = done.outcome == Outcome::Abandoned || live.paused || parking.parked(&live, key);
                            if let Some(next) = lanes.finished(key, hold) {
                                flights.in_flight += 1;
                                self.dispatch(next, false, true, &live, &flights.done_tx);
                            }
                        }
                    }
                },
                Some(observed) = next_anomaly(&mut anomalies) => {
                    self.work.spawn(self.pipeline.clone().record_anomaly(live.consumer_id.clone(), observed));
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
                _ = tokio::time::sleep_until(stop_deadline.unwrap_or(now)), if stop_deadline.is_some() => {}
                incoming = self.source.next(), if fetch_now => {
                    let incoming = incoming?;
                    // A revocation that came while this message was awaited
                    // concerns what was held before it: the message itself is
                    // of the new assignment and must not be let go with them.
                    let revoked = self.source.take_revoked();
                    if !revoked.is_empty() {
                        lanes.forget(&revoked);
                    }
                    self.pipeline.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    consumed.count(&live, &incoming.message);
                    let probe = admission == Admission::Probe;
                    if probe {
                        breaker.probe_started();
                    }
                    match (ordered, incoming.message.key.clone()) {
                        (true, Some(key)) => {
                            let blocked = parking.parked(&live, &key);
                            if let Some(go) = lanes.offer(key, incoming, blocked) {
                                flights.in_flight += 1;
                                self.dispatch(go, false, true, &live, &flights.done_tx);
                            }
                        }
                        // Without a key there is no order to keep.
                        _ => {
                            flights.in_flight += 1;
                            self.dispatch(incoming, probe, false, &live, &flights.done_tx);
                        }
                    }
                }
            }
        }
    }
}
