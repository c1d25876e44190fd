//! Bida's actors: the running part of a node.
//!
//! - [`TaskActor`](task_actor::TaskActor): one per task in flight; attempts
//!   delivery and records each outcome with an expected sequence.
//! - [`Supervisor`]: owns the task actors of this node, spread over delivery threads.
//! - [`Scheduler`]: claims due tasks from the durable schedule, keeps the
//!   heartbeat, takes over the tasks of dead nodes.
//! - the notifier: failure notifications for dead letters.
//! - [`TaskService`]: what the HTTP API asks of the node.

pub mod access;
pub mod audit;
pub mod brokers;
pub mod commands;
mod config;
pub mod consumer;
pub mod delayed;
pub mod delivery;
pub mod egress;
pub mod limits;
pub mod notifier;
pub mod produce;
pub mod pull;
mod retention;
pub mod scheduler;
pub mod secrets;
pub mod signing;
pub mod sources;
pub mod supervisor;
pub mod task_actor;
mod tasks;
pub mod topics;
pub mod users;

pub use config::{DeliveryConfig, HostLimit, NotifyConfig, NotifyFormat, NotifyWebhook, SchedulerConfig};
pub use delivery::Delivery;
pub use scheduler::Scheduler;
pub use supervisor::Supervisor;
pub use tasks::{idempotent_task_id, Accepted, TaskService, TaskServiceError};

use actix::prelude::*;
use bida_domain::task::{Limits, TaskDefaults, TaskSpec};
use bida_store::{RetentionConfig, Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What every actor of a node shares.
pub struct NodeContext {
    /// This process's identity in the `nodes` table; new at every start.
    pub node_id: Uuid,
    pub name: String,
    pub listen: String,
    pub store: Store,
    pub delivery: Delivery,
    /// Writes the messages of broker-writing tasks (delayed messages).
    pub producers: Arc<produce::Producers>,
    /// Wakes this node's waiting pulls when their lane gets messages.
    pub pulls: Arc<pull::PullWakers>,
    /// Wakes this node's readers of built-in topics when messages are published.
    pub topic_wakes: topics::TopicWakes,
    /// Where consumer deliveries run: a work-stealing pool over every core.
    pub work: tokio::runtime::Handle,
    pub scheduler: SchedulerConfig,
    /// Task actors alive now, and the bytes of their bodies (kept by the supervisor).
    pub in_memory: AtomicUsize,
    pub in_memory_bytes: AtomicUsize,
    pub max_in_memory: usize,
    pub max_in_memory_bytes: usize,
    /// Seals and opens credentials kept in the event store (`secret_key`).
    pub sealer: Option<secrets::Sealer>,
    /// Consumers' terms of the moment and this node's shares of their limits.
    pub limits: limits::DeliveryLimits,
}

impl NodeContext {
    /// Makes attempt number `attempt` of a task: an HTTP request, or a write
    /// to a broker.
    pub async fn attempt(&self, spec: &TaskSpec, attempt: u32) -> delivery::Attempted {
        if spec.pull_lane().is_some() {
            // Never claimed by a scheduler (its lane keeps it for members'
            // pulls); should one get here, it fails rather than loops.
            return delivery::Attempted::unsendable(
                "a pulled message is delivered by its members' pulls, not by a node".into(),
            );
        }
        match &spec.produce {
            Some(produce) => delayed::attempt(&self.producers, spec, produce, attempt).await,
            None => {
                // Held until the endpoint has answered: the consumer's
                // concurrency counts requests at its endpoint.
                let _pass = self.limits.pass(spec).await;
                self.delivery.attempt(spec, attempt).await
            }
        }
    }

    /// Whether one more task of `bytes` may be held in memory.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        self.in_memory.load(Ordering::Relaxed) < self.max_in_memory
            && self.in_memory_bytes.load(Ordering::Relaxed) + bytes <= self.max_in_memory_bytes
    }
}

