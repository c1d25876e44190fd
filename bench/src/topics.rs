//! `bida-bench topics`: Bida as its own message queue. On a fresh node and
//! database: publish throughput over HTTP (batched, then one message per
//! request), a subscription's drain of all of it to the bench receiver, then
//! publish→delivery latency while publishing at half the drain rate. The
//! same work on RabbitMQ or Kafka is `bida-bench mq --broker ...`.

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::drain::per_10k;
use crate::post;
use crate::process::{self, BidaProcess, StoreKind};
use crate::receiver::BenchReceiver;
use crate::report::{self, Report};

#[derive(clap::Args)]
pub struct Args {
    /// Messages published in batches.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Messages then published one per request.
    #[arg(long, default_value_t = 5_000)]
    single: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// The topic's partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u16,
    /// The subscription's concurrency.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Seconds of the paced latency phase.
    #[arg(long, default_value_t = 10)]
    paced_seconds: u64,
    /// Extra TOML appended to Bida's configuration.
    #[arg(long, default_value = "")]
    config: String,
}

/// Publishes messages `first..first + count` in requests of `batch`, from
/// `publishers` clients at once; returns how long it took and each
/// request's latency (µs).
async fn publish(
    http: &reqwest::Client,
    url: &str,
    first: usize,
    count: usize,
    batch: usize,
    publishers: usize,
    payload: &(dyn Fn(usize) -> Value + Sync),
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let next = AtomicUsize::new(first);
    let latency = Mutex::new(Histogram::<u64>::new(3)?);
    let started = Instant::now();
    let client = || async {
        loop {
            let from = next.fetch_add(batch, Ordering::Relaxed);
            if from >= first + count {
                return anyhow::Ok(());
            }
            let to = (from + batch).min(first + count);
            let body = match to - from {
                1 => json!({"body": payload(from)}),
                _ => json!({"messages": (from..to).map(|seq| json!({"body": payload(seq)})).collect::<Vec<_>>()}),
            };
            let sent = Instant::now();
            post(http, url.to_string(), body).await?;
            let took = sent.elapsed().as_micros() as u64;
            latency.lock().unwrap().record(took.max(1))?;
        }
    };
    let results = futures::future::join_all((0..publishers).map(|_| client())).await;
    for result in results {
        result?;
    }
    Ok((started.elapsed(), latency.into_inner().unwrap()))
}

/// A publish phase's rate and its requests' latency.
fn published_row(count: usize, took: Duration, latency: &Histogram<u64>) -> String {
    format!(
        "{:.0} msgs/s ({count} in {:.1} s); request p50 / p99 / max {}",
        count as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        report::millis(latency)
    )
}

pub async fn run(args: &Args, store: StoreKind) -> anyhow::Result<()> {
    let receiver = BenchReceiver::start().await?;
    let epoch = receiver.epoch();
    let bida = BidaProcess::start(&args.config, store).await?;
    let http = process::api_client(reqwest::Client::builder().pool_max_idle_per_host(args.publishers))?;
    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    post(
        &http,
        format!("{}/v1/topics", bida.url),
        json!({"name": topic, "partitions": args.partitions}),
    )
    .await?;
    let url = format!("{}/v1/topics/{topic}/messages", bida.url);
    let padding = "x".repeat(args.size.saturating_sub(60));
    let payload = |seq: usize| json!({"seq": seq, "sent_at_us": epoch.elapsed().as_micros() as u64, "pad": padding});

    let cpu_before = bida.cpu_seconds();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let (batched_took, batched_latency) =
        publish(&http, &url, 0, args.messages, args.batch, args.publishers, &payload).await?;
    let publish_cpu = bida.cpu_seconds() - cpu_before;
    let publish_postgres = process::cpu_seconds_of_program("postgres") - postgres_before;
    let (single_took, single_latency) =
        publish(&http, &url, args.messages, args.single, 1, args.publishers, &payload).await?;
    let published = args.messages + args.single;

    // The drain: a subscription made now reads everything from the start.
    let cpu_before = bida.cpu_seconds();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let started = Instant::now();
    let consumer = post(
        &http,
        format!("{}/v1/consumers", bida.url),
        json!({"name": "bench", "broker_id": "builtin", "source": {"topic": topic, "start": "earliest"},
               "endpoint": {"url": receiver.url()}, "policy": {"concurrency": args.concurrency}}),
    )
    .await?;
    consumer["id"].as_str().context("the consumer's id")?;
    let drained = receiver.wait_for(published, Duration::from_secs(900)).await;
    let drain_took = started.elapsed();
    let drain_cpu = bida.cpu_seconds() - cpu_before;
    let drain_postgres = process::cpu_seconds_of_program("postgres") - postgres_before;
    anyhow::ensure!(drained == published, "only {drained} of {published} delivered");
    let drain_rate = drained as f64 / drain_took.as_secs_f64();

    // Latency: publish at half the drain rate, in 10 ms ticks of one request each.
    receiver.reset_latency();
    let rate = (drain_rate / 2.0).max(1.0);
    let paced = (rate * args.paced_seconds as f64) as usize;
    let tick = Duration::from_millis(10);
    let per_tick = ((rate * tick.as_secs_f64()).ceil() as usize).max(1);
    let rss = bida.watch_rss(Duration::from_secs(5));
    let mut sent = 0;
    let mut next = tokio::time::Instant::now();
    while sent < paced {
        let count = per_tick.min(paced - sent);
        publish(&http, &url, published + sent, count, count, 1, &payload).await?;
        sent += count;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    let delivered = receiver.wait_for(published + paced, Duration::from_secs(300)).await;
    let rss = rss.stop();
    let latency = receiver.latency();
    let slowest = receiver.slowest_per_second();

    Report::new("Built-in topic → subscription → HTTP endpoint")
        .row(
            "messages, payload bytes, partitions, publishers",
            format!("{published}, {}, {}, {}", args.size, args.partitions, args.publishers),
        )
        .row(
            &format!("publish, batches of {}", args.batch),
            published_row(args.messages, batched_took, &batched_latency),
        )
        .row(
            "publish CPU per 10k (batched)",
            format!(
                "bida {:.2} s, postgres {:.2} s",
                per_10k(publish_cpu, args.messages),
                per_10k(publish_postgres, args.messages)
            ),
        )
        .row(
            "publish, one per request",
            published_row(args.single, single_took, &single_latency),
        )
        .row(
            "drain throughput",
            format!(
                "{drain_rate:.0} msgs/s ({drained} in {:.1} s)",
                drain_took.as_secs_f64()
            ),
        )
        .row(
            "drain CPU per 10k",
            format!(
                "bida {:.2} s, postgres {:.2} s",
                per_10k(drain_cpu, drained),
                per_10k(drain_postgres, drained)
            ),
        )
        .row("paced phase", format!("{paced} messages at {rate:.0} msgs/s"))
        .row("publish→delivery p50 / p99 / max", report::millis(&latency))
        .row(
            "seconds with a delivery > 100 ms",
            report::slow_seconds(&slowest, 100_000),
        )
        .row("bida RSS in paced phase", process::rss_summary(&rss))
        .row(
            "bida peak RSS",
            format!("{:.1} MiB", bida.peak_rss_kib() as f64 / 1024.0),
        )
        .print();
    anyhow::ensure!(
        delivered == published + paced,
        "only {delivered} of {} delivered",
        published + paced
    );
    Ok(())
}
