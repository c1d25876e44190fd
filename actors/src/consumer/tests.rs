//! The consumer runtime (pump, pipeline, lanes, breaker, supervisor) on the
//! in-memory broker of `sources::memory`, a real local HTTP endpoint and the
//! real embedded store. The end-to-end suite against real brokers stays the
//! conformance check; these are the fast, deterministic ones: every wait is
//! on a condition with a deadline, and figures are read from the broker's
//! log, the endpoint's record and the store, never from a clock (except the
//! rate limit's lower bound, which slowness cannot break).

use actix::prelude::*;
use bida_domain::broker::{Broker, BrokerCommand, BrokerSpec, Connection};
use bida_domain::consumer::{
    BreakerPolicy, Consumer, ConsumerCommand, ConsumerPolicy, ConsumerSpec, HttpEndpoint, Ordering, RabbitmqSource,
    Source as SourceSpec,
};
use bida_domain::kinds::rabbitmq::RabbitmqConnection;
use bida_domain::task::{Method, TaskStatus};
use bida_domain::{Backoff, Expect, StatusSet};
use bida_store::{Store, StoreConfig, StoreLocation};
use chrono::Utc;
use futures_util::FutureExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering as Atomic;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::pipeline::{LiveConfig, Pipeline};
use super::pump::{Pump, PumpError, PumpStatus, RunState, RECORDING_WINDOW};
use super::supervisor::{ConsumerSupervisor, DrainConsumers};
use crate::commands::Commands;
use crate::sources::memory::{Logged, MemoryBroker};
use crate::sources::{BoxedSource, Client, Source, SourceError};
use crate::{Delivery, DeliveryConfig, NodeContext, SchedulerConfig, Supervisor};

/// Long enough for anything these tests wait for on a loaded 2-core machine;
/// a test reaching it has failed.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `done` until it holds; panics with `what` at the deadline.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that `holds` stays true for a while. Only for absences (nothing
/// more is fetched, nothing more arrives): a broken runtime breaks them at
/// once, and a slow machine cannot make a correct one fail.
async fn stays(what: &str, holds: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        assert!(holds(), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// A real HTTP endpoint. The testkit's receiver cannot hold a request until the
// test lets it go, nor tell how many are at it at once, which the concurrency,
// lane and recording tests need; this one is a few lines of HTTP/1.1 over
// tokio (keep-alive, Content-Length bodies: what reqwest sends).

/// How the endpoint answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Now(u16),
    /// Only once the gate is open.
    Held(u16),
}

#[derive(Clone, Debug)]
struct Arrival {
    body: String,
    message_id: String,
    /// 1 for the first request with this message id, 2 for the next...
    nth: u32,
    at: Instant,
}

type Script = Arc<dyn Fn(&Arrival, usize) -> Answer + Send + Sync>;

#[derive(Default)]
struct Record {
    arrivals: Vec<Arrival>,
    per_message: HashMap<String, u32>,
    in_flight: usize,
    max_in_flight: usize,
    answered: usize,
}

struct EndpointShared {
    record: Mutex<Record>,
    changed: Notify,
    script: Script,
    gate: watch::Sender<bool>,
}

struct TestEndpoint {
    url: String,
    shared: Arc<EndpointShared>,
    server: tokio::task::JoinHandle<()>,
}

impl TestEndpoint {
    /// `script` decides each answer from the request and how many requests
    /// came before it in all.
    async fn start(script: impl Fn(&Arrival, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind endpoint");
        let url = format!("http://{}/hook", listener.local_addr().expect("endpoint address"));
        let shared = Arc::new(EndpointShared {
            record: Mutex::default(),
            changed: Notify::new(),
            script: Arc::new(script),
            gate: watch::channel(false).0,
        });
        let accepting = shared.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(accepting.clone(), stream));
            }
        });
        Self { url, shared, server }
    }

    async fn ok() -> Self {
        Self::start(|_, _| Answer::Now(200)).await
    }

    fn record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.shared.record.lock().unwrap())
    }

    fn bodies(&self) -> Vec<String> {
        self.record(|r| r.arrivals.iter().map(|a| a.body.clone()).collect())
    }

    fn received(&self, body: &str) -> usize {
        self.record(|r| r.arrivals.iter().filter(|a| a.body == body).count())
    }

    fn in_flight(&self) -> usize {
        self.record(|r| r.in_flight)
    }

    /// Lets every held request (and every later one) be answered.
    fn open_gate(&self) {
        self.shared.gate.send_replace(true);
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&Record) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.record(&done) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                assert!(self.record(&done), "timed out waiting for {what}");
                return;
            }
        }
    }
}

