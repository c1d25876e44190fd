//! Signed deliveries, checked by an independent verifier: the official
//! Standard Webhooks library from PyPI (`tests/verifiers/standard_webhooks.py`).

mod support;

use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{api_client, read, until, Bida, Hit, Receiver, SECRET_KEY};

const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verifiers/standard_webhooks.py");

/// Whether the library verifies `hit` with `secret`.
fn verifies(hit: &Hit, secret: &str) -> bool {
    let request = json!({
        "secret": secret,
        "headers": hit.headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&hit.body),
    });
    let mut child = Command::new("python3")
        .arg(VERIFIER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() || said.contains("Verification"),
        "the verifier did not run (pip install standardwebhooks): {said}"
    );
    output.status.success()
}

struct Shop {
    id: String,
    secret: String,
    producer: reqwest::Client,
}

async fn shop(bida: &Bida) -> Shop {
    let (status, app) = bida.post("/v1/apps", json!({"name": "shop"})).await;
    assert_eq!(status, 201, "{app}");
    let id = app["id"].as_str().unwrap().to_string();
    let secret = app["signing_secret"].as_str().expect("a signing secret").to_string();
    assert!(secret.starts_with("whsec_"));
    let (_, key) = bida
        .post(&format!("/v1/apps/{id}/keys"), json!({"name": "p", "role": "producer"}))
        .await;
    Shop {
        id,
        secret,
        producer: api_client(key["key"].as_str()),
    }
}

/// Submits a task as the shop and returns the request its endpoint received.
async fn delivered(bida: &Bida, shop: &Shop, receiver: &Receiver, n: usize, body: Value) -> Hit {
    let (status, task) = read(
        shop.producer
            .post(format!("{}/v1/tasks", bida.url))
            .json(&json!({"url": receiver.url(&format!("/hook/{n}")), "params": body}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{task}");
    let path = format!("/hook/{n}");
    assert!(
        receiver
            .wait_until(Duration::from_secs(20), |hits| hits.iter().any(|h| h.path == path))
            .await
    );
    receiver.hits().into_iter().find(|h| h.path == path).unwrap()
}

#[tokio::test]
async fn deliveries_verify_with_the_official_library_through_a_rotation() {
    let receiver = Receiver::ok().await;
    let bida = Bida::start("").await;
    let shop = shop(&bida).await;
    let hit = delivered(&bida, &shop, &receiver, 1, json!({"order": 42, "note": "naïve ☃"})).await;
    assert!(hit.header("webhook-signature").unwrap().starts_with("v1,"));
    assert!(verifies(&hit, &shop.secret), "{:?}", hit.headers);
    let forged = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(!verifies(&hit, forged), "a wrong secret must not verify");
    let mut tampered = hit.clone();
    tampered.body = bytes::Bytes::from_static(br#"{"order": 43}"#);
    assert!(!verifies(&tampered, &shop.secret), "a changed body must not verify");

    // Rotation: both secrets verify during the overlap.
    let (status, rotated) = bida
        .post(
            &format!("/v1/apps/{}/secret/rotate", shop.id),
            json!({"overlap_hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["signing_secret"].as_str().unwrap().to_string();
    assert_ne!(new, shop.secret);
    let mut n = 2;
    assert!(
        until(Duration::from_secs(20), || {
            n += 1;
            let (bida, shop, receiver, new) = (&bida, &shop, &receiver, &new);
            async move {
                let hit = delivered(bida, shop, receiver, n, json!({"n": n})).await;
                verifies(&hit, new)
            }
        })
        .await,
        "deliveries never verified with the new secret"
    );
    let hit = receiver.hits().into_iter().last().unwrap();
    assert_eq!(hit.header("webhook-signature").unwrap().split(' ').count(), 2);
    assert!(
        verifies(&hit, &shop.secret),
        "the old secret verifies during the overlap"
    );

    // Without overlap, the previous secret stops at once.
    let (_, rotated) = bida
        .post(
            &format!("/v1/apps/{}/secret/rotate", shop.id),
            json!({"overlap_hours": 0}),
        )
        .await;
    let newest = rotated["signing_secret"].as_str().unwrap().to_string();
    assert!(
        until(Duration::from_secs(20), || {
            n += 1;
            let (bida, shop, receiver, newest) = (&bida, &shop, &receiver, &newest);
            async move { verifies(&delivered(bida, shop, receiver, n, json!({"n": n})).await, newest) }
        })
        .await
    );
    let hit = receiver.hits().into_iter().last().unwrap();
    assert!(
        !verifies(&hit, &new),
        "the secret rotated away without overlap no longer signs"
    );
    assert!(
        verifies(&hit, &shop.secret),
        "the first secret's own overlap (1 h) still runs"
    );

    // Secrets never appear in GET answers nor in the event store.
    let (_, app) = bida.get(&format!("/v1/apps/{}", shop.id)).await;
    let (_, history) = bida.get(&format!("/v1/apps/{}/events", shop.id)).await;
    let rows = bida.stored_payloads(None).await;
    for secret in [&shop.secret, &new, &newest] {
        let bare = secret.trim_start_matches("whsec_");
        assert!(!app.to_string().contains(bare));
        assert!(!history.to_string().contains(bare));
        assert!(
            !rows.iter().any(|row| row.contains(bare)),
            "a secret in plain text in the event store"
        );
        assert!(!bida.log().contains(bare), "a secret in the log");
    }
    assert!(!SECRET_KEY.is_empty());
}

#[tokio::test]
async fn tasks_of_no_app_go_unsigned() {
    let receiver = Receiver::ok().await;
    let bida = Bida::start("").await;
    bida.submit(json!({"url": receiver.url("/plain")})).await;
    assert!(receiver.wait_for_hits(1, Duration::from_secs(20)).await);
    assert!(receiver.hits()[0].header("webhook-signature").is_none());
}

#[tokio::test]
async fn a_consumers_deliveries_are_signed_with_its_apps_secret() {
    use bida_testkit::rabbit::{self, TestQueue};
    let receiver = Receiver::ok().await;
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let shop = shop(&bida).await;
    let (status, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url()}),
        )
        .await;
    assert_eq!(status, 201, "{broker}");
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "orders", "broker_id": broker["id"], "source": {"queue": queue.name},
                   "endpoint": {"url": receiver.url("/mq")}, "app_id": "no-such-app"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "orders", "broker_id": broker["id"], "source": {"queue": queue.name},
                   "endpoint": {"url": receiver.url("/mq")}, "app_id": shop.id}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    queue
        .publish([(Some("order-1".to_string()), br#"{"order": 1}"#.to_vec())])
        .await;
    assert!(
        receiver.wait_for_hits(1, Duration::from_secs(30)).await,
        "{}",
        bida.log()
    );
    let hit = &receiver.hits()[0];
    assert_eq!(&hit.body[..], br#"{"order": 1}"#);
    assert!(verifies(hit, &shop.secret), "{:?}", hit.headers);
}
