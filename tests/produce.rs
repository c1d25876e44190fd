//! Producing over HTTP (`POST /v1/brokers/{id}/messages`): messages written
//! to every kind of broker (RabbitMQ, Kafka, NATS JetStream, Redis Streams,
//! MQTT, ActiveMQ, RocketMQ) and read back with native clients byte for
//! byte, refusals, brokers that are down, and bad input.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bida_testkit::kafka::{KafkaBroker, ReadRecord};
use bida_testkit::mqtt::TestBroker as MqttBroker;
use bida_testkit::nats::TestStream;
use bida_testkit::rabbit::{TestExchange, TestQueue};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{created, rabbit_broker, Bida};

/// Longer than any wait of Bida's own (a broker confirms in about 10 s or
/// the answer is 503): only there so that a hung request fails the test.
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

async fn kafka_broker(bida: &Bida, bootstrap: &str) -> String {
    created(
        bida,
        "/v1/brokers",
        json!({"name": "k", "kind": "kafka", "bootstrap_servers": bootstrap}),
    )
    .await
}

/// Posts to `/v1/brokers/{broker}/messages`; every answer but a 200 must be
/// a problem (`application/problem+json`).
async fn produce(bida: &Bida, broker: &str, request: &Value) -> (u16, Value) {
    let sent = bida
        .http
        .post(format!("{}/v1/brokers/{broker}/messages", bida.url))
        .json(request)
        .send();
    let response = tokio::time::timeout(ANSWER_WITHIN, sent)
        .await
        .unwrap_or_else(|_| panic!("no answer within {ANSWER_WITHIN:?} to {request}"))
        .expect("POST");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (status, body) = support::read(response).await;
    if status != 200 {
        assert!(
            content_type.starts_with("application/problem+json"),
            "{status} answered as {content_type:?}: {body}"
        );
    }
    (status, body)
}

/// The fields a 422 names.
fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A 422 naming one of `expected` among its fields.
async fn refused(bida: &Bida, broker: &str, request: Value, expected: &[&str]) -> Value {
    let (status, problem) = produce(bida, broker, &request).await;
    assert_eq!(status, 422, "{request} → {problem}");
    let named = fields(&problem);
    assert!(
        named.iter().any(|f| expected.contains(&f.as_str())),
        "{request}: expected a field among {expected:?}, got {named:?}: {problem}"
    );
    for error in problem["errors"].as_array().unwrap() {
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "every error says what is wrong: {problem}"
        );
    }
    problem
}

/// The results of a 200, one per message.
fn results(answer: &Value) -> Vec<Value> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {answer}"))
        .clone()
}

/// A RabbitMQ result: index, exchange, routing key, confirmed.
fn assert_confirmed(result: &Value, index: usize, exchange: &str, routing_key: &str) {
    assert_eq!(result["index"], index, "{result}");
    assert_eq!(result["exchange"], exchange, "{result}");
    assert_eq!(result["routing_key"], routing_key, "{result}");
    assert_eq!(result["confirmed"], true, "{result}");
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A record's headers by name (a name written twice fails).
fn record_headers(record: &ReadRecord) -> BTreeMap<String, Vec<u8>> {
    let headers: BTreeMap<String, Vec<u8>> = record
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        headers.len(),
        record.headers.len(),
        "a header written twice: {record:?}"
    );
    headers
}