impl Drop for TestEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(shared: Arc<EndpointShared>, stream: TcpStream) {
    let mut stream = BufReader::new(stream);
    loop {
        let (mut length, mut message_id) = (0usize, String::new());
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "webhook-id" => message_id = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = {
            let mut record = shared.record.lock().unwrap();
            let nth = record.per_message.entry(message_id.clone()).or_insert(0);
            *nth += 1;
            let arrival = Arrival {
                body: String::from_utf8_lossy(&body).into_owned(),
                message_id,
                nth: *nth,
                at: Instant::now(),
            };
            let answer = (shared.script)(&arrival, record.arrivals.len());
            record.arrivals.push(arrival);
            record.in_flight += 1;
            record.max_in_flight = record.max_in_flight.max(record.in_flight);
            answer
        };
        shared.changed.notify_waiters();
        let status = match answer {
            Answer::Now(status) => status,
            Answer::Held(status) => {
                let _ = shared.gate.subscribe().wait_for(|open| *open).await;
                status
            }
        };
        // Counted out before the client can have the answer, so that its
        // next request never overlaps this one in the count.
        {
            let mut record = shared.record.lock().unwrap();
            record.in_flight -= 1;
            record.answered += 1;
        }
        shared.changed.notify_waiters();
        let response = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// A node's worth of context, as `Node::start` builds it, on a fresh embedded
// store.

struct TestNode {
    context: Arc<NodeContext>,
    tasks: Addr<Supervisor>,
    consumers: Commands<Consumer>,
    work: Option<tokio::runtime::Runtime>,
    dir: PathBuf,
}

impl TestNode {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("bida-consumer-tests-{}", Uuid::new_v4()));
        let store = Store::open_at(&StoreLocation::Embedded(dir.clone()), &StoreConfig::default())
            .await
            .expect("open the embedded store");
        let node_id = Uuid::new_v4();
        store
            .register_node(node_id, "test-node", "test", "127.0.0.1:0")
            .await
            .expect("register the node");
        let work = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bida-test-work")
            .enable_all()
            .build()
            .expect("work runtime");
        let delivery = Delivery::new(
            DeliveryConfig {
                // The endpoint is on loopback, which deliveries may not reach by default.
                allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
                ..DeliveryConfig::default()
            },
            None,
            Default::default(),
        )
        .expect("delivery client");
        let context = Arc::new(NodeContext {
            node_id,
            name: "test-node".into(),
            listen: "127.0.0.1:0".into(),
            store: store.clone(),
            delivery,
            producers: Arc::new(crate::produce::Producers::new(crate::brokers::BrokerService::new(
                store.clone(),
                None,
            ))),
            pulls: Default::default(),
            topic_wakes: Default::default(),
            work: work.handle().clone(),
            limits: crate::limits::DeliveryLimits::new(node_id, Duration::from_millis(300)),
            scheduler: SchedulerConfig {
                // No retry stays in memory: a failed first attempt becomes a
                // task in the store and nothing else, so what the endpoint
                // sees is the pump's doing alone.
                hold_max_ms: 0,
                lookahead_ms: 0,
                shutdown_grace_ms: 5_000,
                ..SchedulerConfig::default()
            },
            in_memory: Default::default(),
            in_memory_bytes: Default::default(),
            max_in_memory: 1_000,
            max_in_memory_bytes: 1 << 20,
            sealer: None,
        });
        let tasks = Supervisor::new(context.clone(), 1).start();
        let consumers = Commands::new(&store);
        Self {
            context,
            tasks,
            consumers,
            work: Some(work),
            dir,
        }
    }

    fn store(&self) -> &Store {
        &self.context.store
    }

    /// Creates the consumer in the store (parking a lane and recording a
    /// crash are commands on it) and returns its live configuration.
    async fn consumer(&self, id: &str, spec: ConsumerSpec) -> LiveConfig {
        self.consumers
            .execute(
                id,
                ConsumerCommand::Create {
                    spec: spec.clone(),
                    at: Utc::now(),
                },
            )
            .await
            .expect("create the consumer");
        self.live(id).await
    }

    /// The consumer's live configuration as the supervisor would build it from the store.
    async fn live(&self, id: &str) -> LiveConfig {
        let (consumer, version) = self
            .store()
            .load_aggregate::<Consumer>(id)
            .await
            .expect("load the consumer")
            .expect("the consumer exists");
        // As the supervisor does on every load: the consumer's gate follows.
        self.context.limits.consumer_changed(id, version, &consumer);
        LiveConfig {
            consumer_id: id.to_string(),
            spec: consumer.spec().cloned().expect("a spec"),
            paused: consumer.state() == bida_domain::consumer::DesiredState::Paused,
            parked: consumer.parked_lanes().keys().cloned().collect(),
            version,
            epoch: consumer.resets(),
            naming: consumer.naming(),
        }
    }

    async fn load_consumer(&self, id: &str) -> Consumer {
        self.store()
            .load_aggregate::<Consumer>(id)
            .await
            .expect("load the consumer")
            .expect("the consumer exists")
            .0
    }

    async fn task_status(&self, consumer_id: &str, message_id: &str) -> Option<(TaskStatus, u32)> {
        task_status(self.store(), consumer_id, message_id).await
    }

