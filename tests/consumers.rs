//! The conformance suite: consumers end to end, each scenario against every
//! kind of broker (`mqs/`: the machine's RabbitMQ and NATS, a Kafka-protocol
//! broker (tansu) per test): the real binary, a real HTTP receiver, messages
//! counted by their `webhook-id`.

mod mqs;
mod support;

use bida_domain::consumer::TaskNaming;
use mqs::{on_every_mq, Record, TestMq};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, Bida, Hit, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(180);

fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            id: format!("m{i}"),
            key: Some(format!("k{}", i % 16)),
            body: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .collect()
}

/// Deterministic "random": fails about one call in `one_in` per message and try.
fn unlucky(hit: &Hit, nth: u32, one_in: u64) -> bool {
    let mut hasher = DefaultHasher::new();
    (hit.message_id(), nth).hash(&mut hasher);
    hasher.finish().is_multiple_of(one_in)
}

/// Message ids the endpoint accepted (answered 200).
#[derive(Clone, Default)]
struct Accepted(Arc<Mutex<HashSet<String>>>);

impl Accepted {
    fn note(&self, hit: &Hit) {
        self.0
            .lock()
            .unwrap()
            .insert(hit.message_id().unwrap_or_default().to_string());
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn consumer_view(bida: &Bida, id: &str) -> Value {
    bida.get(&format!("/v1/consumers/{id}")).await.1
}

/// What the consumer's kind of broker can do, as its broker's view says.
async fn capabilities(bida: &Bida, consumer: &str) -> Value {
    let view = consumer_view(bida, consumer).await;
    let broker = view["broker_id"].as_str().unwrap_or_else(|| panic!("{view}"));
    let (_, broker) = bida.get(&format!("/v1/brokers/{broker}")).await;
    broker["capabilities"].clone()
}

async fn wait_consumer(bida: &Bida, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    bida.consumer_until(id, WAIT, done).await
}

fn duplicates(endpoint: &Receiver) -> usize {
    // One snapshot: requests may still be arriving.
    let hits = endpoint.hits();
    let distinct: HashSet<&str> = hits.iter().filter_map(Hit::message_id).collect();
    hits.len() - distinct.len()
}

on_every_mq!(
    ten_thousand_messages_arrive,
    a_flaky_endpoint_loses_nothing,
    a_dead_endpoint_opens_the_breaker_and_the_backlog_waits_in_the_mq,
    live_changes_apply_without_a_restart,
    kill_9_mid_stream_loses_nothing,
    ordering_by_key_survives_failures,
    two_nodes_share_the_work_and_one_takes_over,
    deliveries_go_on_while_commits_are_held_up,
    sigterm_finishes_the_deliveries_in_flight,
    sigterm_gives_back_what_outlasts_the_grace,
    messages_written_over_http_arrive_as_written,
);

async fn ten_thousand_messages_arrive(mq: impl TestMq) {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let id = mq
        .consumer(&bida, None, &endpoint.url("/in"), json!({"concurrency": 32}))
        .await;
    mq.publish(numbered(10_000)).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 10_000).await,
        "{} of 10000 arrived",
        endpoint.distinct_messages()
    );
    let consumer = wait_consumer(&bida, &id, |c| {
        c["counters"]["delivered"] == 10_000 && c["lag_total"] == 0
    })
    .await;
    assert_eq!(consumer["counters"]["dead"], 0);
    // Delivered at the first attempt: one event per message, not two.
    let mut recorded: HashMap<String, usize> = HashMap::new();
    let mut task_ids = BTreeSet::new();
    for event in bida.stored_events(Some("callback_task")).await {
        *recorded.entry(event.event_type).or_default() += 1;
        task_ids.insert(event.aggregate_id);
    }
    assert_eq!(recorded, HashMap::from([("MessageDelivered".to_string(), 10_000)]));
    // Each task is named by its message id (the `webhook-id` it was
    // delivered with); where that ends in a number, the ids grow with it
    // (UUIDv8).
    let named: BTreeSet<String> = endpoint
        .hits()
        .iter()
        .filter_map(|hit| hit.message_id())
        .map(|message| TaskNaming::Ordered.task_id(&id, 0, message))
        .collect();
    assert_eq!(task_ids, named);
    let ordered = task_ids
        .iter()
        .filter(|task| uuid::Uuid::parse_str(task).is_ok_and(|u| u.get_version_num() == 8))
        .count();
    if mq.ids_end_in_a_number() {
        assert_eq!(ordered, 10_000);
    }
    let (_, page) = bida
        .get(&format!("/v1/tasks?consumer_id={id}&status=delivered&limit=1"))
        .await;
    let task = &page["items"][0];
    assert_eq!(
        (&task["status"], &task["attempt_count"], task["finished_at"].is_string()),
        (&json!("delivered"), &json!(1), true),
        "{task}"
    );
    let (status, detail) = bida.get(&format!("/v1/tasks/{}", task["id"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(detail["version"], 1, "{detail}");
    assert!(detail["request"]["body"]["text"].is_string(), "{detail}");
    println!(
        "10000 of 10000 arrived; duplicates: {}; ordered task ids: {ordered}",
        duplicates(&endpoint)
    );
}

async fn a_flaky_endpoint_loses_nothing(mq: impl TestMq) {
    let accepted = Accepted::default();
    let tally = accepted.clone();
    let endpoint = Receiver::start(move |hit, nth| {
        if unlucky(hit, nth, 5) {
            Reply::status(503)
        } else {
            tally.note(hit);
            Reply::ok()
        }
    })
    .await;
    let bida = Bida::start("").await;
    let policy = json!({"concurrency": 32, "max_attempts": 10,
                        "backoff": {"initial_ms": 50, "max_ms": 400, "jitter": 0.5},
                        "breaker": {"failures": 10, "open_ms": 500}});
    let id = mq.consumer(&bida, None, &endpoint.url("/flaky"), policy).await;
    mq.publish(numbered(10_000)).await;
    assert!(
        eventually(WAIT, || accepted.count() == 10_000).await,
        "{} of 10000 accepted",
        accepted.count()
    );
    let consumer = wait_consumer(&bida, &id, |c| c["counters"]["delivered"] == 10_000).await;
    assert_eq!(consumer["counters"]["dead"], 0, "{consumer}");
    assert!(
        consumer["counters"]["failed_attempts"].as_i64().unwrap() > 1_000,
        "{consumer}"
    );
    println!(
        "10000 accepted through a 20% failing endpoint; {} failed attempts, dead 0",
        consumer["counters"]["failed_attempts"]
    );
}

async fn a_dead_endpoint_opens_the_breaker_and_the_backlog_waits_in_the_mq(mq: impl TestMq) {
    let accepted = Accepted::default();
    let endpoint = Receiver::start(|_, _| Reply::status(503)).await;
    let bida = Bida::start("").await;
    let policy = json!({"concurrency": 8, "max_attempts": 3,
                        "backoff": {"initial_ms": 100, "max_ms": 200, "jitter": 0.0},
                        "breaker": {"failures": 5, "open_ms": 2000}});
    let id = mq.consumer(&bida, None, &endpoint.url("/down"), policy).await;
    mq.publish(numbered(10_000)).await;

    let open = wait_consumer(&bida, &id, |c| c["state"] == "breaker_open").await;
    println!("breaker open: {}", open["counters"]);
    // Taken messages end dead-lettered after their attempts; the rest stays in the MQ.
    let settled = wait_consumer(&bida, &id, |c| {
        let counters = &c["counters"];
        counters["retrying"] == 0 && counters["dead"].as_i64() > Some(0) && counters["dead"] == counters["consumed"]
    })
    .await;
    let taken = settled["counters"]["consumed"].as_i64().unwrap();
    assert!(taken < 1_000, "fetching paused early: {taken} taken");
    // Kinds that tell no backlog (MQTT) keep it all the same: `taken` says so.
    if capabilities(&bida, &id).await["lag"] == true {
        let backlog = wait_consumer(&bida, &id, |c| c["lag_total"].as_i64() > Some(9_000)).await;
        println!(
            "{taken} taken and dead-lettered; backlog in the MQ: {}",
            backlog["lag_total"]
        );
    }

    // The endpoint recovers: a probe succeeds, fetching resumes.
    let tally = accepted.clone();
    endpoint.set_behavior(move |hit, _| {
        tally.note(hit);
        Reply::ok()
    });
    let recovered = wait_consumer(&bida, &id, |c| {
        c["state"] == "running" && c["lag_total"] == 0 && c["counters"]["retrying"] == 0
    })
    .await;
    // Each probe made between the count above and the recovery (one every
    // open_ms) took one more message and dead-lettered it too.
    let dead = recovered["counters"]["dead"].as_i64().unwrap();
    assert!(
        (taken..1_000).contains(&dead),
        "{taken} taken, {dead} dead: {recovered}"
    );
    let remaining = 10_000 - dead as usize;
    assert!(
        eventually(WAIT, || accepted.count() >= remaining).await,
        "{} of {remaining} delivered after recovery\n{}",
        accepted.count(),
        bida.log()
    );

    // The dead letters are tasks like any other: replay them.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut replayed = 0;
    while replayed < dead {
        let (status, outcome) = bida
            .post("/v1/tasks/replay", json!({"consumer_id": id, "limit": 10_000}))
            .await;
        assert_eq!(status, 200, "{outcome}");
        replayed += outcome["retried"].as_i64().unwrap();
        assert!(tokio::time::Instant::now() < deadline, "replayed {replayed} of {dead}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        eventually(WAIT, || accepted.count() == 10_000).await,
        "{} of 10000 after the replay",
        accepted.count()
    );
    println!("all 10000 arrived after recovery and a replay of {dead} dead letters");
}

async fn live_changes_apply_without_a_restart(mq: impl TestMq) {
    let endpoint = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(40))).await;
    let bida = Bida::start("").await;
    let id = mq
        .consumer(&bida, None, &endpoint.url("/slow"), json!({"concurrency": 1}))
        .await;
    mq.publish(numbered(4_000)).await;
    wait_consumer(&bida, &id, |c| c["state"] == "running").await;
    assert!(endpoint.wait_for_hits(5, WAIT).await);

    // Concurrency is judged by how many requests the endpoint answers at
    // once, not by a rate: on a loaded machine rates say little.
    let slow = rate(&endpoint, 2).await;
    assert_eq!(endpoint.most_at_once(), 1, "concurrency 1 sent more at once");
    let (status, patched) = bida
        .patch(&format!("/v1/consumers/{id}"), json!({"policy": {"concurrency": 16}}))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["policy"]["concurrency"], 16, "{patched}");
    // The answer does not ask the broker (that was most of a PATCH's time);
    // a GET does (and has its answer or its error), where the broker can tell.
    assert_eq!(patched["lag"], json!([]), "{patched}");
    assert!(patched.get("lag_error").is_none(), "{patched}");
    if capabilities(&bida, &id).await["lag"] == true {
        let viewed = consumer_view(&bida, &id).await;
        let asked = viewed["lag"].as_array().is_some_and(|lag| !lag.is_empty()) || viewed.get("lag_error").is_some();
        assert!(asked, "{viewed}");
    }
    endpoint.reset_most_at_once();
    assert!(
        eventually(WAIT, || endpoint.most_at_once() >= 8).await,
        "concurrency 16 sent at most {} at once",
        endpoint.most_at_once()
    );
    let fast = rate(&endpoint, 1).await;
    println!(
        "concurrency 1: {slow:.0} msgs/s; 16: {fast:.0} msgs/s, up to {} at once",
        endpoint.most_at_once()
    );

    let (status, paused) = bida.post(&format!("/v1/consumers/{id}/pause"), json!(null)).await;
    assert_eq!(status, 200, "{paused}");
    // Paused with nothing at the endpoint, as its node reports: from then
    // on nothing more may go out.
    wait_consumer(&bida, &id, |c| {
        c["state"] == "paused"
            && c["nodes"].as_array().is_some_and(|nodes| {
                !nodes.is_empty()
                    && nodes
                        .iter()
                        .all(|n| n["report"]["state"] == "paused" && n["report"]["in_flight"] == 0)
            })
    })
    .await;
    let when_paused = endpoint.hit_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.hit_count(), when_paused, "deliveries went on after the pause");
    assert!(when_paused < 4_000, "all 4000 went out before the pause took hold");

