//! Randomized, repeated runs of Bida's first promise: every message produced
//! to a broker reaches the endpoint. Fixed scenarios missed a loss that a
//! plain random one found (a Kafka fetch that resumed inside a producer's
//! batch, offsets committed past the rest of it), so each run here draws its
//! scenario from a seed: the broker's partitions, keys, the endpoint's
//! failure rate, concurrency, a breaker that opens and closes, ordering by
//! key, operator pauses, a node stopped mid-stream (SIGKILL, or SIGTERM and
//! its graceful drain) and started again, and a
//! producer that batches while the consumer runs. The endpoint's side counts
//! what arrived: lost must be 0.
//!
//! The normal suite runs two seeds per broker. Many more, as a command:
//!
//! ```sh
//! BIDA_TEST_STRESS_RUNS=50 cargo test --release --test stress -- --ignored --nocapture
//! ```
//!
//! `BIDA_TEST_STRESS_BROKER=kafka` (or `rabbitmq`, `nats`, `redis`, `mqtt`,
//! `activemq`) runs one broker only;
//! `BIDA_TEST_STRESS_SEED=N` replays one scenario. Each run prints one line:
//! `stress seed=... broker=... (scenario) -> produced, delivered, lost, duplicates, anomalies, seconds`.

mod support;

use bida_testkit::activemq::TestQueue as ActivemqQueue;
use bida_testkit::kafka::KafkaBroker;
use bida_testkit::mqtt::TestBroker as MqttBroker;
use bida_testkit::nats::TestStream as NatsStream;
use bida_testkit::rabbit::{self, TestQueue};
use bida_testkit::redis::TestStream as RedisStream;
use bida_testkit::rocketmq::TestTopic as RocketmqTopic;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};
use support::{payload_id, Accepted, Bida, Hit, Receiver, Reply};

const TOPIC: &str = "stress";
/// A run ends when everything arrived, or when nothing new arrived for this
/// long: longer than a killed member's session timeout (45 s) plus the
/// survivor's rejoins (20 s, then 40 s), during which nothing moves.
const NO_PROGRESS: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mq {
    Kafka,
    Rabbitmq,
    Nats,
    Redis,
    Mqtt,
    Activemq,
    Rocketmq,
}

impl Mq {
    const ALL: [Mq; 7] = [
        Mq::Kafka,
        Mq::Rabbitmq,
        Mq::Nats,
        Mq::Redis,
        Mq::Mqtt,
        Mq::Activemq,
        Mq::Rocketmq,
    ];
}

/// One run's conditions, drawn from its seed.
#[derive(Debug)]
struct Scenario {
    seed: u64,
    mq: Mq,
    messages: usize,
    partitions: i32,
    /// Message `i` has key `i % keys`.
    keys: Option<u32>,
    /// Share of requests the endpoint answers 500.
    failure_rate: f64,
    concurrency: u32,
    /// Failures in a row and open time; `None`: no breaker.
    breaker: Option<(u32, u64)>,
    ordered: bool,
    /// Stop the node (SIGKILL, or SIGTERM: `sigterm`) and start it again once
    /// this share of messages arrived.
    kill_at: Option<f64>,
    /// Operator pauses (with a resume after a moment), at these shares.
    pauses: Vec<f64>,
    /// Stop it with SIGTERM (a graceful drain) rather than SIGKILL.
    sigterm: bool,
}

