//! Runs the real `bida` binary for end-to-end tests: its own database, a free
//! port, a config file; kill -9 and restart on demand.

#![allow(dead_code)]

use bida_testkit::TestDatabase;
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(unused_imports)]
pub use bida_testkit::{Hit, Receiver, Reply};

/// Fast timings so tests do not wait on production defaults.
pub const FAST: &str = r#"
[store]
pool_size = 4
[scheduler]
poll_interval_ms = 50
heartbeat_interval_ms = 300
node_ttl_ms = 1500
[projections]
idle_ms = 20
"#;

/// The admin key every test node is started with (`auth.bootstrap_admin_key`).
pub const ADMIN_KEY: &str = "bida_test_admin_key_for_the_test_suite_only";

/// Seals signing secrets in the test nodes' event stores (32 bytes, base64).
pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Loopback endpoints (the tests' receivers) are opened on purpose.
pub const ALLOW_LOOPBACK: &str = r#"["127.0.0.0/8", "::1/128"]"#;

/// An HTTP client for Bida's API that sends `key` (none: no Authorization).
pub fn api_client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header value"),
        );
    }
    // Idle connections are dropped before the server's keep-alive (5 s)
    // would close them: reusing one the server is closing fails the
    // request (hyper's IncompleteMessage), which is the client's race,
    // not Bida's.
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

pub struct Bida {
    child: Option<Child>,
    pub url: String,
    /// The gRPC interface, `http://127.0.0.1:PORT` (a new port at each start).
    pub grpc_url: String,
    /// The database, owned by the first node started on it.
    db: Option<TestDatabase>,
    pub db_url: String,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    /// Started as the README's quick start does: no store given, so the
    /// embedded store in `./bida-data` of its working directory.
    quick_start: bool,
    pub http: reqwest::Client,
    /// Environment over the defaults (`None` removes a variable).
    env: Vec<(String, Option<String>)>,
}

/// A directory of the node's own. Not a counter: tests run in parallel
/// threads, and tests/embedded.rs holds several copies of this module.
fn own_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "bida-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// The port a node's log says it listens on. Nodes pick their own port the
/// first time (`:0`): a port found free here and handed over could be taken
/// by a parallel test before the node binds it, and the other test's node
/// would then answer this test's requests.
fn port_in_log(log: &str) -> Option<u16> {
    port_after(log, "listening on http://127.0.0.1:")
}

