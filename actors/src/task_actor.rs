//! One actor per task in flight: it holds the task in memory, makes its
//! attempts, and records each outcome with an expected sequence.
//!
//! The actor never keeps the only copy of a due time: every append writes the
//! task's schedule entry, and a task waits in memory only while its next
//! attempt is near (`hold_max_ms`). If this node dies, its entries are freed
//! and another node fires them.

use actix::prelude::*;
use bida_domain::task::{CallbackTask, ScheduleChange, TaskCommand, TaskEvent, TaskSpec};
use bida_store::{task_append, LoadedTask, StoreError};
use chrono::Utc;
use cqrs_es::Aggregate;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::Attempted;
use crate::supervisor::{Finished, Supervisor};
use crate::NodeContext;

/// Leave the task: at once, or after the work in flight is recorded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop {
    pub graceful: bool,
}

#[derive(Default)]
enum Phase {
    #[default]
    Idle,
    /// Waiting for the next attempt to be due.
    Waiting(SpawnHandle),
    /// An attempt or an append in flight.
    Busy(SpawnHandle),
}

enum Interrupted {
    /// Someone else recorded events meanwhile: this copy is stale.
    Stale,
    Store(StoreError),
}

pub struct TaskActor {
    id: String,
    task: CallbackTask,
    spec: Arc<TaskSpec>,
    epoch: i32,
    version: i64,
    node: Arc<NodeContext>,
    supervisor: Addr<Supervisor>,
    token: u64,
    phase: Phase,
    stopping: bool,
    store_failures: u32,
    /// The consumer's newer terms the attempt in flight runs under, recorded
    /// with its outcome.
    adopted: Option<TaskEvent>,
}

impl TaskActor {
    /// `None` when the events hold no submitted task.
    pub fn new(loaded: LoadedTask, node: Arc<NodeContext>, supervisor: Addr<Supervisor>, token: u64) -> Option<Self> {
        let spec = loaded.task.spec()?.clone();
        Some(Self {
            id: loaded.id,
            task: loaded.task,
            spec,
            epoch: loaded.epoch,
            version: loaded.version,
            node,
            supervisor,
            token,
            phase: Phase::Idle,
            stopping: false,
            store_failures: 0,
            adopted: None,
        })
    }

    fn plan(&mut self, ctx: &mut Context<Self>, after_wait: bool) {
        self.phase = Phase::Idle;
        let Some(due) = self.task.next_attempt_at() else {
            return ctx.stop();
        };
        if self.stopping {
            return ctx.stop();
        }
        let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if wait.is_zero() {
            self.attempt(ctx, after_wait);
        } else if wait > self.node.scheduler.hold_max() {
            self.release(ctx);
        } else {
            let timer = ctx.run_later(wait, |actor, ctx| actor.attempt(ctx, true));
            self.phase = Phase::Waiting(timer);
        }
    }

