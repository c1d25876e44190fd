//! Built-in topics end to end (the `builtin` broker, `/v1/topics`): their
//! life as events, where published messages land, publish/subscribe (every
//! subscription gets every message), point-to-point within a subscription
//! (its nodes share the partitions), retention that outruns a subscription,
//! restarts, offset resets and resends. Messages are counted at the
//! endpoint by their `webhook-id`, which is the id the publish answered.

mod support;

use bida_store::{Store, StoreConfig, StoreLocation};
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use support::{eventually, until, Bida, Hit, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(45);

/// A request as sent, answered with its status, content type and body.
async fn send(bida: &Bida, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String, Value) {
    let mut request = bida.http.request(method, format!("{}{path}", bida.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the node answers");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (status, body) = support::read(response).await;
    (status, content_type, body)
}

/// Asserts a refusal: `statuses`, as a problem document, naming `field`
/// among its errors (or in its detail) when given.
async fn refused(bida: &Bida, method: reqwest::Method, path: &str, body: Value, statuses: &[u16], field: Option<&str>) {
    let (status, content_type, problem) = send(bida, method.clone(), path, Some(body.clone())).await;
    assert!(statuses.contains(&status), "{method} {path} {body}: {status} {problem}");
    assert_eq!(
        content_type, "application/problem+json",
        "{method} {path} {body}: {problem}"
    );
    assert_eq!(problem["status"], status, "{problem}");
    if let Some(field) = field {
        let named = problem["errors"]
            .as_array()
            .is_some_and(|errors| errors.iter().any(|e| e["field"] == field))
            || problem["detail"].as_str().is_some_and(|d| d.contains(field));
        assert!(named, "{method} {path} {body}: the problem names `{field}`: {problem}");
    }
}

async fn create_topic(bida: &Bida, body: Value) -> Value {
    let (status, topic) = bida.post("/v1/topics", body).await;
    assert_eq!(status, 201, "{topic}");
    topic
}

async fn topic_view(bida: &Bida, name: &str) -> Value {
    let (status, topic) = bida.get(&format!("/v1/topics/{name}")).await;
    assert_eq!(status, 200, "{topic}");
    topic
}

/// Publishes `messages` as one batch; the answer's entries, in order.
async fn publish(bida: &Bida, topic: &str, messages: Vec<Value>) -> Vec<Value> {
    let count = messages.len();
    let (status, answer) = bida
        .post(&format!("/v1/topics/{topic}/messages"), json!({ "messages": messages }))
        .await;
    assert_eq!(status, 200, "publish: {answer}");
    let landed = answer["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(landed.len(), count, "{answer}");
    for (index, message) in landed.iter().enumerate() {
        assert_eq!(message["index"], index, "{message}");
        assert_eq!(message["topic"], topic, "{message}");
    }
    landed
}

/// Publishes bodies `{"n": i}` for `range`, in batches of `batch`; the
/// message ids by `n`.
async fn publish_numbered(
    bida: &Bida,
    topic: &str,
    range: std::ops::Range<u64>,
    batch: usize,
) -> BTreeMap<u64, String> {
    let numbers: Vec<u64> = range.collect();
    let mut ids = BTreeMap::new();
    for chunk in numbers.chunks(batch) {
        let messages = chunk.iter().map(|n| json!({"body": {"n": n}})).collect();
        for (n, landed) in chunk.iter().zip(publish(bida, topic, messages).await) {
            ids.insert(*n, landed["id"].as_str().expect("an id").to_string());
        }
    }
    ids
}

/// A consumer of `topic` delivering to `url`; waits until it runs.
async fn subscribe(bida: &Bida, name: &str, topic: &str, url: &str, source: Value, policy: Value) -> String {
    let mut source_fields = json!({ "topic": topic });
    if let (Some(fields), Some(extra)) = (source_fields.as_object_mut(), source.as_object()) {
        fields.extend(extra.clone());
    }
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": name, "broker_id": "builtin", "source": source_fields,
                   "endpoint": {"url": url, "timeout_ms": 5000}, "policy": policy}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    let id = consumer["id"].as_str().expect("an id").to_string();
    bida.every_node_running(&id).await;
    id
}

async fn consumer_view(bida: &Bida, id: &str) -> Value {
    bida.get(&format!("/v1/consumers/{id}")).await.1
}

async fn wait_consumer(bida: &Bida, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    bida.consumer_until(id, WAIT, done).await
}

async fn lifecycle(bida: &Bida, id: &str, action: &str) {
    let (status, view) = bida.post(&format!("/v1/consumers/{id}/{action}"), json!(null)).await;
    assert_eq!(status, 200, "{action}: {view}");
}

/// The `n` of a delivered body `{"n": ...}`.
fn number(hit: &Hit) -> Option<u64> {
    serde_json::from_slice::<Value>(&hit.body).ok()?["n"].as_u64()
}

/// How many times each `n` arrived.
fn arrivals(endpoint: &Receiver) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for hit in endpoint.hits() {
        *counts.entry(number(&hit).expect("a numbered body")).or_default() += 1;
    }
    counts
}

fn duplicates(endpoint: &Receiver) -> usize {
    let hits = endpoint.hits();
    let distinct: HashSet<&str> = hits.iter().filter_map(Hit::message_id).collect();
    hits.len() - distinct.len()
}

/// The first object anywhere in `value` whose `kind` is `kind`.
fn find_kind<'v>(value: &'v Value, kind: &str) -> Option<&'v Value> {
    match value {
        Value::Object(fields) if fields.get("kind").and_then(Value::as_str) == Some(kind) => Some(value),
        Value::Object(fields) => fields.values().find_map(|v| find_kind(v, kind)),
        Value::Array(items) => items.iter().find_map(|v| find_kind(v, kind)),
        _ => None,
    }
}

