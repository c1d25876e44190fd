//! Pull consumers, the members' side: pull (a long poll that leases due
//! messages), ack, nack, heartbeat and the members list.
//!
//! A pulled message is a callback task in a pull lane (see
//! `bida_domain::consumer::pull`); a lease is its attempt. An ack records a
//! successful attempt, a nack or an expired lease a failed one, so the
//! task's policy decides retries, backoff and dead letters as for a push
//! consumer. Leases live in the schedule row, so any node answers any
//! member, and a node's crash loses none.

use bida_domain::consumer::pull::{MemberName, PullEndpoint, PullLane, PullMode, MAX_BATCH};
use bida_domain::consumer::{Consumer, DesiredState, EndpointKind};
use bida_domain::task::{AttemptReport, CallbackTask, TaskCommand, TaskEvent};
use bida_domain::{Body, Observation};
use bida_store::{task_append, HeldLease, LeaseRequest, Leased, LoadedTask, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::brokers::AdminError;
use crate::{NodeContext, TaskService};

/// Longest delay a nack may ask for.
const MAX_NACK_DELAY: Duration = Duration::from_secs(7 * 86_400);

/// Longest long poll a member may ask for.
pub const MAX_WAIT_MS: u64 = 60_000;
/// How often a waiting pull looks at the store again, for messages recorded
/// by other nodes (this node's own wake it at once).
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often a waiting pull reads the consumer's settings again (pause).
const SETTINGS_EVERY: Duration = Duration::from_secs(1);

/// Wakes this node's waiting pulls when a lane gets messages.
#[derive(Debug, Default)]
pub struct PullWakers {
    lanes: Mutex<HashMap<String, Arc<Notify>>>,
}

impl PullWakers {
    fn waker(&self, lane: &str) -> Arc<Notify> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(lane.to_string()).or_default().clone()
    }

    pub fn wake(&self, lane: &str) {
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = lanes.get(lane) {
            notify.notify_waiters();
        }
    }
}

/// A pull: `max` messages at most, waiting up to `wait_ms` for the first.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullRequest {
    /// The member's name: letters, digits and `.`, `_`, `-`, `:`, `@`, up to 128.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$"))]
    pub member: String,
    /// Most messages to return (also capped by the consumer's `batch`); default 1.
    pub max: Option<u32>,
    /// How long to wait for a message when none is due (long poll); default 0.
    pub wait_ms: Option<u64>,
    /// Where the member runs, shown in the members list.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,256}$"))]
    pub address: Option<String>,
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,256}$"))]
    pub client_version: Option<String>,
}

/// What a member reads from every pull and heartbeat: the consumer's live settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberSettings {
    pub mode: PullMode,
    /// Most messages one pull returns.
    pub batch: u32,
    /// Messages a member should work on at once.
    pub concurrency: u32,
    /// While paused, pulls return no messages.
    pub paused: bool,
    pub lease_ms: u64,
    /// How often to heartbeat (or pull) to stay alive.
    pub heartbeat_ms: u64,
}