    let (status, _) = bida.post(&format!("/v1/consumers/{id}/resume"), json!(null)).await;
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 4_000).await,
        "{} of 4000 after resuming",
        endpoint.distinct_messages()
    );
    let (_, history) = bida.get(&format!("/v1/consumers/{id}")).await;
    assert_eq!(history["policy"]["concurrency"], 16);
}

/// Requests per second the endpoint gets over the next `seconds`.
async fn rate(endpoint: &Receiver, seconds: u64) -> f64 {
    let before = endpoint.hit_count();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    (endpoint.hit_count() - before) as f64 / seconds as f64
}

async fn kill_9_mid_stream_loses_nothing(mq: impl TestMq) {
    let endpoint = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(5))).await;
    let mut bida = Bida::start("").await;
    mq.consumer(&bida, None, &endpoint.url("/k9"), json!({"concurrency": 16}))
        .await;
    mq.publish(numbered(5_000)).await;
    assert!(endpoint.wait_for_hits(1_000, WAIT).await);
    bida.kill9();
    let at_kill = endpoint.distinct_messages();
    bida.restart().await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 5_000).await,
        "{} of 5000 after kill -9 at {at_kill}\n{}",
        endpoint.distinct_messages(),
        bida.log()
    );
    println!(
        "killed at {at_kill} of 5000; all 5000 delivered; duplicates: {}",
        duplicates(&endpoint)
    );
}

