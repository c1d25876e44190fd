//! gRPC deliveries end to end: the real binary and a real gRPC server
//! (`orders.v1.Callbacks`, tonic) started by each test, with its reflection
//! service on or off.

mod support;

use bida_testkit::grpc::{orders_descriptor_set, GrpcReceiver, GrpcReply};
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::time::Duration;
use support::Bida;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const PAID: &str = "orders.v1.Callbacks/Paid";

fn task_for(server: &GrpcReceiver, params: Value) -> Value {
    json!({
        "grpc": {"target": server.target, "method": PAID},
        "params": params,
        "headers": {"x-tenant": "north"},
        "max_attempts": 5,
        "backoff": {"initial_ms": 50, "max_ms": 200, "multiplier": 2.0, "jitter": 0.0},
    })
}

fn statuses(task: &Value) -> Vec<String> {
    task["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["grpc_status"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn a_task_calls_the_method_with_its_params_as_the_request_and_the_attempt_s_metadata() {
    let server = GrpcReceiver::start(true).await;
    let bida = Bida::start("").await;
    let params = json!({"order_id": "A-1", "cents": 250, "tags": ["first", "上海"], "paid_at": "2026-12-05T08:00:00Z"});
    let id = bida.submit(task_for(&server, params)).await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;

    let hits = server.hits();
    assert_eq!(hits.len(), 1);
    // The request as the server decoded it, in canonical proto3 JSON.
    assert_eq!(
        hits[0].request,
        json!({"orderId": "A-1", "cents": "250", "tags": ["first", "上海"], "paidAt": "2026-12-05T08:00:00Z"})
    );
    let metadata = &hits[0].metadata;
    assert_eq!(metadata.get("webhook-id"), Some(&id));
    assert_eq!(metadata.get("bida-attempt").map(String::as_str), Some("1"));
    assert!(metadata
        .get("webhook-timestamp")
        .is_some_and(|t| t.parse::<i64>().is_ok()));
    assert_eq!(metadata.get("x-tenant").map(String::as_str), Some("north"));
    assert!(
        metadata.get("traceparent").is_some_and(|t| t.starts_with("00-")),
        "{metadata:?}"
    );
    assert!(
        metadata.get("user-agent").is_some_and(|a| a.contains("Bida/")),
        "{metadata:?}"
    );

    assert_eq!(statuses(&task), ["OK"]);
    let attempt = &task["attempts"][0];
    assert!(attempt.get("status_code").is_none(), "{attempt}");
    assert_eq!(attempt["response_excerpt"], r#"{"accepted":true,"note":""}"#);
    assert_eq!(task["request"]["url"], format!("{}/", server.target));
    assert_eq!(task["request"]["grpc"]["method"], PAID);

    // The node knows the message now: a body that does not fit it is refused at once.
    let (status, problem) = bida
        .post("/v1/tasks", task_for(&server, json!({"cents": "many"})))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "params");
    let why = problem["errors"][0]["message"].as_str().unwrap();
    assert!(why.contains("does not fit orders.v1.PaidRequest"), "{problem}");
}

#[tokio::test]
async fn transient_statuses_are_retried_and_a_bad_argument_dead_letters_at_once() {
    let server = GrpcReceiver::start(true).await;
    server.reply([
        GrpcReply::status(Code::Unavailable, "draining"),
        GrpcReply::status(Code::DeadlineExceeded, "slow disk"),
        GrpcReply::status(Code::ResourceExhausted, "quota"),
    ]);
    let bida = Bida::start("").await;
    let retried = bida.submit(task_for(&server, json!({"order_id": "A-2"}))).await;
    let task_view = bida.wait_status(&retried, "delivered", WAIT).await;
    assert_eq!(
        statuses(&task_view),
        ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "OK"]
    );
    assert_eq!(task_view["attempts"][0]["error"], "gRPC UNAVAILABLE: draining");

    for (code, name) in [
        (Code::InvalidArgument, "INVALID_ARGUMENT"),
        (Code::NotFound, "NOT_FOUND"),
        (Code::PermissionDenied, "PERMISSION_DENIED"),
    ] {
        server.reply([GrpcReply::status(code, "no such order")]);
        let id = bida.submit(task_for(&server, json!({"order_id": "A-3"}))).await;
        let dead = bida.wait_status(&id, "dead", WAIT).await;
        assert_eq!(statuses(&dead), [name]);
        let expected = format!("gRPC {name}: no such order (not retried)");
        assert_eq!(dead["attempts"][0]["error"], expected.as_str());
        assert_eq!(dead["reason"], expected.as_str());
    }
}