/// One leased message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PulledMessage {
    /// What to ack or nack it with.
    pub lease: Uuid,
    pub leased_until: DateTime<Utc>,
    /// The task that records its attempts (`GET /v1/tasks/{id}`); the same
    /// for every redelivery of the message, so a member can de-duplicate.
    pub task_id: String,
    /// The source message's id (Kafka: topic, partition and offset).
    pub message_id: String,
    /// 1 for the first lease, then one more for each.
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where it was read: `topic/partition@offset`, or the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// `content-type` and `traceparent`, as the message carried them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `{"text": ...}`, or `{"base64": ...}` for bytes that are not text.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Body,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pulled {
    pub messages: Vec<PulledMessage>,
    pub settings: MemberSettings,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckRequest {
    pub leases: Vec<Uuid>,
    /// The member acking; when given, leases held by another member are refused.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$"))]
    pub member: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NackRequest {
    pub leases: Vec<Uuid>,
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$"))]
    pub member: Option<String>,
    /// Deliver again after this long instead of the consumer's backoff (at most 7 days).
    #[cfg_attr(feature = "openapi", schema(maximum = 604_800_000))]
    pub delay_ms: Option<u64>,
    /// Why, recorded with the attempt.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,256}$"))]
    pub reason: Option<String>,
    /// Dead-letter the messages now instead of retrying them.
    #[serde(default)]
    pub dead: bool,
}

/// What became of each lease of an ack or nack.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settled {
    /// Recorded as asked.
    pub settled: Vec<Uuid>,
    /// No longer held: expired (the message goes, or went, to a member
    /// again), settled before, or never this consumer's.
    pub expired: Vec<Uuid>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,256}$"))]
    pub address: Option<String>,
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,256}$"))]
    pub client_version: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    pub member: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    pub joined_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Heard from within the consumer's `member_timeout_ms`.
    pub alive: bool,
    pub leases_in_flight: i64,
    pub acked: i64,
    /// Over the last 10 to 20 seconds.
    pub acked_per_sec: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LaneView {
    /// `<consumer>` (cluster mode) or `<consumer>/<member>` (broadcast).
    pub lane: String,
    /// Messages waiting for a pull (due now or at their retry time).
    pub waiting: i64,
    pub leased: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Members {
    pub members: Vec<MemberView>,
    pub lanes: Vec<LaneView>,
    pub settings: MemberSettings,
}

/// A pull consumer as a pull sees it.
struct Pullable {
    endpoint: PullEndpoint,
    settings: MemberSettings,
}

/// Whose consumers a caller may pull: an app's key only its app's.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Any,
    App(&'a str),
}

#[derive(Clone)]
pub struct PullService {
    node: Arc<NodeContext>,
    /// Cancels the copies waiting for a removed member.
    tasks: TaskService,
}

/// A member removed (`DELETE /v1/consumers/{id}/members/{member}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberRemoved {
    pub member: String,
    /// Broadcast copies that were waiting for it, now cancelled.
    pub cancelled: u64,
}

fn member_name(text: &str) -> Result<MemberName, AdminError> {
    MemberName::parse(text).ok_or_else(|| {
        AdminError::Invalid(bida_domain::ValidationErrors::single(
            "member",
            "must be 1 to 128 letters, digits and . _ - : @",
        ))
    })
}

fn cap(text: Option<String>, field: &str) -> Result<Option<String>, AdminError> {
    match text {
        Some(text) if text.chars().count() > 256 || text.chars().any(char::is_control) => Err(AdminError::Invalid(
            bida_domain::ValidationErrors::single(field, "must be up to 256 printable characters"),
        )),
        other => Ok(other),
    }
}

impl PullService {
    pub(crate) fn new(node: Arc<NodeContext>, tasks: TaskService) -> Self {
        Self { node, tasks }
    }

    fn store(&self) -> &Store {
        &self.node.store
    }

    async fn pullable(&self, consumer_id: &str, scope: Scope<'_>) -> Result<Pullable, AdminError> {
        let consumer = match self.store().load_aggregate::<Consumer>(consumer_id).await? {
            Some((consumer, _)) if consumer.spec().is_some() && !consumer.is_deleted() => consumer,
            _ => return Err(AdminError::NotFound(format!("no consumer with id {consumer_id}"))),
        };
        let spec = consumer
            .spec()
            .ok_or_else(|| AdminError::NotFound(consumer_id.into()))?;
        if let Scope::App(app) = scope {
            if spec.app_id.as_deref() != Some(app) {
                return Err(AdminError::NotFound(format!(
                    "no consumer with id {consumer_id} in app {app}"
                )));
            }
        }
        let endpoint = *spec.endpoint.pull().ok_or_else(|| {
            AdminError::Rejected(format!(
                "consumer {consumer_id} pushes to {}; only a consumer with a pull endpoint (\"kind\": \"{}\") is pulled",
                spec.endpoint.http().map_or("its endpoint", |h| h.url.as_str()),
                EndpointKind::Pull.as_str()
            ))
        })?;
        Ok(Pullable {
            settings: MemberSettings {
                mode: endpoint.mode,
                batch: endpoint.batch,
                concurrency: spec.policy.concurrency,
                paused: consumer.state() != DesiredState::Running,
                lease_ms: endpoint.lease_ms,
                heartbeat_ms: endpoint.heartbeat_ms(),
            },
            endpoint,
        })
    }

