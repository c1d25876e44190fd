//! History: finished tasks in the store, filled by SQL (`bench/sql/fill_tasks.sql`)
//! with the node stopped, over the seven days before today and today so far.
//! Then, with the node running: `GET /v1/tasks` by each of its filters and
//! the console's search, a request at a time; a rebuild of the task list
//! (`bida projections rebuild task_list`, as `mq` times it); and a start
//! with `retention.completed_days = 6`, timed until the oldest day's
//! delivered tasks are gone (its dead ones stay, `dead_days` being 30).

use anyhow::Context;
use bida_domain::task::{AttemptRecord, TaskEvent, TaskSpec, TaskSummary};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde_json::json;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{seconds, until};
use crate::process::{self, BidaProcess, StoreKind};
use crate::report::{self, Table};

const FILL: &str = include_str!("../../sql/fill_tasks.sql");
/// Tasks per fill statement: big enough that a round trip is nothing, small
/// enough that one transaction's WAL and memory stay modest.
const CHUNK: u64 = 250_000;
/// Stands for each task's own time in the rendered texts.
const PLACEHOLDER_TIME: &str = "2000-01-01T00:00:00Z";
/// The node while tasks are listed: no retention pass runs meanwhile.
const WITHOUT_RETENTION: &str = "[retention]\nenabled = false\n";
/// One day fewer than the history spans: its oldest day expires.
const RETAIN_SIX_DAYS: &str = "[retention]\ncompleted_days = 6\n";
const DAY: i64 = 86_400;

pub async fn run(sizes: &[u64], requests: usize) -> anyhow::Result<Vec<Table>> {
    let queries = queries();
    let mut header = vec!["tasks"];
    header.extend(queries.iter().map(|(name, _)| *name));
    let mut lists = Table::new(
        "History: task list and search, p50 / p99 of one request at a time",
        &header,
    );
    lists.note(format!(
        "{requests} requests each after one to warm up, 50 tasks a page. Filled tasks: 1 in 10 dead \
         (an API task), the rest consumers' messages (4 consumers) delivered at their first attempt; \
         20 apps, 50 hosts and rare.example.com (1 in 100,000, delivered: no index holds it, the list is \
         read); app-3 has no dead task (an app's dead tasks have an index, migration 0014). \
         Searches are the console's (`/tasks?q=`)."
    ));
    let mut store = Table::new(
        "History: the store",
        &[
            "tasks",
            "fill by SQL",
            "database",
            "task-list rebuild",
            "retention of the oldest day: spawn → done (appends held back)",
        ],
    );
    for &size in sizes {
        let (list, kept) = measure(size, requests, &queries).await?;
        lists.row(list);
        store.row(kept);
    }
    Ok(vec![lists, store])
}

/// The requests timed, by name: a path and its query (`@ID@`, `@BODY@`,
/// `@DAY@`, `@NEXT@` filled in per size).
fn queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("newest first", "/v1/tasks"),
        ("status=dead", "/v1/tasks?status=dead"),
        ("app", "/v1/tasks?app=app-10"),
        ("status=dead&app", "/v1/tasks?status=dead&app=app-10"),
        ("status=dead&app (none dead)", "/v1/tasks?status=dead&app=app-3"),
        ("consumer", "/v1/tasks?consumer_id=consumer-1"),
        ("endpoint host", "/v1/tasks?endpoint_host=hook-7.example.com"),
        ("endpoint host, 1 in 100k", "/v1/tasks?endpoint_host=rare.example.com"),
        ("one day", "/v1/tasks?created_after=@DAY@&created_before=@NEXT@"),
        (
            "status=dead, one day",
            "/v1/tasks?status=dead&created_after=@DAY@&created_before=@NEXT@",
        ),
        ("search: task id", "/tasks?q=@ID@"),
        ("search: body text", "/tasks?q=@BODY@"),
        ("search: text found nowhere", "/tasks?q=no+such+text+anywhere"),
    ]
}