    /// A pump on `source`, run as the consumer actor runs it.
    fn pump(&self, source: impl Source, live: LiveConfig) -> RunningPump {
        let (config, config_rx) = watch::channel(Arc::new(live));
        let (stop, stop_rx) = watch::channel(false);
        let pipeline = Arc::new(Pipeline {
            node: self.context.clone(),
            tasks: self.tasks.clone(),
            consumers: self.consumers.clone(),
            stats: Default::default(),
            stopping: stop_rx.clone(),
            pull: Default::default(),
        });
        let status = Arc::new(PumpStatus::default());
        let pump = Pump {
            source: BoxedSource::new(source),
            pipeline: pipeline.clone(),
            config: config_rx,
            stop: stop_rx,
            status: status.clone(),
            work: self.context.work.clone(),
            grace: Duration::from_secs(5),
        };
        RunningPump {
            config,
            stop,
            status,
            pipeline,
            done: actix_rt::spawn(pump.run()),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Dropping a runtime inside async code panics.
        if let Some(work) = self.work.take() {
            work.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn task_status(store: &Store, consumer_id: &str, message_id: &str) -> Option<(TaskStatus, u32)> {
    let (consumer, _) = store
        .load_aggregate::<Consumer>(consumer_id)
        .await
        .expect("load the consumer")
        .expect("the consumer exists");
    let id = consumer.task_id(consumer_id, 0, message_id);
    let loaded = store.load_task(&id).await.expect("load a task")?;
    Some((loaded.task.status(), loaded.task.attempts()))
}

struct RunningPump {
    config: watch::Sender<Arc<LiveConfig>>,
    stop: watch::Sender<bool>,
    status: Arc<PumpStatus>,
    pipeline: Arc<Pipeline>,
    done: tokio::task::JoinHandle<Result<(), PumpError>>,
}

impl RunningPump {
    fn reconfigure(&self, change: impl FnOnce(&mut LiveConfig)) {
        let mut live = (**self.config.borrow()).clone();
        change(&mut live);
        // As the supervisor does: the consumer's gate follows the change.
        self.pipeline
            .node
            .limits
            .set_consumer(&live.consumer_id, live.version, &live.spec);
        self.config.send_replace(Arc::new(live));
    }

    fn state(&self) -> RunState {
        *self.status.state.lock().unwrap()
    }

    fn in_flight(&self) -> usize {
        self.status.in_flight.load(Atomic::Relaxed)
    }

    fn recording(&self) -> usize {
        self.status.recording.load(Atomic::Relaxed)
    }

    fn held(&self) -> usize {
        self.status.held.load(Atomic::Relaxed)
    }

    async fn stop(self) -> Result<(), PumpError> {
        self.stop.send_replace(true);
        self.done.await.expect("the pump ran to its end")
    }
}

fn policy(concurrency: u32) -> ConsumerPolicy {
    ConsumerPolicy {
        concurrency,
        rate_per_sec: 0,
        max_attempts: 3,
        backoff: Backoff {
            initial_ms: 20,
            max_ms: 20,
            multiplier: 1.0,
            jitter: 0.0,
        },
        retry_on: StatusSet::default_retry_on(),
        expect: Expect::default(),
        ordering: Ordering::None,
        breaker: BreakerPolicy {
            failures: 0,
            open_ms: 1_000,
        },
    }
}

const BROKER_ID: &str = "memory";

fn spec(url: &str, policy: ConsumerPolicy) -> ConsumerSpec {
    ConsumerSpec {
        name: "memory consumer".into(),
        broker_id: BROKER_ID.into(),
        // Any kind will do: the source is opened on the in-memory broker.
        source: SourceSpec::Rabbitmq(RabbitmqSource {
            queue: "orders".into(),
            declare: false,
            exchange: None,
            routing_key: None,
        }),
        endpoint: bida_domain::consumer::Endpoint::Http(HttpEndpoint {
            url: url.to_string(),
            method: Method::Post,
            headers: BTreeMap::new(),
            // Longer than any test: a held request must not turn into a
            // timeout and a retry behind the test's back.
            timeout_ms: 60_000,
            grpc: None,
        }),
        policy,
        app_id: None,
    }
}

/// Publishes `bodies` without keys; their ids, in order.
fn publish_all(broker: &MemoryBroker, bodies: impl IntoIterator<Item = String>) -> Vec<String> {
    bodies
        .into_iter()
        .map(|body| broker.publish(None, body, None))
        .collect()
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n}")).collect()
}

fn set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

async fn all_acked(broker: &MemoryBroker, ids: &[String]) {
    let wanted = set(ids);
    let ok = broker
        .wait_until(DEADLINE, |b| set(&b.acked()).is_superset(&wanted))
        .await;
    assert!(ok, "not every message was acknowledged: {:?}", broker.log());
}

fn assert_acked_once(broker: &MemoryBroker, ids: &[String]) {
    let acked = broker.acked();
    assert_eq!(acked.len(), set(&acked).len(), "a message was acknowledged twice");
    assert_eq!(set(&acked), set(ids));
}

// ---------------------------------------------------------------------------

/// Every message reaches the endpoint once and is acknowledged once, and
/// each acknowledgement finds the message's outcome already in the store:
/// the broker may forget nothing that is not durably recorded.
#[actix_rt::test]
async fn every_message_is_delivered_and_acknowledged_only_once_recorded() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    let live = node.consumer("c-deliver", spec(&endpoint.url, policy(4))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 40));
    let seen_at_ack = Arc::new(Mutex::new(Vec::new()));
    let (store, seen) = (node.store().clone(), seen_at_ack.clone());
    broker.set_ack_hook(Arc::new(move |message| {
        let (store, seen) = (store.clone(), seen.clone());
        async move {
            let recorded = task_status(&store, "c-deliver", &message.message_id).await;
            seen.lock().unwrap().push((message.message_id, recorded));
        }
        .boxed()
    }));
    let pump = node.pump(broker.open(), live);

    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    for (id, recorded) in seen_at_ack.lock().unwrap().iter() {
        assert!(
            matches!(recorded, Some((TaskStatus::Delivered, 1))),
            "{id} was acknowledged before its delivery was recorded: {recorded:?}"
        );
    }
    let mut bodies = endpoint.bodies();
    bodies.sort();
    let mut expected = numbered("m", 40);
    expected.sort();
    assert_eq!(bodies, expected, "each message exactly once at the endpoint");
    assert!(
        endpoint.record(|r| r.arrivals.iter().all(|a| ids.contains(&a.message_id) && a.nth == 1)),
        "every delivery carries its message's id"
    );
    let probe = pump.status.probe.lock().unwrap().clone().expect("a backlog probe");
    let backlog = probe.backlog().await.expect("backlog");
    assert!(backlog.iter().all(|b| b.lag == 0), "backlog left: {backlog:?}");
    // Counted after the acknowledgement: read once the pump has finished.
    let pipeline = pump.pipeline.clone();
    pump.stop().await.expect("a clean stop");
    assert_eq!(pipeline.stats.delivered.load(Atomic::Relaxed), 40);
    assert!(broker.log().contains(&Logged::Closed {
        session: 1,
        returned: 0
    }));
}

/// Never more deliveries at the endpoint than the concurrency, which a live
/// change raises without a restart.
#[actix_rt::test]
async fn deliveries_at_the_endpoint_never_exceed_the_concurrency() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|_, _| Answer::Held(200)).await;
    let live = node.consumer("c-concurrency", spec(&endpoint.url, policy(3))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 20));
    let pump = node.pump(broker.open(), live);

    endpoint.wait_until("3 deliveries held", |r| r.in_flight == 3).await;
    stays("no fourth delivery while 3 are at the endpoint", || {
        endpoint.in_flight() == 3 && broker.handed() == 3
    })
    .await;
    assert_eq!(pump.in_flight(), 3);

    pump.reconfigure(|live| live.spec.policy.concurrency = 5);
    endpoint.wait_until("5 deliveries held", |r| r.in_flight == 5).await;
    stays("no sixth delivery", || {
        endpoint.in_flight() == 5 && broker.handed() == 5
    })
    .await;

    endpoint.open_gate();
    all_acked(&broker, &ids).await;
    assert_eq!(endpoint.record(|r| r.max_in_flight), 5);
    assert_acked_once(&broker, &ids);
    pump.stop().await.expect("a clean stop");
}

