//! Pull consumers end to end: the real binary, the real RabbitMQ and a
//! Kafka-protocol broker (tansu), members pulling over HTTP as client
//! processes do. Messages are told apart by their bodies (`{"n": i}`).

mod mqs;
mod support;

use mqs::{on_every_mq, Record, TestMq};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Bida;

const WAIT: Duration = Duration::from_secs(120);

/// Each scenario against RabbitMQ and Kafka: `scenario::rabbitmq`, `scenario::kafka`.
macro_rules! on_rabbitmq_and_kafka {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn rabbitmq() {
                    super::$scenario(super::mqs::rabbitmq::Queue::new().await).await
                }

                #[tokio::test]
                async fn kafka() {
                    super::$scenario(super::mqs::kafka::Topic::new().await).await
                }
            }
        )*
    };
}

on_every_mq!(three_members_share_every_message);

on_rabbitmq_and_kafka!(
    a_silent_members_messages_go_to_another,
    broadcast_gives_every_member_every_message,
);

fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            id: format!("m{i}"),
            key: Some(format!("k{}", i % 8)),
            body: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .collect()
}

fn bodies(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!(r#"{{"n":{i}}}"#)).collect()
}

/// Creates a pull consumer on the test's broker with `endpoint`'s settings.
async fn pull_consumer(mq: &impl TestMq, bida: &Bida, endpoint: Value, policy: Value) -> String {
    let broker = mq.broker(bida).await;
    let mut pull = json!({"kind": "pull"});
    pull.as_object_mut()
        .unwrap()
        .extend(endpoint.as_object().unwrap().clone());
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "pulled", "broker_id": broker, "source": mq.source(),
                   "endpoint": pull, "policy": policy}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    assert_eq!(consumer["endpoint"]["kind"], "pull", "{consumer}");
    let id = consumer["id"].as_str().unwrap().to_string();
    mq.ready(bida, &id).await;
    id
}

async fn pull(bida: &Bida, consumer: &str, member: &str, max: u32, wait_ms: u64) -> Value {
    let (status, pulled) = bida
        .post(
            &format!("/v1/consumers/{consumer}/pull"),
            json!({"member": member, "max": max, "wait_ms": wait_ms}),
        )
        .await;
    assert_eq!(status, 200, "{pulled}\n{}", bida.log());
    pulled
}

fn leases(pulled: &Value) -> Vec<Value> {
    pulled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["lease"].clone())
        .collect()
}

fn text(message: &Value) -> String {
    message["body"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{message}"))
        .to_string()
}

async fn settle(bida: &Bida, consumer: &str, verb: &str, body: Value) -> Value {
    let (status, settled) = bida.post(&format!("/v1/consumers/{consumer}/{verb}"), body).await;
    assert_eq!(status, 200, "{settled}");
    settled
}

async fn ack(bida: &Bida, consumer: &str, member: &str, leases: Vec<Value>) -> Value {
    settle(bida, consumer, "ack", json!({"leases": leases, "member": member})).await
}

/// A member that pulls and acks until `until` says stop (or the time is up);
/// what it received, in order, with each message's attempt number.
async fn member(
    bida: &Bida,
    consumer: &str,
    name: &str,
    max: u32,
    received: Arc<Mutex<Vec<(String, String, u64)>>>,
    until: impl Fn() -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !until() && tokio::time::Instant::now() < deadline {
        let pulled = pull(bida, consumer, name, max, 500).await;
        let messages = pulled["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            continue;
        }
        for message in &messages {
            received
                .lock()
                .unwrap()
                .push((name.to_string(), text(message), message["attempt"].as_u64().unwrap()));
        }
        let settled = ack(bida, consumer, name, leases(&pulled)).await;
        assert_eq!(
            settled["settled"].as_array().unwrap().len(),
            messages.len(),
            "{settled}"
        );
    }
}

async fn consumer_view(bida: &Bida, id: &str) -> Value {
    bida.get(&format!("/v1/consumers/{id}")).await.1
}

async fn wait_view(bida: &Bida, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, view) = bida.get(path).await;
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got there: {view}\n{}",
            bida.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Cluster mode: three members pulling at once get disjoint sets of messages
/// that together are every message, and the broker's backlog drains.
async fn three_members_share_every_message(mq: impl TestMq) {
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"lease_ms": 120000}), json!({})).await;
    mq.publish(numbered(300)).await;
    let received = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let all_in = || received.lock().unwrap().len() >= 300;
    tokio::join!(
        member(&bida, &id, "m1", 7, received.clone(), all_in),
        member(&bida, &id, "m2", 7, received.clone(), all_in),
        member(&bida, &id, "m3", 7, received.clone(), all_in),
    );
    let received = received.lock().unwrap().clone();
    let mut by_body: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, body, _) in &received {
        by_body.entry(body).or_default().push(member);
    }
    let twice: Vec<_> = by_body.iter().filter(|(_, members)| members.len() > 1).collect();
    assert!(twice.is_empty(), "given to two members: {twice:?}");
    assert_eq!(
        by_body.keys().map(|b| b.to_string()).collect::<BTreeSet<_>>(),
        bodies(300)
    );
    let members: BTreeSet<&str> = received.iter().map(|(m, _, _)| m.as_str()).collect();
    assert!(members.len() >= 2, "one member took everything: {members:?}");
    let view = wait_view(&bida, &format!("/v1/consumers/{id}"), |c| {
        c["counters"]["delivered"] == 300 && c["lag_total"] == 0
    })
    .await;
    assert_eq!(view["counters"]["dead"], 0, "{view}");
    let (_, listed) = bida.get(&format!("/v1/consumers/{id}/members")).await;
    let acked: i64 = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["acked"].as_i64().unwrap())
        .sum();
    assert_eq!(acked, 300, "{listed}");
    assert_eq!(listed["lanes"][0]["waiting"], 0, "{listed}");
    assert_eq!(listed["lanes"][0]["leased"], 0, "{listed}");
}