fn event_types(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["event_type"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The node's store opened beside it (PostgreSQL: several may share it).
async fn store_of(bida: &Bida) -> Store {
    Store::open_at(&StoreLocation::Postgres(bida.db_url.clone()), &StoreConfig::default())
        .await
        .expect("the node's store")
}

/// Runs the logs' maintenance as the node's pass would at `at`. The
/// embedded store is the node's alone (a lock file): it is stopped meanwhile.
async fn maintain_logs_at(bida: &mut Bida, at: chrono::DateTime<Utc>) {
    if support::embedded() {
        assert!(bida.terminate().await.is_some_and(|s| s.success()), "a clean stop");
        {
            let store = Store::open_at(
                &StoreLocation::Embedded(bida.dir().join("data")),
                &StoreConfig::default(),
            )
            .await
            .expect("the node's embedded store");
            store.maintain_logs(at).await.expect("maintenance");
        }
        bida.restart().await;
    } else {
        store_of(bida).await.maintain_logs(at).await.expect("maintenance");
    }
}

/// Create, change, delete: each an event; bad input refused as problems
/// with nothing made; a subscribed topic kept; the built-in broker listed
/// first and never registered, changed or deleted.
#[tokio::test]
async fn topics_are_created_changed_and_deleted_as_events() {
    use reqwest::Method;
    let endpoint = Receiver::ok().await;
    let mut bida = Bida::start("").await;

    // Bad input: refused by name, nothing made.
    for (body, statuses, field) in [
        (json!({"name": "has space"}), &[400, 422][..], Some("name")),
        (json!({"name": "a/b"}), &[400, 422], Some("name")),
        (json!({"name": ""}), &[400, 422], Some("name")),
        (json!({"name": "t1", "retention": "3w"}), &[400, 422], Some("retention")),
        (
            json!({"name": "t1", "retention": "30m"}),
            &[400, 422],
            Some("retention"),
        ),
        (json!({"name": "t1", "partitions": 0}), &[400, 422], Some("partitions")),
        (
            json!({"name": "t1", "partitions": 300}),
            &[400, 422],
            Some("partitions"),
        ),
        (json!({"name": "t1", "partitions": -1}), &[400, 422], Some("partitions")),
        (json!({"name": "t1", "colour": "red"}), &[400, 422], Some("colour")),
        (json!({"partitions": 2}), &[400, 422], Some("name")),
    ] {
        refused(&bida, Method::POST, "/v1/topics", body, statuses, field).await;
    }
    let (status, listed) = bida.get("/v1/topics").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"], json!([]), "nothing made by bad input: {listed}");
    let (status, _) = bida.get("/v1/topics/t1").await;
    assert_eq!(status, 404);

    // Created with the defaults: one partition, three days.
    let created = create_topic(&bida, json!({"name": "orders"})).await;
    assert_eq!(created["name"], "orders", "{created}");
    assert_eq!(created["partitions"], 1, "{created}");
    assert_eq!(created["retention"], "3d", "{created}");
    assert_eq!(
        (created["messages"].as_i64(), created["published"].as_i64()),
        (Some(0), Some(0)),
        "{created}"
    );
    assert_eq!(
        created["offsets"],
        json!([{"partition": 0, "low": 0, "next": 0}]),
        "{created}"
    );
    assert_eq!(created["subscriptions"], json!([]), "{created}");
    assert!(created["created_at"].is_string(), "{created}");
    let seen = topic_view(&bida, "orders").await;
    assert_eq!(seen, created, "GET shows what POST answered");
    publish_numbered(&bida, "orders", 0..3, 3).await;

    // Changed: more partitions, another retention; never fewer partitions.
    let (status, changed) = bida
        .patch("/v1/topics/orders", json!({"partitions": 4, "retention": "12h"}))
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["partitions"].as_u64(), changed["retention"].as_str()),
        (Some(4), Some("12h")),
        "{changed}"
    );
    let offsets = changed["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 4, "a log partition per partition: {changed}");
    assert_eq!(offsets[0], json!({"partition": 0, "low": 0, "next": 3}), "{changed}");
    assert!(
        offsets[1..].iter().all(|p| p["low"] == 0 && p["next"] == 0),
        "new partitions start empty: {changed}"
    );
    assert_eq!(changed["published"], 3, "{changed}");
    // Fewer partitions (0 too): refused for this topic (409 or 422).
    for fewer in [2, 0] {
        refused(
            &bida,
            Method::PATCH,
            "/v1/topics/orders",
            json!({ "partitions": fewer }),
            &[409, 422],
            Some("partitions"),
        )
        .await;
    }
    for (body, field) in [
        (json!({"partitions": 257}), "partitions"),
        (json!({"retention": "3w"}), "retention"),
        (json!({"retention": "366d"}), "retention"),
        (json!({"name": "other"}), "name"),
    ] {
        refused(
            &bida,
            Method::PATCH,
            "/v1/topics/orders",
            body,
            &[400, 422],
            Some(field),
        )
        .await;
    }
    refused(
        &bida,
        Method::PATCH,
        "/v1/topics/nowhere",
        json!({"partitions": 8}),
        &[404],
        None,
    )
    .await;
    let (status, unchanged) = bida.patch("/v1/topics/orders", json!({"partitions": 4})).await;
    assert_eq!(status, 200, "a patch that changes nothing is no error: {unchanged}");
    let after = topic_view(&bida, "orders").await;
    assert_eq!(
        (after["partitions"].as_u64(), after["retention"].as_str()),
        (Some(4), Some("12h")),
        "refused changes changed nothing: {after}"
    );
    let (status, history) = bida.get("/v1/topics/orders/events").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        event_types(&history),
        ["TopicCreated", "TopicChanged"],
        "one event per change, none for refusals or a change of nothing: {history}"
    );
    let change = &history["events"][1]["payload"];
    assert!(
        change.to_string().contains("12h"),
        "the change's event holds the new spec: {change}"
    );
    // The topics list has it.
    let (_, listed) = bida.get("/v1/topics").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["items"][0]["name"], "orders", "{listed}");

    // The built-in broker: there, first, and never registered, changed or deleted.
    refused(
        &bida,
        Method::POST,
        "/v1/brokers",
        json!({"name": "mine", "kind": "builtin"}),
        &[400, 409, 422],
        Some("/v1/topics"),
    )
    .await;
    let (status, brokers) = bida.get("/v1/brokers").await;
    assert_eq!(status, 200, "{brokers}");
    let ids: Vec<&str> = brokers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["builtin"],
        "the built-in broker alone, none registered by the refusal: {brokers}"
    );
    assert_eq!(brokers["items"][0]["kind"], "builtin", "{brokers}");
    let (status, builtin) = bida.get("/v1/brokers/builtin").await;
    assert_eq!(status, 200, "{builtin}");
    refused(
        &bida,
        Method::PATCH,
        "/v1/brokers/builtin",
        json!({"name": "renamed"}),
        &[409],
        None,
    )
    .await;
    refused(
        &bida,
        Method::POST,
        "/v1/brokers/builtin/offline",
        json!(null),
        &[409],
        None,
    )
    .await;
    let (status, _, problem) = send(&bida, Method::DELETE, "/v1/brokers/builtin", None).await;
    assert_eq!(status, 409, "{problem}");
    let (status, builtin) = bida.get("/v1/brokers/builtin").await;
    assert_eq!(status, 200, "still there: {builtin}");

    // Kept while a consumer subscribes; deleted once it is gone.
    let consumer = subscribe(&bida, "reader", "orders", &endpoint.url("/in"), json!({}), json!({})).await;
    assert!(eventually(WAIT, || endpoint.distinct_messages() == 3).await);
    let subscribed = topic_view(&bida, "orders").await;
    assert_eq!(subscribed["subscriptions"], json!([consumer]), "{subscribed}");
    let (status, _, problem) = send(&bida, Method::DELETE, "/v1/topics/orders", None).await;
    assert_eq!(status, 409, "refused while subscribed: {problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(&consumer)),
        "the problem names the subscriber: {problem}"
    );
    assert_eq!(topic_view(&bida, "orders").await["published"], 3, "still whole");
    let (status, gone) = bida.delete(&format!("/v1/consumers/{consumer}")).await;
    assert!(status == 200 || status == 204, "{status} {gone}");
    assert_eq!(topic_view(&bida, "orders").await["subscriptions"], json!([]));
    let (status, deleted) = bida.delete("/v1/topics/orders").await;
    assert_eq!(status, 204, "{deleted}");
    let (status, _) = bida.get("/v1/topics/orders").await;
    assert_eq!(status, 404);
    refused(
        &bida,
        Method::POST,
        "/v1/topics/orders/messages",
        json!({"body": {"n": 1}}),
        &[404],
        None,
    )
    .await;
    let (status, _, _) = send(&bida, Method::DELETE, "/v1/topics/orders", None).await;
    assert_eq!(status, 404, "deleted once");
    let (status, history) = bida.get("/v1/topics/orders/events").await;
    assert_eq!(status, 200, "the history stays: {history}");
    assert_eq!(
        event_types(&history),
        ["TopicCreated", "TopicChanged", "TopicDeleted"],
        "{history}"
    );

    // The name again: a new topic, offsets from 0.
    let again = create_topic(&bida, json!({"name": "orders", "partitions": 2, "retention": "2d"})).await;
    assert_eq!(
        again["offsets"],
        json!([{"partition": 0, "low": 0, "next": 0}, {"partition": 1, "low": 0, "next": 0}]),
        "{again}"
    );
    publish_numbered(&bida, "orders", 0..2, 2).await;

    // A second create of a name taken: a conflict, and the topic as it was.
    for body in [
        json!({"name": "orders", "partitions": 2, "retention": "2d"}),
        json!({"name": "orders"}),
        json!({"name": "orders", "partitions": 8, "retention": "1h"}),
    ] {
        refused(&bida, Method::POST, "/v1/topics", body, &[409], None).await;
    }
    let kept = topic_view(&bida, "orders").await;
    assert_eq!(
        (kept["partitions"].as_u64(), kept["retention"].as_str()),
        (Some(2), Some("2d")),
        "{kept}"
    );
    let (_, history) = bida.get("/v1/topics/orders/events").await;
    assert_eq!(
        event_types(&history),
        ["TopicCreated", "TopicChanged", "TopicDeleted", "TopicCreated"],
        "no event for a refused create: {history}"
    );
    // Nor its log: no more partitions than the topic has, and its retention
    // still the topic's (26 hours on, a topic kept for two days, in slices
    // of a day, still holds its messages; an hour's retention would have
    // dropped today's slice). Both checked before either is asserted.
    let mut wrong = Vec::new();
    if kept["offsets"].as_array().map(Vec::len) != Some(2) {
        wrong.push(format!(
            "a refused create (8 partitions) left the log with more partitions than the topic has: {kept}"
        ));
    }
    maintain_logs_at(&mut bida, Utc::now() + TimeDelta::hours(26)).await;
    let held = topic_view(&bida, "orders").await;
    if held["messages"] != 2 {
        wrong.push(format!(
            "a refused create (retention 1h) shortened the log's retention to an hour: {held}"
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Where each message landed: a partition and an offset, keys kept to one
/// partition in publish order, offsets without gaps, keyless messages
/// spread; bad publishes refused with nothing written.
#[tokio::test]
async fn publish_answers_where_each_message_landed() {
    use reqwest::Method;
    let bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "spread", "partitions": 4})).await;

    // 200 keyed (k0..k9) and 50 keyless, mixed: alternating at first.
    let mut sent: Vec<Option<String>> = Vec::new();
    let mut keyed = (0..200).map(|i| Some(format!("k{}", i % 10)));
    for _ in 0..50 {
        sent.push(None);
        sent.push(keyed.next().unwrap());
    }
    sent.extend(keyed);
    assert_eq!(sent.len(), 250);
    let messages: Vec<Value> = sent
        .iter()
        .enumerate()
        .map(|(i, key)| match key {
            Some(key) => json!({"key": key, "body": {"n": i}}),
            None => json!({"body": {"n": i}}),
        })
        .collect();
    let landed = publish(&bida, "spread", messages).await;

    let mut ids = HashSet::new();
    let mut by_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut key_partition: HashMap<&str, i64> = HashMap::new();
    let mut key_offsets: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut keyless: BTreeMap<i64, usize> = BTreeMap::new();
    for (key, answer) in sent.iter().zip(&landed) {
        let partition = answer["partition"].as_i64().unwrap_or_else(|| panic!("{answer}"));
        let offset = answer["offset"].as_i64().unwrap_or_else(|| panic!("{answer}"));
        assert!((0..4).contains(&partition), "{answer}");
        assert!(
            ids.insert(answer["id"].as_str().unwrap().to_string()),
            "ids are unique: {answer}"
        );
        by_partition.entry(partition).or_default().push(offset);
        match key {
            Some(key) => {
                let first = *key_partition.entry(key).or_insert(partition);
                assert_eq!(partition, first, "key {key} keeps its partition");
                key_offsets.entry(key).or_default().push(offset);
            }
            None => *keyless.entry(partition).or_default() += 1,
        }
    }
    for (key, offsets) in &key_offsets {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {key}'s offsets follow publish order: {offsets:?}"
        );
    }
    for (partition, offsets) in &mut by_partition {
        offsets.sort_unstable();
        assert_eq!(
            *offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition}: offsets 0..n without gaps"
        );
    }
    let keys_spread: HashSet<i64> = key_partition.values().copied().collect();
    assert!(
        keys_spread.len() >= 2,
        "ten keys fall on more than one partition: {key_partition:?}"
    );

    let view = topic_view(&bida, "spread").await;
    assert_eq!(view["published"], 250, "{view}");
    assert_eq!(view["messages"], 250, "{view}");
    for bound in view["offsets"].as_array().unwrap() {
        let partition = bound["partition"].as_i64().unwrap();
        let held = by_partition.get(&partition).map_or(0, Vec::len) as i64;
        assert_eq!(
            (bound["low"].as_i64(), bound["next"].as_i64()),
            (Some(0), Some(held)),
            "{view}"
        );
    }

    // The same keys again, by concurrent publishers: still their partitions,
    // and the offsets still without gaps.
    let publishers = (0..10).map(|p| {
        let bida = &bida;
        async move {
            let messages = (0..10)
                .map(|i| json!({"key": format!("k{p}"), "body": {"p": p, "i": i}}))
                .collect();
            (p, publish(bida, "spread", messages).await)
        }
    });
    for (p, answers) in futures::future::join_all(publishers).await {
        let key = format!("k{p}");
        let offsets: Vec<i64> = answers.iter().map(|a| a["offset"].as_i64().unwrap()).collect();
        for answer in &answers {
            assert_eq!(
                answer["partition"].as_i64(),
                Some(key_partition[key.as_str()]),
                "{answer}"
            );
            assert!(ids.insert(answer["id"].as_str().unwrap().to_string()), "{answer}");
            by_partition
                .get_mut(&answer["partition"].as_i64().unwrap())
                .unwrap()
                .push(answer["offset"].as_i64().unwrap());
        }
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{key}: {offsets:?}");
    }
    for (partition, offsets) in &mut by_partition {
        offsets.sort_unstable();
        assert_eq!(
            *offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition}: offsets without gaps or repeats after concurrent publishes"
        );
    }
    assert_eq!(topic_view(&bida, "spread").await["published"], 350);

    // Refused, with nothing written.
    refused(
        &bida,
        Method::POST,
        "/v1/topics/missing/messages",
        json!({"body": {"n": 1}}),
        &[404],
        None,
    )
    .await;
    refused(
        &bida,
        Method::POST,
        "/v1/topics/spread/messages",
        json!({"topic": "other", "body": {"n": 1}}),
        &[422],
        Some("topic"),
    )
    .await;
    refused(
        &bida,
        Method::POST,
        "/v1/topics/spread/messages",
        json!({"messages": [{"body": 1}, {"topic": "spread", "body": 2}]}),
        &[422],
        Some("messages[1].topic"),
    )
    .await;
    refused(
        &bida,
        Method::POST,
        "/v1/topics/spread/messages",
        json!({"messages": [{"body": 1}, {"key": "", "body": 2}]}),
        &[422],
        Some("key"),
    )
    .await;
    assert_eq!(
        topic_view(&bida, "spread").await["published"],
        350,
        "refused publishes wrote nothing"
    );

    // A delayed message: held (202), then published.
    let (status, held) = bida
        .post(
            "/v1/topics/spread/messages",
            json!({"key": "later", "body": {"n": "later"}, "delay_ms": 500}),
        )
        .await;
    assert_eq!(status, 202, "{held}");
    assert_eq!(topic_view(&bida, "spread").await["published"], 350, "not yet");
    assert!(
        until(WAIT, || async { topic_view(&bida, "spread").await["published"] == 351 }).await,
        "the delayed message reached the topic"
    );

    // Keyless messages spread over the partitions, whatever keyed ones come between.
    assert!(
        keyless.len() == 4 && keyless.values().all(|n| (12..=13).contains(n)),
        "50 keyless messages of one batch spread round robin over 4 partitions: {keyless:?}"
    );
}