    /// Leases up to `max` due messages to the member, waiting up to
    /// `wait_ms` for one. Every pull is also the member's heartbeat.
    pub async fn pull(&self, consumer_id: &str, scope: Scope<'_>, request: PullRequest) -> Result<Pulled, AdminError> {
        let member = member_name(&request.member)?;
        let address = cap(request.address, "address")?;
        let client_version = cap(request.client_version, "client_version")?;
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
        let max = request.max.unwrap_or(1).clamp(1, MAX_BATCH);
        let deadline = tokio::time::Instant::now() + wait;
        let mut pullable = self.pullable(consumer_id, scope).await?;
        self.store()
            .touch_member(
                consumer_id,
                member.as_str(),
                address.as_deref(),
                client_version.as_deref(),
            )
            .await?;
        let mut settings_read = tokio::time::Instant::now();
        let mut touched = tokio::time::Instant::now();
        loop {
            // Its own mode's lane first, then the other: messages filed
            // before a change of mode (or resent) are not stranded.
            let own = PullLane::member(consumer_id, member.clone());
            let cluster = PullLane::cluster(consumer_id);
            let lanes = match pullable.endpoint.mode {
                PullMode::Cluster => [cluster, own],
                PullMode::Broadcast => [own, cluster],
            };
            let waker = self.node.pulls.waker(&lanes[0].key());
            let woken = waker.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !pullable.settings.paused {
                let mut messages = Vec::new();
                let limit = max.min(pullable.endpoint.batch);
                for lane in &lanes {
                    let room = limit - messages.len() as u32;
                    if room == 0 {
                        break;
                    }
                    messages.extend(self.lease(consumer_id, lane, &member, &pullable.endpoint, room).await?);
                }
                if !messages.is_empty() {
                    return Ok(Pulled {
                        messages,
                        settings: pullable.settings,
                    });
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Pulled {
                    messages: Vec::new(),
                    settings: pullable.settings,
                });
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
            }
            if settings_read.elapsed() >= SETTINGS_EVERY {
                pullable = self.pullable(consumer_id, scope).await?;
                settings_read = tokio::time::Instant::now();
            }
            // A long poll may outlast the member's timeout: waiting is being alive.
            if touched.elapsed() >= Duration::from_millis(pullable.endpoint.heartbeat_ms() / 2) {
                self.store()
                    .touch_member(consumer_id, member.as_str(), None, None)
                    .await?;
                touched = tokio::time::Instant::now();
            }
        }
    }