fn port_after(log: &str, mark: &str) -> Option<u16> {
    let rest = &log[log.rfind(mark)? + mark.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// An event as the store holds it.
#[derive(Debug, sqlx::FromRow)]
pub struct Recorded {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
}

/// The store tests run against: PostgreSQL, or the embedded store in the
/// `embedded` test binary (tests/embedded.rs) or when `BIDA_TEST_STORE=embedded`.
pub fn embedded() -> bool {
    let binary = std::env::current_exe().ok();
    let name = binary
        .as_deref()
        .and_then(|path| path.file_name())
        .and_then(|name| name.to_str());
    name.is_some_and(|name| name.starts_with("embedded-"))
        || std::env::var("BIDA_TEST_STORE").as_deref() == Ok("embedded")
}

/// For a test of what only PostgreSQL does (several nodes, partitions):
/// true, and a note, when the run is against the embedded store.
pub fn postgres_only(what: &str) -> bool {
    if embedded() {
        println!("PostgreSQL only, not run against the embedded store: {what}");
    }
    embedded()
}

impl Bida {
    /// Starts bida with `FAST` plus `extra` TOML, on a new database.
    pub async fn start(extra: &str) -> Self {
        Self::start_with_env(extra, &[]).await
    }

    /// [`Bida::start`] with environment variables over the tests' defaults
    /// (the bootstrap key, loopback allowed); `None` removes one.
    pub async fn start_with_env(extra: &str, env: &[(&str, Option<&str>)]) -> Self {
        let db = TestDatabase::reserve();
        let url = db.url().to_string();
        Self::launch_new(Some(db), url, extra, env).await
    }

    /// `bida serve` with no store given, as the README's quick start runs it
    /// (its working directory a fresh one); `extra` TOML as for [`Bida::start`].
    pub async fn quick_start(extra: &str) -> Self {
        let mut bida = Self::unstarted(
            None,
            String::new(),
            extra,
            &[("BIDA_DATABASE_URL", None), ("BIDA_DATA_DIR", None)],
        );
        bida.quick_start = true;
        bida.launch().await;
        bida
    }

    /// A node on the PostgreSQL database `db` (which it owns from now on).
    pub async fn start_on_postgres(db: TestDatabase, extra: &str) -> Self {
        assert!(!embedded(), "a PostgreSQL node in a run against the embedded store");
        let url = db.url().to_string();
        Self::launch_new(Some(db), url, extra, &[]).await
    }

    /// Another node on the same database (PostgreSQL: see [`postgres_only`]).
    pub async fn join(&self, extra: &str) -> Self {
        assert!(!embedded(), "several nodes need PostgreSQL");
        // A name of its own, as every node of a cluster has (brokers that
        // keep sessions by client id tell nodes apart by it).
        let name = format!("joined-{}", uuid::Uuid::new_v4().simple());
        Self::launch_new(None, self.db_url.clone(), extra, &[("BIDA_NODE_NAME", Some(&name))]).await
    }

    /// A node's directory, config and settings, not started yet.
    fn unstarted(db: Option<TestDatabase>, db_url: String, extra: &str, env: &[(&str, Option<&str>)]) -> Self {
        remember_panics();
        let dir = own_dir();
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("bida.toml");
        std::fs::write(&config, format!("{FAST}\n{extra}")).expect("write config");
        Self {
            child: None,
            url: String::new(),
            grpc_url: String::new(),
            db,
            db_url,
            config,
            log: dir.join("bida.log"),
            port: 0,
            quick_start: false,
            http: api_client(Some(ADMIN_KEY)),
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.map(str::to_string)))
                .collect(),
        }
    }

    async fn launch_new(db: Option<TestDatabase>, db_url: String, extra: &str, env: &[(&str, Option<&str>)]) -> Self {
        let mut bida = Self::unstarted(db, db_url, extra, env);
        bida.launch().await;
        bida
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_bida"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(self.store_args())
            .env("BIDA_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("BIDA_DELIVERY__ALLOW_NETWORKS", ALLOW_LOOPBACK)
            .env("BIDA_SECRET_KEY", SECRET_KEY)
            .env("BIDA_GRPC_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("BIDA_TEST_LOG").unwrap_or_else(|_| "info,bida_actors=debug,sqlx=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        if self.quick_start {
            command.current_dir(self.config.parent().expect("the test's directory"));
        }
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let logged_before = std::fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        self.child = Some(command.spawn().expect("start bida"));
        for _ in 0..300 {
            if self.port == 0 {
                let log = self.log();
                match port_in_log(log.get(logged_before..).unwrap_or_default()) {
                    Some(port) => {
                        self.port = port;
                        self.url = format!("http://127.0.0.1:{port}");
                    }
                    None => {
                        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                            panic!("bida exited with {status}; log:\n{log}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    let log = self.log();
                    // Logged before the HTTP server starts, so there by now (unless turned off).
                    if let Some(port) = port_after(
                        log.get(logged_before..).unwrap_or_default(),
                        "gRPC listening on 127.0.0.1:",
                    ) {
                        self.grpc_url = format!("http://127.0.0.1:{port}");
                    }
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bida exited with {status}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("bida did not become ready; log:\n{}", self.log());
    }

    /// Where the node keeps its data.
    fn store_args(&self) -> Vec<String> {
        if self.quick_start {
            Vec::new()
        } else if embedded() {
            vec!["--data-dir".into(), self.data_dir().display().to_string()]
        } else {
            vec!["--database-url".into(), self.db_url.clone()]
        }
    }

    /// The node's own directory (its config, log and, for the quick start, data).
    pub fn dir(&self) -> PathBuf {
        self.config.parent().expect("the test's directory").to_path_buf()
    }

    /// The embedded store's directory.
    fn data_dir(&self) -> PathBuf {
        if self.quick_start {
            self.config.with_file_name("bida-data")
        } else {
            self.config.with_file_name("data")
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's warnings and errors and the lines about stopping, on one
    /// line: what a failure's first line can carry when the whole log is cut
    /// from a CI report.
    pub fn log_notable(&self) -> String {
        self.log()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("stopping"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// SIGKILL: no shutdown, nothing flushed, nothing released.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .patch(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("PATCH");
        read(response).await
    }

    /// The payloads of every event of `aggregate_type` (all with `None`), as
    /// the event store holds them.
    pub async fn stored_payloads(&self, aggregate_type: Option<&str>) -> Vec<String> {
        self.stored_events(aggregate_type)
            .await
            .into_iter()
            .map(|event| event.payload)
            .collect()
    }

    /// Every event of `aggregate_type` (all with `None`), read from
    /// whichever store the node uses.
    pub async fn stored_events(&self, aggregate_type: Option<&str>) -> Vec<Recorded> {
        use sqlx::Connection;
        if embedded() || self.quick_start {
            let file = self.data_dir().join("bida.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file).read_only(true);
            let mut db = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("embedded store");
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, event_type, payload FROM events WHERE ?1 IS NULL OR aggregate_type = ?1",
            )
            .bind(aggregate_type)
            .fetch_all(&mut db)
            .await
            .expect("events")
        } else {
            let mut db = sqlx::PgConnection::connect(&self.db_url).await.expect("database");
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, event_type, payload::text FROM events
                 WHERE $1::text IS NULL OR aggregate_type = $1",
            )
            .bind(aggregate_type)
            .fetch_all(&mut db)
            .await
            .expect("events")
        }
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .expect("DELETE");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.expect("GET");
        read(response).await
    }

    /// Waits until every node running `consumer` has opened its source
    /// (a minute at most).
    pub async fn every_node_running(&self, consumer: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, view) = self.get(&format!("/v1/consumers/{consumer}")).await;
            let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
            if !nodes.is_empty() && nodes.iter().all(|node| node["state"] == "running") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the consumer never ran: {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The consumer's view once `done` holds (within `timeout`; the node's
    /// log is shown if it never does).
    pub async fn consumer_until(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, consumer) = self.get(&format!("/v1/consumers/{id}")).await;
            if done(&consumer) {
                return consumer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer never got there: {consumer}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits a task and returns its id (panics unless 202).
    pub async fn submit(&self, task: Value) -> String {
        let (status, body) = self.post("/v1/tasks", task).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// Waits until the task has `status`, returning its view.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (code, task) = self.get(&format!("/v1/tasks/{id}")).await;
            if code == 200 && task["status"] == status {
                return task;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "task {id} is not {status} after {timeout:?}: {task}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl Drop for Bida {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.config);
        if !std::thread::panicking() {
            // A passing test's log and data are not needed (a suite left
            // gigabytes of them in the temporary directory).
            let _ = std::fs::remove_dir_all(self.dir());
        } else {
            eprintln!("---- bida log ----\n{}", self.log());
            // Reports that keep only an output's end still show what failed.
            if let Some(failure) = LAST_PANIC.with(|last| last.borrow().clone()) {
                eprintln!("---- the failure (again, after the log) ----\n{failure}");
            }
        }
    }
}

thread_local! {
    /// This thread's last panic, for [`Bida`]'s drop to repeat after the log.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps each thread's last panic message (the default hook still prints it).
fn remember_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = match info.location() {
                Some(at) => format!("panicked at {at}: {}", panic_payload(info.payload())),
                None => format!("panicked: {}", panic_payload(info.payload())),
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            previous(info);
        }));
    });
}

fn panic_payload(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(not a string)"
    }
}

/// Waits until `done` holds.
pub async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    done()
}

/// Waits until the async check holds.
pub async fn until<F: std::future::Future<Output = bool>>(timeout: Duration, mut check: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// The payload id of a delivered request (every message carries `{"id": ...}`).
pub fn payload_id(hit: &Hit) -> Option<String> {
    let body: Value = serde_json::from_slice(&hit.body).ok()?;
    let id = body
        .get("id")
        .or_else(|| body.get("params").and_then(|p| p.get("id")))?;
    id.as_str().map(String::from)
}

/// Ids the endpoint accepted (answered 2xx), and how many 2xx answers it gave.
#[derive(Clone, Default)]
pub struct Accepted(Arc<Mutex<(HashSet<String>, usize)>>);

impl Accepted {
    pub fn note(&self, hit: &Hit) {
        if let Some(id) = payload_id(hit) {
            let mut accepted = self.0.lock().unwrap();
            accepted.0.insert(id);
            accepted.1 += 1;
        }
    }

    pub fn distinct(&self) -> usize {
        self.0.lock().unwrap().0.len()
    }

    pub fn duplicates(&self) -> usize {
        self.counts().1
    }

    /// Distinct ids and duplicates, from one snapshot.
    pub fn counts(&self) -> (usize, usize) {
        let accepted = self.0.lock().unwrap();
        (accepted.0.len(), accepted.1 - accepted.0.len())
    }

    pub fn missing(&self, produced: &[String]) -> Vec<String> {
        let accepted = self.0.lock().unwrap();
        produced
            .iter()
            .filter(|id| !accepted.0.contains(*id))
            .cloned()
            .collect()
    }
}

/// POSTs `body` to `path`, expects 201 Created and returns the new id.
pub async fn created(bida: &Bida, path: &str, body: Value) -> String {
    let (status, created) = bida.post(path, body).await;
    assert_eq!(status, 201, "POST {path}: {created}");
    created["id"].as_str().expect("an id").to_string()
}

/// Registers the machine's RabbitMQ as a broker; returns its id.
pub async fn rabbit_broker(bida: &Bida) -> String {
    created(
        bida,
        "/v1/brokers",
        serde_json::json!({"name": "mq", "kind": "rabbitmq", "url": bida_testkit::rabbit::url()}),
    )
    .await
}
