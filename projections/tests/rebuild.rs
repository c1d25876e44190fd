//! A rebuild from position 0 reproduces the read model folded incrementally.

use bida_domain::task::{CallbackTask, Origin, Submission, TaskCommand, TaskEvent};
use bida_domain::Observation;
use bida_projections::{catch_up, lag, rebuild, RunnerConfig, TaskFilter, TaskList};
use bida_store::{submission_epoch, task_append, Store, StoreConfig};
use bida_testkit::TestDatabase;
use chrono::Utc;
use std::sync::Arc;

async fn record(store: &Store, id: &str, task: &mut CallbackTask, version: &mut i64, command: TaskCommand) {
    let events: Vec<TaskEvent> = task.decide(command).unwrap();
    let epoch = match submission_epoch(&events) {
        Some(epoch) => epoch,
        None => store.task_stream_epoch(id).await.unwrap().unwrap(),
    };
    store
        .append(task_append(id, epoch, *version, &events, None).unwrap())
        .await
        .unwrap();
    for event in &events {
        task.apply_event(event);
    }
    *version += events.len() as i64;
}

async fn rows(store: &Store) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, status, doc::text FROM task_view ORDER BY id")
            .fetch_all(store.postgres_pool().unwrap())
            .await
            .unwrap();
    let counters: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT consumer_id, 'counters',
                concat_ws(',', consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead)
         FROM consumer_counters ORDER BY consumer_id",
    )
    .fetch_all(store.postgres_pool().unwrap())
    .await
    .unwrap();
    rows.extend(counters);
    rows
}

/// Folds until the task list has read every event committed so far; returns
/// the events folded. Other databases' running transactions (parallel tests)
/// hold back every catch-up reader of the cluster for a moment; `lag` counts
/// what they hold back.
async fn caught_up(store: &Store, config: &RunnerConfig) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut folded = 0;
    loop {
        folded += catch_up(store, &TaskList, config).await.unwrap();
        if lag(store, "task_list").await.unwrap() == 0 {
            return folded;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task list did not catch up in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rebuild_reproduces_the_incremental_read_model() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    let small_pages = RunnerConfig { page: 7, idle_ms: 1 };
    for n in 0..30 {
        let id = format!("task-{n:02}");
        let spec = Submission {
            url: "http://127.0.0.1:9/".into(),
            max_attempts: Some(2),
            source_app: Some(if n % 2 == 0 { "even" } else { "odd" }.into()),
            ..Submission::default()
        }
        .into_spec(id.clone(), None, &Default::default(), &Default::default(), Utc::now())
        .unwrap();
        let mut spec = spec;
        if n % 3 == 0 {
            spec.origin = Some(Origin {
                terms_version: None,
                consumer_id: format!("consumer-{}", n % 2),
                position: format!("t/0@{n}"),
                key: None,
            });
        }
        let (mut task, mut version) = (CallbackTask::default(), 0);
        record(
            &store,
            &id,
            &mut task,
            &mut version,
            TaskCommand::Submit {
                spec: Arc::new(spec),
                at: Utc::now(),
            },
        )
        .await;
        // Fold part of the stream between writes, so pages split tasks.
        if n % 4 == 0 {
            catch_up(&store, &TaskList, &small_pages).await.unwrap();
        }
        for attempt in 1..=(n % 4) {
            let report = bida_domain::task::AttemptReport {
                number: attempt as u32,
                started_at: Utc::now(),
                latency_ms: 3,
                observation: Observation::Response {
                    status: if n % 5 == 0 { 200 } else { 500 },
                    body: Default::default(),
                    retry_after: None,
                    stop_requested: false,
                },
                response_excerpt: None,
                signed: false,
                jitter_sample: 0.5,
            };
            if task.status().is_final() {
                break;
            }
            record(&store, &id, &mut task, &mut version, TaskCommand::RecordAttempt(report)).await;
        }
    }
    caught_up(&store, &small_pages).await;
    let incremental = rows(&store).await;
    assert_eq!(incremental.len(), 32, "30 tasks and 2 consumers");
    // The gauges agree with the task statuses they summarise.
    let (retrying, dead): (i64, i64) =
        sqlx::query_as("SELECT sum(retrying)::bigint, sum(dead)::bigint FROM consumer_counters")
            .fetch_one(store.postgres_pool().unwrap())
            .await
            .unwrap();
    let (retrying_tasks, dead_tasks): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'retrying'), count(*) FILTER (WHERE status = 'dead')
         FROM task_view WHERE consumer_id IS NOT NULL",
    )
    .fetch_one(store.postgres_pool().unwrap())
    .await
    .unwrap();
    assert_eq!((retrying, dead), (retrying_tasks, dead_tasks));
    assert!(
        retrying > 0 && dead > 0,
        "the workload leaves consumer tasks retrying and dead"
    );
    let dead = TaskList::ids(
        &store,
        &TaskFilter {
            status: Some(bida_domain::task::TaskStatus::Dead),
            ..Default::default()
        },
        100,
    )
    .await
    .unwrap();
    assert!(!dead.is_empty(), "the workload dead-letters some tasks");

    sqlx::query("UPDATE task_view SET status = 'corrupted'")
        .execute(store.postgres_pool().unwrap())
        .await
        .unwrap();
    let folded = rebuild(&store, &TaskList, &RunnerConfig::default()).await.unwrap()
        + caught_up(&store, &RunnerConfig::default()).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(folded as i64, events);
    assert_eq!(rows(&store).await, incremental);
}