#[tokio::test]
async fn retry_info_sets_the_next_attempt_and_a_slow_call_times_out() {
    let server = GrpcReceiver::start(true).await;
    server.reply([
        GrpcReply::Status {
            code: Code::Unavailable,
            message: "come back later".into(),
            retry_after: Some(Duration::from_secs(2)),
        },
        GrpcReply::Hold(Duration::from_secs(3)),
    ]);
    let bida = Bida::start("").await;
    let mut submitted = task_for(&server, json!({"order_id": "A-4"}));
    submitted["timeout_ms"] = json!(500);
    submitted["backoff"] = json!({"initial_ms": 50, "max_ms": 10000, "multiplier": 1.0, "jitter": 0.0});
    let id = bida.submit(submitted).await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(statuses(&task), ["UNAVAILABLE", "-", "OK"]);
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts[1]["timed_out"], true, "{task}");
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(attempts[i]["started_at"].as_str().unwrap()).unwrap();
    let waited = at(1) - at(0);
    // The server's RetryInfo (2 s), not the task's 50 ms backoff.
    assert!(
        waited >= chrono::Duration::milliseconds(1_900),
        "second attempt after {waited}"
    );
}

#[tokio::test]
async fn the_expectation_looks_at_the_response_message() {
    let server = GrpcReceiver::start(true).await;
    server.reply([GrpcReply::Ok(json!({"accepted": false, "note": "busy"}))]);
    let bida = Bida::start("").await;
    let mut submitted = task_for(&server, json!({"order_id": "A-5"}));
    submitted["expect"] = json!({"json": {"pointer": "/accepted", "equals": true}});
    let id = bida.submit(submitted).await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(statuses(&task), ["OK", "OK"]);
    assert_eq!(
        task["attempts"][0]["error"],
        "response JSON /accepted is false, expected true"
    );
}

