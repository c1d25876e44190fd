//! The task operations the API offers: submit, read, cancel, retry, replay.

use actix::Addr;
use bida_domain::task::{
    CallbackTask, Limits, RequestEdit, Submission, TaskCommand, TaskDefaults, TaskDetail, TaskError, TaskSpec,
    TaskSummary,
};
use bida_domain::ValidationErrors;
use bida_store::{new_task_append, task_epoch, EventRepository, LoadedTask, StoreError, StoredEvent};
use chrono::Utc;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};
use std::sync::Arc;
use uuid::Uuid;

use crate::scheduler::{ClaimNow, Scheduler};
use crate::supervisor::{Adopt, Supervisor};
use crate::NodeContext;

type TaskCqrs = CqrsFramework<CallbackTask, PersistedEventStore<EventRepository, CallbackTask>>;

/// Longest cancel reason kept.
const MAX_REASON: usize = 1_000;

/// Task ids derived from an idempotency key live in this namespace.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_a0c3_5f2e_4c8a_9d47_0b1d_a000_0001);

/// The id of the task an app's `Idempotency-Key` names: the same key from the
/// same app is the same task (so a search by key needs no index either).
pub fn idempotent_task_id(app: &str, key: &str) -> String {
    Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{}\n{key}", app.trim()).as_bytes()).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum TaskServiceError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("{0}")]
    Rejected(TaskError),
    #[error("the task changed while the command ran; send it again")]
    Conflict,
    #[error("an attempt of task {0} is in flight; retry once it has finished")]
    InFlight(String),
    #[error("task {id} is due within {margin_ms} ms: it is about to run and can no longer be cancelled")]
    TooLate { id: String, margin_ms: u64 },
    #[error("Idempotency-Key {key:?} was already used for a different request (task {task_id})")]
    IdempotencyMismatch { key: String, task_id: String },
    #[error("the event store is unavailable ({0}); the request may or may not have taken effect")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for TaskServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            _ if e.is_transient() => Self::Unavailable(e.to_string()),
            StoreError::Database(_) | StoreError::WriterStopped => Self::Internal(e.to_string()),
            StoreError::Conflict { .. } => Self::Conflict,
            StoreError::Decode { .. }
            | StoreError::Migration(_)
            | StoreError::DataDir { .. }
            | StoreError::Missing(_) => Self::Internal(e.to_string()),
        }
    }
}

/// The answer to a submission.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub task: TaskSummary,
    /// The Idempotency-Key was seen before: this is the earlier task.
    pub replayed: bool,
}

#[derive(Clone)]
pub struct TaskService {
    node: Arc<NodeContext>,
    supervisor: Addr<Supervisor>,
    scheduler: Addr<Scheduler>,
    cqrs: Arc<TaskCqrs>,
    defaults: Arc<TaskDefaults>,
    limits: Arc<Limits>,
}

