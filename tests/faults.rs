//! The fault suite: a live workload from RabbitMQ, Kafka (RocketMQ, NATS
//! JetStream, Redis, MQTT and ActiveMQ in scenarios of their own: each
//! broker restarted mid-stream) and the task API into a counting endpoint, a
//! fault injected mid-stream, recovery, and a verdict that counts every
//! message: lost must be 0.
//!
//! Scenarios restart the machine's RabbitMQ, Postgres, RocketMQ, NATS, Redis
//! and ActiveMQ, so they run one at a time (a lock), and no other test
//! binary runs beside this one (cargo runs test binaries one after another).
//!
//! Each scenario prints one line:
//! `scenario, produced, delivered, dead, lost, duplicates, recovery seconds`.

mod support;

use bida_testkit::kafka::KafkaBroker;
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, payload_id, until, Accepted, Bida, Hit, Receiver, Reply, ADMIN_KEY};

/// Scenarios take turns: they restart shared services.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERGE: Duration = Duration::from_secs(240);

/// The three sources and what was produced into them.
struct Workload {
    queue: TestQueue,
    kafka: KafkaBroker,
    produced: Vec<String>,
}

const TOPIC: &str = "faults";

impl Workload {
    async fn start() -> Self {
        Self::with_kafka(KafkaBroker::start().await).await
    }

    /// With a Kafka broker whose log survives a restart.
    async fn start_durable() -> Self {
        Self::with_kafka(KafkaBroker::start_durable().await).await
    }

    async fn with_kafka(kafka: KafkaBroker) -> Self {
        kafka.create_topic(TOPIC, 4).await;
        Self {
            queue: TestQueue::declare().await,
            kafka,
            produced: Vec::new(),
        }
    }

    /// Registers both brokers and a consumer on each, delivering to `url`.
    async fn consumers(&self, bida: &Bida, url: &str, policy: Value) {
        for (broker, source) in [
            (
                json!({"name": "rabbit", "kind": "rabbitmq", "url": rabbit::url()}),
                json!({"queue": self.queue.name}),
            ),
            (
                json!({"name": "kafka", "kind": "kafka", "bootstrap_servers": self.kafka.bootstrap}),
                json!({"topics": [TOPIC], "group": "bida-faults"}),
            ),
        ] {
            let (status, broker) = bida.post("/v1/brokers", broker).await;
            assert_eq!(status, 201, "{broker}");
            let (status, consumer) = bida
                .post(
                    "/v1/consumers",
                    json!({"name": "faults", "broker_id": broker["id"], "source": source,
                           "endpoint": {"url": url, "timeout_ms": 2000}, "policy": policy}),
                )
                .await;
            assert_eq!(status, 201, "{consumer}");
        }
    }

    /// Produces `n` messages to each MQ.
    async fn produce_mq(&mut self, n: usize, round: usize) {
        let ids = |source: &str| (0..n).map(move |i| format!("{source}-{round}-{i}")).collect::<Vec<_>>();
        let rabbit_ids = ids("r");
        self.queue
            .publish(
                rabbit_ids
                    .iter()
                    .map(|id| (Some(id.clone()), json!({"id": id}).to_string().into_bytes())),
            )
            .await;
        let kafka_ids = ids("k");
        self.kafka
            .produce(
                TOPIC,
                kafka_ids
                    .iter()
                    .map(|id| (Some(id.clone()), json!({"id": id}).to_string().into_bytes())),
            )
            .await;
        self.produced.extend(rabbit_ids);
        self.produced.extend(kafka_ids);
    }
}