async fn measure(size: u64, requests: usize, queries: &[(&str, &str)]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut bida = BidaProcess::start(WITHOUT_RETENTION, StoreKind::Postgres).await?;
    bida.stop().await?;
    let now = Utc::now().timestamp();
    // From the start of the day a week ago until now: that day is whole.
    let from = (now / DAY - 7) * DAY;
    let filled = Instant::now();
    fill(&bida, size, from, now).await?;
    let filled = filled.elapsed();
    eprintln!("history: {size} tasks filled in {}", seconds(filled));
    let bytes = bida.database_bytes().await?;
    bida.start_again(WITHOUT_RETENTION).await?;

    let mut row = vec![size.to_string()];
    let api = process::api_client(reqwest::Client::builder())?;
    let console = console_client(&bida).await?;
    let samples = samples(&bida, size, now).await?;
    for (name, query) in queries {
        let path = samples
            .iter()
            .fold(query.to_string(), |path, (from, to)| path.replace(from, to));
        let http = if path.starts_with("/v1/") { &api } else { &console };
        let timed = time_requests(http, &format!("{}{path}", bida.url), requests)
            .await
            .with_context(|| format!("{name}: {path}"))?;
        row.push(match timed {
            Timed::Answered { latency, cut } => format!(
                "{:.1} / {}{}",
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                report::p99_millis(&latency),
                if cut > 0 {
                    format!(" ({cut} of {requests} cut short)")
                } else {
                    String::new()
                }
            ),
            Timed::Refused { status, after, detail } => {
                eprintln!("history: {name} answered {status} after {}: {detail}", seconds(after));
                format!("{} after {}: {detail}", status.as_u16(), seconds(after))
            }
        });
    }

    let events = bida.count_events().await?;
    let rebuilding = Instant::now();
    bida.rebuild_projection()?;
    let rebuilt = rebuilding.elapsed();
    eprintln!("history: lists timed, task list rebuilt in {}", seconds(rebuilt));

    // A day that is not dropped in time is a finding of the size (the
    // node's log says why); the figures above still count.
    let retention = match retain_oldest_day(&mut bida, from).await {
        Ok((took, dropped)) => format!("{} ({dropped})", seconds(took)),
        Err(e) => {
            eprintln!("history: retention of the oldest day: {e:#}");
            format!("not done: {e:#}")
        }
    };
    let store = vec![
        size.to_string(),
        format!(
            "{} ({:.0} tasks/s)",
            seconds(filled),
            size as f64 / filled.as_secs_f64()
        ),
        format!("{} MiB ({:.0} bytes a task)", bytes >> 20, bytes as f64 / size as f64),
        format!(
            "{} ({events} events, {:.0}/s)",
            seconds(rebuilt),
            events as f64 / rebuilt.as_secs_f64()
        ),
        retention,
    ];
    Ok((row, store))
}

/// Fills `size` tasks created evenly from `from` until `now` (epoch seconds),
/// then moves the catch-up readers past them, as if they had folded them.
async fn fill(bida: &BidaProcess, size: u64, from: i64, now: i64) -> anyhow::Result<()> {
    let mut connection = bida.connect().await?;
    sqlx::query("SELECT bida_events_partition(d) FROM generate_series($1::int, $2::int) AS d")
        .bind((from / DAY) as i32)
        .bind((now / DAY) as i32)
        .execute(&mut connection)
        .await?;
    let (dead, delivered) = texts()?;
    for first in (1..=size).step_by(CHUNK as usize) {
        sqlx::query(FILL)
            .bind(first as i64)
            .bind((first + CHUNK - 1).min(size) as i64)
            .bind(size as i64)
            .bind(from as f64)
            .bind((now - from) as f64)
            .bind(&dead)
            .bind(&delivered)
            .execute(&mut connection)
            .await
            .context("fill a chunk of tasks")?;
    }
    for statement in [
        "DELETE FROM task_counts",
        "INSERT INTO task_counts (status, source_app, target_app, n)
         SELECT status, COALESCE(source_app, ''), COALESCE(target_app, ''), count(*) FROM task_view GROUP BY 1, 2, 3",
        // Readers would otherwise fold every filled event again, and
        // retention would wait for them; the telemetry mark of the task list
        // too: a rebuild would set it at the fill's last event, and retention
        // waits for a mark not past a day's last transaction.
        "INSERT INTO projection_checkpoints (name, transaction_id, position)
         SELECT name, pg_current_xact_id(), (SELECT COALESCE(max(position), 0) FROM events)
         FROM unnest(ARRAY['task_list', 'task_list.counted', 'notifier']) AS name
         ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position",
        "ANALYZE",
    ] {
        sqlx::query(statement).execute(&mut connection).await?;
    }
    Ok(())
}