async fn ordering_by_key_survives_failures(mq: impl TestMq) {
    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let seen = order.clone();
    let endpoint = Receiver::start(move |hit, nth| {
        if unlucky(hit, nth, 5) {
            return Reply::status(500);
        }
        let body: Value = serde_json::from_slice(&hit.body).unwrap_or_default();
        let key = body["key"].as_str().unwrap_or_default().to_string();
        seen.lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(body["seq"].as_u64().unwrap_or(u64::MAX));
        Reply::ok()
    })
    .await;
    let bida = Bida::start("").await;
    let policy = json!({"concurrency": 16, "ordering": "key", "max_attempts": 20,
                        "backoff": {"initial_ms": 20, "max_ms": 100, "jitter": 0.3}});
    mq.consumer(&bida, None, &endpoint.url("/ordered"), policy).await;
    let records = (0..100)
        .flat_map(|seq| {
            (0..10).map(move |k| Record {
                id: format!("k{k}-{seq}"),
                key: Some(format!("k{k}")),
                body: json!({"key": format!("k{k}"), "seq": seq}).to_string().into_bytes(),
            })
        })
        .collect();
    mq.publish(records).await;
    let total = || order.lock().unwrap().values().map(Vec::len).sum::<usize>();
    assert!(
        eventually(WAIT, || total() >= 1_000).await,
        "{} of 1000 in order",
        total()
    );
    for (key, seqs) in order.lock().unwrap().iter() {
        let expected: Vec<u64> = (0..100).collect();
        assert_eq!(seqs, &expected, "key {key} out of order");
    }
    println!(
        "10 keys x 100 in order through {} failed attempts",
        endpoint.hit_count() - 1_000
    );
}

