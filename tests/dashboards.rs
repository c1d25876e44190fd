//! Every query the shipped Grafana dashboards (deploy/grafana/dashboards) make
//! works against Bida's real metrics: the real binary under a workload that
//! gives every panel something to show (API tasks delivered, retried, timed
//! out, dead-lettered; a RabbitMQ and a Kafka consumer), scraped by a real
//! Prometheus (the Debian package `prometheus`, or `BIDA_TEST_PROMETHEUS`),
//! then each panel's expression, with its template variables filled in, asked
//! of Prometheus's HTTP API. Any expression that errors or returns nothing
//! fails the test, and so does any metric or label name that is not in
//! docs/metrics.md.

mod support;

use bida_testkit::kafka::KafkaBroker;
use bida_testkit::rabbit::{self, TestQueue};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{created, Bida, Receiver, Reply};

/// The dashboards the deployment ships; each must exist.
const DASHBOARDS: [&str; 5] = [
    "overview.json",
    "consumer.json",
    "endpoint.json",
    "event-store.json",
    "broker.json",
];
/// How long the workload may take to settle.
const SETTLE: Duration = Duration::from_secs(60);
/// How long every query is retried before the test fails (rates need two scrapes).
const QUERIES: Duration = Duration::from_secs(60);
const API_TASKS_OK: usize = 10;
const RABBIT_MESSAGES: usize = 12;
const KAFKA_MESSAGES: usize = 12;

/// Grafana's built-in variables, as the test fills them in (longest names first).
const BUILT_INS: [(&str, &str); 6] = [
    ("__rate_interval", "1m"),
    ("__interval_ms", "15000"),
    ("__interval", "15s"),
    ("__range_ms", "300000"),
    ("__range_s", "300"),
    ("__range", "5m"),
];

