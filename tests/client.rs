//! The typed client (`bida-client`) against a real node and the machine's
//! RabbitMQ: a task submitted and delivered to a local endpoint, a message
//! written and read back from the queue, delayed messages listed, cancelled
//! and written when due, a consumer paused and resumed, members pulling a
//! pull consumer in SDK mode (`run`), and refusals as
//! typed problems naming their field. Each test has its own node and queue.

mod support;

use std::time::Duration;

use bida_client::{
    BrokerSpec, Client, ConsumerInput, ConsumerPatch, ConsumerState, Delay, DelayedQuery, DelayedState, DesiredState,
    Error, Message, PageQuery, PolicyInput, RequestEdit, ResendRequest, Submission, TaskQuery, TaskStatus,
};
use bida_testkit::rabbit::{self, TestQueue};
use bida_testkit::Receiver;
use serde_json::{json, Map, Value};
use support::{Bida, ADMIN_KEY};

const WAIT: Duration = Duration::from_secs(30);

fn client(bida: &Bida) -> Client {
    Client::builder(&bida.url, ADMIN_KEY)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client")
}

async fn rabbit_broker(bida: &Client) -> String {
    let broker = bida
        .register_broker(&BrokerSpec::rabbitmq("mq", rabbit::url()))
        .await
        .expect("registered");
    assert_eq!((broker.kind.as_str(), broker.online), ("rabbitmq", true), "{broker:?}");
    broker.id
}