impl Scenario {
    fn draw(seed: u64, mq: Mq) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys = rng.random_bool(0.7).then(|| rng.random_range(1..=20));
        let mut pauses: Vec<f64> = (0..rng.random_range(0..=2))
            .map(|_| rng.random_range(0.1..0.8))
            .collect();
        pauses.sort_by(f64::total_cmp);
        Self {
            seed,
            mq,
            messages: rng.random_range(800..=2_500),
            partitions: rng.random_range(1..=6),
            keys,
            failure_rate: [0.0, 0.1, 0.2, 0.3][rng.random_range(0..4)],
            concurrency: [1, 4, 16, 32][rng.random_range(0..4)],
            breaker: rng
                .random_bool(0.7)
                .then(|| (rng.random_range(2..=6), rng.random_range(20..=500))),
            ordered: keys.is_some() && rng.random_bool(0.25),
            kill_at: rng.random_bool(0.5).then(|| rng.random_range(0.1..0.8)),
            pauses,
            sigterm: rng.random_bool(0.5),
        }
    }

    fn policy(&self) -> Value {
        let (failures, open_ms) = self.breaker.unwrap_or((0, 1_000));
        json!({
            "concurrency": self.concurrency,
            "max_attempts": 30,
            "ordering": if self.ordered { "key" } else { "none" },
            "backoff": {"initial_ms": 50, "max_ms": 500, "multiplier": 2.0},
            "breaker": {"failures": failures, "open_ms": open_ms},
        })
    }

    fn key(&self, i: usize) -> Option<String> {
        self.keys.map(|keys| format!("k{}", i as u64 % keys as u64))
    }
}

/// Fails a request when the hash of (seed, message, its arrival count) falls
/// under the rate: the same seed fails the same arrivals.
fn endpoint(seed: u64, rate: f64, accepted: Accepted) -> impl Fn(&Hit, u32) -> Reply + Send + Sync + 'static {
    move |hit, arrival| {
        let Some(id) = payload_id(hit) else {
            return Reply::status(400);
        };
        let mut hasher = DefaultHasher::new();
        (seed, &id, arrival).hash(&mut hasher);
        if (hasher.finish() % 10_000) as f64 / 10_000.0 < rate {
            return Reply::status(500);
        }
        accepted.note(hit);
        Reply::ok()
    }
}

/// The broker under test and how to produce into it.
#[allow(clippy::large_enum_variant)] // one per run
enum Broker {
    Kafka(KafkaBroker),
    Rabbitmq(TestQueue),
    Nats(NatsStream),
    Redis(RedisStream),
    /// Messages go to `<base>/<n>`; the consumer reads `<base>/#`.
    Mqtt(MqttBroker),
    Activemq(ActivemqQueue),
    /// A topic of 4 queues, a key's messages in its queue.
    Rocketmq(RocketmqTopic),
}

impl Broker {
    async fn start(scenario: &Scenario) -> Self {
        match scenario.mq {
            Mq::Kafka => {
                let kafka = KafkaBroker::start().await;
                kafka.create_topic(TOPIC, scenario.partitions).await;
                Self::Kafka(kafka)
            }
            Mq::Rabbitmq => Self::Rabbitmq(TestQueue::declare().await),
            Mq::Nats => Self::Nats(NatsStream::create().await),
            Mq::Redis => Self::Redis(RedisStream::create()),
            Mq::Mqtt => Self::Mqtt(MqttBroker::start().await),
            Mq::Activemq => Self::Activemq(ActivemqQueue::create()),
            Mq::Rocketmq => Self::Rocketmq(RocketmqTopic::create().await),
        }
    }

    fn registration(&self) -> (Value, Value) {
        match self {
            Self::Kafka(kafka) => (
                json!({"name": "stress", "kind": "kafka", "bootstrap_servers": kafka.bootstrap,
                       // librdkafka's debug contexts, to see a failing run's fetches.
                       "options": std::env::var("BIDA_TEST_STRESS_KAFKA_DEBUG")
                           .map(|debug| json!({"debug": debug}))
                           .unwrap_or_else(|_| json!({}))}),
                json!({"topics": [TOPIC], "group": "bida-stress"}),
            ),
            Self::Rabbitmq(queue) => (
                json!({"name": "stress", "kind": "rabbitmq", "url": rabbit::url()}),
                json!({"queue": queue.name}),
            ),
            Self::Nats(stream) => (
                json!({"name": "stress", "kind": "nats", "url": bida_testkit::nats::url()}),
                json!({"stream": stream.name, "durable": "bida-stress"}),
            ),
            Self::Redis(stream) => (
                json!({"name": "stress", "kind": "redis", "url": bida_testkit::redis::url()}),
                json!({"stream": stream.name, "group": "bida-stress"}),
            ),
            Self::Mqtt(broker) => (
                json!({"name": "stress", "kind": "mqtt", "url": broker.url()}),
                json!({"topic": format!("{}/#", broker.base), "group": "bida-stress"}),
            ),
            Self::Activemq(queue) => (
                json!({"name": "stress", "kind": "activemq", "url": bida_testkit::activemq::url()}),
                json!({"queue": queue.name}),
            ),
            Self::Rocketmq(topic) => (
                json!({"name": "stress", "kind": "rocketmq", "name_server": bida_testkit::rocketmq::name_server()}),
                json!({"topic": topic.name, "group": topic.group}),
            ),
        }
    }

