//! `bida-bench delayed`: delayed messages written to RabbitMQ when due.
//!
//! Lateness: `messages` messages due evenly over `over` seconds (after a
//! lead time to submit them all) are read from the queue as they arrive;
//! each carries its due time, so the reader measures arrival − due: the
//! scheduler's lateness plus the write and RabbitMQ's delivery (about a
//! millisecond). Early arrivals are counted apart (there must be none).
//!
//! Pending: `pending` messages due in an hour are submitted in batches;
//! the node's memory and the database's size are measured before and after,
//! per pending message.

use anyhow::Context;
use bida_testkit::rabbit::{self, TestQueue};
use futures::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{self, BidaProcess};
use crate::report::{self, Report};
use crate::{post, Node};

/// Messages per request (the produce route's limit is 1,000).
const BATCH: usize = 500;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A node with the machine's RabbitMQ registered as a broker, and the queue
/// its delayed messages are written to.
pub struct Target {
    pub bida: BidaProcess,
    pub queue: TestQueue,
    http: reqwest::Client,
    /// The broker's produce route.
    produce: String,
}

impl Target {
    pub async fn start(node: Node<'_>) -> anyhow::Result<Self> {
        let queue = TestQueue::declare().await;
        let bida = BidaProcess::start(node.config, node.store).await?;
        let http = process::api_client(reqwest::Client::builder())?;
        let broker = post(
            &http,
            format!("{}/v1/brokers", bida.url),
            json!({"name": "bench", "kind": "rabbitmq", "url": rabbit::url()}),
        )
        .await?;
        let produce = format!(
            "{}/v1/brokers/{}/messages",
            bida.url,
            broker["id"].as_str().unwrap_or_default()
        );
        Ok(Self {
            bida,
            queue,
            http,
            produce,
        })
    }

    /// Writes a batch of messages through the node's produce route.
    async fn produce(&self, batch: Vec<Value>) -> anyhow::Result<Value> {
        post(&self.http, self.produce.clone(), json!({"messages": batch})).await
    }
}

/// Messages due over a window, read from the queue as they are written.
pub struct Lateness {
    /// One message every `step_ms`.
    pub step_ms: f64,
    pub submit_seconds: f64,
    /// Bida's CPU while they were submitted.
    pub submit_cpu: f64,
    pub received: usize,
    pub early: usize,
    pub worst_early_ms: i64,
    /// Arrival minus due time, µs, of those not early.
    pub histogram: Histogram<u64>,
    /// Bida's CPU while they fell due.
    pub cpu: f64,
    /// Bida's RSS every second while they fell due.
    pub rss: Vec<u64>,
}

/// Submits `messages` due evenly over `over` seconds from `lead` seconds on,
/// and reads them from the queue as they arrive.
pub async fn lateness(target: &Target, messages: usize, over: u64, lead: u64) -> anyhow::Result<Lateness> {
    let (bida, queue) = (&target.bida, &target.queue);
    let connection = Connection::connect(&rabbit::url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut deliveries = channel
        .basic_consume(
            queue.name.as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let start = now_ms() + (lead * 1000) as i64;
    let step_ms = (over * 1000) as f64 / messages.max(1) as f64;
    let submitted_at = std::time::Instant::now();
    let mut submit_cpu = bida.cpu_seconds();
    for first in (0..messages).step_by(BATCH) {
        let batch: Vec<Value> = (first..(first + BATCH).min(messages))
            .map(|n| {
                let due = start + (n as f64 * step_ms) as i64;
                json!({"routing_key": queue.name, "body": {"n": n, "due": due}, "deliver_at": rfc3339(due)})
            })
            .collect();
        target.produce(batch).await?;
    }
    let submit_seconds = submitted_at.elapsed().as_secs_f64();
    submit_cpu = bida.cpu_seconds() - submit_cpu;
    anyhow::ensure!(
        now_ms() < start,
        "submitting took {submit_seconds:.1} s, past the lead of {lead} s: give a longer --lead"
    );
    let rss = bida.watch_rss(Duration::from_secs(1));
    let cpu_before = bida.cpu_seconds();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let (mut early, mut received, mut worst_early_ms) = (0usize, 0usize, 0i64);
    let deadline = start + (over * 1000) as i64 + 60_000;
    while received < messages && now_ms() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(5), deliveries.next()).await;
        let Ok(Some(delivery)) = next else { continue };
        let delivery = delivery?;
        let arrived = now_ms_precise();
        let body: Value = serde_json::from_slice(&delivery.data).context("a message body")?;
        let due = body["due"].as_i64().unwrap_or_default() as f64;
        let late_us = (arrived - due) * 1000.0;
        if late_us < 0.0 {
            early += 1;
            worst_early_ms = worst_early_ms.max((-late_us / 1000.0) as i64);
        } else {
            histogram.record((late_us as u64).max(1))?;
        }
        received += 1;
    }
    Ok(Lateness {
        step_ms,
        submit_seconds,
        submit_cpu,
        received,
        early,
        worst_early_ms,
        histogram,
        cpu: bida.cpu_seconds() - cpu_before,
        rss: rss.stop(),
    })
}

