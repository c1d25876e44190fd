//! The event store against the machine's Postgres, one database per test.

use bida_domain::task::Submission;
use bida_domain::task::{CallbackTask, ScheduleChange, TaskCommand, TaskEvent};
use bida_store::{
    Append, EventRepository, FeedPosition, FeedRead, NewEvent, ScheduleWrite, Store, StoreConfig, StoreError,
    WriterConfig,
};
use bida_testkit::TestDatabase;
use chrono::{Duration as ChronoDuration, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn open(db: &TestDatabase, writer: WriterConfig) -> Store {
    let config = StoreConfig {
        pool_size: 4,
        writer,
        ..StoreConfig::default()
    };
    Store::open(db.url(), &config).await.expect("open store")
}

fn event(aggregate_id: &str, sequence: i64) -> NewEvent {
    NewEvent {
        aggregate_type: Cow::Borrowed("test"),
        aggregate_id: aggregate_id.to_string(),
        sequence,
        event_type: Cow::Borrowed("Happened"),
        event_version: Cow::Borrowed("1"),
        payload: format!(r#"{{"n":{sequence}}}"#),
        metadata: None,
        epoch: 0,
    }
}

fn append(aggregate_id: &str, sequences: std::ops::RangeInclusive<i64>) -> Append {
    Append {
        events: sequences.map(|s| event(aggregate_id, s)).collect(),
        schedule: None,
        patient: false,
    }
}

#[tokio::test]
async fn creates_the_database_and_reports_ready() {
    let db = TestDatabase::reserve();
    let store = open(&db, WriterConfig::default()).await;
    let ready = store.readiness().await;
    assert!(ready.is_ready(), "{ready:?}");
}

#[tokio::test]
async fn concurrent_appends_are_group_committed() {
    let db = TestDatabase::create().await;
    let store = open(
        &db,
        WriterConfig {
            concurrency: 1,
            ..WriterConfig::default()
        },
    )
    .await;
    let appends = (0..500).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.append(append(&format!("a{i}"), 1..=2)).await })
    });
    for result in futures::future::join_all(appends).await {
        result.unwrap().unwrap();
    }
    let stats = store.writer_stats();
    let batches = stats.batches.load(Ordering::Relaxed);
    assert_eq!(stats.events.load(Ordering::Relaxed), 1_000);
    assert!(batches < 500, "500 concurrent appends took {batches} batches");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(count, 1_000);
}

#[tokio::test]
async fn a_taken_sequence_is_a_conflict_and_spares_the_rest_of_the_batch() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    store.append(append("x", 1..=2)).await.unwrap();

    // Stale writer on x, fresh writers elsewhere, all at once: only x fails.
    let stale = store.append(append("x", 2..=3));
    let fresh1 = store.append(append("y", 1..=1));
    let fresh2 = store.append(append("z", 1..=3));
    let (stale, fresh1, fresh2) = tokio::join!(stale, fresh1, fresh2);
    assert!(
        matches!(stale, Err(StoreError::Conflict { ref aggregate_id, sequence: 2, .. }) if aggregate_id == "x"),
        "{stale:?}"
    );
    fresh1.unwrap();
    fresh2.unwrap();
    assert_eq!(
        store.last_sequence("test", "x").await.unwrap(),
        2,
        "the stale append left nothing"
    );
    assert_eq!(store.last_sequence("test", "z").await.unwrap(), 3);

    // Two writers racing for the same next sequence: exactly one wins.
    let results = futures::future::join_all((0..8).map(|_| store.append(append("race", 1..=1)))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}

#[tokio::test]
async fn schedule_rows_follow_the_events_in_the_same_statement() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    let node = Uuid::new_v4();
    let due = Utc::now() + ChronoDuration::seconds(30);
    let mut first = append("t1", 1..=1);
    first.schedule = Some(ScheduleWrite {
        task_id: "t1".into(),
        change: ScheduleChange::Due(due),
        owner: Some(node),
        lane: None,
    });
    store.append(first).await.unwrap();
    let entries = store.schedule_of(&["t1".into()]).await.unwrap();
    assert_eq!(entries["t1"].owner, Some(node));
    assert_eq!(entries["t1"].due_at.timestamp_micros(), due.timestamp_micros());

    // A conflicting append must not touch the schedule either.
    let mut stale = append("t1", 1..=1);
    stale.schedule = Some(ScheduleWrite {
        task_id: "t1".into(),
        change: ScheduleChange::Clear,
        owner: None,
        lane: None,
    });
    assert!(store.append(stale).await.is_err());
    assert!(store.schedule_of(&["t1".into()]).await.unwrap().contains_key("t1"));

    let mut done = append("t1", 2..=2);
    done.schedule = Some(ScheduleWrite {
        task_id: "t1".into(),
        change: ScheduleChange::Clear,
        owner: None,
        lane: None,
    });
    store.append(done).await.unwrap();
    assert!(store.schedule_of(&["t1".into()]).await.unwrap().is_empty());
}