/// The rate limit spaces fetches: 30 messages at 20 a second (a burst of 20,
/// then one every 50 ms) cannot all arrive in less than half a second. A lower
/// bound, which no slowness can break.
#[actix_rt::test]
async fn the_rate_limit_spaces_deliveries() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    let mut policy = policy(8);
    policy.rate_per_sec = 20;
    let live = node.consumer("c-rate", spec(&endpoint.url, policy)).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 30));
    let started = Instant::now();
    let pump = node.pump(broker.open(), live);

    all_acked(&broker, &ids).await;
    let last = endpoint
        .record(|r| r.arrivals.iter().map(|a| a.at).max())
        .expect("arrivals");
    assert!(
        last - started >= Duration::from_millis(450),
        "30 messages at 20/s arrived within {:?}",
        last - started
    );
    assert_acked_once(&broker, &ids);
    pump.stop().await.expect("a clean stop");
}

/// Ordering by key: a message whose endpoint call hangs or fails holds back
/// only its own key; other keys go on. After its attempts (retried in place)
/// it is recorded dead and its lane parked, in the store; the key's later
/// messages wait unacknowledged until the lane is released, then go in order.
#[actix_rt::test]
async fn a_failing_key_holds_back_only_its_lane_which_parks_then_resumes_in_order() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|arrival, _| match (arrival.body.as_str(), arrival.nth) {
        ("a1", 1) => Answer::Held(500),
        ("a1", _) => Answer::Now(500),
        _ => Answer::Now(200),
    })
    .await;
    let mut policy = policy(4);
    policy.ordering = Ordering::Key;
    let live = node.consumer("c-lanes", spec(&endpoint.url, policy)).await;
    let broker = MemoryBroker::new("orders");
    let mut ids: HashMap<String, String> = HashMap::new();
    for n in 0..4 {
        for key in ["a", "b", "c"] {
            let body = format!("{key}{n}");
            ids.insert(body.clone(), broker.publish(Some(key), body, None));
        }
    }
    let pump = node.pump(broker.open(), live);

    // a1 is still at the endpoint: everything of b and c gets through.
    endpoint
        .wait_until("b and c delivered past the hanging a1", |r| {
            ["b3", "c3"].iter().all(|b| r.arrivals.iter().any(|a| a.body == *b))
        })
        .await;
    assert_eq!(
        endpoint.received("a2") + endpoint.received("a3"),
        0,
        "a's lane moved on"
    );
    for key in ["b", "c"] {
        let order: Vec<String> = endpoint.bodies().into_iter().filter(|b| b.starts_with(key)).collect();
        assert_eq!(order, numbered(key, 4), "key {key} out of order");
    }

    endpoint.open_gate();
    // Dead and parked: a1 acknowledged, a2 and a3 held in the lane.
    let a1 = ids["a1"].clone();
    assert!(broker.wait_until(DEADLINE, |b| b.acked().contains(&a1)).await);
    until("the pump idle with a2 and a3 held", || {
        pump.held() == 2 && pump.in_flight() == 0 && pump.recording() == 0
    })
    .await;
    assert_eq!(endpoint.received("a1"), 3, "a1 tried max_attempts times");
    assert_eq!(node.task_status("c-lanes", &a1).await, Some((TaskStatus::Dead, 3)));
    let parked = node.load_consumer("c-lanes").await.parked_lanes().clone();
    assert_eq!(
        parked.get("a"),
        Some(&node.load_consumer("c-lanes").await.task_id("c-lanes", 0, &a1)),
        "the park is recorded with its dead task"
    );
    assert_eq!(endpoint.received("a2") + endpoint.received("a3"), 0);
    assert!(!broker.acked().contains(&ids["a2"]));

    // Until the configuration shows the park, the pump keeps the lane parked
    // on its own word; a configuration that releases it lets it go.
    node.consumers
        .execute(
            "c-lanes",
            ConsumerCommand::ReleaseLane {
                key: "a".into(),
                at: Utc::now(),
            },
        )
        .await
        .expect("release the lane");
    let released = node.live("c-lanes").await;
    pump.reconfigure(|live| *live = released);
    let all: Vec<String> = ids.values().cloned().collect();
    all_acked(&broker, &all).await;
    let order: Vec<String> = endpoint.bodies().into_iter().filter(|b| b.starts_with('a')).collect();
    assert_eq!(order, ["a0", "a1", "a1", "a1", "a2", "a3"]);
    assert_acked_once(&broker, &all);
    pump.stop().await.expect("a clean stop");
}

