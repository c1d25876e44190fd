//! The durable scheduler: claims due tasks from the shared schedule, keeps the
//! node's heartbeat, frees the tasks of dead nodes, and gives back tasks this
//! node claimed but no actor holds.

use actix::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::{Adopt, HeldTasks, Supervisor};
use crate::NodeContext;

/// Poll the schedule now rather than at the next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClaimNow;

pub struct Scheduler {
    node: Arc<NodeContext>,
    supervisor: Addr<Supervisor>,
    claiming: bool,
}

/// Longest wait for one claim round.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

impl Scheduler {
    pub fn new(node: Arc<NodeContext>, supervisor: Addr<Supervisor>) -> Self {
        Self {
            node,
            supervisor,
            claiming: false,
        }
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        let free = self
            .node
            .max_in_memory
            .saturating_sub(self.node.in_memory.load(Ordering::Relaxed));
        if self.claiming || free == 0 || !self.node.has_room_for(0) {
            return;
        }
        self.claiming = true;
        let limit = (free as i64).min(self.node.scheduler.claim_batch.max(1));
        let node = self.node.clone();
        let work = async move {
            let claimed = node
                .store
                .claim_due(node.node_id, node.scheduler.lookahead(), limit)
                .await?;
            if claimed.is_empty() {
                return Ok((0, Vec::new()));
            }
            let ids: Vec<String> = claimed.into_iter().map(|c| c.task_id).collect();
            let batch = node.store.load_tasks(&ids).await?;
            let found: HashSet<&str> = batch.loaded.iter().map(|t| t.id.as_str()).collect();
            let missing: Vec<String> = ids.iter().filter(|id| !found.contains(id.as_str())).cloned().collect();
            if !missing.is_empty() {
                for (id, e) in &batch.unreadable {
                    tracing::error!(task = %id, error = %e, "cannot read the task's events; leaving it to other nodes");
                }
                node.store.release_tasks(node.node_id, &missing).await?;
            }
            let loaded = batch.loaded;
            Ok::<_, bida_store::StoreError>((ids.len() as i64, loaded))
        };
        // A claim stuck on a dead connection must not stop this node claiming.
        let work = async move {
            match tokio::time::timeout(STEP_DEADLINE, work).await {
                Ok(result) => result,
                Err(_) => Err(bida_store::StoreError::WriterStopped),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |result, scheduler, ctx| {
            scheduler.claiming = false;
            match result {
                Ok((claimed, loaded)) => {
                    if claimed > 0 {
                        tracing::debug!(claimed, "claimed due tasks");
                    }
                    for task in loaded {
                        scheduler.supervisor.do_send(Adopt(task));
                    }
                    if claimed == limit {
                        ctx.notify(ClaimNow);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim due tasks"),
            }
        }));
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        ctx.spawn(
            async move {
                match node.store.heartbeat(node.node_id).await {
                    Ok(true) => {
                        if let Err(e) = node.limits.exchange(&node.store, node.scheduler.node_ttl()).await {
                            tracing::warn!(error = %e, "cannot share the consumers' limits; keeping the last shares");
                        }
                    }
                    Ok(false) => {
                        tracing::error!("this node is marked stopped; its tasks may be taken over")
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
            .into_actor(self),
        );
    }

    fn free_dead_nodes(&mut self, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        ctx.spawn(
            async move {
                match node
                    .store
                    .free_tasks_of_dead_nodes(node.node_id, node.scheduler.node_ttl())
                    .await
                {
                    Ok(0) => {}
                    Ok(freed) => tracing::info!(freed, "took back tasks held by dead nodes"),
                    Err(e) => tracing::warn!(error = %e, "cannot free tasks of dead nodes"),
                }
            }
            .into_actor(self),
        );
    }

    fn sweep_orphans(&mut self, ctx: &mut Context<Self>) {
        let (node, supervisor) = (self.node.clone(), self.supervisor.clone());
        ctx.spawn(
            async move {
                let owned = match node
                    .store
                    .tasks_owned_by(node.node_id, node.scheduler.orphan_grace())
                    .await
                {
                    Ok(owned) if owned.is_empty() => return,
                    Ok(owned) => owned,
                    Err(e) => return tracing::warn!(error = %e, "cannot list held tasks"),
                };
                let Ok(held) = supervisor.send(HeldTasks).await else {
                    return;
                };
                let held: HashSet<String> = held.into_iter().collect();
                let orphans: Vec<String> = owned.into_iter().filter(|id| !held.contains(id)).collect();
                if orphans.is_empty() {
                    return;
                }
                match node.store.release_tasks(node.node_id, &orphans).await {
                    Ok(released) => tracing::warn!(released, "gave back tasks no actor held"),
                    Err(e) => tracing::warn!(error = %e, "cannot give back orphaned tasks"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let config = &self.node.scheduler;
        ctx.run_interval(config.poll_interval(), |s, ctx| s.claim(ctx));
        ctx.run_interval(config.heartbeat_interval(), |s, ctx| s.heartbeat(ctx));
        ctx.run_interval(config.node_ttl() / 2, |s, ctx| s.free_dead_nodes(ctx));
        ctx.run_interval(config.orphan_grace(), |s, ctx| s.sweep_orphans(ctx));
        self.free_dead_nodes(ctx);
        self.claim(ctx);
    }
}

impl Handler<ClaimNow> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: ClaimNow, ctx: &mut Self::Context) {
        self.claim(ctx);
    }
}