#[tokio::test]
async fn a_body_that_does_not_fit_and_a_method_nobody_describes_dead_letter_with_the_reason() {
    let described = GrpcReceiver::start(true).await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(task_for(&described, json!({"order_id": "A-6", "cents": "many"})))
        .await;
    let dead = bida.wait_status(&id, "dead", WAIT).await;
    let error = dead["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("does not fit orders.v1.PaidRequest"), "{error}");
    assert!(described.hits().is_empty(), "nothing was sent");

    let mut unknown_method = task_for(&described, json!({}));
    unknown_method["grpc"]["method"] = json!("orders.v1.Callbacks/Refunded");
    let id = bida.submit(unknown_method).await;
    let dead = bida.wait_status(&id, "dead", WAIT).await;
    let error = dead["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("types of orders.v1.Callbacks/Refunded are unknown"),
        "{error}"
    );

    let streaming = {
        let mut t = task_for(&described, json!({}));
        t["grpc"]["method"] = json!("orders.v1.Callbacks/Watch");
        t
    };
    let id = bida.submit(streaming).await;
    let dead = bida.wait_status(&id, "dead", WAIT).await;
    assert!(
        dead["attempts"][0]["error"].as_str().unwrap().contains("streams"),
        "{dead}"
    );

    let silent = GrpcReceiver::start(false).await;
    let id = bida.submit(task_for(&silent, json!({"order_id": "A-7"}))).await;
    let dead = bida.wait_status(&id, "dead", WAIT).await;
    let error = dead["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("POST /v1/descriptors"), "{error}");
    assert!(silent.hits().is_empty());
}

#[tokio::test]
async fn grpc_and_url_are_one_or_the_other_and_checked_at_submission() {
    let bida = Bida::start("").await;
    for (body, field) in [
        (
            json!({"url": "http://127.0.0.1:9/x", "grpc": {"target": "http://127.0.0.1:9", "method": PAID}}),
            "grpc",
        ),
        (
            json!({"grpc": {"target": "http://127.0.0.1:9", "method": "Paid"}}),
            "grpc.method",
        ),
        (
            json!({"grpc": {"target": "grpc://127.0.0.1:9", "method": PAID}}),
            "grpc.target",
        ),
        (
            json!({"grpc": {"target": "http://127.0.0.1:9/orders", "method": PAID}}),
            "grpc.target",
        ),
        (
            json!({"grpc": {"target": "http://127.0.0.1:9", "method": PAID}, "body": "x"}),
            "grpc",
        ),
    ] {
        let (status, problem) = bida.post("/v1/tasks", body.clone()).await;
        assert_eq!(status, 422, "{body} → {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body} → {problem}");
    }
}

/// Posts a descriptor set as its bytes.
async fn upload(bida: &Bida, bytes: Vec<u8>) -> (u16, Value) {
    let response = bida
        .http
        .post(format!("{}/v1/descriptors", bida.url))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload");
    support::read(response).await
}

#[tokio::test]
async fn an_uploaded_descriptor_set_describes_a_server_without_reflection() {
    let silent = GrpcReceiver::start(false).await;
    let bida = Bida::start("").await;
    for garbage in [b"\xff\xff\xff".to_vec(), Vec::new()] {
        let (status, problem) = upload(&bida, garbage).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "body", "{problem}");
    }
    let set = orders_descriptor_set();
    let (status, view) = upload(&bida, set.clone()).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["services"], json!(["orders.v1.Callbacks"]));
    assert!(
        view["files"].as_array().unwrap().iter().any(|f| f == "orders.proto"),
        "{view}"
    );
    let id = view["id"].as_str().unwrap().to_string();
    let (status, again) = upload(&bida, set).await;
    assert_eq!((status, &again["id"]), (200, &view["id"]), "the same bytes are one set");
    let (_, list) = bida.get("/v1/descriptors").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // Known now: a body that does not fit is refused at submission, one that fits is delivered.
    let (status, problem) = bida
        .post("/v1/tasks", task_for(&silent, json!({"cents": "many"})))
        .await;
    assert_eq!(status, 422, "{problem}");
    let task_id = bida
        .submit(task_for(&silent, json!({"order_id": "B-1", "cents": 9})))
        .await;
    bida.wait_status(&task_id, "delivered", WAIT).await;
    assert_eq!(silent.hits()[0].request, json!({"orderId": "B-1", "cents": "9"}));

    // Deleted: the server is unknown again.
    let (status, _) = bida.delete(&format!("/v1/descriptors/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = bida.get(&format!("/v1/descriptors/{id}")).await;
    assert_eq!(status, 404);
    let task_id = bida.submit(task_for(&silent, json!({"order_id": "B-2"}))).await;
    let dead = bida.wait_status(&task_id, "dead", WAIT).await;
    assert!(
        dead["reason"].as_str().unwrap().contains("POST /v1/descriptors"),
        "{dead}"
    );
}

#[tokio::test]
async fn a_consumer_delivers_rabbitmq_messages_to_a_grpc_method() {
    let server = GrpcReceiver::start(true).await;
    server.reply([GrpcReply::status(Code::Unavailable, "warming up")]);
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let (status, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url()}),
        )
        .await;
    assert_eq!(status, 201, "{broker}");
    let consumer = json!({
        "name": "orders-to-grpc",
        "broker_id": broker["id"],
        "source": {"queue": queue.name},
        "endpoint": {"grpc": {"target": server.target, "method": PAID}},
        "policy": {"backoff": {"initial_ms": 50, "max_ms": 200, "multiplier": 2.0, "jitter": 0.0}},
    });
    let (status, created) = bida.post("/v1/consumers", consumer).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["endpoint"]["grpc"]["method"], PAID, "{created}");
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|n| {
            json!({"order_id": format!("C-{n}"), "cents": n})
                .to_string()
                .into_bytes()
        })
        .collect();
    queue.publish(bodies.into_iter().map(|body| (None, body))).await;
    let done = support::until(WAIT, || async {
        let mut orders: Vec<String> = server
            .hits()
            .iter()
            .filter_map(|hit| hit.request["orderId"].as_str().map(String::from))
            .collect();
        orders.sort();
        orders.dedup();
        orders.len() == 20
    })
    .await;
    assert!(done, "every message reached the method: {:?}", server.hits().len());
    // The one refused at first was retried: 21 calls, every message delivered once.
    let id = created["id"].as_str().unwrap();
    let counted = support::until(WAIT, || async {
        let (_, view) = bida.get(&format!("/v1/consumers/{id}")).await;
        view["counters"]["delivered"] == 20
    })
    .await;
    let (_, view) = bida.get(&format!("/v1/consumers/{id}")).await;
    assert!(counted, "{view}");
    assert_eq!(view["counters"]["failed_attempts"], 1, "{view}");
    assert_eq!(server.hits().len(), 21);
    assert!(server.hits().iter().all(|hit| hit.metadata.contains_key("webhook-id")));
}