/// Submits `n` tasks at `per_second` through the API at `bida_url`, in the
/// background, whatever happens to Bida meanwhile; yields the ids it accepted
/// (202: committed). Refused or unanswered submissions are not produced.
fn api_feed(
    bida_url: &str,
    endpoint: &str,
    prefix: &str,
    n: usize,
    per_second: u64,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (tasks, endpoint, prefix) = (format!("{bida_url}/v1/tasks"), endpoint.to_string(), prefix.to_string());
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .default_headers(
                [(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {ADMIN_KEY}").parse().expect("header"),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .expect("client");
        let mut accepted = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
        for i in 0..n {
            tick.tick().await;
            let id = format!("{prefix}-{i}");
            let task = json!({"url": endpoint, "params": {"id": id}, "max_attempts": 50,
                              "backoff": {"initial_ms": 100, "max_ms": 2000}});
            if let Ok(response) = http.post(&tasks).json(&task).send().await {
                if response.status() == 202 {
                    accepted.push(id);
                }
            }
        }
        accepted
    })
}

/// Waits for every produced id (less `expected_dead`) and prints the verdict line.
async fn verdict(scenario: &str, produced: &[String], accepted: &Accepted, dead: usize, since: Instant, bida: &Bida) {
    // Every produced id, not a count: an API submission whose answer was lost
    // in a crash may still have been committed and delivered.
    let converged = eventually(CONVERGE, || accepted.missing(produced).len() <= dead).await;
    let missing = accepted.missing(produced);
    let lost = missing.len().saturating_sub(dead);
    println!(
        "scenario, produced, delivered, dead, lost, duplicates, recovery seconds\n{scenario}, {}, {}, {dead}, {lost}, {}, {:.1}",
        produced.len(),
        accepted.distinct(),
        accepted.duplicates(),
        since.elapsed().as_secs_f64()
    );
    // The read models agree with the endpoint: one delivered task per message it accepted.
    let consistent = until(Duration::from_secs(30), || async {
        let overview = bida.get("/v1/stats/overview").await.1;
        overview["tasks"]["by_status"]["delivered"].as_u64() == Some(accepted.distinct() as u64)
    })
    .await;
    let overview = bida.get("/v1/stats/overview").await.1;
    assert!(
        !converged || consistent,
        "{scenario}: read model {} vs endpoint {}",
        overview["tasks"],
        accepted.distinct()
    );
    let mut by_source: std::collections::BTreeMap<&str, usize> = Default::default();
    for id in &missing {
        *by_source.entry(id.split('-').next().unwrap_or_default()).or_default() += 1;
    }
    assert!(
        converged && lost == 0,
        "{scenario}: {lost} lost, by source {by_source:?} (first: {:?})\n{}",
        &missing[..missing.len().min(10)],
        bida.log()
    );
}

fn counting_endpoint(accepted: &Accepted, delay: Duration) -> impl Fn(&Hit, u32) -> Reply + Send + Sync + 'static {
    let accepted = accepted.clone();
    move |hit, _| {
        accepted.note(hit);
        Reply::ok().after(delay)
    }
}

/// The standard mid-stream workload: 2,000 messages in each MQ, 1,000 API
/// tasks fed at 100/s, a counting endpoint; ready once 1,000 have arrived.
struct Flow {
    accepted: Accepted,
    _endpoint: Receiver,
    bida: Bida,
    workload: Workload,
    feed: tokio::task::JoinHandle<Vec<String>>,
}

impl Flow {
    async fn start(path: &str, workload: Workload) -> Self {
        let accepted = Accepted::default();
        let endpoint = Receiver::start(counting_endpoint(&accepted, Duration::from_millis(5))).await;
        let url = endpoint.url(path);
        let bida = Bida::start("").await;
        let mut workload = workload;
        workload.consumers(&bida, &url, json!({"concurrency": 4})).await;
        workload.produce_mq(2_000, 0).await;
        let feed = api_feed(&bida.url, &url, "a", 1_000, 100);
        assert!(eventually(CONVERGE, || accepted.distinct() >= 1_000).await);
        Self {
            accepted,
            _endpoint: endpoint,
            bida,
            workload,
            feed,
        }
    }