/// Publish/subscribe: each consumer is its own subscription and gets every
/// message, with the id the publish answered as its `webhook-id`.
#[tokio::test]
async fn every_subscription_gets_every_message() {
    use reqwest::Method;
    let endpoints = [Receiver::ok().await, Receiver::ok().await, Receiver::ok().await];
    let bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "news", "partitions": 2})).await;
    let mut consumers = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let id = subscribe(
            &bida,
            &format!("reader-{i}"),
            "news",
            &endpoint.url("/in"),
            json!({}),
            json!({"concurrency": 16}),
        )
        .await;
        consumers.push(id);
    }
    let mut groups = HashSet::new();
    for id in &consumers {
        let view = consumer_view(&bida, id).await;
        assert_eq!(view["source"]["topic"], "news", "{view}");
        groups.insert(view["source"]["group"].as_str().expect("a group").to_string());
    }
    assert_eq!(groups.len(), 3, "a subscription each: {groups:?}");
    let view = topic_view(&bida, "news").await;
    let mut subscribed: Vec<String> = serde_json::from_value(view["subscriptions"].clone()).unwrap();
    subscribed.sort();
    let mut expected = consumers.clone();
    expected.sort();
    assert_eq!(subscribed, expected, "{view}");
    // Two consumers cannot share a subscription.
    let taken = groups.iter().next().unwrap().clone();
    refused(
        &bida,
        Method::POST,
        "/v1/consumers",
        json!({"name": "twin", "broker_id": "builtin", "source": {"topic": "news", "group": taken},
               "endpoint": {"url": endpoints[0].url("/twin")}}),
        &[409],
        None,
    )
    .await;

    let ids = publish_numbered(&bida, "news", 0..1_000, 250).await;
    let published: HashSet<&str> = ids.values().map(String::as_str).collect();
    for (i, endpoint) in endpoints.iter().enumerate() {
        assert!(
            eventually(WAIT, || endpoint.distinct_messages() == 1_000).await,
            "subscription {i}: {} of 1000",
            endpoint.distinct_messages()
        );
    }
    // Whatever is late would have come by now.
    wait_consumer(&bida, &consumers[0], |c| c["lag_total"] == 0).await;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let hits = endpoint.hits();
        let received: HashSet<&str> = hits.iter().filter_map(Hit::message_id).collect();
        assert_eq!(received, published, "subscription {i}: the ids the publish answered");
        let numbers: HashSet<u64> = hits.iter().filter_map(number).collect();
        assert_eq!(numbers.len(), 1_000, "subscription {i}: every body");
        assert_eq!(duplicates(endpoint), 0, "subscription {i}: nothing twice");
        let five = hits.iter().find(|h| number(h) == Some(5)).unwrap();
        assert_eq!(
            five.message_id(),
            Some(ids[&5].as_str()),
            "the webhook-id is the published id"
        );
        assert_eq!(&five.body[..], br#"{"n":5}"#, "the body as published");
        assert_eq!(five.header("content-type"), Some("application/json"));
    }
    for id in &consumers {
        wait_consumer(&bida, id, |c| {
            c["counters"]["delivered"] == 1_000 && c["lag_total"] == 0
        })
        .await;
    }
}