/// A member that stops heartbeating mid-lease (killed) is gone after the
/// consumer's `member_timeout_ms`: its leased messages go to another member
/// long before their lease would end, as a second attempt.
async fn a_silent_members_messages_go_to_another(mq: impl TestMq) {
    let bida = Bida::start("").await;
    let id = pull_consumer(
        &mq,
        &bida,
        json!({"lease_ms": 600000, "member_timeout_ms": 3000}),
        json!({"backoff": {"initial_ms": 100, "max_ms": 100}}),
    )
    .await;
    mq.publish(numbered(20)).await;
    let mut held = BTreeMap::new();
    while held.is_empty() {
        let pulled = pull(&bida, &id, "doomed", 5, 5000).await;
        for message in pulled["messages"].as_array().unwrap() {
            held.insert(text(message), message["task_id"].as_str().unwrap().to_string());
        }
    }
    // "doomed" never acks and never heartbeats again.
    let received = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let got_all = || {
        let received = received.lock().unwrap();
        received
            .iter()
            .map(|(_, body, _)| body.clone())
            .collect::<BTreeSet<_>>()
            .len()
            >= 20
    };
    member(&bida, &id, "survivor", 10, received.clone(), got_all).await;
    let received = received.lock().unwrap().clone();
    let bodies_seen: BTreeSet<String> = received.iter().map(|(_, b, _)| b.clone()).collect();
    assert_eq!(bodies_seen, bodies(20), "{}", bida.log());
    for (body, task_id) in &held {
        let again = received.iter().find(|(_, b, _)| b == body).unwrap();
        assert_eq!(again.2, 2, "{body}: its second lease");
        let (_, task) = bida.get(&format!("/v1/tasks/{task_id}")).await;
        assert_eq!(task["status"], "delivered", "{task}");
        let first = &task["attempts"][0];
        assert!(
            first["error"].as_str().unwrap_or_default().contains("doomed"),
            "the first attempt names the member that held it: {task}"
        );
    }
    let listed = wait_view(&bida, &format!("/v1/consumers/{id}/members"), |m| {
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["member"] == "doomed" && m["alive"] == false)
    })
    .await;
    let doomed = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == "doomed")
        .unwrap();
    assert_eq!(doomed["leases_in_flight"], 0, "{listed}");
}