    /// Whether what is published before the consumer subscribes is dropped
    /// (MQTT keeps nothing for a subscriber that is not there yet).
    fn needs_a_subscriber_first(&self) -> bool {
        matches!(self, Self::Mqtt(_))
    }

    /// Produces the scenario's messages in chunks of random size and pace,
    /// Kafka's through a batching producer (several records per batch).
    async fn produce(&self, scenario: &Scenario, ids: &[String]) {
        let mut rng = StdRng::seed_from_u64(scenario.seed ^ 0x5eed);
        let producer = match self {
            Self::Kafka(kafka) => Some(kafka.batching_producer()),
            _ => None,
        };
        let mut start = 0;
        while start < ids.len() {
            let end = (start + rng.random_range(1..=300)).min(ids.len());
            let records = (start..end).map(|i| (scenario.key(i), json!({"id": ids[i]}).to_string().into_bytes()));
            match (self, &producer) {
                (Self::Kafka(_), Some(producer)) => KafkaBroker::send_all(producer, TOPIC, records).await,
                (Self::Rabbitmq(queue), _) => {
                    let records: Vec<_> = records.map(|(key, body)| (None, key, body)).collect();
                    queue.publish_keyed(records).await
                }
                (Self::Nats(stream), _) => stream.publish(records).await,
                (Self::Redis(stream), _) => stream.publish(records).await,
                (Self::Activemq(queue), _) => queue.publish(records).await,
                (Self::Rocketmq(topic), _) => topic.publish(records).await,
                // Each message's id as its correlation data (Bida's message id).
                (Self::Mqtt(broker), _) => {
                    broker
                        .publish(
                            (start..end)
                                .zip(records)
                                .map(|(i, (key, body))| (ids[i].clone(), key, body)),
                        )
                        .await
                }
                (Self::Kafka(_), None) => unreachable!("a Kafka broker has a producer"),
            }
            start = end;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=60))).await;
        }
    }
}

/// For a run that lost messages: what the broker serves now, per partition
/// (its offsets, and what a fresh reader finds), to tell a broker that lost
/// messages from a consumer that skipped them.
async fn kafka_census(kafka: &KafkaBroker, partitions: i32, ids: &[String]) -> String {
    let mut lines = Vec::new();
    let mut found = HashSet::new();
    for contents in kafka.read_all(TOPIC, partitions).await {
        let offsets: Vec<i64> = contents.records.iter().map(|(offset, _)| *offset).collect();
        let holes = offsets.windows(2).filter(|pair| pair[1] != pair[0] + 1).count();
        lines.push(format!(
            "{TOPIC}/{}: watermarks {:?}, a fresh reader read {} records, offsets {:?}..{:?}, {holes} holes",
            contents.partition,
            contents.watermarks,
            offsets.len(),
            offsets.first(),
            offsets.last()
        ));
        for (_, payload) in &contents.records {
            let body: Value = serde_json::from_slice(payload).unwrap_or_default();
            if let Some(id) = body["id"].as_str() {
                found.insert(id.to_string());
            }
        }
    }
    let missing = ids.iter().filter(|id| !found.contains(*id)).count();
    lines.push(format!("ids the broker does not serve: {missing} of {}", ids.len()));
    lines.join("\n")
}

