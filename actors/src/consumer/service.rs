//! Consumer operations for the API: create, edit live, pause, resume, stop,
//! start, delete, reset Kafka offsets, resend, replay a parked lane; and the
//! consumer's view from its events, its counters and its nodes' reports.

use bida_domain::broker::{Broker, Capabilities, Connection, Offset};
use bida_domain::consumer::{
    check_pairing, Consumer, ConsumerCommand, ConsumerError, ConsumerInput, ConsumerPatch, ConsumerSpec, ConsumerState,
    DesiredState, NodeState, OffsetReset, PartitionOffset, PolicyDefaults, RecordedAnomaly, SourceMessage, TaskNaming,
};
use bida_domain::task::{TaskDetail, TaskStatus};
use bida_domain::ValidationErrors;
use bida_store::{RuntimeRow, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

use crate::brokers::{admin_error, AdminError, BrokerService};
use crate::commands::Commands;
use crate::sources::{Backlog, Range, SourceError};
use crate::tasks::{TaskService, TaskServiceError};

/// Reports older than this come from nodes that stopped reporting.
const FRESH_REPORT_SECS: f64 = 10.0;
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counters {
    /// Messages taken from the broker and recorded as tasks.
    pub consumed: i64,
    pub delivered: i64,
    pub failed_attempts: i64,
    /// Tasks waiting for their next attempt now.
    pub retrying: i64,
    /// Tasks dead-lettered and not replayed.
    pub dead: i64,
    pub timeouts: i64,
    /// Messages consumed per second over the last minute.
    pub consumed_per_sec: f64,
    /// Messages delivered per second over the last minute.
    pub delivered_per_sec: f64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeReport {
    pub node_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub state: NodeState,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub report: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

impl From<RuntimeRow> for NodeReport {
    fn from(row: RuntimeRow) -> Self {
        Self {
            node_id: row.node_id.to_string(),
            node_name: row.node_name,
            // A state this version does not know (a newer node's) reads as starting.
            state: NodeState::parse(&row.state).unwrap_or_default(),
            report: row.report,
            updated_at: row.updated_at,
        }
    }
}

/// A live consumer as the gauges see it.
#[derive(Clone, Debug)]
pub struct ObservedConsumer {
    pub id: String,
    pub spec: ConsumerSpec,
    pub state: ConsumerState,
    pub nodes: Vec<NodeReport>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerView {
    pub id: String,
    #[serde(flatten)]
    pub spec: ConsumerSpec,
    /// What the operator asked for: running, paused or stopped.
    pub desired_state: DesiredState,
    /// What the nodes are doing.
    pub state: ConsumerState,
    pub counters: Counters,
    /// Backlog per partition or queue, read from the broker now; empty in
    /// lists and in the answers to commands, which do not ask the broker.
    pub lag: Vec<Backlog>,
    /// The sum of `lag`; in lists and answers to commands, of the backlogs
    /// the running nodes last reported (every few seconds).
    pub lag_total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_error: Option<String>,
    /// The nodes running the consumer.
    pub nodes: Vec<NodeReport>,
    /// Parked key lanes: key → the task that used up its attempts.
    pub parked_lanes: BTreeMap<String, String>,
    pub crashes: u64,
    /// What its sources saw lately that breaks the broker's promises
    /// (skipped offsets, offsets going back, a stalled partition), oldest
    /// first; every one is an event in the consumer's history.
    pub anomalies: Vec<RecordedAnomaly>,
    /// The latest error any node reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub deleted: bool,
}

/// Resend one recorded message (by task id, whatever became of it) or a range
/// of a Kafka partition. Each resend is a new task carrying the message's own
/// `webhook-id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResendRequest {
    pub task_id: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    /// First offset (inclusive): a number, or an entry id for kinds whose
    /// positions are ids (Redis Streams: `"1700000000000-0"`).
    pub from: Option<Offset>,
    /// Last offset (inclusive).
    pub to: Option<Offset>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResendOutcome {
    pub task_ids: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LaneReplay {
    pub key: String,
    pub task_id: String,
    /// delivered: the lane moves again; dead: it failed again and stays parked.
    pub task_status: TaskStatus,
    pub released: bool,
}

/// Most messages one range resend may take (they are held in memory).
const MAX_RESEND: i64 = 1_000;

#[derive(Clone)]
pub struct ConsumerService {
    store: Store,
    commands: Commands<Consumer>,
    brokers: BrokerService,
    tasks: TaskService,
    defaults: PolicyDefaults,
}

impl From<TaskServiceError> for AdminError {
    fn from(e: TaskServiceError) -> Self {
        match e {
            TaskServiceError::NotFound(_) => Self::NotFound(e.to_string()),
            TaskServiceError::Invalid(errors) => Self::Invalid(errors),
            TaskServiceError::Unavailable(_) => Self::Unavailable(e.to_string()),
            TaskServiceError::Internal(_) => Self::Internal(e.to_string()),
            _ => Self::Rejected(e.to_string()),
        }
    }
}

impl ConsumerService {
    pub fn new(store: Store, tasks: TaskService, defaults: PolicyDefaults) -> Self {
        Self {
            commands: Commands::new(&store),
            brokers: BrokerService::new(store.clone(), tasks.sealer()),
            store,
            tasks,
            defaults,
        }
    }

    async fn execute(&self, id: &str, command: ConsumerCommand) -> Result<(), AdminError> {
        self.commands
            .execute(id, command)
            .await
            .map_err(|e| admin_error(e, |e| matches!(e, ConsumerError::NotFound)))
    }

    async fn load(&self, id: &str) -> Result<Consumer, AdminError> {
        match self.store.load_aggregate::<Consumer>(id).await? {
            Some((consumer, _)) if consumer.spec().is_some() => Ok(consumer),
            _ => Err(AdminError::NotFound(format!("no consumer with id {id}"))),
        }
    }

    async fn live_broker(&self, id: &str) -> Result<Broker, AdminError> {
        let broker = self.brokers.load(id).await.map_err(|_| {
            AdminError::Invalid(ValidationErrors::single("broker_id", format!("no broker with id {id}")))
        })?;
        if broker.is_deleted() {
            return Err(AdminError::Invalid(ValidationErrors::single(
                "broker_id",
                "the broker was deleted",
            )));
        }
        Ok(broker)
    }

    pub async fn create(&self, input: ConsumerInput) -> Result<ConsumerView, AdminError> {
        let broker = self.live_broker(&input.broker_id).await?;
        let kind = broker
            .spec()
            .map(|s| s.kind())
            .ok_or_else(|| AdminError::Internal("broker without spec".into()))?;
        let spec = input.into_spec(kind, &self.defaults).map_err(AdminError::Invalid)?;
        if let Some(http) = spec.endpoint.http() {
            self.tasks
                .check_target("endpoint.url", &http.url)
                .map_err(AdminError::Invalid)?;
        }
        if let Some(app_id) = &spec.app_id {
            let live = self.store.load_aggregate::<bida_domain::access::App>(app_id).await?;
            if live.is_none_or(|(app, _)| app.live().is_none()) {
                return Err(AdminError::Invalid(ValidationErrors::single(
                    "app_id",
                    format!("no app with id {app_id}"),
                )));
            }
        }
        // Two consumers in one group would each see only part of the messages.
        if let Some(group) = spec.source.exclusive_group() {
            let clash = self.store.load_all::<Consumer>().await?.into_iter().find(|(_, c, _)| {
                !c.is_deleted()
                    && c.spec().is_some_and(|other| {
                        other.broker_id == spec.broker_id && other.source.exclusive_group() == Some(group)
                    })
            });
            if let Some((other, _, _)) = clash {
                return Err(AdminError::Rejected(format!(
                    "consumer {other} already uses group {group} on this broker; give this one its own group"
                )));
            }
        }
        if let bida_domain::kinds::Source::Builtin(source) = &spec.source {
            crate::sources::builtin::place_new(&self.store, source)
                .await
                .map_err(|e| match e {
                    SourceError::Invalid(message) => {
                        AdminError::Invalid(ValidationErrors::single("source.topic", message))
                    }
                    e => AdminError::Broker(e.to_string()),
                })?;
        }
        let id = Uuid::now_v7().to_string();
        self.execute(&id, ConsumerCommand::Create { spec, at: Utc::now() })
            .await?;
        self.reported(&id).await
    }

    /// A live change: running actors on every node apply it without a restart.
    pub async fn patch(&self, id: &str, patch: ConsumerPatch) -> Result<ConsumerView, AdminError> {
        let consumer = self.load(id).await?;
        let spec = consumer.spec().ok_or_else(|| AdminError::NotFound(id.into()))?;
        let mut errors = ValidationErrors::default();
        let endpoint = patch
            .endpoint
            .map(|input| input.over(Some(&spec.endpoint), self.defaults.timeout_ms, &mut errors));
        let policy = patch.policy.map(|input| input.over(&spec.policy, &mut errors));
        check_pairing(
            endpoint.as_ref().unwrap_or(&spec.endpoint),
            policy.as_ref().unwrap_or(&spec.policy),
            &mut errors,
        );
        errors.finish(()).map_err(AdminError::Invalid)?;
        if let Some(http) = endpoint.as_ref().and_then(|e| e.http()) {
            self.tasks
                .check_target("endpoint.url", &http.url)
                .map_err(AdminError::Invalid)?;
        }
        let at = Utc::now();
        if let Some(endpoint) = endpoint.filter(|e| *e != spec.endpoint) {
            self.execute(id, ConsumerCommand::ChangeEndpoint { endpoint, at })
                .await?;
        }
        if let Some(policy) = policy.filter(|p| *p != spec.policy) {
            self.execute(id, ConsumerCommand::ChangePolicy { policy, at }).await?;
        }
        self.reported(id).await
    }

    pub async fn lifecycle(&self, id: &str, action: &str) -> Result<ConsumerView, AdminError> {
        let at = Utc::now();
        let command = match action {
            "pause" => ConsumerCommand::Pause { at },
            "resume" => ConsumerCommand::Resume { at },
            "stop" => ConsumerCommand::Stop { at },
            "start" => ConsumerCommand::Start { at },
            other => return Err(AdminError::NotFound(format!("no consumer action {other}"))),
        };
        self.execute(id, command).await?;
        self.reported(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), AdminError> {
        let source = self.load(id).await?.spec().map(|spec| spec.source.clone());
        self.execute(id, ConsumerCommand::Delete { at: Utc::now() }).await?;
        // A pull consumer's members go with it (its pulls now answer 404).
        self.store.forget_members(id).await?;
        // A subscription's place in its topic too.
        if let Some(bida_domain::kinds::Source::Builtin(source)) = source {
            self.store.forget_subscription(&source.group).await?;
        }
        Ok(())
    }

    /// Every live consumer described, without lag.
    pub async fn list(&self) -> Result<Vec<ConsumerView>, AdminError> {
        let live = self.live().await?;
        let consumers: Vec<(&str, &Consumer)> = live.iter().map(|(id, c)| (id.as_str(), c)).collect();
        self.summaries(&consumers).await
    }

    /// The live consumers (created, not deleted) as folded from their
    /// events, undescribed: a page of a list describes only its own, as a
    /// description reads the consumer's counters and node reports.
    pub async fn live(&self) -> Result<Vec<(String, Consumer)>, AdminError> {
        Ok(self
            .store
            .load_all::<Consumer>()
            .await?
            .into_iter()
            .filter(|(_, consumer, _)| consumer.spec().is_some() && !consumer.is_deleted())
            .map(|(id, consumer, _)| (id, consumer))
            .collect())
    }

    /// Every live consumer's observed state and its nodes' reports, for the
    /// gauges: two reads for all consumers and one per broker, where
    /// describing each (four queries and its broker's secrets opened) made an
    /// idle node's sampling grow with its consumers.
    pub async fn observed(&self) -> Result<Vec<ObservedConsumer>, AdminError> {
        let mut reports = self.node_reports(None).await?;
        let live = self.live().await?;
        let online = self.brokers_online(live.iter().map(|(_, c)| c)).await;
        Ok(live
            .iter()
            .filter_map(|(id, consumer)| {
                let spec = consumer.spec()?.clone();
                let nodes = reports.remove(id).unwrap_or_default();
                let state = ConsumerState::observed(
                    consumer.is_deleted(),
                    consumer.state(),
                    online.get(spec.broker_id.as_str()).copied().unwrap_or(false),
                    nodes.iter().map(|n| n.state),
                );
                Some(ObservedConsumer {
                    id: id.clone(),
                    spec,
                    state,
                    nodes,
                })
            })
            .collect())
    }

    /// The nodes' fresh reports on these consumers (`None`: on all), by consumer.
    async fn node_reports(&self, consumers: Option<&[&str]>) -> Result<HashMap<String, Vec<NodeReport>>, AdminError> {
        let mut reports: HashMap<String, Vec<NodeReport>> = HashMap::new();
        for row in self.store.consumer_runtime(consumers, FRESH_REPORT_SECS).await? {
            reports.entry(row.consumer_id.clone()).or_default().push(row.into());
        }
        Ok(reports)
    }

    /// Whether each of these consumers' brokers is online, each broker read once.
    async fn brokers_online<'a>(&self, consumers: impl Iterator<Item = &'a Consumer>) -> HashMap<&'a str, bool> {
        let mut online = HashMap::new();
        for spec in consumers.filter_map(Consumer::spec) {
            if !online.contains_key(spec.broker_id.as_str()) {
                online.insert(spec.broker_id.as_str(), self.brokers.is_online(&spec.broker_id).await);
            }
        }
        online
    }

    /// A consumer of [`Self::live`] as a list shows it: without lag.
    pub async fn summary(&self, id: &str, consumer: &Consumer) -> Result<ConsumerView, AdminError> {
        let mut views = self.summaries(&[(id, consumer)]).await?;
        views.pop().ok_or_else(|| AdminError::NotFound(id.into()))
    }

    /// A consumer as a list shows it, for the answers to commands: asking
    /// the broker for the backlog (a new client, up to `LAG_TIMEOUT`) was
    /// most of what a PATCH cost, and the answer is about the change.
    pub async fn reported(&self, id: &str) -> Result<ConsumerView, AdminError> {
        let consumer = self.load(id).await?;
        self.summary(id, &consumer).await
    }

    /// A consumer with its backlog read from the broker now.
    pub async fn view(&self, id: &str) -> Result<ConsumerView, AdminError> {
        let consumer = self.load(id).await?;
        let mut view = self.summary(id, &consumer).await?;
        match self.lag(&view.spec).await {
            Ok(lag) => {
                view.lag_total = lag.iter().map(|b| b.lag).sum();
                view.lag = lag;
            }
            Err(e) => {
                view.lag_total = 0;
                view.lag_error = Some(e.to_string());
            }
        }
        Ok(view)
    }

    /// Consumers of [`Self::live`] as lists show them (without lag), in the
    /// order given, with three queries for all of them and one per broker:
    /// described one by one, each took four queries and its broker's secrets
    /// opened, and a page of 500 (or the console's table, every few seconds)
    /// 2,000 queries.
    pub async fn summaries(&self, consumers: &[(&str, &Consumer)]) -> Result<Vec<ConsumerView>, AdminError> {
        let ids: Vec<&str> = consumers.iter().map(|(id, _)| *id).collect();
        let mut reports = self.node_reports(Some(&ids)).await?;
        let rates = self.store.consumer_rates(&ids).await?;
        let counters = self.store.consumer_counters(&ids).await?;
        let online = self.brokers_online(consumers.iter().map(|&(_, c)| c)).await;
        consumers
            .iter()
            .map(|&(id, consumer)| {
                let spec = consumer
                    .spec()
                    .cloned()
                    .ok_or_else(|| AdminError::NotFound(id.into()))?;
                let nodes = reports.remove(id).unwrap_or_default();
                let (consumed_per_sec, delivered_per_sec) = rates.get(id).copied().unwrap_or_default();
                let counters = match counters.get(id) {
                    Some(&[consumed, delivered, failed_attempts, timeouts, _dead_lettered, retrying, dead]) => {
                        Counters {
                            consumed,
                            delivered,
                            failed_attempts,
                            retrying,
                            dead,
                            timeouts,
                            consumed_per_sec,
                            delivered_per_sec,
                        }
                    }
                    None => Counters::default(),
                };
                let state = ConsumerState::observed(
                    consumer.is_deleted(),
                    consumer.state(),
                    online.get(spec.broker_id.as_str()).copied().unwrap_or(false),
                    nodes.iter().map(|n| n.state),
                );
                Ok(ConsumerView {
                    id: id.to_string(),
                    last_error: last_error(&nodes),
                    lag_total: reported_lag(&nodes),
                    desired_state: consumer.state(),
                    state,
                    counters,
                    lag: Vec::new(),
                    lag_error: None,
                    nodes,
                    parked_lanes: consumer.parked_lanes().clone(),
                    crashes: consumer.crashes(),
                    anomalies: consumer.anomalies().iter().cloned().collect(),
                    deleted: consumer.is_deleted(),
                    spec,
                })
            })
            .collect()
    }

    /// The source's backlog as its broker sees it now (a Kafka group's lag, a
    /// queue's depth...).
    async fn lag(&self, spec: &ConsumerSpec) -> Result<Vec<Backlog>, AdminError> {
        if !spec.source.kind().capabilities().lag {
            return Ok(Vec::new());
        }
        let connection = self.connection_of(spec).await?;
        match tokio::time::timeout(
            LAG_TIMEOUT,
            crate::sources::backlog(&self.store, &connection, &spec.source),
        )
        .await
        {
            Ok(result) => result.map_err(|e| AdminError::Broker(e.to_string())),
            Err(_) => Err(AdminError::Broker(format!(
                "no answer within {} s",
                LAG_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn connection_of(&self, spec: &ConsumerSpec) -> Result<Connection, AdminError> {
        self.brokers
            .load(&spec.broker_id)
            .await?
            .spec()
            .map(|s| s.connection.clone())
            .ok_or_else(|| AdminError::NotFound(format!("no broker with id {}", spec.broker_id)))
    }

    /// The consumer's spec, if its kind can do `what` (a capability).
    fn able(consumer: &Consumer, can: fn(Capabilities) -> bool, what: &str) -> Result<ConsumerSpec, AdminError> {
        let spec = consumer.spec().ok_or_else(|| AdminError::NotFound("consumer".into()))?;
        let kind = spec.source.kind();
        if !can(kind.capabilities()) {
            return Err(AdminError::Rejected(format!(
                "a {} consumer cannot {what}",
                kind.title()
            )));
        }
        Ok(spec.clone())
    }

    /// Commits new offsets for the consumer's group. The consumer must be
    /// stopped: Kafka accepts the commit once no node is in the group.
    pub async fn reset_offsets(&self, id: &str, reset: OffsetReset) -> Result<Vec<PartitionOffset>, AdminError> {
        match &reset {
            OffsetReset::Offsets { offsets } if offsets.iter().any(|o| o.offset < 0 || o.partition < 0) => {
                return Err(AdminError::Invalid(ValidationErrors::single(
                    "offsets",
                    "offsets and partitions are 0 or more",
                )))
            }
            _ => {}
        }
        // No Kafka message is older than 1970: an earlier time is the start
        // of every partition, as 1970 is.
        let reset = match reset {
            OffsetReset::Timestamp { timestamp } if timestamp.timestamp_millis() < 0 => OffsetReset::Timestamp {
                timestamp: DateTime::<Utc>::UNIX_EPOCH,
            },
            other => other,
        };
        let consumer = self.load(id).await?;
        let spec = Self::able(&consumer, |can| can.offset_reset, "reset its offsets")?;
        if consumer.state() != DesiredState::Stopped {
            return Err(AdminError::Rejected(format!(
                "stop the consumer before resetting its offsets (it is {})",
                consumer.state().as_str()
            )));
        }
        let connection = self.connection_of(&spec).await?;
        // Nodes leave the group within moments of the stop; until then Kafka refuses.
        let mut tries = 0;
        let committed = loop {
            tries += 1;
            match crate::sources::reset_offsets(&self.store, &connection, &spec.source, &reset).await {
                Ok(committed) => break committed,
                Err(SourceError::Invalid(message)) => {
                    return Err(AdminError::Invalid(ValidationErrors::single("offsets", message)))
                }
                Err(SourceError::Unsupported(message)) => return Err(AdminError::Rejected(message)),
                Err(_) if tries < 20 => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => return Err(AdminError::Broker(e.to_string())),
            }
        };
        self.execute(
            id,
            ConsumerCommand::RecordOffsetReset {
                reset,
                committed: committed.clone(),
                at: Utc::now(),
            },
        )
        .await?;
        Ok(committed)
    }

    /// Delivers again one recorded message, or every message of a range of a
    /// Kafka partition (as new tasks, carrying the same `webhook-id`).
    pub async fn resend(&self, id: &str, request: ResendRequest) -> Result<ResendOutcome, AdminError> {
        let (consumer, version) = match self.store.load_aggregate::<Consumer>(id).await? {
            Some((consumer, version)) if consumer.spec().is_some() => (consumer, version),
            _ => return Err(AdminError::NotFound(format!("no consumer with id {id}"))),
        };
        let round = Utc::now().timestamp_millis();
        if let Some(task_id) = request.task_id {
            let loaded = self
                .store
                .load_task(&task_id)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no task with id {task_id}")))?;
            let spec = loaded
                .task
                .spec()
                .filter(|spec| spec.origin.as_ref().is_some_and(|o| o.consumer_id == id))
                .cloned()
                .ok_or_else(|| {
                    AdminError::Invalid(ValidationErrors::single("task_id", "is not a task of this consumer"))
                })?;
            let resent =
                Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{task_id}\nresend {round}").as_bytes()).to_string();
            self.tasks.submit_spec(&resent, spec).await?;
            return Ok(ResendOutcome { task_ids: vec![resent] });
        }
        let spec = Self::able(&consumer, |can| can.resend_range, "read a range of past messages again")?;
        let (Some(topic), Some(from), Some(to)) = (request.topic, request.from, request.to) else {
            return Err(AdminError::Invalid(ValidationErrors::single(
                "task_id",
                "give task_id, or topic, partition, from and to",
            )));
        };
        if !spec.source.reads(&topic) {
            return Err(AdminError::Invalid(ValidationErrors::single(
                "topic",
                format!(
                    "the consumer reads {}; `{topic}` is not one of them",
                    spec.source.destinations().join(", ")
                ),
            )));
        }
        // Ranges of ids are bounded by the number read instead.
        if let (Some(first), Some(last)) = (from.number(), to.number()) {
            if first < 0 || last < first || last - first >= MAX_RESEND {
                return Err(AdminError::Invalid(ValidationErrors::single(
                    "to",
                    format!("the range must be from <= to, at most {MAX_RESEND} offsets"),
                )));
            }
        }
        let range = Range {
            destination: topic,
            partition: request.partition,
            from,
            to,
            limit: MAX_RESEND as usize,
        };
        let connection = self.connection_of(&spec).await?;
        let messages = crate::sources::read_range(&self.store, &connection, &spec.source, &range)
            .await
            .map_err(|e| match e {
                SourceError::Invalid(message) => AdminError::Invalid(ValidationErrors::single("partition", message)),
                SourceError::Unsupported(message) => AdminError::Rejected(message),
                e => AdminError::Broker(e.to_string()),
            })?;
        let mut task_ids = Vec::with_capacity(messages.len());
        for message in messages {
            let task_id = resend_task_id(id, &message, round);
            let task = spec.task_for((id, version), &message, None);
            self.tasks.submit_spec(&task_id, task).await?;
            task_ids.push(task_id);
        }
        Ok(ResendOutcome { task_ids })
    }

    /// Delivers the parked lane's dead task again; once it is delivered the
    /// lane moves on (its held messages follow in order). Waits up to `wait`.
    pub async fn replay_lane(&self, id: &str, key: &str, wait: Duration) -> Result<LaneReplay, AdminError> {
        let consumer = self.load(id).await?;
        let task_id = consumer
            .parked_lanes()
            .get(key)
            .cloned()
            .ok_or_else(|| AdminError::NotFound(format!("the lane of key {key:?} is not parked")))?;
        let current = self.tasks.detail(&task_id).await?;
        if current.as_ref().map(|t| t.summary.status) != Some(TaskStatus::Delivered) {
            self.tasks.retry(&task_id).await?;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let status = loop {
            let detail: Option<TaskDetail> = self.tasks.detail(&task_id).await?;
            let status = detail.map(|d| d.summary.status).unwrap_or(TaskStatus::Pending);
            if status.is_final() || tokio::time::Instant::now() >= deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let released = status == TaskStatus::Delivered;
        if released {
            self.execute(
                id,
                ConsumerCommand::ReleaseLane {
                    key: key.to_string(),
                    at: Utc::now(),
                },
            )
            .await?;
        }
        Ok(LaneReplay {
            key: key.to_string(),
            task_id,
            task_status: status,
            released,
        })
    }
}

/// A resent message is a new task (its id unique to this resend), with the
/// message's own id as `webhook-id`. Hashed whatever the consumer's naming,
/// so that a resend's id did not change with ordered naming.
fn resend_task_id(consumer_id: &str, message: &SourceMessage, round: i64) -> String {
    let base = TaskNaming::Hashed.task_id(consumer_id, 0, &message.message_id);
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{base}\nresend {round}").as_bytes()).to_string()
}

/// The backlog the nodes last reported, without asking the broker: a queue
/// is reported by every node reading it (the largest counts), a partition
/// by its owner.
fn reported_lag(nodes: &[NodeReport]) -> i64 {
    let mut reported: BTreeMap<&str, i64> = BTreeMap::new();
    for backlog in nodes
        .iter()
        .filter_map(|n| n.report.get("backlog")?.as_array())
        .flatten()
    {
        if let (Some(source), Some(lag)) = (backlog["source"].as_str(), backlog["lag"].as_i64()) {
            let entry = reported.entry(source).or_default();
            *entry = (*entry).max(lag);
        }
    }
    reported.values().sum()
}

/// The latest error any node reported.
fn last_error(nodes: &[NodeReport]) -> Option<String> {
    nodes
        .iter()
        .filter_map(|n| {
            Some((
                n.report.get("last_error_at")?.as_str()?,
                n.report.get("last_error")?.as_str()?,
            ))
        })
        .max()
        .map(|(_, error)| error.to_string())
}
