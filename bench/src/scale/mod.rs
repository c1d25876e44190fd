//! `bida-bench scale`: how Bida's costs grow with what it holds, one
//! markdown table per dimension, a row per size:
//!
//! - consumers: idle consumers on one node (memory, CPU, start-up, a live change);
//! - pending: messages waiting for their time (memory, database, lateness of due ones);
//! - history: finished tasks in the store (list and search latency, rebuild, retention);
//! - nodes: nodes on one database draining one backlog (throughput).
//!
//! Every size runs on a fresh node and database (PostgreSQL: retention and
//! several nodes need it). Sizes are flags, so that a small run checks the
//! harness before a long one measures.

mod consumers;
mod history;
mod nodes;
mod pending;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::StoreKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Consumers,
    Pending,
    History,
    Nodes,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which tables to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Part::Consumers, Part::Pending, Part::History, Part::Nodes])]
    only: Vec<Part>,
    /// Idle consumers on one node, half on RabbitMQ queues, half on Kafka topics.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1_000])]
    consumers: Vec<usize>,
    /// Seconds over which idle memory and CPU are measured.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Delayed messages left pending (due in an hour).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    pending: Vec<usize>,
    /// Messages due while the pending ones wait, whose lateness is measured.
    #[arg(long, default_value_t = 2_000)]
    due: usize,
    /// Seconds the due messages are spread over.
    #[arg(long, default_value_t = 10)]
    due_over: u64,
    /// Seconds from their submission until the first is due.
    #[arg(long, default_value_t = 5)]
    due_lead: u64,
    /// Finished tasks filled into the store by SQL.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000, 10_000_000])]
    history: Vec<u64>,
    /// Requests per task-list filter (the p99 is of these).
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Nodes on one database draining one backlog.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    nodes: Vec<usize>,
    /// Messages in the backlog the nodes drain.
    #[arg(long, default_value_t = 200_000)]
    backlog: usize,
    /// Kafka partitions of that backlog's topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
}

pub async fn run(args: &Args, store: StoreKind) -> anyhow::Result<()> {
    anyhow::ensure!(
        store == StoreKind::Postgres,
        "scale needs the PostgreSQL store (several nodes, retention)"
    );
    let kafka = kafka_installed();
    let mut tables = Vec::new();
    for part in &args.only {
        let part_tables = match part {
            Part::Consumers => {
                vec![consumers::run(&args.consumers, Duration::from_secs(args.idle_seconds), kafka).await?]
            }
            Part::Pending => {
                let due = pending::Due {
                    messages: args.due,
                    over: args.due_over,
                    lead: args.due_lead,
                };
                vec![pending::run(&args.pending, due).await?]
            }
            Part::History => history::run(&args.history, args.requests).await?,
            Part::Nodes => vec![nodes::run(&args.nodes, args.backlog, args.partitions, kafka).await?],
        };
        for table in part_tables {
            table.print();
            tables.push(table);
        }
    }
    // All together at the end, where a long run's output is easiest to copy.
    if args.only.len() > 1 {
        println!("\n----- scale: all tables -----");
        for table in &tables {
            table.print();
        }
    }
    Ok(())
}

/// Whether the Kafka broker the testkit starts (tansu, `BIDA_TEST_TANSU` or
/// on the PATH) can be run here: without it the Kafka halves are left out.
fn kafka_installed() -> bool {
    let tansu = std::env::var("BIDA_TEST_TANSU").unwrap_or_else(|_| "tansu".to_string());
    Command::new(tansu)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Polls `check` every 100 ms until it says done or `limit` passes; returns
/// how long it took from `since`.
async fn until<F, Fut>(since: Instant, limit: Duration, what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
