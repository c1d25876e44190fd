//! Access control end to end: every route's rule against every role, apps
//! and their keys, revocation across nodes, allowed networks, the audit
//! trail, rate limits, the bootstrap key, and the SSRF guard on deliveries.

mod support;

use bida_domain::access::Role;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{api_client, read, until, Bida, Receiver, Reply, ADMIN_KEY};

/// A key of `role` (producers belong to `app`).
async fn key(bida: &Bida, role: &str, app: Option<&str>) -> (String, String) {
    let path = match app {
        Some(app) => format!("/v1/apps/{app}/keys"),
        None => "/v1/keys".to_string(),
    };
    let (status, issued) = bida
        .post(&path, json!({"name": format!("{role} key"), "role": role}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let secret = issued["key"].as_str().expect("key").to_string();
    assert!(secret.starts_with("bida_"));
    (issued["id"].as_str().expect("id").to_string(), secret)
}

async fn app(bida: &Bida, name: &str, networks: &[&str]) -> String {
    let (status, app) = bida
        .post("/v1/apps", json!({"name": name, "allowed_networks": networks}))
        .await;
    assert_eq!(status, 201, "{app}");
    app["id"].as_str().expect("id").to_string()
}

async fn call(http: &reqwest::Client, method: &str, url: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method.clone(), url);
    if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
        request = request.json(&json!({}));
    }
    read(request.send().await.expect("request")).await
}

/// Every operation of the OpenAPI document: (method, path template).
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            all.insert((method.to_uppercase(), path.clone()));
        }
    }
    all
}

