//! Consumers end to end: real RabbitMQ and Kafka brokers, the real binary, a
//! real HTTP receiver.

mod support;

use bida_testkit::kafka::KafkaBroker;
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Bida, Receiver, Reply};

#[allow(dead_code)]
fn _uses(_: Reply) {}

const WAIT: Duration = Duration::from_secs(60);

async fn rabbit_consumer(bida: &Bida, queue: &str, endpoint: &str, policy: Value) -> String {
    let (status, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url()}),
        )
        .await;
    assert_eq!(status, 201, "{broker}");
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "c", "broker_id": broker["id"], "source": {"queue": queue},
                   "endpoint": {"url": endpoint, "timeout_ms": 2000}, "policy": policy}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    consumer["id"].as_str().unwrap().to_string()
}

async fn kafka_consumer(bida: &Bida, kafka: &KafkaBroker, topic: &str, endpoint: &str, policy: Value) -> String {
    let (status, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "k", "kind": "kafka", "bootstrap_servers": kafka.bootstrap}),
        )
        .await;
    assert_eq!(status, 201, "{broker}");
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "c", "broker_id": broker["id"], "source": {"topics": [topic], "group": format!("g-{topic}")},
                   "endpoint": {"url": endpoint, "timeout_ms": 2000}, "policy": policy}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    consumer["id"].as_str().unwrap().to_string()
}

/// Waits until the consumer's view satisfies `done`, returning it.
async fn wait_consumer(bida: &Bida, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, consumer) = bida.get(&format!("/v1/consumers/{id}")).await;
        if done(&consumer) {
            return consumer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer never got there: {consumer}\n{}",
            bida.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn numbered(n: usize) -> impl Iterator<Item = (Option<String>, Vec<u8>)> {
    (0..n).map(|i| (Some(format!("m{i}")), format!(r#"{{"n":{i}}}"#).into_bytes()))
}

#[tokio::test]
async fn rabbitmq_messages_reach_the_endpoint_with_their_bytes() {
    let endpoint = Receiver::ok().await;
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let id = rabbit_consumer(&bida, &queue.name, &endpoint.url("/mq"), json!({"concurrency": 8})).await;
    queue.publish(numbered(300)).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 300).await,
        "{} of 300\n{}",
        endpoint.distinct_messages(),
        bida.log()
    );
    let hit = endpoint
        .hits()
        .into_iter()
        .find(|h| h.message_id() == Some(&format!("rabbitmq:{}:m7", queue.name)))
        .unwrap();
    assert_eq!(&hit.body[..], br#"{"n":7}"#);
    let consumer = wait_consumer(&bida, &id, |c| {
        c["state"] == "running" && c["counters"]["delivered"] == 300
    })
    .await;
    assert_eq!(consumer["nodes"].as_array().unwrap().len(), 1, "{consumer}");
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test]
async fn kafka_messages_reach_the_endpoint_with_stable_ids() {
    let endpoint = Receiver::ok().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("orders", 3).await;
    let bida = Bida::start("").await;
    let id = kafka_consumer(&bida, &kafka, "orders", &endpoint.url("/k"), json!({"concurrency": 8})).await;
    kafka.produce("orders", numbered(300)).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 300).await,
        "{} of 300\n{}",
        endpoint.distinct_messages(),
        bida.log()
    );
    let hit = &endpoint.hits()[0];
    let id_header = hit.message_id().unwrap();
    assert!(id_header.starts_with("kafka:orders:"), "{id_header}");
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert!(body["n"].is_u64());
    assert_eq!(hit.header("content-type"), Some("application/json"));
    wait_consumer(&bida, &id, |c| c["lag_total"] == 0 && c["counters"]["delivered"] == 300).await;
}