/// What `pending` messages due in an hour cost the node and the database.
pub struct Pending {
    pub seconds: f64,
    /// RSS in KiB, before and after.
    pub rss: (u64, u64),
    /// The database's size in bytes, before and after.
    pub bytes: (u64, u64),
}

impl Pending {
    /// Bytes of the node's memory and of the database per pending message.
    pub fn per_message(&self, pending: usize) -> (f64, f64) {
        let per = |(before, after): (u64, u64)| (after as f64 - before as f64) / pending.max(1) as f64;
        (per((self.rss.0 * 1024, self.rss.1 * 1024)), per(self.bytes))
    }
}

/// Submits `pending` messages due in an hour, in batches of 1,000.
pub async fn pend(target: &Target, pending: usize) -> anyhow::Result<Pending> {
    let (bida, queue) = (&target.bida, &target.queue);
    let (rss_before, bytes_before) = (bida.rss_kib(), bida.database_bytes().await?);
    let far = now_ms() + 3_600_000;
    let started = std::time::Instant::now();
    for first in (0..pending).step_by(1_000) {
        let batch: Vec<Value> = (first..(first + 1_000).min(pending))
            .map(|n| json!({"routing_key": queue.name, "body": {"n": n}, "deliver_at": rfc3339(far + n as i64)}))
            .collect();
        target.produce(batch).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the writer, projections and allocator settle before measuring.
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(Pending {
        seconds,
        rss: (rss_before, bida.rss_kib()),
        bytes: (bytes_before, bida.database_bytes().await?),
    })
}

pub async fn run(messages: usize, over: u64, lead: u64, pending: usize, node: Node<'_>) -> anyhow::Result<()> {
    let target = Target::start(node).await?;
    // Lateness under load: every message due within `over` seconds.
    let Lateness {
        step_ms: step,
        submit_seconds,
        submit_cpu,
        received,
        early,
        worst_early_ms,
        histogram: lateness,
        cpu,
        rss,
    } = lateness(&target, messages, over, lead).await?;
    // Memory and storage per pending message.
    let cost = pend(&target, pending).await?;
    let (per_rss, per_byte) = cost.per_message(pending);
    let Pending {
        seconds: pending_seconds,
        rss: (rss_before, rss_after),
        bytes: (bytes_before, bytes_after),
    } = cost;

    let mut report = Report::new("Delayed messages → RabbitMQ")
        .row(
            "messages, due over",
            format!("{messages}, {over} s (one every {step:.1} ms)"),
        )
        .row(
            "submitted in",
            format!(
                "{submit_seconds:.1} s ({:.0} msgs/s, batches of {BATCH}; bida CPU {:.2} s per 10k)",
                messages as f64 / submit_seconds,
                submit_cpu * 10_000.0 / messages.max(1) as f64
            ),
        )
        .row("received", format!("{received} of {messages}"))
        .row(
            "early",
            format!("{early} (earliest {worst_early_ms} ms before its time)"),
        )
        .row("lateness p50 / p99 / max", report::millis(&lateness))
        .row(
            "bida CPU while writing",
            format!("{:.2} s per 10k", cpu * 10_000.0 / received.max(1) as f64),
        )
        .row("bida RSS while writing", process::rss_summary(&rss));
    if pending > 0 {
        report = report
            .row(
                "pending messages",
                format!(
                    "{pending} submitted in {pending_seconds:.1} s ({:.0} msgs/s)",
                    pending as f64 / pending_seconds
                ),
            )
            .row(
                "node memory per pending message",
                format!(
                    "{per_rss:.1} bytes (RSS {} → {} MiB)",
                    rss_before / 1024,
                    rss_after / 1024
                ),
            )
            .row(
                "database per pending message",
                format!(
                    "{per_byte:.0} bytes ({} → {} MiB)",
                    bytes_before >> 20,
                    bytes_after >> 20
                ),
            );
    }
    report.print();
    anyhow::ensure!(received == messages, "only {received} of {messages} were written");
    anyhow::ensure!(early == 0, "{early} were written before their time");
    Ok(())
}

fn now_ms_precise() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_written_as_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