    /// After the fault: waits for everything and prints the verdict.
    async fn finish(mut self, scenario: &str) -> Bida {
        let since = Instant::now();
        self.workload.produced.extend(self.feed.await.expect("API feed"));
        verdict(scenario, &self.workload.produced, &self.accepted, 0, since, &self.bida).await;
        self.bida
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_three_times_mid_stream() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let endpoint = Receiver::start(counting_endpoint(&accepted, Duration::from_millis(5))).await;
    let url = endpoint.url("/faults");
    let mut bida = Bida::start("").await;
    let mut workload = Workload::start().await;
    workload.consumers(&bida, &url, json!({"concurrency": 4})).await;
    workload.produce_mq(2_000, 0).await;
    let feed = api_feed(&bida.url, &url, "a", 2_000, 150);
    for kill in 1..=3 {
        // Killed at a quarter, a half and three quarters of the MQ messages.
        assert!(eventually(CONVERGE, || accepted.distinct() >= kill * 1_000).await);
        bida.kill9();
        bida.restart().await;
    }
    let since = Instant::now();
    let mut produced = workload.produced.clone();
    produced.extend(feed.await.expect("API feed"));
    verdict("kill -9 x3", &produced, &accepted, 0, since, &bida).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_leaves_its_retries_and_delayed_tasks_to_the_other() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let counted = accepted.clone();
    // A third of the messages fail their first two calls: the nodes hold
    // retries when one dies (all of them failing would open the breakers).
    let endpoint = Receiver::start(move |hit, nth| {
        let unlucky = payload_id(hit).is_some_and(|id| id.bytes().map(u32::from).sum::<u32>() % 3 == 0);
        if unlucky && nth <= 2 {
            return Reply::status(503);
        }
        counted.note(hit);
        Reply::ok()
    })
    .await;
    let url = endpoint.url("/two");
    let mut a = Bida::start("").await;
    let b = a.join("").await;
    let mut workload = Workload::start().await;
    workload
        .consumers(
            &a,
            &url,
            json!({"concurrency": 16, "backoff": {"initial_ms": 500, "max_ms": 2000}}),
        )
        .await;
    workload.produce_mq(2_500, 0).await;
    let feed = api_feed(&a.url, &url, "a", 1_000, 500);
    // Delayed tasks on the node that dies.
    let delayed: Vec<String> = (0..200).map(|i| format!("d-{i}")).collect();
    for id in &delayed {
        a.submit(json!({"url": url, "params": {"id": id}, "delay_ms": 3000}))
            .await;
    }
    workload.produced.extend(delayed);
    assert!(eventually(CONVERGE, || accepted.distinct() >= 300).await);
    a.kill9();
    let since = Instant::now();
    workload.produced.extend(feed.await.expect("API feed"));
    verdict("two nodes, kill -9 one", &workload.produced, &accepted, 0, since, &b).await;
}

fn run(command: &str, args: &[&str]) {
    let status = Command::new(command).args(args).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{command} {args:?}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    let flow = Flow::start("/rabbit-restart", Workload::start().await).await;
    run("rabbitmqctl", &["stop_app"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("rabbitmqctl", &["start_app"]);
    run("rabbitmqctl", &["await_startup"]);
    flow.finish("RabbitMQ restarted").await;
}

fn postgres_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("a Postgres cluster");
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", action],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    let flow = Flow::start("/pg-restart", Workload::start().await).await;
    postgres_cluster("stop");
    // While the store is away Bida says it is not ready.
    let mut not_ready = false;
    for _ in 0..50 {
        let (status, _) = flow.bida.get("/readyz").await;
        if status == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres_cluster("start");
    assert!(not_ready, "/readyz stayed ready without a database");
    let bida = flow.finish("Postgres restarted").await;
    let (status, _) = bida.get("/readyz").await;
    assert_eq!(status, 200, "ready again");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_down_for_a_minute_then_back_gets_everything() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (counted, is_down) = (accepted.clone(), down.clone());
    let endpoint = Receiver::start(move |hit, _| {
        if is_down.load(std::sync::atomic::Ordering::Relaxed) {
            return Reply::status(503);
        }
        counted.note(hit);
        Reply::ok()
    })
    .await;
    let url = endpoint.url("/down");
    let bida = Bida::start("").await;
    let mut workload = Workload::start().await;
    let policy = json!({"concurrency": 16, "max_attempts": 50, "backoff": {"initial_ms": 500, "max_ms": 5000},
                        "breaker": {"failures": 5, "open_ms": 2000}});
    workload.consumers(&bida, &url, policy).await;
    workload.produce_mq(2_000, 0).await;
    let feed = api_feed(&bida.url, &url, "a", 1_000, 100);
    tokio::time::sleep(Duration::from_secs(60)).await;
    down.store(false, std::sync::atomic::Ordering::Relaxed);
    let since = Instant::now();
    workload.produced.extend(feed.await.expect("API feed"));
    verdict("endpoint down 60 s", &workload.produced, &accepted, 0, since, &bida).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_endpoint_is_cut_at_the_timeout_and_retried() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let counted = accepted.clone();
    // Each message's first answer comes after the 300 ms timeout.
    let endpoint = Receiver::start(move |hit, nth| {
        if nth == 1 {
            return Reply::ok().after(Duration::from_millis(1500));
        }
        counted.note(hit);
        Reply::ok()
    })
    .await;
    let url = endpoint.url("/slow");
    let bida = Bida::start("").await;
    let mut produced = Vec::new();
    let ids: Vec<String> = (0..5_000).map(|i| format!("s-{i}")).collect();
    {
        use futures::StreamExt;
        futures::stream::iter(&ids)
            .for_each_concurrent(32, |id| {
                let (bida, url) = (&bida, &url);
                async move {
                    bida.submit(json!({"url": url, "params": {"id": id}, "timeout_ms": 300,
                                       "backoff": {"initial_ms": 100, "max_ms": 500}}))
                        .await;
                }
            })
            .await;
    }
    produced.extend(ids);
    let since = Instant::now();
    verdict(
        "endpoint slower than the timeout",
        &produced,
        &accepted,
        0,
        since,
        &bida,
    )
    .await;
    let (_, overview) = bida.get("/v1/stats?dimension=all&step=1h").await;
    let timeouts = overview["series"][0]["total"]["timeouts"].as_i64().unwrap_or(0);
    assert!(timeouts >= 5_000, "every first attempt timed out: {overview}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_answer_is_retried_dead_lettered_then_replayed_once_fixed() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counted, is_fixed) = (accepted.clone(), fixed.clone());
    // 200 with the wrong body until fixed: the expected-response check fails.
    let endpoint = Receiver::start(move |hit, _| {
        if !is_fixed.load(std::sync::atomic::Ordering::Relaxed) {
            return Reply::ok().body(r#"{"code":1,"msg":"失败"}"#);
        }
        counted.note(hit);
        Reply::ok().body(r#"{"code":0,"msg":"成功"}"#)
    })
    .await;
    let url = endpoint.url("/wrong");
    let bida = Bida::start("[api]\nmax_replay = 10000\n").await;
    let mut workload = Workload::start().await;
    let expect = json!({"json": {"pointer": "code", "equals": 0}});
    let policy = json!({"concurrency": 16, "max_attempts": 2, "expect": expect,
                        "backoff": {"initial_ms": 50, "max_ms": 100},
                        "breaker": {"failures": 1000000, "open_ms": 1000}});
    workload.consumers(&bida, &url, policy).await;
    workload.produce_mq(2_000, 0).await;
    let api_ids: Vec<String> = (0..1_000).map(|i| format!("a-{i}")).collect();
    {
        use futures::StreamExt;
        futures::stream::iter(&api_ids)
            .for_each_concurrent(16, |id| {
                let (bida, url, expect) = (&bida, &url, &expect);
                async move {
                    bida.submit(
                        json!({"url": url, "params": {"id": id}, "max_attempts": 2, "expect": expect,
                                       "backoff": {"initial_ms": 50, "max_ms": 100}}),
                    )
                    .await;
                }
            })
            .await;
    }
    workload.produced.extend(api_ids);
    let total = workload.produced.len();
    let all_dead = until(CONVERGE, || async {
        let overview = bida.get("/v1/stats/overview").await.1;
        overview["tasks"]["by_status"]["dead"].as_u64() == Some(total as u64)
    })
    .await;
    let (_, overview) = bida.get("/v1/stats/overview").await;
    assert!(all_dead, "{overview}");
    assert_eq!(accepted.distinct(), 0);
    fixed.store(true, std::sync::atomic::Ordering::Relaxed);
    let since = Instant::now();
    let (status, replay) = bida
        .post("/v1/tasks/replay", json!({"status": "dead", "limit": 10000}))
        .await;
    assert_eq!(status, 200, "{}", replay["failed"]);
    assert_eq!(replay["retried"], total, "{}", replay["failed"]);
    println!("{total} dead-lettered for a wrong answer, then replayed");
    verdict("wrong answer, replayed", &workload.produced, &accepted, 0, since, &bida).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_are_dead_lettered_and_do_not_block_the_rest() {
    let _turn = TURN.lock().await;
    let accepted = Accepted::default();
    let counted = accepted.clone();
    // The endpoint refuses what it cannot parse (400: not retried).
    let endpoint = Receiver::start(move |hit, _| {
        if payload_id(hit).is_none() {
            return Reply::status(400).body("cannot parse the message");
        }
        counted.note(hit);
        Reply::ok()
    })
    .await;
    let url = endpoint.url("/poison");
    let bida = Bida::start("").await;
    let mut workload = Workload::start().await;
    workload
        .consumers(
            &bida,
            &url,
            json!({"concurrency": 8, "breaker": {"failures": 1000, "open_ms": 1000}}),
        )
        .await;
    // Poison first, so that everything else queues up behind it.
    let big = vec![b'x'; 900 * 1024];
    let poison: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        vec![0xff, 0x00, 0xfe],
        b"{\"id\": 42".to_vec(),
        big,
    ];
    workload
        .queue
        .publish(
            poison
                .iter()
                .enumerate()
                .map(|(i, body)| (Some(format!("poison-{i}")), body.clone())),
        )
        .await;
    workload
        .kafka
        .produce(TOPIC, poison.iter().map(|body| (None, body.clone())))
        .await;
    workload.produce_mq(2_500, 0).await;
    // Poison on the API: refused with a reason, nothing recorded.
    for bad in [r#"{"url": "http://x", "method": "BREW"}"#, r#"{"url": 1}"#, "not json"] {
        let response = bida
            .http
            .post(format!("{}/v1/tasks", bida.url))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .expect("POST");
        assert!(
            matches!(response.status().as_u16(), 400 | 422),
            "{bad}: {}",
            response.status()
        );
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    let since = Instant::now();
    verdict("poison input", &workload.produced, &accepted, 0, since, &bida).await;
    let dead = until(CONVERGE, || async {
        let overview = bida.get("/v1/stats/overview").await.1;
        overview["tasks"]["by_status"]["dead"].as_u64() == Some(2 * poison.len() as u64)
    })
    .await;
    let (_, consumers) = bida.get("/v1/consumers").await;
    assert!(dead, "{}", bida.get("/v1/stats/overview").await.1);
    for consumer in consumers["items"].as_array().expect("consumers") {
        assert_eq!(consumer["crashes"], 0, "{consumer}");
    }
    println!("{} poison messages dead-lettered with their reason", 2 * poison.len());
    let (_, dead_tasks) = bida.get("/v1/tasks?status=dead").await;
    for task in dead_tasks["items"].as_array().expect("items") {
        assert!(
            task["reason"].as_str().is_some_and(|r| r.contains("400")),
            "dead with a reason: {task}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_broker_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    let mut flow = Flow::start("/kafka-restart", Workload::start_durable().await).await;
    // SIGKILL: the broker gets no chance to flush anything.
    flow.workload.kafka.restart(Duration::from_secs(3)).await;
    flow.finish("Kafka broker restarted").await;
}

/// One broker kind's consumer (concurrency 4) delivering to a counting
/// endpoint: the broker restart scenarios of the kinds without a place in
/// [`Workload`].
struct OneKind {
    accepted: Accepted,
    _endpoint: Receiver,
    bida: Bida,
    consumer: String,
}

impl OneKind {
    /// Registers `broker` and a consumer of `source` on it.
    async fn start(path: &str, broker: Value, source: Value) -> Self {
        let accepted = Accepted::default();
        let endpoint = Receiver::start(counting_endpoint(&accepted, Duration::from_millis(5))).await;
        let bida = Bida::start("").await;
        let (status, broker) = bida.post("/v1/brokers", broker).await;
        assert_eq!(status, 201, "{broker}");
        let (status, consumer) = bida
            .post(
                "/v1/consumers",
                json!({"name": "faults", "broker_id": broker["id"], "source": source,
                       "endpoint": {"url": endpoint.url(path), "timeout_ms": 2000},
                       "policy": {"concurrency": 4}}),
            )
            .await;
        assert_eq!(status, 201, "{consumer}");
        Self {
            accepted,
            _endpoint: endpoint,
            bida,
            consumer: consumer["id"].as_str().expect("consumer id").to_string(),
        }
    }

    /// Waits until half of the 2,000 messages produced first have arrived.
    async fn halfway(&self) {
        assert!(
            eventually(CONVERGE, || self.accepted.distinct() >= 1_000).await,
            "{} of 2,000 arrived before the restart\n{}",
            self.accepted.distinct(),
            self.bida.log()
        );
    }

    async fn finish(self, scenario: &str, produced: &[String], since: Instant) {
        verdict(scenario, produced, &self.accepted, 0, since, &self.bida).await;
    }
}

/// The ids of a round: `<prefix>-<round>-<i>`.
fn round(prefix: &str, round: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{round}-{i}")).collect()
}

/// Each id as a message keyed by itself, `{"id": <id>}`.
fn keyed(ids: &[String]) -> impl Iterator<Item = (Option<String>, Vec<u8>)> + '_ {
    ids.iter()
        .map(|id| (Some(id.clone()), json!({"id": id}).to_string().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_server_restarted_mid_stream() {
    use bida_testkit::nats;
    let _turn = TURN.lock().await;
    // In files: a stream in memory (the other tests') is gone with the server.
    let stream = nats::TestStream::create_on_disk().await;
    let run = OneKind::start(
        "/nats-restart",
        json!({"name": "nats", "kind": "nats", "url": nats::url()}),
        json!({"stream": stream.name, "durable": "bida-faults"}),
    )
    .await;
    let mut produced = round("n", 0, 2_000);
    stream.publish(keyed(&produced)).await;
    run.halfway().await;
    // SIGKILL mid-stream, started again as it was (command line from /proc).
    nats::restart_server(&stream, Duration::from_secs(3)).await;
    let since = Instant::now();
    let more = round("n", 1, 1_000);
    stream.publish(keyed(&more)).await;
    produced.extend(more);
    run.finish("NATS server restarted", &produced, since).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_mid_stream() {
    use bida_testkit::redis;
    let _turn = TURN.lock().await;
    let stream = redis::TestStream::create();
    let run = OneKind::start(
        "/redis-restart",
        json!({"name": "redis", "kind": "redis", "url": redis::url()}),
        json!({"stream": stream.name, "group": "bida-faults"}),
    )
    .await;
    let mut produced = round("s", 0, 2_000);
    stream.publish(keyed(&produced)).await;
    run.halfway().await;
    // SHUTDOWN SAVE (the machine's Redis keeps nothing on disk as it runs),
    // started again with the parameters it ran with.
    redis::restart_server(&stream, Duration::from_secs(3)).await;
    let since = Instant::now();
    let more = round("s", 1, 1_000);
    stream.publish(keyed(&more)).await;
    produced.extend(more);
    run.finish("Redis restarted", &produced, since).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_broker_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    // Sessions and their queued messages kept on disk over the restart.
    let mut broker = bida_testkit::mqtt::TestBroker::start_persistent().await;
    let run = OneKind::start(
        "/mqtt-restart",
        json!({"name": "mqtt", "kind": "mqtt", "url": broker.url()}),
        json!({"topic": format!("{}/#", broker.base), "group": "bida-faults"}),
    )
    .await;
    // Each id its correlation data (Bida's message id) and its topic's last level.
    let messages = |ids: &[String]| -> Vec<(String, Option<String>, Vec<u8>)> {
        keyed(ids)
            .zip(ids)
            .map(|((key, body), id)| (id.clone(), key, body))
            .collect()
    };
    // MQTT keeps nothing for a subscription not made yet.
    run.bida.every_node_running(&run.consumer).await;
    let mut produced = round("m", 0, 2_000);
    let unmatched = broker.publish_to_subscribers(messages(&produced)).await;
    assert_eq!(unmatched, 0, "published before the consumer subscribed");
    run.halfway().await;
    // SIGTERM (Mosquitto writes its sessions on the way out), started again.
    broker.restart(Duration::from_secs(3)).await;
    let since = Instant::now();
    // Mosquitto 2.0 brings back sessions and their queued messages but not
    // shared subscriptions: until the node has subscribed again, what is
    // published goes to nobody (reason 16, no matching subscribers), so it
    // is not produced. A probe a fifth of a second until one is taken.
    let deadline = Instant::now() + CONVERGE;
    for probe in 0.. {
        let id = vec![format!("m-probe-{probe}")];
        if broker.publish_to_subscribers(messages(&id)).await == 0 {
            produced.extend(id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer did not subscribe again\n{}",
            run.bida.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let more = round("m", 1, 1_000);
    let unmatched = broker.publish_to_subscribers(messages(&more)).await;
    assert_eq!(unmatched, 0, "the consumer's subscription went away");
    produced.extend(more);
    run.finish("MQTT broker restarted", &produced, since).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn activemq_restarted_mid_stream() {
    use bida_testkit::activemq;
    let _turn = TURN.lock().await;
    let queue = activemq::TestQueue::create();
    let run = OneKind::start(
        "/activemq-restart",
        json!({"name": "activemq", "kind": "activemq", "url": activemq::url()}),
        json!({"queue": queue.name}),
    )
    .await;
    let mut produced = round("v", 0, 2_000);
    queue.publish(keyed(&produced)).await;
    run.halfway().await;
    // Its init script's stop and start; persistent messages are in KahaDB.
    activemq::restart_broker(Duration::from_secs(3)).await;
    let since = Instant::now();
    let more = round("v", 1, 1_000);
    queue.publish(keyed(&more)).await;
    produced.extend(more);
    run.finish("ActiveMQ restarted", &produced, since).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rocketmq_broker_restarted_mid_stream() {
    use bida_testkit::rocketmq;
    let _turn = TURN.lock().await;
    let topic = rocketmq::TestTopic::create().await;
    let run = OneKind::start(
        "/rocketmq-restart",
        json!({"name": "rocketmq", "kind": "rocketmq", "name_server": rocketmq::name_server()}),
        json!({"topic": topic.name, "group": topic.group}),
    )
    .await;
    let mut produced = round("q", 0, 2_000);
    topic.publish(keyed(&produced)).await;
    run.halfway().await;
    // SIGKILL mid-stream; what was stored stays in its files.
    rocketmq::restart_broker(&topic, Duration::from_secs(3)).await;
    let since = Instant::now();
    let more = round("q", 1, 1_000);
    topic.publish(keyed(&more)).await;
    produced.extend(more);
    run.finish("RocketMQ broker restarted", &produced, since).await;
}
