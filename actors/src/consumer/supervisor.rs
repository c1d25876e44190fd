//! The consumer supervisor of a node. Every node runs every running consumer:
//! Kafka consumer groups and RabbitMQ competing consumers split the messages
//! between nodes, and a node that leaves hands its share to the others.
//!
//! It follows consumer and broker events (a Postgres notification at each
//! commit, and a full reload every 30 s in case one was missed), starts,
//! reconfigures and stops consumer actors, restarts crashed ones with backoff,
//! records each crash as an event, and publishes what every actor reports.

use actix::prelude::*;
use bida_domain::broker::{Broker, BrokerSpec};
use bida_domain::consumer::{Consumer, ConsumerCommand, DesiredState, Ordering, Source};
use bida_store::Channel;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bida_domain::consumer::NodeState;

use super::actor::{ConsumerActor, Opening, Reconfigure, Report, StopConsumer};
use super::pipeline::LiveConfig;
use super::reports::PublishedReports;
use crate::commands::Commands;
use crate::limits::GateKey;
use crate::supervisor::Supervisor;
use crate::NodeContext;

/// A consumer actor ended with an error.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crashed {
    pub consumer_id: String,
    /// Which actor: a report from one replaced meanwhile is ignored.
    pub generation: u64,
    pub error: String,
    pub ran_for: Duration,
}

/// A broker or consumer changed (from a notification).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub aggregate_type: String,
    pub id: String,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ReloadAll;

/// Stop every consumer actor of this node and wait for them (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainConsumers;

/// A run that lasted this long resets the count of crashes in a row.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);
/// How long a stopping consumer's source may take to close after the grace.
const SOURCE_CLOSE: Duration = Duration::from_secs(3);

/// What an actor was started with: a change of any of it needs a new actor.
struct Running {
    addr: Addr<ConsumerActor>,
    generation: u64,
    broker: BrokerSpec,
    source: Source,
    ordering: Ordering,
}

#[derive(Default)]
struct Managed {
    consumer: Consumer,
    version: i64,
    running: Option<Running>,
    /// Crashes in a row.
    crashes: u32,
    restart_at: Option<Instant>,
    last_error: Option<(DateTime<Utc>, String)>,
}

pub struct ConsumerSupervisor {
    node: Arc<NodeContext>,
    tasks: Addr<Supervisor>,
    consumers: Commands<Consumer>,
    /// Broker states with their versions.
    brokers: HashMap<String, (Broker, i64)>,
    /// Consumer actors run here, away from the thread of the node's other actors.
    threads: Vec<Arbiter>,
    next_thread: usize,
    generations: u64,
    managed: HashMap<String, Managed>,
    draining: bool,
    listener: Option<SpawnHandle>,
    /// A publish of the reports is under way: the next period's waits. With
    /// a thousand consumers one publish outlasts the period, and two of this
    /// node's publishes at once deadlocked on each other's rows.
    publishing: bool,
    /// What the last publish left in the store.
    published: PublishedReports,
    /// How its consumers open their sources (tests bring an in-memory broker).
    opening: Opening,
}

impl ConsumerSupervisor {
    pub fn new(node: Arc<NodeContext>, tasks: Addr<Supervisor>, consumers: Commands<Consumer>, threads: usize) -> Self {
        Self {
            node,
            tasks,
            consumers,
            brokers: HashMap::new(),
            threads: (0..threads.max(1)).map(|_| Arbiter::new()).collect(),
            next_thread: 0,
            generations: 0,
            managed: HashMap::new(),
            draining: false,
            listener: None,
            publishing: false,
            published: PublishedReports::default(),
            opening: Opening::default(),
        }
    }

    /// Its consumers open their sources with `opener` (an in-memory broker).
    #[cfg(test)]
    pub(crate) fn with_opener(mut self, opener: super::actor::Opener) -> Self {
        self.opening.opener = Some(opener);
        self
    }

    /// Its consumers wait at most `limit` for their sources to open.
    #[cfg(test)]
    pub(crate) fn with_open_limit(mut self, limit: Duration) -> Self {
        self.opening.limit = limit;
        self
    }

