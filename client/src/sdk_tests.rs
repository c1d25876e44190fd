//! `PullConsumer::run` against a fake of the server's pull routes (the
//! real server is driven by the workspace's end-to-end tests): acks and
//! nacks, live concurrency, heartbeats while busy, retries, problems that
//! end the run, and a graceful stop.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use crate::*;

#[derive(Default)]
struct Fake {
    settings: Option<MemberSettings>,
    waiting: VecDeque<(String, Value)>,
    leased: HashMap<String, String>,
    next: u64,
    acked: Vec<String>,
    nacked: Vec<(String, Option<String>)>,
    pulls: Vec<Value>,
    heartbeats: usize,
    ack_requests: usize,
    /// Answer the next pulls with a 503.
    unavailable: usize,
    /// Answer every call with this problem status.
    problem: Option<u16>,
    /// Leases answered as expired on their ack.
    expire: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn problem(status: u16) -> Response {
    let body = json!({"type": "urn:bida:problem:x", "title": "x", "status": status, "detail": "from the fake"});
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, crate::error::PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response()
}

async fn pull(State(fake): State<Shared>, Path(_id): Path<String>, Json(request): Json<Value>) -> Response {
    let wait = request["wait_ms"].as_u64().unwrap_or(0).min(50);
    let answer = {
        let mut fake = fake.lock().unwrap();
        fake.pulls.push(request.clone());
        if let Some(status) = fake.problem {
            return problem(status);
        }
        if fake.unavailable > 0 {
            fake.unavailable -= 1;
            return problem(503);
        }
        let settings = fake.settings.unwrap();
        let max = request["max"].as_u64().unwrap_or(1).min(u64::from(settings.batch)) as usize;
        let mut messages = Vec::new();
        while messages.len() < max && !settings.paused {
            let Some((task_id, body)) = fake.waiting.pop_front() else {
                break;
            };
            fake.next += 1;
            let lease = format!("lease-{}", fake.next);
            fake.leased.insert(lease.clone(), task_id.clone());
            messages.push(json!({
                "lease": lease,
                "leased_until": Utc::now() + chrono::Duration::milliseconds(settings.lease_ms as i64),
                "task_id": task_id,
                "message_id": format!("m-{task_id}"),
                "attempt": 1,
                "headers": {"content-type": "text/plain"},
                "body": body,
            }));
        }
        (!messages.is_empty()).then(|| json!({"messages": messages, "settings": settings}))
    };
    match answer {
        Some(answer) => Json(answer).into_response(),
        None => {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let settings = fake.lock().unwrap().settings;
            Json(json!({"messages": [], "settings": settings})).into_response()
        }
    }
}

fn settle(fake: &Shared, request: &Value, nack: bool) -> Response {
    let mut fake = fake.lock().unwrap();
    if let Some(status) = fake.problem {
        return problem(status);
    }
    assert_eq!(request["member"], "host-1");
    fake.ack_requests += 1;
    let (mut settled, mut expired) = (Vec::new(), Vec::new());
    for lease in request["leases"].as_array().unwrap() {
        let lease = lease.as_str().unwrap().to_string();
        match fake.leased.remove(&lease) {
            Some(_) if fake.expire => expired.push(lease),
            Some(task) if nack => {
                fake.nacked.push((task, request["reason"].as_str().map(String::from)));
                settled.push(lease);
            }
            Some(task) => {
                fake.acked.push(task);
                settled.push(lease);
            }
            None => expired.push(lease),
        }
    }
    Json(json!({"settled": settled, "expired": expired})).into_response()
}

async fn ack(State(fake): State<Shared>, Json(request): Json<Value>) -> Response {
    settle(&fake, &request, false)
}

async fn nack(State(fake): State<Shared>, Json(request): Json<Value>) -> Response {
    settle(&fake, &request, true)
}

async fn heartbeat(State(fake): State<Shared>, Path((_id, member)): Path<(String, String)>) -> Response {
    let mut fake = fake.lock().unwrap();
    assert_eq!(member, "host-1");
    if let Some(status) = fake.problem {
        return problem(status);
    }
    fake.heartbeats += 1;
    Json(fake.settings.unwrap()).into_response()
}

fn settings(concurrency: u32, heartbeat_ms: u64) -> MemberSettings {
    MemberSettings {
        mode: PullMode::Cluster,
        batch: 100,
        concurrency,
        paused: false,
        lease_ms: 30_000,
        heartbeat_ms,
    }
}

/// A fake with `messages` waiting (bodies `{"text": "<n>"}`), and a client of it.
async fn serve(messages: usize, settings: MemberSettings) -> (Shared, Client) {
    let fake = Shared::default();
    {
        let mut state = fake.lock().unwrap();
        state.settings = Some(settings);
        for n in 0..messages {
            state
                .waiting
                .push_back((format!("t{n}"), json!({"text": n.to_string()})));
        }
    }
    let router = Router::new()
        .route("/v1/consumers/{id}/pull", post(pull))
        .route("/v1/consumers/{id}/ack", post(ack))
        .route("/v1/consumers/{id}/nack", post(nack))
        .route("/v1/consumers/{id}/members/{member}/heartbeat", post(heartbeat))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = Client::new(format!("http://{address}"), "k").unwrap();
    (fake, client)
}

/// Completes once `done` holds (or after 20 s, failing the test).
async fn eventually(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Completes once `done` holds of the fake.
async fn until(fake: Shared, done: impl Fn(&Fake) -> bool) {
    eventually(|| done(&fake.lock().unwrap())).await
}

/// Completes once `count` handlers have started: their messages were
/// pulled (a fake that leased them has not necessarily answered yet).
async fn started(counter: Arc<AtomicUsize>, count: usize) {
    eventually(|| counter.load(Ordering::SeqCst) >= count).await
}

fn settled(fake: &Fake) -> usize {
    fake.acked.len() + fake.nacked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_messages_are_acked_failed_ones_nacked_within_the_concurrency() {
    let (fake, client) = serve(30, settings(4, 10_000)).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let report = client
        .pull_consumer("c-1", "host-1")
        .max(10)
        .wait(Duration::from_secs(5))
        .address("10.0.0.1")
        .run(
            move |message| {
                let (running, most) = (r.clone(), m.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(message.content_type(), Some("text/plain"));
                    let n: u32 = message.json().map_err(|e| e.to_string())?;
                    if n.is_multiple_of(3) {
                        return Err(format!("no multiples of 3\nplease ({n})"));
                    }
                    Ok(())
                }
            },
            until(fake.clone(), |f| settled(f) == 30),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            report.pulled,
            report.acked,
            report.nacked,
            report.expired,
            report.unsettled
        ),
        (30, 20, 10, 0, 0)
    );
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "at most the consumer's concurrency ran at once: {most}"
    );
    let fake = fake.lock().unwrap();
    // The reason is the error's Display, made printable.
    assert!(fake
        .nacked
        .iter()
        .any(|(task, reason)| task == "t3" && reason.as_deref() == Some("no multiples of 3 please (3)")));
    // Each pull asked for no more than there were free handlers.
    for pull in &fake.pulls {
        assert!(pull["max"].as_u64().unwrap() <= 4, "{pull}");
        assert_eq!(pull["member"], "host-1");
        assert_eq!(pull["address"], "10.0.0.1");
        assert!(pull["client_version"].as_str().unwrap().starts_with("bida-client/"));
        assert_eq!(pull["wait_ms"], 5000);
    }
    assert!(
        fake.ack_requests < 30,
        "acks and nacks went in batches: {}",
        fake.ack_requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_settings_reach_the_member() {
    let (fake, client) = serve(0, settings(1, 10_000)).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let shared = fake.clone();
    let stop = async move {
        // Paused: the member keeps polling and gets nothing.
        {
            let mut state = shared.lock().unwrap();
            state.settings.as_mut().unwrap().paused = true;
            for n in 0..12 {
                state.waiting.push_back((format!("t{n}"), json!({"text": "x"})));
            }
        }
        until(shared.clone(), |f| f.pulls.len() >= 3).await;
        assert!(settled(&shared.lock().unwrap()) == 0);
        // Resumed, with more concurrency.
        {
            let mut state = shared.lock().unwrap();
            let settings = state.settings.as_mut().unwrap();
            settings.paused = false;
            settings.concurrency = 6;
        }
        until(shared, |f| settled(f) == 12).await;
    };
    let report = client
        .pull_consumer("c-1", "host-1")
        .wait(Duration::from_millis(30))
        .run(
            move |_| {
                let (running, most) = (r.clone(), m.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(())
                }
            },
            stop,
        )
        .await
        .unwrap();
    assert_eq!(report.acked, 12);
    assert!(most.load(Ordering::SeqCst) > 1, "the new concurrency was used");
    assert!(most.load(Ordering::SeqCst) <= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_member_heartbeats_and_shutdown_waits_for_its_handlers() {
    let (fake, client) = serve(2, settings(2, 100)).await;
    let handling = Arc::new(AtomicUsize::new(0));
    let counter = handling.clone();
    let report = client
        .pull_consumer("c-1", "host-1")
        .run(
            move |message| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    assert_eq!(message.bytes(), message.text().unwrap().as_bytes());
                    Ok::<_, String>(())
                }
            },
            // Stops while both handlers still run.
            started(handling, 2),
        )
        .await
        .unwrap();
    assert_eq!((report.pulled, report.acked), (2, 2), "{report:?}");
    let fake = fake.lock().unwrap();
    // One to begin with, then one every 100 ms while both handlers ran.
    assert!(fake.heartbeats >= 4, "heartbeats: {}", fake.heartbeats);
    // The long poll stays within twice the heartbeat interval.
    assert!(fake.pulls.iter().all(|p| p["wait_ms"].as_u64().unwrap() <= 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_are_retried() {
    let (fake, client) = serve(3, settings(8, 10_000)).await;
    fake.lock().unwrap().unavailable = 3;
    let report = client
        .pull_consumer("c-1", "host-1")
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .run(
            |_| async { Ok::<_, String>(()) },
            until(fake.clone(), |f| settled(f) == 3),
        )
        .await
        .unwrap();
    assert_eq!((report.acked, report.retries), (3, 3), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_ends_the_run() {
    let (fake, client) = serve(0, settings(8, 10_000)).await;
    fake.lock().unwrap().problem = Some(409);
    let error = client
        .pull_consumer("c-1", "host-1")
        .run(|_| async { Ok::<_, String>(()) }, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(409));
    assert!(!error.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_while_handling_ends_the_run_after_its_handlers() {
    let (fake, client) = serve(2, settings(2, 10_000)).await;
    let shared = fake.clone();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let error = client
        .pull_consumer("c-1", "host-1")
        .run(
            move |_| {
                let (shared, done) = (shared.clone(), done.clone());
                async move {
                    shared.lock().unwrap().problem = Some(404);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(())
                }
            },
            std::future::pending(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert_eq!(finished.load(Ordering::SeqCst), 2, "the handlers ran to their end");
}

async fn explode(_: PulledMessage) -> Result<(), String> {
    panic!("boom")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_nacked_expired_leases_counted_and_a_drain_timeout_abandons() {
    let (fake, client) = serve(1, settings(2, 10_000)).await;
    let report = client
        .pull_consumer("c-1", "host-1")
        .run(explode, until(fake.clone(), |f| settled(f) == 1))
        .await
        .unwrap();
    assert_eq!((report.nacked, report.panicked), (1, 1));
    assert_eq!(
        fake.lock().unwrap().nacked[0].1.as_deref(),
        Some("the handler panicked: boom")
    );

    let (fake, client) = serve(1, settings(2, 10_000)).await;
    fake.lock().unwrap().expire = true;
    let report = client
        .pull_consumer("c-1", "host-1")
        .run(
            |_| async { Ok::<_, String>(()) },
            until(fake.clone(), |f| f.ack_requests == 1),
        )
        .await
        .unwrap();
    assert_eq!((report.acked, report.expired), (0, 1));

    let (_fake, client) = serve(1, settings(2, 10_000)).await;
    let since = tokio::time::Instant::now();
    let handling = Arc::new(AtomicUsize::new(0));
    let counter = handling.clone();
    let report = client
        .pull_consumer("c-1", "host-1")
        .drain_timeout(Duration::from_millis(100))
        .run(
            move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, String>(())
                }
            },
            started(handling, 1),
        )
        .await
        .unwrap();
    assert_eq!((report.pulled, report.abandoned, report.acked), (1, 1, 0));
    assert!(since.elapsed() < Duration::from_secs(10));
}

#[test]
fn pulled_bodies_are_bytes() {
    let text: PulledBody = serde_json::from_value(json!({"text": "héllo"})).unwrap();
    assert_eq!(text.as_bytes(), "héllo".as_bytes());
    let bytes: PulledBody = serde_json::from_value(json!({"base64": "AP8A"})).unwrap();
    assert_eq!(bytes.as_bytes(), &[0, 255, 0]);
    assert_eq!(bytes.as_text(), None);
    assert!(serde_json::from_value::<PulledBody>(json!({"base64": "not base64!"})).is_err());
    assert!(serde_json::from_value::<PulledBody>(json!({"hex": "00"})).is_err());
    assert_eq!(serde_json::to_value(&bytes).unwrap(), json!({"base64": "AP8A"}));
    assert_eq!(serde_json::to_value(&text).unwrap(), json!({"text": "héllo"}));
}
