//! What happens to one consumed message.
//!
//! Deliver first, while the broker still holds the message; then record the
//! outcome together with the task's events in one group-committed append;
//! only then acknowledge. A crash at any point repeats the delivery, never
//! loses it. The delivery's slot is given back once the endpoint has
//! answered ([`Slot::attempted`]), so the endpoint's concurrency does not
//! wait on the event store's commits. A failed first attempt hands the
//! message to a callback task that owns its retries (the event store is the
//! retry queue), so one failing endpoint does not stall the partition. With
//! ordering by key, the lane keeps the message until it is delivered or its
//! attempts are used up.

use actix::Addr;
use bida_domain::consumer::pull::{MemberName, PullEndpoint, PullLane, PullMode};
use bida_domain::consumer::{Consumer, ConsumerCommand, ConsumerSpec, TaskNaming};
use bida_domain::matcher::Verdict;
use bida_domain::task::{CallbackTask, ScheduleChange, TaskCommand, TaskEvent, TaskStatus};
use bida_store::{new_task_append, task_epoch, LoadedTask, StoreError};
use chrono::Utc;
use cqrs_es::Aggregate;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

use super::pump::Slot;
use crate::commands::Commands;
use crate::delivery::Attempted;
use crate::sources::{Incoming, Observed};
use crate::supervisor::{Adopt, Supervisor};
use crate::NodeContext;

/// The consumer's configuration of the moment, as the pump and its
/// deliveries see it. A change applies to messages dispatched after it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveConfig {
    pub consumer_id: String,
    pub spec: ConsumerSpec,
    pub paused: bool,
    /// Keys whose lane is parked (ordering by key).
    pub parked: BTreeSet<String>,
    /// The consumer aggregate's version this configuration comes from.
    pub version: i64,
    /// Offset resets so far: messages read again after a reset are new tasks.
    pub epoch: u64,
    /// How the consumer names the tasks of its messages.
    pub naming: TaskNaming,
}

impl LiveConfig {
    /// The id of the task `message_id` becomes.
    fn task_id(&self, message_id: &str) -> String {
        self.naming.task_id(&self.consumer_id, self.epoch, message_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Handed to a callback task that owns the retries.
    Retrying,
    Dead,
    /// Recorded before (a redelivery after a crash): acknowledged again.
    AlreadyRecorded,
    /// The consumer stopped first: neither recorded nor acknowledged; the
    /// broker delivers the message again.
    Abandoned,
}

/// What a delivery's last attempt said of the endpoint, for the breaker.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// `Some(true)`: the endpoint answered as expected; `Some(false)`: it
    /// failed (5xx, timeout, network...); `None`: neither (a client error).
    pub healthy: Option<bool>,
    pub probe: bool,
    pub error: Option<String>,
}

/// One delivery's end (recorded and acknowledged, or abandoned), reported to the pump.
#[derive(Clone, Debug)]
pub struct Done {
    pub key: Option<String>,
    pub outcome: Outcome,
    /// Ordering by key: the consumer version at which this message's lane was parked.
    pub parked_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot record a delivery: {0}")]
    Store(#[from] StoreError),
    #[error("a delivery panicked")]
    Panicked,
}

/// How a task's events met the store.
enum Recorded {
    New(String),
    /// The message was recorded before (a redelivery): the existing task.
    Before(LoadedTask),
}

#[derive(Debug, Default)]
pub struct PipelineStats {
    pub fetched: AtomicU64,
    pub delivered: AtomicU64,
    pub handed_over: AtomicU64,
    pub dead: AtomicU64,
}

pub struct Pipeline {
    pub node: Arc<NodeContext>,
    pub tasks: Addr<Supervisor>,
    pub consumers: Commands<Consumer>,
    pub stats: PipelineStats,
    /// True once the consumer is stopping.
    pub stopping: watch::Receiver<bool>,
    /// What a pull consumer's deliveries share (unused by push consumers).
    pub pull: PullHold,
}

/// A pull consumer's view of its lanes and members, shared by its deliveries.
#[derive(Debug, Default)]
pub struct PullHold {
    /// Live members (broadcast), read at most once a second.
    members: std::sync::Mutex<Option<(std::time::Instant, Vec<MemberName>)>>,
    /// The fullest lane (messages waiting), read at most every
    /// [`WAITING_FRESH`] and counted up by this node's records between reads.
    waiting: std::sync::Mutex<Option<(std::time::Instant, i64)>>,
    /// Messages let through [`Pipeline::wait_for_room`] and not recorded yet.
    recording: AtomicI64,
}

/// One message let into a pull lane, until it is recorded (or not).
struct Admitted<'a>(&'a PullHold);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.recording.fetch_sub(1, Ordering::Relaxed);
        if let Some((_, waiting)) = self.0.waiting.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *waiting += 1;
        }
    }
}

