//! Operating consumers and brokers: inventory, offline brokers, crashes and
//! their alerts, parked lanes, Kafka offset resets, resends, bad input.

mod support;

use bida_testkit::kafka::KafkaBroker;
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{created, eventually, rabbit_broker, until, Bida, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(60);

async fn wait_consumer(bida: &Bida, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    bida.consumer_until(id, WAIT, done).await
}

/// A node whose failure notifications go to `alerts`.
async fn alerting(alerts: &Receiver) -> Bida {
    Bida::start(&format!("[[notify.webhooks]]\nurl = \"{}\"", alerts.url("/alerts"))).await
}

/// Registers the test's Kafka broker; returns its id.
async fn kafka_broker(bida: &Bida, kafka: &KafkaBroker) -> String {
    created(
        bida,
        "/v1/brokers",
        json!({"name": "k", "kind": "kafka", "bootstrap_servers": kafka.bootstrap}),
    )
    .await
}

/// Waits for a notification of `kind` and returns it.
async fn alert(alerts: &Receiver, kind: &str) -> Value {
    let of_kind = |body: &[u8]| serde_json::from_slice::<Value>(body).ok().filter(|a| a["type"] == kind);
    assert!(
        alerts
            .wait_until(WAIT, |hits| hits.iter().any(|h| of_kind(&h.body).is_some()))
            .await,
        "no {kind} alert"
    );
    alerts.hits().iter().find_map(|h| of_kind(&h.body)).unwrap()
}

/// For a kind without positions: a resend is refused naming the kind, and,
/// once the consumer is stopped, an offset reset too.
async fn positions_refused(bida: &Bida, consumer: &str, topic: &str, kind: &str) {
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": topic, "from": 1, "to": 2}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(kind), "{problem}");
    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
}

/// Messages `n` in `range`, keyed `k<n % 4>`, with bodies `{"n":<n>}`.
fn numbered(range: std::ops::Range<usize>) -> impl Iterator<Item = (Option<String>, Vec<u8>)> {
    range.map(|i| (Some(format!("k{}", i % 4)), format!(r#"{{"n":{i}}}"#).into_bytes()))
}

fn rabbit_consumer(broker: &str, queue: &str, endpoint: &str) -> Value {
    json!({"name": "c", "broker_id": broker, "source": {"queue": queue}, "endpoint": {"url": endpoint}})
}

#[tokio::test]
async fn brokers_show_what_is_inside_and_going_offline_stops_their_consumers() {
    let endpoint = Receiver::ok().await;
    let queue = TestQueue::declare().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("inventory", 3).await;
    let bida = Bida::start("").await;

    let rabbit = rabbit_broker(&bida).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        rabbit_consumer(&rabbit, &queue.name, &endpoint.url("/in")),
    )
    .await;
    wait_consumer(&bida, &consumer, |c| c["state"] == "running").await;
    let (status, view) = bida.get(&format!("/v1/brokers/{rabbit}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    assert!(
        !view["connection"]["url"].as_str().unwrap().contains(":guest@"),
        "password hidden: {view}"
    );
    let queues = view["queues"].as_array().unwrap();
    let listed = queues
        .iter()
        .find(|q| q["name"] == queue.name.as_str())
        .expect("the consumer's queue is listed");
    assert_eq!(listed["consumers"], 1, "{view}");

    let k = kafka_broker(&bida, &kafka).await;
    kafka
        .produce("inventory", (0..30).map(|i| (Some(format!("k{i}")), b"x".to_vec())))
        .await;
    let (_, view) = bida.get(&format!("/v1/brokers/{k}")).await;
    let topic = view["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "inventory")
        .expect("topic listed");
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3, "{view}");

    let dead = created(
        &bida,
        "/v1/brokers",
        json!({"name": "gone", "kind": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:1/%2f"}),
    )
    .await;
    let (_, view) = bida.get(&format!("/v1/brokers/{dead}")).await;
    assert_eq!(view["health"]["reachable"], false, "{view}");
    assert!(!view["health"]["error"].as_str().unwrap().is_empty());

    // Offline: the consumer stops; messages wait in the queue; online: they flow.
    let (status, _) = bida.post(&format!("/v1/brokers/{rabbit}/offline"), json!(null)).await;
    assert_eq!(status, 200);
    wait_consumer(&bida, &consumer, |c| {
        c["state"] == "broker_offline" && c["nodes"].as_array().is_some_and(|n| n.is_empty())
    })
    .await;
    queue
        .publish((0..100).map(|i| (Some(format!("m{i}")), b"{}".to_vec())))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.hit_count(), 0);
    assert_eq!(queue.depth().await, 100);
    let (status, _) = bida.post(&format!("/v1/brokers/{rabbit}/online"), json!(null)).await;
    assert_eq!(status, 200);
    assert!(eventually(WAIT, || endpoint.distinct_messages() == 100).await);

    let in_use = bida
        .http
        .delete(format!("{}/v1/brokers/{rabbit}", bida.url))
        .send()
        .await
        .unwrap();
    assert_eq!(in_use.status(), 409, "a broker in use is not deleted");
    let (status, renamed) = bida
        .patch(&format!("/v1/brokers/{rabbit}"), json!({"name": "main mq"}))
        .await;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("main mq")), "{renamed}");
    // A setting of another kind is refused by name, and changes nothing.
    let (status, refused) = bida
        .patch(
            &format!("/v1/brokers/{rabbit}"),
            json!({"bootstrap_servers": "k:9092", "management_url": "http://other:15672"}),
        )
        .await;
    assert_eq!(
        (status, refused["errors"][0]["field"].as_str()),
        (422, Some("bootstrap_servers")),
        "{refused}"
    );
    let (_, unchanged) = bida.get(&format!("/v1/brokers/{rabbit}")).await;
    assert_eq!(
        unchanged["connection"]["management_url"], renamed["connection"]["management_url"],
        "{unchanged}"
    );
    assert_eq!(unchanged["capabilities"]["offset_reset"], false, "{unchanged}");
    let deleted = bida
        .http
        .delete(format!("{}/v1/consumers/{consumer}", bida.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let deleted = bida
        .http
        .delete(format!("{}/v1/brokers/{rabbit}", bida.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (_, list) = bida.get("/v1/brokers").await;
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["id"] != rabbit.as_str()));
    // Deleted is gone from its routes; the audit trail keeps who did what.
    for (kind, id) in [("brokers", &rabbit), ("consumers", &consumer)] {
        for path in [format!("/v1/{kind}/{id}"), format!("/v1/{kind}/{id}/events")] {
            let (status, problem) = bida.get(&path).await;
            assert_eq!(status, 404, "{path}: {problem}");
            assert!(problem["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("/v1/audit/{kind}/{id}")));
        }
        let (status, history) = bida.get(&format!("/v1/audit/{kind}/{id}")).await;
        assert_eq!(status, 200, "{history}");
        let last = history["events"].as_array().unwrap().last().unwrap().clone();
        assert!(last["event_type"].as_str().unwrap().ends_with("Deleted"), "{last}");
        assert!(last["metadata"]["key_id"].is_string(), "who deleted it: {last}");
    }
}

/// A page of `GET /v1/consumers` describes its own consumers (each with its
/// counters), and the pages together list every live one once, in id order.
#[tokio::test]
async fn consumers_are_listed_a_page_at_a_time() {
    let endpoint = Receiver::ok().await;
    let queues = [
        TestQueue::declare().await,
        TestQueue::declare().await,
        TestQueue::declare().await,
        TestQueue::declare().await,
    ];
    let bida = Bida::start("").await;
    let rabbit = rabbit_broker(&bida).await;
    let mut consumers = Vec::new();
    for queue in &queues {
        let id = created(
            &bida,
            "/v1/consumers",
            rabbit_consumer(&rabbit, &queue.name, &endpoint.url("/in")),
        )
        .await;
        consumers.push((id, queue));
    }
    let (deleted, _) = consumers.pop().unwrap();
    let (status, _) = bida.delete(&format!("/v1/consumers/{deleted}")).await;
    assert_eq!(status, 204);
    // Each live consumer delivers as many messages as its place in id order.
    consumers.sort_by(|a, b| a.0.cmp(&b.0));
    for (n, (id, queue)) in consumers.iter().enumerate() {
        wait_consumer(&bida, id, |c| c["state"] == "running").await;
        queue
            .publish((0..=n).map(|i| (None, format!("m{i}").into_bytes())))
            .await;
        wait_consumer(&bida, id, |c| c["counters"]["delivered"] == n as u64 + 1).await;
    }
    let ids: Vec<&String> = consumers.iter().map(|(id, _)| id).collect();

    let mut listed: Vec<(String, Value)> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..ids.len() + 1 {
        let path = match &cursor {
            Some(cursor) => format!("/v1/consumers?limit=1&cursor={cursor}"),
            None => "/v1/consumers?limit=1".to_string(),
        };
        let (status, page) = bida.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        listed.push((
            items[0]["id"].as_str().unwrap().to_string(),
            items[0]["counters"]["delivered"].clone(),
        ));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let expected: Vec<(String, Value)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.to_string(), json!(n + 1)))
        .collect();
    assert_eq!(listed, expected, "the deleted consumer {deleted} is not listed");

    // One page of all, described together: each consumer with its own
    // counters, rates and node report (consumer n delivered n + 1 messages
    // within the last minute, so its rate is the n-th largest).
    let (status, page) = bida.get("/v1/consumers?limit=10").await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), consumers.len(), "{page}");
    let mut last_rate = 0.0;
    for (n, (item, (id, _))) in items.iter().zip(&consumers).enumerate() {
        assert_eq!(item["id"], id.as_str(), "{page}");
        assert_eq!(item["counters"]["delivered"], json!(n + 1), "{item}");
        assert_eq!(item["counters"]["consumed"], json!(n + 1), "{item}");
        let rate = item["counters"]["delivered_per_sec"].as_f64().unwrap();
        assert!(rate > last_rate, "rates grow with each consumer's deliveries: {page}");
        last_rate = rate;
        assert_eq!(item["state"], "running", "{item}");
        let nodes = item["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1, "{item}");
    }
}

#[tokio::test]
async fn bad_consumer_and_broker_input_gets_problems() {
    let bida = Bida::start("").await;
    let cases = [
        (
            "/v1/brokers",
            json!({"name": "x", "kind": "pulsar", "url": "x"}),
            400,
            None,
        ),
        (
            "/v1/brokers",
            json!({"name": "x", "kind": "rabbitmq", "url": "http://x"}),
            422,
            Some("url"),
        ),
        (
            "/v1/brokers",
            json!({"name": "x", "kind": "kafka", "bootstrap_servers": "nohost"}),
            422,
            Some("bootstrap_servers"),
        ),
        (
            "/v1/brokers",
            json!({"name": "x", "kind": "kafka", "bootstrap_servers": "h:1", "options": {"group.id": "g"}}),
            422,
            Some("options.group.id"),
        ),
    ];
    for (path, body, status, field) in cases {
        let (got, problem) = bida.post(path, body.clone()).await;
        assert_eq!(got, status, "{body} -> {problem}");
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
    }
    let kafka = created(
        &bida,
        "/v1/brokers",
        json!({"name": "k", "kind": "kafka", "bootstrap_servers": "127.0.0.1:1"}),
    )
    .await;
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "c", "broker_id": kafka, "source": {"queue": "q"}, "endpoint": {"url": "http://h/"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"source.queue") && fields.contains(&"source.topics"),
        "{problem}"
    );
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "c", "broker_id": "nope", "source": {"queue": "q"}, "endpoint": {"url": "http://h/"}}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("broker_id")),
        "{problem}"
    );
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "c", "broker_id": kafka, "source": {"topics": ["t"], "group": "g"}, "endpoint": {"url": "http://h/"}}),
    )
    .await;
    let (status, problem) = bida
        .patch(
            &format!("/v1/consumers/{consumer}"),
            json!({"policy": {"concurrency": 0}}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("policy.concurrency")),
        "{problem}"
    );
    let (status, problem) = bida
        .post(&format!("/v1/consumers/{consumer}/resume"), json!(null))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["detail"], "cannot resume a consumer that is running");
    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/dance"), json!(null)).await;
    assert_eq!(status, 404);
    let (status, _) = bida.get("/v1/consumers/unknown").await;
    assert_eq!(status, 404);
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 409, "a running consumer's offsets are not reset: {problem}");
}