impl TaskService {
    pub(crate) fn new(
        node: Arc<NodeContext>,
        supervisor: Addr<Supervisor>,
        scheduler: Addr<Scheduler>,
        defaults: TaskDefaults,
        limits: Limits,
    ) -> Self {
        let events = PersistedEventStore::new_event_store(EventRepository::new(node.store.clone()));
        Self {
            cqrs: Arc::new(CqrsFramework::new(events, Vec::new(), ())),
            node,
            supervisor,
            scheduler,
            defaults: Arc::new(defaults),
            limits: Arc::new(limits),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn defaults(&self) -> &TaskDefaults {
        &self.defaults
    }

    /// The node's sealer of stored credentials, if it has a `secret_key`.
    pub fn sealer(&self) -> Option<crate::secrets::Sealer> {
        self.node.sealer.clone()
    }

    /// Refuses a target whose host is a literal address deliveries may not
    /// reach (names are checked when each attempt resolves them).
    pub fn check_target(&self, field: &str, url: &str) -> Result<(), ValidationErrors> {
        match url::Url::parse(url).map(|url| self.node.delivery.egress().check_url(&url)) {
            Ok(Err(blocked)) => Err(ValidationErrors::single(field, blocked.to_string())),
            _ => Ok(()),
        }
    }

    /// Checks a client's task and records it ([`TaskService::accept`]).
    pub async fn submit(
        &self,
        submission: Submission,
        idempotency_key: Option<String>,
    ) -> Result<Accepted, TaskServiceError> {
        let now = Utc::now();
        let id = match &idempotency_key {
            Some(key) => idempotent_task_id(submission.source_app.as_deref().unwrap_or_default(), key),
            None => Uuid::now_v7().to_string(),
        };
        let spec = submission
            .into_spec(id.clone(), idempotency_key.clone(), &self.defaults, &self.limits, now)
            .map_err(TaskServiceError::Invalid)?;
        let url_field = if spec.request.grpc.is_some() {
            "grpc.target"
        } else {
            "url"
        };
        self.check_target(url_field, &spec.request.url)
            .map_err(TaskServiceError::Invalid)?;
        self.check_grpc_body(&spec.request).map_err(TaskServiceError::Invalid)?;
        self.accept(id, spec, idempotency_key, now).await
    }

    /// Refuses a gRPC task whose params do not fit its method's request
    /// message, when this node knows that message already (uploaded, or
    /// described by the server earlier); otherwise the first attempt finds out.
    pub fn check_grpc_body(&self, request: &bida_domain::task::DeliveryRequest) -> Result<(), ValidationErrors> {
        let Some(call) = &request.grpc else { return Ok(()) };
        let Some(types) = self.node.delivery.descriptors().known(&request.url, &call.method) else {
            return Ok(());
        };
        let body = request.body.as_ref().map_or(&b"{}"[..], |b| b.as_bytes());
        types
            .request(body)
            .map(drop)
            .map_err(|why| ValidationErrors::single("params", why))
    }

    /// Records a new task checked by its maker durably, then hands it to a
    /// local actor when it is due soon and the node has room (otherwise the
    /// schedule keeps it).
    pub(crate) async fn accept(
        &self,
        id: String,
        spec: TaskSpec,
        idempotency_key: Option<String>,
        now: chrono::DateTime<Utc>,
    ) -> Result<Accepted, TaskServiceError> {
        let events = CallbackTask::default()
            .decide(TaskCommand::Submit {
                spec: Arc::new(spec),
                at: now,
            })
            .map_err(TaskServiceError::Rejected)?;
        let task = CallbackTask::from_events(&events);
        let due_in = task
            .next_attempt_at()
            .map(|due| (due - now).to_std().unwrap_or_default());
        let bytes = task
            .spec()
            .map_or(0, |spec| spec.request.body.as_ref().map_or(0, |b| b.len()));
        let hold = due_in.is_some_and(|wait| wait <= self.node.scheduler.hold_max()) && self.node.has_room_for(bytes);
        let mut append = new_task_append(&id, &events, hold.then_some(self.node.node_id))?;
        let metadata = crate::audit::metadata_json();
        for event in &mut append.events {
            event.metadata.clone_from(&metadata);
        }
        match self.node.store.append(append).await {
            Ok(()) => {
                let summary = events
                    .first()
                    .and_then(|first| TaskSummary::start(&id, first))
                    .ok_or_else(|| TaskServiceError::Internal("submission produced no TaskSubmitted".into()))?;
                if hold {
                    self.supervisor.do_send(Adopt(LoadedTask {
                        id,
                        epoch: task_epoch(now),
                        task,
                        events,
                        version: 1,
                    }));
                }
                Ok(Accepted {
                    task: summary,
                    replayed: false,
                })
            }
            Err(StoreError::Conflict { .. }) if idempotency_key.is_some() => {
                let key = idempotency_key.unwrap_or_default();
                self.replay_submission(&id, key, &task).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The same Idempotency-Key again: the earlier task if the request is the same.
    async fn replay_submission(&self, id: &str, key: String, new: &CallbackTask) -> Result<Accepted, TaskServiceError> {
        let existing = self
            .node
            .store
            .load_task(id)
            .await?
            .ok_or_else(|| TaskServiceError::Internal(format!("task {id} conflicted but has no events")))?;
        let same = match (existing.task.spec(), new.spec()) {
            (Some(a), Some(b)) => {
                a.request == b.request
                    && a.policy == b.policy
                    && a.source_app == b.source_app
                    && a.target_app == b.target_app
            }
            _ => false,
        };
        if !same {
            return Err(TaskServiceError::IdempotencyMismatch {
                key,
                task_id: id.to_string(),
            });
        }
        let detail = self.observe(existing).await?;
        Ok(Accepted {
            task: detail.summary,
            replayed: true,
        })
    }

    /// Records a task built elsewhere (a consumer's resend); the scheduler of
    /// some node delivers it.
    pub async fn submit_spec(&self, id: &str, spec: Arc<TaskSpec>) -> Result<TaskSummary, TaskServiceError> {
        let events = CallbackTask::default()
            .decide(TaskCommand::Submit { spec, at: Utc::now() })
            .map_err(TaskServiceError::Rejected)?;
        self.node.store.append(new_task_append(id, &events, None)?).await?;
        self.scheduler.do_send(ClaimNow);
        events
            .first()
            .and_then(|first| TaskSummary::start(id, first))
            .ok_or_else(|| TaskServiceError::Internal("submission produced no TaskSubmitted".into()))
    }

    /// A task's full view, folded from its own events (never stale).
    pub async fn detail(&self, id: &str) -> Result<Option<TaskDetail>, TaskServiceError> {
        match self.node.store.load_task(id).await? {
            Some(loaded) => self.observe(loaded).await.map(Some),
            None => Ok(None),
        }
    }

    async fn observe(&self, loaded: LoadedTask) -> Result<TaskDetail, TaskServiceError> {
        let mut detail = TaskDetail::fold(&loaded.id, &loaded.events)
            .ok_or_else(|| TaskServiceError::Internal(format!("task {} has no submission event", loaded.id)))?;
        let entry = self.node.store.schedule_of(std::slice::from_ref(&loaded.id)).await?;
        let entry = entry.get(&loaded.id).map(|e| (e.due_at, e.owner.is_some()));
        detail.summary.status = detail.summary.status.observed(entry, Utc::now());
        Ok(detail)
    }

    pub async fn events(&self, id: &str) -> Result<Vec<StoredEvent>, TaskServiceError> {
        Ok(self.node.store.events_of(bida_store::TASK_TYPE, id).await?)
    }

    pub async fn cancel(&self, id: &str, reason: Option<String>) -> Result<TaskDetail, TaskServiceError> {
        let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        if let Some(text) = &reason {
            if text.len() > MAX_REASON || text.contains('\0') {
                return Err(TaskServiceError::Invalid(ValidationErrors::single(
                    "reason",
                    format!("must be at most {MAX_REASON} bytes, without the NUL character"),
                )));
            }
        }
        self.command(id, TaskCommand::Cancel { reason, at: Utc::now() }).await
    }

    /// Cancels a task unless it is due within `margin`: a write that must not
    /// happen once its cancel was answered (a delayed message) is refused
    /// that close to its time, when a node may already be making it.
    ///
    /// The margin narrows the race between a cancel and an attempt that
    /// starts while the cancel is being recorded; it does not close it for
    /// a cancel whose recording takes longer than the margin.
    pub async fn cancel_unless_due(
        &self,
        id: &str,
        reason: Option<String>,
        margin: std::time::Duration,
    ) -> Result<TaskDetail, TaskServiceError> {
        let entry = self.node.store.schedule_of(&[id.to_string()]).await?;
        let horizon = Utc::now() + chrono::Duration::from_std(margin).unwrap_or_default();
        if entry.get(id).is_some_and(|e| e.due_at <= horizon) {
            return Err(TaskServiceError::TooLate {
                id: id.to_string(),
                margin_ms: margin.as_millis() as u64,
            });
        }
        self.cancel(id, reason).await
    }

    /// Manual compensation: deliver the task again, with a fresh round of
    /// attempts. Refused while an attempt is in flight, which would otherwise
    /// be superseded and repeated at once.
    pub async fn retry(&self, id: &str) -> Result<TaskDetail, TaskServiceError> {
        let entry = self.node.store.schedule_of(&[id.to_string()]).await?;
        if entry
            .get(id)
            .is_some_and(|e| e.owner.is_some() && e.due_at <= Utc::now())
        {
            return Err(TaskServiceError::InFlight(id.to_string()));
        }
        let detail = self.command(id, TaskCommand::Retry { at: Utc::now() }).await?;
        self.scheduler.do_send(ClaimNow);
        Ok(detail)
    }

    /// Delivers a dead or cancelled task again, to its request as amended
    /// by `edit` (checked as a submission is); the amendment is an event,
    /// the original request stays in the task's history.
    pub async fn replay(&self, id: &str, edit: Option<RequestEdit>) -> Result<TaskDetail, TaskServiceError> {
        let request = match edit {
            None => None,
            Some(edit) => {
                let detail = self
                    .detail(id)
                    .await?
                    .ok_or_else(|| TaskServiceError::NotFound(id.to_string()))?;
                if detail.produce.is_some() {
                    return Err(TaskServiceError::Invalid(ValidationErrors::single(
                        "request",
                        "a delayed message is replayed as it was submitted; submit a new one to change it",
                    )));
                }
                if bida_domain::consumer::pull::PullLane::parse_locator(&detail.request.url).is_some() {
                    return Err(TaskServiceError::Invalid(ValidationErrors::single(
                        "request",
                        "a pulled message is replayed as it was consumed: its members pull it again as it is",
                    )));
                }
                let request = edit
                    .over(&detail.request, &self.defaults, &self.limits, Utc::now())
                    .map_err(TaskServiceError::Invalid)?;
                self.check_target("url", &request.url)
                    .map_err(TaskServiceError::Invalid)?;
                Some(Arc::new(request))
            }
        };
        let detail = self
            .command(
                id,
                TaskCommand::Replay {
                    at: Utc::now(),
                    request,
                },
            )
            .await?;
        self.scheduler.do_send(ClaimNow);
        Ok(detail)
    }

    /// Replays many dead or cancelled tasks; each result says what happened to
    /// that task (tasks no longer dead or cancelled are refused).
    pub async fn replay_many(&self, ids: Vec<String>) -> Vec<(String, Result<(), TaskServiceError>)> {
        use futures_util::StreamExt;
        let results = futures_util::stream::iter(ids)
            .map(|id| async move {
                let command = TaskCommand::Replay {
                    at: Utc::now(),
                    request: None,
                };
                let result = self.execute(&id, command).await;
                (id, result)
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        self.scheduler.do_send(ClaimNow);
        results
    }

    async fn command(&self, id: &str, command: TaskCommand) -> Result<TaskDetail, TaskServiceError> {
        self.execute(id, command).await?;
        self.detail(id)
            .await?
            .ok_or_else(|| TaskServiceError::NotFound(id.to_string()))
    }

    /// Commands run through cqrs-es on the shared event store; an actor that
    /// still holds an older copy of the task notices and steps aside.
    async fn execute(&self, id: &str, command: TaskCommand) -> Result<(), TaskServiceError> {
        let metadata = crate::audit::metadata();
        self.cqrs
            .execute_with_metadata(id, command, metadata)
            .await
            .map_err(|e| match e {
                AggregateError::UserError(TaskError::NotFound) => TaskServiceError::NotFound(id.to_string()),
                AggregateError::UserError(e) => TaskServiceError::Rejected(e),
                AggregateError::AggregateConflict => TaskServiceError::Conflict,
                AggregateError::DatabaseConnectionError(e) => TaskServiceError::Unavailable(e.to_string()),
                AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
                    TaskServiceError::Internal(e.to_string())
                }
            })
    }
}
