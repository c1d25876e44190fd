//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven over WebDriver: an
//! operator logs in, fixes and replays a dead letter, pauses a consumer and
//! raises its concurrency; the overview draws its chart; a viewer gets no
//! buttons and is refused anyway. Any JavaScript error in the browser fails
//! the test; each page is checked with axe-core (no serious or critical
//! accessibility violation) and its screenshot written under
//! `target/console-screenshots/`.

mod support;

use bida_testkit::rabbit::{self, TestQueue};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{eventually, Bida, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a port of its own, killed with the test.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn driver() -> Driver {
    let port = free_port();
    let binary = std::env::var("BIDA_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} ({e}): apt-get install chromium chromium-driver"));
    let driver = Driver(child, port);
    let status = format!("http://127.0.0.1:{port}/status");
    for _ in 0..100 {
        if reqwest::get(&status).await.is_ok_and(|r| r.status().is_success()) {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on port {port}");
}

async fn browser(driver: &Driver, language: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    let binary = std::env::var("BIDA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1366,1000", format!("--lang={language}")],
            "prefs": {"intl.accept_languages": language},
        }),
    );
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// chromedriver's log of the browser's console (read once: it empties).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// Fails on any error the page's scripts or loads reported.
async fn no_errors(client: &Client, page: &str) {
    let log = client.issue_cmd(BrowserLog).await.expect("browser log");
    let errors: Vec<&Value> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "JavaScript errors on {page}: {errors:#?}");
}

fn axe_source() -> String {
    let path = std::env::var("BIDA_TEST_AXE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/bida/axe-core/axe.min.js")
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is not at {} ({e}): `.ci/run` fetches it (npm pack axe-core@4), or set BIDA_TEST_AXE",
            path.display()
        )
    })
}

/// Checks the page with axe-core, saves its screenshot, and fails on
/// JavaScript errors.
async fn inspect(client: &Client, name: &str, axe: &str) {
    no_errors(client, name).await;
    client.execute(axe, vec![]).await.expect("load axe-core");
    let report = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));",
            vec![],
        )
        .await
        .expect("axe.run");
    let serious: Vec<&Value> = report
        .as_array()
        .unwrap_or_else(|| panic!("axe failed on {name}: {report}"))
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    let summary: Vec<String> = serious
        .iter()
        .map(|v| {
            format!(
                "{}: {} ({:?})",
                v["id"],
                v["help"],
                v["nodes"].as_array().map(|n| n.len())
            )
        })
        .collect();
    assert!(serious.is_empty(), "accessibility violations on {name}: {summary:#?}");
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(folder.join(format!("{name}.png")), png).expect("write screenshot");
}

/// The element's text; found again when live updates replaced it between
/// the finding and the reading.
async fn text(client: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let element = client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(e) if tries < 5 && e.to_string().contains("stale") => tries += 1,
            Err(e) => panic!("text of {css}: {e}"),
        }
    }
}