    async fn lease(
        &self,
        consumer_id: &str,
        lane: &PullLane,
        member: &MemberName,
        endpoint: &PullEndpoint,
        limit: u32,
    ) -> Result<Vec<PulledMessage>, AdminError> {
        let key = lane.key();
        let leased = self
            .store()
            .lease_due(LeaseRequest {
                consumer_id,
                lane: &key,
                member: member.as_str(),
                lease: Duration::from_millis(endpoint.lease_ms),
                member_timeout: Duration::from_millis(endpoint.member_timeout_ms),
                limit: i64::from(limit),
            })
            .await?;
        let mut granted = Vec::new();
        let mut expired = Vec::new();
        for lease in leased {
            match lease {
                Leased::Granted {
                    task_id,
                    lease_id,
                    until,
                } => granted.push((task_id, lease_id, until)),
                Leased::Expired { task_id, member } => expired.push((task_id, member)),
            }
        }
        if !expired.is_empty() {
            let ids: Vec<String> = expired.iter().map(|(id, _)| id.clone()).collect();
            let tasks = self.store().load_tasks(&ids).await?.loaded;
            let holders: HashMap<&str, &str> = expired.iter().map(|(id, m)| (id.as_str(), m.as_str())).collect();
            let expiries = tasks.into_iter().map(|task| {
                let holder = holders.get(task.id.as_str()).copied().unwrap_or_default().to_string();
                let started_at = Utc::now() - chrono::Duration::milliseconds(endpoint.lease_ms as i64);
                async move {
                    let observation = Observation::LeaseExpired { member: holder };
                    let _ = self.record(task, observation, started_at).await;
                }
            });
            futures_util::future::join_all(expiries).await;
        }
        if granted.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = granted.iter().map(|(id, _, _)| id.clone()).collect();
        let mut tasks: HashMap<String, LoadedTask> = self
            .store()
            .load_tasks(&ids)
            .await?
            .loaded
            .into_iter()
            .map(|task| (task.id.clone(), task))
            .collect();
        Ok(granted
            .into_iter()
            .filter_map(|(task_id, lease, leased_until)| {
                let loaded = tasks.remove(&task_id)?;
                let spec = loaded.task.spec()?;
                let origin = spec.origin.as_ref();
                Some(PulledMessage {
                    lease,
                    leased_until,
                    message_id: spec.message_id.clone(),
                    attempt: loaded.task.attempts() + 1,
                    key: origin.and_then(|o| o.key.clone()),
                    position: origin.map(|o| o.position.clone()),
                    headers: spec.request.headers.clone(),
                    body: spec.request.body.clone().unwrap_or_default(),
                    task_id,
                })
            })
            .collect())
    }

