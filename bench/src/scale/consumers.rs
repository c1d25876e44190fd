//! Idle consumers on one node: what each costs at rest, how long a node
//! takes to start them all, and how long a live change takes to reach them.
//!
//! Per size, on a fresh database: the node's RSS and CPU empty; N consumers
//! created (half on RabbitMQ queues Bida declares, half on Kafka topics of
//! one tansu); the node stopped (SIGTERM) and started again, timed from its
//! spawn until every consumer's report from the new process says running;
//! RSS and CPU over the idle window; then a PATCH of every consumer's
//! `rate_per_sec`, timed until every report shows the new rate as the
//! node's share of it. Reports are the rows each node publishes every 2 s
//! (`consumer_runtime`, what `GET /v1/consumers/{id}` shows under `nodes`),
//! read from the database so that polling does not load the node measured.
//! Last, how long `GET /v1/consumers` (every page) and the console's
//! consumer table take to describe them all.

use anyhow::Context;
use bida_testkit::kafka::KafkaBroker;
use bida_testkit::rabbit;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use super::{mib, seconds, until};
use crate::post;
use crate::process::{self, BidaProcess, StoreKind};
use crate::receiver::BenchReceiver;
use crate::report::Table;

/// Requests to the API in flight at once while creating or patching.
const IN_FLIGHT: usize = 16;
/// The rate every consumer is patched to.
const NEW_RATE: f64 = 1_000.0;
/// After the last consumer runs, before the idle window: the start-up's
/// allocations and connections settle.
const SETTLE: Duration = Duration::from_secs(5);

pub async fn run(sizes: &[usize], idle: Duration, kafka: bool) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "Idle consumers on one node",
        &[
            "consumers (RabbitMQ + Kafka)",
            "created in",
            "start-up: spawn → ready / all running",
            "stop (SIGTERM → exit)",
            "RSS empty → idle",
            "RSS per consumer",
            "threads empty → idle",
            "CPU idle: empty → N (node)",
            "CPU per consumer",
            "its Postgres backends' CPU idle",
            "live change: PATCHes sent / all applied",
            "GET /v1/consumers, all pages",
            "the console's consumer table, median of 5",
        ],
    );
    if !kafka {
        table.note(
            "Kafka (tansu) is not installed here: every consumer is on RabbitMQ. \
             Install tansu or set BIDA_TEST_TANSU for the Kafka half.",
        );
    }
    table.note(format!(
        "CPU in % of one core over {} s; per consumer net of the empty node's. \
         Reports are published every 2 s, so times that wait for them are ±2 s.",
        idle.as_secs()
    ));
    for &size in sizes {
        table.row(measure(size, idle, kafka).await?);
    }
    Ok(table)
}