/// The breaker opens after N consecutive failures and pauses the source (the
/// backlog stays in the broker), lets one probe through after the pause,
/// reopens on its failure, and closes on a probe's success.
#[actix_rt::test]
async fn the_breaker_opens_keeps_the_backlog_in_the_broker_probes_and_closes() {
    let node = TestNode::start().await;
    // The first three deliveries and the first probe fail.
    let endpoint = TestEndpoint::start(|_, before| Answer::Now(if before < 4 { 500 } else { 200 })).await;
    let mut policy = policy(1);
    policy.breaker = BreakerPolicy {
        failures: 3,
        open_ms: 200,
    };
    let live = node.consumer("c-breaker", spec(&endpoint.url, policy)).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 12));
    let pump = node.pump(broker.open(), live);

    all_acked(&broker, &ids).await;
    // The broker's log, reduced to hand-outs (by body number) and pauses.
    let steps: Vec<String> = broker
        .log()
        .into_iter()
        .filter_map(|logged| match logged {
            Logged::Handed { message_id, .. } => {
                Some(format!("m{}", ids.iter().position(|id| *id == message_id).unwrap()))
            }
            Logged::Paused { paused, ready, .. } => Some(format!("paused={paused} ready={ready}")),
            _ => None,
        })
        .collect();
    let expected = [
        "m0",
        "m1",
        "m2",
        "paused=true ready=9",
        "paused=false ready=9",
        "m3", // the probe, which fails
        "paused=true ready=8",
        "paused=false ready=8",
        "m4", // the probe, which succeeds
        "m5",
        "m6",
        "m7",
        "m8",
        "m9",
        "m10",
        "m11",
    ];
    assert_eq!(steps, expected);
    // The failed ones were handed to retrying tasks before their acknowledgement.
    for id in &ids[..4] {
        assert_eq!(node.task_status("c-breaker", id).await, Some((TaskStatus::Retrying, 1)));
    }
    assert_eq!(pump.state(), RunState::Running);
    // Counted after the acknowledgement: read once the pump has finished.
    let pipeline = pump.pipeline.clone();
    pump.stop().await.expect("a clean stop");
    assert_eq!(pipeline.stats.handed_over.load(Atomic::Relaxed), 4);
    assert_eq!(pipeline.stats.delivered.load(Atomic::Relaxed), 8);
}