fn byte_headers(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[tokio::test]
async fn rabbitmq_messages_are_written_and_read_back_byte_for_byte() {
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let broker = rabbit_broker(&bida).await;

    // Keys in order and no spaces: its JSON text is the same however it is
    // serialized.
    let document = json!({"id": "order-1", "items": [1, 2.5, null, true], "note": "héllo ✓ \"quoted\""});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80, 0x00, 0x7F];
    let transient: Vec<u8> = vec![0xFF, 0x00];
    let request = json!({"messages": [
        {
            "routing_key": queue.name,
            "body": document,
            "headers": {"x-trace": "t-1", "tenant": "acme"},
            "message_id": "m-1",
            "correlation_id": "c-1",
        },
        {
            "exchange": "",
            "routing_key": queue.name,
            "body_base64": STANDARD.encode(&binary),
            "content_type": "image/png",
            "priority": 7,
            "expiration_ms": 600_000,
        },
        {"routing_key": queue.name, "body_base64": STANDARD.encode(&transient), "persistent": false},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 3, "{answer}");
    for (index, result) in written.iter().enumerate() {
        assert_confirmed(result, index, "", &queue.name);
    }

    let read = queue.get_all().await;
    assert_eq!(read.len(), 3, "{read:?}");

    let json_message = &read[0];
    assert_eq!(
        json_message.body,
        serde_json::to_vec(&document).unwrap(),
        "the body's JSON text"
    );
    assert_eq!(json_message.content_type.as_deref(), Some("application/json"));
    assert_eq!(json_message.headers, strings(&[("x-trace", "t-1"), ("tenant", "acme")]));
    assert_eq!(json_message.message_id.as_deref(), Some("m-1"));
    assert_eq!(json_message.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(json_message.delivery_mode, Some(2), "persistent by default");
    assert_eq!(
        (json_message.exchange.as_str(), json_message.routing_key.as_str()),
        ("", queue.name.as_str())
    );

    let binary_message = &read[1];
    assert_eq!(binary_message.body, binary, "bytes as sent, 0x00 and 0xFF included");
    assert_eq!(binary_message.content_type.as_deref(), Some("image/png"));
    assert_eq!(binary_message.priority, Some(7));
    assert_eq!(binary_message.expiration.as_deref(), Some("600000"));
    assert_eq!(binary_message.delivery_mode, Some(2));
    assert!(binary_message.headers.is_empty(), "{binary_message:?}");
    assert_eq!(binary_message.message_id, None);

    let transient_message = &read[2];
    assert_eq!(transient_message.body, transient);
    assert_eq!(
        transient_message.content_type.as_deref(),
        Some("application/octet-stream"),
        "the default for body_base64"
    );
    assert_ne!(
        transient_message.delivery_mode,
        Some(2),
        "persistent: false: {transient_message:?}"
    );
}

#[tokio::test]
async fn rabbitmq_unroutable_messages_are_refused() {
    let queue = TestQueue::declare().await;
    let exchange = TestExchange::declare_direct().await;
    exchange.bind(&queue.name, "bound").await;
    let bida = Bida::start("").await;
    let broker = rabbit_broker(&bida).await;

    // Through the exchange with a key that is bound: written, one result in
    // the same shape as a batch's.
    let (status, answer) = produce(
        &bida,
        &broker,
        &json!({"exchange": exchange.name, "routing_key": "bound", "body": "via the exchange"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 1, "{answer}");
    assert_confirmed(&written[0], 0, &exchange.name, "bound");
    let read = queue.get_all().await;
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0].body, br#""via the exchange""#);
    assert_eq!(read[0].exchange, exchange.name);

    // A key nothing is bound to: no queue takes it.
    let problem = refused(
        &bida,
        &broker,
        json!({"exchange": exchange.name, "routing_key": "nobody", "body": {"n": 1}}),
        &["routing_key"],
    )
    .await;
    assert_eq!(problem["written"], json!([]), "{problem}");

    // In a batch: the unroutable one is named by its place; `written` says
    // which were written, and the queue holds exactly those.
    let problem = refused(
        &bida,
        &broker,
        json!({"messages": [
            {"exchange": exchange.name, "routing_key": "bound", "body": {"n": 0}},
            {"exchange": exchange.name, "routing_key": "nobody", "body": {"n": 1}},
            {"exchange": exchange.name, "routing_key": "bound", "body": {"n": 2}},
        ]}),
        &["messages[1].routing_key"],
    )
    .await;
    let written = problem["written"]
        .as_array()
        .unwrap_or_else(|| panic!("no written in {problem}"))
        .clone();
    assert!(!written.is_empty(), "the first message was confirmed before: {problem}");
    assert_confirmed(&written[0], 0, &exchange.name, "bound");
    assert!(
        written.iter().all(|w| w["index"] != 1),
        "the unroutable one is not written: {problem}"
    );
    let reported: BTreeSet<u64> = written.iter().map(|w| w["index"].as_u64().unwrap()).collect();
    let in_queue: BTreeSet<u64> = queue
        .get_all()
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.body).unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(reported, in_queue, "written names what the queue holds: {problem}");

    // The default exchange with a queue that does not exist.
    let problem = refused(
        &bida,
        &broker,
        json!({"routing_key": format!("{}-missing", queue.name), "body": {}}),
        &["routing_key"],
    )
    .await;
    assert_eq!(problem["written"], json!([]), "{problem}");
}

/// A record's key, payload and headers.
type Written = (Option<&'static [u8]>, Vec<u8>, BTreeMap<String, Vec<u8>>);

#[tokio::test]
async fn kafka_messages_are_written_with_keys_partitions_and_headers() {
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("orders", 2).await;
    let bida = Bida::start("").await;
    let broker = kafka_broker(&bida, &kafka.bootstrap).await;

    let document = json!({"n": 0, "text": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x10, 0x80, 0x7F, 0x00, 0xC3];
    let request = json!({"messages": [
        {"topic": "orders", "key": "customer-7", "body": document, "headers": {"trace": "t-0", "tenant": "acme"}},
        {
            "topic": "orders",
            "key": "customer-8",
            "partition": 1,
            "body_base64": STANDARD.encode(&binary),
            "content_type": "image/png",
            "headers": {"trace": "t-1"},
        },
        {"topic": "orders", "body": "just text"},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 3, "{answer}");
    for (index, result) in written.iter().enumerate() {
        assert_eq!(result["index"], index, "{answer}");
        assert_eq!(result["topic"], "orders", "{answer}");
        assert!(
            result["partition"].as_i64().is_some_and(|p| (0..2).contains(&p)),
            "{answer}"
        );
        assert!(result["offset"].as_i64().is_some_and(|o| o >= 0), "{answer}");
    }
    assert_eq!(written[1]["partition"], 1, "the partition asked for: {answer}");

    // (key, payload, headers) each message should have been written with.
    let expected: [Written; 3] = [
        (
            Some(b"customer-7"),
            serde_json::to_vec(&document).unwrap(),
            byte_headers(&[
                ("trace", "t-0"),
                ("tenant", "acme"),
                ("content-type", "application/json"),
            ]),
        ),
        (
            Some(b"customer-8"),
            binary.clone(),
            byte_headers(&[("trace", "t-1"), ("content-type", "image/png")]),
        ),
        (
            None,
            br#""just text""#.to_vec(),
            byte_headers(&[("content-type", "application/json")]),
        ),
    ];

    let records = kafka.read_records("orders", 2).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for (result, (key, payload, headers)) in written.iter().zip(&expected) {
        let (partition, offset) = (
            result["partition"].as_i64().unwrap(),
            result["offset"].as_i64().unwrap(),
        );
        let record = records
            .iter()
            .find(|r| i64::from(r.partition) == partition && r.offset == offset)
            .unwrap_or_else(|| panic!("no record at {partition}/{offset}: {records:?}"));
        assert_eq!(&record.payload, payload, "bytes as sent at {partition}/{offset}");
        assert_eq!(record.key.as_deref(), *key, "key at {partition}/{offset}");
        assert_eq!(&record_headers(record), headers, "headers at {partition}/{offset}");
    }

    // One message alone: the same shape, at the next offset of its partition.
    let (status, answer) = produce(
        &bida,
        &broker,
        &json!({"topic": "orders", "partition": 1, "body_base64": STANDARD.encode([0xFFu8])}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let single = results(&answer);
    assert_eq!(single.len(), 1, "{answer}");
    assert_eq!(
        (&single[0]["index"], &single[0]["partition"]),
        (&json!(0), &json!(1)),
        "{answer}"
    );
    let last_in_partition_1 = records.iter().filter(|r| r.partition == 1).map(|r| r.offset).max();
    assert!(
        single[0]["offset"].as_i64() > last_in_partition_1,
        "after {last_in_partition_1:?}: {answer}"
    );
    let records = kafka.read_records("orders", 2).await;
    let record = records
        .iter()
        .find(|r| r.partition == 1 && Some(r.offset) == single[0]["offset"].as_i64())
        .unwrap_or_else(|| panic!("no record where {answer} says: {records:?}"));
    assert_eq!(record.payload, [0xFF]);
    assert_eq!(
        record_headers(record),
        byte_headers(&[("content-type", "application/octet-stream")])
    );
}

#[tokio::test]
async fn a_broker_that_is_down_answers_503_and_reports_nothing_written() {
    let bida = Bida::start("").await;
    let kafka = kafka_broker(&bida, "127.0.0.1:1").await;
    let rabbit = created(
        &bida,
        "/v1/brokers",
        json!({"name": "gone", "kind": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:1/%2f"}),
    )
    .await;

    let mut down = vec![
        (kafka, json!({"topic": "orders", "body": {"n": 1}})),
        (rabbit, json!({"routing_key": "orders", "body": {"n": 1}})),
    ];
    for (kind, settings, message) in [
        (
            "nats",
            json!({"url": "nats://127.0.0.1:1"}),
            json!({"subject": "orders", "body": {"n": 1}}),
        ),
        (
            "redis",
            json!({"url": "redis://127.0.0.1:1"}),
            json!({"stream": "orders", "body": {"n": 1}}),
        ),
        (
            "mqtt",
            json!({"url": "mqtt://127.0.0.1:1"}),
            json!({"topic": "orders", "body": {"n": 1}}),
        ),
        (
            "activemq",
            json!({"url": "stomp://127.0.0.1:1"}),
            json!({"queue": "orders", "body": {"n": 1}}),
        ),
        (
            "rocketmq",
            json!({"name_server": "127.0.0.1:1"}),
            json!({"topic": "orders", "body": {"n": 1}}),
        ),
    ] {
        let mut broker = json!({"name": format!("gone-{kind}"), "kind": kind});
        broker
            .as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        down.push((created(&bida, "/v1/brokers", broker).await, message));
    }

    for (broker, message) in &down {
        for request in [message.clone(), json!({"messages": [message.clone(), message.clone()]})] {
            let (status, problem) = produce(&bida, broker, &request).await;
            assert_eq!(status, 503, "{request} → {problem}");
            assert_eq!(problem["written"], json!([]), "{problem}");
            assert!(
                problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "says why: {problem}"
            );
        }
    }
}

#[tokio::test]
async fn bad_produce_input_gets_problems() {
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("orders", 1).await;
    let bida = Bida::start("").await;
    let broker = kafka_broker(&bida, &kafka.bootstrap).await;
    let rabbit = rabbit_broker(&bida).await;

    let (status, problem) = produce(&bida, "unknown", &json!({"topic": "orders", "body": 1})).await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        !problem["detail"].as_str().unwrap_or_default().contains("no route"),
        "the route exists; the broker does not: {problem}"
    );

    refused(&bida, &broker, json!({"body": {"n": 1}}), &["topic"]).await;
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body": 1, "colour": "blue"}),
        &["colour"],
    )
    .await;
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body": 1, "body_base64": "AA=="}),
        &["body", "body_base64"],
    )
    .await;
    refused(&bida, &broker, json!({"topic": "orders"}), &["body", "body_base64"]).await;
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body_base64": "not base64!"}),
        &["body_base64"],
    )
    .await;
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body": 1, "partition": -1}),
        &["partition"],
    )
    .await;
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body": 1, "headers": {"n": 1}}),
        &["headers", "headers.n"],
    )
    .await;
    // The other kind's fields are not this kind's.
    refused(
        &bida,
        &broker,
        json!({"topic": "orders", "body": 1, "routing_key": "orders"}),
        &["routing_key"],
    )
    .await;
    refused(&bida, &rabbit, json!({"body": 1}), &["routing_key"]).await;
    refused(
        &bida,
        &rabbit,
        json!({"routing_key": "orders", "body": 1, "topic": "orders"}),
        &["topic"],
    )
    .await;
    refused(
        &bida,
        &rabbit,
        json!({"routing_key": "orders", "body": 1, "priority": 256}),
        &["priority"],
    )
    .await;

    // In a batch, a message is named by its place, and none is written.
    let good = json!({"topic": "orders", "body": {"n": 1}});
    refused(
        &bida,
        &broker,
        json!({"messages": [good, good, {"body": {"n": 3}}]}),
        &["messages[2].topic"],
    )
    .await;
    refused(
        &bida,
        &broker,
        json!({"messages": [{"topic": "orders", "body": 1, "colour": "blue"}]}),
        &["messages[0].colour"],
    )
    .await;
    refused(&bida, &broker, json!({"messages": []}), &["messages"]).await;
    let too_many: Vec<Value> = (0..1_001).map(|_| good.clone()).collect();
    refused(&bida, &broker, json!({ "messages": too_many }), &["messages"]).await;
    let records = kafka.read_records("orders", 1).await;
    assert!(records.is_empty(), "nothing written from refused requests: {records:?}");

    // Every kind names its own fields, and refuses the others'.
    let nats = created(
        &bida,
        "/v1/brokers",
        json!({"name": "n", "kind": "nats", "url": bida_testkit::nats::url()}),
    )
    .await;
    refused(&bida, &nats, json!({"body": {"n": 1}}), &["subject"]).await;
    refused(
        &bida,
        &nats,
        json!({"subject": "orders", "topic": "orders", "body": 1}),
        &["topic"],
    )
    .await;
}

async fn broker_of(bida: &Bida, kind: &str, settings: Value) -> String {
    let mut broker = json!({"name": kind, "kind": kind});
    broker
        .as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    created(bida, "/v1/brokers", broker).await
}

#[tokio::test]
async fn nats_messages_are_acknowledged_by_their_stream_and_read_back() {
    let stream = TestStream::create().await;
    let bida = Bida::start("").await;
    let broker = broker_of(&bida, "nats", json!({"url": bida_testkit::nats::url()})).await;
    let (paid, refunded) = (format!("{}.paid", stream.name), format!("{}.refunded", stream.name));

    let document = json!({"id": "order-1", "note": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80];
    let request = json!({"messages": [
        {"subject": paid, "body": document, "headers": {"x-trace": "t-1", "tenant": "acme"}, "msg_id": "m-1"},
        {"subject": refunded, "body_base64": STANDARD.encode(&binary), "content_type": "image/png"},
        {"subject": paid, "body": "the same id again", "msg_id": "m-1"},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 3, "{answer}");
    for (index, (subject, sequence, duplicate)) in [(&paid, 1, false), (&refunded, 2, false), (&paid, 1, true)]
        .into_iter()
        .enumerate()
    {
        assert_eq!(written[index]["index"], index, "{answer}");
        assert_eq!(written[index]["subject"], *subject, "{answer}");
        assert_eq!(written[index]["stream"], stream.name, "{answer}");
        assert_eq!(written[index]["sequence"], sequence, "{answer}");
        assert_eq!(written[index]["duplicate"], duplicate, "{answer}");
    }

    let stored = stream.read_all().await;
    assert_eq!(stored.len(), 2, "the duplicate is not stored: {stored:?}");
    assert_eq!((stored[0].sequence, stored[0].subject.as_str()), (1, paid.as_str()));
    assert_eq!(stored[0].payload, serde_json::to_vec(&document).unwrap());
    assert_eq!(
        stored[0].headers,
        strings(&[
            ("Content-Type", "application/json"),
            ("x-trace", "t-1"),
            ("tenant", "acme"),
            ("Nats-Msg-Id", "m-1"),
        ])
    );
    assert_eq!(stored[1].payload, binary, "bytes as sent, 0x00 and 0xFF included");
    assert_eq!(stored[1].headers, strings(&[("Content-Type", "image/png")]));

    // One message alone: the same shape, the next sequence.
    let (status, answer) = produce(&bida, &broker, &json!({"subject": paid, "body_base64": "AP8="})).await;
    assert_eq!(status, 200, "{answer}");
    let single = results(&answer);
    assert_eq!((single.len(), &single[0]["sequence"]), (1, &json!(3)), "{answer}");
    let stored = stream.read_all().await;
    assert_eq!(stored[2].payload, [0x00, 0xFF]);
    assert_eq!(
        stored[2].headers,
        strings(&[("Content-Type", "application/octet-stream")])
    );

    // A subject no stream takes is refused by name, nothing written.
    let problem = refused(
        &bida,
        &broker,
        json!({"subject": format!("{}-none.x", stream.name), "body": 1}),
        &["subject"],
    )
    .await;
    assert_eq!(problem["written"], json!([]), "{problem}");
}

#[tokio::test]
async fn redis_messages_are_appended_as_entries_and_read_back() {
    let stream = bida_testkit::redis::TestStream::create();
    let bida = Bida::start("").await;
    let broker = broker_of(&bida, "redis", json!({"url": bida_testkit::redis::url()})).await;

    // An entry id of the client's own first, then Redis's.
    let (status, answer) = produce(
        &bida,
        &broker,
        &json!({"stream": stream.name, "id": "5-1", "body": {"n": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        results(&answer),
        [json!({"index": 0, "stream": stream.name, "id": "5-1"})]
    );

    let document = json!({"id": "order-1", "note": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80];
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request = json!({"messages": [
        {"stream": stream.name, "key": "customer-7", "body": document, "headers": {"traceparent": traceparent, "tenant": "acme"}},
        {"stream": stream.name, "body_base64": STANDARD.encode(&binary), "content_type": "image/png", "maxlen": 1000},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 2, "{answer}");

    let entries = stream.entries().await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids[0], "5-1");
    for (index, result) in written.iter().enumerate() {
        assert_eq!(result["index"], index, "{answer}");
        assert_eq!(result["stream"], stream.name, "{answer}");
        assert_eq!(result["id"], ids[index + 1], "the id the entry got: {answer}");
    }
    let byte_fields = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    };
    let json_body = serde_json::to_vec(&document).unwrap();
    assert_eq!(
        entries[1].1,
        byte_fields(&[
            ("body", &json_body),
            ("key", b"customer-7"),
            ("content_type", b"application/json"),
            ("traceparent", traceparent.as_bytes()),
            ("tenant", b"acme"),
        ])
    );
    assert_eq!(
        entries[2].1,
        byte_fields(&[("body", &binary), ("content_type", b"image/png")]),
        "bytes as sent, 0x00 and 0xFF included"
    );

    // An id not above the stream's last is refused by name, nothing written.
    let problem = refused(
        &bida,
        &broker,
        json!({"stream": stream.name, "id": "5-1", "body": 1}),
        &["id"],
    )
    .await;
    assert_eq!(problem["written"], json!([]), "{problem}");
    // A header may not take a field the message fills.
    refused(
        &bida,
        &broker,
        json!({"stream": stream.name, "body": 1, "headers": {"key": "x"}}),
        &["headers.key"],
    )
    .await;
    assert_eq!(stream.entries().await.len(), 3, "nothing written from refused requests");
}

#[tokio::test]
async fn mqtt_messages_are_acknowledged_and_received_with_their_properties() {
    let mqtt = MqttBroker::start().await;
    let mut subscriber = mqtt.subscribe(&format!("{}/#", mqtt.base)).await;
    let bida = Bida::start("").await;
    let broker = broker_of(&bida, "mqtt", json!({"url": mqtt.url()})).await;

    let document = json!({"id": "order-1", "note": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80];
    let topic = |level: &str| format!("{}/{level}", mqtt.base);
    let request = json!({"messages": [
        {"topic": topic("a"), "key": "customer-7", "message_id": "m-1", "body": document, "headers": {"x-trace": "t-1"}},
        {"topic": topic("b"), "qos": 2, "body_base64": STANDARD.encode(&binary), "content_type": "image/png"},
        {"topic": topic("c"), "qos": 0, "body": "at most once"},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        results(&answer),
        [
            json!({"index": 0, "topic": topic("a"), "qos": 1, "confirmed": true}),
            json!({"index": 1, "topic": topic("b"), "qos": 2, "confirmed": true}),
            json!({"index": 2, "topic": topic("c"), "qos": 0, "confirmed": false}),
        ]
    );

    let mut received = subscriber.take(3).await;
    received.sort_by(|a, b| a.topic.cmp(&b.topic));
    let first = &received[0];
    assert_eq!(first.payload, serde_json::to_vec(&document).unwrap());
    assert_eq!((first.topic.as_str(), first.qos), (topic("a").as_str(), 1));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.correlation_data.as_deref(), Some(&b"m-1"[..]));
    assert_eq!(
        first.user_properties,
        [
            ("x-trace".to_string(), "t-1".to_string()),
            ("bida-key".to_string(), "customer-7".to_string())
        ]
    );
    let second = &received[1];
    assert_eq!(second.payload, binary, "bytes as sent, 0x00 and 0xFF included");
    assert_eq!((second.qos, second.content_type.as_deref()), (2, Some("image/png")));
    assert!(second.user_properties.is_empty() && second.correlation_data.is_none());
    assert_eq!(received[2].payload, br#""at most once""#);

    // Retained: a subscriber that comes later gets it.
    let (status, answer) = produce(
        &bida,
        &broker,
        &json!({"topic": topic("kept"), "retain": true, "body_base64": "AP8="}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(results(&answer)[0]["confirmed"], true, "{answer}");
    let mut later = mqtt.subscribe(&topic("kept")).await;
    let kept = later.take(1).await;
    assert_eq!((kept[0].payload.as_slice(), kept[0].retain), (&[0x00, 0xFF][..], true));
}

#[tokio::test]
async fn activemq_messages_are_received_by_the_broker_and_read_back() {
    let queue = bida_testkit::activemq::TestQueue::create();
    let bida = Bida::start("").await;
    let broker = broker_of(&bida, "activemq", json!({"url": bida_testkit::activemq::url()})).await;

    let document = json!({"id": "order-1", "note": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80, 0x00];
    let request = json!({"messages": [
        {
            "queue": queue.name,
            "key": "customer-7",
            "correlation_id": "c-1",
            "priority": 7,
            "body": document,
            "headers": {"x-trace": "t-1", "colon:and\\back": "a:b"},
        },
        {"queue": queue.name, "persistent": false, "body_base64": STANDARD.encode(&binary), "content_type": "image/png"},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let destination = format!("/queue/{}", queue.name);
    assert_eq!(
        results(&answer),
        [
            json!({"index": 0, "destination": destination, "confirmed": true}),
            json!({"index": 1, "destination": destination, "confirmed": true}),
        ]
    );
    let (status, answer) = produce(&bida, &broker, &json!({"queue": queue.name, "body_base64": "AP8="})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(results(&answer).len(), 1, "{answer}");

    // ActiveMQ keeps persistent and non-persistent messages apart: they
    // may come in another order.
    let read = queue.take(3).await;
    let with_type = |content_type: &str| {
        read.iter()
            .find(|m| m.header("content-type") == Some(content_type))
            .unwrap_or_else(|| panic!("no {content_type} message in {read:?}"))
    };
    let first = with_type("application/json");
    assert_eq!(first.body, serde_json::to_vec(&document).unwrap());
    for (name, value) in [
        ("content-type", "application/json"),
        ("bida-key", "customer-7"),
        ("correlation-id", "c-1"),
        ("priority", "7"),
        ("persistent", "true"),
        ("x-trace", "t-1"),
        ("colon:and\\back", "a:b"),
    ] {
        assert_eq!(first.header(name), Some(value), "{name} of {first:?}");
    }
    let second = with_type("image/png");
    assert_eq!(second.body, binary, "bytes as sent, 0x00 and 0xFF included");
    assert_ne!(second.header("persistent"), Some("true"), "{second:?}");
    assert_eq!(with_type("application/octet-stream").body, [0x00, 0xFF]);

    // A header STOMP gives a meaning of its own is refused by name.
    refused(
        &bida,
        &broker,
        json!({"queue": queue.name, "body": 1, "headers": {"destination": "/queue/other"}}),
        &["headers.destination"],
    )
    .await;
}

#[tokio::test]
async fn rocketmq_messages_are_stored_in_their_queues_and_read_back() {
    let topic = bida_testkit::rocketmq::TestTopic::create().await;
    let bida = Bida::start("").await;
    let broker = broker_of(
        &bida,
        "rocketmq",
        json!({"name_server": bida_testkit::rocketmq::name_server()}),
    )
    .await;

    let document = json!({"id": "order-1", "note": "héllo ✓"});
    let binary: Vec<u8> = vec![0x00, 0xFF, 0x01, 0xFE, b'\n', 0x80, 0x00];
    let request = json!({"messages": [
        {"topic": topic.name, "keys": "order-1 order-x", "tags": "paid", "body": document, "headers": {"x-trace": "t-1"}},
        {"topic": topic.name, "sharding_key": "customer-7", "body_base64": STANDARD.encode(&binary), "content_type": "image/png"},
        {"topic": topic.name, "sharding_key": "customer-7", "body": "the key's second"},
    ]});
    let (status, answer) = produce(&bida, &broker, &request).await;
    assert_eq!(status, 200, "{answer}");
    let written = results(&answer);
    assert_eq!(written.len(), 3, "{answer}");
    for (index, result) in written.iter().enumerate() {
        assert_eq!(result["index"], index, "{answer}");
        assert_eq!(result["topic"], topic.name, "{answer}");
        assert!(result["broker"].as_str().is_some_and(|b| !b.is_empty()), "{answer}");
        assert!(
            result["message_id"].as_str().is_some_and(|id| id.len() == 32),
            "{answer}"
        );
    }
    assert_eq!(
        written[1]["queue"], written[2]["queue"],
        "one sharding key, one queue: {answer}"
    );
    assert_eq!(
        written[2]["offset"].as_i64(),
        written[1]["offset"].as_i64().map(|o| o + 1),
        "in their order: {answer}"
    );

    let stored = topic.read_all().await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    let at = |result: &Value| {
        stored
            .iter()
            .find(|m| {
                Some(i64::from(m.queue)) == result["queue"].as_i64() && Some(m.offset) == result["offset"].as_i64()
            })
            .unwrap_or_else(|| panic!("nothing stored where {result} says: {stored:?}"))
    };
    let property = |message: &bida_testkit::rocketmq::StoredMessage, name: &str| message.properties.get(name).cloned();
    let first = at(&written[0]);
    assert_eq!(first.body, serde_json::to_vec(&document).unwrap());
    assert_eq!(
        property(first, "UNIQ_KEY").as_deref(),
        written[0]["message_id"].as_str()
    );
    assert_eq!(property(first, "KEYS").as_deref(), Some("order-1 order-x"));
    assert_eq!(property(first, "TAGS").as_deref(), Some("paid"));
    assert_eq!(property(first, "content-type").as_deref(), Some("application/json"));
    assert_eq!(property(first, "x-trace").as_deref(), Some("t-1"));
    assert_eq!(property(first, "__SHARDINGKEY"), None);
    let second = at(&written[1]);
    assert_eq!(second.body, binary, "bytes as sent, 0x00 and 0xFF included");
    assert_eq!(property(second, "__SHARDINGKEY").as_deref(), Some("customer-7"));
    assert_eq!(property(second, "content-type").as_deref(), Some("image/png"));
    assert_eq!(at(&written[2]).body, br#""the key's second""#);

    // One message alone: the same shape.
    let (status, answer) = produce(&bida, &broker, &json!({"topic": topic.name, "body_base64": "AP8="})).await;
    assert_eq!(status, 200, "{answer}");
    let single = results(&answer);
    assert_eq!(single.len(), 1, "{answer}");
    let stored = topic.read_all().await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    let alone = stored
        .iter()
        .find(|m| {
            Some(i64::from(m.queue)) == single[0]["queue"].as_i64() && Some(m.offset) == single[0]["offset"].as_i64()
        })
        .unwrap_or_else(|| panic!("nothing stored where {answer} says: {stored:?}"));
    assert_eq!(alone.body, [0x00, 0xFF]);
    assert_eq!(
        alone.properties.get("UNIQ_KEY").map(String::as_str),
        single[0]["message_id"].as_str()
    );

    // A topic that does not exist is refused by name, nothing written.
    let problem = refused(
        &bida,
        &broker,
        json!({"topic": format!("{}-missing", topic.name), "body": 1}),
        &["topic"],
    )
    .await;
    assert_eq!(problem["written"], json!([]), "{problem}");
}

/// A full batch (1,000 messages, the most a request takes) to each kind
/// new to producing: every message answered written, once, where the broker
/// holds it.
#[tokio::test]
async fn a_full_batch_is_written_to_nats_redis_mqtt_activemq_and_rocketmq() {
    let bida = Bida::start("").await;
    let batch = |target: Value| -> Value {
        let messages: Vec<Value> = (0..1_000)
            .map(|n| {
                let mut message = target.clone();
                message["body"] = json!({"n": n});
                message
            })
            .collect();
        json!({ "messages": messages })
    };
    let written = |answer: &Value| -> Vec<Value> {
        let written = results(answer);
        assert_eq!(written.len(), 1_000, "{answer}");
        for (index, result) in written.iter().enumerate() {
            assert_eq!(result["index"], index, "in the request's order");
        }
        written
    };

    let stream = TestStream::create().await;
    let nats = broker_of(&bida, "nats", json!({"url": bida_testkit::nats::url()})).await;
    let (status, answer) = produce(&bida, &nats, &batch(json!({"subject": format!("{}.n", stream.name)}))).await;
    assert_eq!(status, 200, "{answer}");
    let sequences: BTreeSet<u64> = written(&answer)
        .iter()
        .map(|w| w["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=1_000).collect(), "one sequence each");
    assert_eq!(stream.read_all().await.len(), 1_000);

    let entries = bida_testkit::redis::TestStream::create();
    let redis = broker_of(&bida, "redis", json!({"url": bida_testkit::redis::url()})).await;
    let (status, answer) = produce(&bida, &redis, &batch(json!({"stream": entries.name}))).await;
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<String> = written(&answer)
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, entries.ids().await, "the entries, in order");

    let mqtt = MqttBroker::start().await;
    let mut subscriber = mqtt.subscribe(&format!("{}/#", mqtt.base)).await;
    let broker = broker_of(&bida, "mqtt", json!({"url": mqtt.url()})).await;
    let (status, answer) = produce(&bida, &broker, &batch(json!({"topic": format!("{}/n", mqtt.base)}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(written(&answer).iter().all(|w| w["confirmed"] == true), "{answer}");
    let received = subscriber.take(1_000).await;
    let numbers: BTreeSet<u64> = received
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, (0..1_000).collect());

    let queue = bida_testkit::activemq::TestQueue::create();
    let activemq = broker_of(&bida, "activemq", json!({"url": bida_testkit::activemq::url()})).await;
    let (status, answer) = produce(&bida, &activemq, &batch(json!({"queue": queue.name}))).await;
    assert_eq!(status, 200, "{answer}");
    written(&answer);
    assert_eq!(queue.take(1_000).await.len(), 1_000);

    let topic = bida_testkit::rocketmq::TestTopic::create().await;
    let rocketmq = broker_of(
        &bida,
        "rocketmq",
        json!({"name_server": bida_testkit::rocketmq::name_server()}),
    )
    .await;
    let (status, answer) = produce(&bida, &rocketmq, &batch(json!({"topic": topic.name}))).await;
    assert_eq!(status, 200, "{answer}");
    let places: BTreeSet<(i64, i64)> = written(&answer)
        .iter()
        .map(|w| (w["queue"].as_i64().unwrap(), w["offset"].as_i64().unwrap()))
        .collect();
    assert_eq!(places.len(), 1_000, "one place each");
    assert_eq!(topic.read_all().await.len(), 1_000);
}

/// A producer whose broker went away is replaced: the request after a
/// restart of the broker is written on a new connection (MQTT here, with a
/// broker of the test's own to restart).
#[tokio::test]
async fn a_producer_is_replaced_once_its_broker_restarted() {
    let mut mqtt = MqttBroker::start().await;
    let bida = Bida::start("").await;
    let broker = broker_of(&bida, "mqtt", json!({"url": mqtt.url()})).await;
    let message = json!({"topic": format!("{}/n", mqtt.base), "body": 1});
    let (status, answer) = produce(&bida, &broker, &message).await;
    assert_eq!(status, 200, "{answer}");

    mqtt.restart(Duration::from_millis(500)).await;
    let mut subscriber = mqtt.subscribe(&format!("{}/#", mqtt.base)).await;
    let (status, answer) = produce(&bida, &broker, &message).await;
    assert_eq!(status, 200, "a new connection: {answer}");
    assert_eq!(results(&answer)[0]["confirmed"], true, "{answer}");
    assert_eq!(subscriber.take(1).await[0].payload, b"1");
}