#[tokio::test]
async fn every_dashboard_query_returns_data() {
    // Fail before any work when the tools or the dashboards are missing.
    let binary = prometheus_binary();
    let dashboards = Dashboards::load();
    let contract = Contract::load();
    let problems = dashboards.static_problems(&contract);
    assert!(
        problems.is_empty(),
        "the dashboards do not keep to docs/metrics.md and Grafana's conventions:\n  {}",
        problems.join("\n  ")
    );

    let endpoint = Receiver::start(|hit, nth| {
        let body = String::from_utf8_lossy(&hit.body);
        match hit.path.as_str() {
            "/flaky" if nth <= 2 => Reply::status(503),
            "/dead" => Reply::status(500).body("boom"),
            "/slow" if nth == 1 => Reply::ok().after(Duration::from_millis(1_500)),
            "/rabbit" if body.contains("dead") => Reply::status(500),
            "/rabbit" | "/kafka" if body.contains("flaky") && nth == 1 => Reply::status(503),
            _ => Reply::ok(),
        }
    })
    .await;
    // $endpoint takes the receiver's `server.address`: its host, as the
    // OpenTelemetry HTTP client conventions docs/metrics.md follows have it
    // (the port is not an attribute of the contract).
    let address = endpoint
        .url("")
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(host, _port)| host.to_string())
        .expect("the receiver's host");
    let queue = TestQueue::declare().await;
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("dashboards", 2).await;
    // Gauges read from the database refresh every half second rather than five.
    let bida = Bida::start("[telemetry]\nsample_interval_ms = 500").await;
    let prometheus = Prometheus::start(&binary, bida.url.trim_start_matches("http://")).await;

    // API tasks: delivered at once, after two failures, after a timeout, dead.
    let backoff = json!({"initial_ms": 50, "max_ms": 200, "multiplier": 2.0, "jitter": 0.0});
    let mut expected = Vec::new();
    for i in 0..API_TASKS_OK {
        let task = json!({"url": endpoint.url("/ok"), "params": {"n": i}, "source_app": "dashboards",
                          "target_app": "receiver"});
        expected.push((bida.submit(task).await, "delivered"));
    }
    for (path, status, timeout_ms) in [
        ("/flaky", "delivered", 3_000),
        ("/slow", "delivered", 300),
        ("/dead", "dead", 3_000),
    ] {
        let task = json!({"url": endpoint.url(path), "max_attempts": 3, "timeout_ms": timeout_ms,
                          "backoff": backoff, "source_app": "dashboards", "target_app": "receiver"});
        expected.push((bida.submit(task).await, status));
    }

    // A consumer on each MQ; some messages fail once, some for good.
    let policy = json!({"concurrency": 4, "max_attempts": 3,
                        "backoff": {"initial_ms": 50, "max_ms": 200, "jitter": 0.0},
                        "breaker": {"failures": 50, "open_ms": 500}});
    let rabbit_broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "dashboards-rabbitmq", "kind": "rabbitmq", "url": rabbit::url()}),
    )
    .await;
    let kafka_broker = created(
        &bida,
        "/v1/brokers",
        json!({"name": "dashboards-kafka", "kind": "kafka", "bootstrap_servers": kafka.bootstrap}),
    )
    .await;
    let rabbit_consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "dashboards-rabbitmq", "broker_id": rabbit_broker, "source": {"queue": queue.name},
               "endpoint": {"url": endpoint.url("/rabbit"), "timeout_ms": 2_000}, "policy": policy}),
    )
    .await;
    let kafka_consumer = created(
        &bida,
        "/v1/consumers",
        json!({"name": "dashboards-kafka", "broker_id": kafka_broker,
               "source": {"topics": ["dashboards"], "group": "bida-dashboards"},
               "endpoint": {"url": endpoint.url("/kafka"), "timeout_ms": 2_000}, "policy": policy}),
    )
    .await;
    for consumer in [&rabbit_consumer, &kafka_consumer] {
        wait_consumer(&bida, consumer, "running", |c| c["state"] == "running").await;
    }
    let body = |i: usize| {
        let kind = match i % 6 {
            0 => "flaky",
            5 => "dead",
            _ => "plain",
        };
        format!(r#"{{"n":{i},"kind":"{kind}"}}"#).into_bytes()
    };
    queue
        .publish((0..RABBIT_MESSAGES).map(|i| (Some(format!("m{i}")), body(i))))
        .await;
    kafka
        .produce(
            "dashboards",
            (0..KAFKA_MESSAGES).map(|i| (Some(format!("k{}", i % 4)), body(i + 1))),
        )
        .await;

    // The workload settles: every task and message reached its end.
    for (id, status) in &expected {
        bida.wait_status(id, status, SETTLE).await;
    }
    for (consumer, messages) in [(&rabbit_consumer, RABBIT_MESSAGES), (&kafka_consumer, KAFKA_MESSAGES)] {
        wait_consumer(&bida, consumer, &format!("{messages} messages ended"), |c| {
            let counters = &c["counters"];
            let ended = counters["delivered"].as_u64().unwrap_or(0) + counters["dead"].as_u64().unwrap_or(0);
            counters["consumed"].as_u64() >= Some(messages as u64) && ended >= messages as u64
        })
        .await;
    }
    println!("workload settled; asking Prometheus");

    // Every query, with every value its variables take here, until all have data.
    let mut values = BTreeMap::new();
    values.insert(
        "consumer".to_string(),
        vec![rabbit_consumer.clone(), kafka_consumer.clone()],
    );
    values.insert("endpoint".to_string(), vec![address.clone()]);
    let deadline = tokio::time::Instant::now() + QUERIES;
    let mut round = 0;
    let report = loop {
        round += 1;
        let report = dashboards.evaluate(&prometheus, &values).await;
        if report.failures.is_empty() || tokio::time::Instant::now() > deadline {
            break report;
        }
        println!(
            "round {round}: {} of {} without data yet, first: {}",
            report.failures.len(),
            report.failures.len() + report.passed.len(),
            report.failures[0]
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for line in &report.passed {
        println!("ok   {line}");
    }
    let problems = report.failures;
    if !problems.is_empty() {
        panic!(
            "{} of {} dashboard queries failed after {round} round(s) over {:?} \
             (consumers: rabbitmq {rabbit_consumer}, kafka {kafka_consumer}; endpoint {address}):\n  {}\n\
             metric names Prometheus has: {}",
            problems.len(),
            problems.len() + report.passed.len(),
            QUERIES,
            problems.join("\n  "),
            prometheus.metric_names().await.join(", ")
        );
    }
    println!(
        "all {} dashboard queries returned data (round {round})",
        report.passed.len()
    );
}

// ------------------------------------------------------------------ workload

async fn wait_consumer(bida: &Bida, id: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (_, consumer) = bida.get(&format!("/v1/consumers/{id}")).await;
        if done(&consumer) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer {id} never got to: {what}: {consumer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- Prometheus

fn prometheus_binary() -> PathBuf {
    const INSTALL: &str = "install the Debian package `prometheus` (apt-get install prometheus; \
                           `.ci/run` does) or set BIDA_TEST_PROMETHEUS to a prometheus binary";
    if let Some(path) = std::env::var_os("BIDA_TEST_PROMETHEUS") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BIDA_TEST_PROMETHEUS={} is not a file: {INSTALL}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("prometheus"))
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no `prometheus` binary on the PATH nor at /usr/bin/prometheus: {INSTALL}"))
}

/// A Prometheus of the test's own scraping one Bida every second; killed
/// (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(binary: &Path, target: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("bida-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("Prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: bida\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write Prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("Prometheus log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", binary.display()));
        let mut prometheus = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        for _ in 0..300 {
            if let Ok(response) = self.http.get(format!("{}/-/ready", self.url)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of an API answer, or what went wrong.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("reading the answer: {e}"))?;
        let body: Value = serde_json::from_str(&text).map_err(|_| format!("HTTP {status}: {text}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or(&text)
            ));
        }
        Ok(body["data"].clone())
    }

    /// An instant query's series (a scalar counts as one).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            _ => Ok(vec![data["result"].clone()]),
        }
    }

    /// Why the Bida target is not up, if it is not.
    async fn target_health(&self) -> Option<String> {
        let data = self.api("/api/v1/targets", &[("state", "active")]).await.ok()?;
        let target = data["activeTargets"].as_array()?.first()?.clone();
        (target["health"] != "up").then(|| {
            format!(
                "the scrape of {} is {}: {}",
                target["scrapeUrl"].as_str().unwrap_or("?"),
                target["health"].as_str().unwrap_or("?"),
                target["lastError"].as_str().unwrap_or("")
            )
        })
    }

    async fn metric_names(&self) -> Vec<String> {
        self.api("/api/v1/label/__name__/values", &[])
            .await
            .ok()
            .and_then(|data| data.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|name| name.as_str().map(String::from))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "---- prometheus log (last lines) ----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- dashboards

/// One panel target.
struct Query {
    dashboard: String,
    panel: String,
    expr: String,
    /// The template variables of its dashboard.
    variables: BTreeSet<String>,
}

/// A `label_values(metric, label)` template variable.
struct Variable {
    dashboard: String,
    name: String,
    metric: String,
    label: String,
}

#[derive(Default)]
struct Dashboards {
    queries: Vec<Query>,
    variables: Vec<Variable>,
    /// Problems found while reading (missing files, unsupported variables...).
    problems: Vec<String>,
    /// Datasources that are not `prometheus`.
    datasources: Vec<String>,
}

#[derive(Default)]
struct Report {
    passed: Vec<String>,
    failures: Vec<String>,
}

impl Dashboards {
    fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards");
        let mut files: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        let mut dashboards = Self::default();
        for name in DASHBOARDS {
            if !files.contains(name) {
                dashboards
                    .problems
                    .push(format!("{name}: missing from {}", dir.display()));
            }
        }
        for name in std::mem::take(&mut files) {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read dashboard");
            let board: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            dashboards.read(&name, &board);
        }
        assert!(!dashboards.queries.is_empty(), "no panel queries in {}", dir.display());
        dashboards
    }

    fn read(&mut self, name: &str, board: &Value) {
        let mut variables = BTreeSet::new();
        for variable in board["templating"]["list"].as_array().into_iter().flatten() {
            let var = variable["name"].as_str().unwrap_or("?").to_string();
            variables.insert(var.clone());
            if variable["type"] != "query" {
                self.problems.push(format!(
                    "{name}: variable ${var} is of type {}, which this test cannot fill in",
                    variable["type"]
                ));
                continue;
            }
            self.datasource(name, &format!("variable ${var}"), &variable["datasource"]);
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .unwrap_or_default()
                .trim();
            match query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|args| args.rsplit_once(','))
            {
                Some((metric, label)) => self.variables.push(Variable {
                    dashboard: name.to_string(),
                    name: var,
                    metric: metric.trim().to_string(),
                    label: label.trim().to_string(),
                }),
                None => self.problems.push(format!(
                    "{name}: variable ${var}: only label_values(metric, label) queries are supported, not {query:?}"
                )),
            }
        }
        let mut panels = Vec::new();
        all_panels(&board["panels"], &mut panels);
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            if panel["type"] == "row" {
                continue;
            }
            self.datasource(name, &format!("panel {title:?}"), &panel["datasource"]);
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                self.problems.push(format!("{name}: panel {title:?} has no query"));
            }
            for target in targets {
                self.datasource(name, &format!("panel {title:?}"), &target["datasource"]);
                match target["expr"].as_str() {
                    Some(expr) if !expr.trim().is_empty() => self.queries.push(Query {
                        dashboard: name.to_string(),
                        panel: title.to_string(),
                        expr: expr.to_string(),
                        variables: variables.clone(),
                    }),
                    _ => self
                        .problems
                        .push(format!("{name}: panel {title:?} has a target without an expr")),
                }
            }
        }
    }

    fn datasource(&mut self, dashboard: &str, place: &str, datasource: &Value) {
        if !datasource.is_null() && datasource["uid"] != "prometheus" {
            self.datasources.push(format!(
                "{dashboard}: {place}: datasource {datasource}, not uid `prometheus`"
            ));
        }
    }

    /// What can be told without Prometheus: names outside the contract,
    /// unknown variables, foreign datasources.
    fn static_problems(&self, contract: &Contract) -> Vec<String> {
        let mut problems = self.problems.clone();
        problems.extend(self.datasources.iter().cloned());
        for query in &self.queries {
            let place = format!("{} / {:?}: {}", query.dashboard, query.panel, query.expr);
            for name in identifiers(&query.expr) {
                if !contract.names.contains(&name) {
                    problems.push(format!("{place}: `{name}` is not a metric or label of docs/metrics.md"));
                }
            }
            for var in variables_in(&query.expr) {
                if !query.variables.contains(&var) && !BUILT_INS.iter().any(|(name, _)| *name == var) {
                    problems.push(format!("{place}: ${var} is not a variable of the dashboard"));
                }
            }
        }
        for variable in &self.variables {
            for name in identifiers(&variable.metric)
                .into_iter()
                .chain([variable.label.clone()])
            {
                if !contract.names.contains(&name) {
                    problems.push(format!(
                        "{}: variable ${}: `{name}` is not a metric or label of docs/metrics.md",
                        variable.dashboard, variable.name
                    ));
                }
            }
        }
        problems
    }

    /// Asks Prometheus every query with every combination of its variables'
    /// values, and every variable's query.
    async fn evaluate(&self, prometheus: &Prometheus, values: &BTreeMap<String, Vec<String>>) -> Report {
        let mut report = Report::default();
        if let Some(down) = prometheus.target_health().await {
            report.failures.push(down);
        }
        for variable in &self.variables {
            let place = format!(
                "{}: variable ${} = label_values({}, {})",
                variable.dashboard, variable.name, variable.metric, variable.label
            );
            let expected = values.get(&variable.name).cloned().unwrap_or_default();
            if expected.is_empty() {
                report.failures.push(format!(
                    "{place}: the test has no value for ${}; teach tests/dashboards.rs one",
                    variable.name
                ));
                continue;
            }
            let expr = format!("count by ({}) ({})", variable.label, variable.metric);
            match prometheus.query(&expr).await {
                Err(error) => report.failures.push(format!("{place}: {error}")),
                Ok(series) => {
                    let found: BTreeSet<String> = series
                        .iter()
                        .filter_map(|s| s["metric"][&variable.label].as_str().map(String::from))
                        .collect();
                    let missing: Vec<&String> = expected.iter().filter(|v| !found.contains(*v)).collect();
                    if missing.is_empty() {
                        report.passed.push(format!("{place}: {found:?}"));
                    } else {
                        report
                            .failures
                            .push(format!("{place}: lacks {missing:?} (it has {found:?})"));
                    }
                }
            }
        }
        for query in &self.queries {
            for expr in expand(&query.expr, values) {
                let expr = match expr {
                    Ok(expr) => expr,
                    Err(missing) => {
                        report.failures.push(format!(
                            "{} / {:?}: {}: the test has no value for ${missing}",
                            query.dashboard, query.panel, query.expr
                        ));
                        continue;
                    }
                };
                let place = format!("{} / {:?}: {expr}", query.dashboard, query.panel);
                match prometheus.query(&expr).await {
                    Err(error) => report.failures.push(format!("{place}: {error}")),
                    Ok(series) if series.is_empty() => report.failures.push(format!("{place}: no data")),
                    Ok(series) => report.passed.push(format!("{place}: {} series", series.len())),
                }
            }
        }
        report
    }
}