async fn measure(size: usize, idle: Duration, kafka: bool) -> anyhow::Result<Vec<String>> {
    // Their endpoint: never called, the consumers are idle.
    let receiver = BenchReceiver::start().await?;
    let mut bida = BidaProcess::start("", StoreKind::Postgres).await?;
    let http = process::api_client(reqwest::Client::builder().pool_max_idle_per_host(IN_FLIGHT))?;
    tokio::time::sleep(SETTLE).await;
    let (empty_rss, empty) = idle_cost(&bida, idle).await?;
    let empty_threads = threads(&bida);

    let rabbit_broker = post(
        &http,
        format!("{}/v1/brokers", bida.url),
        json!({"name": "rabbitmq", "kind": "rabbitmq", "url": rabbit::url()}),
    )
    .await?;
    let on_kafka = if kafka { size / 2 } else { 0 };
    let kafka_broker = match kafka {
        true => Some(KafkaBroker::start().await),
        false => None,
    };
    let mut sources = Vec::with_capacity(size);
    if let Some(broker) = &kafka_broker {
        let registered = post(
            &http,
            format!("{}/v1/brokers", bida.url),
            json!({"name": "kafka", "kind": "kafka", "bootstrap_servers": broker.bootstrap}),
        )
        .await?;
        for n in 0..on_kafka {
            let topic = format!("scale-{n}");
            broker.create_topic(&topic, 1).await;
            sources.push((registered["id"].clone(), json!({"topics": [topic], "group": topic})));
        }
    }
    // Bida declares the queues; these delete them when the size is done.
    let mut queues = Vec::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    for n in on_kafka..size {
        let queue = format!("bida-scale-{run}-{n}");
        queues.push(rabbit::delete_queue_later(&queue));
        sources.push((rabbit_broker["id"].clone(), json!({"queue": queue, "declare": true})));
    }

    let created = Instant::now();
    let ids: Vec<String> = futures::stream::iter(sources.into_iter().enumerate())
        .map(|(n, (broker_id, source))| {
            let body = json!({"name": format!("scale-{n}"), "broker_id": broker_id, "source": source,
                              "endpoint": {"url": receiver.url()}});
            let (http, url) = (&http, format!("{}/v1/consumers", bida.url));
            async move {
                let consumer = post(http, url, body).await?;
                Ok::<_, anyhow::Error>(consumer["id"].as_str().context("a consumer id")?.to_string())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let created_in = created.elapsed();
    // A generous bound: a slow start is a figure, not a failure.
    let limit = Duration::from_secs(120) + Duration::from_millis(200) * size as u32;
    all_running(&bida, size, None, created, limit, "every consumer running").await?;

    let stopped = bida.stop().await?;
    let spawned = Instant::now();
    bida.start_again("").await?;
    let ready = spawned.elapsed();
    let startup = all_running(
        &bida,
        size,
        None,
        spawned,
        limit,
        "every consumer running after the restart",
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let (idle_rss, cost) = idle_cost(&bida, idle).await?;
    let idle_threads = threads(&bida);

    let patched = Instant::now();
    futures::stream::iter(&ids)
        .map(|id| {
            let url = format!("{}/v1/consumers/{id}", bida.url);
            let http = &http;
            async move {
                let response = http
                    .patch(url)
                    .json(&json!({"policy": {"rate_per_sec": NEW_RATE as u32}}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "PATCH: {}", response.status());
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let sent = patched.elapsed();
    let applied = all_running(
        &bida,
        size,
        Some(NEW_RATE),
        patched,
        limit,
        "the new rate on every consumer",
    )
    .await?;

    let listed = Instant::now();
    let pages = list_all(&http, &bida.url, size).await?;
    let listed = listed.elapsed();
    let table = console_table(&bida).await?;

    let per = |total: f64| total / size.max(1) as f64;
    let percent = |cpu: f64| 100.0 * cpu / idle.as_secs_f64();
    let row = vec![
        format!("{size} ({} + {on_kafka})", size - on_kafka),
        format!("{} ({:.0}/s)", seconds(created_in), per_second(size, created_in)),
        format!("{} / {}", seconds(ready), seconds(startup)),
        seconds(stopped),
        format!("{} → {}", mib(empty_rss), mib(idle_rss)),
        format!("{:.1} KiB", per(idle_rss as f64 - empty_rss as f64)),
        format!("{empty_threads} → {idle_threads}"),
        format!("{:.2}% → {:.2}%", percent(empty.bida), percent(cost.bida)),
        format!("{:.4}%", percent(per(cost.bida - empty.bida))),
        format!("{:.2}% (empty {:.2}%)", percent(cost.postgres), percent(empty.postgres)),
        format!("{} / {}", seconds(sent), seconds(applied)),
        format!("{} ({pages} pages)", millis(listed)),
        millis(table),
    ];
    drop(bida);
    // The queues go after the node that reads them.
    drop(queues);
    Ok(row)
}

/// CPU seconds of the node and of the Postgres backends serving it over a window.
struct Cost {
    bida: f64,
    postgres: f64,
}

/// The node's RSS (KiB) at the end of an idle window, and the CPU it and
/// its database's backends used over it. Only those backends: on a shared
/// machine every `postgres` process counts other work too, and backends
/// that exit meanwhile take their CPU time with them.
async fn idle_cost(bida: &BidaProcess, window: Duration) -> anyhow::Result<(u64, Cost)> {
    let backends: Vec<String> = sqlx::query_scalar::<_, i32>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut bida.connect().await?)
    .await?
    .iter()
    .map(i32::to_string)
    .collect();
    let postgres = || {
        backends
            .iter()
            .map(|pid| process::cpu_seconds_of(pid))
            .collect::<Vec<_>>()
    };
    let (before, postgres_before) = (bida.cpu_seconds(), postgres());
    tokio::time::sleep(window).await;
    let cost = Cost {
        bida: bida.cpu_seconds() - before,
        // A backend gone meanwhile reads 0: it adds nothing rather than less.
        postgres: postgres()
            .iter()
            .zip(postgres_before)
            .map(|(after, before)| (after - before).max(0.0))
            .sum(),
    };
    Ok((bida.rss_kib(), cost))
}

/// Waits until `count` consumers report running on the node (with `rate` as
/// their rate share, if given); a timeout says how many did.
async fn all_running(
    bida: &BidaProcess,
    count: usize,
    rate: Option<f64>,
    since: Instant,
    limit: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let seen = std::cell::Cell::new(0);
    until(since, limit, what, || {
        let seen = &seen;
        async move {
            seen.set(running(bida, rate).await?);
            Ok(seen.get() >= count)
        }
    })
    .await
    .with_context(|| format!("{} of {count} reported it", seen.get()))
}

/// How many consumers the node reports running (with `rate` as their rate
/// share, if given).
async fn running(bida: &BidaProcess, rate: Option<f64>) -> anyhow::Result<usize> {
    let mut connection = bida.connect().await?;
    let reporting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM consumer_runtime r JOIN nodes n ON n.id = r.node_id
         WHERE n.pid = $1 AND n.stopped_at IS NULL AND r.state = 'running'
           AND ($2::float8 IS NULL OR (r.report -> 'share' ->> 'rate_per_sec')::float8 = $2)",
    )
    .bind(bida.pid() as i32)
    .bind(rate)
    .fetch_one(&mut connection)
    .await?;
    Ok(reporting as usize)
}

/// The median time of the console's consumer table (`/live/consumers`, what
/// the consumers page fetches again every few seconds), as a viewer.
async fn console_table(bida: &BidaProcess) -> anyhow::Result<Duration> {
    let console = super::history::console_client(bida).await?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        console
            .get(format!("{}/live/consumers", bida.url))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        times.push(asked.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Walks `GET /v1/consumers` page by page (500 a page); returns the pages.
async fn list_all(http: &reqwest::Client, bida: &str, expected: usize) -> anyhow::Result<usize> {
    let (mut cursor, mut pages, mut seen) = (None::<String>, 0, 0);
    loop {
        let mut request = http.get(format!("{bida}/v1/consumers")).query(&[("limit", "500")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: Value = request.send().await?.error_for_status()?.json().await?;
        pages += 1;
        seen += page["items"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    anyhow::ensure!(seen == expected, "listed {seen} consumers of {expected}");
    Ok(pages)
}

/// The node's threads: each has its own allocator pages, so a consumer
/// that brings threads brings memory.
fn threads(bida: &BidaProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", bida.pid())).map_or(0, Iterator::count)
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

fn per_second(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}