#[tokio::test]
async fn a_crashing_consumer_is_restarted_recorded_and_alerted() {
    let endpoint = Receiver::ok().await;
    let alerts = Receiver::ok().await;
    let bida = alerting(&alerts).await;
    let queue_name = format!("bida-test-missing-{}", uuid::Uuid::new_v4().simple());
    let _cleanup = rabbit::delete_queue_later(&queue_name);
    let broker = rabbit_broker(&bida).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        rabbit_consumer(&broker, &queue_name, &endpoint.url("/in")),
    )
    .await;

    // The queue does not exist: every start fails, is recorded, and waits longer.
    let crashing = wait_consumer(&bida, &consumer, |c| c["crashes"].as_u64() >= Some(3)).await;
    let report = &crashing["nodes"][0];
    assert_eq!(report["state"], "restarting", "{crashing}");
    assert!(
        report["report"]["last_error"].as_str().unwrap().contains("NOT_FOUND"),
        "{crashing}"
    );
    let alert = alert(&alerts, "bida.consumer.crashing").await;
    assert_eq!(alert["consumer_id"], consumer.as_str());
    assert_eq!(alert["consecutive"], 3);

    // The queue appears: the next restart succeeds.
    let queue = TestQueue::declare_named(&queue_name).await;
    queue.publish([(Some("after".to_string()), b"{}".to_vec())]).await;
    assert!(
        endpoint.wait_for_hits(1, Duration::from_secs(90)).await,
        "{}",
        bida.log()
    );
    wait_consumer(&bida, &consumer, |c| c["state"] == "running").await;
}