/// Pausing and resuming through the live configuration pause and resume the
/// source itself, so that the backlog waits in the broker.
#[actix_rt::test]
async fn pause_and_resume_follow_the_live_configuration() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    let mut live = node.consumer("c-pause", spec(&endpoint.url, policy(2))).await;
    live.paused = true;
    let broker = MemoryBroker::new("orders");
    let first = publish_all(&broker, numbered("m", 5));
    let pump = node.pump(broker.open(), live);

    // Started paused: the source is paused before anything is fetched.
    until("the pump paused", || pump.state() == RunState::Paused).await;
    assert!(broker.paused());
    assert_eq!(broker.handed(), 0);

    pump.reconfigure(|live| live.paused = false);
    all_acked(&broker, &first).await;

    pump.reconfigure(|live| live.paused = true);
    until("the pump paused again", || {
        pump.state() == RunState::Paused && broker.paused()
    })
    .await;
    let second = publish_all(&broker, numbered("n", 5));
    let probe = pump.status.probe.lock().unwrap().clone().expect("a backlog probe");
    assert_eq!(
        probe.backlog().await.expect("backlog")[0].lag,
        5,
        "the backlog waits in the broker"
    );
    assert_eq!(endpoint.record(|r| r.arrivals.len()), 5);

    pump.reconfigure(|live| live.paused = false);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    all_acked(&broker, &all).await;
    assert!(!broker.paused());
    assert_acked_once(&broker, &all);
    pump.stop().await.expect("a clean stop");
}

/// Delivered messages whose outcomes are being recorded (here: whose
/// acknowledgements hang) are bounded by the recording window: the pump
/// stops fetching when it is full, and goes on once acknowledgements pass.
#[actix_rt::test]
async fn the_recording_window_bounds_the_unacknowledged_deliveries() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    let live = node.consumer("c-window", spec(&endpoint.url, policy(1))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", RECORDING_WINDOW + 50));
    let (release, released) = watch::channel(false);
    broker.set_ack_hook(Arc::new(move |_| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|go| *go).await;
        }
        .boxed()
    }));
    let pump = node.pump(broker.open(), live);

    until("the recording window full", || {
        pump.recording() == RECORDING_WINDOW && pump.in_flight() == 0
    })
    .await;
    stays("nothing fetched past the window", || {
        broker.handed() == RECORDING_WINDOW && endpoint.record(|r| r.arrivals.len()) == RECORDING_WINDOW
    })
    .await;
    // The broker would hand out more: the bound is the pump's.
    assert!(broker.log().contains(&Logged::Prefetch {
        session: 1,
        messages: RECORDING_WINDOW as u32 + 1
    }));

    release.send_replace(true);
    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    pump.stop().await.expect("a clean stop");
}

/// A lost connection ends the pump with the error and closes the source,
/// which gives its unacknowledged messages back; the next pump on the broker
/// delivers them, and every message is acknowledged exactly once.
#[actix_rt::test]
async fn a_lost_source_ends_the_pump_and_the_next_one_loses_nothing() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    let live = node.consumer("c-lost", spec(&endpoint.url, policy(4))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 30));
    broker.fail_after(10, "connection reset by peer");

    let first = node.pump(broker.open(), live.clone());
    let ended = first.done.await.expect("the pump ran to its end");
    assert!(
        matches!(ended, Err(PumpError::Source(SourceError::Lost(_)))),
        "{ended:?}"
    );
    assert!(broker
        .log()
        .iter()
        .any(|l| matches!(l, Logged::Closed { session: 1, .. })));

    let second = node.pump(broker.open(), live);
    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    for (n, id) in ids.iter().enumerate() {
        assert!(endpoint.received(&format!("m{n}")) >= 1, "m{n} never delivered");
        assert_eq!(node.task_status("c-lost", id).await, Some((TaskStatus::Delivered, 1)));
    }
    second.stop().await.expect("a clean stop");
}

/// A source lost while deliveries wait at the endpoint: the pump ends only
/// once they are done and recorded (acknowledged before the source closes),
/// so none outlives its pump to be sent again by the next one.
#[actix_rt::test]
async fn a_lost_source_ends_the_pump_once_its_deliveries_in_flight_are_done() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|_, _| Answer::Held(200)).await;
    let live = node.consumer("c-lost-held", spec(&endpoint.url, policy(2))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 5));
    broker.fail_after(2, "connection reset by peer");

    let first = node.pump(broker.open(), live.clone());
    endpoint.wait_until("2 deliveries held", |r| r.in_flight == 2).await;
    stays("the pump waiting for its deliveries", || !first.done.is_finished()).await;
    endpoint.open_gate();
    let ended = first.done.await.expect("the pump ran to its end");
    assert!(
        matches!(ended, Err(PumpError::Source(SourceError::Lost(_)))),
        "{ended:?}"
    );
    assert_eq!(set(&broker.acked()), set(&ids[..2]), "both recorded and acknowledged");

    let second = node.pump(broker.open(), live);
    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    assert_eq!(endpoint.record(|r| r.arrivals.len()), 5, "none sent twice");
    second.stop().await.expect("a clean stop");
}

