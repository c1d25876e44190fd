//! One `ConsumerActor` per consumer on each node: it owns the source
//! connection and the pump, applies configuration changes live, and reports
//! its state. A crash (connection lost, broker refusal, a failed recording)
//! ends the actor and is reported to the consumer supervisor, which records it
//! and starts a new actor after a backoff.

use actix::prelude::*;
use bida_domain::broker::BrokerSpec;
use bida_domain::consumer::Source as SourceSpec;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::pipeline::{LiveConfig, Pipeline};
use super::pump::{Pump, PumpError, PumpStatus, RunState};
use super::supervisor::{ConsumerSupervisor, Crashed};
use crate::sources::{Backlog, BoxedSource, Client, SourceError};
use crate::NodeContext;

/// Opens a consumer's source in place of the broker registry: the seam
/// through which unit tests run consumers on an in-memory broker.
pub(crate) type Opener =
    Arc<dyn Fn(BrokerSpec, SourceSpec, Client) -> BoxFuture<'static, Result<BoxedSource, SourceError>> + Send + Sync>;

/// How a consumer's source is opened: by the broker registry (or a test's
/// [`Opener`]), within a time limit ([`SOURCE_OPEN`]; tests shorten it).
#[derive(Clone)]
pub(crate) struct Opening {
    pub(crate) opener: Option<Opener>,
    pub(crate) limit: Duration,
}

impl Default for Opening {
    fn default() -> Self {
        Self {
            opener: None,
            limit: SOURCE_OPEN,
        }
    }
}

impl Opening {
    /// Opens the source; past the limit the attempt is dropped and reported
    /// as a failed connect.
    async fn open(
        &self,
        node: &NodeContext,
        broker: BrokerSpec,
        source: SourceSpec,
        client: Client,
    ) -> Result<BoxedSource, SourceError> {
        let opening = async {
            match &self.opener {
                Some(open) => open(broker, source, client).await,
                None => crate::sources::open(&node.store, &broker.connection, &source, &client).await,
            }
        };
        tokio::time::timeout(self.limit, opening).await.unwrap_or_else(|_| {
            Err(SourceError::Connect(format!(
                "the broker did not finish opening the source within {} s",
                self.limit.as_secs_f64()
            )))
        })
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Arc<LiveConfig>);

/// Finish the deliveries in flight, then leave.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopConsumer;

#[derive(Message)]
#[rtype(result = "ConsumerReport")]
pub struct Report;

/// What one node says about its part of a consumer.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerReport {
    pub state: RunState,
    /// Deliveries at the endpoint.
    pub in_flight: usize,
    /// Delivered messages whose outcomes are being recorded, not yet acknowledged.
    pub recording: usize,
    /// Messages waiting in key lanes.
    pub held: usize,
    pub fetched: u64,
    pub delivered: u64,
    pub handed_over: u64,
    pub dead: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    pub backlog: Vec<Backlog>,
    pub running_since: DateTime<Utc>,
}

/// How often a consumer reads its backlog from the broker.
const BACKLOG_EVERY: Duration = Duration::from_secs(10);

/// Longest wait for a source to open. A broker that takes the connection
/// but never finishes its handshake (RabbitMQ on a node too busy to answer
/// within its own `handshake_timeout` closes it, and the client may never
/// hear) would otherwise hold the consumer in `connecting` for good; past
/// this the open is a crash, and the supervisor starts it again.
pub const SOURCE_OPEN: Duration = Duration::from_secs(30);

pub struct ConsumerActor {
    id: String,
    /// The backlog last read from the broker (refreshed in the background).
    backlog: Arc<std::sync::Mutex<Vec<Backlog>>>,
    broker: BrokerSpec,
    node: Arc<NodeContext>,
    config: watch::Sender<Arc<LiveConfig>>,
    stop: watch::Sender<bool>,
    status: Arc<PumpStatus>,
    pipeline: Arc<Pipeline>,
    supervisor: Addr<ConsumerSupervisor>,
    generation: u64,
    started: Instant,
    started_at: DateTime<Utc>,
    opening: Opening,
}

impl ConsumerActor {
    pub fn new(
        config: Arc<LiveConfig>,
        broker: BrokerSpec,
        node: Arc<NodeContext>,
        pipeline_parts: (
            actix::Addr<crate::Supervisor>,
            crate::commands::Commands<bida_domain::consumer::Consumer>,
        ),
        supervisor: Addr<ConsumerSupervisor>,
        generation: u64,
    ) -> Self {
        let (stop, stopping) = watch::channel(false);
        let pipeline = Arc::new(Pipeline {
            node: node.clone(),
            tasks: pipeline_parts.0,
            consumers: pipeline_parts.1,
            stats: Default::default(),
            stopping,
            pull: Default::default(),
        });
        Self {
            backlog: Arc::default(),
            id: config.consumer_id.clone(),
            broker,
            node,
            config: watch::channel(config).0,
            stop,
            status: Arc::new(PumpStatus::default()),
            pipeline,
            supervisor,
            generation,
            started: Instant::now(),
            started_at: Utc::now(),
            opening: Opening::default(),
        }
    }