/// Point-to-point within one subscription: its two nodes share the topic's
/// partitions, every message arrives, none twice when nothing failed.
#[tokio::test]
async fn two_nodes_of_one_subscription_share_it() {
    if support::postgres_only("two nodes share a subscription") {
        return;
    }
    let endpoint = Receiver::ok().await;
    let a = Bida::start("").await;
    let b = a.join("").await;
    create_topic(&a, json!({"name": "work", "partitions": 4})).await;
    let consumer = subscribe(
        &a,
        "workers",
        "work",
        &endpoint.url("/in"),
        json!({}),
        json!({"concurrency": 8}),
    )
    .await;
    wait_consumer(&a, &consumer, |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "running"))
    })
    .await;
    let delivered_by_node = |view: &Value| -> Vec<u64> {
        view["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| n["report"]["delivered"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Until both nodes deliver (their claims settled), a few keyless
    // messages at a time (spread over the four partitions).
    let mut warm_up = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publish_numbered(&a, "work", warm_up..warm_up + 8, 8).await;
        warm_up += 8;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let view = consumer_view(&a, &consumer).await;
        let split = delivered_by_node(&view);
        if split.len() == 2 && split.iter().all(|n| *n > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one node never delivered: {view}"
        );
    }
    let total = warm_up + 2_000;
    publish_numbered(&a, "work", warm_up..total, 500).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == total as usize).await,
        "{} of {total} arrived",
        endpoint.distinct_messages()
    );
    let view = wait_consumer(&a, &consumer, |c| {
        c["lag_total"] == 0 && delivered_by_node(c).iter().sum::<u64>() == total
    })
    .await;
    let split = delivered_by_node(&view);
    println!("delivered per node (the nodes' reports): {split:?}, warm-up {warm_up}");
    assert_eq!(duplicates(&endpoint), 0, "nothing delivered twice");
    assert_eq!(endpoint.hit_count(), total as usize);
    assert!(split.iter().all(|n| *n > 0), "both nodes delivered: {split:?}");
    drop(b);
}