    /// Records one lease's end as the task's attempt; `Ok(false)` when the
    /// task moved on meanwhile (settled by another call, cancelled...).
    async fn record(
        &self,
        loaded: LoadedTask,
        observation: Observation,
        started_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let LoadedTask {
            id,
            epoch,
            mut task,
            version,
            ..
        } = loaded;
        let Some(lane) = task.spec().and_then(|spec| spec.pull_lane()) else {
            return Ok(false);
        };
        let now = Utc::now();
        let report = AttemptReport {
            number: task.attempts() + 1,
            started_at,
            latency_ms: (now - started_at).num_milliseconds().max(0) as u64,
            observation,
            response_excerpt: None,
            signed: false,
            jitter_sample: rand::random::<f64>(),
        };
        let events: Vec<TaskEvent> = match task.decide(TaskCommand::RecordAttempt(report)) {
            Ok(events) => events,
            Err(_) => return Ok(false),
        };
        for event in &events {
            task.apply_event(event);
        }
        let mut append = task_append(&id, epoch, version, &events, None)?;
        // A row cleared meanwhile (a cancel) must not come back outside its lane.
        if let Some(schedule) = append.schedule.as_mut() {
            schedule.lane = Some(lane.key());
        }
        match self.store().append(append).await {
            Ok(()) => {
                self.node.pulls.wake(&lane.key());
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The leases among `leases` this consumer's members hold now (and, with
    /// `member`, that one holds); the rest are answered as expired.
    async fn held(
        &self,
        consumer_id: &str,
        leases: &[Uuid],
        member: Option<&str>,
    ) -> Result<(Vec<HeldLease>, Vec<Uuid>), AdminError> {
        if leases.len() > MAX_BATCH as usize {
            return Err(AdminError::Invalid(bida_domain::ValidationErrors::single(
                "leases",
                format!("at most {MAX_BATCH} at once"),
            )));
        }
        if let Some(member) = member {
            member_name(member)?;
        }
        let held = self.store().held_leases(leases).await?;
        let cluster = PullLane::cluster(consumer_id).key();
        let broadcast = format!("{cluster}/");
        let (ours, _): (Vec<HeldLease>, Vec<HeldLease>) = held.into_iter().partition(|lease| {
            (lease.lane == cluster || lease.lane.starts_with(&broadcast)) && member.is_none_or(|m| m == lease.member)
        });
        let expired = leases
            .iter()
            .filter(|id| !ours.iter().any(|held| held.lease_id == **id))
            .copied()
            .collect();
        Ok((ours, expired))
    }

    /// Settles leases with one observation each, all at once.
    async fn settle(
        &self,
        consumer_id: &str,
        scope: Scope<'_>,
        leases: &[Uuid],
        member: Option<&str>,
        observe: impl Fn(&HeldLease) -> Observation,
    ) -> Result<(Settled, Vec<HeldLease>), AdminError> {
        self.pullable(consumer_id, scope).await?;
        let (held, mut expired) = self.held(consumer_id, leases, member).await?;
        let ids: Vec<String> = held.iter().map(|lease| lease.task_id.clone()).collect();
        let mut tasks: HashMap<String, LoadedTask> = self
            .store()
            .load_tasks(&ids)
            .await?
            .loaded
            .into_iter()
            .map(|task| (task.id.clone(), task))
            .collect();
        let records = held.iter().map(|lease| {
            let task = tasks.remove(&lease.task_id);
            let observation = observe(lease);
            async move {
                match task {
                    Some(task) => self.record(task, observation, lease.leased_at).await,
                    None => Ok(false),
                }
            }
        });
        let outcomes = futures_util::future::join_all(records).await;
        let mut settled = Settled::default();
        let mut done = Vec::new();
        for (lease, outcome) in held.into_iter().zip(outcomes) {
            match outcome {
                Ok(true) => {
                    settled.settled.push(lease.lease_id);
                    done.push(lease);
                }
                Ok(false) => expired.push(lease.lease_id),
                Err(e) => return Err(e.into()),
            }
        }
        settled.expired = expired;
        Ok((settled, done))
    }

    /// The members' acks: each message's successful attempt. The broker's
    /// message was acknowledged once the message was recorded.
    pub async fn ack(&self, consumer_id: &str, scope: Scope<'_>, request: AckRequest) -> Result<Settled, AdminError> {
        let (settled, done) = self
            .settle(
                consumer_id,
                scope,
                &request.leases,
                request.member.as_deref(),
                |lease| Observation::Acked {
                    member: lease.member.clone(),
                },
            )
            .await?;
        let mut per_member: HashMap<&str, i64> = HashMap::new();
        for lease in &done {
            *per_member.entry(lease.member.as_str()).or_default() += 1;
        }
        for (member, acked) in per_member {
            self.store().count_acks(consumer_id, member, acked).await?;
            self.store().touch_member(consumer_id, member, None, None).await?;
        }
        Ok(settled)
    }

    /// The members' nacks: failed attempts, retried after `delay_ms` (or the
    /// backoff), or dead-lettered at once with `dead`.
    pub async fn nack(&self, consumer_id: &str, scope: Scope<'_>, request: NackRequest) -> Result<Settled, AdminError> {
        let reason = cap(request.reason, "reason")?;
        let retry_after = request.delay_ms.map(Duration::from_millis);
        if retry_after.is_some_and(|delay| delay > MAX_NACK_DELAY) {
            return Err(AdminError::Invalid(bida_domain::ValidationErrors::single(
                "delay_ms",
                "must be at most 7 days",
            )));
        }
        let (settled, done) = self
            .settle(
                consumer_id,
                scope,
                &request.leases,
                request.member.as_deref(),
                |lease| Observation::Nacked {
                    member: lease.member.clone(),
                    reason: reason.clone(),
                    retry_after,
                    give_up: request.dead,
                },
            )
            .await?;
        for member in done
            .iter()
            .map(|lease| lease.member.as_str())
            .collect::<std::collections::BTreeSet<_>>()
        {
            self.store().touch_member(consumer_id, member, None, None).await?;
        }
        Ok(settled)
    }

    pub async fn heartbeat(
        &self,
        consumer_id: &str,
        scope: Scope<'_>,
        member: &str,
        request: HeartbeatRequest,
    ) -> Result<MemberSettings, AdminError> {
        let member = member_name(member)?;
        let address = cap(request.address, "address")?;
        let client_version = cap(request.client_version, "client_version")?;
        let pullable = self.pullable(consumer_id, scope).await?;
        self.store()
            .touch_member(
                consumer_id,
                member.as_str(),
                address.as_deref(),
                client_version.as_deref(),
            )
            .await?;
        Ok(pullable.settings)
    }

    /// Forgets a member for good: leases it holds return at the next pull,
    /// and the broadcast copies waiting for it are cancelled (a member that
    /// is only gone keeps them, for when it comes back).
    pub async fn remove_member(&self, consumer_id: &str, member: &str) -> Result<MemberRemoved, AdminError> {
        use futures_util::StreamExt;
        let member = member_name(member)?;
        self.pullable(consumer_id, Scope::Any).await?;
        let known = self.store().forget_member(consumer_id, member.as_str()).await?;
        let lane = PullLane::member(consumer_id, member.clone()).key();
        let reason = format!("member {member} was removed");
        let mut cancelled = 0;
        loop {
            let page = self.store().lane_tasks(&lane, 500).await?;
            if page.is_empty() {
                break;
            }
            let done = futures_util::stream::iter(page)
                .map(|id| {
                    let reason = reason.clone();
                    async move { self.tasks.cancel(&id, Some(reason)).await.is_ok() }
                })
                .buffer_unordered(16)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await as u64;
            cancelled += done;
            // What cannot be cancelled stays; never loop on it.
            if done == 0 {
                break;
            }
        }
        if !known && cancelled == 0 {
            return Err(AdminError::NotFound(format!(
                "consumer {consumer_id} has no member {member}"
            )));
        }
        Ok(MemberRemoved {
            member: member.to_string(),
            cancelled,
        })
    }

    pub async fn members(&self, consumer_id: &str) -> Result<Members, AdminError> {
        let pullable = self.pullable(consumer_id, Scope::Any).await?;
        let now = Utc::now();
        let timeout = chrono::Duration::milliseconds(pullable.endpoint.member_timeout_ms as i64);
        let members = self
            .store()
            .members(consumer_id)
            .await?
            .into_iter()
            .map(|row| MemberView {
                alive: now - row.heartbeat_at < timeout,
                acked_per_sec: row.acked_per_sec(now),
                member: row.member,
                address: row.address,
                client_version: row.client_version,
                joined_at: row.joined_at,
                last_heartbeat_at: row.heartbeat_at,
                leases_in_flight: row.leases,
                acked: row.acked,
            })
            .collect();
        let lanes = self
            .store()
            .lane_backlogs(consumer_id)
            .await?
            .into_iter()
            .map(|lane| LaneView {
                lane: lane.lane,
                waiting: lane.waiting,
                leased: lane.leased,
            })
            .collect();
        Ok(Members {
            members,
            lanes,
            settings: pullable.settings,
        })
    }
}

/// The task that records a pulled message's attempts, as the consumer's
/// pipeline files it in `lane`.
pub(crate) fn submitted(spec: Arc<bida_domain::task::TaskSpec>, at: DateTime<Utc>) -> Vec<TaskEvent> {
    match CallbackTask::default().decide(TaskCommand::Submit { spec, at }) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = %e, "a pulled message's task refused its submission");
            Vec::new()
        }
    }
}
