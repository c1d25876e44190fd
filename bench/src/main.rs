//! `bida-bench`: runs a release build of Bida on a fresh database and measures
//! it end to end against a local HTTP receiver.
//!
//! Each payload carries the time it was sent, so the receiver measures
//! submit-to-delivery latency without sharing state with the submitters.

mod bare;
mod delayed;
mod drain;
mod grpc;
mod mq;
mod process;
mod pull;
mod receiver;
mod report;
mod scale;
mod topics;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{BidaProcess, StoreKind};
use receiver::BenchReceiver;
use report::Report;

#[derive(Parser)]
#[command(name = "bida-bench", about = "Measure Bida end to end on this machine")]
struct Cli {
    /// Where the node under test keeps its data.
    #[arg(long, global = true, value_enum, default_value_t = StoreKind::Postgres)]
    store: StoreKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit tasks through the HTTP API and wait until all are delivered.
    Api {
        /// Tasks to submit.
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        /// Concurrent submitting clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Approximate payload size in bytes.
        #[arg(long, default_value_t = 512)]
        size: usize,
        /// Extra TOML appended to Bida's configuration.
        #[arg(long, default_value = "")]
        config: String,
    },
    /// The same API tasks delivered over HTTP, then to a gRPC method.
    Grpc {
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// Consume from RabbitMQ, Kafka, NATS JetStream, Redis Streams, MQTT, ActiveMQ or RocketMQ: drain a
    /// preloaded backlog (throughput), then produce at half that rate (end-to-end latency).
    Mq {
        #[command(flatten)]
        backlog: drain::Args,
        /// Seconds of the paced latency phase.
        #[arg(long, default_value_t = 10)]
        paced_seconds: u64,
        /// Messages a second in the paced phase, instead of half the drain
        /// rate: two builds compared at the same load.
        #[arg(long)]
        paced_rate: Option<f64>,
    },
    /// Delayed messages to RabbitMQ: lateness of messages due over a window,
    /// then memory and storage per pending message.
    Delayed {
        /// Messages due within the window.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Seconds the due times are spread over.
        #[arg(long, default_value_t = 30)]
        over: u64,
        /// Seconds from the start until the first is due (time to submit them all).
        #[arg(long, default_value_t = 15)]
        lead: u64,
        /// Messages then left pending (due in an hour) to measure what each holds.
        #[arg(long, default_value_t = 1_000_000)]
        pending: usize,
        #[arg(long, default_value = "")]
        config: String,
    },
    /// The same backlog from RabbitMQ, Kafka or another broker drained by a push consumer to
    /// the bench receiver, then by a pull consumer whose members run in the bench, side by side.
    Pull(pull::Args),
    /// Bida's own topics: publish throughput (batched and one per request),
    /// a subscription's drain to the bench receiver, publish→delivery latency.
    Topics(topics::Args),
    /// How costs grow with size: idle consumers, pending messages, stored
    /// history and nodes on one database, a markdown table each.
    Scale(scale::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let store = cli.store;
    match cli.command {
        Command::Api {
            tasks,
            concurrency,
            size,
            config,
        } => api(tasks, concurrency, size, Node { config: &config, store }).await,
        Command::Grpc {
            tasks,
            concurrency,
            size,
        } => grpc::run(tasks, concurrency, size, store).await,
        Command::Mq {
            backlog,
            paced_seconds,
            paced_rate,
        } => consume(&backlog, paced_seconds, paced_rate, store).await,
        Command::Delayed {
            messages,
            over,
            lead,
            pending,
            config,
        } => delayed::run(messages, over, lead, pending, Node { config: &config, store }).await,
        Command::Pull(args) => pull::run(&args, store).await,
        Command::Topics(args) => topics::run(&args, store).await,
        Command::Scale(args) => scale::run(&args, store).await,
    }
}

/// The node under test: extra TOML for its configuration, and its store.
#[derive(Clone, Copy)]
struct Node<'a> {
    config: &'a str,
    store: StoreKind,
}

async fn post(http: &reqwest::Client, url: String, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let response = http.post(url).json(&body).send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(body)
}

async fn consume(
    backlog: &drain::Args,
    paced_seconds: u64,
    paced_rate: Option<f64>,
    store: StoreKind,
) -> anyhow::Result<()> {
    let (kind, messages, size) = (backlog.broker, backlog.messages, backlog.size);
    let (concurrency, partitions) = (backlog.concurrency, backlog.partitions);
    // The ceiling: the bare pipe drains the same backlog first, on an MQ and
    // a receiver of its own.
    let (bare_throughput, bare_cpu) = {
        let receiver = BenchReceiver::start().await?;
        let mq = mq::Mq::start(kind, partitions).await;
        bare::subscribe(&mq).await?;
        mq.produce(0, messages, size, receiver.epoch()).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let cpu_before = process::cpu_seconds_of("self");
        let started = Instant::now();
        let url = receiver.url();
        let forwarding = async { bare::forward(&mq, url, concurrency as usize, stopped).await };
        let (drained, forwarded) = tokio::join!(
            async {
                let drained = receiver.wait_for(messages, Duration::from_secs(900)).await;
                let _ = stop.send(true);
                drained
            },
            forwarding
        );
        forwarded?;
        anyhow::ensure!(
            drained == messages,
            "the bare pipe delivered only {drained} of {messages}"
        );
        let cpu = process::cpu_seconds_of("self") - cpu_before;
        (drained as f64 / started.elapsed().as_secs_f64(), cpu)
    };

    // Throughput: a backlog of `messages`, drained by a fresh consumer.
    let drain::PushDrain {
        receiver,
        mq,
        mut bida,
        drain,
        drained,
    } = drain::push(backlog, store).await?;
    let epoch = receiver.epoch();
    let throughput = drain.rate(drained);
    let (cpu, postgres_cpu, lag_watch) = (drain.cpu, drain.postgres_cpu, drain.lag_watch);
    let events = bida.count_events().await.context("count events")?;

    let storage = bida.storage().await.context("measure storage")?;

    // Latency: produce at half the drained rate (or the rate asked for),
    // measure send to delivery, following Bida's memory meanwhile.
    receiver.reset_latency();
    let rate = paced_rate.unwrap_or(throughput / 2.0).max(1.0);
    let rss = bida.watch_rss(Duration::from_secs(5));
    // What a message costs at a steady rate, not only at a drain's full speed
    // (up to delivery: the task list folds the last few hundred after).
    let paced_commits_before = bida.commits().await?;
    let paced_cpu_before = (bida.cpu_seconds(), process::cpu_seconds_of_program("postgres"));
    let paced = pace(&mq, messages, rate, paced_seconds, size, epoch).await;
    let delivered = receiver.wait_for(messages + paced, Duration::from_secs(300)).await;
    let paced_cpu = (
        bida.cpu_seconds() - paced_cpu_before.0,
        process::cpu_seconds_of_program("postgres") - paced_cpu_before.1,
    );
    let paced_commits = bida.commits().await?.since(paced_commits_before);
    let rss = rss.stop();
    let projection_lag = lag_watch.stop();
    let peak_rss = bida.peak_rss_kib();
    let rebuild = bida.rebuild_projection()?;

    // The bare pipe's latency at the same rate: what Bida adds is the difference.
    let (bare_latency, bare_slowest) = {
        let receiver = BenchReceiver::start().await?;
        let mq = mq::Mq::start(kind, partitions).await;
        // The first message must wait for the pipe wherever it is by then.
        bare::subscribe(&mq).await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let url = receiver.url();
        let forwarding = bare::forward(&mq, url, concurrency as usize, stopped);
        let (paced, forwarded) = tokio::join!(
            async {
                // Bida's consumer is running when its paced phase starts: so
                // must the bare pipe's be (a Kafka group takes seconds to form).
                mq.produce(0, 1, size, receiver.epoch()).await;
                receiver.wait_for(1, Duration::from_secs(120)).await;
                receiver.reset_latency();
                let paced = pace(&mq, 1, rate, paced_seconds, size, receiver.epoch()).await;
                receiver.wait_for(1 + paced, Duration::from_secs(300)).await;
                let _ = stop.send(true);
                paced
            },
            forwarding
        );
        forwarded?;
        anyhow::ensure!(receiver.delivered() == 1 + paced, "the bare pipe lost paced messages");
        (receiver.latency(), receiver.slowest_per_second())
    };
    let bida_latency = receiver.latency();
    let bida_slowest = receiver.slowest_per_second();

    let label = kind.title();
    Report::new(&format!("{label} consumer → HTTP endpoint"))
        .row(
            "messages, payload bytes, concurrency",
            format!("{messages}, {size}, {concurrency}"),
        )
        .row(
            "drain throughput",
            format!(
                "{throughput:.0} msgs/s ({drained} in {:.1} s)",
                drain.took.as_secs_f64()
            ),
        )
        .row(
            "bare pipe drain throughput",
            format!(
                "{bare_throughput:.0} msgs/s (CPU of the bench process, receiver included: {:.2} s per 10k)",
                bare_cpu * 10_000.0 / messages.max(1) as f64
            ),
        )
        .row(
            "Bida / bare pipe",
            format!("{:.0}%", 100.0 * throughput / bare_throughput),
        )
        .row(
            "bida CPU per 10k messages",
            format!("{:.2} s", cpu * 10_000.0 / drained.max(1) as f64),
        )
        .row(
            "postgres CPU per 10k messages",
            format!("{:.2} s", postgres_cpu * 10_000.0 / drained.max(1) as f64),
        )
        .row(
            "events appended",
            format!("{events} ({:.2} per message)", events as f64 / drained.max(1) as f64),
        )
        .row("writer in the drain", drain.commits.describe())
        .row(
            "event store per message",
            format!(
                "{:.0} bytes (with task list and ids: {:.0})",
                storage.events as f64 / drained.max(1) as f64,
                storage.total() as f64 / drained.max(1) as f64
            ),
        )
        .row("paced phase", format!("{paced} messages at {rate:.0} msgs/s"))
        .row(
            "CPU per 10k in the paced phase",
            format!(
                "bida {:.2} s, postgres {:.2} s",
                paced_cpu.0 * 10_000.0 / paced.max(1) as f64,
                paced_cpu.1 * 10_000.0 / paced.max(1) as f64
            ),
        )
        .row("writer in the paced phase", paced_commits.describe())
        .row("produce→delivery p50 / p99 / max", report::millis(&bida_latency))
        .row("bare pipe, same rate", report::millis(&bare_latency))
        .row(
            "p99 added by Bida",
            format!(
                "{:.1} ms",
                (bida_latency.value_at_quantile(0.99) as f64 - bare_latency.value_at_quantile(0.99) as f64) / 1000.0
            ),
        )
        .row(
            "seconds with a delivery > 100 ms",
            format!(
                "Bida {}, bare pipe {}",
                report::slow_seconds(&bida_slowest, 100_000),
                report::slow_seconds(&bare_slowest, 100_000)
            ),
        )
        .row("bida RSS in paced phase", process::rss_summary(&rss))
        .row(
            "delivered (distinct ids)",
            format!("{delivered} ({} requests)", receiver.requests()),
        )
        .row("projection lag under load (max)", format!("{projection_lag} events"))
        .row("projection rebuild", rebuild)
        .row("bida peak RSS", format!("{:.1} MiB", peak_rss as f64 / 1024.0))
        .print();
    anyhow::ensure!(
        delivered == messages + paced,
        "only {delivered} of {} delivered",
        messages + paced
    );
    Ok(())
}

/// Produces `rate` messages a second for `seconds`, numbered from `first`;
/// returns how many. In 10 ms ticks: with 100 ms ticks each burst came faster
/// than either pipe drains, so the latency measured was mostly the time to
/// drain a burst, not what a pipe adds at half its rate.
async fn pace(mq: &mq::Mq, first: usize, rate: f64, seconds: u64, size: usize, epoch: Instant) -> usize {
    let paced = (rate * seconds as f64) as usize;
    let tick = Duration::from_millis(10);
    let per_tick = ((rate * tick.as_secs_f64()).ceil() as usize).max(1);
    let mut sent = 0;
    let mut next = tokio::time::Instant::now();
    while sent < paced {
        let count = per_tick.min(paced - sent);
        mq.produce(first + sent, count, size, epoch).await;
        sent += count;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    paced
}

async fn api(tasks: usize, concurrency: usize, size: usize, node: Node<'_>) -> anyhow::Result<()> {
    let receiver = BenchReceiver::start().await?;
    let mut bida = BidaProcess::start(node.config, node.store).await?;
    let epoch = receiver.epoch();
    let http = process::api_client(reqwest::Client::builder().pool_max_idle_per_host(concurrency))?;
    let padding = "x".repeat(size.saturating_sub(60));
    let next = Arc::new(AtomicUsize::new(0));
    let submit_latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let failures = Arc::new(AtomicUsize::new(0));
    let lag_watch = bida.watch_projection_lag();
    let commits_before = bida.commits().await?;
    let cpu_before = bida.cpu_seconds();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let started = Instant::now();

    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, latency, failures) =
                (http.clone(), next.clone(), submit_latency.clone(), failures.clone());
            let (url, target, padding) = (format!("{}/v1/tasks", bida.url), receiver.url(), padding.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= tasks {
                        return;
                    }
                    let sent = Instant::now();
                    let body = json!({
                        "url": target,
                        "params": {"seq": seq, "sent_at_us": epoch.elapsed().as_micros() as u64, "pad": padding},
                    });
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 202 => {
                            let _ = latency.lock().unwrap().record(sent.elapsed().as_micros() as u64);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }
    let submitted_in = started.elapsed();
    let accepted = tasks - failures.load(Ordering::Relaxed);
    let delivered = receiver.wait_for(accepted, Duration::from_secs(600)).await;
    let delivered_in = started.elapsed();
    let cpu = bida.cpu_seconds() - cpu_before;
    let postgres_cpu = process::cpu_seconds_of_program("postgres") - postgres_before;
    let commits = bida.commits().await?.since(commits_before);
    let events = bida.count_events().await.context("count events")?;
    let projection_lag = lag_watch.stop();
    let peak_rss = bida.peak_rss_kib();
    let rebuild = bida.rebuild_projection()?;

    let submit = submit_latency.lock().unwrap().clone();
    let e2e = receiver.latency();
    Report::new("API tasks → HTTP endpoint")
        .row("tasks submitted / accepted", format!("{tasks} / {accepted}"))
        .row("payload bytes, concurrency", format!("{size}, {concurrency}"))
        .row(
            "submit throughput",
            format!("{:.0} tasks/s", accepted as f64 / submitted_in.as_secs_f64()),
        )
        .row("submit latency p50 / p99 / max", report::millis(&submit))
        .row(
            "delivered (distinct ids)",
            format!("{delivered} ({} requests)", receiver.requests()),
        )
        .row(
            "end-to-end throughput",
            format!("{:.0} tasks/s", delivered as f64 / delivered_in.as_secs_f64()),
        )
        .row("submit→delivery p50 / p99 / max", report::millis(&e2e))
        .row(
            "events appended",
            format!("{events} ({:.0}/s)", events as f64 / delivered_in.as_secs_f64()),
        )
        .row("writer", commits.describe())
        .row(
            "bida CPU per 10k tasks",
            format!("{:.2} s", cpu * 10_000.0 / delivered.max(1) as f64),
        )
        .row(
            "postgres CPU per 10k tasks",
            format!("{:.2} s", postgres_cpu * 10_000.0 / delivered.max(1) as f64),
        )
        .row("projection lag under load (max)", format!("{projection_lag} events"))
        .row("projection rebuild", rebuild)
        .row("bida peak RSS", format!("{:.1} MiB", peak_rss as f64 / 1024.0))
        .print();
    anyhow::ensure!(
        delivered == accepted,
        "only {delivered} of {accepted} tasks were delivered"
    );
    Ok(())
}