/// Messages a subscription had not read when retention dropped them are
/// recorded as an `expired` anomaly (whether the consumer was stopped or
/// paused meanwhile), and it reads on after them; a subscription made after
/// the drop starts at what the topic holds, having missed nothing.
#[tokio::test]
async fn a_late_subscription_is_told_what_expired() {
    let stopped_endpoint = Receiver::ok().await;
    let paused_endpoint = Receiver::ok().await;
    let fresh_endpoint = Receiver::ok().await;
    let mut bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "ledger", "retention": "1h"})).await;
    let stopped = subscribe(
        &bida,
        "stopped",
        "ledger",
        &stopped_endpoint.url("/in"),
        json!({}),
        json!({}),
    )
    .await;
    let paused = subscribe(
        &bida,
        "paused",
        "ledger",
        &paused_endpoint.url("/in"),
        json!({}),
        json!({}),
    )
    .await;
    // One message read by both: their places in the topic are on record.
    publish_numbered(&bida, "ledger", 0..1, 1).await;
    assert!(
        eventually(WAIT, || stopped_endpoint.hit_count() == 1
            && paused_endpoint.hit_count() == 1)
        .await
    );
    for id in [&stopped, &paused] {
        wait_consumer(&bida, id, |c| c["lag_total"] == 0).await;
    }
    lifecycle(&bida, &stopped, "stop").await;
    lifecycle(&bida, &paused, "pause").await;
    wait_consumer(&bida, &stopped, |c| c["state"] == "stopped").await;
    wait_consumer(&bida, &paused, |c| c["state"] == "paused").await;

    publish_numbered(&bida, "ledger", 1..101, 100).await;
    assert_eq!(topic_view(&bida, "ledger").await["messages"], 101);
    // Three hours on, the hour-long retention has dropped them all.
    maintain_logs_at(&mut bida, Utc::now() + TimeDelta::hours(3)).await;
    let view = topic_view(&bida, "ledger").await;
    assert_eq!(view["messages"], 0, "{view}");
    assert_eq!(view["published"], 101, "{view}");
    assert_eq!(
        view["offsets"],
        json!([{"partition": 0, "low": 101, "next": 101}]),
        "{view}"
    );

    publish_numbered(&bida, "ledger", 101..106, 5).await;
    let fresh = subscribe(
        &bida,
        "fresh",
        "ledger",
        &fresh_endpoint.url("/in"),
        json!({"start": "earliest"}),
        json!({}),
    )
    .await;
    lifecycle(&bida, &stopped, "start").await;
    lifecycle(&bida, &paused, "resume").await;

    let new: Vec<u64> = (101..106).collect();
    for (name, endpoint, before) in [
        ("stopped", &stopped_endpoint, 1),
        ("paused", &paused_endpoint, 1),
        ("fresh", &fresh_endpoint, 0),
    ] {
        assert!(
            eventually(WAIT, || endpoint.hit_count() >= before + 5).await,
            "{name}: {:?}",
            arrivals(endpoint)
        );
        let got: Vec<u64> = arrivals(endpoint).into_keys().filter(|n| *n > 0).collect();
        assert_eq!(got, new, "{name}: exactly the messages published after the drop");
    }
    for (name, id) in [("stopped", &stopped), ("paused", &paused)] {
        let view = wait_consumer(&bida, id, |c| c["anomalies"].as_array().is_some_and(|a| !a.is_empty())).await;
        let anomaly = find_kind(&view["anomalies"], "expired").unwrap_or_else(|| panic!("{name}: {view}"));
        assert_eq!(
            (
                anomaly["topic"].as_str(),
                anomaly["partition"].as_i64(),
                anomaly["from"].as_i64(),
                anomaly["to"].as_i64()
            ),
            (Some("ledger"), Some(0), Some(1), Some(101)),
            "{name}: the 100 messages it missed: {anomaly}"
        );
        let (status, history) = bida.get(&format!("/v1/consumers/{id}/events")).await;
        assert_eq!(status, 200, "{history}");
        let recorded: Vec<&Value> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_type"] == "SourceAnomalyRecorded")
            .collect();
        assert_eq!(recorded.len(), 1, "{name}: recorded once: {history}");
        let payload = find_kind(recorded[0], "expired").unwrap_or_else(|| panic!("{name}: {history}"));
        assert_eq!((payload["from"].as_i64(), payload["to"].as_i64()), (Some(1), Some(101)));
        let caught_up = wait_consumer(&bida, id, |c| c["lag_total"] == 0).await;
        assert_eq!(caught_up["lag"][0]["committed"], 106, "{name}: {caught_up}");
    }
    let view = wait_consumer(&bida, &fresh, |c| c["lag_total"] == 0).await;
    assert!(
        find_kind(&view["anomalies"], "expired").is_none(),
        "a subscription made after the drop missed nothing: {view}"
    );
}