/// Ordering by key across a partition revocation: messages held in lanes
/// from the lost partition are let go (their new owner reads them again),
/// and the key is still delivered in order, each message at least once.
#[actix_rt::test]
async fn messages_held_from_a_revoked_partition_are_let_go_and_order_holds() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|arrival, _| match (arrival.body.as_str(), arrival.nth) {
        ("k0", 1) => Answer::Held(200),
        _ => Answer::Now(200),
    })
    .await;
    let mut policy = policy(2);
    policy.ordering = Ordering::Key;
    let live = node.consumer("c-revoke", spec(&endpoint.url, policy)).await;
    let broker = MemoryBroker::new("orders");
    let ids: Vec<String> = (0..4)
        .map(|n| broker.publish(Some("k"), format!("k{n}"), Some(0)))
        .collect();
    let pump = node.pump(broker.open(), live);

    endpoint.wait_until("k0 at the endpoint", |r| r.in_flight == 1).await;
    until("k1..k3 held behind k0", || pump.held() == 3).await;
    broker.revoke(0);
    // The partition comes straight back: k0..k3 are read again, and only
    // what the pump still holds from before the revocation is let go.
    // Whether the pump learns of the revocation before or after it reads k0
    // again, it holds k1..k3 (and perhaps k0) once: never the 7 it would
    // hold if it kept what it had read before.
    until("the lane refilled from the new assignment", || {
        broker.handed() >= 8 && matches!(pump.held(), 3 | 4)
    })
    .await;
    assert_eq!(endpoint.bodies(), ["k0"], "k0 is still at the endpoint");
    endpoint.open_gate();
    all_acked(&broker, &ids).await;
    until("everything read again delivered or let go", || {
        broker.unacked() == 0 && pump.held() == 0 && pump.in_flight() == 0 && pump.recording() == 0
    })
    .await;
    let arrivals = endpoint.bodies();
    let mut numbers: Vec<usize> = arrivals.iter().map(|b| b[1..].parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] <= w[1]),
        "key k out of order: {arrivals:?}"
    );
    numbers.dedup();
    assert_eq!(numbers, [0, 1, 2, 3]);
    pump.stop().await.expect("a clean stop");
}

/// A partition handed straight back while its lane is parked: the messages
/// waiting in the parked lane are read again, and after the lane's release
/// every one of them is delivered, in order. (The first message read again,
/// k1, arrives in the same turn as the revocation: it once was let go with the
/// old ones and never delivered, stalling Kafka's commits at k1.)
#[actix_rt::test]
async fn a_partition_handed_back_while_its_lane_is_parked_loses_nothing() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|arrival, _| Answer::Now(if arrival.body == "k0" { 500 } else { 200 })).await;
    let mut policy = policy(2);
    policy.ordering = Ordering::Key;
    policy.max_attempts = 1;
    let live = node.consumer("c-revoke-parked", spec(&endpoint.url, policy)).await;
    let broker = MemoryBroker::new("orders");
    let ids: Vec<String> = (0..3)
        .map(|n| broker.publish(Some("k"), format!("k{n}"), Some(0)))
        .collect();
    let pump = node.pump(broker.open(), live);

    // k0 dead, its lane parked, k1 and k2 waiting in it unacknowledged.
    assert!(broker.wait_until(DEADLINE, |b| b.acked().contains(&ids[0])).await);
    until("k1 and k2 held in the parked lane", || {
        pump.held() == 2 && pump.in_flight() == 0 && pump.recording() == 0
    })
    .await;
    broker.revoke(0);
    until("k1 and k2 read again", || broker.handed() == 5).await;
    node.consumers
        .execute(
            "c-revoke-parked",
            ConsumerCommand::ReleaseLane {
                key: "k".into(),
                at: Utc::now(),
            },
        )
        .await
        .expect("release the lane");
    let released = node.live("c-revoke-parked").await;
    pump.reconfigure(|live| *live = released);

    all_acked(&broker, &ids).await;
    let order: Vec<String> = endpoint.bodies();
    assert_eq!(order, ["k0", "k1", "k2"]);
    pump.stop().await.expect("a clean stop");
}

/// Stopping finishes the deliveries at the endpoint, acknowledges them once
/// recorded, and gives what was not delivered back to the broker.
#[actix_rt::test]
async fn a_stop_finishes_deliveries_in_flight_and_gives_the_rest_back() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::start(|_, _| Answer::Held(200)).await;
    let live = node.consumer("c-stop", spec(&endpoint.url, policy(2))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 10));
    let pump = node.pump(broker.open(), live);

    endpoint.wait_until("2 deliveries held", |r| r.in_flight == 2).await;
    pump.stop.send_replace(true);
    until("the pump stopping", || pump.state() == RunState::Stopping).await;
    endpoint.open_gate();
    pump.stop().await.expect("a clean stop");

    assert_eq!(
        set(&broker.acked()),
        set(&ids[..2]),
        "the two at the endpoint, acknowledged"
    );
    assert_eq!(broker.unacked(), 0);
    assert_eq!(broker.ready(), 8, "the rest waits in the broker");
    assert_eq!(endpoint.record(|r| r.arrivals.len()), 2);
}

