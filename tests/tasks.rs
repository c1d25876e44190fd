//! Callback tasks end to end: the real binary, the machine's Postgres, and real
//! HTTP endpoints started by each test.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{Bida, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(20);

fn fast_backoff() -> Value {
    json!({"initial_ms": 50, "max_ms": 200, "multiplier": 2.0, "jitter": 0.0})
}

#[tokio::test]
async fn delivered_after_retries_with_stable_headers_and_the_exact_body() {
    let endpoint = Receiver::start(|_, nth| {
        if nth <= 2 {
            Reply::status(503)
        } else {
            Reply::ok().body("ok")
        }
    })
    .await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({
            "url": endpoint.url("/hooks/paid"),
            "method": "PUT",
            "params": {"order": 42, "城市": "上海"},
            "headers": {"X-Shop": "north"},
            "max_attempts": 5,
            "backoff": fast_backoff(),
            "source_app": "shop",
            "target_app": "billing",
        }))
        .await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;

    let hits = endpoint.hits();
    assert_eq!(hits.len(), 3);
    for (n, hit) in hits.iter().enumerate() {
        assert_eq!(hit.method, "PUT");
        assert_eq!(hit.path, "/hooks/paid");
        assert_eq!(hit.header("webhook-id"), Some(id.as_str()), "stable message id");
        assert_eq!(hit.header("bida-attempt"), Some((n + 1).to_string().as_str()));
        assert!(hit.header("webhook-timestamp").unwrap().parse::<i64>().unwrap() > 1_700_000_000);
        assert_eq!(hit.header("x-shop"), Some("north"));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body, json!({"order": 42, "城市": "上海"}));
    }
    assert_eq!(task["attempt_count"], 3);
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status_code"], 503);
    assert_eq!(attempts[0]["error"], "HTTP 503");
    assert_eq!(attempts[2]["status_code"], 200);
    assert_eq!(attempts[2]["response_excerpt"], "ok");
    assert!(task.get("next_attempt_at").is_none());

    // The list read model catches up with the same outcome.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = bida.get("/v1/tasks?status=delivered&app=billing").await;
        if page["items"].as_array().is_some_and(|items| items.len() == 1) {
            assert_eq!(page["items"][0]["id"], id.as_str());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "list never showed the task: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, history) = bida.get(&format!("/v1/tasks/{id}/events")).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["TaskSubmitted", "AttemptFailed", "AttemptFailed", "AttemptSucceeded"]
    );
}

#[tokio::test]
async fn dead_lettered_after_max_attempts_notifies_then_manual_retry_delivers() {
    let endpoint = Receiver::start(|_, _| Reply::status(500).body("boom")).await;
    let generic = Receiver::ok().await;
    let dingtalk = Receiver::start(|_, _| Reply::ok().body(r#"{"errcode":0,"errmsg":"ok"}"#)).await;
    let bida = Bida::start(&format!(
        r#"
        [[notify.webhooks]]
        url = "{}"
        [[notify.webhooks]]
        url = "{}"
        format = "dingtalk"
        "#,
        generic.url("/alerts"),
        dingtalk.url("/robot/send")
    ))
    .await;
    let id = bida
        .submit(json!({"url": endpoint.url("/cb"), "max_attempts": 3, "backoff": fast_backoff(), "source_app": "crm"}))
        .await;
    let task = bida.wait_status(&id, "dead", WAIT).await;
    assert_eq!(endpoint.hit_count(), 3);
    assert_eq!(task["reason"], "gave up after 3 attempt(s); last: HTTP 500");
    assert_eq!(task["attempts"][2]["response_excerpt"], "boom");

    assert!(
        generic.wait_for_hits(1, WAIT).await,
        "generic notification not received"
    );
    let note: Value = serde_json::from_slice(&generic.hits()[0].body).unwrap();
    assert_eq!(note["type"], "bida.tasks.dead_lettered");
    assert_eq!(note["count"], 1);
    assert_eq!(note["tasks"][0]["task_id"], id.as_str());
    assert_eq!(note["tasks"][0]["source_app"], "crm");
    assert_eq!(note["tasks"][0]["attempts"], 3);
    assert!(
        dingtalk.wait_for_hits(1, WAIT).await,
        "DingTalk notification not received"
    );
    let robot: Value = serde_json::from_slice(&dingtalk.hits()[0].body).unwrap();
    assert_eq!(robot["msgtype"], "markdown");
    assert!(robot["markdown"]["text"].as_str().unwrap().contains(&id));

    // The endpoint is fixed; an operator compensates by hand.
    endpoint.set_behavior(|_, _| Reply::ok());
    let (status, retried) = bida.post(&format!("/v1/tasks/{id}/retry"), json!(null)).await;
    assert_eq!(status, 200, "{retried}");
    let task = bida.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(task["attempt_count"], 4);
    assert_eq!(endpoint.hits().last().unwrap().header("bida-attempt"), Some("4"));
    let (status, again) = bida.post(&format!("/v1/tasks/{id}/retry"), json!(null)).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["type"], "urn:bida:problem:invalid-state");
}

#[tokio::test]
async fn a_slow_endpoint_is_cut_at_the_timeout_and_retried() {
    let endpoint = Receiver::start(|_, nth| {
        if nth == 1 {
            Reply::ok().after(Duration::from_secs(3))
        } else {
            Reply::ok()
        }
    })
    .await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({"url": endpoint.url("/slow"), "timeout_ms": 300, "backoff": fast_backoff()}))
        .await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;
    let first = &task["attempts"][0];
    assert_eq!(first["error"], "timed out after 300 ms");
    assert!(first.get("status_code").is_none());
    assert!(first["latency_ms"].as_u64().unwrap() < 2_000, "{first}");
    assert_eq!(task["attempt_count"], 2);
}