#[tokio::test]
async fn a_parked_lane_waits_for_its_replay() {
    let fixed = Arc::new(Mutex::new(false));
    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let (broken, seen) = (fixed.clone(), order.clone());
    let endpoint = Receiver::start(move |hit, _| {
        let body: Value = serde_json::from_slice(&hit.body).unwrap_or_default();
        let (key, seq) = (
            body["key"].as_str().unwrap_or_default().to_string(),
            body["seq"].as_u64().unwrap_or(0),
        );
        if key == "k1" && seq == 5 && !*broken.lock().unwrap() {
            return Reply::status(500);
        }
        seen.lock().unwrap().entry(key).or_default().push(seq);
        Reply::ok()
    })
    .await;
    let alerts = Receiver::ok().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("lanes", 2).await;
    let bida = alerting(&alerts).await;
    let broker = kafka_broker(&bida, &kafka).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "ordered", "broker_id": broker, "source": {"topics": ["lanes"], "group": "lanes"},
               "endpoint": {"url": endpoint.url("/in")},
               "policy": {"ordering": "key", "max_attempts": 3, "backoff": {"initial_ms": 50, "max_ms": 100}}}),
    )
    .await;
    kafka
        .produce(
            "lanes",
            (0..20).flat_map(|seq| {
                (0..3).map(move |k| {
                    (
                        Some(format!("k{k}")),
                        json!({"key": format!("k{k}"), "seq": seq}).to_string().into_bytes(),
                    )
                })
            }),
        )
        .await;
    let lane = |key: &str| order.lock().unwrap().get(key).cloned().unwrap_or_default();
    assert!(
        eventually(WAIT, || lane("k0").len() == 20 && lane("k2").len() == 20).await,
        "other keys flow"
    );
    let parked = wait_consumer(&bida, &consumer, |c| c["parked_lanes"].get("k1").is_some()).await;
    assert_eq!(
        lane("k1"),
        (0..5).collect::<Vec<u64>>(),
        "k1 stops before its failing message"
    );
    alert(&alerts, "bida.consumer.lane_parked").await;
    let dead_task = parked["parked_lanes"]["k1"].as_str().unwrap().to_string();
    let (_, task) = bida.get(&format!("/v1/tasks/{dead_task}")).await;
    assert_eq!(task["status"], "dead", "{task}");

    *fixed.lock().unwrap() = true;
    let (status, replay) = bida
        .post(&format!("/v1/consumers/{consumer}/lanes/k1/replay"), json!(null))
        .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["released"], true, "{replay}");
    assert!(eventually(WAIT, || lane("k1").len() == 20).await, "{:?}", lane("k1"));
    assert_eq!(lane("k1"), (0..20).collect::<Vec<u64>>(), "the lane resumed in order");
    wait_consumer(&bida, &consumer, |c| {
        c["parked_lanes"].as_object().is_some_and(|p| p.is_empty())
    })
    .await;
}

