//! Retention drops a day of finished tasks by partition and keeps the tasks of
//! that day that are still live, which go on as if nothing happened.

use bida_domain::task::{AttemptReport, CallbackTask, Submission, TaskCommand, TaskEvent, TaskStatus};
use bida_domain::Observation;
use bida_projections::{catch_up, lag, rebuild, RunnerConfig, TaskList};
use bida_store::{
    new_task_append, task_append, task_epoch, RetentionAction, RetentionPolicy, RetentionReport, Store, StoreConfig,
    StoreError, TASK_TYPE,
};
use bida_testkit::TestDatabase;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;

/// A task driven through the domain, as the actors drive it.
struct Driven {
    id: String,
    epoch: i32,
    task: CallbackTask,
    version: i64,
}

impl Driven {
    async fn submit(store: &Store, id: &str, max_attempts: u32, at: DateTime<Utc>) -> Self {
        let spec = Submission {
            url: "http://127.0.0.1:9/".into(),
            max_attempts: Some(max_attempts),
            // Apps on some tasks, none on others: the task counts keep both.
            source_app: id.starts_with('d').then(|| "shop".into()),
            ..Submission::default()
        }
        .into_spec(id.into(), None, &Default::default(), &Default::default(), at)
        .unwrap();
        let events = CallbackTask::default()
            .decide(TaskCommand::Submit {
                spec: Arc::new(spec),
                at,
            })
            .unwrap();
        store.append(new_task_append(id, &events, None).unwrap()).await.unwrap();
        Self {
            id: id.into(),
            epoch: task_epoch(at),
            task: CallbackTask::from_events(&events),
            version: events.len() as i64,
        }
    }

    fn next(&self, command: TaskCommand) -> Vec<TaskEvent> {
        self.task.decide(command).unwrap()
    }

    async fn record(&mut self, store: &Store, events: Vec<TaskEvent>) -> Result<(), StoreError> {
        store
            .append(task_append(&self.id, self.epoch, self.version, &events, None).unwrap())
            .await?;
        for event in &events {
            self.task.apply_event(event);
        }
        self.version += events.len() as i64;
        Ok(())
    }

    async fn attempt(&mut self, store: &Store, status: u16) {
        let report = AttemptReport {
            number: self.task.attempts() + 1,
            started_at: Utc::now(),
            latency_ms: 2,
            observation: Observation::Response {
                status,
                body: Default::default(),
                retry_after: None,
                stop_requested: false,
            },
            response_excerpt: None,
            signed: false,
            jitter_sample: 0.5,
        };
        let events = self.next(TaskCommand::RecordAttempt(report));
        self.record(store, events).await.unwrap();
    }
}

async fn task_view_ids(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM task_view ORDER BY id")
        .fetch_all(store.postgres_pool().unwrap())
        .await
        .unwrap()
}

/// The kept task counts agree with a count of the task list.
async fn assert_counts_agree(store: &Store) {
    let kept: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT status, source_app, target_app, n FROM task_counts WHERE n <> 0 ORDER BY 1, 2, 3")
            .fetch_all(store.postgres_pool().unwrap())
            .await
            .unwrap();
    let counted: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT status, COALESCE(source_app, ''), COALESCE(target_app, ''), count(*) FROM task_view
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(store.postgres_pool().unwrap())
    .await
    .unwrap();
    assert!(!counted.is_empty());
    assert_eq!(kept, counted);
}

