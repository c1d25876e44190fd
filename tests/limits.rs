//! A consumer's policy holds as written: its rate and concurrency for the
//! whole cluster, retries included; its live changes reach the tasks waiting
//! for a retry; replay by consumer with a dry run.

mod support;

use bida_testkit::rabbit::TestQueue;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{created, eventually, until, Bida, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(120);

/// The most arrivals in any one second (a window starting at each arrival).
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut end = 0;
    for (start, at) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < *at + Duration::from_secs(1) {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

/// The most requests at the endpoint at once, each held for `held`.
fn most_at_once(arrivals: &[Instant], held: Duration) -> usize {
    let mut edges: Vec<(Instant, i32)> = arrivals.iter().flat_map(|at| [(*at, 1), (*at + held, -1)]).collect();
    // An answer and the next request at the same instant do not overlap.
    edges.sort_by_key(|(at, step)| (*at, *step));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// The rate shares the consumer's nodes report.
fn rate_shares(view: &Value) -> Vec<f64> {
    view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["report"]["share"]["rate_per_sec"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// One draw of the three-node scenario: the limits, the endpoint's latency
/// and when the outage and the kill come. The seed is printed;
/// `BIDA_TEST_LIMITS_SEED` runs one again.
#[derive(Debug)]
struct Draw {
    seed: u64,
    rate: usize,
    concurrency: usize,
    held_ms: u64,
    messages: usize,
    outage_at: Duration,
    outage_for: Duration,
    kill_after: Duration,
}

impl Draw {
    fn new() -> Self {
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("BIDA_TEST_LIMITS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random_range(0..1_000_000));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let rate = rng.random_range(20..=80);
        Self {
            seed,
            rate,
            concurrency: rng.random_range(3..=10),
            held_ms: rng.random_range(20..=120),
            // About 18 s of work at the rate.
            messages: rate * 18,
            outage_at: Duration::from_millis(rng.random_range(2_000..=5_000)),
            outage_for: Duration::from_millis(rng.random_range(1_000..=4_000)),
            kill_after: Duration::from_millis(rng.random_range(500..=3_000)),
        }
    }
}

#[tokio::test]
async fn three_nodes_hold_one_rate_and_concurrency_through_a_burst_an_outage_and_a_kill() {
    if support::postgres_only("three nodes share one consumer's limits") {
        return;
    }
    let draw = Draw::new();
    println!("limits draw: {draw:?}");
    let (rate, concurrency, messages) = (draw.rate, draw.concurrency, draw.messages);
    let held = Duration::from_millis(draw.held_ms);
    let outage = Arc::new(AtomicBool::new(false));
    let endpoint = Receiver::start({
        let outage = outage.clone();
        move |_, _| {
            let status = if outage.load(Ordering::Relaxed) { 503 } else { 200 };
            Reply::status(status).after(held)
        }
    })
    .await;
    let a = Bida::start("").await;
    let b = a.join("").await;
    let mut c = a.join("").await;
    let queue = TestQueue::declare().await;
    let broker = created(
        &a,
        "/v1/brokers",
        json!({"name": "mq", "kind": "rabbitmq", "url": bida_testkit::rabbit::url()}),
    )
    .await;
    let consumer = created(
        &a,
        "/v1/consumers",
        json!({"name": "limited", "broker_id": broker, "source": {"queue": queue.name},
               "endpoint": {"url": endpoint.url("/limited")},
               "policy": {"rate_per_sec": rate, "concurrency": concurrency, "max_attempts": 50,
                          "backoff": {"initial_ms": 200, "max_ms": 1000, "jitter": 0.2}}}),
    )
    .await;
    a.consumer_until(&consumer, WAIT, |v| {
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["state"] == "running"))
    })
    .await;

    // A burst, an outage of the endpoint (every message of it retried), its
    // recovery with the backlog and the retries due at once, a node killed.
    queue
        .publish((0..messages).map(|i| (Some(format!("m{i}")), format!("{{\"n\":{i}}}").into_bytes())))
        .await;
    let started = Instant::now();
    tokio::time::sleep(draw.outage_at).await;
    outage.store(true, Ordering::Relaxed);
    tokio::time::sleep(draw.outage_for).await;
    outage.store(false, Ordering::Relaxed);
    tokio::time::sleep(draw.kill_after).await;
    c.kill9();
    let killed_at = Instant::now();

    // The killed node's share goes to the survivors once its heartbeat is stale.
    let after_kill = a
        .consumer_until(&consumer, WAIT, |v| {
            let shares = rate_shares(v);
            shares.len() == 2 && (shares.iter().sum::<f64>() - rate as f64).abs() < 1.0
        })
        .await;
    let moved_after = killed_at.elapsed();
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == messages).await,
        "{} of {messages} delivered\n{}",
        endpoint.distinct_messages(),
        a.log()
    );
    let arrivals: Vec<Instant> = endpoint.hits().iter().map(|h| h.at).collect();
    let per_second: Vec<usize> = (0..=started.elapsed().as_secs())
        .map(|s| {
            let from = started + Duration::from_secs(s);
            arrivals
                .iter()
                .filter(|at| **at >= from && **at < from + Duration::from_secs(1))
                .count()
        })
        .collect();
    let (busiest, at_once) = (busiest_second(&arrivals), most_at_once(&arrivals, held));
    println!(
        "seed {}: requests {} for {messages} messages; per second {per_second:?}; busiest second {busiest} \
         (limit {rate}); at once {at_once} (limit {concurrency}); shares after the kill {:?} ({moved_after:?} after it)",
        draw.seed,
        arrivals.len(),
        rate_shares(&after_kill)
    );
    assert!(
        arrivals.len() > messages,
        "the outage's failures were retried: {} requests",
        arrivals.len()
    );
    // The stated bound: 1.05 × rate plus a request per node, and one more
    // burst (5%) when a share moves.
    let bound = rate + rate / 10 + 3;
    assert!(
        busiest <= bound,
        "seed {}: {busiest} requests in one second; the cluster's limit is {rate}/s (bound {bound}): {per_second:?}",
        draw.seed
    );
    assert!(
        at_once <= concurrency,
        "seed {}: {at_once} requests at once; the cluster's concurrency is {concurrency}",
        draw.seed
    );
    drop(b);
}

#[tokio::test]
async fn live_changes_reach_the_tasks_waiting_for_their_retry() {
    let endpoint = Receiver::start(|hit, _| match (hit.path.as_str(), &hit.body[..]) {
        ("/old", _) => Reply::status(503),
        (_, b"slow") => Reply::ok().after(Duration::from_millis(1_500)),
        (_, b"wrong") => Reply::ok().body("nope"),
        _ => Reply::ok().body("accepted"),
    })
    .await;
    let bida = Bida::start("").await;
    let queue = TestQueue::declare().await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "mq", "kind": "rabbitmq", "url": bida_testkit::rabbit::url()}),
    )
    .await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "changing", "broker_id": broker, "source": {"queue": queue.name},
               "endpoint": {"url": endpoint.url("/old")},
               "policy": {"max_attempts": 10, "backoff": {"initial_ms": 4000, "max_ms": 60000, "jitter": 0}}}),
    )
    .await;
    bida.consumer_until(&consumer, WAIT, |v| v["state"] == "running").await;
    queue
        .publish(["fine", "slow", "wrong"].map(|body| (Some(body.to_string()), body.as_bytes().to_vec())))
        .await;
    let tasks_of = |consumer: String| {
        let bida = &bida;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let (_, page) = bida.get(&format!("/v1/tasks?consumer_id={consumer}")).await;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if items.len() == 3 && items.iter().all(|t| t["attempt_count"] == 1) {
                    return items;
                }
                assert!(tokio::time::Instant::now() < deadline, "{page}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let waiting = tasks_of(consumer.clone()).await;
    assert!(waiting.iter().all(|t| t["status"] == "retrying"), "{waiting:?}");

    // While they wait (4 s), the consumer moves to a new URL with a shorter
    // timeout, fewer attempts, a shorter backoff and an expectation.
    let (status, changed) = bida
        .patch(
            &format!("/v1/consumers/{consumer}"),
            json!({"endpoint": {"url": endpoint.url("/new"), "timeout_ms": 700},
                   "policy": {"max_attempts": 3, "backoff": {"initial_ms": 150, "max_ms": 150, "jitter": 0},
                              "expect": {"body_contains": "accepted"}}}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let id_of = |body: &str| {
        waiting
            .iter()
            .find(|t| t["message_id"].as_str().is_some_and(|m| m.contains(body)))
            .and_then(|t| t["id"].as_str())
            .unwrap_or_else(|| panic!("no task for {body}: {waiting:?}"))
            .to_string()
    };
    let (fine, slow, wrong) = (id_of("fine"), id_of("slow"), id_of("wrong"));
    let fine_task = bida.wait_status(&fine, "delivered", WAIT).await;
    let slow_task = bida.wait_status(&slow, "dead", WAIT).await;
    let wrong_task = bida.wait_status(&wrong, "dead", WAIT).await;

    // Every attempt after the change went to the new URL under the new policy.
    let new_hits = |body: &str| {
        endpoint
            .hits()
            .iter()
            .filter(|h| h.path == "/new" && &h.body[..] == body.as_bytes())
            .count()
    };
    // (A request cut at its timeout is not counted by the receiver.)
    assert_eq!(
        (new_hits("fine"), new_hits("wrong")),
        (1, 2),
        "3 attempts in all, not 10"
    );
    for task in [&fine_task, &slow_task, &wrong_task] {
        assert_eq!(task["policy"]["max_attempts"], 3, "{task}");
        assert_eq!(task["policy"]["timeout_ms"], 700, "{task}");
        assert!(task["url"].as_str().unwrap().ends_with("/new"), "{task}");
    }
    let slow_attempts = slow_task["attempts"].as_array().unwrap();
    assert_eq!(slow_attempts.len(), 3, "{slow_task}");
    for cut in &slow_attempts[1..] {
        assert_eq!(cut["timed_out"], true, "cut at the new timeout: {slow_task}");
        assert!(cut["latency_ms"].as_u64().unwrap() < 1_500, "{slow_task}");
    }
    let wrong_attempts = wrong_task["attempts"].as_array().unwrap();
    assert!(
        wrong_attempts[2]["error"].as_str().unwrap().contains("accepted"),
        "judged by the new expectation: {wrong_task}"
    );

    // The history says which terms each attempt ran under.
    let (_, history) = bida.get(&format!("/v1/tasks/{wrong}/events")).await;
    let events: Vec<&Value> = history["events"].as_array().expect("events").iter().collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event_type"].as_str()).collect();
    let adopted = kinds.iter().position(|k| *k == "TermsAdopted").expect("terms adopted");
    let first_failure = kinds.iter().position(|k| *k == "AttemptFailed").unwrap();
    assert!(first_failure < adopted, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "TermsAdopted").count(), 1, "{kinds:?}");
    let terms = &events[adopted]["payload"]["TermsAdopted"];
    assert_eq!(terms["policy"]["max_attempts"], 3, "{terms}");
    assert!(terms["target"]["url"].as_str().unwrap().ends_with("/new"), "{terms}");
    assert!(terms["consumer_version"].as_i64().unwrap() > 1, "{terms}");
    // The new backoff set the wait before the third attempt.
    let retry_wait = events
        .iter()
        .filter_map(|e| e["payload"]["AttemptFailed"].as_object())
        .nth(1)
        .map(|failed| {
            let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
            let attempt = &failed["attempt"];
            let ended =
                at(&attempt["started_at"]) + chrono::Duration::milliseconds(attempt["latency_ms"].as_i64().unwrap());
            at(&failed["next_attempt_at"]) - ended
        })
        .expect("a second failure");
    assert_eq!(retry_wait.num_milliseconds(), 150, "{history}");

    // Replay by consumer: a dry run counts the dead ones (once the task list,
    // which it reads, has folded their deaths); another consumer's filter
    // matches none of them.
    let listed_dead = || async {
        let (_, page) = bida.get(&format!("/v1/tasks?consumer_id={consumer}&status=dead")).await;
        page["items"].as_array().map_or(0, Vec::len) == 2
    };
    assert!(until(WAIT, listed_dead).await, "the task list shows both dead");
    let (status, dry) = bida
        .post("/v1/tasks/replay", json!({"consumer_id": consumer, "dry_run": true}))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["matched"], 2, "{dry}");
    let mut matched: Vec<String> = dry["matched_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    matched.sort();
    let mut dead = vec![slow.clone(), wrong.clone()];
    dead.sort();
    assert_eq!(matched, dead);
    assert_eq!(dry["retried"], 0);
    let (_, none) = bida
        .post("/v1/tasks/replay", json!({"consumer_id": "other", "dry_run": true}))
        .await;
    assert_eq!(none["matched"], 0, "{none}");
    let (_, still) = bida.get(&format!("/v1/tasks/{slow}")).await;
    assert_eq!(still["status"], "dead", "a dry run changes nothing");
}

#[tokio::test]
async fn an_endpoint_host_limit_holds_for_api_tasks_and_leaves_other_hosts_alone() {
    let held = Duration::from_millis(100);
    let endpoint = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(100))).await;
    let bida =
        Bida::start("[[delivery.host_limits]]\nhost = \"LocalHost\"\nrate_per_sec = 10\nconcurrency = 2\n").await;
    let limited_url = endpoint.url("/slow-host").replace("127.0.0.1", "localhost");
    let submissions = (0..30).map(|i| {
        let url = if i % 2 == 0 {
            limited_url.clone()
        } else {
            endpoint.url("/other-host")
        };
        let bida = &bida;
        async move { bida.submit(json!({"url": url, "params": {"n": i}})).await }
    });
    let ids = futures::future::join_all(submissions).await;
    for id in &ids {
        bida.wait_status(id, "delivered", WAIT).await;
    }
    let arrivals = |path: &str| -> Vec<Instant> {
        endpoint
            .hits()
            .iter()
            .filter(|h| h.path == path)
            .map(|h| h.at)
            .collect()
    };
    let (limited, other) = (arrivals("/slow-host"), arrivals("/other-host"));
    assert_eq!((limited.len(), other.len()), (15, 15));
    let (busiest, at_once) = (busiest_second(&limited), most_at_once(&limited, held));
    let span = |hits: &[Instant]| *hits.iter().max().unwrap() - *hits.iter().min().unwrap();
    println!(
        "limited host: busiest second {busiest}, at once {at_once}, spread over {:?}; \
         other host: at once {}, spread over {:?}",
        span(&limited),
        most_at_once(&other, held),
        span(&other)
    );
    assert!(
        busiest <= 10 + 1 + 1,
        "{busiest} requests in one second to a host limited to 10/s"
    );
    assert!(at_once <= 2, "{at_once} requests at once to a host limited to 2");
}