async fn two_nodes_share_the_work_and_one_takes_over(mq: impl TestMq) {
    if support::postgres_only("two nodes share a consumer") {
        return;
    }
    let endpoint = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(10))).await;
    let mut a = Bida::start("").await;
    let b = a.join("").await;
    let id = mq
        .consumer(&a, None, &endpoint.url("/shared"), json!({"concurrency": 8}))
        .await;
    wait_consumer(&a, &id, |c| c["nodes"].as_array().map(Vec::len) == Some(2)).await;
    mq.publish(numbered(4_000)).await;
    let shared = wait_consumer(&a, &id, |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.len() == 2 && nodes.iter().all(|n| n["report"]["delivered"].as_u64() > Some(0)))
    })
    .await;
    let split: Vec<u64> = shared["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["report"]["delivered"].as_u64().unwrap())
        .collect();
    let takeover = capabilities(&a, &id).await["takeover"] == true;
    let status = a.terminate().await.expect("exit");
    assert!(status.success());
    if takeover {
        let after = wait_consumer(&b, &id, |c| c["nodes"].as_array().map(Vec::len) == Some(1)).await;
        assert_eq!(after["state"], "running");
    } else {
        // A's share waits for A (MQTT: in its session): it comes back.
        wait_consumer(&b, &id, |c| c["nodes"].as_array().map(Vec::len) == Some(1)).await;
        a.restart().await;
    }
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 4_000).await,
        "{} of 4000 after node A left\n{}",
        endpoint.distinct_messages(),
        b.log()
    );
    println!(
        "split while both ran: {split:?}; node B finished; duplicates: {}",
        duplicates(&endpoint)
    );
}