/// The events and list document of a dead task and of a delivered one,
/// rendered from the domain's types with placeholders the fill replaces.
fn texts() -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let at: DateTime<Utc> = PLACEHOLDER_TIME.parse()?;
    let spec = |consumer: bool| -> anyhow::Result<Arc<TaskSpec>> {
        let mut spec = json!({
            "message_id": "@ID@",
            "request": {"url": "https://@HOST@/paid", "method": "POST",
                        "headers": {"content-type": "application/json"},
                        "body": {"text": "{\"order\":@ORDER@,\"status\":\"paid\"}"}},
            "policy": {"max_attempts": 5, "timeout_ms": 3000,
                       "backoff": {"initial_ms": 500, "max_ms": 3_600_000, "multiplier": 2.0},
                       "retry_on": ["5xx", "408", "429"]},
            "source_app": "@APP@",
        });
        if consumer {
            spec["origin"] = json!({"consumer_id": "@CONSUMER@", "position": "orders/0@@ORDER@"});
        }
        Ok(Arc::new(serde_json::from_value(spec)?))
    };
    let attempt = |status_code: u16| AttemptRecord {
        number: 1,
        started_at: at,
        latency_ms: 12,
        status_code: Some(status_code),
        grpc_status: None,
        error: None,
        response_excerpt: None,
        timed_out: false,
        signed: false,
    };
    let rendered = |events: &[TaskEvent]| -> anyhow::Result<Vec<String>> {
        let mut summary = TaskSummary::start("@ID@", &events[0]).context("a submission")?;
        for event in &events[1..] {
            summary.apply(event);
        }
        let mut texts = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        texts.push(serde_json::to_string(&summary)?);
        anyhow::ensure!(
            texts.iter().all(|t| t.contains(PLACEHOLDER_TIME)),
            "a text without the placeholder time"
        );
        Ok(texts)
    };
    let dead = rendered(&[
        TaskEvent::TaskSubmitted {
            spec: spec(false)?,
            submitted_at: at,
            due_at: at,
        },
        TaskEvent::TaskDeadLettered {
            reason: "gave up after 5 attempts: HTTP 503".into(),
            at,
        },
    ])?;
    let delivered = rendered(&[TaskEvent::MessageDelivered {
        spec: spec(true)?,
        submitted_at: at,
        attempt: attempt(200),
    }])?;
    Ok((dead, delivered))
}

/// What the queries' placeholders stand for in this store: a task id and
/// the body of a task of the last day, and a whole day three days ago.
async fn samples(bida: &BidaProcess, size: u64, now: i64) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut connection = bida.connect().await?;
    let id: String = sqlx::query_scalar("SELECT id FROM task_view ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1")
        .bind((size / 200) as i64)
        .fetch_one(&mut connection)
        .await?;
    // Tasks are numbered in time order: this one is of the last day.
    let body = format!("{{\"order\":{},\"status\":\"paid\"}}", size - size / 1000);
    let day = |days_ago: i64| {
        DateTime::from_timestamp((now / DAY - days_ago) * DAY, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let encode = |text: &str| form(&[("q", text)])["q=".len()..].to_string();
    Ok(vec![
        ("@ID@", id),
        ("@BODY@", encode(&body)),
        ("@DAY@", encode(&day(3))),
        ("@NEXT@", encode(&day(2))),
    ])
}

/// How one filter's requests went.
enum Timed {
    /// Each answered with success: their latencies, in µs, and how many
    /// pages were cut short at their time budget (a filter no index serves).
    Answered { latency: Histogram<u64>, cut: usize },
    /// Bida answered one with a server error (the database gave up on its
    /// statement, say): a finding of the size, not a failure of the bench.
    /// The rest are not sent, since each would wait as long.
    Refused {
        status: reqwest::StatusCode,
        after: Duration,
        detail: String,
    },
}

/// `requests` GETs of `url` one after another (after one to warm up).
async fn time_requests(http: &reqwest::Client, url: &str, requests: usize) -> anyhow::Result<Timed> {
    let mut latency = Histogram::<u64>::new(3)?;
    let mut cut = 0;
    for n in 0..=requests {
        let sent = Instant::now();
        let response = http.get(url).send().await?;
        let status = response.status();
        let body = response.text().await?;
        if status.is_server_error() {
            // A problem document's detail says why; anything else is shown as it came.
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|problem| problem["detail"].as_str().map(String::from))
                .unwrap_or(body);
            return Ok(Timed::Refused {
                status,
                after: sent.elapsed(),
                detail,
            });
        }
        // A request Bida rejects is the bench's mistake, not a figure.
        anyhow::ensure!(status.is_success(), "{status}: {body}");
        if n > 0 {
            latency.record(sent.elapsed().as_micros() as u64)?;
            // The API's `stopped_at`, the console's note.
            cut += usize::from(body.contains("\"stopped_at\"") || body.contains("id=\"list-cut\""));
        }
    }
    Ok(Timed::Answered { latency, cut })
}