/// How long a pull consumer uses the count of waiting messages it read.
const WAITING_FRESH: Duration = Duration::from_millis(200);

/// How long a broadcast consumer uses the live members it read.
const MEMBERS_FRESH: Duration = Duration::from_secs(1);

impl Pipeline {
    /// What the attempt says of the endpoint's health, and why it failed.
    fn health(attempted: &Attempted, probe: bool) -> Health {
        let (healthy, error) = match &attempted.verdict {
            Verdict::Success => (Some(true), None),
            Verdict::Retry { reason, .. } => (Some(false), Some(reason.clone())),
            Verdict::GiveUp { reason } => (None, Some(reason.clone())),
        };
        Health { healthy, probe, error }
    }

    /// Runs a command on the task and keeps its events.
    fn decide(task: &mut CallbackTask, events: &mut Vec<TaskEvent>, command: TaskCommand) {
        match task.decide(command) {
            Ok(new) => {
                for event in &new {
                    task.apply_event(event);
                }
                events.extend(new);
            }
            // A brand-new task accepts its submission and attempts in order.
            Err(e) => tracing::error!(error = %e, "consumed message rejected by its task"),
        }
    }

    /// Records the task's events, trying again while the store is unreachable.
    /// A taken id with the same body is a redelivery; with another body it is
    /// a different message that reused the id (a recreated topic, a producer
    /// reusing message ids): that one is recorded under an id of its own.
    /// `patient`: nothing waits on this record but the message's
    /// acknowledgement, so the writer may hold it for company.
    async fn record(
        &self,
        id: &str,
        events: &[TaskEvent],
        owner: Option<Uuid>,
        patient: bool,
    ) -> Result<Recorded, PipelineError> {
        let mut id = id.to_string();
        let mut delay = Duration::from_millis(100);
        loop {
            let mut append = new_task_append(&id, events, owner)?;
            append.patient = patient;
            match self.node.store.append(append).await {
                Ok(()) => return Ok(Recorded::New(id)),
                Err(StoreError::Conflict { .. }) => {
                    let existing = self.node.store.load_task(&id).await?;
                    let body = |task: &CallbackTask| task.spec().and_then(|s| s.request.body.clone());
                    let ours = CallbackTask::from_events(events);
                    match existing {
                        Some(existing) if body(&existing.task) == body(&ours) => return Ok(Recorded::Before(existing)),
                        _ => {
                            let digest = Sha256::digest(body(&ours).unwrap_or_default().as_bytes());
                            id = TaskNaming::reused_id(&id, &digest);
                        }
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(task = %id, error = %e, ?delay, "cannot record a delivery yet; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn acknowledge(incoming_ack: Box<dyn crate::sources::Acknowledge>, task_id: &str) {
        if let Err(e) = incoming_ack.ack().await {
            // The broker will deliver it again; its task id makes that a repeat.
            tracing::warn!(task = task_id, error = %e, "cannot acknowledge a recorded message");
        }
    }

    /// The live members a broadcast consumer copies each message to; waits
    /// while there are none, so that the broker keeps the messages.
    async fn broadcast_members(&self, consumer_id: &str, timeout: Duration) -> Option<Vec<MemberName>> {
        let mut stopping = self.stopping.clone();
        loop {
            let cached = self
                .pull
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|(read, _)| read.elapsed() < MEMBERS_FRESH)
                .map(|(_, members)| members.clone());
            let members = match cached {
                Some(members) => members,
                None => {
                    let members: Vec<MemberName> = match self.node.store.live_members(consumer_id, timeout).await {
                        Ok(names) => names.iter().filter_map(|name| MemberName::parse(name)).collect(),
                        Err(e) => {
                            tracing::warn!(consumer = consumer_id, error = %e, "cannot read the live members yet");
                            Vec::new()
                        }
                    };
                    *self.pull.members.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((std::time::Instant::now(), members.clone()));
                    members
                }
            };
            if !members.is_empty() {
                return Some(members);
            }
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return None,
                _ = tokio::time::sleep(MEMBERS_FRESH) => {}
            }
        }
    }

    /// Waits while a lane holds `max_waiting` messages or more, counting
    /// those being recorded (members are behind): the broker keeps the rest.
    /// None when the consumer stops.
    async fn wait_for_room(&self, lanes: &[PullLane], max_waiting: u32) -> Option<Admitted<'_>> {
        let keys: Vec<String> = lanes.iter().map(PullLane::key).collect();
        let mut stopping = self.stopping.clone();
        loop {
            let cached = *self.pull.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let waiting = match cached.filter(|(read, _)| read.elapsed() < WAITING_FRESH) {
                Some((_, waiting)) => waiting,
                None => match self.node.store.most_waiting(&keys).await {
                    Ok(waiting) => {
                        *self.pull.waiting.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((std::time::Instant::now(), waiting));
                        waiting
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count the messages waiting for members yet");
                        i64::MAX
                    }
                },
            };
            // Checked and counted at once, so concurrent deliveries cannot
            // all pass on the same count.
            let recording = self.pull.recording.fetch_add(1, Ordering::Relaxed);
            if waiting.saturating_add(recording) < i64::from(max_waiting) {
                return Some(Admitted(&self.pull));
            }
            self.pull.recording.fetch_sub(1, Ordering::Relaxed);
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return None,
                _ = tokio::time::sleep(WAITING_FRESH) => {}
            }
        }
    }

    /// A pull consumer's message: recorded as a task in its lane (one per
    /// live member in broadcast mode) for members to pull, then acknowledged
    /// to the broker. The members' acks and nacks are the task's attempts.
    async fn hold_for_members(
        self: Arc<Self>,
        config: Arc<LiveConfig>,
        pull: PullEndpoint,
        incoming: Incoming,
        slot: &mut Slot,
    ) -> Result<Done, PipelineError> {
        let Incoming { message, ack } = incoming;
        let key = message.key.clone();
        let consumer_id = &config.consumer_id;
        let lanes = match pull.mode {
            PullMode::Cluster => vec![PullLane::cluster(consumer_id)],
            PullMode::Broadcast => {
                let timeout = Duration::from_millis(pull.member_timeout_ms);
                match self.broadcast_members(consumer_id, timeout).await {
                    Some(members) => members.into_iter().map(|m| PullLane::member(consumer_id, m)).collect(),
                    None => {
                        return Ok(Done {
                            key,
                            outcome: Outcome::Abandoned,
                            parked_at: None,
                        })
                    }
                }
            }
        };
        let Some(admitted) = self.wait_for_room(&lanes, pull.max_waiting).await else {
            return Ok(Done {
                key,
                outcome: Outcome::Abandoned,
                parked_at: None,
            });
        };
        slot.attempted(Health {
            healthy: Some(true),
            probe: false,
            error: None,
        });
        let at = Utc::now();
        let records = lanes.iter().map(|lane| {
            let spec = config
                .spec
                .task_for((consumer_id, config.version), &message, Some(lane));
            let message_id = match &lane.member {
                None => message.message_id.clone(),
                Some(member) => format!("{}\n{member}", message.message_id),
            };
            let task_id = config.task_id(&message_id);
            let events = crate::pull::submitted(spec, at);
            let this = self.clone();
            async move { this.record(&task_id, &events, None, false).await }
        });
        let mut outcome = Outcome::Retrying;
        let mut first_id = None;
        for recorded in futures_util::future::join_all(records).await {
            match recorded? {
                Recorded::New(id) => first_id = first_id.or(Some(id)),
                Recorded::Before(existing) => {
                    outcome = Outcome::AlreadyRecorded;
                    first_id = first_id.or(Some(existing.id));
                }
            }
        }
        drop(admitted);
        for lane in &lanes {
            self.node.pulls.wake(&lane.key());
        }
        Self::acknowledge(ack, first_id.as_deref().unwrap_or_default()).await;
        self.count(outcome);
        Ok(Done {
            key,
            outcome,
            parked_at: None,
        })
    }

    /// Delivers once, records, acknowledges; a failure becomes a retrying task.
    pub async fn deliver(
        self: Arc<Self>,
        config: Arc<LiveConfig>,
        incoming: Incoming,
        probe: bool,
        slot: &mut Slot,
    ) -> Result<Done, PipelineError> {
        if let Some(pull) = config.spec.endpoint.pull().copied() {
            return self.hold_for_members(config, pull, incoming, slot).await;
        }
        let Incoming { message, ack } = incoming;
        let key = message.key.clone();
        let spec = config
            .spec
            .task_for((&config.consumer_id, config.version), &message, None);
        let task_id = config.task_id(&message.message_id);
        let attempted = self.node.attempt(&spec, 1).await;
        slot.attempted(Self::health(&attempted, probe));
        let mut task = CallbackTask::default();
        let mut events = Vec::with_capacity(2);
        let bytes = message.body.len();
        let submitted_at = attempted.started_at;
        let report = attempted.into_report(1);
        Self::decide(
            &mut task,
            &mut events,
            TaskCommand::SubmitAttempted {
                spec,
                at: submitted_at,
                report,
            },
        );
        let hold = matches!(ScheduleChange::after(&events), Some(ScheduleChange::Due(at))
                if (at - Utc::now()).to_std().unwrap_or_default() <= self.node.scheduler.hold_max())
            && self.node.has_room_for(bytes);
        let owner = hold.then_some(self.node.node_id);
        let (task_id, outcome) = match self.record(&task_id, &events, owner, true).await? {
            Recorded::New(id) => {
                let outcome = match task.status() {
                    TaskStatus::Delivered => Outcome::Delivered,
                    TaskStatus::Dead => Outcome::Dead,
                    _ => Outcome::Retrying,
                };
                (id, outcome)
            }
            Recorded::Before(existing) => (existing.id, Outcome::AlreadyRecorded),
        };
        if hold && outcome == Outcome::Retrying {
            self.tasks.do_send(Adopt(LoadedTask {
                id: task_id.clone(),
                epoch: task_epoch(submitted_at),
                version: events.len() as i64,
                task,
                events,
            }));
        }
        Self::acknowledge(ack, &task_id).await;
        self.count(outcome);
        Ok(Done {
            key,
            outcome,
            parked_at: None,
        })
    }

    /// Ordering by key: the lane keeps the message, retrying it in place until
    /// it is delivered or its attempts are used up (then the lane is parked),
    /// and records its whole history at once. The slot is given back after
    /// the last attempt; the lane stays busy until the outcome is recorded.
    pub async fn deliver_in_order(
        self: Arc<Self>,
        config: Arc<LiveConfig>,
        incoming: Incoming,
        slot: &mut Slot,
    ) -> Result<Done, PipelineError> {
        let Incoming { message, ack } = incoming;
        let key = message.key.clone();
        let mut spec = config
            .spec
            .task_for((&config.consumer_id, config.version), &message, None);
        let task_id = config.task_id(&message.message_id);
        let mut task = CallbackTask::default();
        let mut events = Vec::new();
        let mut stopping = self.stopping.clone();
        let mut health = Health::default();
        let submitted_at = Utc::now();
        let mut due = Some(submitted_at);
        while let Some(due_at) = due {
            let wait = (due_at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => {
                    return Ok(Done { key, outcome: Outcome::Abandoned, parked_at: None });
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let number = task.attempts() + 1;
            if number > 1 {
                // Retried in place, it follows the consumer's live changes
                // as a task waiting in the schedule does.
                let adopted = self.node.limits.newer_terms(&task);
                if let Some(adopted) = adopted {
                    task.apply_event(&adopted);
                    events.push(adopted);
                    spec = task.spec().cloned().unwrap_or(spec);
                }
            }
            let attempted = self.node.attempt(&spec, number).await;
            health = Self::health(&attempted, false);
            let report = attempted.into_report(number);
            let command = match number {
                1 => TaskCommand::SubmitAttempted {
                    spec: spec.clone(),
                    at: submitted_at,
                    report,
                },
                _ => TaskCommand::RecordAttempt(report),
            };
            Self::decide(&mut task, &mut events, command);
            due = task.next_attempt_at();
        }
        slot.attempted(health);
        // Not patient: the lane's next message waits for this record.
        let (task_id, dead, outcome) = match self.record(&task_id, &events, None, false).await? {
            Recorded::New(id) => {
                let dead = task.status() == TaskStatus::Dead;
                (id, dead, if dead { Outcome::Dead } else { Outcome::Delivered })
            }
            // A redelivered message whose task died before: its lane is parked still.
            Recorded::Before(existing) => {
                let dead = existing.task.status() == TaskStatus::Dead;
                (existing.id, dead, Outcome::AlreadyRecorded)
            }
        };
        let mut parked_at = None;
        if let (true, Some(key)) = (dead, &key) {
            match self.park(&config.consumer_id, key, &task_id).await {
                Some(version) => parked_at = Some(version),
                // Stopping before the park was recorded: not acknowledged, the
                // message comes back and parks its lane then.
                None => {
                    return Ok(Done {
                        key: Some(key.clone()),
                        outcome: Outcome::Abandoned,
                        parked_at,
                    });
                }
            }
        }
        Self::acknowledge(ack, &task_id).await;
        self.count(outcome);
        Ok(Done {
            key,
            outcome,
            parked_at,
        })
    }

    /// Records the parked lane, trying until it is recorded (or the consumer
    /// stops); returns the consumer's version that shows it.
    async fn park(&self, consumer_id: &str, key: &str, task_id: &str) -> Option<i64> {
        let mut delay = Duration::from_millis(100);
        loop {
            let command = ConsumerCommand::ParkLane {
                key: key.to_string(),
                task_id: task_id.to_string(),
                at: Utc::now(),
            };
            let parked = match self.consumers.execute(consumer_id, command).await {
                Ok(()) => self.node.store.last_sequence(Consumer::TYPE, consumer_id).await.ok(),
                Err(e) => {
                    tracing::warn!(consumer = consumer_id, key, error = %e, "cannot record the parked lane yet");
                    None
                }
            };
            if parked.is_some() || *self.stopping.borrow() {
                return parked;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Records what the source saw, trying until it is recorded (or the
    /// consumer stops), and only then acknowledges its place in the commit
    /// order: a skipped range is never committed past before its record is
    /// durable. Not recorded when stopping: the source finds it again.
    pub async fn record_anomaly(self: Arc<Self>, consumer_id: String, observed: Observed) {
        let mut delay = Duration::from_millis(100);
        loop {
            let command = ConsumerCommand::RecordAnomaly {
                node: self.node.name.clone(),
                anomaly: observed.anomaly.clone(),
                at: Utc::now(),
            };
            match self.consumers.execute(&consumer_id, command).await {
                Ok(()) => break,
                // Deleted meanwhile: nothing left to tell.
                Err(cqrs_es::AggregateError::UserError(e)) => {
                    return tracing::info!(consumer = %consumer_id, error = %e, "source anomaly not recorded")
                }
                Err(e) => tracing::warn!(consumer = %consumer_id, error = %e, "cannot record a source anomaly yet"),
            }
            if *self.stopping.borrow() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if let Some(ack) = observed.ack {
            Self::acknowledge(ack, "(skipped offsets)").await;
        }
    }

    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.stats.delivered,
            Outcome::Retrying => &self.stats.handed_over,
            Outcome::Dead => &self.stats.dead,
            Outcome::AlreadyRecorded | Outcome::Abandoned => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