#[tokio::test]
async fn kafka_offsets_are_reset_and_messages_resent() {
    let endpoint = Receiver::ok().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("replayable", 2).await;
    let bida = Bida::start("").await;
    let broker = kafka_broker(&bida, &kafka).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "c", "broker_id": broker, "source": {"topics": ["replayable"], "group": "replay"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    kafka
        .produce(
            "replayable",
            (0..50).map(|i| (Some(format!("k{i}")), format!("{{\"n\":{i}}}").into_bytes())),
        )
        .await;
    assert!(eventually(WAIT, || endpoint.distinct_messages() == 50).await);
    let caught_up =
        |c: &Value| c["lag_total"] == 0 && c["lag"].as_array().is_some_and(|partitions| partitions.len() == 2);
    wait_consumer(&bida, &consumer, caught_up).await;

    // A commit the broker lost: the group's offset falls behind what is done.
    // The running consumer commits it again rather than leave a false lag.
    kafka.overwrite_group_offset("replay", "replayable", 0, 0).await;
    wait_consumer(&bida, &consumer, |c| c["lag_total"].as_i64() > Some(0)).await;
    wait_consumer(&bida, &consumer, caught_up).await;
    assert_eq!(endpoint.hit_count(), 50, "nothing delivered again");

    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, reset) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    let committed = reset["committed"].as_array().unwrap();
    assert_eq!(committed.len(), 2);
    assert!(committed.iter().all(|p| p["offset"] == 0), "{reset}");
    let (_, stopped) = bida.get(&format!("/v1/consumers/{consumer}")).await;
    assert_eq!(stopped["lag_total"], 50, "{stopped}");
    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/start"), json!(null)).await;
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 100).await,
        "all 50 again: {}",
        endpoint.hit_count()
    );
    assert_eq!(endpoint.distinct_messages(), 50, "the same message ids");

    let (status, resent) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": "replayable", "partition": 0, "from": 0, "to": 2}),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    let resent_ids = resent["task_ids"].as_array().unwrap().len();
    assert!((1..=3).contains(&resent_ids), "{resent}");
    assert!(eventually(WAIT, || endpoint.hit_count() == 100 + resent_ids).await);
    let again: Vec<_> = endpoint
        .hits()
        .iter()
        .skip(100)
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    assert!(
        again.iter().all(|id| id.starts_with("kafka:replayable:0:")),
        "{again:?}"
    );

    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": "other", "partition": 0, "from": 0, "to": 2}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("topic")),
        "{problem}"
    );
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "twin", "broker_id": broker, "source": {"topics": ["replayable"], "group": "replay"},
                   "endpoint": {"url": endpoint.url("/twin")}}),
        )
        .await;
    assert_eq!(status, 409, "one group, one consumer: {problem}");

    let (_, tasks) = bida.get(&format!("/v1/tasks?consumer_id={consumer}&limit=1")).await;
    let task_id = tasks["items"][0]["id"].as_str().unwrap().to_string();
    let (status, resent) = bida
        .post(&format!("/v1/consumers/{consumer}/resend"), json!({"task_id": task_id}))
        .await;
    assert_eq!(status, 200, "{resent}");
    assert!(eventually(WAIT, || endpoint.hit_count() == 101 + resent_ids).await);
}