#[tokio::test]
async fn a_grpc_attempt_is_a_span_and_a_duration_labelled_with_the_rpc_conventions() {
    let collector = bida_testkit::otlp::OtlpReceiver::start().await;
    let server = GrpcReceiver::start(true).await;
    server.reply([GrpcReply::status(Code::Unavailable, "draining")]);
    let bida = Bida::start(&format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nexport_interval_ms = 300\n",
        collector.url()
    ))
    .await;
    let id = bida.submit(task_for(&server, json!({"order_id": "T-1"}))).await;
    bida.wait_status(&id, "delivered", WAIT).await;
    let trace_id = |hit: &bida_testkit::grpc::GrpcHit| {
        hit.metadata
            .get("traceparent")
            .and_then(|t| t.split('-').nth(1).map(String::from))
    };
    let traces: Vec<String> = server.hits().iter().filter_map(trace_id).collect();
    assert_eq!(traces.len(), 2, "both attempts carry a traceparent");
    let exported = support::eventually(Duration::from_secs(30), || {
        let spans = collector.spans();
        spans
            .iter()
            .filter(|s| s.name == "deliver" && traces.contains(&s.trace_id))
            .count()
            == 2
            && !collector.metric_points("rpc.client.duration").is_empty()
    })
    .await;
    assert!(exported, "spans received: {:?}", collector.spans());
    let spans = collector.spans();
    let mut codes: Vec<String> = spans
        .iter()
        .filter(|s| traces.contains(&s.trace_id))
        .map(|span| {
            let attribute = |name: &str| span.attributes.get(name).cloned().unwrap_or_default();
            assert_eq!(attribute("rpc.system"), "grpc");
            assert_eq!(attribute("rpc.service"), "orders.v1.Callbacks");
            assert_eq!(attribute("rpc.method"), "Paid");
            assert_eq!(attribute("server.address"), "127.0.0.1");
            attribute("rpc.grpc.status_code")
        })
        .collect();
    codes.sort();
    assert_eq!(codes, ["0", "14"], "OK and UNAVAILABLE");
    let durations = collector.metric_points("rpc.client.duration");
    assert!(
        durations
            .iter()
            .any(|p| p.get("rpc.method").map(String::as_str) == Some("Paid")
                && p.get("rpc.grpc.status_code").map(String::as_str) == Some("14")),
        "{durations:?}"
    );
}

// ---- Bida's own gRPC interface (proto/bida/v1), through its generated client ----

mod interface {
    use super::*;
    use bida_api::grpc::proto::{
        messages_client::MessagesClient, pull_client::PullClient, tasks_client::TasksClient, AckRequest,
        ConsumeRequest, DelayedRequest, GetTaskRequest, NackRequest, OutgoingMessage, ProduceRequest,
        SubmitTaskRequest,
    };
    use bida_testkit::Receiver;
    use prost_types::value::Kind;
    use support::ADMIN_KEY;
    use tonic::transport::Channel;
    use tonic::Request;
    use tonic_types::StatusExt;