#[tokio::test]
async fn claims_are_disjoint_and_dead_nodes_lose_their_tasks() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    let now = Utc::now();
    for i in 0..40 {
        let id = format!("t{i}");
        let mut a = append(&id, 1..=1);
        a.schedule = Some(ScheduleWrite {
            task_id: id,
            change: ScheduleChange::Due(now),
            owner: None,
            lane: None,
        });
        store.append(a).await.unwrap();
    }
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    store.register_node(a, "a", "test", "-").await.unwrap();
    store.register_node(b, "b", "test", "-").await.unwrap();
    let (claimed_a, claimed_b) = tokio::join!(
        store.claim_due(a, Duration::ZERO, 25),
        store.claim_due(b, Duration::ZERO, 25)
    );
    let (claimed_a, claimed_b) = (claimed_a.unwrap(), claimed_b.unwrap());
    assert_eq!(claimed_a.len() + claimed_b.len(), 40);
    assert!(claimed_a.iter().all(|t| !claimed_b.contains(t)));
    assert!(store.claim_due(a, Duration::ZERO, 100).await.unwrap().is_empty());

    // b stops: its tasks go back to the shared schedule; a's stay a's.
    store.mark_node_stopped(b).await.unwrap();
    let freed = store
        .free_tasks_of_dead_nodes(a, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(freed as usize, claimed_b.len());
    // A node never frees its own, even with a heartbeat older than the ttl.
    assert_eq!(store.free_tasks_of_dead_nodes(a, Duration::ZERO).await.unwrap(), 0);
    let reclaimed = store.claim_due(a, Duration::ZERO, 100).await.unwrap();
    assert_eq!(reclaimed.len(), claimed_b.len());
}