    /// Makes this node's actor for `id` match what the events ask for.
    fn reconcile(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(managed) = self.managed.get_mut(id) else {
            return;
        };
        let wanted = managed.consumer.spec().filter(|_| {
            !self.draining && !managed.consumer.is_deleted() && managed.consumer.state() != DesiredState::Stopped
        });
        let broker = wanted.and_then(|spec| {
            self.brokers
                .get(&spec.broker_id)
                .filter(|(b, _)| b.is_online())
                .and_then(|(b, _)| b.spec().cloned())
        });
        let (Some(spec), Some(broker)) = (wanted, broker) else {
            if let Some(running) = managed.running.take() {
                running.addr.do_send(StopConsumer);
            }
            managed.restart_at = None;
            managed.crashes = 0;
            return;
        };
        let live = Arc::new(LiveConfig {
            consumer_id: id.to_string(),
            spec: spec.clone(),
            paused: managed.consumer.state() == DesiredState::Paused,
            parked: managed.consumer.parked_lanes().keys().cloned().collect(),
            version: managed.version,
            epoch: managed.consumer.resets(),
            naming: managed.consumer.naming(),
        });
        if let Some(running) = &managed.running {
            let same =
                running.broker == broker && running.source == spec.source && running.ordering == spec.policy.ordering;
            if running.addr.connected() && same {
                running.addr.do_send(Reconfigure(live));
                return;
            }
            // A new connection or source needs a new actor.
            running.addr.do_send(StopConsumer);
            managed.running = None;
        }
        if managed.restart_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        managed.restart_at = None;
        self.generations += 1;
        let generation = self.generations;
        let (source, ordering) = (spec.source.clone(), spec.policy.ordering);
        let actor = ConsumerActor::new(
            live,
            broker.clone(),
            self.node.clone(),
            (self.tasks.clone(), self.consumers.clone()),
            ctx.address(),
            generation,
        )
        .with_opening(self.opening.clone());
        let thread = &self.threads[self.next_thread % self.threads.len()];
        self.next_thread = self.next_thread.wrapping_add(1);
        let addr = ConsumerActor::start_in_arbiter(&thread.handle(), move |_| actor);
        tracing::info!(consumer = id, "consumer started on this node");
        managed.running = Some(Running {
            addr,
            generation,
            broker,
            source,
            ordering,
        });
    }

    /// Loads may finish out of order: only a newer version replaces the state.
    fn update_consumer(&mut self, id: String, consumer: Consumer, version: i64) {
        let managed = self.managed.entry(id.clone()).or_default();
        if version > managed.version {
            self.node.limits.consumer_changed(&id, version, &consumer);
            managed.consumer = consumer;
            managed.version = version;
        }
    }

    fn update_broker(&mut self, id: String, broker: Broker, version: i64) {
        match self.brokers.get(&id) {
            Some((_, known)) if *known >= version => {}
            _ => {
                let broker = crate::secrets::opened(&broker, self.node.sealer.as_ref());
                self.brokers.insert(id, (broker, version));
            }
        }
    }

    fn reconcile_all(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<String> = self.managed.keys().cloned().collect();
        for id in ids {
            self.reconcile(&id, ctx);
        }
    }

    fn crashed(&mut self, id: &str, generation: u64, error: String, ran_for: Duration, ctx: &mut Context<Self>) {
        let Some(managed) = self.managed.get_mut(id) else {
            return;
        };
        if managed.running.as_ref().map(|r| r.generation) != Some(generation) {
            // An actor replaced meanwhile; the current one is fine.
            return;
        }
        managed.running = None;
        managed.crashes = if ran_for >= HEALTHY_RUN { 1 } else { managed.crashes + 1 };
        let backoff = Duration::from_secs(1 << managed.crashes.saturating_sub(1).min(6)).min(LONGEST_BACKOFF);
        managed.restart_at = Some(Instant::now() + backoff);
        managed.last_error = Some((Utc::now(), error.clone()));
        let command = ConsumerCommand::RecordCrash {
            node: self.node.name.clone(),
            error,
            consecutive: managed.crashes,
            at: Utc::now(),
        };
        let (consumers, id) = (self.consumers.clone(), id.to_string());
        ctx.spawn(
            async move {
                if let Err(e) = consumers.execute(&id, command).await {
                    tracing::warn!(consumer = %id, error = %e, "cannot record the crash");
                }
            }
            .into_actor(self),
        );
    }