/// What a run saw from the endpoint's side.
struct Verdict {
    produced: usize,
    delivered: usize,
    lost: Vec<String>,
    duplicates: usize,
    /// What the consumer recorded as breaking the broker's promises, one
    /// `kind topic/partition` each.
    anomalies: Vec<String>,
    seconds: f64,
    /// How long the node took to exit at SIGTERM, in scenarios that send it.
    stopped_in: Option<Duration>,
}

async fn run(scenario: Scenario) -> Verdict {
    let started = Instant::now();
    let accepted = Accepted::default();
    let receiver = Receiver::start(endpoint(scenario.seed, scenario.failure_rate, accepted.clone())).await;
    let broker = Broker::start(&scenario).await;
    let mut bida = Bida::start("").await;
    let (broker_spec, source) = broker.registration();
    let (status, registered) = bida.post("/v1/brokers", broker_spec).await;
    assert_eq!(status, 201, "{registered}");
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "stress", "broker_id": registered["id"], "source": source,
                   "endpoint": {"url": receiver.url("/hook"), "method": "POST", "timeout_ms": 5000},
                   "policy": scenario.policy()}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    let consumer_id = consumer["id"].as_str().expect("consumer id").to_string();
    if broker.needs_a_subscriber_first() {
        bida.every_node_running(&consumer_id).await;
    }

    let ids: Vec<String> = (0..scenario.messages)
        .map(|i| format!("s{}-{i}", scenario.seed))
        .collect();
    let share = |fraction: f64| (fraction * ids.len() as f64) as usize;
    let producing = broker.produce(&scenario, &ids);
    let mut stopped_in = None;
    let operating = async {
        let mut pauses = scenario.pauses.iter().map(|f| share(*f)).peekable();
        let mut kill_at = scenario.kill_at.map(share);
        let mut last = (0, Instant::now());
        loop {
            let arrived = accepted.distinct();
            if arrived >= ids.len() || last.1.elapsed() > NO_PROGRESS {
                return;
            }
            if arrived != last.0 {
                last = (arrived, Instant::now());
            }
            if kill_at.is_some_and(|at| arrived >= at) {
                kill_at = None;
                if scenario.sigterm {
                    let asked = Instant::now();
                    let exit = bida.terminate().await.expect("running");
                    let took = asked.elapsed();
                    assert!(exit.success(), "SIGTERM: {exit} after {took:?}\n{}", bida.log());
                    stopped_in = Some(took);
                }
                bida.restart().await;
            }
            if pauses.next_if(|at| arrived >= *at).is_some() {
                let path = format!("/v1/consumers/{consumer_id}");
                let (status, body) = bida.post(&format!("{path}/pause"), json!({})).await;
                assert_eq!(status, 200, "{body}");
                tokio::time::sleep(Duration::from_millis(300 + (scenario.seed % 1_200))).await;
                let (status, body) = bida.post(&format!("{path}/resume"), json!({})).await;
                assert_eq!(status, 200, "{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::join!(producing, operating);

    let lost = accepted.missing(&ids);
    let (delivered, duplicates) = accepted.counts();
    let (_, view) = bida.get(&format!("/v1/consumers/{consumer_id}")).await;
    let anomalies = view["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {}/{}",
                a["kind"].as_str().unwrap_or("?"),
                a["topic"].as_str().unwrap_or("?"),
                a["partition"]
            )
        })
        .collect();
    if !lost.is_empty() {
        if let Broker::Kafka(kafka) = &broker {
            let census = kafka_census(kafka, scenario.partitions, &ids).await;
            eprintln!("the broker after the run:\n{census}");
        }
        eprintln!("consumer after the run: {view:#}");
        eprintln!("---- bida log (tail) ----");
        let log = bida.log();
        let tail: Vec<&str> = log.lines().rev().take(200).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    Verdict {
        produced: ids.len(),
        delivered,
        lost,
        duplicates,
        anomalies,
        seconds: started.elapsed().as_secs_f64(),
        stopped_in,
    }
}

/// Runs the scenarios of `seeds` on `mq`, prints one line each, and fails
/// naming every seed that lost messages.
async fn runs(mq: Mq, seeds: impl IntoIterator<Item = u64>) {
    let mut failed = Vec::new();
    let (mut total_runs, mut total_lost) = (0, 0);
    for seed in seeds {
        let scenario = Scenario::draw(seed, mq);
        let line = format!("{scenario:?}");
        // Named before it runs: a run that panics (a failed SIGTERM, say)
        // must still say which seed replays it.
        println!("stress seed={seed} {line} starting");
        // On the heap: a run's future holds every kind's broker set-up and
        // overflowed a test thread's 2 MiB stack in a debug build.
        let verdict = Box::pin(run(scenario)).await;
        total_runs += 1;
        total_lost += verdict.lost.len();
        println!(
            "stress seed={seed} {line} -> produced {}, delivered {}, lost {}, duplicates {}, anomalies {} {:?}, {:.1} s{}",
            verdict.produced,
            verdict.delivered,
            verdict.lost.len(),
            verdict.duplicates,
            verdict.anomalies.len(),
            verdict.anomalies,
            verdict.seconds,
            verdict
                .stopped_in
                .map(|took| format!(", exited {:.1} s after SIGTERM", took.as_secs_f64()))
                .unwrap_or_default()
        );
        if !verdict.lost.is_empty() {
            let sample: Vec<&String> = verdict.lost.iter().take(20).collect();
            failed.push(format!("seed {seed}: {} lost, e.g. {sample:?}", verdict.lost.len()));
        }
    }
    println!("stress {mq:?}: {total_runs} runs, {total_lost} messages lost");
    assert!(failed.is_empty(), "messages lost:\n{}", failed.join("\n"));
}

/// Seeds for this process: fresh ones each time (printed, to replay one
/// with `BIDA_TEST_STRESS_SEED`), or the one asked for.
fn seeds(count: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("BIDA_TEST_STRESS_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let mut rng = rand::rng();
    (0..count).map(|_| rng.random_range(0..1_000_000)).collect()
}

#[tokio::test]
async fn randomized_kafka_runs_lose_nothing() {
    runs(Mq::Kafka, seeds(2)).await;
}

#[tokio::test]
async fn randomized_rabbitmq_runs_lose_nothing() {
    runs(Mq::Rabbitmq, seeds(2)).await;
}

#[tokio::test]
async fn randomized_nats_runs_lose_nothing() {
    runs(Mq::Nats, seeds(2)).await;
}

#[tokio::test]
async fn randomized_redis_runs_lose_nothing() {
    runs(Mq::Redis, seeds(2)).await;
}

#[tokio::test]
async fn randomized_mqtt_runs_lose_nothing() {
    runs(Mq::Mqtt, seeds(2)).await;
}

#[tokio::test]
async fn randomized_activemq_runs_lose_nothing() {
    runs(Mq::Activemq, seeds(2)).await;
}

#[tokio::test]
async fn randomized_rocketmq_runs_lose_nothing() {
    runs(Mq::Rocketmq, seeds(2)).await;
}

/// The long version: `BIDA_TEST_STRESS_RUNS` runs per broker (20 by default).
#[tokio::test]
#[ignore = "minutes per broker; run with --ignored"]
async fn stress() {
    let count = std::env::var("BIDA_TEST_STRESS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let only = std::env::var("BIDA_TEST_STRESS_BROKER").ok();
    for mq in Mq::ALL {
        if only
            .as_deref()
            .is_some_and(|only| !format!("{mq:?}").eq_ignore_ascii_case(only))
        {
            continue;
        }
        runs(mq, seeds(count)).await;
    }
}