#[tokio::test]
async fn the_feed_reads_in_commit_order_from_a_position() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    for i in 0..10 {
        store.append(append(&format!("f{i}"), 1..=3)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = FeedPosition::default();
    // An empty page only means "nothing readable yet": transactions of other
    // databases on the server (tests running alongside) hold the horizon back.
    for _ in 0..500 {
        if seen.len() == 30 {
            break;
        }
        let only_other_types = FeedRead {
            payload_types: Some(&["Nothing"]),
            without: &[],
        };
        let page = store.read_feed(after, 7, only_other_types).await.unwrap();
        let Some(last) = page.last() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        after = last.feed_position();
        assert!(
            page.iter().all(|e| e.payload.is_none()),
            "payloads only for asked types"
        );
        seen.extend(page.into_iter().map(|e| (e.aggregate_id, e.sequence)));
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(store.feed_head().await.unwrap(), after);
    let full = store
        .read_feed(FeedPosition::default(), 1, FeedRead::default())
        .await
        .unwrap();
    assert_eq!(
        full[0].payload.as_deref(),
        Some(r#"{"n":1}"#),
        "payloads come as written"
    );
}

#[tokio::test]
async fn the_feed_strips_a_skipped_path_from_large_payloads_only() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    let big = "x".repeat(bida_store::STRIP_ABOVE_BYTES as usize);
    // Paths are taken inside the event's type key (serde's enum tagging).
    let payloads = [
        r#"{"Happened":{"spec":{"body":"small"},"n":1}}"#.to_string(),
        format!(r#"{{"Happened":{{"spec":{{"body":"{big}"}},"n":2}}}}"#),
        // jsonb cannot hold NUL: such a payload comes whole, the feed goes on.
        format!(r#"{{"Happened":{{"spec":{{"body":"\u0000{big}"}},"n":3}}}}"#),
        // Each event's path starts at its own type.
        format!(r#"{{"Other":{{"spec":{{"body":"{big}"}},"n":4}}}}"#),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        store
            .append(Append {
                events: vec![NewEvent {
                    payload: payload.clone(),
                    event_type: Cow::Borrowed(if i == 3 { "Other" } else { "Happened" }),
                    ..event(&format!("p{i}"), 1)
                }],
                schedule: None,
                patient: false,
            })
            .await
            .unwrap();
    }
    let read = FeedRead {
        payload_types: None,
        without: &["spec", "body"],
    };
    let mut page = Vec::new();
    for _ in 0..500 {
        page = store.read_feed(FeedPosition::default(), 10, read).await.unwrap();
        if page.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let values: Vec<serde_json::Value> = page
        .iter()
        .map(|e| serde_json::from_str(e.payload.as_deref().unwrap()).unwrap())
        .collect();
    let expected: Vec<serde_json::Value> = vec![
        serde_json::from_str(&payloads[0]).unwrap(),
        serde_json::json!({"Happened": {"spec": {}, "n": 2}}),
        serde_json::from_str(&payloads[2]).unwrap(),
        serde_json::json!({"Other": {"spec": {}, "n": 4}}),
    ];
    assert_eq!(values, expected);
}

#[tokio::test]
async fn cqrs_es_runs_on_the_repository_and_keeps_the_schedule() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    let event_store = PersistedEventStore::new_event_store(EventRepository::new(store.clone()));
    let cqrs = CqrsFramework::<CallbackTask, _>::new(event_store, vec![], ());
    let spec = Submission {
        url: "http://127.0.0.1:9/hook".into(),
        ..Submission::default()
    }
    .into_spec("m1".into(), None, &Default::default(), &Default::default(), Utc::now())
    .unwrap();
    let at = Utc::now();
    cqrs.execute(
        "task-1",
        TaskCommand::Submit {
            spec: Arc::new(spec.clone()),
            at,
        },
    )
    .await
    .unwrap();
    let entries = store.schedule_of(&["task-1".into()]).await.unwrap();
    assert_eq!(entries["task-1"].owner, None, "free for any scheduler");

    let again = cqrs
        .execute(
            "task-1",
            TaskCommand::Submit {
                spec: Arc::new(spec),
                at,
            },
        )
        .await;
    assert!(matches!(again, Err(AggregateError::UserError(_))), "{again:?}");

    cqrs.execute("task-1", TaskCommand::Cancel { reason: None, at })
        .await
        .unwrap();
    assert!(store.schedule_of(&["task-1".into()]).await.unwrap().is_empty());
    let events = store.events_of("callback_task", "task-1").await.unwrap();
    let decoded: Vec<TaskEvent> = events.iter().map(|e| e.decode().unwrap()).collect();
    assert!(matches!(
        decoded[..],
        [TaskEvent::TaskSubmitted { .. }, TaskEvent::TaskCancelled { .. }]
    ));
}

#[tokio::test]
// The test holds a transaction open on purpose and awaits its begin to the end.
#[allow(clippy::disallowed_methods)]
async fn the_feed_never_skips_an_event_committed_out_of_position_order() {
    let db = TestDatabase::create().await;
    let store = open(&db, WriterConfig::default()).await;
    // A slow transaction takes a lower position...
    let mut slow = store.postgres_pool().unwrap().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload)
         VALUES ('test', 'slow', 1, 'Happened', '1', '{}')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    // ...while a later append commits first with a higher one.
    store.append(append("fast", 1..=1)).await.unwrap();
    let page = store
        .read_feed(FeedPosition::default(), 100, FeedRead::default())
        .await
        .unwrap();
    assert!(
        page.iter().all(|e| e.aggregate_id != "fast"),
        "a reader that took `fast` now would skip `slow` forever"
    );
    slow.commit().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = store
            .read_feed(FeedPosition::default(), 100, FeedRead::default())
            .await
            .unwrap();
        ids = page.into_iter().map(|e| e.aggregate_id).collect();
        if ids.len() == 2 {
            break;
        }
        // Transactions of other databases on the server hold the horizon back briefly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids, ["slow", "fast"]);
}

fn with_payload(aggregate_id: &str, payload: &str) -> Append {
    let mut a = append(aggregate_id, 1..=1);
    a.events[0].payload = payload.to_string();
    a
}

#[tokio::test]
async fn an_append_the_database_refuses_fails_alone() {
    let db = TestDatabase::create().await;
    let store = open(
        &db,
        WriterConfig {
            concurrency: 1,
            ..WriterConfig::default()
        },
    )
    .await;
    // A payload that is not JSON: that append must fail without taking its batch with it.
    let appends = (0..20).map(|i| {
        let payload = if i == 7 { r#"{"bad":"# } else { r#"{"ok":true}"# };
        store.append(with_payload(&format!("a{i}"), payload))
    });
    let results = futures::future::join_all(appends).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), i != 7, "append {i}: {result:?}");
    }
    assert!(matches!(results[7], Err(StoreError::Database(_))));
}

#[tokio::test]
async fn a_duplicate_waits_for_the_first_claimants_outcome() {
    let db = TestDatabase::create().await;
    let store = open(
        &db,
        WriterConfig {
            concurrency: 1,
            ..WriterConfig::default()
        },
    )
    .await;
    for round in 0..20 {
        let id = format!("dup{round}");
        // The first claimant of sequence 1 fails; the second must not be told
        // "conflict" for a sequence nobody took.
        let (first, second) = tokio::join!(
            store.append(with_payload(&id, r#"{"bad":"#)),
            store.append(with_payload(&id, r#"{"ok":true}"#)),
        );
        assert!(first.is_err());
        second.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(store.last_sequence("test", &id).await.unwrap(), 1);
    }
}