#[tokio::test]
async fn the_expected_response_decides_success() {
    let endpoint = Receiver::start(|hit, nth| match (hit.path.as_str(), nth) {
        ("/text", 1) => Reply::ok().body("处理失败"),
        ("/text", _) => Reply::ok().body("处理成功"),
        ("/json", 1) => Reply::ok().body(r#"{"code": 1}"#),
        _ => Reply::ok().body(r#"{"code": 0, "data": {}}"#),
    })
    .await;
    let bida = Bida::start("").await;
    let text = bida
        .submit(json!({"url": endpoint.url("/text"), "expect": {"body_contains": "成功"}, "backoff": fast_backoff()}))
        .await;
    let json_id = bida
        .submit(json!({"url": endpoint.url("/json"), "expect": {"json": {"pointer": "code", "equals": 0}}, "backoff": fast_backoff()}))
        .await;
    let task = bida.wait_status(&text, "delivered", WAIT).await;
    assert_eq!(task["attempts"][0]["error"], "response body does not contain \"成功\"");
    let task = bida.wait_status(&json_id, "delivered", WAIT).await;
    assert_eq!(task["attempts"][0]["error"], "response JSON /code is 1, expected 0");
}

#[tokio::test]
async fn the_endpoint_stays_in_control() {
    let endpoint = Receiver::start(|hit, nth| match (hit.path.as_str(), nth) {
        ("/gone", _) => Reply::status(404),
        ("/stop", _) => Reply::status(503).header("bida-stop-retry", "1"),
        ("/throttle", 1) => Reply::status(429).header("retry-after", "1"),
        _ => Reply::ok(),
    })
    .await;
    let bida = Bida::start("").await;
    let backoff = json!({"initial_ms": 50, "max_ms": 5000, "jitter": 0.0});
    let gone = bida
        .submit(json!({"url": endpoint.url("/gone"), "backoff": backoff}))
        .await;
    let stop = bida
        .submit(json!({"url": endpoint.url("/stop"), "backoff": backoff}))
        .await;
    let throttle = bida
        .submit(json!({"url": endpoint.url("/throttle"), "backoff": backoff}))
        .await;

    let task = bida.wait_status(&gone, "dead", WAIT).await;
    assert_eq!(task["attempt_count"], 1);
    assert_eq!(task["reason"], "HTTP 404 is not retried (retry_on: 5xx, 408, 429)");
    let task = bida.wait_status(&stop, "dead", WAIT).await;
    assert_eq!(task["attempt_count"], 1);
    assert!(
        task["reason"].as_str().unwrap().contains("asked to stop retrying"),
        "{task}"
    );

    bida.wait_status(&throttle, "delivered", WAIT).await;
    let times: Vec<_> = endpoint
        .hits()
        .into_iter()
        .filter(|h| h.path == "/throttle")
        .map(|h| h.at)
        .collect();
    let waited = times[1] - times[0];
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 honoured, waited {waited:?}"
    );

    // A custom retry_on makes 404 retryable for this task.
    let retried = bida
        .submit(json!({"url": endpoint.url("/gone"), "retry_on": ["404"], "max_attempts": 2, "backoff": backoff}))
        .await;
    let task = bida.wait_status(&retried, "dead", WAIT).await;
    assert_eq!(task["attempt_count"], 2);
}

#[tokio::test]
async fn cancel_stops_retries() {
    let endpoint = Receiver::start(|_, _| Reply::status(500)).await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({"url": endpoint.url("/cb"), "backoff": {"initial_ms": 1500, "jitter": 0.0}}))
        .await;
    bida.wait_status(&id, "retrying", WAIT).await;
    let (status, task) = bida
        .post(&format!("/v1/tasks/{id}/cancel"), json!({"reason": "order voided"}))
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "cancelled");
    assert_eq!(task["reason"], "order voided");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(endpoint.hit_count(), 1, "no attempt after the cancel");
    let (status, problem) = bida.post(&format!("/v1/tasks/{id}/cancel"), json!(null)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["detail"], "cannot cancel a task that is cancelled");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_task() {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let task = json!({"url": endpoint.url("/once"), "params": {"n": 1}, "source_app": "shop"});
    let send = |body: Value| {
        bida.http
            .post(format!("{}/v1/tasks", bida.url))
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(task.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let second = send(task.clone()).await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);

    let changed = send(json!({"url": endpoint.url("/once"), "params": {"n": 2}, "source_app": "shop"}))
        .await
        .unwrap();
    assert_eq!(changed.status(), 422);
    let problem: Value = changed.json().await.unwrap();
    assert_eq!(problem["type"], "urn:bida:problem:idempotency-key-reused");

    // Another app may use the same key for its own task.
    let other = send(json!({"url": endpoint.url("/once"), "source_app": "crm"}))
        .await
        .unwrap();
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);

    bida.wait_status(first["id"].as_str().unwrap(), "delivered", WAIT).await;
    bida.wait_status(other["id"].as_str().unwrap(), "delivered", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(endpoint.hit_count(), 2, "one delivery per task");
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let bida = Bida::start("[api]\nmax_body_bytes = 2048").await;
    let post_raw = |body: String| {
        bida.http
            .post(format!("{}/v1/tasks", bida.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (r#"{"url": "not a url"}"#.into(), 422, "validation-failed", Some("url")),
        (
            r#"{"url": "http://h/", "method": "BREW"}"#.into(),
            422,
            "validation-failed",
            Some("method"),
        ),
        (
            r#"{"url": "http://h/", "timeout_ms": "soon"}"#.into(),
            400,
            "invalid-json",
            Some("timeout_ms"),
        ),
        (r#"{"url": "http://h/""#.into(), 400, "invalid-json", None),
        (String::new(), 400, "invalid-json", None),
        (
            format!(r#"{{"url": "http://h/", "body": "{}"}}"#, "x".repeat(4096)),
            413,
            "payload-too-large",
            None,
        ),
    ];
    for (body, status, kind, field) in cases {
        let response = post_raw(body.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body:.80}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], format!("urn:bida:problem:{kind}"), "{problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
    }
    for path in ["/v1/tasks/unknown", "/v1/tasks/unknown/events"] {
        let (status, problem) = bida.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(problem["type"], "urn:bida:problem:not-found");
    }
    let (status, problem) = bida.post("/v1/tasks/unknown/retry", json!(null)).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("urn:bida:problem:not-found"))
    );
    let (status, problem) = bida.get("/v1/tasks?limit=lots").await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "limit");

    // The bootstrap admin key and the console's first user are the only
    // things recorded.
    let recorded: Vec<String> = bida
        .stored_events(None)
        .await
        .into_iter()
        .map(|event| event.aggregate_type)
        .filter(|t| t != "api_key" && t != "console_user")
        .collect();
    assert_eq!(recorded, Vec::<String>::new(), "bad requests recorded nothing");
}

#[tokio::test]
async fn get_params_become_the_query_string_and_delays_are_kept() {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let get = bida
        .submit(json!({"url": endpoint.url("/weather?v=1"), "method": "GET", "params": {"city": "上海", "days": 3}}))
        .await;
    bida.wait_status(&get, "delivered", WAIT).await;
    let hit = &endpoint.hits()[0];
    assert_eq!(hit.method, "GET");
    assert_eq!(hit.query.as_deref(), Some("v=1&city=%E4%B8%8A%E6%B5%B7&days=3"));
    assert!(hit.body.is_empty());

    let submitted = tokio::time::Instant::now();
    let delayed = bida
        .submit(json!({"url": endpoint.url("/later"), "delay_ms": 1500}))
        .await;
    let (_, task) = bida.get(&format!("/v1/tasks/{delayed}")).await;
    assert_eq!(task["status"], "pending");
    assert!(task["deliver_at"].is_string());
    assert!(
        endpoint
            .wait_until(Duration::from_secs(10), |hits| hits.iter().any(|h| h.path == "/later"))
            .await
    );
    let waited = submitted.elapsed();
    assert!(waited >= Duration::from_millis(1400), "delivered after {waited:?}");
}

#[tokio::test]
async fn bulk_replay_delivers_the_dead_letters_matching_a_filter() {
    let endpoint = Receiver::start(|_, _| Reply::status(500)).await;
    let bida = Bida::start("").await;
    let mut ids = Vec::new();
    for app in ["a", "a", "a", "b"] {
        ids.push(
            bida.submit(json!({"url": endpoint.url("/cb"), "max_attempts": 1, "source_app": app}))
                .await,
        );
    }
    for id in &ids {
        bida.wait_status(id, "dead", WAIT).await;
    }
    // Let the list projection see all four dead letters.
    let deadline = tokio::time::Instant::now() + WAIT;
    while bida.get("/v1/tasks?status=dead").await.1["items"]
        .as_array()
        .map_or(0, Vec::len)
        < 4
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    endpoint.set_behavior(|_, _| Reply::ok());
    let (status, outcome) = bida.post("/v1/tasks/replay", json!({"source_app": "a"})).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["matched"], 3);
    assert_eq!(outcome["retried"], 3);
    for id in &ids[..3] {
        bida.wait_status(id, "delivered", WAIT).await;
    }
    let (_, b) = bida.get(&format!("/v1/tasks/{}", ids[3])).await;
    assert_eq!(b["status"], "dead", "other apps' dead letters untouched");

    let (status, problem) = bida.post("/v1/tasks/replay", json!({"status": "delivered"})).await;
    assert_eq!(status, 400, "{problem}");
}

#[tokio::test]
async fn tasks_are_listed_and_replayed_by_endpoint_host_and_time_range() {
    let endpoint = Receiver::start(|_, _| Reply::status(500)).await;
    let bida = Bida::start("").await;
    let by_name = endpoint.url("/cb").replace("127.0.0.1", "LocalHost");
    let dead = |url: String| {
        let bida = &bida;
        async move {
            let id = bida.submit(json!({"url": url, "max_attempts": 1})).await;
            bida.wait_status(&id, "dead", WAIT).await;
            id
        }
    };
    let early = dead(by_name.clone()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = dead(by_name).await;
    let by_address = dead(endpoint.url("/cb")).await;
    let ids_of = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids_of(&bida.get("/v1/tasks?status=dead").await.1).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A host as typed (any case, with a port, or a whole URL) finds its tasks only.
    for host in ["localhost", "LOCALHOST:9", "http://localhost/x"] {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("endpoint_host", host)
            .finish();
        let (status, page) = bida.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(ids_of(&page), vec![late.clone(), early.clone()], "{host}: {page}");
    }
    let (_, page) = bida.get("/v1/tasks?endpoint_host=127.0.0.1").await;
    assert_eq!(ids_of(&page), vec![by_address.clone()], "{page}");
    for nothing in ["a/b", "%00", "[fe80::1"] {
        let (status, page) = bida.get(&format!("/v1/tasks?endpoint_host={nothing}")).await;
        assert_eq!((status, ids_of(&page).len()), (200, 0), "{nothing}: {page}");
    }

    // Replay by host and time: a dry run counts, the replay does what it counted.
    endpoint.set_behavior(|_, _| Reply::ok());
    let filter = json!({"endpoint_host": "localhost", "created_after": between, "dry_run": true});
    let (status, outcome) = bida.post("/v1/tasks/replay", filter.clone()).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        (outcome["matched"].as_u64(), outcome["retried"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(outcome["matched_ids"], json!([late]), "{outcome}");
    let (_, unchanged) = bida.get(&format!("/v1/tasks/{late}")).await;
    assert_eq!(unchanged["status"], "dead", "a dry run replays nothing");
    let (_, before) = bida
        .post(
            "/v1/tasks/replay",
            json!({"endpoint_host": "localhost", "created_before": between, "dry_run": true}),
        )
        .await;
    assert_eq!(before["matched_ids"], json!([early]), "{before}");

    let mut replay = filter;
    replay["dry_run"] = json!(false);
    let (_, outcome) = bida.post("/v1/tasks/replay", replay).await;
    assert_eq!(outcome["task_ids"], json!([late]), "{outcome}");
    assert!(outcome.get("matched_ids").is_none(), "{outcome}");
    bida.wait_status(&late, "delivered", WAIT).await;
    for untouched in [&early, &by_address] {
        let (_, task) = bida.get(&format!("/v1/tasks/{untouched}")).await;
        assert_eq!(task["status"], "dead", "{task}");
    }
}

#[tokio::test]
async fn lists_page_with_cursors() {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            bida.submit(json!({"url": endpoint.url("/cb"), "target_app": "t"}))
                .await,
        );
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while bida.get("/v1/tasks?status=delivered").await.1["items"]
        .as_array()
        .map_or(0, Vec::len)
        < 7
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/tasks?limit=3&target_app=t".to_string();
    loop {
        let (status, page) = bida.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/tasks?limit=3&target_app=t&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    let (status, _) = bida.get("/v1/tasks?cursor=garbage").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn serves_openapi_and_probes_and_stops_cleanly() {
    let mut bida = Bida::start("").await;
    let (status, doc) = bida.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/tasks/{id}/events",
        "/v1/tasks/{id}/retry",
        "/v1/tasks/{id}/cancel",
        "/v1/tasks/replay",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    assert!(doc["components"]["schemas"].get("Submission").is_some());
    let (status, health) = bida.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let status = bida.terminate().await.expect("exit status");
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
    assert!(bida.log().contains("gave held tasks back"), "{}", bida.log());
}

#[tokio::test]
async fn concurrent_resubmissions_with_one_key_are_one_task() {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    for round in 0..20 {
        let key = format!("double-click-{round}");
        let body = json!({"url": endpoint.url("/once"), "params": {"round": round}, "source_app": "shop"});
        let sends = (0..4).map(|_| {
            bida.http
                .post(format!("{}/v1/tasks", bida.url))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
        });
        let mut ids = std::collections::HashSet::new();
        for response in futures::future::join_all(sends).await {
            let response = response.unwrap();
            assert_eq!(response.status(), 202, "round {round}");
            let task: Value = response.json().await.unwrap();
            ids.insert(task["id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 1, "round {round}: one task for one key");
    }
    assert!(endpoint.wait_for_hits(20, WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(endpoint.hit_count(), 20, "each task delivered once");
}

#[tokio::test]
async fn concurrent_replays_deliver_each_dead_letter_once() {
    let endpoint = Receiver::start(|_, _| Reply::status(500)).await;
    let bida = Bida::start("").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            bida.submit(json!({"url": endpoint.url("/cb"), "max_attempts": 1, "source_app": "rp"}))
                .await,
        );
    }
    for id in &ids {
        bida.wait_status(id, "dead", WAIT).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while bida.get("/v1/tasks?status=dead&app=rp").await.1["items"]
        .as_array()
        .map_or(0, Vec::len)
        < 3
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    endpoint.set_behavior(|_, _| Reply::ok());
    let (a, b) = tokio::join!(
        bida.post("/v1/tasks/replay", json!({"source_app": "rp"})),
        bida.post("/v1/tasks/replay", json!({"source_app": "rp"})),
    );
    let retried = a.1["retried"].as_u64().unwrap() + b.1["retried"].as_u64().unwrap();
    assert_eq!(retried, 3, "{} / {}", a.1, b.1);
    for id in &ids {
        let task = bida.wait_status(id, "delivered", WAIT).await;
        let (_, history) = bida.get(&format!("/v1/tasks/{id}/events")).await;
        let replays = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_type"] == "RetryRequested")
            .count();
        assert_eq!(replays, 1, "{task}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(endpoint.hit_count(), 6, "3 failed first attempts, then 3 deliveries");
}

#[tokio::test]
async fn an_attempt_in_flight_is_neither_retried_nor_recorded_after_a_cancel() {
    let endpoint = Receiver::start(|_, _| Reply::status(503).after(Duration::from_millis(1500))).await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({"url": endpoint.url("/slow"), "backoff": {"initial_ms": 100, "jitter": 0.0}}))
        .await;
    bida.wait_status(&id, "delivering", WAIT).await;
    let (status, problem) = bida.post(&format!("/v1/tasks/{id}/retry"), json!(null)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:bida:problem:attempt-in-flight");
    let (status, task) = bida.post(&format!("/v1/tasks/{id}/cancel"), json!(null)).await;
    assert_eq!((status, task["status"].as_str()), (200, Some("cancelled")), "{task}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(endpoint.hit_count(), 1, "no attempt after the cancel");
    let (_, task) = bida.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["status"], "cancelled");
    assert_eq!(
        task["attempt_count"], 0,
        "the superseded attempt is not recorded: {task}"
    );
}

#[tokio::test]
async fn nul_characters_are_refused_or_made_harmless() {
    let endpoint = Receiver::start(|_, _| Reply::status(200).body("ok\u{0}binary")).await;
    let bida = Bida::start("").await;
    let (status, problem) = bida
        .post(
            "/v1/tasks",
            json!({"url": endpoint.url("/x"), "expect": {"body_contains": "a\u{0}b"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "expect.body_contains");
    // A response body with NUL is recorded (its excerpt cleaned), not retried forever.
    let id = bida.submit(json!({"url": endpoint.url("/x")})).await;
    let task = bida.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(task["attempts"][0]["response_excerpt"], "ok\u{FFFD}binary");
    let waiting = bida
        .submit(json!({"url": endpoint.url("/later"), "delay_ms": 60000}))
        .await;
    let (status, problem) = bida
        .post(&format!("/v1/tasks/{waiting}/cancel"), json!({"reason": "x\u{0}y"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "reason");
    // Postgres text cannot hold NUL: ids and filters carrying one name
    // nothing (they were 500s and 503s, found by schemathesis).
    for path in [
        "/v1/tasks/a%00b",
        "/v1/tasks/a%00b/events",
        "/v1/brokers/a%00b",
        "/v1/consumers/a%00b",
        "/v1/apps/a%00b",
    ] {
        let (status, problem) = bida.get(path).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
    let (status, page) = bida.get("/v1/tasks?app=a%00b&consumer_id=%00").await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{page}"
    );
    let (status, stats) = bida.get("/v1/stats?dimension=consumer&key=%00").await;
    assert_eq!(
        (status, stats["series"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{stats}"
    );
    let (status, outcome) = bida.post("/v1/tasks/replay", json!({"source_app": "\u{0}"})).await;
    assert_eq!((status, outcome["matched"].as_u64()), (200, Some(0)), "{outcome}");
}

#[tokio::test]
async fn an_operator_fixes_a_dead_tasks_request_and_delivers_it_again() {
    let receiver = Receiver::start(|hit, _| {
        if hit.path == "/broken" {
            Reply::status(404)
        } else {
            Reply::ok()
        }
    })
    .await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({"url": receiver.url("/broken"), "body": "v1", "max_attempts": 1,
                       "headers": {"authorization": "Bearer endpoint-token", "x-trace": "t"}}))
        .await;
    let dead = bida.wait_status(&id, "dead", Duration::from_secs(20)).await;
    assert_eq!(
        dead["request"]["headers"]["authorization"], "***",
        "credentials are masked in answers"
    );
    assert_eq!(dead["request"]["headers"]["x-trace"], "t");

    let (status, problem) = bida
        .post(&format!("/v1/tasks/{id}/replay"), json!({"url": "not a url"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, replayed) = bida
        .post(
            &format!("/v1/tasks/{id}/replay"),
            json!({"url": receiver.url("/fixed"), "body": "v2"}),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    let delivered = bida.wait_status(&id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(delivered["url"], receiver.url("/fixed"));
    let hit = receiver
        .hits()
        .into_iter()
        .find(|h| h.path == "/fixed")
        .expect("delivered to the fixed URL");
    assert_eq!(&hit.body[..], b"v2");
    assert_eq!(
        hit.header("authorization"),
        Some("Bearer endpoint-token"),
        "the endpoint still gets it"
    );

    // The history keeps the original and says who changed it.
    let (_, history) = bida.get(&format!("/v1/tasks/{id}/events")).await;
    let events = history["events"].as_array().unwrap();
    assert!(events[0]["payload"].to_string().contains("/broken"));
    let amended = events
        .iter()
        .find(|e| e["event_type"] == "RetryRequested")
        .expect("the amendment is an event");
    assert!(amended["payload"].to_string().contains("/fixed"));
    assert_eq!(amended["metadata"]["role"], "admin");
    assert!(
        !history.to_string().contains("endpoint-token"),
        "credentials are masked in histories"
    );

    // Only dead or cancelled tasks are replayed.
    let (status, _) = bida.post(&format!("/v1/tasks/{id}/replay"), json!(null)).await;
    assert_eq!(status, 409);
}