/// A graceful restart: the subscription goes on from where it was, nothing
/// delivered again.
#[tokio::test]
async fn subscriptions_keep_their_place_through_a_restart() {
    let endpoint = Receiver::ok().await;
    let mut bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "steady", "partitions": 2})).await;
    let consumer = subscribe(
        &bida,
        "steady",
        "steady",
        &endpoint.url("/in"),
        json!({}),
        json!({"concurrency": 8}),
    )
    .await;
    publish_numbered(&bida, "steady", 0..300, 100).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 300).await,
        "{} of 300",
        endpoint.distinct_messages()
    );
    // Stopped at once: what is done is committed on the way out.
    let status = bida.terminate().await.expect("an exit");
    assert!(status.success(), "a clean exit: {status}");
    bida.restart().await;
    bida.every_node_running(&consumer).await;
    publish_numbered(&bida, "steady", 300..600, 100).await;
    assert!(
        eventually(WAIT, || endpoint.distinct_messages() == 600).await,
        "{} of 600",
        endpoint.distinct_messages()
    );
    wait_consumer(&bida, &consumer, |c| c["lag_total"] == 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<u64> = arrivals(&endpoint)
        .into_iter()
        .filter(|(_, times)| *times > 1)
        .map(|(n, _)| n)
        .collect();
    assert!(again.is_empty(), "delivered again after a graceful restart: {again:?}");
    assert_eq!(endpoint.hit_count(), 600);
}

