//! Monitoring end to end: after a known workload every read model and
//! `/metrics` shows exactly its numbers, a rebuild from zero gives the same
//! read models, and OTLP export carries each delivery's span in the trace the
//! endpoint saw.

mod support;

use bida_testkit::otlp::OtlpReceiver;
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, rabbit_broker, until, Bida, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(60);

/// Gauges refreshed often, so the test need not wait.
const TELEMETRY: &str = "[telemetry]\nsample_interval_ms = 200\n";

/// Sum of a metric's samples whose labels include every `(name, value)` of `with`.
fn metric_sum(text: &str, metric: &str, with: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            if name != metric {
                return None;
            }
            let all = with
                .iter()
                .all(|(label, wanted)| labels.split(',').any(|pair| pair == format!("{label}=\"{wanted}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn metrics_text(bida: &Bida) -> String {
    bida.http
        .get(format!("{}/metrics", bida.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The whole-range totals of `/v1/stats` for one dimension value.
async fn totals(bida: &Bida, dimension: &str, key: &str) -> Value {
    let (status, answer) = bida
        .get(&format!(
            "/v1/stats?dimension={dimension}&key={key}&step=1m&from=2020-01-01T00:00:00Z&to=2020-01-05T00:00:00Z"
        ))
        .await;
    // That range is empty: statistics are kept by event time.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["series"], json!([]), "{answer}");
    let (status, answer) = bida
        .get(&format!(
            "/v1/stats?dimension={dimension}&key={}&step=1h",
            urlencode(key)
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let series = answer["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{answer}");
    series[0]["total"].clone()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn counts(submitted: i64, attempts: i64, delivered: i64, failed: i64, retried: i64, dead: i64) -> Value {
    json!({"submitted": submitted, "attempts": attempts, "delivered": delivered, "failed": failed,
           "retried": retried, "timeouts": 0, "dead": dead})
}

/// The latency fields vary; the counts must not.
fn without_latency(mut total: Value) -> Value {
    let object = total.as_object_mut().expect("object");
    object.remove("latency_sum_ms");
    object.remove("latency_max_ms");
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn read_models_and_metrics_show_exactly_the_workload() {
    // /ok: delivered at once; /flaky: fails each message's first call; /down: always 500.
    let endpoint = Receiver::start(|hit, nth| match hit.path.as_str() {
        "/flaky" if nth == 1 => Reply::status(500),
        "/down" => Reply::status(500),
        _ => Reply::ok(),
    })
    .await;
    let bida = Bida::start(TELEMETRY).await;
    let backoff = json!({"initial_ms": 50, "max_ms": 200, "jitter": 0.0});
    let mut ids = Vec::new();
    for (path, n, source, target, attempts) in [
        ("/ok", 10, "shop", "orders", 5),
        ("/flaky", 4, "shop", "billing", 5),
        ("/down", 3, "crm", "billing", 2),
    ] {
        for _ in 0..n {
            ids.push(
                bida.submit(
                    json!({"url": endpoint.url(path), "source_app": source, "target_app": target,
                                   "max_attempts": attempts, "backoff": backoff}),
                )
                .await,
            );
        }
    }
    let settled = until(WAIT, || async {
        let overview = bida.get("/v1/stats/overview").await.1;
        overview["tasks"]["by_status"]["delivered"] == 14 && overview["tasks"]["by_status"]["dead"] == 3
    })
    .await;
    assert!(settled, "{}", bida.get("/v1/stats/overview").await.1);

    // The overview: tasks by status and per app.
    let (_, overview) = bida.get("/v1/stats/overview").await;
    assert_eq!(overview["tasks"]["total"], 17, "{overview}");
    assert_eq!(overview["app_count"], 4, "{overview}");
    let app = |name: &str| {
        overview["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["app"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("app {name} missing: {overview}"))
    };
    assert_eq!(app("shop")["sent"]["total"], 14);
    assert_eq!(app("shop")["sent"]["by_status"]["delivered"], 14);
    assert_eq!(
        app("billing")["received"]["by_status"],
        json!({"delivered": 4, "dead": 3})
    );
    assert_eq!(app("crm")["sent"]["by_status"]["dead"], 3);

    // Statistics: attempts = 10 + 4×2 + 3×2; failures = 4 + 3×2; retries = 4 + 3.
    let everything = counts(17, 24, 14, 10, 7, 3);
    assert_eq!(without_latency(totals(&bida, "all", "").await), everything);
    let endpoint_key = format!("http://{}", endpoint.url("").trim_start_matches("http://"));
    assert_eq!(
        without_latency(totals(&bida, "endpoint", &endpoint_key).await),
        everything
    );
    assert_eq!(
        without_latency(totals(&bida, "source_app", "shop").await),
        counts(14, 18, 14, 4, 4, 0)
    );
    assert_eq!(
        without_latency(totals(&bida, "target_app", "billing").await),
        counts(7, 14, 4, 10, 7, 3)
    );

    // /metrics says the same (gauges within a sample interval).
    let gauges_ready = until(Duration::from_secs(10), || async {
        let text = metrics_text(&bida).await;
        metric_sum(&text, "bida_tasks", &[("bida_status", "dead")]) == 3.0
            && metric_sum(&text, "bida_tasks", &[("bida_status", "delivered")]) == 14.0
    })
    .await;
    let text = metrics_text(&bida).await;
    assert!(gauges_ready, "{text}");
    assert_eq!(metric_sum(&text, "bida_tasks_submitted_total", &[]), 17.0, "{text}");
    assert_eq!(
        metric_sum(&text, "bida_tasks_submitted_total", &[("bida_source_app", "crm")]),
        3.0
    );
    assert_eq!(
        metric_sum(&text, "bida_tasks_finished_total", &[("bida_outcome", "delivered")]),
        14.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "bida_tasks_finished_total",
            &[("bida_outcome", "dead"), ("bida_target_app", "billing")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(&text, "bida_delivery_attempts_total", &[("bida_outcome", "success")]),
        14.0
    );
    assert_eq!(
        metric_sum(&text, "bida_delivery_attempts_total", &[("bida_outcome", "failure")]),
        10.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "http_client_request_duration_seconds_count",
            &[("http_response_status_code", "500")]
        ),
        10.0
    );
    assert_eq!(
        metric_sum(&text, "http_client_request_duration_seconds_count", &[]),
        24.0
    );
    assert!(
        metric_sum(
            &text,
            "bida_events_appended_total",
            &[("bida_aggregate_type", "callback_task")]
        ) >= 17.0 + 24.0
    );
    assert_eq!(
        metric_sum(&text, "bida_projection_lag", &[("bida_projection", "task_list")]),
        0.0
    );
    assert!(metric_sum(&text, "process_memory_usage_bytes", &[]) > 0.0);
    assert_eq!(endpoint.hit_count(), 24);

    // The node list shows this node, alive, with its report.
    let (_, nodes) = bida.get("/v1/nodes").await;
    let node = &nodes["items"].as_array().expect("nodes")[0];
    assert_eq!(node["alive"], true, "{nodes}");
    assert!(node["report"]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{nodes}");

    // A rebuild from position 0 gives the same read models.
    let before = (
        bida.get("/v1/stats/overview").await.1,
        bida.get("/v1/stats?dimension=target_app&step=1m").await.1["series"].clone(),
        bida.get("/v1/tasks?limit=100").await.1["items"]
            .as_array()
            .map(Vec::len),
    );
    let rebuilt = std::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["projections", "rebuild", "task_list", "--database-url", &bida.db_url])
        .output()
        .expect("run bida projections rebuild");
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    let after = (
        bida.get("/v1/stats/overview").await.1,
        bida.get("/v1/stats?dimension=target_app&step=1m").await.1["series"].clone(),
        bida.get("/v1/tasks?limit=100").await.1["items"]
            .as_array()
            .map(Vec::len),
    );
    assert_eq!(before, after);
    // The running node folds the replayed events too, without counting them again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics_text(&bida).await;
    assert_eq!(metric_sum(&text, "bida_tasks_submitted_total", &[]), 17.0, "{text}");
    assert_eq!(metric_sum(&text, "bida_tasks_finished_total", &[]), 17.0, "{text}");
    assert_eq!(ids.len(), 17);
}

#[tokio::test(flavor = "multi_thread")]
async fn statistics_ranges_are_cut_to_what_is_kept_and_carried() {
    let bida = Bida::start("").await;
    for (query, from) in [
        // Statistics are kept 7 days: a range starts at most 8 days back.
        (
            "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "2026-02-21T00:00:00Z",
        ),
        // 100 series of 1-minute points: 200 points each at most.
        (
            "dimension=consumer&step=1m&limit=100&from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z",
            "2026-01-07T20:41:00Z",
        ),
        // An empty range has no points.
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ),
    ] {
        let (status, answer) = bida.get(&format!("/v1/stats?{query}")).await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(answer["from"], from, "{query}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_statistics_queries_are_problems() {
    let bida = Bida::start("").await;
    for (query, fragment) in [
        ("dimension=planet", "dimension `planet` is unknown"),
        ("step=5m", "step `5m` is unknown"),
        ("limit=0", "limit must be between 1 and 100"),
        ("from=yesterday", "from"),
    ] {
        let response = bida
            .http
            .get(format!("{}/v1/stats?{query}", bida.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let problem: Value = response.json().await.expect("problem");
        assert!(
            problem["detail"].as_str().unwrap_or_default().contains(fragment),
            "{query}: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_carries_each_delivery_span_in_the_trace_the_endpoint_saw() {
    let collector = OtlpReceiver::start().await;
    let endpoint = Receiver::ok().await;
    let bida = Bida::start(&format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nexport_interval_ms = 300\n",
        collector.url()
    ))
    .await;
    let queue = TestQueue::declare().await;
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
            json!({"name": "traced", "broker_id": broker["id"], "source": {"queue": queue.name},
                   "endpoint": {"url": endpoint.url("/hook")}}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    let consumer_id = consumer["id"].as_str().unwrap().to_string();

    // A message produced inside a trace: its delivery joins that trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    queue
        .publish_with_headers(
            "traced-1",
            b"{}",
            &[("traceparent", &format!("00-{trace_id}-{producer_span}-01"))],
        )
        .await;
    // A task from the API starts a trace of its own.
    bida.submit(json!({"url": endpoint.url("/api"), "source_app": "shop"}))
        .await;
    assert!(endpoint.wait_for_hits(2, WAIT).await, "{}", bida.log());

    let hits = endpoint.hits();
    let consumer_hit = hits.iter().find(|h| h.path == "/hook").expect("consumer delivery");
    let sent = consumer_hit
        .header("traceparent")
        .expect("traceparent sent")
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], trace_id, "the endpoint is in the message's trace");
    assert_ne!(parts[2], producer_span, "the attempt is a span of its own");
    let api_hit = hits.iter().find(|h| h.path == "/api").expect("API delivery");
    let api_trace = api_hit.header("traceparent").expect("traceparent on API tasks too");
    let api_trace_id = api_trace.split('-').nth(1).unwrap_or_default().to_string();
    assert_eq!(api_trace_id.len(), 32, "{api_trace}");
    assert_ne!(api_trace_id, "0".repeat(32));

    let exported = eventually(Duration::from_secs(30), || {
        let spans = collector.spans();
        spans.iter().any(|s| s.trace_id == trace_id) && spans.iter().any(|s| s.trace_id == api_trace_id)
    })
    .await;
    assert!(exported, "spans received: {:?}", collector.spans());
    let spans = collector.spans();
    let span = spans.iter().find(|s| s.trace_id == trace_id).unwrap();
    assert_eq!(span.name, "deliver");
    assert_eq!(span.span_id, parts[2], "the span the endpoint was told of");
    assert_eq!(span.parent_span_id, producer_span);
    assert_eq!(span.service_name.as_deref(), Some("bida"));
    let attribute = |name: &str| span.attributes.get(name).cloned().unwrap_or_default();
    assert_eq!(attribute("bida.consumer"), consumer_id);
    assert_eq!(attribute("server.address"), "127.0.0.1");
    assert_eq!(attribute("url.full"), endpoint.url("/hook"));
    assert_eq!(attribute("bida.attempt"), "1");
    assert_eq!(attribute("bida.outcome"), "success");
    assert_eq!(attribute("http.response.status_code"), "200");

    // The consumer's status shows its rate over the last minute.
    let rated = until(Duration::from_secs(10), || async {
        let view = bida.get(&format!("/v1/consumers/{consumer_id}")).await.1;
        view["counters"]["delivered"] == 1 && view["counters"]["delivered_per_sec"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(rated, "{}", bida.get(&format!("/v1/consumers/{consumer_id}")).await.1);

    // Metrics are exported too, with the conventions' attributes.
    let metrics = eventually(Duration::from_secs(30), || {
        !collector.metric_points("bida.delivery.attempts").is_empty()
            && !collector.metric_points("messaging.client.consumed.messages").is_empty()
    })
    .await;
    assert!(metrics, "no metrics exported");
    let consumed = collector.metric_points("messaging.client.consumed.messages");
    assert!(
        consumed.iter().any(|p| p.get("bida.consumer") == Some(&consumer_id)
            && p.get("messaging.system").map(String::as_str) == Some("rabbitmq")
            && p.get("messaging.destination.name") == Some(&queue.name)),
        "{consumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_broker_status_shows_its_nodes_figures() {
    let management = std::env::var("BIDA_TEST_RABBIT_MANAGEMENT")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672/".to_string());
    let queue = TestQueue::declare().await;
    queue.publish([(Some("a".to_string()), b"1".to_vec())]).await;
    let bida = Bida::start("").await;
    let (status, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url(), "management_url": management}),
        )
        .await;
    assert_eq!(status, 201, "{broker}");
    // The management plugin collects node figures every few seconds and can
    // fall behind on a loaded machine: until then it lists the node without them.
    let path = format!("/v1/brokers/{}", broker["id"].as_str().unwrap());
    until(Duration::from_secs(60), || async {
        bida.get(&path).await.1["rabbitmq"]["nodes"][0]["mem_used"].is_i64()
    })
    .await;
    let (status, view) = bida.get(&path).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["health"]["reachable"], true, "{view}");
    let queues = view["queues"].as_array().expect("queues");
    let ours = queues.iter().find(|q| q["name"] == queue.name.as_str());
    assert!(ours.is_some(), "the management API lists every queue: {view}");
    let cluster = &view["rabbitmq"];
    assert!(cluster["version"].as_str().is_some_and(|v| !v.is_empty()), "{view}");
    assert!(cluster["queues"].as_i64().unwrap_or(0) >= 1, "{view}");
    let node = &cluster["nodes"][0];
    assert_eq!(node["running"], true, "{view}");
    for figure in ["mem_used", "mem_limit", "disk_free", "fd_total"] {
        assert!(node[figure].as_i64().unwrap_or(0) > 0, "{figure}: {view}");
    }
}

/// The consumer gauges, read for all consumers at once: its state as the API
/// shows it, and the queue's ready messages as its lag while it is paused.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_gauges_show_each_consumers_state_and_lag() {
    let queue = TestQueue::declare().await;
    let endpoint = Receiver::start(|_, _| Reply::ok()).await;
    let bida = Bida::start(TELEMETRY).await;
    let broker = rabbit_broker(&bida).await;
    let consumer = support::created(
        &bida,
        "/v1/consumers",
        json!({"name": "gauged", "broker_id": broker, "source": {"queue": queue.name},
               "endpoint": {"url": endpoint.url("/g")}}),
    )
    .await;
    bida.every_node_running(&consumer).await;
    let state = |text: &str, wanted: &str| {
        metric_sum(
            text,
            "bida_consumer_state",
            &[("bida_consumer", &consumer), ("bida_state", wanted)],
        )
    };
    let running = until(WAIT, || async { state(&metrics_text(&bida).await, "running") == 1.0 }).await;
    assert!(running, "{}", metrics_text(&bida).await);

    let (status, paused) = bida.post(&format!("/v1/consumers/{consumer}/pause"), json!(null)).await;
    assert_eq!(status, 200, "{paused}");
    bida.consumer_until(&consumer, WAIT, |c| c["state"] == "paused").await;
    queue
        .publish((0..5).map(|n| (Some(format!("m{n}")), n.to_string().into_bytes())))
        .await;
    // The node reads the queue's backlog every 10 s and reports it every 2 s.
    let shown = until(WAIT, || async {
        let text = metrics_text(&bida).await;
        state(&text, "paused") == 1.0
            && state(&text, "running") == 0.0
            && metric_sum(&text, "bida_consumer_lag", &[("bida_consumer", &consumer)]) == 5.0
    })
    .await;
    let text = metrics_text(&bida).await;
    assert!(shown, "{text}");
    assert!(endpoint.hits().is_empty(), "paused before anything was published");
}