    /// Restarts what is due, and notices actors that died without a word (a panic).
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let silent: Vec<(String, u64)> = self
            .managed
            .iter()
            .filter_map(|(id, m)| {
                m.running
                    .as_ref()
                    .filter(|r| !r.addr.connected())
                    .map(|r| (id.clone(), r.generation))
            })
            .collect();
        for (id, generation) in silent {
            self.crashed(
                &id,
                generation,
                "the consumer actor stopped unexpectedly".into(),
                Duration::ZERO,
                ctx,
            );
        }
        let due: Vec<String> = self
            .managed
            .iter()
            .filter(|(_, m)| m.running.is_none() && m.restart_at.is_some_and(|at| Instant::now() >= at))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.reconcile(&id, ctx);
        }
    }

    /// Publishes what each consumer actor of this node says about itself.
    fn publish_reports(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.publishing, true) {
            return;
        }
        let mut asks = Vec::new();
        let mut rows = Vec::new();
        for (id, managed) in &self.managed {
            match &managed.running {
                Some(running) => asks.push((id.clone(), running.addr.clone())),
                None if managed.restart_at.is_some() => {
                    let restart_in = managed
                        .restart_at
                        .map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64);
                    let (at, error) = managed.last_error.clone().unzip();
                    rows.push((
                        id.clone(),
                        NodeState::Restarting.as_str().to_string(),
                        json!({"crashes_in_a_row": managed.crashes, "restart_in_ms": restart_in,
                               "last_error": error, "last_error_at": at}),
                    ));
                }
                None => {}
            }
        }
        let node = self.node.clone();
        let mut published = std::mem::take(&mut self.published);
        ctx.spawn(
            async move {
                for (id, addr) in asks {
                    if let Ok(Ok(report)) = tokio::time::timeout(Duration::from_secs(5), addr.send(Report)).await {
                        let state = report.state.as_str().to_string();
                        let mut shown = serde_json::to_value(&report).unwrap_or_default();
                        // This node's part of the consumer's limits, now.
                        if let (Some(share), Some(shown)) = (
                            node.limits.share_of(&GateKey::Consumer(id.clone())),
                            shown.as_object_mut(),
                        ) {
                            shown.insert("share".into(), share.shown());
                        }
                        rows.push((id, state, shown));
                    }
                }
                let running: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
                let changed = published.to_write(&rows);
                match node
                    .store
                    .publish_consumer_runtime(node.node_id, &running, &changed)
                    .await
                {
                    Ok(()) => published.published(rows),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish consumer reports");
                        published.lost();
                    }
                }
                published
            }
            .into_actor(self)
            .map(|published, supervisor, _| {
                supervisor.published = published;
                supervisor.publishing = false;
            }),
        );
    }

    /// Follows notifications of broker and consumer changes; a lost listener
    /// reconnects and asks for a full reload.
    fn listen(&mut self, ctx: &mut Context<Self>) {
        let (store, me) = (self.node.store.clone(), ctx.address());
        self.listener = Some(
            ctx.spawn(
                async move {
                    loop {
                        match store.listen(Channel::Config).await {
                            Ok(mut listener) => {
                                me.do_send(ReloadAll);
                                while let Some(payload) = listener.next().await {
                                    if let Some((kind, id)) = payload.split_once(':') {
                                        me.do_send(Reload {
                                            aggregate_type: kind.to_string(),
                                            id: id.to_string(),
                                        });
                                    }
                                }
                                tracing::warn!("lost the configuration listener; reconnecting");
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot listen for configuration changes"),
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                .into_actor(self),
            ),
        );
    }
}

impl Actor for ConsumerSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.listen(ctx);
        ctx.notify(ReloadAll);
        ctx.run_interval(Duration::from_secs(30), |_, ctx| ctx.notify(ReloadAll));
        ctx.run_interval(Duration::from_secs(1), |s, ctx| s.tick(ctx));
        ctx.run_interval(Duration::from_secs(2), |s, ctx| s.publish_reports(ctx));
    }
}

impl Handler<ReloadAll> for ConsumerSupervisor {
    type Result = ();

    fn handle(&mut self, _: ReloadAll, ctx: &mut Self::Context) {
        let store = self.node.store.clone();
        let load = async move {
            let brokers = store.load_all::<Broker>().await?;
            let consumers = store.load_all::<Consumer>().await?;
            Ok::<_, bida_store::StoreError>((brokers, consumers))
        };
        ctx.spawn(load.into_actor(self).map(|loaded, this, ctx| match loaded {
            Ok((brokers, consumers)) => {
                let builtin = (bida_domain::kinds::builtin::BROKER_ID.to_string(), Broker::builtin(), 0);
                for (id, broker, version) in std::iter::once(builtin).chain(brokers) {
                    this.update_broker(id, broker, version);
                }
                for (id, consumer, version) in consumers {
                    this.update_consumer(id, consumer, version);
                }
                this.reconcile_all(ctx);
            }
            Err(e) => tracing::warn!(error = %e, "cannot load consumers"),
        }));
    }
}

impl Handler<Reload> for ConsumerSupervisor {
    type Result = ();

    fn handle(&mut self, reload: Reload, ctx: &mut Self::Context) {
        let store = self.node.store.clone();
        let Reload { aggregate_type, id } = reload;
        if aggregate_type == "broker" {
            let load = async move { store.load_aggregate::<Broker>(&id).await.map(|b| (id, b)) };
            ctx.spawn(load.into_actor(self).map(|loaded, this, ctx| match loaded {
                Ok((id, Some((broker, version)))) => {
                    this.update_broker(id, broker, version);
                    this.reconcile_all(ctx);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot load a broker"),
            }));
        } else if aggregate_type == "consumer" {
            let load = async move { store.load_aggregate::<Consumer>(&id).await.map(|c| (id, c)) };
            ctx.spawn(load.into_actor(self).map(|loaded, this, ctx| match loaded {
                Ok((id, Some((consumer, version)))) => {
                    this.update_consumer(id.clone(), consumer, version);
                    this.reconcile(&id, ctx);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot load a consumer"),
            }));
        }
    }
}

impl Handler<Crashed> for ConsumerSupervisor {
    type Result = ();

    fn handle(&mut self, crash: Crashed, ctx: &mut Self::Context) {
        self.crashed(&crash.consumer_id, crash.generation, crash.error, crash.ran_for, ctx);
    }
}

impl Handler<DrainConsumers> for ConsumerSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: DrainConsumers, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        // The listener holds a pooled connection, which must be dropped while
        // the runtime still runs (the store returns it with a spawned task).
        if let Some(listener) = self.listener.take() {
            ctx.cancel_future(listener);
        }
        let addrs: Vec<Addr<ConsumerActor>> = self
            .managed
            .values_mut()
            .filter_map(|m| m.running.take().map(|r| r.addr))
            .collect();
        for addr in &addrs {
            addr.do_send(StopConsumer);
        }
        let (node, grace) = (
            self.node.clone(),
            Duration::from_millis(self.node.scheduler.shutdown_grace_ms),
        );
        Box::pin(
            async move {
                // After the grace, sources close: they give back what they
                // hold (NATS refuses its unacknowledged messages).
                let deadline = Instant::now() + grace + SOURCE_CLOSE;
                while addrs.iter().any(|a| a.connected()) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = node.store.publish_consumer_runtime(node.node_id, &[], &[]).await;
            }
            .into_actor(self)
            .map(|(), this, ctx| {
                for thread in &this.threads {
                    thread.stop();
                }
                ctx.stop()
            }),
        )
    }
}