/// Arrivals at the endpoint, message ids in the order requests came in (a
/// delivery cut short never gets an answer, so the receiver's own hits,
/// recorded when it answers, would not show it). The first `fast` are
/// answered at once, the rest after `hold`; the switch is made by the
/// endpoint itself, so no test timing decides which messages are held.
#[derive(Clone)]
struct Arrivals {
    order: Arc<Mutex<Vec<String>>>,
    fast: usize,
    hold: Arc<Mutex<Duration>>,
}

impl Arrivals {
    fn new(fast: usize, hold: Duration) -> Self {
        Self {
            order: Arc::default(),
            fast,
            hold: Arc::new(Mutex::new(hold)),
        }
    }

    fn behavior(&self) -> impl Fn(&Hit, u32) -> Reply {
        let this = self.clone();
        move |hit, _| {
            let mut order = this.order.lock().unwrap();
            order.push(hit.message_id().unwrap_or_default().to_string());
            if order.len() <= this.fast {
                Reply::ok()
            } else {
                Reply::ok().after(*this.hold.lock().unwrap())
            }
        }
    }

    /// From now on every request is answered at once.
    fn answer_at_once(&self) {
        *self.hold.lock().unwrap() = Duration::ZERO;
    }

    fn len(&self) -> usize {
        self.order.lock().unwrap().len()
    }

    /// Distinct messages among the arrivals after the first `fast`.
    fn held(&self) -> Vec<String> {
        let order = self.order.lock().unwrap();
        let held: HashSet<&String> = order.iter().skip(self.fast).collect();
        held.into_iter().cloned().collect()
    }

    /// Where `id` is in the order of arrivals (0 is the first request).
    fn positions(&self, id: &str) -> Vec<usize> {
        let order = self.order.lock().unwrap();
        (0..order.len()).filter(|i| order[*i] == id).collect()
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in self.order.lock().unwrap().iter() {
            *counts.entry(id.clone()).or_default() += 1;
        }
        counts
    }
}

