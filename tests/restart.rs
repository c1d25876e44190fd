//! The scheduler is durable: tasks survive `kill -9` of the process.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use support::{eventually, Bida, Receiver, Reply};

/// For an endpoint that fails each message's first request and accepts the
/// rest: requests per message id that were accepted. (Not `bida-attempt`: an
/// attempt whose outcome died with the node is made again with its number.)
fn delivered(endpoint: &Receiver) -> HashMap<String, usize> {
    let mut requests: HashMap<String, usize> = HashMap::new();
    for hit in endpoint.hits() {
        *requests
            .entry(hit.message_id().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    requests.retain(|_, n| *n >= 2);
    requests.values_mut().for_each(|n| *n -= 1);
    requests
}

#[tokio::test]
async fn waiting_retries_and_delayed_tasks_survive_kill_9() {
    // Every first attempt fails, so each task waits for its retry when we kill.
    let endpoint = Receiver::start(|_, nth| if nth == 1 { Reply::status(503) } else { Reply::ok() }).await;
    let mut bida = Bida::start("").await;
    // Submitted all at once: one by one, each waits for its own commit, and
    // on a store whose commit costs an fsync the first tasks' retries could
    // come before the last ones' first attempts.
    let retrying = (0..200).map(|n| {
        bida.submit(json!({
            "url": endpoint.url("/retry"),
            "params": {"n": n},
            "backoff": {"initial_ms": 5000, "jitter": 0.0},
        }))
    });
    let delayed =
        (0..20).map(|n| bida.submit(json!({"url": endpoint.url("/delayed"), "params": {"n": n}, "delay_ms": 6000})));
    let mut ids = futures::future::join_all(retrying).await;
    ids.extend(futures::future::join_all(delayed).await);
    assert!(
        endpoint
            .wait_until(Duration::from_secs(20), |hits| hits.len() >= 200)
            .await,
        "first attempts did not happen"
    );
    assert!(
        delivered(&endpoint).is_empty(),
        "nothing delivered before the kill: {:?}",
        delivered(&endpoint)
    );

    bida.kill9();
    bida.restart().await;

    let all = ids.len();
    assert!(
        eventually(Duration::from_secs(40), || delivered(&endpoint).len() == all).await,
        "only {} of {all} delivered after the restart\n{}",
        delivered(&endpoint).len(),
        bida.log()
    );
    let per_id = delivered(&endpoint);
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    println!("delivered {all} of {all} after kill -9; duplicate deliveries: {duplicates}");
    for id in &ids {
        bida.wait_status(id, "delivered", Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn every_accepted_task_is_delivered_when_killed_mid_stream() {
    let endpoint = Receiver::ok().await;
    let mut bida = Bida::start("").await;
    // Eight clients submit at once, so appends and attempts are in flight at the kill.
    let producers: Vec<_> = (0..8)
        .map(|client| {
            let (url, http, target) = (bida.url.clone(), bida.http.clone(), endpoint.url("/stream"));
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for n in 0..1_000 {
                    let sent = http
                        .post(format!("{url}/v1/tasks"))
                        .json(&json!({"url": target, "params": {"client": client, "n": n}}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => {
                            let body: serde_json::Value = r.json().await.unwrap();
                            accepted.push(body["id"].as_str().unwrap().to_string());
                        }
                        _ => break,
                    }
                }
                accepted
            })
        })
        .collect();
    assert!(
        endpoint
            .wait_until(Duration::from_secs(20), |hits| hits.len() >= 200)
            .await
    );
    bida.kill9();
    let mut accepted = Vec::new();
    for producer in producers {
        accepted.extend(producer.await.unwrap());
    }
    assert!(accepted.len() < 8_000, "the kill happened mid-stream");
    bida.restart().await;
    let received = |endpoint: &Receiver| {
        let ids: std::collections::HashSet<String> = endpoint
            .hits()
            .iter()
            .filter_map(|h| h.message_id().map(String::from))
            .collect();
        accepted.iter().filter(|id| ids.contains(*id)).count()
    };
    assert!(
        eventually(Duration::from_secs(40), || received(&endpoint) == accepted.len()).await,
        "{} of {} accepted tasks delivered",
        received(&endpoint),
        accepted.len()
    );
    println!(
        "accepted {} before kill -9, all delivered; {} requests for {} distinct ids",
        accepted.len(),
        endpoint.hit_count(),
        endpoint.distinct_messages()
    );
}

#[tokio::test]
async fn a_surviving_node_takes_over_the_tasks_of_a_dead_one() {
    if support::postgres_only("a node takes over a dead node's tasks") {
        return;
    }
    let endpoint = Receiver::start(|_, nth| if nth == 1 { Reply::status(503) } else { Reply::ok() }).await;
    let mut a = Bida::start("").await;
    let b = a.join("").await;
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(
            a.submit(
                json!({"url": endpoint.url("/a"), "params": {"n": n}, "backoff": {"initial_ms": 2000, "jitter": 0.0}}),
            )
            .await,
        );
    }
    ids.push(a.submit(json!({"url": endpoint.url("/later"), "delay_ms": 3000})).await);
    assert!(
        endpoint
            .wait_until(Duration::from_secs(20), |hits| hits.len() >= 100)
            .await
    );
    a.kill9();

    // Only b is left: it must deliver a's waiting retries and its delayed task.
    let all = ids.len();
    assert!(
        eventually(Duration::from_secs(40), || delivered(&endpoint).len() == all).await,
        "{} of {all} delivered by the surviving node\n{}",
        delivered(&endpoint).len(),
        b.log()
    );
    for id in &ids {
        b.wait_status(id, "delivered", Duration::from_secs(10)).await;
    }
    assert!(b.log().contains("took back tasks held by dead nodes"), "{}", b.log());
}

#[tokio::test]
async fn two_live_nodes_deliver_each_task_once() {
    if support::postgres_only("two nodes share the tasks") {
        return;
    }
    let endpoint = Receiver::start(|_, nth| if nth == 1 { Reply::status(503) } else { Reply::ok() }).await;
    let a = Bida::start("").await;
    let b = a.join("").await;
    let mut ids = Vec::new();
    for n in 0..300 {
        let node = if n % 2 == 0 { &a } else { &b };
        ids.push(
            node.submit(json!({"url": endpoint.url("/both"), "params": {"n": n}, "backoff": {"initial_ms": 200, "jitter": 0.5}}))
                .await,
        );
    }
    assert!(
        eventually(Duration::from_secs(40), || delivered(&endpoint).len() == ids.len()).await,
        "{} of {} delivered",
        delivered(&endpoint).len(),
        ids.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let duplicates: usize = delivered(&endpoint).values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "no node took a task the other held");
    assert_eq!(
        endpoint.hit_count(),
        2 * ids.len(),
        "one failed and one good attempt each"
    );
}

/// A port already taken is said in one line and the process exits; it does
/// not start a node first and abort in its teardown.
#[tokio::test]
async fn a_taken_port_is_refused_plainly() {
    let node = Bida::start("").await;
    let address = node.url.trim_start_matches("http://").to_string();
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["serve", "--listen", &address, "--grpc-listen", "127.0.0.1:0"])
        .args(["--database-url", &node.db_url])
        .env("BIDA_AUTH__BOOTSTRAP_ADMIN_KEY", support::ADMIN_KEY)
        .env("BIDA_SECRET_KEY", support::SECRET_KEY)
        .env("RUST_LOG", "warn")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("it exits by itself")
        .expect("bida serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (status, _) = node.get("/readyz").await;
    assert_eq!(status, 200, "the node holding the port serves on");
}