/// `read` again until `done` says yes (lists follow the events a moment later).
async fn until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never there: {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_task(bida: &Client, id: &str, status: TaskStatus) -> bida_client::TaskDetail {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let task = bida.task(id).await.expect("the task");
        if task.summary.status == status {
            return task;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {status:?}: {task:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_task_is_submitted_once_delivered_listed_and_replayed() {
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let client = client(&bida);
    let params = json!({"order": 42, "status": "paid"});
    let task = Submission::new(endpoint.url("/paid"))
        .params(params.clone())
        .header("x-shop", "acme")
        .max_attempts(3)
        .apps(Some("shop"), Some("orders"));

    let first = client
        .submit_task(&task, Some("order-42-paid"))
        .await
        .expect("submitted");
    assert!(!first.replayed);
    assert_eq!(first.task.url, endpoint.url("/paid"));
    let again = client
        .submit_task(&task, Some("order-42-paid"))
        .await
        .expect("submitted again");
    assert!(again.replayed, "the same key answers the same task");
    assert_eq!(again.task.id, first.task.id);

    let delivered = wait_task(&client, &first.task.id, TaskStatus::Delivered).await;
    assert_eq!(delivered.attempts.len(), 1, "{delivered:?}");
    assert_eq!(delivered.attempts[0].status_code, Some(200));
    assert_eq!(delivered.policy.max_attempts, 3);
    assert_eq!(delivered.summary.source_app.as_deref(), Some("shop"));
    let hits = endpoint.hits();
    assert_eq!(hits.len(), 1, "delivered once");
    assert_eq!(hits[0].path, "/paid");
    assert_eq!(hits[0].header("x-shop"), Some("acme"));
    assert_eq!(serde_json::from_slice::<Value>(&hits[0].body).ok(), Some(params));

    let again = client.retry_task(&first.task.id).await.expect_err("delivered already");
    assert_eq!(
        again.problem().map(|p| (p.status, p.short_kind())),
        Some((409, "invalid-state")),
        "{again}"
    );

    // A task for later, cancelled, then replayed to another path.
    let later = client
        .submit_task(
            &Submission::new(endpoint.url("/later")).delay(Duration::from_secs(3600)),
            None,
        )
        .await
        .expect("submitted");
    assert_eq!(later.task.status, TaskStatus::Pending);
    let cancelled = client
        .cancel_task(&later.task.id, Some("not wanted"))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.summary.status, TaskStatus::Cancelled);
    let edit = RequestEdit {
        url: Some(endpoint.url("/fixed")),
        ..RequestEdit::default()
    };
    client.replay_task(&later.task.id, Some(&edit)).await.expect("replayed");
    wait_task(&client, &later.task.id, TaskStatus::Delivered).await;
    assert!(endpoint.hits().iter().any(|hit| hit.path == "/fixed"));

    // Lists: a filter, and pages of one followed to the end.
    let shop_delivered = TaskQuery {
        source_app: Some("shop".into()),
        status: Some(TaskStatus::Delivered),
        ..TaskQuery::default()
    };
    let page = until(
        || client.tasks(&shop_delivered),
        |page| page.as_ref().is_ok_and(|p| !p.items.is_empty()),
    )
    .await
    .expect("a page");
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert_eq!(page.items[0].id, first.task.id);
    let mut expected = vec![first.task.id.clone(), later.task.id.clone()];
    expected.sort();
    let one_a_page = TaskQuery {
        limit: Some(1),
        ..TaskQuery::default()
    };
    let all = until(
        || async {
            let mut ids: Vec<String> = client
                .task_pages(&one_a_page)
                .collect_all()
                .await
                .expect("every page")
                .into_iter()
                .filter(|t| t.status == TaskStatus::Delivered)
                .map(|t| t.id)
                .collect();
            ids.sort();
            ids
        },
        |ids| *ids == expected,
    )
    .await;
    assert_eq!(all, expected);
}

#[tokio::test]
async fn messages_are_written_to_rabbitmq_and_read_back() {
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let client = client(&bida);
    let broker = rabbit_broker(&client).await;
    let seen = client.broker(&broker).await.expect("the broker");
    assert!(seen.health.as_ref().is_some_and(|h| h.reachable), "{seen:?}");
    let listed = client.brokers(&PageQuery::default()).await.expect("brokers");
    assert!(listed.items.iter().any(|b| b.id == broker));

    let written = client
        .produce(
            &broker,
            Message::json(json!({"id": 42}))
                .field("routing_key", queue.name.as_str())
                .field("message_id", "m-42"),
        )
        .await
        .expect("written");
    assert_eq!(written.index, 0);
    assert_eq!(written.get("routing_key"), Some(&json!(queue.name)));
    assert_eq!(written.get("confirmed"), Some(&json!(true)));

    let binary = vec![0u8, 0xFF, b'\n', 0x80];
    let batch = client
        .produce_batch(
            &broker,
            vec![
                Message::bytes(&binary)
                    .field("routing_key", queue.name.as_str())
                    .content_type("application/x-thing")
                    .header("tenant", "acme"),
                Message::json(json!("two")).field("routing_key", queue.name.as_str()),
            ],
        )
        .await
        .expect("a batch written");
    assert_eq!(batch.iter().map(|w| w.index).collect::<Vec<_>>(), vec![0, 1]);

    let read = queue.get_all().await;
    assert_eq!(read.len(), 3, "{read:?}");
    assert_eq!(read[0].body, br#"{"id":42}"#);
    assert_eq!(read[0].message_id.as_deref(), Some("m-42"));
    assert_eq!(read[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(read[1].body, binary);
    assert_eq!(read[1].content_type.as_deref(), Some("application/x-thing"));
    assert_eq!(read[1].headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(read[2].body, br#""two""#);
}

#[tokio::test]
async fn delayed_messages_are_listed_cancelled_and_written_when_due() {
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let client = client(&bida);
    let broker = rabbit_broker(&client).await;
    let message = || Message::json(json!({"id": 7})).field("routing_key", queue.name.as_str());

    let held = client
        .produce_delayed(&broker, message(), Delay::After(Duration::from_secs(3600)))
        .await
        .expect("held");
    let id = held.id.clone().expect("one message: its id");
    assert_eq!(held.messages.len(), 1);
    assert_eq!(held.messages[0].id, id);
    let pending = client.delayed(&id).await.expect("the delayed message");
    assert_eq!(pending.summary.state, DelayedState::Pending);
    assert_eq!(pending.summary.broker_id, broker);
    assert_eq!(pending.summary.destination, queue.name);
    assert_eq!(pending.summary.deliver_at, held.messages[0].deliver_at);
    assert_eq!(pending.message.get("routing_key"), Some(&json!(queue.name)));

    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let due = client
        .produce_delayed_batch(&broker, vec![(message().field("message_id", "soon"), Delay::At(soon))])
        .await
        .expect("held");
    assert_eq!(due.id, None, "a batch: ids in messages");
    let due_id = due.messages[0].id.clone();

    let pending_here = DelayedQuery {
        state: Some(DelayedState::Pending),
        broker_id: Some(broker.clone()),
        topic: Some(queue.name.clone()),
        ..DelayedQuery::default()
    };
    let mut expected = vec![id.clone(), due_id.clone()];
    expected.sort();
    let listed = until(
        || async {
            let page = client.delayed_list(&pending_here).await.expect("a page");
            let mut ids: Vec<String> = page.items.into_iter().map(|d| d.id).collect();
            ids.sort();
            ids
        },
        |ids| *ids == expected,
    )
    .await;
    assert_eq!(listed, expected);

    let cancelled = client.cancel_delayed(&id).await.expect("cancelled");
    assert_eq!(cancelled.summary.state, DelayedState::Cancelled);
    let again = client.cancel_delayed(&id).await.expect_err("cancelled already");
    assert_eq!(again.status(), Some(409), "{again}");

    // The other one is written when due.
    let deadline = tokio::time::Instant::now() + WAIT;
    let produced = loop {
        let message = client.delayed(&due_id).await.expect("the delayed message");
        if message.summary.state == DelayedState::Produced {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "never produced: {message:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(produced.summary.landed.is_some(), "{produced:?}");
    let read = queue.get_all().await;
    assert_eq!(read.len(), 1, "only the one not cancelled: {read:?}");
    assert_eq!(read[0].message_id.as_deref(), Some("soon"));
    let one_a_page = DelayedQuery {
        limit: Some(1),
        ..DelayedQuery::default()
    };
    let states = until(
        || async {
            let all = client
                .delayed_pages(&one_a_page)
                .collect_all()
                .await
                .expect("every page");
            let mut states: Vec<DelayedState> = all.into_iter().map(|d| d.state).collect();
            states.sort_by_key(|s| format!("{s:?}"));
            states
        },
        |states| *states == [DelayedState::Cancelled, DelayedState::Produced],
    )
    .await;
    assert_eq!(states.len(), 2);
}

#[tokio::test]
async fn a_consumer_is_created_paused_resumed_and_deleted() {
    let queue = TestQueue::declare().await;
    let endpoint = Receiver::ok().await;
    let bida = Bida::start("").await;
    let client = client(&bida);
    let broker = rabbit_broker(&client).await;
    let mut source = Map::new();
    source.insert("queue".into(), json!(queue.name));
    let created = client
        .create_consumer(&ConsumerInput::new("orders", &broker, source, endpoint.url("/in")))
        .await
        .expect("created");
    assert_eq!(created.desired_state, DesiredState::Running);
    assert_eq!(created.source.get("queue"), Some(&json!(queue.name)));
    let id = created.id;

    let wait_state = |state: ConsumerState| {
        let client = client.clone();
        let id = id.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let consumer = client.consumer(&id).await.expect("the consumer");
                if consumer.state == state {
                    return consumer;
                }
                assert!(tokio::time::Instant::now() < deadline, "never {state:?}: {consumer:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_state(ConsumerState::Running).await;

    let paused = client.pause_consumer(&id).await.expect("paused");
    assert_eq!(paused.desired_state, DesiredState::Paused);
    wait_state(ConsumerState::Paused).await;
    client
        .produce(
            &broker,
            Message::json(json!({"n": 1})).field("routing_key", queue.name.as_str()),
        )
        .await
        .expect("written");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(endpoint.hit_count(), 0, "nothing delivered while paused");

    let resumed = client.resume_consumer(&id).await.expect("resumed");
    assert_eq!(resumed.desired_state, DesiredState::Running);
    assert!(endpoint.wait_for_hits(1, WAIT).await, "delivered once resumed");
    assert_eq!(
        serde_json::from_slice::<Value>(&endpoint.hits()[0].body).ok(),
        Some(json!({"n": 1}))
    );

    // The delivered message sent again, as a new task.
    let consumer_tasks = TaskQuery {
        consumer_id: Some(id.clone()),
        ..TaskQuery::default()
    };
    let page = until(
        || client.tasks(&consumer_tasks),
        |page| page.as_ref().is_ok_and(|p| p.items.len() == 1),
    )
    .await
    .expect("the consumer's task");
    let resent = client
        .resend(&id, &ResendRequest::task(&page.items[0].id))
        .await
        .expect("resent");
    assert_eq!(resent.len(), 1);
    assert_ne!(resent[0], page.items[0].id);
    assert!(endpoint.wait_for_hits(2, WAIT).await, "delivered again");
    wait_task(&client, &resent[0], TaskStatus::Delivered).await;

    // Stopped and started again.
    let stopped = client.stop_consumer(&id).await.expect("stopped");
    assert_eq!(stopped.desired_state, DesiredState::Stopped);
    wait_state(ConsumerState::Stopped).await;
    client.start_consumer(&id).await.expect("started");
    wait_state(ConsumerState::Running).await;

    let patched = client
        .patch_consumer(
            &id,
            &ConsumerPatch {
                policy: Some(PolicyInput {
                    concurrency: Some(3),
                    ..PolicyInput::default()
                }),
                ..ConsumerPatch::default()
            },
        )
        .await
        .expect("patched");
    assert_eq!(patched.policy["concurrency"], 3, "{patched:?}");
    let listed = client.consumers(&PageQuery::default()).await.expect("consumers");
    assert_eq!(
        listed.items.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    client.delete_consumer(&id).await.expect("deleted");
    let gone = client.consumer(&id).await.expect_err("deleted");
    assert_eq!(gone.problem().map(|p| p.short_kind()), Some("not-found"), "{gone}");
}

#[tokio::test]
async fn refusals_are_typed_problems_naming_their_field() {
    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let client = client(&bida);

    let error = client
        .submit_task(&Submission::new("not a url"), None)
        .await
        .expect_err("refused");
    let Error::Api(problem) = &error else {
        panic!("not a problem: {error:?}");
    };
    assert_eq!(
        (problem.status, problem.short_kind()),
        (422, "validation-failed"),
        "{problem:?}"
    );
    assert!(problem.field("url").is_some(), "{problem:?}");

    // The broker refuses the second message of a batch: the first is
    // written, and the problem says so.
    let broker = rabbit_broker(&client).await;
    let error = client
        .produce_batch(
            &broker,
            vec![
                Message::json(json!(1)).field("routing_key", queue.name.as_str()),
                Message::json(json!(2)).field("routing_key", format!("{}-nowhere", queue.name)),
            ],
        )
        .await
        .expect_err("refused");
    let problem = error.problem().expect("a problem");
    assert_eq!(problem.status, 422, "{problem:?}");
    assert!(problem.field("messages[1].routing_key").is_some(), "{problem:?}");
    let written = problem.written.as_ref().expect("what was written");
    assert_eq!(
        written.iter().map(|w| w.index).collect::<Vec<_>>(),
        vec![0],
        "{problem:?}"
    );
    assert_eq!(queue.get_all().await.len(), 1);

    let missing = client
        .produce("no-such-broker", Message::json(json!(1)))
        .await
        .expect_err("no broker");
    assert_eq!(missing.status(), Some(404), "{missing}");

    let unauthorized = Client::new(&bida.url, "bida_not_a_key")
        .unwrap()
        .task("x")
        .await
        .expect_err("no key");
    assert_eq!(unauthorized.status(), Some(401), "{unauthorized}");
}

/// SDK mode against the real node: two members run `pull_consumer(..).run`
/// on one pull consumer; the handler fails each message's first delivery to
/// one member, so those are nacked and come back; every message is handled
/// to success once, and the members stop gracefully with nothing left
/// unsettled. The members list shows both with their client version.
#[tokio::test]
async fn members_run_a_pull_consumer_in_sdk_mode() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    let queue = TestQueue::declare().await;
    let bida = Bida::start("").await;
    let client = client(&bida);
    let broker = rabbit_broker(&client).await;
    let mut source = Map::new();
    source.insert("queue".into(), json!(queue.name));
    let mut input = ConsumerInput::pull("orders-pull", &broker, source);
    input.policy = Some(PolicyInput {
        concurrency: Some(4),
        backoff: serde_json::from_value(json!({"initial_ms": 50, "max_ms": 200})).unwrap(),
        ..PolicyInput::default()
    });
    let consumer = client.create_consumer(&input).await.expect("created");
    assert!(consumer.endpoint.as_pull().is_some(), "{consumer:?}");
    queue
        .publish((0..60).map(|i| (Some(format!("m{i}")), format!(r#"{{"n":{i}}}"#).into_bytes())))
        .await;

    // Per body: which member handled it, and how (true: succeeded).
    type Handled = BTreeMap<String, Vec<(String, bool)>>;
    let handled: Arc<Mutex<Handled>> = Arc::default();
    let done = || {
        handled
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.iter().any(|(_, ok)| *ok))
            .count()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let member = |name: &'static str| {
        let (client, handled, mut stopped) = (client.clone(), handled.clone(), stopped.clone());
        let id = consumer.id.clone();
        async move {
            client
                .pull_consumer(id, name)
                .client_version("e2e/1")
                .wait(Duration::from_secs(2))
                .run(
                    move |message| {
                        let handled = handled.clone();
                        async move {
                            let body = message.text().unwrap_or_default().to_string();
                            let n: u64 = message.json::<Value>().unwrap()["n"].as_u64().unwrap();
                            // member-a fails the first delivery of every third message.
                            let ok = !(name == "member-a" && n.is_multiple_of(3) && message.attempt == 1);
                            handled
                                .lock()
                                .unwrap()
                                .entry(body)
                                .or_default()
                                .push((name.to_string(), ok));
                            if ok {
                                Ok(())
                            } else {
                                Err(format!("refused {n} on purpose"))
                            }
                        }
                    },
                    async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                )
                .await
        }
    };
    let watcher = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while done() < 60 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send(true).unwrap();
    };
    let (a, b, ()) = tokio::join!(member("member-a"), member("member-b"), watcher);
    let (a, b) = (a.expect("member-a ran"), b.expect("member-b ran"));
    let handled = handled.lock().unwrap().clone();
    assert_eq!(
        handled.keys().cloned().collect::<BTreeSet<_>>(),
        (0..60).map(|i| format!(r#"{{"n":{i}}}"#)).collect(),
        "every message handled"
    );
    for (body, tries) in &handled {
        assert_eq!(tries.iter().filter(|(_, ok)| *ok).count(), 1, "{body}: {tries:?}");
    }
    assert_eq!(a.acked + b.acked, 60, "{a:?} {b:?}");
    assert_eq!(a.unsettled + b.unsettled, 0, "{a:?} {b:?}");
    let refused = handled.values().flatten().filter(|(_, ok)| !ok).count() as u64;
    assert_eq!(a.nacked + b.nacked, refused, "{a:?} {b:?}");

    let members = client.members(&consumer.id).await.expect("members");
    for name in ["member-a", "member-b"] {
        let member = members.member(name).unwrap_or_else(|| panic!("{name}: {members:?}"));
        assert_eq!(member.client_version.as_deref(), Some("e2e/1"));
        assert!(member.alive, "{member:?}");
        assert_eq!(member.leases_in_flight, 0, "{member:?}");
    }
    let view = until(
        || client.consumer(&consumer.id),
        |c| c.as_ref().is_ok_and(|c| c.counters.delivered == 60),
    )
    .await
    .unwrap();
    assert_eq!(view.counters.dead, 0);
}
