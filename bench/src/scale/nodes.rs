//! Nodes on one database draining one backlog through one consumer (every
//! node runs every consumer: a Kafka group or RabbitMQ's competing
//! consumers split the messages), timed from the consumer's resume until
//! the bench receiver has every message.

use anyhow::Context;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use crate::drain;
use crate::mq::{Mq, MqKind};
use crate::post;
use crate::process::{self, BidaProcess, StoreKind};
use crate::receiver::BenchReceiver;
use crate::report::Table;

/// Payload size of the backlog's messages, as `mq`'s default.
const SIZE: usize = 512;
/// Each node's consumer concurrency, as `mq`'s default.
const CONCURRENCY: u32 = 64;

pub async fn run(sizes: &[usize], messages: usize, partitions: i32, kafka: bool) -> anyhow::Result<Table> {
    let kind = if kafka { MqKind::Kafka } else { MqKind::Rabbitmq };
    let mut table = Table::new(
        &format!("Nodes on one database draining one {} backlog", kind.title()),
        &[
            "nodes",
            "total msgs/s",
            "per node msgs/s (delivered by each)",
            "per node, of one node's rate",
            "Bida CPU per 10k of the backlog, each node",
            "Postgres CPU per 10k",
        ],
    );
    table.note(format!(
        "{messages} messages of {SIZE} bytes, consumer concurrency {CONCURRENCY} on each node{}.",
        if kafka {
            format!(", {partitions} partitions")
        } else {
            String::new()
        }
    ));
    if !kafka {
        table.note("Kafka (tansu) is not installed here: the backlog is a RabbitMQ queue instead.");
    }
    let mut single = None;
    for &size in sizes {
        let (total, cells) = measure(size.max(1), messages, kind, partitions).await?;
        let one = *single.get_or_insert(total);
        let mut row = vec![size.to_string(), format!("{total:.0}")];
        row.push(cells.rates);
        row.push(format!("{:.2}", total / size.max(1) as f64 / one));
        row.push(cells.cpu);
        row.push(cells.postgres);
        table.row(row);
    }
    Ok(table)
}

struct Cells {
    rates: String,
    cpu: String,
    postgres: String,
}

async fn measure(size: usize, messages: usize, kind: MqKind, partitions: i32) -> anyhow::Result<(f64, Cells)> {
    let receiver = BenchReceiver::start().await?;
    let mq = Mq::start(kind, partitions).await;
    let first = BidaProcess::start("", StoreKind::Postgres).await?;
    let mut nodes = vec![first];
    for n in 2..=size {
        let node = nodes[0].another("", &format!("bench-{n}")).await?;
        nodes.push(node);
    }
    let http = process::api_client(reqwest::Client::builder())?;
    let bida = &nodes[0].url;
    let broker = post(&http, format!("{bida}/v1/brokers"), mq.broker()).await?;
    let consumer = post(
        &http,
        format!("{bida}/v1/consumers"),
        json!({"name": "bench", "broker_id": broker["id"], "source": mq.source(),
               "endpoint": {"url": receiver.url()}, "policy": {"concurrency": CONCURRENCY}}),
    )
    .await?;
    let view = format!("{bida}/v1/consumers/{}", consumer["id"].as_str().context("its id")?);
    // Paused, a consumer keeps its place in the group: once every node holds
    // its share, the drain measures reading, not the group forming (which
    // takes longer than a small backlog's drain: one node took it all).
    post(&http, format!("{view}/pause"), json!({})).await?;
    let shared = |reports: &[Value]| shares_settled(reports, size, kind, partitions);
    drain::wait_for_consumer(&http, &view, "every node paused with its share", shared).await?;
    mq.produce(0, messages, SIZE, receiver.epoch()).await;

    let before: Vec<f64> = nodes.iter().map(BidaProcess::cpu_seconds).collect();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let started = Instant::now();
    post(&http, format!("{view}/resume"), json!({})).await?;
    let drained = receiver.wait_for(messages, Duration::from_secs(900)).await;
    let took = started.elapsed();
    anyhow::ensure!(drained == messages, "only {drained} of {messages} delivered");
    let cpu: Vec<f64> = nodes.iter().zip(before).map(|(n, b)| n.cpu_seconds() - b).collect();
    let postgres = process::cpu_seconds_of_program("postgres") - postgres_before;
    let total = messages as f64 / took.as_secs_f64();

    // Counters reach the reports every 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view: Value = http.get(&view).send().await?.error_for_status()?.json().await?;
    let rates: Vec<String> = reports(&view)
        .iter()
        .map(|node| {
            let delivered = node["report"]["delivered"].as_u64().unwrap_or_default();
            format!(
                "{}: {:.0} ({delivered})",
                node["node_name"].as_str().unwrap_or("?"),
                delivered as f64 / took.as_secs_f64()
            )
        })
        .collect();
    let per_10k = |seconds: f64| format!("{:.2} s", drain::per_10k(seconds, messages));
    let cells = Cells {
        rates: rates.join(", "),
        cpu: cpu.iter().map(|&c| per_10k(c)).collect::<Vec<_>>().join(", "),
        postgres: per_10k(postgres),
    };
    Ok((total, cells))
}

fn reports(view: &Value) -> &[Value] {
    view["nodes"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every node reports the consumer paused and, on Kafka, the partitions
/// are split between them: each reported by one node only (a node reports
/// the partitions it owns, refreshed every 10 s), each node owning some.
fn shares_settled(nodes: &[Value], size: usize, kind: MqKind, partitions: i32) -> bool {
    if nodes.len() != size || nodes.iter().any(|node| node["state"] != "paused") {
        return false;
    }
    if !matches!(kind, MqKind::Kafka) {
        return true;
    }
    let owned: Vec<Vec<&str>> = nodes
        .iter()
        .map(|node| {
            node["report"]["backlog"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|backlog| backlog["source"].as_str())
                .collect()
        })
        .collect();
    let all: std::collections::BTreeSet<&str> = owned.iter().flatten().copied().collect();
    let reported: usize = owned.iter().map(Vec::len).sum();
    all.len() == partitions as usize
        && reported == all.len()
        && owned.iter().all(|mine| !mine.is_empty() || size > partitions as usize)
}