/// The element's text, or `None` while there is no such element, including
/// the moment a live update swaps it out.
async fn read(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

async fn exists(client: &Client, css: &str) -> bool {
    client
        .find_all(Locator::Css(css))
        .await
        .is_ok_and(|found| !found.is_empty())
}

async fn fill(client: &Client, css: &str, value: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Clicks a button that submits a form to the page it is on, and waits for
/// the new page: the path alone cannot tell the old page from the new.
async fn submit(client: &Client, css: &str) {
    client
        .execute("window.bidaOldPage = true;", vec![])
        .await
        .expect("mark the page");
    click(client, css).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let loaded = client
            .execute(
                "return window.bidaOldPage === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .unwrap_or(Value::Bool(false));
        if loaded == Value::Bool(true) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{css} never loaded a new page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the browser shows a loaded page at `path` (a click that
/// navigates may return before the page it leads to).
async fn wait_for_path(client: &Client, path: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let at = client.current_url().await.unwrap();
        let ready = client.execute("return document.readyState;", vec![]).await.unwrap();
        if at.path() == path && ready == "complete" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got to {path} (at {at}): {}",
            text(client, "body").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(client: &Client, bida: &Bida, username: &str, password: &str) {
    client.goto(&format!("{}/", bida.url)).await.expect("open");
    assert!(client.current_url().await.unwrap().path().starts_with("/login"));
    fill(client, "#username", username).await;
    fill(client, "#password", password).await;
    click(client, "#login").await;
    wait_for_path(client, "/").await;
}

/// `bida users create`, the password on standard input.
fn create_user(bida: &Bida, username: &str, role: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bida"))
        .args(["users", "create", "--username", username, "--role", role])
        .args(["--database-url", &bida.db_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bida users create");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password");
    let output = child.wait_with_output().expect("bida users create");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The API's answer at `path` once `done` holds of it (or after 15 s, for
/// the caller's assertion to say what it was): a form that leads back to the
/// page it was on gives no navigation to wait for.
fn management_url() -> String {
    std::env::var("BIDA_TEST_RABBIT_MANAGEMENT").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672/".to_string())
}

async fn api_until(bida: &Bida, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, answer) = bida.get(path).await;
        if done(&answer) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reloads the page until `css` reads `expected`.
async fn reload_until(client: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if read(client, css).await.as_deref() == Some(expected) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{css} never read {expected}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.refresh().await.expect("reload");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_runs_bida_from_the_browser() {
    let endpoint = Receiver::start(|hit, nth| {
        if hit.path == "/broken" || (hit.path == "/flaky" && nth == 1) {
            Reply::status(500)
        } else if hit.path == "/refunds" {
            Reply::ok().body(r#"{"data":{"code":0}}"#)
        } else {
            Reply::ok().after(Duration::from_millis(40))
        }
    })
    .await;
    let bida = Bida::start("").await;
    create_user(&bida, "ops", "admin", "operator-password-1");
    create_user(&bida, "watcher", "viewer", "viewer-password-1");
    let axe = axe_source();

    // A dead letter: its endpoint URL is wrong.
    let dead = bida
        .submit(
            json!({"url": endpoint.url("/broken"), "params": {"order": 42}, "max_attempts": 1, "source_app": "shop",
                    "headers": {"authorization": "Bearer s3cret-token"}}),
        )
        .await;
    bida.wait_status(&dead, "dead", WAIT).await;
    // A consumer working through a queue, one message at a time.
    let queue = TestQueue::declare().await;
    let (_, broker) = bida
        .post(
            "/v1/brokers",
            json!({"name": "mq", "kind": "rabbitmq", "url": rabbit::url(), "management_url": management_url()}),
        )
        .await;
    let (status, consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "orders", "broker_id": broker["id"], "source": {"queue": queue.name},
                   "endpoint": {"url": endpoint.url("/orders"), "timeout_ms": 2000},
                   "policy": {"concurrency": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{consumer}");
    let consumer = consumer["id"].as_str().unwrap().to_string();
    queue
        .publish((0..3000).map(|i| (Some(format!("m{i}")), format!(r#"{{"n":{i}}}"#).into_bytes())))
        .await;
    assert!(endpoint.wait_for_hits(20, WAIT).await);

    let driver = driver().await;
    let client = browser(&driver, "en-US").await;
    probe_the_judges(&client, &bida, &axe).await;
    log_in(&client, &bida, "ops", "operator-password-1").await;

    // The overview: counts, the 7-day chart drawn with data, live figures.
    assert!(text(&client, "#count-dead").await.parse::<i64>().unwrap() >= 1);
    let drawn = client
        .execute(
            "const c = document.querySelector('svg.chart');
             return [Number(c.dataset.total), c.querySelectorAll('rect.bar').length];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        drawn[0].as_i64().unwrap() >= 1 && drawn[1].as_i64().unwrap() >= 1,
        "{drawn}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let live = client
        .execute(
            "return document.getElementById('overview-live').dataset.refreshed || null;",
            vec![],
        )
        .await
        .unwrap();
    assert!(live.is_string(), "the figures refreshed in place");
    inspect(&client, "overview", &axe).await;

    // The dead letter: found by filter, fixed and delivered again.
    client.goto(&format!("{}/tasks?status=dead", bida.url)).await.unwrap();
    assert!(text(&client, "#task-list").await.contains(&dead));
    inspect(&client, "tasks", &axe).await;
    click(&client, &format!("a[href='/tasks/{dead}']")).await;
    wait_for_path(&client, &format!("/tasks/{dead}")).await;
    assert_eq!(text(&client, "#task-status").await, "Dead letters");
    click(&client, "#edit-replay summary").await;
    inspect(&client, "task", &axe).await;
    fill(&client, "#replay-url", &endpoint.url("/fixed")).await;
    submit(&client, "#replay").await;
    reload_until(&client, "#task-status", "Delivered").await;
    let (_, task) = bida.get(&format!("/v1/tasks/{dead}")).await;
    assert_eq!(task["status"], "delivered", "{task}");
    assert!(endpoint.hits().iter().any(|h| h.path == "/fixed"));
    let (_, history) = bida.get(&format!("/v1/tasks/{dead}/events")).await;
    let replay = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "RetryRequested")
        .expect("the replay is in the history");
    assert_eq!(replay["metadata"]["key_id"], "user:ops", "{replay}");
    // Each attempt shows what it sent: the first to the broken URL, the
    // second to the fixed one; credentials masked, Bida's headers included.
    let sent = client
        .execute(
            "return [...document.querySelectorAll('#attempts details.sent')].map(d => d.textContent);",
            vec![],
        )
        .await
        .unwrap();
    let sent: Vec<String> = serde_json::from_value(sent).unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].contains("/broken") && sent[0].contains("bida-attempt: 1"),
        "{sent:?}"
    );
    assert!(
        sent[1].contains("/fixed") && sent[1].contains("bida-attempt: 2"),
        "{sent:?}"
    );
    for attempt in &sent {
        assert!(
            attempt.contains("authorization: ***") && !attempt.contains("s3cret"),
            "{attempt}"
        );
        assert!(
            attempt.contains("webhook-id: ") && attempt.contains("webhook-timestamp: "),
            "{attempt}"
        );
    }

    // Search: by task id, by the webhook-id a consumer's delivery carried, by
    // an Idempotency-Key, and by text in a recent task's body.
    let keyed = bida
        .http
        .post(format!("{}/v1/tasks", bida.url))
        .header("Idempotency-Key", "invoice-77")
        .json(&json!({"url": endpoint.url("/keyed"), "body": "refund of 77 yuan", "source_app": "shop"}))
        .send()
        .await
        .unwrap();
    let keyed: Value = keyed.json().await.unwrap();
    let keyed = keyed["id"].as_str().unwrap().to_string();
    let delivered_message = endpoint
        .hits()
        .into_iter()
        .find(|h| h.path == "/orders")
        .and_then(|h| h.message_id().map(str::to_string))
        .expect("a consumer delivery");
    for (query, expected) in [
        (dead.clone(), dead.clone()),
        (delivered_message.clone(), String::new()),
        ("invoice-77".to_string(), keyed.clone()),
        ("of 77 yuan".to_string(), keyed.clone()),
    ] {
        client.goto(&format!("{}/tasks", bida.url)).await.unwrap();
        fill(&client, "#search", &query).await;
        submit(&client, "#filter").await;
        let list = text(&client, "#task-list").await;
        let rows = client
            .find_all(Locator::Css("#task-list tbody tr"))
            .await
            .unwrap()
            .len();
        assert_eq!(rows, 1, "{query} finds one task: {list}");
        if expected.is_empty() {
            assert!(list.contains("/orders"), "{query} finds the consumer's task: {list}");
        } else {
            assert!(list.contains(&expected), "{query} finds {expected}: {list}");
        }
    }
    inspect(&client, "search", &axe).await;

    // Bulk replay of a filter: how many it will touch, then a confirmation.
    // The filter names an endpoint host: the dead task of the same app sent
    // to another host is left alone.
    let elsewhere = bida
        .submit(json!({"url": endpoint.url("/broken"), "max_attempts": 1, "source_app": "bulk"}))
        .await;
    bida.wait_status(&elsewhere, "dead", WAIT).await;
    let mut batch = Vec::new();
    for n in 0..3 {
        let url = endpoint.url("/flaky").replace("127.0.0.1", "localhost");
        let id = bida
            .submit(json!({"url": url, "params": {"n": n}, "max_attempts": 1, "source_app": "bulk"}))
            .await;
        bida.wait_status(&id, "dead", WAIT).await;
        batch.push(id);
    }
    client.goto(&format!("{}/tasks", bida.url)).await.unwrap();
    client
        .find(Locator::Css("#filter-status"))
        .await
        .unwrap()
        .select_by_value("dead")
        .await
        .unwrap();
    fill(&client, "input[name=app]", "bulk").await;
    fill(&client, "#filter-host", "LocalHost").await;
    submit(&client, "#filter").await;
    let listed = text(&client, "#task-list").await;
    assert!(
        batch.iter().all(|id| listed.contains(id)) && !listed.contains(&elsewhere),
        "{listed}"
    );
    click(&client, "#replay-these").await;
    wait_for_path(&client, "/tasks/replay").await;
    assert_eq!(text(&client, "#replay-count").await, "3");
    inspect(&client, "replay", &axe).await;
    click(&client, "#confirm-replay").await;
    wait_for_path(&client, "/tasks").await;
    assert!(text(&client, "#replay-done").await.starts_with("3 replayed"));
    for id in &batch {
        bida.wait_status(id, "delivered", WAIT).await;
    }

    // The consumer: paused from the page, seen paused on the page and in the API.
    client.goto(&format!("{}/consumers", bida.url)).await.unwrap();
    assert!(text(&client, "#consumer-list").await.contains("orders"));
    inspect(&client, "consumers", &axe).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let live = client
        .execute(
            "return document.getElementById('consumers-live').dataset.refreshed || null;",
            vec![],
        )
        .await
        .unwrap();
    assert!(live.is_string(), "the consumer list refreshed in place");
    // A list does not ask the broker for lag: it shows what the nodes report.
    let listed = api_until(&bida, "/v1/consumers", |list| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == consumer.as_str() && c["lag_total"].as_i64() > Some(0))
    })
    .await;
    let backlog = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == consumer.as_str())
        .map(|c| c["lag_total"].as_i64().unwrap_or(0));
    assert!(backlog > Some(0), "the queue's backlog is listed: {listed}");
    assert!(text(&client, "#consumer-list").await.contains("orders"));
    no_errors(&client, "consumers, refreshed").await;
    click(&client, &format!("a[href='/consumers/{consumer}']")).await;
    wait_for_path(&client, &format!("/consumers/{consumer}")).await;
    inspect(&client, "consumer", &axe).await;
    click(&client, "#pause").await;
    reload_until(&client, "#desired-state", "paused").await;
    let (_, view) = bida.get(&format!("/v1/consumers/{consumer}")).await;
    assert_eq!(view["desired_state"], "paused", "{view}");
    reload_until(&client, "#consumer-state", "paused").await;
    // Its concurrency raised from the form; the running consumer uses it.
    fill(&client, "#concurrency", "16").await;
    click(&client, "#save-policy").await;
    reload_until(&client, "#current-concurrency", "16").await;
    let (_, view) = bida.get(&format!("/v1/consumers/{consumer}")).await;
    assert_eq!(view["policy"]["concurrency"], 16, "{view}");
    click(&client, "#resume").await;
    reload_until(&client, "#consumer-state", "running").await;
    // Judged by how many the endpoint answers at once, not by a rate (a
    // loaded machine's rates say little).
    endpoint.reset_most_at_once();
    assert!(
        eventually(WAIT, || endpoint.most_at_once() >= 8).await,
        "concurrency 16 sent at most {} at once",
        endpoint.most_at_once()
    );

    // A pull consumer shows its members and lanes.
    let pulled = TestQueue::declare().await;
    let (status, pull_consumer) = bida
        .post(
            "/v1/consumers",
            json!({"name": "pulled", "broker_id": broker["id"], "source": {"queue": pulled.name},
                   "endpoint": {"kind": "pull", "mode": "broadcast"}}),
        )
        .await;
    assert_eq!(status, 201, "{pull_consumer}");
    let pull_consumer = pull_consumer["id"].as_str().unwrap().to_string();
    let (status, _) = bida
        .post(
            &format!("/v1/consumers/{pull_consumer}/members/host-1/heartbeat"),
            json!({"address": "10.1.2.3", "client_version": "shop/2.4"}),
        )
        .await;
    assert_eq!(status, 200);
    client
        .goto(&format!("{}/consumers/{pull_consumer}", bida.url))
        .await
        .unwrap();
    let members = text(&client, "#members").await;
    assert!(
        members.contains("host-1") && members.contains("10.1.2.3") && members.contains("shop/2.4"),
        "{members}"
    );
    assert!(text(&client, "#pull-lanes")
        .await
        .contains(&format!("{pull_consumer}/host-1")));
    inspect(&client, "consumer-pull", &axe).await;

    // A consumer made from the form, with a policy of its own.
    let refunds = TestQueue::declare().await;
    client.goto(&format!("{}/consumers", bida.url)).await.unwrap();
    click(&client, "#new-consumer").await;
    wait_for_path(&client, "/consumers/new").await;
    inspect(&client, "consumer-new", &axe).await;
    fill(&client, "#name", "refunds").await;
    fill(&client, "#rabbitmq-queue", &refunds.name).await;
    fill(&client, "#url", &endpoint.url("/refunds")).await;
    fill(&client, "#max_attempts", "7").await;
    fill(&client, "#retry_on", "5xx, 429").await;
    fill(&client, "#expect_json_pointer", "data.code").await;
    fill(&client, "#expect_json_equals", "0").await;
    click(&client, "#create-consumer").await;
    reload_until(&client, "#desired-state", "running").await;
    let (_, list) = bida.get("/v1/consumers").await;
    let made = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "refunds")
        .unwrap_or_else(|| panic!("the consumer was made: {list}"))
        .clone();
    assert_eq!(made["policy"]["max_attempts"], 7, "{made}");
    assert_eq!(made["policy"]["retry_on"], json!(["5xx", "429"]), "{made}");
    assert_eq!(
        made["policy"]["expect"]["json"],
        json!({"pointer": "/data/code", "equals": 0}),
        "{made}"
    );
    refunds.publish([(Some("r1".to_string()), b"{}".to_vec())]).await;
    assert!(
        endpoint
            .wait_until(WAIT, |hits| hits.iter().any(|h| h.path == "/refunds"))
            .await,
        "the new consumer delivers"
    );
    // Its JSON expectation holds on the endpoint's answer: delivered.
    let made_id = made["id"].as_str().unwrap();
    let delivered = api_until(
        &bida,
        &format!("/v1/tasks?consumer_id={made_id}&status=delivered"),
        |page| !page["items"].as_array().unwrap().is_empty(),
    )
    .await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 1, "{delivered}");

    // Brokers, nodes, apps and users: the admin's pages.
    client.goto(&format!("{}/brokers", bida.url)).await.unwrap();
    inspect(&client, "brokers", &axe).await;
    click(&client, "#broker-list a").await;
    reload_until(&client, "#broker-health", "reachable").await;
    // Its management API adds the cluster's figures.
    let version = text(&client, "#broker-fact-version").await;
    assert!(version.len() > "RabbitMQ ".len(), "{version}");
    // Beside its queue, the Bida consumer reading it.
    let queues = text(&client, "#destination-list").await;
    assert!(
        queues.lines().any(|l| l.contains(&queue.name) && l.contains("orders")),
        "{queues}"
    );
    inspect(&client, "broker", &axe).await;
    // A broker added, renamed and deleted from the console.
    client.goto(&format!("{}/brokers", bida.url)).await.unwrap();
    click(&client, "#new-broker").await;
    wait_for_path(&client, "/brokers/new").await;
    inspect(&client, "broker-new", &axe).await;
    fill(&client, "#broker-name", "spare").await;
    client
        .find(Locator::Css("#broker-kind"))
        .await
        .unwrap()
        .select_by_value("rabbitmq")
        .await
        .unwrap();
    fill(&client, "#rabbitmq-url", &rabbit::url()).await;
    click(&client, "#create-broker").await;
    reload_until(&client, "#broker-health", "reachable").await;
    let spare = client
        .current_url()
        .await
        .unwrap()
        .path()
        .trim_start_matches("/brokers/")
        .to_string();
    click(&client, "details summary").await;
    fill(&client, "#broker-name", "standby").await;
    click(&client, "#save-broker").await;
    // The form leads back to the same page: wait for the change itself.
    let renamed = api_until(&bida, &format!("/v1/brokers/{spare}"), |b| b["name"] == "standby").await;
    assert_eq!(renamed["name"], "standby", "{renamed}");
    assert!(
        renamed["connection"]["url"].as_str().unwrap().contains("***"),
        "an edit that leaves the URL empty keeps its password: {renamed}"
    );
    client.execute("window.confirm = () => true;", vec![]).await.unwrap();
    click(&client, "#delete-broker").await;
    wait_for_path(&client, "/brokers").await;
    let (status, _) = bida.get(&format!("/v1/brokers/{spare}")).await;
    assert_eq!(status, 404, "deleted");

    client.goto(&format!("{}/nodes", bida.url)).await.unwrap();
    assert!(text(&client, "#node-list").await.contains("alive"));
    inspect(&client, "nodes", &axe).await;
    client.goto(&format!("{}/apps", bida.url)).await.unwrap();
    click(&client, "details summary").await;
    fill(&client, "#app-name", "billing").await;
    submit(&client, "#create-app").await;
    assert!(
        text(&client, "#secret").await.starts_with("whsec_"),
        "the signing secret, once"
    );
    let (_, apps) = bida.get("/v1/apps").await;
    assert!(
        apps["items"].as_array().unwrap().iter().any(|a| a["name"] == "billing"),
        "{apps}"
    );
    client.goto(&format!("{}/apps", bida.url)).await.unwrap();
    inspect(&client, "apps", &axe).await;
    // Its networks edited from the page.
    let billing = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "billing")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .execute(
            "document.querySelectorAll('details').forEach(d => d.open = true);",
            vec![],
        )
        .await
        .unwrap();
    fill(&client, &format!("[id='networks-{billing}']"), "10.1.0.0/16").await;
    click(&client, &format!("[id='save-app-{billing}']")).await;
    let edited = api_until(&bida, &format!("/v1/apps/{billing}"), |a| {
        a["allowed_networks"] != json!([])
    })
    .await;
    assert_eq!(edited["allowed_networks"], json!(["10.1.0.0/16"]), "{edited}");
    client.goto(&format!("{}/users", bida.url)).await.unwrap();
    assert!(text(&client, "#user-list").await.contains("watcher"));
    inspect(&client, "users", &axe).await;

    // Logging out ends the session.
    click(&client, "#logout").await;
    wait_for_path(&client, "/login").await;
    client.goto(&format!("{}/tasks", bida.url)).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/login");
    inspect(&client, "login", &axe).await;

    // A viewer sees no buttons it may not use, and is refused anyway.
    log_in(&client, &bida, "watcher", "viewer-password-1").await;
    let cancelled = bida
        .submit(json!({"url": endpoint.url("/later"), "delay_ms": 600000}))
        .await;
    bida.post(&format!("/v1/tasks/{cancelled}/cancel"), json!(null)).await;
    client.goto(&format!("{}/tasks/{cancelled}", bida.url)).await.unwrap();
    assert!(!exists(&client, "#retry").await && !exists(&client, "#replay").await);
    no_errors(&client, "viewer's task").await;
    let refused = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=_csrf]').value;
             fetch(arguments[0], {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                                  body: '_csrf=' + encodeURIComponent(csrf), redirect: 'manual'})
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(format!("/tasks/{cancelled}/retry"))],
        )
        .await
        .unwrap();
    assert_eq!(refused, 403, "a viewer's retry is refused");
    assert!(
        !text(&client, "nav").await.contains("Users"),
        "a viewer has no admin pages in its menu"
    );
    client.goto(&format!("{}/users", bida.url)).await.unwrap();
    assert!(text(&client, "main").await.contains("Your role may not do this"));
    let (_, task) = bida.get(&format!("/v1/tasks/{cancelled}")).await;
    assert_eq!(task["status"], "cancelled", "{task}");

    client.close().await.unwrap();

    // A browser that prefers Chinese gets the console in Chinese.
    let chinese = browser(&driver, "zh-CN").await;
    chinese.goto(&format!("{}/login", bida.url)).await.unwrap();
    assert_eq!(text(&chinese, "#login").await, "登录");
    log_in(&chinese, &bida, "ops", "operator-password-1").await;
    assert!(text(&chinese, "nav").await.contains("任务"));
    inspect(&chinese, "overview-zh", &axe).await;
    chinese.close().await.unwrap();
}

/// The checks can fail: a thrown error reaches the browser log, and an image
/// without a text alternative is an axe-core violation.
async fn probe_the_judges(client: &Client, bida: &Bida, axe: &str) {
    client.goto(&format!("{}/login", bida.url)).await.unwrap();
    client
        .execute("setTimeout(() => { throw new Error('probe'); });", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = client.issue_cmd(BrowserLog).await.unwrap();
    assert!(log.to_string().contains("probe"), "the browser log shows errors: {log}");
    client.execute(axe, vec![]).await.unwrap();
    let violations = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const img = document.createElement('img'); img.src = 'data:,'; document.body.appendChild(img);
             axe.run(document).then(r => { img.remove(); done(r.violations.map(v => v.id)); });",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        violations.to_string().contains("image-alt"),
        "axe-core sees violations: {violations}"
    );
}