/// Broadcast mode: every live member gets every message, each its own copy
/// with its own attempts.
async fn broadcast_gives_every_member_every_message(mq: impl TestMq) {
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"mode": "broadcast"}), json!({})).await;
    for name in ["m1", "m2", "m3"] {
        let (status, settings) = bida
            .post(&format!("/v1/consumers/{id}/members/{name}/heartbeat"), json!({}))
            .await;
        assert_eq!(status, 200, "{settings}");
        assert_eq!(settings["mode"], "broadcast");
    }
    // The consumer reads its live members once a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    mq.publish(numbered(40)).await;
    let received = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let each_has_all = || {
        let received = received.lock().unwrap();
        ["m1", "m2", "m3"]
            .iter()
            .all(|m| received.iter().filter(|(name, _, _)| name == m).count() >= 40)
    };
    tokio::join!(
        member(&bida, &id, "m1", 10, received.clone(), each_has_all),
        member(&bida, &id, "m2", 10, received.clone(), each_has_all),
        member(&bida, &id, "m3", 10, received.clone(), each_has_all),
    );
    let received = received.lock().unwrap().clone();
    for name in ["m1", "m2", "m3"] {
        let got: Vec<&String> = received
            .iter()
            .filter(|(m, _, _)| m == name)
            .map(|(_, b, _)| b)
            .collect();
        assert_eq!(got.len(), 40, "{name} got {} (duplicates?)", got.len());
        assert_eq!(got.into_iter().cloned().collect::<BTreeSet<_>>(), bodies(40), "{name}");
    }
    let (_, listed) = bida.get(&format!("/v1/consumers/{id}/members")).await;
    let lanes: Vec<&str> = listed["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lane"].as_str().unwrap())
        .collect();
    assert_eq!(
        lanes,
        [id.clone(), format!("{id}/m1"), format!("{id}/m2"), format!("{id}/m3")],
        "{listed}"
    );
}