/// Starts a node (with `grace_ms` to stop) draining 3,000 messages; after
/// 300 the endpoint answers only after `hold`; once 16 deliveries wait on it,
/// sends SIGTERM and checks that the node exits by itself; then restarts it
/// and waits for every message. Returns how often each message arrived, and
/// which were at the endpoint when SIGTERM came.
async fn sigterm_mid_drain(
    mq: impl TestMq,
    grace_ms: &str,
    hold: Duration,
) -> (HashMap<String, usize>, Vec<String>, String) {
    const FAST: usize = 300;
    let arrivals = Arrivals::new(FAST, hold);
    let endpoint = Receiver::start(arrivals.behavior()).await;
    let mut bida = Bida::start_with_env("", &[("BIDA_SCHEDULER__SHUTDOWN_GRACE_MS", Some(grace_ms))]).await;
    let broker = mq.broker(&bida).await;
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "drain", "broker_id": broker, "source": mq.source(),
                   "endpoint": {"url": endpoint.url("/drain"), "timeout_ms": 180_000},
                   "policy": {"concurrency": 16}}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    mq.ready(&bida, consumer["id"].as_str().unwrap()).await;
    mq.publish(numbered(3_000)).await;
    assert!(
        eventually(WAIT, || arrivals.len() >= FAST + 16).await,
        "16 deliveries held at the endpoint: {} arrivals\n{}",
        arrivals.len(),
        bida.log()
    );
    let at_sigterm = arrivals.held();
    let arrived_before_sigterm = arrivals.len();
    let asked = std::time::Instant::now();
    let exit = bida.terminate().await.expect("it was running");
    println!(
        "exited {:?} after SIGTERM (grace {grace_ms} ms, endpoint answering after {hold:?})",
        asked.elapsed()
    );
    assert!(
        exit.success(),
        "the node exits by itself at SIGTERM, not killed: {exit}\n{}",
        bida.log()
    );
    arrivals.answer_at_once();
    bida.restart().await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 3_000).await,
        "{} of 3000 after the restart\n{}",
        endpoint.distinct_messages(),
        bida.log()
    );
    // What a failure is read with: the consumer's offsets and history.
    let id = consumer["id"].as_str().unwrap();
    let (_, view) = bida.get(&format!("/v1/consumers/{id}")).await;
    let (_, events) = bida.get(&format!("/v1/consumers/{id}/events")).await;
    let positions: Vec<(String, Vec<usize>)> = at_sigterm
        .iter()
        .map(|id| (id.clone(), arrivals.positions(id)))
        .filter(|(_, at)| at.len() > 1)
        .collect();
    // The first line is what a CI report keeps: the node's warnings and its
    // stopping; the whole log follows.
    let diagnosis = format!(
        "{arrived_before_sigterm} requests before SIGTERM; where those sent again arrived: {positions:?}; \
         notable log lines: {}\n\
         consumer after the restart: {view}\nits events: {events}\nlog:\n{}",
        bida.log_notable(),
        bida.log()
    );
    (arrivals.counts(), at_sigterm, diagnosis)
}

/// SIGTERM while 16 deliveries wait on an endpoint that answers within the
/// grace: they finish and are recorded before the node exits, so none of
/// them is sent again after the restart; nothing is lost.
async fn sigterm_finishes_the_deliveries_in_flight(mq: impl TestMq) {
    let (arrivals, at_sigterm, log) = sigterm_mid_drain(mq, "10000", Duration::from_millis(1500)).await;
    let again: Vec<_> = at_sigterm.iter().filter(|id| arrivals[*id] > 1).collect();
    let repeated = arrivals.values().filter(|count| **count > 1).count();
    assert!(
        again.is_empty(),
        "sent again after a graceful stop: {again:?} ({repeated} of all messages arrived more than once); {log}"
    );
}

/// SIGTERM while the endpoint holds its answers longer than the grace (1 s)
/// and the delivery timeout (180 s): the node does not wait for them; the
/// broker has them still, and after the restart every message arrives.
async fn sigterm_gives_back_what_outlasts_the_grace(mq: impl TestMq) {
    let (arrivals, at_sigterm, log) = sigterm_mid_drain(mq, "1000", Duration::from_secs(120)).await;
    assert!(
        at_sigterm.iter().all(|id| arrivals[id] >= 2),
        "given back and sent again\n{log}"
    );
}