#[tokio::test]
async fn rate_limits_hold_and_exchanges_are_bound() {
    let endpoint = Receiver::ok().await;
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let broker = rabbit_broker(&bida).await;
    let bound = format!("bida-test-bound-{}", uuid::Uuid::new_v4().simple());
    let _cleanup = rabbit::delete_queue_later(&bound);
    let exchange = format!("bida-test-ex-{}", uuid::Uuid::new_v4().simple());
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "bound", "broker_id": broker,
               "source": {"queue": bound, "exchange": exchange, "routing_key": "orders.#"},
               "endpoint": {"url": endpoint.url("/bound")}, "policy": {"rate_per_sec": 20}}),
    )
    .await;
    let running = wait_consumer(&bida, &consumer, |c| c["state"] == "running").await;
    assert_eq!(
        running["source"]["declare"], true,
        "binding declares the queue: {running}"
    );
    queue.publish_to(&exchange, "orders.created", br#"{"order":1}"#).await;
    queue
        .publish_to(&exchange, "invoices.created", br#"{"invoice":1}"#)
        .await;
    assert!(endpoint.wait_for_hits(1, WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(endpoint.hit_count(), 1, "only the bound routing key arrives");
    assert_eq!(&endpoint.hits()[0].body[..], br#"{"order":1}"#);

    // 20 messages a second: at most a burst of 20 plus 20 a second.
    let limited = created(&bida, "/v1/consumers", {
        let mut body = rabbit_consumer(&broker, &queue.name, &endpoint.url("/limited"));
        body["policy"] = json!({"rate_per_sec": 20, "concurrency": 32});
        body
    })
    .await;
    wait_consumer(&bida, &limited, |c| c["state"] == "running").await;
    queue
        .publish((0..300).map(|i| (Some(format!("r{i}")), b"{}".to_vec())))
        .await;
    let limited_hits = || endpoint.hits().iter().filter(|h| h.path == "/limited").count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_three_seconds = limited_hits();
    assert!(
        (20..=90).contains(&in_three_seconds),
        "{in_three_seconds} deliveries in 3 s at 20/s"
    );
    let (status, _) = bida
        .patch(
            &format!("/v1/consumers/{limited}"),
            json!({"policy": {"rate_per_sec": 0}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || limited_hits() == 300).await,
        "the limit lifted live: {}",
        limited_hits()
    );
}

#[tokio::test]
async fn odd_messages_are_delivered_not_crashed_on() {
    let endpoint = Receiver::ok().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("odd", 1).await;
    let queue = TestQueue::declare_quorum().await;
    let bida = Bida::start("").await;
    let k = kafka_broker(&bida, &kafka).await;
    let kc = created(
        &bida,
        "/v1/consumers",
        json!({"name": "odd", "broker_id": k, "source": {"topics": ["odd"], "group": "odd"},
               "endpoint": {"url": endpoint.url("/kafka")}, "policy": {"ordering": "key"}}),
    )
    .await;
    // A Confluent-framed key starts with a zero byte; jsonb refuses NUL.
    kafka
        .produce_raw(
            "odd",
            vec![
                (vec![0, 0, 0, 1, 42], b"{\"framed\":true}".to_vec()),
                (vec![0xff, 0xfe], b"{}".to_vec()),
            ],
        )
        .await;
    assert!(endpoint.wait_for_hits(2, WAIT).await, "{}", bida.log());
    let consumer = wait_consumer(&bida, &kc, |c| c["counters"]["delivered"] == 2).await;
    assert_eq!(consumer["crashes"], 0, "{consumer}");
    let (_, tasks) = bida.get(&format!("/v1/tasks?consumer_id={kc}")).await;
    let task = tasks["items"][0]["id"].as_str().unwrap().to_string();
    let (_, detail) = bida.get(&format!("/v1/tasks/{task}")).await;
    assert!(detail["request"]["body"].is_object(), "{detail}");

    // A producer reusing message ids: different bodies are different messages.
    let mq = rabbit_broker(&bida).await;
    let rc = created(
        &bida,
        "/v1/consumers",
        rabbit_consumer(&mq, &queue.name, &endpoint.url("/quorum")),
    )
    .await;
    queue
        .publish([
            (Some("order-7".to_string()), br#"{"v":1}"#.to_vec()),
            (Some("order-7".to_string()), br#"{"v":2}"#.to_vec()),
        ])
        .await;
    assert!(
        endpoint
            .wait_until(WAIT, |hits| hits.iter().filter(|h| h.path == "/quorum").count() == 2)
            .await
    );
    // Running, on a quorum queue (per-consumer prefetch), both recorded.
    let consumer = wait_consumer(&bida, &rc, |c| {
        c["counters"]["consumed"] == 2 && c["state"] == "running"
    })
    .await;
    assert_eq!(consumer["counters"]["delivered"], 2, "both recorded: {consumer}");
}

/// A group whose committed offset lies past the partition's end (a log
/// truncated or recreated under it): the broker resets the consumer to the
/// log's start, below what it expects. That is recorded, alerted and shown,
/// and the messages there are delivered, not skipped.
#[tokio::test]
async fn offsets_that_go_back_are_recorded_alerted_and_delivered() {
    let endpoint = Receiver::ok().await;
    let alerts = Receiver::ok().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("truncated", 1).await;
    kafka
        .produce(
            "truncated",
            (0..5).map(|i| (None, format!("{{\"n\":{i}}}").into_bytes())),
        )
        .await;
    kafka.overwrite_group_offset("past-the-end", "truncated", 0, 50).await;
    let bida = alerting(&alerts).await;
    let broker = kafka_broker(&bida, &kafka).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "c", "broker_id": broker,
               "source": {"topics": ["truncated"], "group": "past-the-end", "start": "earliest"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;

    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 5).await,
        "the messages below the committed offset are delivered: {}",
        endpoint.distinct_messages()
    );
    // The consumer's status is folded from its events: shown means recorded.
    let rewound = wait_consumer(&bida, &consumer, |c| {
        c["anomalies"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let anomaly = &rewound["anomalies"][0];
    assert_eq!(anomaly["kind"], "offsets_rewound", "{rewound}");
    assert_eq!(anomaly["topic"], "truncated");
    assert_eq!(anomaly["partition"], 0);
    assert_eq!(anomaly["expected"], 50);
    assert_eq!(anomaly["got"], 0);
    let alert = alert(&alerts, "bida.consumer.source_anomaly").await;
    assert_eq!(alert["consumer_id"], consumer.as_str());
    assert_eq!(alert["anomaly"]["kind"], "offsets_rewound");
    // Committed where the log really is, not past it.
    wait_consumer(&bida, &consumer, |c| c["lag"][0]["committed"] == 5).await;
}

/// A NATS broker shows its streams; a consumer's lag is its durable
/// consumer's pending count; past messages are resent by stream sequence;
/// what the kind cannot do (offsets) is refused plainly.
#[tokio::test]
async fn nats_streams_are_shown_resent_by_sequence_and_have_no_offsets() {
    let endpoint = Receiver::ok().await;
    let stream = bida_testkit::nats::TestStream::create().await;
    let bida = Bida::start("").await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "nats", "kind": "nats", "url": bida_testkit::nats::url()}),
    )
    .await;
    stream.publish(numbered(0..20)).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "n", "broker_id": broker, "source": {"stream": stream.name, "durable": "ops"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    let done = wait_consumer(&bida, &consumer, |c| {
        c["counters"]["delivered"] == 20 && c["lag_total"] == 0
    })
    .await;
    assert_eq!(done["lag"][0]["destination"], stream.name.as_str(), "{done}");
    let keys: std::collections::HashSet<String> = endpoint
        .hits()
        .iter()
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    assert!(keys.contains(&format!("nats:{}:1", stream.name)), "{keys:?}");

    let (status, view) = bida.get(&format!("/v1/brokers/{broker}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    assert_eq!(view["capabilities"]["offset_reset"], false, "{view}");
    let listed = view["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stream.name.as_str())
        .unwrap_or_else(|| panic!("the test stream is listed: {view}"))
        .clone();
    assert_eq!(
        (listed["messages"].as_i64(), listed["consumers"].as_i64()),
        (Some(20), Some(1)),
        "{listed}"
    );

    let (status, resent) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": stream.name, "from": 3, "to": 5}),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["task_ids"].as_array().unwrap().len(), 3, "{resent}");
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 23).await,
        "{}",
        endpoint.hit_count()
    );
    let again: Vec<String> = endpoint.hits()[20..]
        .iter()
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    for sequence in 3..=5 {
        assert!(again.contains(&format!("nats:{}:{sequence}", stream.name)), "{again:?}");
    }

    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("NATS JetStream"),
        "{problem}"
    );
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "twin", "broker_id": broker, "source": {"stream": stream.name, "durable": "ops"},
                   "endpoint": {"url": endpoint.url("/twin")}}),
        )
        .await;
    assert_eq!(status, 409, "one durable, one consumer: {problem}");
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "bad", "broker_id": broker, "source": {"queue": "q"},
                   "endpoint": {"url": endpoint.url("/bad")}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
}

/// A Redis broker shows its streams and groups; a consumer's lag is its
/// group's; past entries are resent by id; the group is moved back to the
/// start (offsets, which Redis has not, are refused plainly).
#[tokio::test]
async fn redis_streams_are_shown_resent_by_id_and_their_groups_moved() {
    let endpoint = Receiver::ok().await;
    let stream = bida_testkit::redis::TestStream::create();
    let bida = Bida::start("").await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "redis", "kind": "redis", "url": bida_testkit::redis::url()}),
    )
    .await;
    stream.publish(numbered(0..20)).await;
    let ids = stream.ids().await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "r", "broker_id": broker, "source": {"stream": stream.name, "group": "ops"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    let done = wait_consumer(&bida, &consumer, |c| {
        c["counters"]["delivered"] == 20 && c["lag_total"] == 0
    })
    .await;
    assert_eq!(done["lag"][0]["destination"], stream.name.as_str(), "{done}");
    // Keys are ordered, not the stream as a whole: entry 0 need not come first.
    let first_id = format!("redis:{}:{}", stream.name, ids[0]);
    let hits = endpoint.hits();
    let first = hits
        .iter()
        .find(|hit| hit.message_id() == Some(first_id.as_str()))
        .unwrap_or_else(|| panic!("{first_id} delivered"));
    assert_eq!(&first.body[..], br#"{"n":0}"#, "the body field");

    let (status, view) = bida.get(&format!("/v1/brokers/{broker}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    assert_eq!(view["capabilities"]["offset_reset"], true, "{view}");
    let listed = view["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stream.name.as_str())
        .unwrap_or_else(|| panic!("the test stream is listed: {view}"))
        .clone();
    assert_eq!(listed["length"], 20, "{listed}");
    assert_eq!(listed["groups"][0]["name"], "ops", "{listed}");

    let (status, resent) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": stream.name, "from": ids[3], "to": ids[5]}),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["task_ids"].as_array().unwrap().len(), 3, "{resent}");
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 23).await,
        "{}",
        endpoint.hit_count()
    );
    let again: Vec<String> = endpoint.hits()[20..]
        .iter()
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    for id in &ids[3..=5] {
        assert!(again.contains(&format!("redis:{}:{id}", stream.name)), "{again:?}");
    }
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": stream.name, "from": "start", "to": ids[5]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");

    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "offsets", "offsets": [{"topic": stream.name, "partition": 0, "offset": 3}]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, reset) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    let (_, stopped) = bida.get(&format!("/v1/consumers/{consumer}")).await;
    assert_eq!(stopped["lag_total"], 20, "{stopped}");
    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/start"), json!(null)).await;
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 43).await,
        "all 20 again: {}",
        endpoint.hit_count()
    );
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "twin", "broker_id": broker, "source": {"stream": stream.name, "group": "ops"},
                   "endpoint": {"url": endpoint.url("/twin")}}),
        )
        .await;
    assert_eq!(status, 409, "one group, one consumer: {problem}");
}

