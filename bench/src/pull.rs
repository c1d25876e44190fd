//! `bida-bench pull`: one backlog drained twice, back to back, each on a
//! fresh Bida, database and queue or topic: by a push consumer to the bench
//! receiver (as `mq` drains it), then by a pull consumer whose members run
//! in the bench process, each looping pull (long poll) → ack of every lease
//! until every message is acked. Printed side by side.

use anyhow::Context;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::drain::{self, per_10k, Backlog, Drain};
use crate::mq::Mq;
use crate::post;
use crate::process::{self, BidaProcess, StoreKind};
use crate::report::Report;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    backlog: drain::Args,
    /// Members pulling at once (tasks of the bench process).
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Most messages a pull asks for; also the pull consumer's `batch`.
    #[arg(long, default_value_t = 100)]
    max: u32,
    /// How long a member holds a pulled message before it is given again.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// The pull consumer's `max_waiting` (messages waiting in its lane beyond
    /// which it takes no more from the broker); the server's default if not given.
    #[arg(long)]
    max_waiting: Option<u32>,
}

/// How long a member's pull waits for a message when none is due.
const WAIT_MS: u64 = 1_000;
/// The pull drain gives up when no message was acked for this long.
const STALLED_AFTER: Duration = Duration::from_secs(120);

/// What the members saw, all of them together.
#[derive(Default)]
struct Tally {
    /// Message ids pulled at least once.
    pulled: HashSet<String>,
    /// Message ids whose lease an ack settled.
    acked: HashSet<String>,
    /// The `seq` of each acked payload: a message the broker gave twice
    /// under two ids shows as fewer of these than of `acked`.
    payloads: HashSet<u64>,
    /// Pulls that returned messages, and how many they returned.
    rounds: usize,
    messages: usize,
    /// Pulls that returned none (long polls that waited out `WAIT_MS`).
    empty: usize,
    /// Messages pulled again (an id already pulled).
    duplicates: usize,
    /// Messages pulled with an attempt above 1.
    redelivered: usize,
    /// Leases an ack settled (more than `acked` if one message was settled twice).
    settled: usize,
    /// Leases an ack answered as expired.
    expired: usize,
    errors: usize,
    last_error: Option<String>,
    /// When the last new message was acked.
    progress: Option<Instant>,
}

/// One drain's figures, for a column of the report.
struct Column {
    took: Duration,
    /// CPU seconds of Bida, Postgres and the bench process (the receiver or the members).
    cpu: [f64; 3],
    /// Distinct messages delivered (push) or acked (pull).
    handled: usize,
    /// Deliveries or pulls of a message already delivered or pulled.
    duplicates: usize,
    events: i64,
    projection_lag: i64,
}

impl Column {
    async fn new(drain: Drain, handled: usize, duplicates: usize, bida: &BidaProcess) -> anyhow::Result<Self> {
        Ok(Self {
            took: drain.took,
            cpu: [drain.cpu, drain.postgres_cpu, drain.bench_cpu],
            handled,
            duplicates,
            events: bida.count_events().await.context("count events")?,
            projection_lag: drain.lag_watch.stop(),
        })
    }

    /// Messages a second.
    fn rate(&self) -> f64 {
        self.handled as f64 / self.took.as_secs_f64()
    }

    /// CPU seconds per 10k messages of Bida (0), Postgres (1) or the bench (2).
    fn cpu_per_10k(&self, which: usize) -> String {
        format!("{:.2}", per_10k(self.cpu[which], self.handled))
    }
}