/// The endpoint's concurrency does not wait on the event store: while appends
/// of new tasks are held up, messages keep being delivered (up to the
/// recording window) but none is acknowledged: killed then, Bida gets them
/// all again from the broker and records every one.
async fn deliveries_go_on_while_commits_are_held_up(mq: impl TestMq) {
    if support::postgres_only("Postgres locks hold up the commits") {
        return;
    }
    use sqlx::{Connection, Executor};
    let endpoint = Receiver::ok().await;
    let mut bida = Bida::start("").await;
    let id = mq
        .consumer(&bida, None, &endpoint.url("/in"), json!({"concurrency": 2}))
        .await;
    mq.publish(vec![Record {
        id: "first".into(),
        key: None,
        body: b"{}".to_vec(),
    }])
    .await;
    wait_consumer(&bida, &id, |c| c["counters"]["delivered"] == 1).await;

    // Every new task registers its id in task_streams: a share lock stalls them all.
    let mut blocker = sqlx::PgConnection::connect(&bida.db_url).await.unwrap();
    let mut held = blocker.begin().await.unwrap();
    held.execute("LOCK TABLE task_streams IN SHARE MODE").await.unwrap();
    mq.publish(numbered(50)).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 51).await,
        "{} of 51 delivered while commits were held up (concurrency 2)\n{}",
        endpoint.distinct_messages(),
        bida.log()
    );
    let waiting = wait_consumer(&bida, &id, |c| c["nodes"][0]["report"]["recording"] == 50).await;
    assert_eq!(waiting["counters"]["delivered"], 1, "recorded while held up: {waiting}");

    bida.kill9();
    held.rollback().await.unwrap();
    bida.restart().await;
    wait_consumer(&bida, &id, |c| c["counters"]["delivered"] == 51 && c["lag_total"] == 0).await;
    // Unacknowledged, they came back from the broker and went out again.
    assert!(duplicates(&endpoint) >= 50, "{} delivered twice", duplicates(&endpoint));
}

/// What Bida writes to a broker over HTTP, Bida's own consumer of that
/// kind delivers with the same body (byte for byte), content type and
/// trace context.
async fn messages_written_over_http_arrive_as_written(mq: impl TestMq) {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let broker = mq.broker(&bida).await;
    mq.consumer(&bida, Some(&broker), &endpoint.url("/in"), json!({})).await;
    let document = json!({"n": 1, "text": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80, 0x00];
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let message = |key: &str, fields: Value| {
        let mut message = mq.target(key);
        message
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        message
    };
    use base64::Engine;
    let request = json!({"messages": [
        message("k1", json!({"body": document, "headers": {"traceparent": format!("00-{trace}-b7ad6b7169203331-01")}})),
        message("k2", json!({"body_base64": base64::engine::general_purpose::STANDARD.encode(&binary), "content_type": "image/png"})),
    ]});
    let (status, answer) = bida.post(&format!("/v1/brokers/{broker}/messages"), request).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        endpoint.wait_for_hits(2, WAIT).await,
        "{} of 2 arrived",
        endpoint.hits().len()
    );
    let hits = endpoint.hits();
    let with_type = |content_type: &str| {
        hits.iter()
            .find(|hit| hit.header("content-type") == Some(content_type))
            .unwrap_or_else(|| panic!("no {content_type} delivery among {hits:?}"))
    };
    let json_hit = with_type("application/json");
    assert_eq!(
        json_hit.body.as_ref(),
        serde_json::to_vec(&document).unwrap().as_slice()
    );
    assert!(
        json_hit.header("traceparent").is_some_and(|t| t.contains(trace)),
        "the trace goes on: {json_hit:?}"
    );
    assert_eq!(
        with_type("image/png").body.as_ref(),
        binary.as_slice(),
        "bytes as written"
    );
}