/// The panels in their order, those of collapsed rows included.
fn all_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        all_panels(&panel["panels"], out);
    }
}

/// The expression once per combination of its variables' values; `Err` names
/// a variable without values.
fn expand(expr: &str, values: &BTreeMap<String, Vec<String>>) -> Vec<Result<String, String>> {
    let mut exprs = vec![substitute(expr, |name| {
        BUILT_INS
            .iter()
            .find(|(built_in, _)| *built_in == name)
            .map(|(_, value)| value.to_string())
    })];
    for var in variables_in(expr) {
        if BUILT_INS.iter().any(|(name, _)| *name == var) {
            continue;
        }
        let Some(choices) = values.get(&var).filter(|choices| !choices.is_empty()) else {
            return vec![Err(var)];
        };
        exprs = exprs
            .iter()
            .flat_map(|expr| {
                choices
                    .iter()
                    .map(|value| substitute(expr, |name| (name == var).then(|| value.clone())))
            })
            .collect();
    }
    exprs.into_iter().map(Ok).collect()
}

/// Replaces `$name` and `${name}` where `value` knows the name.
fn substitute(expr: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = variable_at(after);
        match value(name) {
            Some(v) if !name.is_empty() => {
                out.push_str(&v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variable name right after a `$`, and how many bytes it spans.
fn variable_at(after: &str) -> (&str, usize) {
    if let Some(braced) = after.strip_prefix('{') {
        if let Some(end) = braced.find('}') {
            let name = braced[..end].split(':').next().unwrap_or_default();
            return (name, end + 2);
        }
    }
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    (&after[..end], end)
}

fn variables_in(expr: &str) -> BTreeSet<String> {
    expr.match_indices('$')
        .map(|(at, _)| variable_at(&expr[at + 1..]).0.to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Metric and label names in a PromQL expression: identifiers outside string
/// literals, durations and variables, other than functions, aggregations
/// (followed by `(`) and keywords.
fn identifiers(expr: &str) -> BTreeSet<String> {
    // Aggregations may be followed by `by (...)` rather than `(`.
    const KEYWORDS: [&str; 24] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string literal (label values, regexes).
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            // A range or subquery duration.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '$' {
            i += 1 + variable_at(&expr.chars().skip(i + 1).collect::<String>()).1;
        } else if c.is_ascii_digit() || c == '.' {
            // A number (with its exponent or unit letters).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if next != Some(&'(') && !KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) && name != "nan" {
                names.insert(name);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric and label names docs/metrics.md promises, as Prometheus spells them.
struct Contract {
    names: BTreeSet<String>,
}

impl Contract {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Labels every scraped series has, and the histogram bucket bound.
        let mut names: BTreeSet<String> = ["instance", "job", "le"].map(String::from).into();
        for line in text.lines().filter(|line| line.starts_with('|')) {
            let columns: Vec<&str> = line.split('|').map(str::trim).collect();
            // | OpenTelemetry name | Prometheus name | kind, unit | attributes | what |
            if columns.len() < 6 {
                continue;
            }
            let Some(metric) = quoted(columns[2]).into_iter().next() else {
                continue;
            };
            if columns[3].contains("histogram") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{metric}{suffix}"));
                }
            }
            names.insert(metric);
            for attribute in quoted(columns[4]).into_iter().filter(|a| a.contains('.')) {
                names.insert(attribute.replace('.', "_"));
            }
        }
        assert!(
            names.len() > 20,
            "could not read the metrics table of {}",
            path.display()
        );
        Self { names }
    }
}

/// The `backquoted` words of a Markdown cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(String::from).collect()
}

#[test]
fn the_expression_helpers_do_what_the_test_relies_on() {
    let expr = r#"sum by (bida_outcome) (rate(bida_delivery_attempts_total{bida_consumer="$consumer", x=~"a.b"}[$__rate_interval])) / 1e3"#;
    assert_eq!(
        identifiers(expr),
        ["bida_consumer", "bida_delivery_attempts_total", "bida_outcome", "x"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        variables_in(expr),
        ["__rate_interval", "consumer"].map(String::from).into()
    );
    let mut values = BTreeMap::new();
    values.insert("consumer".to_string(), vec!["a".to_string(), "b".to_string()]);
    let expanded: Vec<String> = expand("m{c=\"${consumer}\"}[$__rate_interval] $__range", &values)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(expanded, ["m{c=\"a\"}[1m] 5m", "m{c=\"b\"}[1m] 5m"]);
    assert_eq!(expand("m{e=\"$endpoint\"}", &values), [Err("endpoint".to_string())]);
    let contract = Contract::load();
    assert!(contract.names.contains("http_client_request_duration_seconds_bucket"));
    assert!(contract.names.contains("messaging_destination_partition_id"));
    assert!(contract.names.contains("bida_consumer_lag"));
}