/// A stopped subscription's offsets move back (all delivered again) or to
/// a chosen offset; a range of one partition is resent, exactly it.
#[tokio::test]
async fn offsets_reset_and_resend_work_on_topics() {
    use reqwest::Method;
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "replay", "partitions": 2})).await;
    let consumer = subscribe(&bida, "replay", "replay", &endpoint.url("/in"), json!({}), json!({})).await;
    // Where each message landed.
    let mut at: HashMap<(i64, i64), u64> = HashMap::new();
    let messages = (0..40).map(|n| json!({"body": {"n": n}})).collect();
    for (n, landed) in publish(&bida, "replay", messages).await.iter().enumerate() {
        at.insert(
            (
                landed["partition"].as_i64().unwrap(),
                landed["offset"].as_i64().unwrap(),
            ),
            n as u64,
        );
    }
    let per_partition = |p: i64| at.keys().filter(|(partition, _)| *partition == p).count() as i64;
    assert!(per_partition(0) >= 5 && per_partition(1) >= 5, "{at:?}");
    assert!(eventually(WAIT, || endpoint.hit_count() == 40).await);
    wait_consumer(&bida, &consumer, |c| c["lag_total"] == 0).await;

    let reset = format!("/v1/consumers/{consumer}/reset-offsets");
    refused(&bida, Method::POST, &reset, json!({"to": "earliest"}), &[409], None).await;

    lifecycle(&bida, &consumer, "stop").await;
    wait_consumer(&bida, &consumer, |c| c["state"] == "stopped").await;
    let (status, committed) = bida.post(&reset, json!({"to": "earliest"})).await;
    assert_eq!(status, 200, "{committed}");
    assert_eq!(
        committed["committed"],
        json!([{"topic": "replay", "partition": 0, "offset": 0}, {"topic": "replay", "partition": 1, "offset": 0}]),
        "{committed}"
    );
    let view = consumer_view(&bida, &consumer).await;
    assert_eq!(view["lag_total"], 40, "{view}");
    lifecycle(&bida, &consumer, "start").await;
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 80).await,
        "all 40 again: {}",
        endpoint.hit_count()
    );
    assert_eq!(endpoint.distinct_messages(), 40, "with their own ids");
    assert!(
        arrivals(&endpoint).values().all(|times| *times == 2),
        "{:?}",
        arrivals(&endpoint)
    );
    wait_consumer(&bida, &consumer, |c| c["lag_total"] == 0).await;

    // A range of partition 0: exactly those offsets again.
    let resend = format!("/v1/consumers/{consumer}/resend");
    let (status, resent) = bida
        .post(&resend, json!({"topic": "replay", "partition": 0, "from": 2, "to": 4}))
        .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["task_ids"].as_array().map(Vec::len), Some(3), "{resent}");
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 83).await,
        "{}",
        endpoint.hit_count()
    );
    let mut again: Vec<u64> = endpoint.hits()[80..].iter().filter_map(number).collect();
    again.sort_unstable();
    let mut expected: Vec<u64> = (2..=4).map(|offset| at[&(0, offset)]).collect();
    expected.sort_unstable();
    assert_eq!(again, expected, "offsets 2..=4 of partition 0");
    for (body, field) in [
        (json!({"topic": "other", "partition": 0, "from": 0, "to": 1}), "topic"),
        (json!({"topic": "replay", "partition": 0, "from": 4, "to": 2}), "to"),
        (json!({"topic": "replay", "from": 0, "to": 2}), "partition"),
    ] {
        refused(&bida, Method::POST, &resend, body, &[422], Some(field)).await;
    }

    // Partition 1 back to a chosen offset: from there on again.
    lifecycle(&bida, &consumer, "stop").await;
    wait_consumer(&bida, &consumer, |c| c["state"] == "stopped").await;
    let from = per_partition(1) - 3;
    let (status, committed) = bida
        .post(
            &reset,
            json!({"to": "offsets", "offsets": [{"topic": "replay", "partition": 1, "offset": from}]}),
        )
        .await;
    assert_eq!(status, 200, "{committed}");
    refused(
        &bida,
        Method::POST,
        &reset,
        json!({"to": "offsets", "offsets": [{"topic": "replay", "partition": 7, "offset": 0}]}),
        &[422],
        None,
    )
    .await;
    lifecycle(&bida, &consumer, "start").await;
    assert!(
        eventually(WAIT, || endpoint.hit_count() == 86).await,
        "{}",
        endpoint.hit_count()
    );
    let mut again: Vec<u64> = endpoint.hits()[83..].iter().filter_map(number).collect();
    again.sort_unstable();
    let mut expected: Vec<u64> = (from..per_partition(1)).map(|offset| at[&(1, offset)]).collect();
    expected.sort_unstable();
    assert_eq!(again, expected, "partition 1 from offset {from}");
    wait_consumer(&bida, &consumer, |c| c["lag_total"] == 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(endpoint.hit_count(), 86, "nothing more");
}