/// Folds until the task list has read every event committed so far: other
/// databases' running transactions hold back every catch-up reader of the
/// cluster for a moment (`lag` counts what they hold back).
async fn caught_up(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        catch_up(store, &TaskList, &RunnerConfig::default()).await.unwrap();
        if lag(store, "task_list").await.unwrap() == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task list did not catch up in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Retention once the task list has read everything: other databases' running
/// transactions hold back every catch-up reader of the cluster for a moment.
async fn retain_when_read(store: &Store, action: RetentionAction) -> RetentionReport {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        catch_up(store, &TaskList, &RunnerConfig::default()).await.unwrap();
        let report = store.retain(&policy(action), Utc::now()).await.unwrap();
        if report.deferred.is_empty() || std::time::Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn policy(action: RetentionAction) -> RetentionPolicy {
    RetentionPolicy {
        completed_after: TimeDelta::days(7),
        dead_after: TimeDelta::days(30),
        action,
        // A few events per statement: a task's events fall into several runs.
        scan_events: 2,
    }
}

/// Tasks submitted ten days ago (their events recorded then too) in every
/// state retention must tell apart, and one of today.
async fn ten_days_of_history(store: &Store) -> Vec<Driven> {
    let now = Utc::now();
    let then = now - TimeDelta::days(10);
    store.ensure_partitions(then).await.unwrap();
    let mut delivered = Driven::submit(store, "delivered", 3, then).await;
    delivered.attempt(store, 200).await;
    let mut cancelled = Driven::submit(store, "cancelled", 3, then).await;
    let events = cancelled.next(TaskCommand::Cancel { reason: None, at: then });
    cancelled.record(store, events).await.unwrap();
    let mut retrying = Driven::submit(store, "retrying", 50, then).await;
    retrying.attempt(store, 500).await;
    let mut dead = Driven::submit(store, "dead", 1, then).await;
    dead.attempt(store, 500).await;
    let mut replayed = Driven::submit(store, "replayed", 1, then).await;
    replayed.attempt(store, 500).await;
    // Time passes: what was recorded so far was recorded ten days ago.
    sqlx::query("UPDATE events SET recorded_at = recorded_at - interval '10 days' WHERE aggregate_type = $1")
        .bind(TASK_TYPE)
        .execute(store.postgres_pool().unwrap())
        .await
        .unwrap();
    // Today an operator replays a dead letter of that day, and it goes through.
    let events = replayed.next(TaskCommand::Retry { at: now });
    replayed.record(store, events).await.unwrap();
    replayed.attempt(store, 200).await;
    let mut today = Driven::submit(store, "today", 3, now).await;
    today.attempt(store, 200).await;
    assert_eq!(
        [&delivered, &cancelled, &retrying, &dead, &replayed, &today].map(|t| t.task.status()),
        [
            TaskStatus::Delivered,
            TaskStatus::Cancelled,
            TaskStatus::Retrying,
            TaskStatus::Dead,
            TaskStatus::Delivered,
            TaskStatus::Delivered
        ]
    );
    vec![delivered, cancelled, retrying, dead, replayed, today]
}

#[tokio::test]
async fn an_expired_day_loses_its_finished_tasks_and_keeps_its_live_ones() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    // The task list has read what came before the history below.
    Driven::submit(&store, "first", 3, Utc::now()).await;
    while task_view_ids(&store).await.is_empty() {
        catch_up(&store, &TaskList, &RunnerConfig::default()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut tasks = ten_days_of_history(&store).await;
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();

    // The task list has not read the day yet: nothing may go before it has.
    let report = store.retain(&policy(RetentionAction::Drop), Utc::now()).await.unwrap();
    assert!(report.retained.is_empty(), "{report:?}");
    assert_eq!(report.deferred.len(), 1, "{report:?}");
    assert!(report.deferred[0].reason.contains("task_list"), "{report:?}");

    let report = retain_when_read(&store, RetentionAction::Drop).await;
    assert_eq!(report.retained.len(), 1, "{report:?}");
    let day = &report.retained[0];
    assert_eq!((day.dropped_tasks, day.kept_tasks), (2, 3), "{report:?}");
    assert_eq!(day.dropped_events, 4, "delivered: 2 events, cancelled: 2");
    assert!(day.dropped_bytes > 0);
    assert_eq!(report.rows_cleaned, 4, "two task_streams rows and two task_view rows");

    // The finished tasks are gone from the store and from the read model.
    assert!(store.load_task("delivered").await.unwrap().is_none());
    assert!(store.load_task("cancelled").await.unwrap().is_none());
    assert_eq!(
        task_view_ids(&store).await,
        ["dead", "first", "replayed", "retrying", "today"]
    );
    assert_counts_agree(&store).await;
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(events_after, events_before - 4);

    // The live ones kept their whole history, in their day's new partition.
    for driven in &tasks[2..] {
        let loaded = store.load_task(&driven.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, driven.version, "{}", driven.id);
        assert_eq!(loaded.epoch, driven.epoch, "{}", driven.id);
        assert_eq!(loaded.task.status(), driven.task.status(), "{}", driven.id);
    }
    // ... and go on: the retrying task is delivered, its sequence numbers
    // still guarded against a second writer.
    let retrying = &mut tasks[2];
    let stale = Driven {
        id: retrying.id.clone(),
        epoch: retrying.epoch,
        task: retrying.task.clone(),
        version: retrying.version,
    };
    retrying.attempt(&store, 200).await;
    assert_eq!(retrying.task.status(), TaskStatus::Delivered);
    let mut stale = stale;
    let events = stale.next(TaskCommand::Cancel {
        reason: None,
        at: Utc::now(),
    });
    assert!(matches!(
        stale.record(&store, events).await,
        Err(StoreError::Conflict { .. })
    ));
    caught_up(&store).await;
    let status: String = sqlx::query_scalar("SELECT status FROM task_view WHERE id = 'retrying'")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(status, "delivered");
    assert_counts_agree(&store).await;

    // A kept task's id stays taken on every day; a dropped one's is free again.
    let twin = CallbackTask::default()
        .decide(TaskCommand::Submit {
            spec: tasks[3].task.spec().unwrap().clone(),
            at: Utc::now(),
        })
        .unwrap();
    assert!(matches!(
        store.append(new_task_append("dead", &twin, None).unwrap()).await,
        Err(StoreError::Conflict { .. })
    ));
    Driven::submit(&store, "delivered", 3, Utc::now()).await;

    // Rebuilding the read model from what is left agrees with it.
    caught_up(&store).await;
    let incremental: Vec<(String, String)> = sqlx::query_as("SELECT id, doc::text FROM task_view ORDER BY id")
        .fetch_all(store.postgres_pool().unwrap())
        .await
        .unwrap();
    rebuild(&store, &TaskList, &RunnerConfig::default()).await.unwrap();
    caught_up(&store).await;
    let rebuilt: Vec<(String, String)> = sqlx::query_as("SELECT id, doc::text FROM task_view ORDER BY id")
        .fetch_all(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(rebuilt, incremental);
    assert_counts_agree(&store).await;

    // A second pass finds nothing more to do.
    let again = store.retain(&policy(RetentionAction::Drop), Utc::now()).await.unwrap();
    assert!(again.retained.is_empty() && again.deferred.is_empty(), "{again:?}");
    let logged: Vec<Option<i64>> = sqlx::query_scalar("SELECT held_ms FROM retention_log")
        .fetch_all(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert!(matches!(logged[..], [Some(held)] if held >= 0), "{logged:?}");
}

#[tokio::test]
async fn a_detached_day_is_kept_whole_as_an_archive_table() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    ten_days_of_history(&store).await;
    let report = retain_when_read(&store, RetentionAction::Detach).await;
    assert_eq!(report.retained.len(), 1, "{report:?}");
    let archive = report.retained[0].archived_as.clone().expect("an archive table");
    let archived: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT aggregate_id FROM {archive} ORDER BY aggregate_id"
    ))
    .fetch_all(store.postgres_pool().unwrap())
    .await
    .unwrap();
    assert_eq!(archived, ["cancelled", "dead", "delivered", "replayed", "retrying"]);
    assert_eq!(
        (report.retained[0].dropped_tasks, report.retained[0].kept_tasks),
        (2, 3)
    );
    assert!(store.load_task("delivered").await.unwrap().is_none());
    // The day can expire again later (its kept tasks finishing) without a clash.
    assert!(store.load_task("retrying").await.unwrap().is_some());
}

#[tokio::test]
async fn a_task_id_cannot_be_recorded_again_on_another_day() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    let now = Utc::now();
    store.ensure_partitions(now - TimeDelta::days(1)).await.unwrap();
    // A message consumed just before midnight, redelivered just after.
    Driven::submit(&store, "redelivered", 3, now - TimeDelta::days(1)).await;
    let again = CallbackTask::default()
        .decide(TaskCommand::Submit {
            spec: store
                .load_task("redelivered")
                .await
                .unwrap()
                .unwrap()
                .task
                .spec()
                .unwrap()
                .clone(),
            at: now,
        })
        .unwrap();
    assert!(matches!(
        store
            .append(new_task_append("redelivered", &again, None).unwrap())
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'redelivered'")
        .fetch_one(store.postgres_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

/// Tasks of an expired day that change while retention runs, between its
/// snapshot and its lock or while it holds the lock, are kept whole; the
/// others go. Randomized: which tasks change, how often and when (the seed is
/// printed; `BIDA_TEST_SEED` replays one), over several days in a row.
#[tokio::test]
async fn tasks_changing_while_their_day_is_retained_are_kept_whole() {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("BIDA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    println!("BIDA_TEST_SEED={seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    let mut changed_while_retained = 0;
    for round in 0..4 {
        let context = format!("seed {seed}, round {round}");
        let then = Utc::now() - TimeDelta::days(10 + round);
        store.ensure_partitions(then).await.unwrap();
        // Delivered and cancelled (gone), retrying (kept), dead long ago
        // (gone unless replayed while retention runs).
        let mut tasks = Vec::new();
        for n in 0..random.random_range(10..40) {
            let kind = random.random_range(0..4);
            let max_attempts = if kind == 3 { 1 } else { 100 };
            let mut task = Driven::submit(&store, &format!("r{round}-{n}-{kind}"), max_attempts, then).await;
            match kind {
                0 => task.attempt(&store, 200).await,
                1 => {
                    let events = task.next(TaskCommand::Cancel { reason: None, at: then });
                    task.record(&store, events).await.unwrap();
                }
                _ => task.attempt(&store, 500).await,
            }
            tasks.push(task);
        }
        let live_before: Vec<bool> = tasks.iter().map(|t| t.task.status() == TaskStatus::Retrying).collect();
        let versions_before: Vec<i64> = tasks.iter().map(|t| t.version).collect();
        sqlx::query(
            "UPDATE events SET recorded_at = recorded_at - interval '40 days'
             WHERE aggregate_type = $1 AND aggregate_id LIKE $2",
        )
        .bind(TASK_TYPE)
        .bind(format!("r{round}-%"))
        .execute(store.postgres_pool().unwrap())
        .await
        .unwrap();
        caught_up(&store).await;

        // While retention runs, retrying tasks fail again and dead ones are replayed.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let changing = std::mem::take(&mut tasks);
        let writer_seed = random.random::<u64>();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut random = rand::rngs::StdRng::seed_from_u64(writer_seed);
                let mut tasks = changing;
                let mut stopped = stopped;
                let mut appended = 0;
                loop {
                    let status = if random.random_ratio(1, 4) {
                        TaskStatus::Dead
                    } else {
                        TaskStatus::Retrying
                    };
                    let some: Vec<usize> = (0..tasks.len()).filter(|i| tasks[*i].task.status() == status).collect();
                    if !some.is_empty() {
                        let task = &mut tasks[some[random.random_range(0..some.len())]];
                        if status == TaskStatus::Dead {
                            let events = task.next(TaskCommand::Retry { at: Utc::now() });
                            task.record(&store, events).await.unwrap();
                        } else {
                            task.attempt(&store, 500).await;
                        }
                        appended += 1;
                    }
                    let pause = std::time::Duration::from_micros(random.random_range(0..3_000));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut stopped => return (tasks, appended),
                    }
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(random.random_range(0..30))).await;
        let day = then.date_naive();
        let retained = loop {
            let report = store.retain(&policy(RetentionAction::Drop), Utc::now()).await.unwrap();
            if let Some(retained) = report.retained.into_iter().find(|r| r.day == day) {
                break retained;
            }
            // The task list had not read the day yet: another database's
            // transaction held its readers back.
            catch_up(&store, &TaskList, &RunnerConfig::default()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        stop.send(()).unwrap();
        let (tasks, appended) = writer.await.unwrap();
        changed_while_retained += appended;

        // Each task has all its events, or lost its whole history at once (a
        // dead one replayed after the swap keeps only what came after).
        let stored: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT aggregate_id, min(sequence), max(sequence), count(*) FROM events
             WHERE aggregate_type = $1 AND aggregate_id LIKE $2 GROUP BY 1",
        )
        .bind(TASK_TYPE)
        .bind(format!("r{round}-%"))
        .fetch_all(store.postgres_pool().unwrap())
        .await
        .unwrap();
        let stored: std::collections::HashMap<String, (i64, i64, i64)> = stored
            .into_iter()
            .map(|(id, min, max, n)| (id, (min, max, n)))
            .collect();
        let mut dropped = 0;
        for (i, task) in tasks.iter().enumerate() {
            let context = format!("{context}, {}", task.id);
            match stored.get(&task.id) {
                Some(&(1, last, n)) => assert_eq!((last, n), (task.version, task.version), "{context}: events lost"),
                Some(&(first, last, n)) => {
                    assert!(!live_before[i], "{context}: a retrying task lost its start");
                    assert!(first > versions_before[i], "{context}: events of before the swap kept");
                    assert_eq!((last, n), (task.version, last - first + 1), "{context}: events lost");
                    dropped += 1;
                }
                None => {
                    assert!(!live_before[i], "{context}: a retrying task lost");
                    assert_eq!(
                        task.version, versions_before[i],
                        "{context}: a task replayed before the swap lost"
                    );
                    dropped += 1;
                }
            }
        }
        assert_eq!(
            (retained.dropped_tasks, retained.kept_tasks),
            (dropped, tasks.len() as i64 - dropped),
            "{context}: {retained:?}"
        );
        caught_up(&store).await;
        assert_counts_agree(&store).await;
    }
    assert!(
        changed_while_retained > 0,
        "seed {seed}: nothing changed while retention ran"
    );
}