#[tokio::test]
async fn every_route_has_a_rule_and_each_role_gets_what_the_rule_says() {
    let bida = Bida::start("").await;
    let shop = app(&bida, "shop", &[]).await;
    let mut clients = vec![(Role::Admin, api_client(Some(ADMIN_KEY)))];
    for role in [Role::Operator, Role::Viewer] {
        clients.push((role, api_client(Some(&key(&bida, role.as_str(), None).await.1))));
    }
    let producer = key(&bida, "producer", Some(&shop)).await.1;
    clients.push((Role::Producer, api_client(Some(&producer))));
    let anonymous = api_client(None);

    let (_, document) = bida.get("/openapi.json").await;
    let documented = operations(&document);
    let ruled: BTreeSet<(String, String)> = bida_api::RULES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(documented, ruled, "every documented route has exactly one access rule");

    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "nothing-here")
            .replace("{key_id}", "nothing-here")
            .replace("{key}", "k")
            .replace("{action}", "pause");
        let url = format!("{}{concrete}", bida.url);
        let rule = bida_api::rule(method, path).unwrap().unwrap();
        let (status, problem) = call(&anonymous, method, &url).await;
        match rule {
            bida_api::Access::Key(_) => {
                assert_eq!(status, 401, "{method} {path} without a key: {problem}");
                assert_eq!(problem["type"], "urn:bida:problem:unauthorized");
            }
            _ => assert_ne!(status, 401, "{method} {path} is open by default"),
        }
        let bida_api::Access::Key(need) = rule else { continue };
        for (role, client) in &clients {
            let (status, body) = call(client, method, &url).await;
            if role.may(need) {
                assert!(
                    status != 401 && status != 403 && status < 500,
                    "{role} {method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {body}");
                assert_eq!(body["type"], "urn:bida:problem:forbidden", "{body}");
            }
        }
    }

    // A wrong key is a 401 too, and says how to authenticate.
    let response = api_client(Some("bida_not-a-key"))
        .get(format!("{}/v1/tasks", bida.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    // An undeclared method is a 405 naming the allowed ones, not a 404.
    let response = bida.http.put(format!("{}/v1/tasks", bida.url)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST, GET");
}

#[tokio::test]
async fn a_producer_submits_and_reads_only_its_own_apps_tasks() {
    let receiver = Receiver::ok().await;
    let bida = Bida::start("").await;
    let (shop, bank) = (app(&bida, "shop", &[]).await, app(&bida, "bank", &[]).await);
    let shop_http = api_client(Some(&key(&bida, "producer", Some(&shop)).await.1));
    let bank_http = api_client(Some(&key(&bida, "producer", Some(&bank)).await.1));
    let submit = |http: reqwest::Client, body: Value| {
        let url = format!("{}/v1/tasks", bida.url);
        async move { read(http.post(url).json(&body).send().await.unwrap()).await }
    };
    let (status, shop_task) = submit(shop_http.clone(), json!({"url": receiver.url("/shop")})).await;
    assert_eq!(status, 202, "{shop_task}");
    assert_eq!(shop_task["source_app"], shop.as_str(), "the app comes from the key");
    let (status, bank_task) = submit(bank_http.clone(), json!({"url": receiver.url("/bank")})).await;
    assert_eq!(status, 202);
    let (status, forged) = submit(
        shop_http.clone(),
        json!({"url": receiver.url("/x"), "source_app": bank.clone()}),
    )
    .await;
    assert_eq!(status, 403, "a producer cannot submit as another app: {forged}");

    let get = |http: &reqwest::Client, path: String| {
        let request = http.get(format!("{}{path}", bida.url));
        async move { read(request.send().await.unwrap()).await }
    };
    let (status, list) = get(&shop_http, "/v1/tasks".into()).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(
        until(Duration::from_secs(10), || async {
            let (_, list) = get(&shop_http, "/v1/tasks?source_app=".to_string() + &bank).await;
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|t| t["source_app"] == shop.as_str()))
        })
        .await
    );
    assert!(!ids.contains(&bank_task["id"].as_str().unwrap()));
    let bank_id = bank_task["id"].as_str().unwrap();
    for path in [format!("/v1/tasks/{bank_id}"), format!("/v1/tasks/{bank_id}/events")] {
        let (status, _) = get(&shop_http, path.clone()).await;
        assert_eq!(status, 404, "another app's task does not exist for a producer: {path}");
    }
    let (status, _) = get(&shop_http, format!("/v1/tasks/{}", shop_task["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    // The admin sees both apps' tasks.
    let (status, _) = bida.get(&format!("/v1/tasks/{bank_id}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_node_at_once() {
    let bida = Bida::start("").await;
    let other = bida.join("").await;
    let (key_id, secret) = key(&bida, "viewer", None).await;
    let viewer = api_client(Some(&secret));
    let status_on = |node: &Bida| {
        let request = viewer.get(format!("{}/v1/nodes", node.url));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Both nodes have checked (and remember) the key.
    assert_eq!(status_on(&bida).await, 200);
    assert_eq!(status_on(&other).await, 200);
    let (status, _) = bida.delete(&format!("/v1/keys/{key_id}")).await;
    assert_eq!(status, 204);
    assert_eq!(status_on(&bida).await, 401);
    assert!(
        until(Duration::from_secs(5), || async { status_on(&other).await == 401 }).await,
        "the other node still accepts the revoked key"
    );
    let (_, keys) = bida.get("/v1/keys").await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert!(listed["revoked_at"].is_string(), "{listed}");
    assert!(!keys.to_string().contains(&secret), "keys are never shown again");
    assert_eq!(listed["prefix"].as_str().unwrap(), &secret[..12]);
}

#[tokio::test]
async fn an_apps_keys_work_only_from_its_allowed_networks() {
    let bida = Bida::start("").await;
    let office = app(&bida, "office", &["10.9.0.0/16"]).await;
    let producer = api_client(Some(&key(&bida, "producer", Some(&office)).await.1));
    let tasks = format!("{}/v1/tasks", bida.url);
    let (status, problem) = read(producer.get(&tasks).send().await.unwrap()).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("127.0.0.1"), "{problem}");
    let (status, _) = bida
        .patch(
            &format!("/v1/apps/{office}"),
            json!({"allowed_networks": ["10.9.0.0/16", "127.0.0.0/8"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        until(Duration::from_secs(5), || async {
            producer.get(&tasks).send().await.unwrap().status() == 200
        })
        .await
    );
    // Deleting the app ends its keys.
    let (status, _) = bida.delete(&format!("/v1/apps/{office}")).await;
    assert_eq!(status, 204);
    assert!(
        until(Duration::from_secs(5), || async {
            producer.get(&tasks).send().await.unwrap().status() == 401
        })
        .await
    );
}

#[tokio::test]
async fn every_change_records_who_made_it_and_from_where() {
    let bida = Bida::start("").await;
    let (operator_id, operator) = key(&bida, "operator", None).await;
    let operator = api_client(Some(&operator));
    let url = "amqp://guest:s3cr3t-pass@127.0.0.1:5672/%2f";
    let (status, broker) = read(
        operator
            .post(format!("{}/v1/brokers", bida.url))
            .json(&json!({"name": "mq", "kind": "rabbitmq", "url": url}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{broker}");
    let id = broker["id"].as_str().unwrap();
    let (status, _) = bida.post(&format!("/v1/brokers/{id}/offline"), json!(null)).await;
    assert_eq!(status, 200);
    let (status, history) = bida.get(&format!("/v1/brokers/{id}/events")).await;
    assert_eq!(status, 200);
    let events = history["events"].as_array().unwrap();
    assert_eq!(events[0]["metadata"]["key_id"], operator_id.as_str());
    assert_eq!(events[0]["metadata"]["role"], "operator");
    assert_eq!(events[0]["metadata"]["client_ip"], "127.0.0.1");
    assert_eq!(events[1]["metadata"]["role"], "admin");
    assert!(!history.to_string().contains("s3cr3t-pass"), "{history}");
    assert!(!broker.to_string().contains("s3cr3t-pass"));
    let (_, listed) = bida.get("/v1/brokers").await;
    assert!(!listed.to_string().contains("s3cr3t-pass"));
    let rows = bida.stored_payloads(Some("broker")).await;
    assert!(rows.iter().all(|row| !row.contains("s3cr3t-pass")), "{rows:?}");
    assert!(rows[0].contains("sealed.v1."), "{rows:?}");
    assert!(!bida.log().contains("s3cr3t-pass"), "a password in the log");

    let receiver = Receiver::ok().await;
    let task = bida.submit(json!({"url": receiver.url("/a")})).await;
    let (_, history) = bida.get(&format!("/v1/tasks/{task}/events")).await;
    assert_eq!(history["events"][0]["metadata"]["role"], "admin", "{history}");
    let shop = app(&bida, "shop", &[]).await;
    let (_, history) = bida.get(&format!("/v1/apps/{shop}/events")).await;
    assert_eq!(history["events"][0]["event_type"], "AppCreated");
    assert_eq!(history["events"][0]["metadata"]["role"], "admin");
}

#[tokio::test]
async fn a_key_over_its_rate_is_told_when_to_come_back() {
    let bida = Bida::start("[api.rate_limit]\nper_second = 1\nburst = 2\n").await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let response = bida.http.get(format!("{}/v1/nodes", bida.url)).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry_after.is_some());
    // Probes are not limited.
    for _ in 0..5 {
        assert_eq!(
            bida.http
                .get(format!("{}/healthz", bida.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn a_first_start_prints_an_admin_key_and_the_command_line_makes_more() {
    let bida = Bida::start_with_env("", &[("BIDA_AUTH__BOOTSTRAP_ADMIN_KEY", None)]).await;
    let log = bida.log();
    let printed = log
        .split_whitespace()
        .find(|word| word.starts_with("bida_") && word.len() > 40)
        .unwrap_or_else(|| panic!("no key in the log:\n{log}"))
        .trim_end_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
        .to_string();
    let admin = api_client(Some(&printed));
    assert_eq!(
        admin
            .get(format!("{}/v1/keys", bida.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        bida.http
            .get(format!("{}/v1/keys", bida.url))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the test key was not configured here"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bida"))
        .args([
            "keys",
            "create",
            "--role",
            "viewer",
            "--name",
            "grafana",
            "--database-url",
            &bida.db_url,
        ])
        .env_remove("BIDA_AUTH__BOOTSTRAP_ADMIN_KEY")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let made = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let viewer = api_client(Some(&made));
    assert_eq!(
        viewer
            .get(format!("{}/v1/nodes", bida.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        viewer
            .get(format!("{}/v1/keys", bida.url))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // A restart does not make another key.
    drop(bida);
}

/// A node that refuses internal addresses (the default): no network allowed.
async fn guarded() -> Bida {
    Bida::start_with_env("", &[("BIDA_DELIVERY__ALLOW_NETWORKS", Some("[]"))]).await
}

#[tokio::test]
async fn deliveries_to_internal_addresses_are_refused_in_every_spelling() {
    let receiver = Receiver::ok().await;
    let bida = guarded().await;
    let port = receiver
        .url("")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for host in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "[fd00::1]",
        "0.0.0.0",
    ] {
        let (status, problem) = bida
            .post("/v1/tasks", json!({"url": format!("http://{host}:{port}/x")}))
            .await;
        assert_eq!(status, 422, "{host}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "url", "{problem}");
    }
    // A name that resolves to loopback is accepted, and each attempt fails
    // saying which address and why; nothing reaches the endpoint.
    let id = bida
        .submit(json!({"url": format!("http://localhost:{port}/x"), "max_attempts": 1}))
        .await;
    let task = bida.wait_status(&id, "dead", Duration::from_secs(20)).await;
    let error = task["attempts"][0]["error"].to_string();
    assert!(error.contains("localhost: 127.0.0.1 is loopback"), "{task}");
    assert_eq!(receiver.hit_count(), 0);
    // A consumer's endpoint is checked the same way.
    let (status, problem) = bida
        .post(
            "/v1/consumers",
            json!({"name": "c", "broker_id": "none", "source": {"queue": "q"},
                   "endpoint": {"url": "http://169.254.169.254/latest"}}),
        )
        .await;
    assert!(status == 422 || status == 404, "{status} {problem}");
}

#[tokio::test]
async fn allowed_networks_open_internal_ranges_on_purpose() {
    let receiver = Receiver::ok().await;
    let bida = Bida::start("").await;
    let port = receiver
        .url("")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for host in ["127.0.0.1", "localhost", "2130706433"] {
        let id = bida.submit(json!({"url": format!("http://{host}:{port}/ok")})).await;
        bida.wait_status(&id, "delivered", Duration::from_secs(20)).await;
    }
    // 10.0.0.0/8 is still refused.
    let (status, _) = bida.post("/v1/tasks", json!({"url": "http://10.1.2.3/x"})).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_an_answer_not_an_instruction() {
    // The endpoint (allowed on purpose) answers with a redirect to the cloud
    // metadata address: Bida judges the 302 and goes nowhere else.
    let receiver =
        Receiver::start(|_, _| Reply::status(302).header("location", "http://169.254.169.254/latest/meta-data/")).await;
    let bida = Bida::start("").await;
    let id = bida
        .submit(json!({"url": receiver.url("/moved"), "max_attempts": 1}))
        .await;
    let task = bida.wait_status(&id, "dead", Duration::from_secs(20)).await;
    assert_eq!(task["attempts"][0]["status_code"], 302, "{task}");
    assert_eq!(receiver.hit_count(), 1);
}

/// A key limited to named topics publishes on them alone: not on another
/// topic, not to any broker; what else its role allows is unchanged.
#[tokio::test]
async fn a_key_limited_to_topics_publishes_on_those_only() {
    let bida = Bida::start("").await;
    for name in ["orders", "payments"] {
        let (status, topic) = bida.post("/v1/topics", json!({"name": name})).await;
        assert_eq!(status, 201, "{topic}");
    }
    let shop = app(&bida, "shop", &[]).await;
    let (status, issued) = bida
        .post(
            &format!("/v1/apps/{shop}/keys"),
            json!({"name": "orders only", "role": "producer", "topics": ["orders"]}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["topics"], json!(["orders"]));
    let http = api_client(Some(issued["key"].as_str().unwrap()));
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{}{path}", bida.url)).json(&body);
        async move { read(request.send().await.unwrap()).await }
    };
    let (status, written) = post("/v1/topics/orders/messages", json!({"body": {"n": 1}})).await;
    assert_eq!(status, 200, "{written}");
    let (status, refused) = post("/v1/topics/payments/messages", json!({"body": {"n": 1}})).await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = post("/v1/brokers/builtin/messages", json!({"topic": "payments", "body": 1})).await;
    assert_eq!(status, 403, "no broker route around the limit: {refused}");
    let (_, payments) = bida.get("/v1/topics/payments").await;
    assert_eq!(payments["published"], 0, "nothing reached the other topic");
    // An unlimited producer key of the same app publishes anywhere.
    let open = api_client(Some(&key(&bida, "producer", Some(&shop)).await.1));
    let (status, written) = read(
        open.post(format!("{}/v1/topics/payments/messages", bida.url))
            .json(&json!({"body": {"n": 2}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    // A limit names at least one topic, each a topic name.
    for topics in [json!([]), json!(["a b"])] {
        let (status, refused) = bida
            .post(
                &format!("/v1/apps/{shop}/keys"),
                json!({"name": "bad", "role": "producer", "topics": topics}),
            )
            .await;
        assert!(status == 400 || status == 422, "{status} {refused}");
    }
}