/// An offset reset sent as soon as the stop is answered, while the node is
/// still finishing the deliveries in flight: the reset holds (the node's last
/// commit does not move the offsets past it again), or it is refused until
/// the node has let go; it is never answered 200 and then undone.
#[tokio::test]
async fn a_reset_right_after_the_stop_is_not_undone() {
    let endpoint = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(300))).await;
    let bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "busy"})).await;
    let consumer = subscribe(
        &bida,
        "busy",
        "busy",
        &endpoint.url("/in"),
        json!({}),
        json!({"concurrency": 4}),
    )
    .await;
    publish_numbered(&bida, "busy", 0..40, 40).await;
    assert!(eventually(WAIT, || endpoint.hit_count() >= 8).await);
    lifecycle(&bida, &consumer, "stop").await;
    let reset = format!("/v1/consumers/{consumer}/reset-offsets");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, answer) = bida.post(&reset, json!({"to": "earliest"})).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 409, "refused until the node lets go, or done: {answer}");
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_consumer(&bida, &consumer, |c| c["state"] == "stopped").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let view = consumer_view(&bida, &consumer).await;
    let before = endpoint.hit_count();
    assert_eq!(
        view["lag_total"], 40,
        "the reset to earliest held after the stop finished ({before} delivered before): {view}"
    );
    lifecycle(&bida, &consumer, "start").await;
    assert!(
        eventually(WAIT, || endpoint.hit_count() >= before + 40).await,
        "all 40 from the start again: {:?}",
        arrivals(&endpoint)
    );
}

/// A subscription starting at `latest` gets what is published once its
/// consumer is created (the 201), not only what comes after its node first
/// reads the topic. The node is made slow to first claim the topic's
/// partitions (the test holds a lock on the members' table meanwhile), as a
/// busy node or database would be: the messages published in between are
/// the subscription's too.
#[tokio::test]
async fn a_latest_subscription_gets_what_is_published_after_its_creation() {
    use sqlx::Connection;
    if support::postgres_only("a lock held on the store's members' table") {
        return;
    }
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    create_topic(&bida, json!({"name": "fresh", "partitions": 2})).await;
    publish_numbered(&bida, "fresh", 0..10, 10).await;

    let mut db = sqlx::PgConnection::connect(&bida.db_url).await.expect("database");
    let mut slow = db.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE topic_members IN EXCLUSIVE MODE")
        .execute(&mut *slow)
        .await
        .expect("lock");
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "latest", "broker_id": "builtin", "source": {"topic": "fresh", "start": "latest"},
                   "endpoint": {"url": endpoint.url("/in")}}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    let id = consumer["id"].as_str().unwrap().to_string();
    publish_numbered(&bida, "fresh", 10..15, 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    slow.commit().await.expect("unlock");

    bida.every_node_running(&id).await;
    publish_numbered(&bida, "fresh", 15..20, 5).await;
    assert!(
        eventually(WAIT, || (15..20).all(|n| arrivals(&endpoint).contains_key(&n))).await,
        "{:?}",
        arrivals(&endpoint)
    );
    wait_consumer(&bida, &id, |c| c["lag_total"] == 0).await;
    let got: Vec<u64> = arrivals(&endpoint).into_keys().collect();
    assert_eq!(
        got,
        (10..20).collect::<Vec<_>>(),
        "none from before its creation, all from after (10..15 were published after the 201)"
    );
}

/// A delayed publish: held (202, visible and cancellable at
/// `/v1/delayed/{id}`), published to the topic when due, then delivered to
/// the subscription; a cancelled one never reaches the topic.
#[tokio::test]
async fn delayed_messages_reach_the_topic_when_due() {
    let bida = Bida::start("").await;
    let endpoint = Receiver::ok().await;
    create_topic(&bida, json!({"name": "later", "partitions": 2})).await;
    subscribe(&bida, "s", "later", &endpoint.url("/later"), json!({}), json!({})).await;
    let asked = std::time::Instant::now();
    let (status, held) = bida
        .post(
            "/v1/topics/later/messages",
            json!({"body": {"n": 1}, "delay_ms": 1500, "key": "k"}),
        )
        .await;
    assert_eq!(status, 202, "{held}");
    let id = held["id"].as_str().expect("the delayed message's id").to_string();
    let (status, cancelled) = bida
        .post(
            "/v1/topics/later/messages",
            json!({"body": {"n": 2}, "delay_ms": 60_000}),
        )
        .await;
    assert_eq!(status, 202, "{cancelled}");
    let (status, _) = bida
        .delete(&format!("/v1/delayed/{}", cancelled["id"].as_str().unwrap()))
        .await;
    assert!(status == 200 || status == 204, "cancel: {status}");
    assert_eq!(
        topic_view(&bida, "later").await["published"],
        0,
        "held, not published yet"
    );
    assert!(
        eventually(WAIT, || endpoint.hits().len() == 1).await,
        "the delayed message arrived"
    );
    assert!(asked.elapsed() >= Duration::from_millis(1500), "not before its time");
    assert_eq!(arrivals(&endpoint), BTreeMap::from([(1, 1)]));
    let (_, delayed) = bida.get(&format!("/v1/delayed/{id}")).await;
    assert_eq!(delayed["state"], "produced", "{delayed}");
    assert_eq!(topic_view(&bida, "later").await["published"], 1);
}