    /// Makes the next attempt. After waiting in memory, it first checks that no
    /// other node or command has moved the task on meanwhile.
    fn attempt(&mut self, ctx: &mut Context<Self>, verify: bool) {
        if self.stopping {
            return ctx.stop();
        }
        let number = self.task.attempts() + 1;
        // A consumer's task waiting for its retry follows the consumer's live
        // changes: the attempt runs under the newest terms this node knows.
        self.adopted = self.node.limits.newer_terms(&self.task);
        let spec = match &self.adopted {
            Some(adopted) => self.under(adopted).spec().cloned().unwrap_or_else(|| self.spec.clone()),
            None => self.spec.clone(),
        };
        let (node, id, version) = (self.node.clone(), self.id.clone(), self.version);
        let work = async move {
            if verify {
                match node.store.last_sequence(CallbackTask::TYPE, &id).await {
                    Ok(latest) if latest != version => return Err(Interrupted::Stale),
                    Ok(_) => {}
                    Err(e) => return Err(Interrupted::Store(e)),
                }
            }
            Ok(node.attempt(&spec, number).await)
        };
        let handle = ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(attempted) => actor.judge(number, attempted, ctx),
            Err(Interrupted::Stale) => {
                tracing::debug!(task = %actor.id, "task moved on elsewhere; leaving it");
                ctx.stop();
            }
            Err(Interrupted::Store(e)) => {
                let delay = actor.store_backoff();
                tracing::warn!(task = %actor.id, error = %e, ?delay, "cannot check the task's version; trying later");
                let timer = ctx.run_later(delay, |actor, ctx| actor.attempt(ctx, true));
                actor.phase = Phase::Busy(timer);
            }
        }));
        self.phase = Phase::Busy(handle);
    }

    /// The task as it stands once `adopted` is applied.
    fn under(&self, adopted: &TaskEvent) -> CallbackTask {
        let mut task = self.task.clone();
        task.apply_event(adopted);
        task
    }

    fn judge(&mut self, number: u32, attempted: Attempted, ctx: &mut Context<Self>) {
        let report = attempted.into_report(number);
        let adopted = self.adopted.take();
        let command = TaskCommand::RecordAttempt(report);
        let judged = match &adopted {
            Some(adopted) => self.under(adopted).decide(command),
            None => self.task.decide(command),
        };
        match judged {
            Ok(judged) => self.record(adopted.into_iter().chain(judged).collect(), ctx),
            Err(e) => {
                tracing::error!(task = %self.id, error = %e, "attempt rejected by the task; leaving it");
                ctx.stop();
            }
        }
    }

    /// Appends the events; applies them to the in-memory task only once committed.
    fn record(&mut self, events: Vec<TaskEvent>, ctx: &mut Context<Self>) {
        let hold_max = self.node.scheduler.hold_max();
        let hold = !self.stopping
            && matches!(ScheduleChange::after(&events),
                Some(ScheduleChange::Due(at)) if (at - Utc::now()).to_std().unwrap_or_default() <= hold_max);
        let owner = hold.then_some(self.node.node_id);
        let append = match task_append(&self.id, self.epoch, self.version, &events, owner) {
            Ok(append) => append,
            Err(e) => {
                tracing::error!(task = %self.id, error = %e, "cannot encode the task's events");
                return ctx.stop();
            }
        };
        let store = self.node.store.clone();
        let handle = ctx.spawn(
            async move { store.append(append).await }
                .into_actor(self)
                .map(move |result, actor, ctx| match result {
                    Ok(()) => {
                        actor.store_failures = 0;
                        for event in &events {
                            actor.task.apply_event(event);
                        }
                        if let Some(spec) = actor.task.spec() {
                            actor.spec = spec.clone();
                        }
                        actor.version += events.len() as i64;
                        if hold {
                            actor.plan(ctx, false);
                        } else {
                            ctx.stop();
                        }
                    }
                    Err(StoreError::Conflict { .. }) => {
                        tracing::debug!(task = %actor.id, "task recorded elsewhere first; leaving it");
                        ctx.stop();
                    }
                    Err(e) if e.is_transient() || matches!(e, StoreError::WriterStopped) => {
                        let delay = actor.store_backoff();
                        tracing::warn!(task = %actor.id, error = %e, ?delay, "cannot record the attempt; trying again");
                        let timer = ctx.run_later(delay, move |actor, ctx| actor.record(events, ctx));
                        actor.phase = Phase::Busy(timer);
                    }
                    Err(e) => {
                        tracing::error!(task = %actor.id, error = %e, "cannot record the attempt; leaving the task to the schedule");
                        ctx.stop();
                    }
                }),
        );
        self.phase = Phase::Busy(handle);
    }

    /// The next attempt is far off: free the schedule entry for any node.
    fn release(&mut self, ctx: &mut Context<Self>) {
        let (store, node, id) = (self.node.store.clone(), self.node.node_id, self.id.clone());
        let handle = ctx.spawn(
            async move { store.release_tasks(node, &[id]).await }
                .into_actor(self)
                .map(|result, actor, ctx| {
                    if let Err(e) = result {
                        tracing::warn!(task = %actor.id, error = %e, "cannot release the task; the orphan sweep will");
                    }
                    ctx.stop();
                }),
        );
        self.phase = Phase::Busy(handle);
    }

    /// 0.5 s, 1 s, 2 s ... up to 30 s while the store is unreachable.
    fn store_backoff(&mut self) -> Duration {
        self.store_failures = self.store_failures.saturating_add(1);
        Duration::from_millis((250u64 << self.store_failures.min(7)).min(30_000))
    }
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.plan(ctx, false);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.supervisor.do_send(Finished {
            id: std::mem::take(&mut self.id),
            token: self.token,
        });
    }
}

impl Handler<Stop> for TaskActor {
    type Result = ();

    fn handle(&mut self, stop: Stop, ctx: &mut Self::Context) {
        self.stopping = true;
        match std::mem::take(&mut self.phase) {
            Phase::Busy(handle) if stop.graceful => self.phase = Phase::Busy(handle),
            Phase::Busy(handle) | Phase::Waiting(handle) => {
                ctx.cancel_future(handle);
                ctx.stop();
            }
            Phase::Idle => ctx.stop(),
        }
    }
}