/// Registers `BROKER_ID` with an address nobody dials: the tests' openers
/// stand in for the registry.
async fn register_unreachable_broker(node: &TestNode) {
    let brokers: Commands<Broker> = Commands::new(node.store());
    brokers
        .execute(
            BROKER_ID,
            BrokerCommand::Register {
                spec: BrokerSpec {
                    name: "in memory".into(),
                    connection: Connection::Rabbitmq(RabbitmqConnection {
                        url: "amqp://127.0.0.1:1/%2f".into(),
                        management_url: None,
                    }),
                },
                at: Utc::now(),
            },
        )
        .await
        .expect("register the broker");
}

/// The supervisor path: a consumer registered in the store runs on the
/// in-memory broker; its source is lost midway; the supervisor records the
/// crash and starts it again after the backoff; every message is delivered
/// at least once and acknowledged exactly once.
#[actix_rt::test]
async fn the_supervisor_restarts_a_crashed_consumer_and_nothing_is_lost() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    register_unreachable_broker(&node).await;
    node.consumer("c-supervised", spec(&endpoint.url, policy(4))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 40));
    broker.fail_after(15, "connection reset by peer");
    let opening = broker.clone();
    let supervisor = ConsumerSupervisor::new(node.context.clone(), node.tasks.clone(), node.consumers.clone(), 1)
        .with_opener(Arc::new(move |_: BrokerSpec, _: SourceSpec, _: Client| {
            let source = BoxedSource::new(opening.open());
            async move { Ok::<_, SourceError>(source) }.boxed()
        }))
        .start();

    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    let log = broker.log();
    assert!(log.contains(&Logged::Failed { session: 1 }));
    assert!(log.iter().any(|l| matches!(l, Logged::Closed { session: 1, .. })));
    assert!(
        log.contains(&Logged::Opened { session: 2 }),
        "restarted on a new source"
    );
    for n in 0..ids.len() {
        assert!(endpoint.received(&format!("m{n}")) >= 1, "m{n} never delivered");
    }
    // The crash is recorded after the restart is scheduled, not before.
    let deadline = Instant::now() + DEADLINE;
    let crashes = loop {
        let crashes = node.load_consumer("c-supervised").await.crashes();
        if crashes > 0 || Instant::now() >= deadline {
            break crashes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(crashes, 1, "the crash is recorded once");

    supervisor.send(DrainConsumers).await.expect("drain");
    assert_eq!(broker.open_sessions(), 0, "the source is closed on drain");
}

/// A broker that takes the connection but never finishes opening the source
/// (a RabbitMQ node too busy to complete the handshake) must not hold the
/// consumer for good: past the open limit the attempt is dropped, the crash
/// is recorded and the supervisor opens the source again.
#[actix_rt::test]
async fn a_source_that_never_opens_is_given_up_and_opened_again() {
    let node = TestNode::start().await;
    let endpoint = TestEndpoint::ok().await;
    register_unreachable_broker(&node).await;
    node.consumer("c-stuck-open", spec(&endpoint.url, policy(4))).await;
    let broker = MemoryBroker::new("orders");
    let ids = publish_all(&broker, numbered("m", 10));
    let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (opening, opens_seen, abandoned_seen) = (broker.clone(), opens.clone(), abandoned.clone());
    let supervisor = ConsumerSupervisor::new(node.context.clone(), node.tasks.clone(), node.consumers.clone(), 1)
        .with_opener(Arc::new(move |_: BrokerSpec, _: SourceSpec, _: Client| {
            if opens_seen.fetch_add(1, Atomic::SeqCst) == 0 {
                // Set when the hanging open is dropped, as a timeout drops it.
                let dropped = SetOnDrop(abandoned_seen.clone());
                return async move {
                    let _dropped = dropped;
                    std::future::pending::<Result<BoxedSource, SourceError>>().await
                }
                .boxed();
            }
            let source = BoxedSource::new(opening.open());
            async move { Ok::<_, SourceError>(source) }.boxed()
        }))
        .with_open_limit(Duration::from_millis(300))
        .start();

    all_acked(&broker, &ids).await;
    assert_acked_once(&broker, &ids);
    assert!(
        abandoned.load(Atomic::SeqCst),
        "the open that never finished was given up"
    );
    assert_eq!(
        opens.load(Atomic::SeqCst),
        2,
        "opened again once, after the first gave up"
    );
    let deadline = Instant::now() + DEADLINE;
    while node.load_consumer("c-stuck-open").await.crashes() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node.load_consumer("c-stuck-open").await.crashes(),
        1,
        "the open that timed out is recorded as a crash"
    );
    supervisor.send(DrainConsumers).await.expect("drain");
}

struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Atomic::SeqCst);
    }
}