pub async fn run(args: &Args, store: StoreKind) -> anyhow::Result<()> {
    let backlog = &args.backlog;
    let (messages, size) = (backlog.messages, backlog.size);

    let push = {
        let pushed = drain::push(backlog, store).await?;
        let duplicates = pushed.receiver.requests().saturating_sub(pushed.drained);
        Column::new(pushed.drain, pushed.drained, duplicates, &pushed.bida).await?
        // Bida, the receiver and the broker stop here, before the pull drain.
    };

    let mq = Mq::start(backlog.broker, backlog.partitions).await;
    let bida = BidaProcess::start(&backlog.config, store).await?;
    let http = process::api_client(reqwest::Client::builder())?;
    let mut endpoint = json!({"kind": "pull", "mode": "cluster", "lease_ms": args.lease_ms, "batch": args.max});
    if let Some(max_waiting) = args.max_waiting {
        endpoint["max_waiting"] = json!(max_waiting);
    }
    let settings = json!({"endpoint": endpoint, "policy": {"concurrency": backlog.concurrency}});
    let stamped = Backlog {
        messages,
        size,
        epoch: Instant::now(),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (drain, (id, members)) = drain::drain(&bida, &http, &mq, settings, stamped, |id| {
        let (tally, stop) = (tally.clone(), stop.clone());
        let consumer = format!("{}/v1/consumers/{id}", bida.url);
        async move {
            let members: Vec<_> = (0..args.members)
                .map(|n| {
                    tokio::spawn(member(
                        format!("m{n}"),
                        consumer.clone(),
                        args.max,
                        tally.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            wait_until_acked(&tally, messages).await;
            Ok((id, members))
        }
    })
    .await?;
    // Members in a long poll see the stop when it returns (within WAIT_MS);
    // what they pull meanwhile still counts as duplicates.
    stop.store(true, Ordering::Relaxed);
    for member in members {
        member.await?;
    }
    let consumer = format!("{}/v1/consumers/{id}", bida.url);
    let (view, counted_in) = counted(&http, &consumer, messages).await?;
    let members: Value = http.get(format!("{consumer}/members")).send().await?.json().await?;
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acked = tally.acked.len();
    let pull = Column::new(drain, acked, tally.duplicates, &bida).await?;

    let side = |push: String, pull: String| format!("{push:>14}  {pull:>14}");
    let both = |figure: &dyn Fn(&Column) -> String| side(figure(&push), figure(&pull));
    let members_acked: i64 = members["members"]
        .as_array()
        .map_or(0, |all| all.iter().filter_map(|m| m["acked"].as_i64()).sum());
    // Cluster mode leases from the consumer's lane; the list also names each
    // member's (broadcast) lane.
    let lanes = members["lanes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let in_lanes = |field: &str| lanes.iter().filter_map(|lane| lane[field].as_i64()).sum::<i64>();
    Report::new(&format!(
        "{} backlog: push consumer → HTTP endpoint vs pull consumer ← members",
        backlog.broker.title()
    ))
    .row("messages, payload bytes", format!("{messages}, {size}"))
    .row(
        "push concurrency; pull members × max",
        format!(
            "{}; {} × {} (wait_ms {WAIT_MS}, lease_ms {}, max_waiting {})",
            backlog.concurrency,
            args.members,
            args.max,
            args.lease_ms,
            args.max_waiting.map_or("default".into(), |n| n.to_string())
        ),
    )
    .row("", side("push".into(), "pull".into()))
    .row("throughput (msgs/s)", both(&|c| format!("{:.0}", c.rate())))
    .row("drained in (s)", both(&|c| format!("{:.1}", c.took.as_secs_f64())))
    .row("delivered / acked (distinct)", both(&|c| c.handled.to_string()))
    .row("duplicates", both(&|c| c.duplicates.to_string()))
    .row("bida CPU per 10k (s)", both(&|c| c.cpu_per_10k(0)))
    .row("postgres CPU per 10k (s)", both(&|c| c.cpu_per_10k(1)))
    .row("bench CPU per 10k (s)", both(&|c| c.cpu_per_10k(2)))
    .row(
        "events per message",
        both(&|c| format!("{:.2}", c.events as f64 / c.handled.max(1) as f64)),
    )
    .row("projection lag (max events)", both(&|c| c.projection_lag.to_string()))
    .row(
        "pull / push throughput",
        format!("{:.2}", pull.rate() / push.rate().max(f64::MIN_POSITIVE)),
    )
    .row(
        "pulls with messages",
        format!(
            "{} ({:.1} messages per pull), {} empty",
            tally.rounds,
            tally.messages as f64 / tally.rounds.max(1) as f64,
            tally.empty
        ),
    )
    .row(
        "pulled / acks settled / expired",
        format!(
            "{} distinct ids ({} pulls of a message, {} with attempt > 1) / {} / {}",
            tally.pulled.len(),
            tally.messages,
            tally.redelivered,
            tally.settled,
            tally.expired
        ),
    )
    .row("distinct payloads acked", tally.payloads.len().to_string())
    .row(
        "members' errors",
        match &tally.last_error {
            Some(error) => format!("{} (last: {error})", tally.errors),
            None => "0".into(),
        },
    )
    .row(
        "consumer's counters.delivered",
        format!(
            "{} (reached or given up {:.1} s after the members stopped), lag_total {}",
            view["counters"]["delivered"], counted_in, view["lag_total"]
        ),
    )
    .row(
        "members' acked; left in lanes",
        format!(
            "{members_acked}; waiting {}, leased {} ({} lanes listed)",
            in_lanes("waiting"),
            in_lanes("leased"),
            lanes.len()
        ),
    )
    .print();
    anyhow::ensure!(
        push.handled == messages,
        "push delivered only {} of {messages}",
        push.handled
    );
    anyhow::ensure!(
        acked == messages,
        "pull acked only {acked} of {messages} (nothing acked for {} s)",
        STALLED_AFTER.as_secs()
    );
    Ok(())
}

/// Waits until `messages` distinct messages are acked, or none was for
/// [`STALLED_AFTER`]; 20 ms steps, as the push drain's receiver.
async fn wait_until_acked(tally: &Mutex<Tally>, messages: usize) {
    let since = Instant::now();
    loop {
        let (acked, progress) = {
            let tally = tally.lock().unwrap();
            (tally.acked.len(), tally.progress.unwrap_or(since))
        };
        if acked >= messages || progress.elapsed() >= STALLED_AFTER {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A member: pulls up to `max` (waiting up to [`WAIT_MS`]) and acks every
/// lease it got, until `stop`.
async fn member(name: String, consumer: String, max: u32, tally: Arc<Mutex<Tally>>, stop: Arc<AtomicBool>) {
    let failed = |error: anyhow::Error| {
        let mut tally = tally.lock().unwrap();
        tally.errors += 1;
        tally.last_error = Some(format!("{error:#}"));
    };
    let http = match process::api_client(reqwest::Client::builder().timeout(Duration::from_secs(30))) {
        Ok(http) => http,
        Err(error) => return failed(error.into()),
    };
    let (pull, ack) = (format!("{consumer}/pull"), format!("{consumer}/ack"));
    while !stop.load(Ordering::Relaxed) {
        let request = json!({"member": name, "max": max, "wait_ms": WAIT_MS});
        let pulled = match post(&http, pull.clone(), request).await {
            Ok(pulled) => pulled,
            Err(error) => {
                failed(error);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let messages = pulled["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        // Lease → message id and payload seq.
        let mut leases: HashMap<String, (String, Option<u64>)> = HashMap::new();
        {
            let mut tally = tally.lock().unwrap();
            if messages.is_empty() {
                tally.empty += 1;
                continue;
            }
            tally.rounds += 1;
            tally.messages += messages.len();
            for message in messages {
                let id = message["message_id"].as_str().unwrap_or_default().to_string();
                if !tally.pulled.insert(id.clone()) {
                    tally.duplicates += 1;
                }
                if message["attempt"].as_u64() > Some(1) {
                    tally.redelivered += 1;
                }
                let seq = message["body"]["text"]
                    .as_str()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .and_then(|payload| payload["seq"].as_u64());
                let lease = message["lease"].as_str().unwrap_or_default().to_string();
                leases.insert(lease, (id, seq));
            }
        }
        let request = json!({"leases": leases.keys().collect::<Vec<_>>(), "member": name});
        match post(&http, ack.clone(), request).await {
            Ok(settled) => {
                let mut tally = tally.lock().unwrap();
                for lease in settled["settled"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let Some((id, seq)) = lease.as_str().and_then(|lease| leases.get(lease)) else {
                        continue;
                    };
                    tally.settled += 1;
                    if tally.acked.insert(id.clone()) {
                        tally.progress = Some(Instant::now());
                    }
                    if let Some(seq) = seq {
                        tally.payloads.insert(*seq);
                    }
                }
                tally.expired += settled["expired"].as_array().map_or(0, Vec::len);
            }
            Err(error) => failed(error),
        }
    }
}

/// The consumer's view once its `counters.delivered` (a projection, behind
/// the acks) reached `messages`, or after 30 s; and how long that took.
async fn counted(http: &reqwest::Client, consumer: &str, messages: usize) -> anyhow::Result<(Value, f64)> {
    let started = Instant::now();
    loop {
        let view: Value = http.get(consumer).send().await?.json().await?;
        let delivered = view["counters"]["delivered"].as_i64().unwrap_or_default();
        if delivered >= messages as i64 || started.elapsed() >= Duration::from_secs(30) {
            return Ok((view, started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