    /// Opens the source as `opening` says.
    pub(crate) fn with_opening(mut self, opening: Opening) -> Self {
        self.opening = opening;
        self
    }

    /// Connects the source named by the broker and the consumer's spec and runs the pump.
    async fn consume(
        node: Arc<NodeContext>,
        broker: BrokerSpec,
        config: watch::Receiver<Arc<LiveConfig>>,
        pump: impl FnOnce(BoxedSource) -> Pump<BoxedSource>,
        client_id: String,
        opening: Opening,
    ) -> Result<(), PumpError> {
        let live = config.borrow().clone();
        let client = Client {
            id: client_id,
            concurrency: live.spec.policy.concurrency,
            delivery_timeout: Duration::from_millis(live.spec.endpoint.delivery_timeout_ms()),
            topic_wakes: node.topic_wakes.clone(),
        };
        let source = opening.open(&node, broker, live.spec.source.clone(), client).await?;
        pump(source).run().await
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let client_id = format!("bida-{}-{}", self.node.name, self.id);
        let (pipeline, status, work) = (self.pipeline.clone(), self.status.clone(), self.node.work.clone());
        let (config, stop) = (self.config.subscribe(), self.stop.subscribe());
        let grace = Duration::from_millis(self.node.scheduler.shutdown_grace_ms);
        let config_for_pump = config.clone();
        let pump = move |source| Pump {
            source,
            pipeline,
            config: config_for_pump,
            stop,
            status,
            work,
            grace,
        };
        let work = Self::consume(
            self.node.clone(),
            self.broker.clone(),
            config,
            pump,
            client_id,
            self.opening.clone(),
        );
        let (backlog, status_for_backlog) = (self.backlog.clone(), self.status.clone());
        ctx.run_interval(BACKLOG_EVERY, move |actor, ctx| {
            let probe = status_for_backlog
                .probe
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(probe) = probe else { return };
            let backlog = backlog.clone();
            ctx.spawn(
                async move {
                    match tokio::time::timeout(BACKLOG_EVERY, probe.backlog()).await {
                        Ok(Ok(read)) => *backlog.lock().unwrap_or_else(|p| p.into_inner()) = read,
                        Ok(Err(e)) => tracing::debug!(error = %e, "backlog unavailable"),
                        Err(_) => tracing::debug!("backlog read timed out"),
                    }
                }
                .into_actor(actor),
            );
        });
        ctx.spawn(work.into_actor(self).map(|result, actor, ctx| {
            if let Err(e) = result {
                tracing::warn!(consumer = %actor.id, error = %e, "consumer crashed");
                actor.supervisor.do_send(Crashed {
                    consumer_id: actor.id.clone(),
                    generation: actor.generation,
                    error: e.to_string(),
                    ran_for: actor.started.elapsed(),
                });
            }
            ctx.stop();
        }));
    }
}

impl Handler<Reconfigure> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, Reconfigure(config): Reconfigure, _ctx: &mut Self::Context) {
        self.config.send_if_modified(|current| {
            let changed = **current != *config;
            *current = config;
            changed
        });
    }
}

impl Handler<StopConsumer> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, _: StopConsumer, _ctx: &mut Self::Context) {
        self.stop.send_replace(true);
    }
}

impl Handler<Report> for ConsumerActor {
    type Result = ResponseFuture<ConsumerReport>;

    fn handle(&mut self, _: Report, _ctx: &mut Self::Context) -> Self::Result {
        let status = self.status.clone();
        let stats = &self.pipeline.stats;
        let (fetched, delivered, handed_over, dead) = (
            stats.fetched.load(Ordering::Relaxed),
            stats.delivered.load(Ordering::Relaxed),
            stats.handed_over.load(Ordering::Relaxed),
            stats.dead.load(Ordering::Relaxed),
        );
        let running_since = self.started_at;
        let backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            let last_error = status.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            ConsumerReport {
                state: *status.state.lock().unwrap_or_else(|p| p.into_inner()),
                in_flight: status.in_flight.load(Ordering::Relaxed),
                recording: status.recording.load(Ordering::Relaxed),
                held: status.held.load(Ordering::Relaxed),
                fetched,
                delivered,
                handed_over,
                dead,
                last_error_at: last_error.as_ref().map(|(at, _)| *at),
                last_error: last_error.map(|(_, e)| e),
                backlog,
                running_since,
            }
        })
    }
}