/// An MQTT broker shows what it tells of itself and the topic filters read
/// from it; each message keeps the id its publisher gave it; MQTT keeps no
/// positions, so resends and offset resets are refused plainly.
#[tokio::test]
async fn mqtt_topics_are_shown_and_positions_refused() {
    let endpoint = Receiver::ok().await;
    let mqtt = bida_testkit::mqtt::TestBroker::start().await;
    let bida = Bida::start("").await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "mqtt", "kind": "mqtt", "url": mqtt.url()}),
    )
    .await;
    let filter = format!("{}/#", mqtt.base);
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "m", "broker_id": broker, "source": {"topic": filter, "group": "ops"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    wait_consumer(&bida, &consumer, |c| c["state"] == "running").await;
    mqtt.publish((0..10).map(|i| {
        (
            format!("order-{i}"),
            Some(format!("k{}", i % 2)),
            format!(r#"{{"n":{i}}}"#).into_bytes(),
        )
    }))
    .await;
    wait_consumer(&bida, &consumer, |c| c["counters"]["delivered"] == 10).await;
    let ids: std::collections::HashSet<String> = endpoint
        .hits()
        .iter()
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    assert!(ids.contains("mqtt:order-0") && ids.contains("mqtt:order-9"), "{ids:?}");

    let (status, view) = bida.get(&format!("/v1/brokers/{broker}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    for capability in ["lag", "offset_reset", "resend_range", "takeover"] {
        assert_eq!(view["capabilities"][capability], false, "{capability}: {view}");
    }
    assert!(
        view.to_string().contains(&filter),
        "the consumer's filter is listed: {view}"
    );
    assert!(
        view["mqtt"]["version"]
            .as_str()
            .is_some_and(|v| v.contains("mosquitto")),
        "what the broker tells under $SYS: {view}"
    );

    positions_refused(&bida, &consumer, &filter, "MQTT").await;
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "bad", "broker_id": broker, "source": {"topic": "a/#/b", "group": "g"},
                   "endpoint": {"url": endpoint.url("/bad")}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("source.topic"), "{problem}");
}

/// An ActiveMQ broker shows its figures and queues (its statistics plugin); a
/// consumer's lag is its queue's size, stopped or running; a virtual topic is
/// read through its group's queue; queues keep no positions, so resends and
/// offset resets are refused plainly.
#[tokio::test]
async fn activemq_queues_are_shown_virtual_topics_read_and_positions_refused() {
    let endpoint = Receiver::ok().await;
    let queue = bida_testkit::activemq::TestQueue::create();
    let bida = Bida::start("").await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "activemq", "kind": "activemq", "url": bida_testkit::activemq::url()}),
    )
    .await;
    queue.publish(numbered(0..20)).await;
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "q", "broker_id": broker, "source": {"queue": queue.name},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    let done = wait_consumer(&bida, &consumer, |c| {
        c["counters"]["delivered"] == 20 && c["lag_total"] == 0
    })
    .await;
    assert_eq!(done["lag"][0]["destination"], queue.name.as_str(), "{done}");
    // Keys are ordered, not the queue as a whole: n=0 need not come first.
    let hits = endpoint.hits();
    for hit in &hits {
        assert!(
            hit.message_id().is_some_and(|id| id.starts_with("activemq:ID:")),
            "the broker's message id: {:?}",
            hit.message_id()
        );
    }
    assert!(
        hits.iter().any(|hit| &hit.body[..] == br#"{"n":0}"#),
        "the bodies as sent"
    );

    let (status, view) = bida.get(&format!("/v1/brokers/{broker}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    for (capability, has) in [
        ("lag", true),
        ("takeover", true),
        ("offset_reset", false),
        ("resend_range", false),
    ] {
        assert_eq!(view["capabilities"][capability], has, "{capability}: {view}");
    }
    assert!(
        view["activemq"]["brokerName"].is_string(),
        "the broker's figures: {view}"
    );
    let listed = view["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue.name.as_str())
        .unwrap_or_else(|| panic!("the test queue is listed: {view}"))
        .clone();
    assert_eq!(listed["enqueued"], 20, "{listed}");
    assert_eq!(listed["consumers"], 1, "{listed}");

    positions_refused(&bida, &consumer, &queue.name, "ActiveMQ").await;
    queue
        .publish((20..25).map(|i| (None, format!(r#"{{"n":{i}}}"#).into_bytes())))
        .await;
    wait_consumer(&bida, &consumer, |c| c["lag_total"] == 5).await;

    // A virtual topic: the group's queue gets each message published to the topic.
    let topic = format!("bida-test-{}", uuid::Uuid::new_v4().simple());
    let grouped = created(
        &bida,
        "/v1/consumers",
        json!({"name": "vt", "broker_id": broker, "source": {"virtual_topic": topic, "group": "ops"},
               "endpoint": {"url": endpoint.url("/vt")}}),
    )
    .await;
    wait_consumer(&bida, &grouped, |c| c["state"] == "running").await;
    bida_testkit::activemq::publish(
        &format!("/topic/VirtualTopic.{topic}"),
        (0..3).map(|i| (None, format!(r#"{{"vt":{i}}}"#).into_bytes())),
    )
    .await;
    wait_consumer(&bida, &grouped, |c| c["counters"]["delivered"] == 3).await;
    assert_eq!(
        endpoint.hits().iter().filter(|h| h.path == "/vt").count(),
        3,
        "each message once"
    );
    let (_, view) = bida.get(&format!("/v1/consumers/{grouped}")).await;
    assert_eq!(
        view["lag"][0]["destination"],
        format!("Consumer.ops.VirtualTopic.{topic}").as_str(),
        "{view}"
    );

    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "bad", "broker_id": broker, "source": {"queue": "orders.>"},
                   "endpoint": {"url": endpoint.url("/bad")}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("source.queue"), "{problem}");
}

#[tokio::test]
async fn rocketmq_topics_are_shown_filtered_by_tag_reset_and_resent() {
    let endpoint = Receiver::ok().await;
    let topic = bida_testkit::rocketmq::TestTopic::create().await;
    let bida = Bida::start("").await;
    let broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "rocketmq", "kind": "rocketmq", "name_server": bida_testkit::rocketmq::name_server()}),
    )
    .await;
    topic.publish_tagged("void", numbered(0..5)).await;
    let mut publisher = bida_testkit::rocketmq::Publisher::connect(&topic).await;
    let mut paid = Vec::new();
    for (key, body) in numbered(5..25) {
        paid.push(publisher.send_tagged(Some("paid"), key.as_deref(), &body).await);
    }
    let consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "r", "broker_id": broker,
               "source": {"topic": topic.name, "group": topic.group, "tags": "paid || refunded"},
               "endpoint": {"url": endpoint.url("/in")}}),
    )
    .await;
    // The filtered messages count as consumed: the lag reaches 0.
    let caught_up = |c: &Value| {
        c["counters"]["delivered"] == 20 && c["lag_total"] == 0 && c["lag"].as_array().map(Vec::len) == Some(4)
    };
    wait_consumer(&bida, &consumer, caught_up).await;
    let ids: std::collections::HashSet<String> = endpoint
        .hits()
        .iter()
        .map(|h| h.message_id().unwrap().to_string())
        .collect();
    let sent: std::collections::HashSet<String> = paid.iter().map(|s| format!("rocketmq:{}", s.id)).collect();
    assert_eq!(ids, sent, "the producer's ids, and only the tagged messages");
    let ends = topic.end_offsets().await;
    assert!(
        until(WAIT, || async {
            let committed = topic.committed(&topic.group).await;
            committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e))
        })
        .await,
        "every queue committed to its end: {:?} of {ends:?}",
        topic.committed(&topic.group).await
    );

    let (status, view) = bida.get(&format!("/v1/brokers/{broker}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["health"]["reachable"], true, "{view}");
    assert_eq!(view["capabilities"]["offset_reset"], true, "{view}");
    let listed = view["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.name.as_str())
        .unwrap_or_else(|| panic!("the test topic is listed: {view}"))
        .clone();
    assert_eq!(
        (listed["queues"].as_i64(), listed["messages"].as_i64()),
        (Some(4), Some(25)),
        "{listed}"
    );
    assert!(view["brokers"].as_array().is_some_and(|b| !b.is_empty()), "{view}");

    // A range of one queue read again: the tagged messages at its offsets.
    let first = &paid[0];
    let (status, resent) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": topic.name, "partition": first.queue, "from": first.offset, "to": first.offset}),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["task_ids"].as_array().unwrap().len(), 1, "{resent}");
    assert!(eventually(WAIT, || endpoint.hit_count() == 21).await);
    assert_eq!(
        endpoint.hits()[20].message_id(),
        Some(format!("rocketmq:{}", first.id).as_str())
    );
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/resend"),
            json!({"topic": topic.name, "partition": 9, "from": 0, "to": 1}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("partition")),
        "{problem}"
    );

    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, reset) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    let committed = reset["committed"].as_array().unwrap();
    assert_eq!(committed.len(), 4, "{reset}");
    assert!(committed.iter().all(|p| p["offset"] == 0), "{reset}");
    assert_eq!(topic.committed(&topic.group).await, vec![Some(0); 4]);
    let (_, stopped) = bida.get(&format!("/v1/consumers/{consumer}")).await;
    assert_eq!(stopped["lag_total"], 25, "{stopped}");
    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/start"), json!(null)).await;
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 41).await,
        "the 20 again: {}",
        endpoint.hit_count()
    );
    assert_eq!(endpoint.distinct_messages(), 20, "the same message ids");

    let (status, _) = bida.post(&format!("/v1/consumers/{consumer}/stop"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, problem) = bida
        .post(
            &format!("/v1/consumers/{consumer}/reset-offsets"),
            json!({"to": "offsets", "offsets": [{"topic": topic.name, "partition": 7, "offset": 0}]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "twin", "broker_id": broker, "source": {"topic": topic.name, "group": topic.group},
                   "endpoint": {"url": endpoint.url("/twin")}}),
        )
        .await;
    assert_eq!(status, 409, "one group, one consumer: {problem}");
}