    fn keyed<T>(message: T, key: &str) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        request
    }

    async fn channel(bida: &Bida) -> Channel {
        assert!(
            !bida.grpc_url.is_empty(),
            "the node logs where gRPC listens\n{}",
            bida.log()
        );
        Channel::from_shared(bida.grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    fn value(json: Value) -> prost_types::Value {
        bida_api::grpc::json_value(json)
    }

    fn object(json: Value) -> prost_types::Struct {
        let Value::Object(fields) = json else {
            panic!("an object")
        };
        bida_api::grpc::json_struct(fields)
    }

    async fn key_with_role(bida: &Bida, role: &str) -> String {
        let (status, issued) = bida.post("/v1/keys", json!({"name": role, "role": role})).await;
        assert_eq!(status, 201, "{issued}");
        issued["key"].as_str().unwrap().to_string()
    }

    /// Submit (with an idempotency key), read back, and the same checks,
    /// problems and roles as POST /v1/tasks, over the generated client.
    #[tokio::test]
    async fn tasks_are_submitted_and_read_over_grpc_with_the_http_api_s_checks_and_roles() {
        let endpoint = Receiver::ok().await;
        let bida = Bida::start("").await;
        let mut tasks = TasksClient::new(channel(&bida).await);
        let submission = SubmitTaskRequest {
            url: endpoint.url("/paid"),
            params: Some(value(json!({"order": "A-1", "cents": 250, "tags": ["上海"]}))),
            headers: [("x-tenant".to_string(), "north".to_string())].into(),
            max_attempts: Some(3),
            idempotency_key: Some("order-A-1".into()),
            ..SubmitTaskRequest::default()
        };
        let accepted = tasks
            .submit_task(keyed(submission.clone(), ADMIN_KEY))
            .await
            .expect("submitted")
            .into_inner();
        let task = accepted.task.expect("the task");
        assert!(!accepted.replayed);
        assert_eq!(
            (task.url.as_str(), task.max_attempts),
            (endpoint.url("/paid").as_str(), 3)
        );
        assert!(endpoint.wait_for_hits(1, WAIT).await, "delivered\n{}", bida.log());
        let hit = &endpoint.hits()[0];
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(
            body,
            json!({"order": "A-1", "cents": 250, "tags": ["上海"]}),
            "whole numbers stay integers"
        );
        assert_eq!(hit.header("x-tenant"), Some("north"));

        let again = tasks
            .submit_task(keyed(submission, ADMIN_KEY))
            .await
            .unwrap()
            .into_inner();
        assert!(again.replayed, "the idempotency key returns the first task");
        assert_eq!(again.task.unwrap().id, task.id);

        bida.wait_status(&task.id, "delivered", WAIT).await;
        let detail = tasks
            .get_task(keyed(GetTaskRequest { id: task.id.clone() }, ADMIN_KEY))
            .await
            .expect("read")
            .into_inner();
        let summary = detail.task.as_ref().expect("the task");
        assert_eq!(
            (summary.status.as_str(), detail.attempts.len()),
            ("delivered", 1),
            "{detail:?}"
        );
        assert_eq!(detail.attempts[0].status_code, Some(200));
        let request = detail.request.expect("the request");
        assert!(request.fields.contains_key("headers"), "{request:?}");

        // The HTTP API's checks, with the field at fault as a BadRequest detail.
        let refused = tasks
            .submit_task(keyed(
                SubmitTaskRequest {
                    url: "ftp://example.com/x".into(),
                    ..SubmitTaskRequest::default()
                },
                ADMIN_KEY,
            ))
            .await
            .expect_err("not an http(s) URL");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let details = refused.get_error_details();
        let violations = &details.bad_request().expect("field violations").field_violations;
        assert_eq!(violations[0].field, "url", "{violations:?}");
        let missing = tasks
            .get_task(keyed(
                GetTaskRequest {
                    id: "no-such-task".into(),
                },
                ADMIN_KEY,
            ))
            .await
            .expect_err("no such task");
        assert_eq!(missing.code(), Code::NotFound);

        // Keys and roles as over HTTP.
        let anonymous = tasks
            .get_task(Request::new(GetTaskRequest { id: task.id.clone() }))
            .await
            .expect_err("no key");
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        let unknown = tasks
            .get_task(keyed(GetTaskRequest { id: task.id.clone() }, "bida_not_a_key"))
            .await
            .expect_err("unknown key");
        assert_eq!(unknown.code(), Code::Unauthenticated);
        let viewer = key_with_role(&bida, "viewer").await;
        let denied = tasks
            .submit_task(keyed(
                SubmitTaskRequest {
                    url: endpoint.url("/x"),
                    ..SubmitTaskRequest::default()
                },
                &viewer,
            ))
            .await
            .expect_err("a viewer does not submit");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("bida.v1.Tasks/SubmitTask"), "{denied:?}");
        let seen = tasks
            .get_task(keyed(GetTaskRequest { id: task.id.clone() }, &viewer))
            .await
            .expect("a viewer reads tasks");
        assert_eq!(seen.into_inner().task.unwrap().id, task.id);
    }

    /// The reflection service lists Bida's services and describes their files.
    #[tokio::test]
    async fn the_interface_answers_reflection() {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let bida = Bida::start("").await;
        let mut reflection = ServerReflectionClient::new(channel(&bida).await);
        let ask = |request: MessageRequest| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let requests = vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("bida.v1.Pull".into())),
        ];
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("a service list")
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bida.v1.Messages",
                "bida.v1.Pull",
                "bida.v1.Tasks",
                "grpc.reflection.v1.ServerReflection"
            ]
        );
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("the file of bida.v1.Pull")
        };
        let file =
            <prost_types::FileDescriptorProto as prost::Message>::decode(files.file_descriptor_proto[0].as_slice())
                .unwrap();
        assert_eq!(file.name(), "bida/v1/pull.proto");
        let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Consume", "Ack", "Nack"]);
    }

    /// Produce now and delayed to a built-in topic, and consume it as a pull
    /// consumer's member: a server stream of leased messages, acked and nacked.
    #[tokio::test]
    async fn messages_are_produced_and_pull_consumed_over_grpc() {
        let mut bida = Bida::start("").await;
        let topic = format!("t-{}", uuid::Uuid::new_v4().simple());
        let (status, made) = bida.post("/v1/topics", json!({"name": topic, "partitions": 1})).await;
        assert_eq!(status, 201, "{made}");
        let (status, consumer) = bida
            .post(
                "/v1/consumers",
                json!({"name": "grpc members", "broker_id": "builtin", "source": {"topic": topic},
                       "endpoint": {"kind": "pull", "lease_ms": 30000}}),
            )
            .await;
        assert_eq!(status, 201, "{consumer}");
        let consumer_id = consumer["id"].as_str().unwrap().to_string();
        let channel = channel(&bida).await;
        let (mut messages, mut pull) = (MessagesClient::new(channel.clone()), PullClient::new(channel));
        let mut stream = pull
            .consume(keyed(
                ConsumeRequest {
                    consumer_id: consumer_id.clone(),
                    member: "worker-1".into(),
                    max: Some(10),
                    client_version: Some("test/1".into()),
                    ..ConsumeRequest::default()
                },
                ADMIN_KEY,
            ))
            .await
            .expect("a stream")
            .into_inner();

        let message = |n: u32| OutgoingMessage {
            body: Some(value(json!({"n": n}))),
            target: Some(object(json!({"topic": topic, "key": format!("k{n}")}))),
            ..OutgoingMessage::default()
        };
        let written = messages
            .produce(keyed(
                ProduceRequest {
                    broker_id: "builtin".into(),
                    messages: (0..4).map(message).collect(),
                },
                ADMIN_KEY,
            ))
            .await
            .expect("written")
            .into_inner();
        assert_eq!(written.written.len(), 4, "{written:?}");
        let landed = written.written[3].landed.as_ref().unwrap();
        assert_eq!(landed.fields["offset"].kind, Some(Kind::NumberValue(3.0)), "{landed:?}");
        let mut delayed = message(4);
        delayed.delay_ms = Some(300);
        let held = messages
            .produce(keyed(
                ProduceRequest {
                    broker_id: "builtin".into(),
                    messages: vec![delayed],
                },
                ADMIN_KEY,
            ))
            .await
            .expect("held")
            .into_inner();
        assert!(held.written.is_empty() && held.delayed.len() == 1, "{held:?}");
        let mut later = message(5);
        later.delay_ms = Some(600_000);
        let later = messages
            .produce(keyed(
                ProduceRequest {
                    broker_id: "builtin".into(),
                    messages: vec![later],
                },
                ADMIN_KEY,
            ))
            .await
            .expect("held")
            .into_inner()
            .delayed
            .remove(0);
        let cancelled = messages
            .cancel_delayed(keyed(DelayedRequest { id: later.id.clone() }, ADMIN_KEY))
            .await
            .expect("cancelled")
            .into_inner();
        assert_eq!(
            (cancelled.state.as_str(), cancelled.destination.as_str()),
            ("cancelled", topic.as_str())
        );
        let again = messages
            .cancel_delayed(keyed(DelayedRequest { id: later.id }, ADMIN_KEY))
            .await
            .expect_err("cancelled before");
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
        let unknown = messages
            .produce(keyed(
                ProduceRequest {
                    broker_id: "no-such-broker".into(),
                    messages: vec![message(9)],
                },
                ADMIN_KEY,
            ))
            .await
            .expect_err("no such broker");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

        // All five arrive on the stream, the delayed one once written.
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while received.len() < 5 {
            let batch = tokio::time::timeout_at(deadline, stream.message())
                .await
                .expect("five messages in time")
                .expect("the stream goes on")
                .expect("a batch");
            let settings = batch.settings.expect("settings with every batch");
            assert_eq!(settings.mode, "cluster");
            received.extend(batch.messages);
        }
        let bodies: Vec<String> = received
            .iter()
            .map(|m| match &m.body.as_ref().unwrap().content {
                Some(bida_api::grpc::proto::body::Content::Text(text)) => text.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut sorted = bodies.clone();
        sorted.sort();
        assert_eq!(sorted, (0..5).map(|n| format!(r#"{{"n":{n}}}"#)).collect::<Vec<_>>());

        // Four acked, the last dead-lettered by a nack.
        let acked = pull
            .ack(keyed(
                AckRequest {
                    consumer_id: consumer_id.clone(),
                    leases: received[..4].iter().map(|m| m.lease.clone()).collect(),
                    member: Some("worker-1".into()),
                },
                ADMIN_KEY,
            ))
            .await
            .expect("acked")
            .into_inner();
        assert_eq!((acked.settled.len(), acked.expired.len()), (4, 0), "{acked:?}");
        let nacked = pull
            .nack(keyed(
                NackRequest {
                    consumer_id: consumer_id.clone(),
                    leases: vec![received[4].lease.clone()],
                    reason: Some("cannot parse".into()),
                    dead: true,
                    ..NackRequest::default()
                },
                ADMIN_KEY,
            ))
            .await
            .expect("nacked")
            .into_inner();
        assert_eq!(nacked.settled.len(), 1, "{nacked:?}");
        bida.wait_status(&received[4].task_id, "dead", WAIT).await;
        let produced = messages
            .get_delayed(keyed(
                DelayedRequest {
                    id: held.delayed[0].id.clone(),
                },
                ADMIN_KEY,
            ))
            .await
            .expect("the delayed message")
            .into_inner();
        assert_eq!(produced.state, "produced", "{produced:?}");
        let landed = produced.landed.expect("where it landed");
        assert_eq!(landed.fields["offset"].kind, Some(Kind::NumberValue(4.0)), "{landed:?}");
        bida.wait_status(&received[0].task_id, "delivered", WAIT).await;
        let bad_lease = pull
            .ack(keyed(
                AckRequest {
                    consumer_id: consumer_id.clone(),
                    leases: vec!["not-a-lease".into()],
                    member: None,
                },
                ADMIN_KEY,
            ))
            .await
            .expect_err("not a lease id");
        assert_eq!(bad_lease.code(), Code::InvalidArgument, "{bad_lease:?}");

        // The stream is the member's heartbeat: it is listed, alive.
        let (status, members) = bida.get(&format!("/v1/consumers/{consumer_id}/members")).await;
        assert_eq!(status, 200, "{members}");
        let member = &members["members"][0];
        assert_eq!(
            (member["member"].as_str(), member["client_version"].as_str()),
            (Some("worker-1"), Some("test/1")),
            "{members}"
        );

        // A stopping node ends the open stream and exits by itself.
        let exit = bida.terminate().await.expect("running");
        assert!(exit.success(), "{exit}\n{}", bida.log());
        let end = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("the stream ends");
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    }
}
