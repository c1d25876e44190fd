//! The node supervisor: owns every task actor of this node, spreads them over
//! delivery threads, and drains them at shutdown.

use actix::prelude::*;
use bida_store::LoadedTask;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::task_actor::{Stop, TaskActor};
use crate::NodeContext;

/// Take charge of a task this node has claimed (or just accepted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt(pub LoadedTask);

/// A task actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Finished {
    pub id: String,
    pub token: u64,
}

/// The ids of the tasks held in memory now.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct HeldTasks;

/// Stop every task actor and take no new ones; answers once all have stopped.
/// Graceful: attempts in flight are finished and recorded first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub graceful: bool,
}

struct Held {
    token: u64,
    addr: Addr<TaskActor>,
    bytes: usize,
}

pub struct Supervisor {
    node: Arc<NodeContext>,
    threads: Vec<Arbiter>,
    next_thread: usize,
    held: HashMap<String, Held>,
    next_token: u64,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
}

impl Supervisor {
    pub fn new(node: Arc<NodeContext>, threads: usize) -> Self {
        Self {
            node,
            threads: (0..threads.max(1)).map(|_| Arbiter::new()).collect(),
            next_thread: 0,
            held: HashMap::new(),
            next_token: 0,
            draining: false,
            drained: Vec::new(),
        }
    }

    fn count_changed(&mut self) {
        self.node.in_memory.store(self.held.len(), Ordering::Relaxed);
        let bytes = self.held.values().map(|h| h.bytes).sum();
        self.node.in_memory_bytes.store(bytes, Ordering::Relaxed);
        if self.held.is_empty() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for thread in &self.threads {
            thread.stop();
        }
    }
}

impl Handler<Adopt> for Supervisor {
    type Result = ();

    fn handle(&mut self, Adopt(loaded): Adopt, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        let id = loaded.id.clone();
        let bytes = loaded
            .task
            .spec()
            .and_then(|spec| spec.request.body.as_ref())
            .map_or(0, |body| body.len());
        if let Some(previous) = self.held.remove(&id) {
            // A newer copy supersedes the one in memory (a command moved it on).
            previous.addr.do_send(Stop { graceful: false });
        }
        self.next_token += 1;
        let token = self.next_token;
        let Some(actor) = TaskActor::new(loaded, self.node.clone(), ctx.address(), token) else {
            tracing::error!(task = %id, "claimed task has no submission event; skipping it");
            return;
        };
        let thread = &self.threads[self.next_thread % self.threads.len()];
        self.next_thread = self.next_thread.wrapping_add(1);
        let addr = TaskActor::start_in_arbiter(&thread.handle(), move |_| actor);
        self.held.insert(id, Held { token, addr, bytes });
        self.count_changed();
    }
}

impl Handler<Finished> for Supervisor {
    type Result = ();

    fn handle(&mut self, finished: Finished, _ctx: &mut Self::Context) {
        if self.held.get(&finished.id).is_some_and(|h| h.token == finished.token) {
            self.held.remove(&finished.id);
            self.count_changed();
        }
    }
}

impl Handler<HeldTasks> for Supervisor {
    type Result = Vec<String>;

    fn handle(&mut self, _: HeldTasks, _ctx: &mut Self::Context) -> Vec<String> {
        // An actor that died without saying so (a panic) holds nothing.
        self.held.retain(|_, held| held.addr.connected());
        self.count_changed();
        self.held.keys().cloned().collect()
    }
}

impl Handler<Drain> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, drain: Drain, _ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        for held in self.held.values() {
            held.addr.do_send(Stop {
                graceful: drain.graceful,
            });
        }
        let (done, wait) = oneshot::channel();
        self.drained.push(done);
        self.count_changed();
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}