#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    pub name: String,
    pub listen: String,
    pub delivery: DeliveryConfig,
    pub scheduler: SchedulerConfig,
    pub notify: NotifyConfig,
    pub retention: RetentionConfig,
    pub task_defaults: TaskDefaults,
    pub limits: Limits,
    /// Opens signing secrets (`secret_key`); without it nothing is signed.
    pub sealer: Option<secrets::Sealer>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot start the delivery threads: {0}")]
    Runtime(std::io::Error),
}

/// Stop the scheduler.
#[derive(Message)]
#[rtype(result = "()")]
struct Halt;

impl Handler<Halt> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// What monitoring reads of a running node.
#[derive(Clone)]
pub struct NodeContextView {
    pub id: Uuid,
    context: Arc<NodeContext>,
}

impl NodeContextView {
    /// Task actors alive on this node now.
    pub fn task_actors(&self) -> usize {
        self.context.in_memory.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A running node. Must be started inside an actix system.
pub struct Node {
    context: Arc<NodeContext>,
    supervisor: Addr<Supervisor>,
    scheduler: Addr<Scheduler>,
    consumers: Addr<consumer::ConsumerSupervisor>,
    work: Option<tokio::runtime::Runtime>,
    notifier: Option<tokio::task::JoinHandle<()>>,
    retention: tokio::task::JoinHandle<()>,
    /// The topics' listener and their logs' maintenance.
    topic_work: [tokio::task::JoinHandle<()>; 2],
    tasks: TaskService,
    shutdown_grace: Duration,
}

impl Node {
    pub async fn start(store: Store, config: NodeConfig) -> Result<Self, NodeError> {
        let node_id = Uuid::new_v4();
        store
            .register_node(node_id, &config.name, env!("CARGO_PKG_VERSION"), &config.listen)
            .await?;
        if let Err(e) = store.prune_nodes(Duration::from_secs(7 * 24 * 3600)).await {
            tracing::warn!(error = %e, "cannot prune old nodes");
        }
        let threads = match config.delivery.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        // Built outside any runtime's context would be simpler, but dropping a
        // runtime inside async code panics: it is shut down in the background.
        let work = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("bida-work")
            .enable_all()
            .build()
            .map_err(NodeError::Runtime)?;
        let context = Arc::new(NodeContext {
            node_id,
            work: work.handle().clone(),
            name: config.name.clone(),
            listen: config.listen.clone(),
            delivery: Delivery::new(
                config.delivery.clone(),
                config
                    .sealer
                    .clone()
                    .map(|sealer| Arc::new(signing::Signer::new(store.clone(), sealer))),
                delivery::Descriptors::new(store.clone()),
            )?,
            producers: Arc::new(produce::Producers::new(brokers::BrokerService::new(
                store.clone(),
                config.sealer.clone(),
            ))),
            pulls: Arc::default(),
            topic_wakes: topics::TopicWakes::default(),
            scheduler: config.scheduler.clone(),
            sealer: config.sealer.clone(),
            in_memory: AtomicUsize::new(0),
            in_memory_bytes: AtomicUsize::new(0),
            max_in_memory: config.delivery.max_in_memory.max(1),
            max_in_memory_bytes: config.delivery.max_in_memory_bytes.max(1 << 20),
            store: store.clone(),
            limits: limits::DeliveryLimits::new(node_id, config.scheduler.heartbeat_interval()),
        });
        context.limits.set_host_limits(&config.delivery.host_limits);
        // Shares of the limits start from the other nodes' word.
        if let Err(e) = context.limits.exchange(&store, config.scheduler.node_ttl()).await {
            tracing::warn!(error = %e, "cannot read the other nodes' busy gates; sharing limits from the next heartbeat");
        }
        let supervisor = Supervisor::new(context.clone(), threads).start();
        let scheduler = Scheduler::new(context.clone(), supervisor.clone()).start();
        let consumer_commands = commands::Commands::new(&store);
        let consumers =
            consumer::ConsumerSupervisor::new(context.clone(), supervisor.clone(), consumer_commands, threads).start();
        let notifier = (!config.notify.webhooks.is_empty()).then(|| {
            let egress = egress::EgressGuard::new(config.delivery.allow_networks.clone());
            notifier::spawn(store.clone(), config.notify.clone(), config.name.clone(), egress)
        });
        let topic_work = [
            context.topic_wakes.spawn_listener(store.clone()),
            topics::TopicService::new(store.clone()).spawn_maintenance(),
        ];
        let retention = retention::spawn(store, config.retention.clone());
        let tasks = TaskService::new(
            context.clone(),
            supervisor.clone(),
            scheduler.clone(),
            config.task_defaults,
            config.limits,
        );
        tracing::info!(node = %node_id, name = %config.name, threads, "node started");
        Ok(Self {
            context,
            supervisor,
            scheduler,
            consumers,
            work: Some(work),
            notifier,
            retention,
            topic_work,
            tasks,
            shutdown_grace: Duration::from_millis(config.scheduler.shutdown_grace_ms),
        })
    }

    pub fn id(&self) -> Uuid {
        self.context.node_id
    }

    pub fn view(&self) -> NodeContextView {
        NodeContextView {
            id: self.context.node_id,
            context: self.context.clone(),
        }
    }

    pub fn tasks(&self) -> TaskService {
        self.tasks.clone()
    }

    /// The node's producers, one per broker (shared by the API's writes and
    /// its delayed messages).
    pub fn producers(&self) -> Arc<produce::Producers> {
        self.context.producers.clone()
    }

    /// Built-in topics: their life and their logs.
    /// Descriptor sets for gRPC deliveries, as this node knows them.
    pub fn descriptors(&self) -> delivery::Descriptors {
        self.context.delivery.descriptors().clone()
    }

    pub fn topics(&self) -> topics::TopicService {
        topics::TopicService::new(self.context.store.clone())
    }

    /// What members of pull consumers ask of the node.
    pub fn pulls(&self) -> pull::PullService {
        pull::PullService::new(self.context.clone(), self.tasks.clone())
    }

    pub fn delayed(&self) -> delayed::DelayedService {
        delayed::DelayedService::new(
            self.tasks.clone(),
            brokers::BrokerService::new(self.context.store.clone(), self.context.sealer.clone()),
        )
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    /// Finishes the attempts in flight (up to the grace period), gives every
    /// held task back to the shared schedule and leaves the cluster.
    pub async fn shutdown(mut self) {
        // Consumers first: their deliveries finish and are recorded, and
        // RabbitMQ/Kafka get their unfinished messages back.
        let _ = self.consumers.send(consumer::supervisor::DrainConsumers).await;
        let _ = self.scheduler.send(Halt).await;
        self.retention.abort();
        // Awaited, not only aborted: the listener's connection must be
        // dropped while the runtime runs.
        for work in &mut self.topic_work {
            work.abort();
            let _ = work.await;
        }
        if let Some(notifier) = &self.notifier {
            notifier.abort();
        }
        let graceful = self.supervisor.send(supervisor::Drain { graceful: true });
        if tokio::time::timeout(self.shutdown_grace, graceful).await.is_err() {
            tracing::warn!("attempts still running after the grace period; abandoning them");
            let _ = self.supervisor.send(supervisor::Drain { graceful: false }).await;
        }
        let store = &self.context.store;
        match store.release_all_tasks(self.context.node_id).await {
            Ok(released) => tracing::info!(released, "gave held tasks back to the schedule"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot give tasks back; other nodes take them after the heartbeat expires")
            }
        }
        if let Err(e) = store.mark_node_stopped(self.context.node_id).await {
            tracing::warn!(error = %e, "cannot mark the node stopped");
        }
        if let Some(work) = self.work.take() {
            work.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A runtime dropped inside async code panics; hand it off instead.
        if let Some(work) = self.work.take() {
            work.shutdown_background();
        }
    }
}