/// A client logged in to the console as a viewer made with the CLI.
pub(super) async fn console_client(bida: &BidaProcess) -> anyhow::Result<reqwest::Client> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut create = bida
        .command(&["users", "create", "--username", "bench", "--role", "viewer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // The CLI reads the password from its standard input.
    create
        .stdin
        .take()
        .context("the CLI's stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let created = create.wait_with_output()?;
    anyhow::ensure!(
        created.status.success(),
        "users create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    // The session cookie comes with the redirect after the login.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .post(format!("{}/login", bida.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("username", "bench"), ("password", &password)]))
        .send()
        .await?;
    let cookie = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("bida_session="))
        .and_then(|v| v.split(';').next())
        .with_context(|| format!("no session cookie from the login ({})", login.status()))?
        .to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse()?);
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form/").expect("a URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

/// Starts the node again with a retention of six days and times it from its
/// spawn until the oldest day's delivered tasks are gone from the list (the
/// last thing a pass removes); returns that and what it dropped.
async fn retain_oldest_day(bida: &mut BidaProcess, from: i64) -> anyhow::Result<(Duration, String)> {
    let (before, dead) = day_counts(bida, from).await?;
    // A reader of `events` every 10 ms meanwhile: its longest wait is the
    // pause that writers saw, measured alike for any build.
    let (probing, stop_probe) = tokio::sync::watch::channel(false);
    let probe = {
        let mut connection = bida.connect().await?;
        let mut stop = stop_probe.clone();
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            while !*stop.borrow() {
                let asked = Instant::now();
                sqlx::query("SELECT 1 FROM events WHERE position = 0")
                    .execute(&mut connection)
                    .await?;
                longest = longest.max(asked.elapsed());
                let _ = tokio::time::timeout(Duration::from_millis(10), stop.changed()).await;
            }
            anyhow::Ok(longest)
        })
    };
    drop(stop_probe);
    let spawned = Instant::now();
    bida.start_again(RETAIN_SIX_DAYS).await?;
    let bida = &*bida;
    // A pass that defers the day would wait an hour for the next one.
    let limit = Duration::from_secs(300) + Duration::from_millis(before as u64 / 5);
    let took = until(spawned, limit, "retention of the oldest day", || async move {
        // Counting a day's rows is not free: not too often.
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(day_counts(bida, from).await?.0 == dead)
    })
    .await?;
    // The writers' pause: from the pass's request for the lock to its commit.
    let held: Option<i64> = sqlx::query_scalar(
        // A build before the column existed has none: read through a document.
        "SELECT (to_jsonb(r) ->> 'held_ms')::bigint FROM retention_log r ORDER BY ran_at DESC LIMIT 1",
    )
    .fetch_one(&mut bida.connect().await?)
    .await?;
    let held = held.map_or("not recorded by this build".into(), |ms| format!("{ms} ms"));
    let _ = probing.send(true);
    let waited = probe.await??;
    Ok((
        took,
        format!(
            "{} of {before} tasks dropped, {dead} dead kept; appends held {held}, longest read of events meanwhile {} ms",
            before - dead,
            waited.as_millis()
        ),
    ))
}

/// The list's tasks created on the day that starts at `from`, and its dead ones.
async fn day_counts(bida: &BidaProcess, from: i64) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'dead') FROM task_view
         WHERE created_at >= to_timestamp($1::float8) AND created_at < to_timestamp($1::float8 + 86400)",
    )
    .bind(from as f64)
    .fetch_one(&mut bida.connect().await?)
    .await?)
}
