//! Draining a backlog: messages produced to a fresh queue or topic first,
//! then a consumer of it created on the clock, timed until a caller's wait
//! says every message was handled. `mq` drains it with a push consumer to
//! the bench receiver; `pull` does that, then drains the same backlog with a
//! pull consumer whose members run in the bench process.

use anyhow::Context;
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::mq::{Mq, MqKind};
use crate::post;
use crate::process::{self, BidaProcess, Commits, LagWatch, StoreKind};
use crate::receiver::BenchReceiver;

/// A backlog on a broker and the push consumer that drains it: what `mq`
/// and `pull` are given alike.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub broker: MqKind,
    /// Messages in the backlog drained for throughput.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// The push consumer's concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Kafka partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Extra TOML appended to Bida's configuration.
    #[arg(long, default_value = "")]
    pub config: String,
}

/// The messages a drain starts with.
#[derive(Clone, Copy)]
pub struct Backlog {
    pub messages: usize,
    /// Approximate payload size in bytes.
    pub size: usize,
    /// The clock payloads are stamped on.
    pub epoch: Instant,
}

/// What a drain took: from the consumer's start until its wait ended, and
/// the CPU Bida, Postgres (every `postgres` process on the machine) and the
/// bench process itself used meanwhile.
pub struct Drain {
    pub took: Duration,
    pub cpu: f64,
    pub postgres_cpu: f64,
    pub bench_cpu: f64,
    /// Bida's projection lag, followed from the start until stopped.
    pub lag_watch: LagWatch,
    /// The writer's group commits meanwhile.
    pub commits: Commits,
}

impl Drain {
    /// Messages a second, for `count` handled.
    pub fn rate(&self, count: usize) -> f64 {
        count as f64 / self.took.as_secs_f64()
    }
}

/// CPU seconds per 10k of `count` messages.
pub fn per_10k(seconds: f64, count: usize) -> f64 {
    seconds * 10_000.0 / count.max(1) as f64
}

/// Registers `mq`'s broker with `bida`, produces the backlog, then starts a
/// consumer of it with `settings` (its `endpoint` and `policy`) on the
/// clock and waits for `until`, given the consumer's id. Where the broker
/// keeps nothing for a subscriber not there yet (MQTT), the consumer
/// subscribes first and is stopped while the backlog is produced (its
/// sessions keep the subscription and queue the messages), then started on
/// the clock.
pub async fn drain<T, F>(
    bida: &BidaProcess,
    http: &reqwest::Client,
    mq: &Mq,
    settings: Value,
    backlog: Backlog,
    until: impl FnOnce(String) -> F,
) -> anyhow::Result<(Drain, T)>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let broker = post(http, format!("{}/v1/brokers", bida.url), mq.broker()).await?;
    let mut consumer = json!({"name": "bench", "broker_id": broker["id"], "source": mq.source()});
    for field in ["endpoint", "policy"] {
        consumer[field] = settings[field].clone();
    }
    let subscribed = if mq.keeps_nothing_for_absent_subscribers() {
        Some(subscribe_stopped(http, &bida.url, &consumer).await?)
    } else {
        None
    };
    mq.produce(0, backlog.messages, backlog.size, backlog.epoch).await;
    let lag_watch = bida.watch_projection_lag();
    let commits_before = bida.commits().await?;
    let cpu_before = bida.cpu_seconds();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let bench_before = process::cpu_seconds_of("self");
    let started = Instant::now();
    let id = match subscribed {
        Some(id) => {
            post(http, format!("{}/v1/consumers/{id}/start", bida.url), json!({})).await?;
            id
        }
        None => {
            let created = post(http, format!("{}/v1/consumers", bida.url), consumer).await?;
            created["id"].as_str().context("the consumer's id")?.to_string()
        }
    };
    let outcome = until(id).await?;
    let drain = Drain {
        took: started.elapsed(),
        cpu: bida.cpu_seconds() - cpu_before,
        postgres_cpu: process::cpu_seconds_of_program("postgres") - postgres_before,
        bench_cpu: process::cpu_seconds_of("self") - bench_before,
        lag_watch,
        // Read last: the request is not the drain's.
        commits: bida.commits().await?.since(commits_before),
    };
    Ok((drain, outcome))
}

/// A push consumer's drain to the bench receiver on a fresh Bida, MQ and
/// receiver, which stay up for what a benchmark measures next.
pub struct PushDrain {
    pub receiver: BenchReceiver,
    pub mq: Mq,
    pub bida: BidaProcess,
    pub drain: Drain,
    /// Distinct messages the receiver got (all of the backlog but for a stall).
    pub drained: usize,
}

/// Drains the backlog `args` describe with a push consumer to the bench
/// receiver, Bida keeping its data in `store`.
pub async fn push(args: &Args, store: StoreKind) -> anyhow::Result<PushDrain> {
    let receiver = BenchReceiver::start().await?;
    let messages = args.messages;
    let backlog = Backlog {
        messages,
        size: args.size,
        epoch: receiver.epoch(),
    };
    let mq = Mq::start(args.broker, args.partitions).await;
    let bida = BidaProcess::start(&args.config, store).await?;
    let http = process::api_client(reqwest::Client::builder())?;
    let settings = json!({"endpoint": {"url": receiver.url()}, "policy": {"concurrency": args.concurrency}});
    let (drain, drained) = drain(&bida, &http, &mq, settings, backlog, |_| async {
        Ok(receiver.wait_for(messages, Duration::from_secs(900)).await)
    })
    .await?;
    Ok(PushDrain {
        receiver,
        mq,
        bida,
        drain,
        drained,
    })
}

/// Creates the consumer `body`, waits until every node running it has
/// subscribed, then stops it and waits until no node runs it; returns its id.
/// Its sessions keep the subscription: what is published meanwhile waits for
/// it to start again.
async fn subscribe_stopped(http: &reqwest::Client, bida: &str, body: &Value) -> anyhow::Result<String> {
    let consumer = post(http, format!("{bida}/v1/consumers"), body.clone()).await?;
    let id = consumer["id"].as_str().context("the consumer's id")?.to_string();
    let url = format!("{bida}/v1/consumers/{id}");
    wait_for_consumer(http, &url, "every node running it subscribed", |nodes| {
        !nodes.is_empty() && nodes.iter().all(|node| node["state"] == "running")
    })
    .await?;
    post(http, format!("{url}/stop"), json!({})).await?;
    wait_for_consumer(http, &url, "no node running it", |nodes| nodes.is_empty()).await?;
    // A node's report goes when it lets go of the actor, which may still be
    // closing its session: a moment for the broker to see it gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(id)
}

/// Polls the consumer at `url` until its nodes' reports satisfy `done` (one minute at most).
pub async fn wait_for_consumer(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http.get(url).send().await?;
        let status = response.status();
        let view: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "{status}: {view}");
        if done(view["nodes"].as_array().map(Vec::as_slice).unwrap_or_default()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "waited a minute for {what}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
