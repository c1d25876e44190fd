//! The README's quick start: `bida serve` with no database given keeps its
//! data in `./bida-data` and needs no other server. No PostgreSQL URL is set
//! (nor `BIDA_DATABASE_URL`): the node must work without one.

mod support;

use bida_testkit::Hit;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use support::{Bida, Receiver, Reply};

/// Each message fails once, then succeeds; `/never` always fails.
fn once_then_ok(request: &Hit, nth: u32) -> Reply {
    if request.path.starts_with("/never") || nth == 1 {
        Reply::status(503)
    } else {
        Reply::ok()
    }
}

#[tokio::test]
async fn the_quick_start_delivers_retries_and_dead_letters_with_no_database_server() {
    let endpoint = Receiver::start(once_then_ok).await;
    let mut bida = Bida::quick_start("").await;
    assert!(
        bida.log().contains("in the embedded store in bida-data"),
        "the quick start uses the embedded store:\n{}",
        bida.log()
    );

    let dead = bida
        .submit(json!({"url": endpoint.url("/never"), "max_attempts": 2, "backoff": {"initial_ms": 100}}))
        .await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(
            bida.submit(json!({"url": endpoint.url("/retry"), "params": {"n": n},
                               "backoff": {"initial_ms": 3000, "jitter": 0.0}}))
                .await,
        );
    }
    assert!(
        endpoint
            .wait_until(Duration::from_secs(20), |hits| hits.len() >= 52)
            .await,
        "first attempts did not happen\n{}",
        bida.log()
    );
    bida.wait_status(&dead, "dead", Duration::from_secs(20)).await;

    // SIGKILL while the 50 retries wait, then the same command again.
    bida.kill9();
    bida.restart().await;
    for id in &ids {
        bida.wait_status(id, "delivered", Duration::from_secs(40)).await;
    }
    let delivered: HashSet<String> = endpoint
        .hits()
        .iter()
        .filter(|hit| hit.path.starts_with("/retry"))
        .filter_map(|hit| hit.message_id().map(str::to_string))
        .collect();
    assert_eq!(delivered.len(), ids.len(), "every task reached the endpoint");
    let (_, task) = bida.get(&format!("/v1/tasks/{dead}")).await;
    assert_eq!(task["status"], "dead", "{task}");

    // A second node on the same directory is refused, plainly.
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .current_dir(bida.dir())
        .env_remove("BIDA_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("it exits by itself")
        .expect("bida serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another Bida node"), "{stderr}");
}

/// `bida export --to postgres://...`: a project that started on the
/// embedded store moves to PostgreSQL with its history, its waiting retries
/// and its dead letters.
#[tokio::test]
async fn a_project_moves_from_the_embedded_store_to_postgres() {
    let endpoint = Receiver::start(once_then_ok).await;
    let mut small = Bida::quick_start("").await;
    let dead = small
        .submit(json!({"url": endpoint.url("/never"), "max_attempts": 2, "backoff": {"initial_ms": 100}}))
        .await;
    let delivered = small
        .submit(json!({"url": endpoint.url("/soon"), "backoff": {"initial_ms": 100}}))
        .await;
    let waiting = small
        .submit(json!({"url": endpoint.url("/later"), "backoff": {"initial_ms": 6000, "jitter": 0.0}}))
        .await;
    small.wait_status(&dead, "dead", Duration::from_secs(20)).await;
    small
        .wait_status(&delivered, "delivered", Duration::from_secs(20))
        .await;
    small.wait_status(&waiting, "retrying", Duration::from_secs(20)).await;
    let (_, before) = small.get("/v1/tasks?limit=10").await;
    small.terminate().await.expect("it was running");

    let db = bida_testkit::TestDatabase::reserve();
    let export = tokio::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["export", "--to", db.url()])
        .current_dir(small.dir())
        .env_remove("BIDA_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("bida export");
    let printed = String::from_utf8_lossy(&output_text(&export)).into_owned();
    assert!(export.status.success(), "{printed}");
    assert!(printed.contains("events copied into the database at"), "{printed}");

    // A second export into the same database would mix two histories.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["export", "--to", db.url()])
        .current_dir(small.dir())
        .env_remove("BIDA_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("bida export");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds events"));

    let big = Bida::start_on_postgres(db, "").await;
    big.wait_status(&dead, "dead", Duration::from_secs(20)).await;
    big.wait_status(&delivered, "delivered", Duration::from_secs(20)).await;
    // The retry that was waiting is made by the PostgreSQL node.
    big.wait_status(&waiting, "delivered", Duration::from_secs(30)).await;
    let (_, after) = big.get("/v1/tasks?limit=10").await;
    let ids = |page: &serde_json::Value| -> HashSet<String> {
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|task| task["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ids(&before), ids(&after), "the same tasks, listed again");
    let (_, task) = big.get(&format!("/v1/tasks/{dead}")).await;
    assert_eq!(
        task["attempts"].as_array().map(Vec::len),
        Some(2),
        "its history came along: {task}"
    );
}

fn output_text(output: &std::process::Output) -> Vec<u8> {
    [output.stdout.as_slice(), output.stderr.as_slice()].concat()
}