/// Members are listed with their address and version; one that stops
/// heartbeating is shown as gone; leases in flight and acks are counted.
#[tokio::test]
async fn heartbeats_keep_members_alive_and_silence_shows_them_gone() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"member_timeout_ms": 3000}), json!({})).await;
    for name in ["steady", "quiet"] {
        let (status, _) = bida
            .post(
                &format!("/v1/consumers/{id}/members/{name}/heartbeat"),
                json!({"address": format!("{name}.example:7000"), "client_version": "test/1"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    mq.publish(numbered(3)).await;
    let mut pulled = Vec::new();
    while pulled.len() < 3 {
        let more = pull(&bida, &id, "steady", 3, 5000).await;
        pulled.extend(leases(&more));
    }
    ack(&bida, &id, "steady", pulled[..2].to_vec()).await;
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _) = bida
            .post(&format!("/v1/consumers/{id}/members/steady/heartbeat"), json!(null))
            .await;
        assert_eq!(status, 200);
    }
    let (_, listed) = bida.get(&format!("/v1/consumers/{id}/members")).await;
    let find = |name: &str| {
        listed["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["member"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {listed}"))
            .clone()
    };
    let (steady, quiet) = (find("steady"), find("quiet"));
    assert_eq!(steady["alive"], true, "{listed}");
    assert_eq!(quiet["alive"], false, "{listed}");
    assert_eq!(steady["address"], "steady.example:7000");
    assert_eq!(quiet["client_version"], "test/1");
    assert_eq!(steady["acked"], 2, "{listed}");
    assert_eq!(steady["leases_in_flight"], 1, "{listed}");
    assert!(steady["acked_per_sec"].as_f64().unwrap() > 0.0, "{listed}");
    // A bad name is refused, naming the field.
    let (status, problem) = bida
        .post(&format!("/v1/consumers/{id}/pull"), json!({"member": "no spaces"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("member"), "{problem}");
}

/// A live change reaches members in their next pull: the batch size, the
/// concurrency hint and a pause (no messages while paused).
#[tokio::test]
async fn a_config_change_reaches_members() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"batch": 50}), json!({"concurrency": 4})).await;
    mq.publish(numbered(20)).await;
    let (status, patched) = bida
        .patch(
            &format!("/v1/consumers/{id}"),
            json!({"endpoint": {"batch": 3}, "policy": {"concurrency": 9}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let first = pull(&bida, &id, "m", 100, 5000).await;
    assert_eq!(first["settings"]["batch"], 3, "{first}");
    assert_eq!(first["settings"]["concurrency"], 9, "{first}");
    let taken = leases(&first).len();
    assert!((1..=3).contains(&taken), "{first}");
    ack(&bida, &id, "m", leases(&first)).await;

    let (status, _) = bida.post(&format!("/v1/consumers/{id}/pause"), json!({})).await;
    assert_eq!(status, 200);
    let paused = pull(&bida, &id, "m", 3, 1500).await;
    assert_eq!(paused["settings"]["paused"], true, "{paused}");
    assert!(leases(&paused).is_empty(), "nothing while paused: {paused}");
    let (status, _) = bida.post(&format!("/v1/consumers/{id}/resume"), json!({})).await;
    assert_eq!(status, 200);
    let resumed = pull(&bida, &id, "m", 3, 5000).await;
    assert_eq!(resumed["settings"]["paused"], false, "{resumed}");
    assert!(!leases(&resumed).is_empty(), "{resumed}");

    // An HTTP setting on a pull endpoint, or ordering by key, is refused.
    let (status, problem) = bida
        .patch(
            &format!("/v1/consumers/{id}"),
            json!({"endpoint": {"url": "http://h/x"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = bida
        .patch(&format!("/v1/consumers/{id}"), json!({"policy": {"ordering": "key"}}))
        .await;
    assert_eq!(status, 422, "{problem}");
    // A push consumer is not pulled.
    let push = mq.consumer(&bida, None, "http://127.0.0.1:9/in", json!({})).await;
    let (status, problem) = bida
        .post(&format!("/v1/consumers/{push}/pull"), json!({"member": "m"}))
        .await;
    assert_eq!(status, 409, "{problem}");
}

/// A nack retries after its delay as the next attempt; a nack with `dead`
/// dead-letters the message, and replaying the dead letter gives it to the
/// members again.
#[tokio::test]
async fn nacks_retry_dead_letter_and_replay() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({}), json!({"max_attempts": 5})).await;
    mq.publish(numbered(1)).await;
    let first = pull(&bida, &id, "m", 1, 10000).await;
    let message = first["messages"][0].clone();
    assert_eq!(message["attempt"], 1, "{first}");
    let task_id = message["task_id"].as_str().unwrap().to_string();
    let settled = settle(
        &bida,
        &id,
        "nack",
        json!({"leases": [message["lease"]], "delay_ms": 300, "reason": "busy"}),
    )
    .await;
    assert_eq!(settled["settled"].as_array().unwrap().len(), 1, "{settled}");
    // Settled once: the same lease again is no longer held.
    let again = settle(&bida, &id, "ack", json!({"leases": [message["lease"]]})).await;
    assert_eq!(again["expired"].as_array().unwrap().len(), 1, "{again}");

    let second = pull(&bida, &id, "m", 1, 10000).await;
    assert_eq!(second["messages"][0]["task_id"], task_id.as_str(), "{second}");
    assert_eq!(second["messages"][0]["attempt"], 2, "{second}");
    settle(
        &bida,
        &id,
        "nack",
        json!({"leases": [second["messages"][0]["lease"]], "dead": true, "reason": "poison"}),
    )
    .await;
    let task = wait_view(&bida, &format!("/v1/tasks/{task_id}"), |t| t["status"] == "dead").await;
    assert!(
        task["attempts"][0]["error"].as_str().unwrap().contains("busy"),
        "{task}"
    );
    assert!(
        task["attempts"][1]["error"].as_str().unwrap().contains("poison"),
        "{task}"
    );

    // Members pull it as it was consumed: no edit on replay.
    let (status, problem) = bida
        .post(&format!("/v1/tasks/{task_id}/replay"), json!({"body": "other"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, retried) = bida.post(&format!("/v1/tasks/{task_id}/retry"), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    let third = pull(&bida, &id, "m", 1, 10000).await;
    assert_eq!(third["messages"][0]["task_id"], task_id.as_str(), "{third}");
    ack(&bida, &id, "m", leases(&third)).await;
    wait_view(&bida, &format!("/v1/tasks/{task_id}"), |t| t["status"] == "delivered").await;
}

/// Leases live in the store, not in a node: a member pulls from one node and
/// acks through another after the first was killed.
#[tokio::test]
async fn a_lease_outlives_the_node_that_gave_it() {
    if support::postgres_only("several nodes") {
        return;
    }
    let mq = mqs::rabbitmq::Queue::new().await;
    let mut first = Bida::start("").await;
    let second = first.join("").await;
    let id = pull_consumer(&mq, &first, json!({}), json!({})).await;
    mq.publish(numbered(5)).await;
    let mut held = Vec::new();
    while held.len() < 5 {
        held.extend(leases(&pull(&first, &id, "m", 5, 5000).await));
    }
    first.kill9();
    let settled = ack(&second, &id, "m", held).await;
    assert_eq!(settled["settled"].as_array().unwrap().len(), 5, "{settled}");
    let view = wait_view(&second, &format!("/v1/consumers/{id}"), |c| {
        c["counters"]["delivered"] == 5
    })
    .await;
    assert_eq!(view["counters"]["dead"], 0);
    let _ = consumer_view(&second, &id).await;
}

// Randomized runs of the pull promises (as tests/stress.rs does for push):
// each run draws from its seed the broker (RabbitMQ or Kafka), a few hundred
// messages published in random chunks while members pull, one to four
// members with random batch sizes that ack most messages, nack some (with a
// random delay), forget some (their lease runs out) and may go silent for
// good (their leases return once they are gone), and maybe a kill -9 of the
// node at a random moment, restarted after a random pause (members keep
// calling through it). Then: every message was acked once and only once
// (settled; an ack whose answer was lost may have been), none dead, attempts
// counted one per lease (with a kill, one per lease a member saw or not: a
// pull answered as the node died), a message given again only after its
// earlier lease failed, the lanes empty and the broker drained. The normal suite runs two seeds; more:
//
//     BIDA_TEST_PULL_RUNS=20 cargo test -p bida --test pull pull_stress -- --ignored --nocapture
//
// `BIDA_TEST_PULL_SEED=N` replays one run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a member did with one leased message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Acked,
    /// Acked too late: the lease was gone.
    AckRefused,
    Nacked,
    Forgotten,
    /// Held when its member went silent.
    Abandoned,
    /// The node died before answering the ack or nack: recorded or not.
    Unknown,
}

#[derive(Clone, Debug)]
struct Lease {
    /// When its pull was answered, counted over all members: members settle
    /// and report their batches at their own pace (one may hold a lease
    /// across an outage while another is given the message again).
    received: u64,
    member: usize,
    body: String,
    attempt: u64,
    fate: Fate,
}

/// One run's conditions, drawn from its seed.
#[derive(Debug)]
struct PullRun {
    seed: u64,
    kafka: bool,
    messages: usize,
    members: usize,
    lease_ms: u64,
    /// Per member: pulls after which it goes silent (none: it never does).
    silent_after: Vec<Option<u32>>,
    /// A kill -9 this long after the members start, restarted after the second.
    kill: Option<(Duration, Duration)>,
}

impl PullRun {
    fn draw(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let members = rng.random_range(1..=4);
        Self {
            seed,
            kafka: rng.random_bool(0.5),
            messages: rng.random_range(100..=300),
            members,
            lease_ms: rng.random_range(1_000..=3_000),
            // The first member stays, so someone is left to pull.
            silent_after: (0..members)
                .map(|m| (m > 0 && rng.random_bool(0.4)).then(|| rng.random_range(1..=6)))
                .collect(),
            kill: rng.random_bool(0.5).then(|| {
                (
                    Duration::from_millis(rng.random_range(300..=4_000)),
                    Duration::from_millis(rng.random_range(0..=2_000)),
                )
            }),
        }
    }
}

fn pull_seeds(count: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("BIDA_TEST_PULL_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let mut rng = rand::rng();
    (0..count).map(|_| rng.random_range(0..1_000_000)).collect()
}

/// The node as members reach it: through a kill -9 and restart (same
/// address), a call that gets no answer is `None`.
#[derive(Clone)]
struct Node {
    http: reqwest::Client,
    url: String,
}

impl Node {
    fn of(bida: &Bida) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            url: bida.url.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(support::ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status();
        let body: Value = response.json().await.ok()?;
        match status.as_u16() {
            200..=299 => Some(body),
            // Starting up, or the store not reachable yet.
            502..=504 => None,
            _ => panic!("{status}: {body}"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Option<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// What the members of a run saw.
#[derive(Default)]
struct Seen {
    leases: Vec<Lease>,
    /// Pull answers received so far, by all members.
    pulls_answered: u64,
    /// Bodies whose ack was answered `settled`.
    acked: BTreeSet<String>,
    /// Bodies whose ack got no answer.
    maybe_acked: BTreeSet<String>,
}

/// One member of a randomized run: pulls until the run is done (or it goes
/// silent), settling each message as its dice say.
async fn random_member(
    node: Node,
    consumer: &str,
    run: &PullRun,
    index: usize,
    seen: Arc<Mutex<Seen>>,
    done: &std::sync::atomic::AtomicBool,
) {
    let mut rng = StdRng::seed_from_u64(run.seed.wrapping_mul(31).wrapping_add(index as u64));
    let name = format!("member-{index}");
    let mut pulls = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let pull = json!({"member": name, "max": rng.random_range(1..=20), "wait_ms": 300});
        let Some(pulled) = node.post(&format!("/v1/consumers/{consumer}/pull"), pull).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        pulls += 1;
        let received = {
            let mut seen = seen.lock().unwrap();
            seen.pulls_answered += 1;
            seen.pulls_answered
        };
        let silent = run.silent_after[index].is_some_and(|after| pulls >= after);
        let mut to_ack = Vec::new();
        let mut to_nack = Vec::new();
        let mut mine = Vec::new();
        for message in pulled["messages"].as_array().unwrap() {
            let fate = match rng.random_range(0..100) {
                _ if silent => Fate::Abandoned,
                0..80 => Fate::Acked,
                80..90 => Fate::Nacked,
                _ => Fate::Forgotten,
            };
            match fate {
                Fate::Acked => to_ack.push(message["lease"].clone()),
                Fate::Nacked => to_nack.push(message["lease"].clone()),
                _ => {}
            }
            let lease = Lease {
                received,
                member: index,
                body: text(message),
                attempt: message["attempt"].as_u64().unwrap(),
                fate,
            };
            mine.push((message["lease"].as_str().unwrap().to_string(), lease));
        }
        if silent {
            seen.lock()
                .unwrap()
                .leases
                .extend(mine.into_iter().map(|(_, lease)| lease));
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
        if !to_nack.is_empty() {
            let nack = json!({"leases": to_nack, "delay_ms": rng.random_range(0..300)});
            if node
                .post(&format!("/v1/consumers/{consumer}/nack"), nack)
                .await
                .is_none()
            {
                for (_, lease) in &mut mine {
                    if lease.fate == Fate::Nacked {
                        lease.fate = Fate::Unknown;
                    }
                }
            }
        }
        let mut seen = if to_ack.is_empty() {
            seen.lock().unwrap()
        } else {
            let ack = json!({"leases": to_ack, "member": name});
            let settled = node.post(&format!("/v1/consumers/{consumer}/ack"), ack).await;
            let mut seen = seen.lock().unwrap();
            for (id, lease) in &mut mine {
                if lease.fate != Fate::Acked {
                    continue;
                }
                match &settled {
                    None => {
                        lease.fate = Fate::Unknown;
                        seen.maybe_acked.insert(lease.body.clone());
                    }
                    Some(settled) if settled["expired"].as_array().unwrap().iter().any(|l| l == id.as_str()) => {
                        lease.fate = Fate::AckRefused;
                    }
                    Some(_) => assert!(
                        seen.acked.insert(lease.body.clone()),
                        "{} settled by two acks (seed {})",
                        lease.body,
                        run.seed
                    ),
                }
            }
            seen
        };
        seen.leases.extend(mine.into_iter().map(|(_, lease)| lease));
    }
}

async fn pull_run(run: PullRun) {
    if run.kafka {
        pull_run_on(mqs::kafka::Topic::new().await, run).await
    } else {
        pull_run_on(mqs::rabbitmq::Queue::new().await, run).await
    }
}

/// Done once every message was delivered and nothing waits in a lane.
async fn run_is_done(node: &Node, consumer: &str, messages: usize) -> bool {
    let Some(view) = node.get(&format!("/v1/consumers/{consumer}")).await else {
        return false;
    };
    let Some(listed) = node.get(&format!("/v1/consumers/{consumer}/members")).await else {
        return false;
    };
    view["counters"]["delivered"] == messages
        && listed["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|lane| lane["waiting"] == 0 && lane["leased"] == 0)
}

async fn pull_run_on(mq: impl TestMq, run: PullRun) {
    let mut bida = Bida::start("").await;
    let id = random_pull_consumer(&mq, &bida, &run).await;
    let node = Node::of(&bida);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = std::sync::atomic::AtomicBool::new(false);
    let members = (0..run.members).map(|m| random_member(node.clone(), &id, &run, m, seen.clone(), &done));
    let watch = async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !run_is_done(&node, &id, run.messages).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "seed {}: the run never finished",
                run.seed
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let crash = async {
        if let Some((after, down)) = run.kill {
            tokio::time::sleep(after).await;
            bida.kill9();
            tokio::time::sleep(down).await;
            bida.restart().await;
        }
    };
    tokio::join!(
        futures::future::join_all(members),
        publish_in_chunks(&mq, &run),
        watch,
        crash
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut leases = seen.leases;
    // In the order the node gave them (stable: one pull's leases keep theirs).
    leases.sort_by_key(|lease| lease.received);
    let given_again = leases.len() - leases.iter().map(|l| &l.body).collect::<BTreeSet<_>>().len();
    let per_member: Vec<usize> = (0..run.members)
        .map(|m| leases.iter().filter(|l| l.member == m).count())
        .collect();
    println!(
        "pull seed={} {} messages={} members={} lease_ms={} silent={:?} kill={:?} -> leases={} per member={:?} given again={} acked={} unanswered acks={}",
        run.seed,
        if run.kafka { "kafka" } else { "rabbitmq" },
        run.messages,
        run.members,
        run.lease_ms,
        run.silent_after,
        run.kill,
        leases.len(),
        per_member,
        given_again,
        seen.acked.len(),
        seen.maybe_acked.len()
    );
    let covered: BTreeSet<String> = seen.acked.union(&seen.maybe_acked).cloned().collect();
    assert_eq!(
        covered,
        bodies(run.messages),
        "seed {}: not every message was acked\n{}",
        run.seed,
        bida.log()
    );
    // One attempt per lease, in order; a message given again only after its
    // earlier lease failed (or its ack went unanswered).
    let mut by_body: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for lease in &leases {
        by_body.entry(&lease.body).or_default().push(lease);
    }
    for (body, given) in &by_body {
        let attempts: Vec<u64> = given.iter().map(|l| l.attempt).collect();
        if run.kill.is_none() {
            assert_eq!(
                attempts,
                (1..=given.len() as u64).collect::<Vec<_>>(),
                "seed {}: {body}: {given:?}",
                run.seed
            );
        } else {
            // A pull answered as the node died leased messages its member
            // never saw: their leases ran out, attempts that no member saw.
            assert!(
                attempts.windows(2).all(|pair| pair[0] < pair[1]),
                "seed {}: {body}: {given:?}",
                run.seed
            );
        }
        for earlier in &given[..given.len() - 1] {
            assert_ne!(
                earlier.fate,
                Fate::Acked,
                "seed {}: {body} given again after an ack: {given:?}",
                run.seed
            );
        }
    }
    // What a restart had the broker give again (recorded before) is
    // committed a moment later.
    let view = wait_view(&bida, &format!("/v1/consumers/{id}"), |c| c["lag_total"] == 0).await;
    assert_eq!(view["counters"]["dead"], 0, "seed {}: {view}", run.seed);
    assert_eq!(view["counters"]["delivered"], run.messages, "seed {}: {view}", run.seed);
}

async fn random_pull_consumer(mq: &impl TestMq, bida: &Bida, run: &PullRun) -> String {
    pull_consumer(
        mq,
        bida,
        json!({"lease_ms": run.lease_ms, "member_timeout_ms": 3000}),
        json!({"max_attempts": 30, "backoff": {"initial_ms": 50, "max_ms": 500}}),
    )
    .await
}

/// Publishes the run's messages in random chunks with random pauses.
async fn publish_in_chunks(mq: &impl TestMq, run: &PullRun) {
    let mut rng = StdRng::seed_from_u64(run.seed ^ 0x5eed);
    let mut records = numbered(run.messages).into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<Record> = records.by_ref().take(rng.random_range(1..=60)).collect();
        mq.publish(chunk).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_pull_runs_keep_every_promise() {
    for seed in pull_seeds(2) {
        pull_run(PullRun::draw(seed)).await;
    }
}

/// The long version: `BIDA_TEST_PULL_RUNS` runs (20 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 15 s a run; run with --ignored"]
async fn pull_stress() {
    let count = std::env::var("BIDA_TEST_PULL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for seed in pull_seeds(count) {
        pull_run(PullRun::draw(seed)).await;
    }
}

/// A member removed for good: its broadcast copies, waiting or leased, are
/// cancelled, and it leaves the list.
#[tokio::test]
async fn a_removed_member_takes_nothing_with_it() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"mode": "broadcast", "lease_ms": 600000}), json!({})).await;
    for name in ["stays", "leaves"] {
        let (status, _) = bida
            .post(&format!("/v1/consumers/{id}/members/{name}/heartbeat"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    mq.publish(numbered(5)).await;
    let mut got = BTreeSet::new();
    while got.len() < 5 {
        let pulled = pull(&bida, &id, "stays", 5, 5000).await;
        got.extend(pulled["messages"].as_array().unwrap().iter().map(text));
        ack(&bida, &id, "stays", leases(&pulled)).await;
    }
    // "leaves" holds one copy and has four waiting.
    let held = pull(&bida, &id, "leaves", 1, 5000).await;
    assert_eq!(leases(&held).len(), 1, "{held}");
    let (status, removed) = bida.delete(&format!("/v1/consumers/{id}/members/leaves")).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["cancelled"], 5, "{removed}");
    let (_, listed) = bida.get(&format!("/v1/consumers/{id}/members")).await;
    let names: Vec<&str> = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stays"], "{listed}");
    let task = held["messages"][0]["task_id"].as_str().unwrap();
    let (_, task) = bida.get(&format!("/v1/tasks/{task}")).await;
    assert_eq!(task["status"], "cancelled", "{task}");
    let (status, _) = bida.delete(&format!("/v1/consumers/{id}/members/leaves")).await;
    assert_eq!(status, 404);
}

/// Members behind: once a lane holds `max_waiting` messages the consumer
/// records no more, and the broker keeps the rest (unacknowledged, up to the
/// consumer's prefetch); as members catch up, the rest follows.
#[tokio::test]
async fn a_full_lane_leaves_the_backlog_in_the_broker() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let id = pull_consumer(&mq, &bida, json!({"max_waiting": 20}), json!({"concurrency": 4})).await;
    mq.publish(numbered(200)).await;
    let members = format!("/v1/consumers/{id}/members");
    wait_view(&bida, &members, |m| m["lanes"][0]["waiting"].as_i64() >= Some(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, listed) = bida.get(&members).await;
    let waiting = listed["lanes"][0]["waiting"].as_i64().unwrap();
    // The limit, overshot by at most the deliveries that passed it at once.
    assert!(waiting <= 20 + 4, "{listed}");
    let view = consumer_view(&bida, &id).await;
    assert!(view["counters"]["consumed"].as_i64().unwrap() <= 20 + 4, "{view}");

    let received = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let all_in = || received.lock().unwrap().len() >= 200;
    member(&bida, &id, "m", 50, received.clone(), all_in).await;
    let got: BTreeSet<String> = received.lock().unwrap().iter().map(|(_, b, _)| b.clone()).collect();
    assert_eq!(got, bodies(200));
    wait_view(&bida, &format!("/v1/consumers/{id}"), |c| {
        c["counters"]["delivered"] == 200 && c["lag_total"] == 0
    })
    .await;
}

/// An app's key pulls, acks and heartbeats its own app's pull consumers
/// only; another app's consumer is not found for it, and the members list
/// needs a reading role.
#[tokio::test]
async fn an_apps_key_pulls_its_own_apps_consumers_only() {
    let mq = mqs::rabbitmq::Queue::new().await;
    let other = mqs::rabbitmq::Queue::new().await;
    let bida = Bida::start("").await;
    let mut apps = Vec::new();
    for name in ["shop", "bank"] {
        let (status, app) = bida.post("/v1/apps", json!({"name": name})).await;
        assert_eq!(status, 201, "{app}");
        let app = app["id"].as_str().unwrap().to_string();
        let (status, key) = bida
            .post(
                &format!("/v1/apps/{app}/keys"),
                json!({"name": name, "role": "producer"}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        apps.push((app, key["key"].as_str().unwrap().to_string()));
    }
    let mut ids = Vec::new();
    for ((app, _), queue) in apps.iter().zip([&mq, &other]) {
        let broker = queue.broker(&bida).await;
        let (status, consumer) = bida
            .post(
                "/v1/consumers",
                json!({"name": "pulled", "broker_id": broker, "source": queue.source(),
                       "endpoint": {"kind": "pull"}, "app_id": app}),
            )
            .await;
        assert_eq!(status, 201, "{consumer}");
        ids.push(consumer["id"].as_str().unwrap().to_string());
    }
    mq.publish(numbered(1)).await;
    let shop_key = &apps[0].1;
    let as_shop = |method: reqwest::Method, path: String, body: Value| {
        let request = reqwest::Client::new()
            .request(method, format!("{}{path}", bida.url))
            .bearer_auth(shop_key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let pulled = loop {
        let (status, pulled) = as_shop(
            reqwest::Method::POST,
            format!("/v1/consumers/{}/pull", ids[0]),
            json!({"member": "shop-1", "wait_ms": 5000}),
        )
        .await;
        assert_eq!(status, 200, "{pulled}");
        if !leases(&pulled).is_empty() {
            break pulled;
        }
    };
    let (status, settled) = as_shop(
        reqwest::Method::POST,
        format!("/v1/consumers/{}/ack", ids[0]),
        json!({"leases": leases(&pulled)}),
    )
    .await;
    assert_eq!(
        (status, settled["settled"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{settled}"
    );
    // The bank's consumer does not exist for the shop's key.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            format!("/v1/consumers/{}/pull", ids[1]),
            json!({"member": "shop-1"}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/consumers/{}/ack", ids[1]),
            json!({"leases": []}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/consumers/{}/members/shop-1/heartbeat", ids[1]),
            json!({}),
        ),
    ] {
        let (status, problem) = as_shop(method, path.clone(), body).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
    let (status, _) = as_shop(
        reqwest::Method::GET,
        format!("/v1/consumers/{}/members", ids[0]),
        Value::Null,
    )
    .await;
    assert_eq!(status, 403, "a producer key does not list members");
}
