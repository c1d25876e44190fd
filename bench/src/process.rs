//! The Bida under test: a release build on a fresh store, measured through /proc.

use anyhow::{bail, Context};
use bida_testkit::TestDatabase;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct BidaProcess {
    child: Child,
    pub url: String,
    /// Its gRPC interface.
    pub grpc_url: String,
    /// Shared by the nodes started with [`BidaProcess::another`]: the
    /// database goes when the last of them does.
    store: Arc<BenchStore>,
    binary: PathBuf,
    /// `--node-name`, when not the default (the host's name).
    name: Option<String>,
}

/// Which store the node under test keeps its data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Postgres,
    Embedded,
}

enum BenchStore {
    Postgres(TestDatabase),
    /// The embedded store's data directory.
    Embedded(PathBuf),
}

impl BenchStore {
    fn new(kind: StoreKind) -> Self {
        let db = TestDatabase::reserve();
        match kind {
            StoreKind::Postgres => Self::Postgres(db),
            StoreKind::Embedded => Self::Embedded(std::env::temp_dir().join(db.name())),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Postgres(db) => db.name().to_string(),
            Self::Embedded(dir) => dir.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        }
    }

    fn args(&self) -> [String; 2] {
        match self {
            Self::Postgres(db) => ["--database-url".into(), db.url().into()],
            Self::Embedded(dir) => ["--data-dir".into(), dir.display().to_string()],
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub struct Storage {
    pub events: u64,
    pub read_model: u64,
}

impl Storage {
    pub fn total(&self) -> u64 {
        self.events + self.read_model
    }
}

/// Resident set size samples, to tell a steady footprint from a growing one.
pub struct RssWatch {
    samples: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    pub fn stop(self) -> Vec<u64> {
        self.task.abort();
        let samples = self.samples.lock().unwrap().clone();
        samples
    }
}

/// How the resident set moved: after the first minute (warm) against the end.
pub fn rss_summary(samples: &[u64]) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (Some(min), Some(max), Some(last)) = (samples.iter().min(), samples.iter().max(), samples.last()) else {
        return "no samples".into();
    };
    // Samples are 5 s apart: the twelfth is one minute in.
    let warm = samples.get(12).or(samples.first()).copied().unwrap_or(0);
    let change = |from: u64, to: u64| 100.0 * (to as f64 - from as f64) / from.max(1) as f64;
    let mut summary = format!(
        "{:.1} MiB at 1 min, {:.1} MiB at the end ({:+.1}%), min {:.1} / max {:.1} over {} samples",
        mib(warm),
        mib(*last),
        change(warm, *last),
        mib(*min),
        mib(*max),
        samples.len()
    );
    // Single samples swing with the allocator's pages: a trend shows in
    // medians, minute 2 against the last minute.
    const MINUTE: usize = 12;
    if samples.len() >= 3 * MINUTE {
        let (second, final_minute) = (
            median(&samples[MINUTE..2 * MINUTE]),
            median(&samples[samples.len() - MINUTE..]),
        );
        summary.push_str(&format!(
            "; median {:.1} MiB in minute 2, {:.1} MiB in the last minute ({:+.1}%)",
            mib(second),
            mib(final_minute),
            change(second, final_minute)
        ));
    }
    summary
}

fn median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// Group commits of the event store's writer, and the events they held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Commits {
    pub batches: f64,
    pub events: f64,
}

impl Commits {
    /// What was committed between `before` and `self`.
    pub fn since(self, before: Commits) -> Commits {
        Commits {
            batches: self.batches - before.batches,
            events: self.events - before.events,
        }
    }

    /// "N commits, E events each".
    pub fn describe(self) -> String {
        format!(
            "{:.0} commits, {:.1} events each",
            self.batches,
            self.events / self.batches.max(1.0)
        )
    }
}

/// The values of metric `name` (every label set) in a Prometheus text page.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(move |l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
}

/// The largest projection lag `/metrics` showed while it was watched.
pub struct LagWatch {
    max: std::sync::Arc<std::sync::atomic::AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl LagWatch {
    pub fn stop(self) -> i64 {
        self.task.abort();
        self.max.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `BENCH_BIDA_BINARY`, when set: a `bida` built elsewhere (another
/// commit's, for a before/after comparison run back to back). Not `BIDA_…`:
/// the node inherits the bench's environment and would read that as a
/// configuration key. Otherwise builds (if needed) and returns the
/// workspace's release binary; `cargo` comes from PATH (the rustup proxy)
/// so the workspace's toolchain is used.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("BENCH_BIDA_BINARY") {
        let given = PathBuf::from(given);
        if !given.is_file() {
            bail!("BENCH_BIDA_BINARY={} is not a file", given.display());
        }
        return Ok(given);
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "bida"])
        .status()
        .context("cargo build --release --bin bida")?;
    if !status.success() {
        bail!("building bida failed");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(root.join("target/release/bida"))
}

/// The admin key the benchmark's node is started with.
pub const BENCH_KEY: &str = "bida_bench_admin_key_for_benchmarks_only";

/// A client for the node's API, with the benchmark's key.
pub fn api_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {BENCH_KEY}").parse().expect("a valid header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    builder.default_headers(headers).build()
}

impl BidaProcess {
    pub async fn start(extra_config: &str, kind: StoreKind) -> anyhow::Result<Self> {
        Self::launch(binary()?, Arc::new(BenchStore::new(kind)), extra_config, None).await
    }

    /// Another node on this one's database, named `name`: nodes sharing a
    /// PostgreSQL store share the work.
    pub async fn another(&self, extra_config: &str, name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            matches!(*self.store, BenchStore::Postgres(_)),
            "only nodes on PostgreSQL share a store"
        );
        Self::launch(
            self.binary.clone(),
            self.store.clone(),
            extra_config,
            Some(name.to_string()),
        )
        .await
    }

    /// Stops the node with SIGTERM, as an operator would (its consumers
    /// leave their groups, deliveries in flight finish), a minute at most
    /// before a kill; returns how long it took. Its store stays.
    pub async fn stop(&mut self) -> anyhow::Result<Duration> {
        let asked = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("kill -TERM")?;
        while self.child.try_wait()?.is_none() {
            if asked.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("bida did not stop within a minute of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(asked.elapsed())
    }

    /// Starts the stopped node again on its store, with `extra_config`.
    pub async fn start_again(&mut self, extra_config: &str) -> anyhow::Result<()> {
        let started = Self::launch(self.binary.clone(), self.store.clone(), extra_config, self.name.clone()).await?;
        *self = started;
        Ok(())
    }

    async fn launch(
        binary: PathBuf,
        store: Arc<BenchStore>,
        extra_config: &str,
        name: Option<String>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Nodes sharing a store each have their own file and log.
        let file = match &name {
            Some(name) => format!("{}-{name}", store.name()),
            None => store.name(),
        };
        let config = std::env::temp_dir().join(format!("{file}.toml"));
        // Gauges (projection lag) refreshed often enough to watch.
        std::fs::write(
            &config,
            format!("[telemetry]\nsample_interval_ms = 1000\n{extra_config}"),
        )?;
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{file}.log")))?;
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
            .args(store.args());
        if let Some(name) = &name {
            command.args(["--node-name", name]);
        }
        let child = command
            .env("RUST_LOG", "warn")
            .env("BIDA_AUTH__BOOTSTRAP_ADMIN_KEY", BENCH_KEY)
            .env("BIDA_DELIVERY__ALLOW_NETWORKS", r#"["127.0.0.0/8"]"#)
            // The benchmark measures Bida, not the per-key limit (5,000/s by
            // default): its one key may go as fast as Bida does.
            .env("BIDA_API__RATE_LIMIT__PER_SECOND", "1000000")
            .env("BIDA_API__RATE_LIMIT__BURST", "1000000")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let process = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            store,
            binary,
            name,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/readyz", process.url)).send().await {
                if r.status().is_success() {
                    return Ok(process);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("bida did not become ready")
    }

    /// The process id, as the `nodes` table records it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection to the node's PostgreSQL database.
    pub async fn connect(&self) -> anyhow::Result<sqlx::PgConnection> {
        use sqlx::Connection;
        match &*self.store {
            BenchStore::Postgres(db) => Ok(sqlx::PgConnection::connect(db.url()).await?),
            BenchStore::Embedded(_) => bail!("this needs the PostgreSQL store"),
        }
    }

    /// A `bida` command on the node's store (a CLI command beside the node).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).args(self.store.args()).env("RUST_LOG", "warn");
        command
    }

    /// User + system CPU time of the process so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// Peak resident set size (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    /// Follows `bida_projection_lag` until stopped.
    pub fn watch_projection_lag(&self) -> LagWatch {
        let max = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let (url, seen) = (format!("{}/metrics", self.url), max.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                if let Ok(response) = http.get(&url).send().await {
                    let text = response.text().await.unwrap_or_default();
                    let lag = samples(&text, "bida_projection_lag").fold(0.0, f64::max);
                    seen.fetch_max(lag as i64, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        });
        LagWatch { max, task }
    }

    /// The group commits so far and the events they held (`/metrics`).
    pub async fn commits(&self) -> anyhow::Result<Commits> {
        let text = reqwest::get(format!("{}/metrics", self.url)).await?.text().await?;
        Ok(Commits {
            batches: samples(&text, "bida_event_store_append_batch_size_count").sum(),
            events: samples(&text, "bida_event_store_append_batch_size_sum").sum(),
        })
    }

    /// Stops the node (so that a rebuild runs alone), then rebuilds the task
    /// list from position 0 with the CLI; returns what it printed.
    pub fn rebuild_projection(&mut self) -> anyhow::Result<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let output = self.command(&["projections", "rebuild", "task_list"]).output()?;
        if !output.status.success() {
            bail!("rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The resident set size now.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// Bytes the whole store takes on disk (database or data directory).
    pub async fn database_bytes(&self) -> anyhow::Result<u64> {
        match &*self.store {
            BenchStore::Postgres(_) => {
                let mut connection = self.connect().await?;
                let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut connection)
                    .await?;
                Ok(bytes as u64)
            }
            BenchStore::Embedded(dir) => Ok(std::fs::read_dir(dir)?
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()),
        }
    }

    /// Samples the resident set size every `every` until stopped.
    pub fn watch_rss(&self, every: Duration) -> RssWatch {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (pid, kept) = (self.child.id(), samples.clone());
        let task = tokio::spawn(async move {
            loop {
                kept.lock().unwrap().push(status_kib(pid, "VmRSS:"));
                tokio::time::sleep(every).await;
            }
        });
        RssWatch { samples, task }
    }

    /// Bytes on disk of the event store and of what goes with each task.
    pub async fn storage(&self) -> anyhow::Result<Storage> {
        match &*self.store {
            BenchStore::Postgres(_) => {}
            BenchStore::Embedded(dir) => {
                // dbstat: pages per table and index, in the file.
                let mut connection = embedded(dir).await?;
                let (events, read_model): (i64, i64) = sqlx::query_as(
                    "SELECT coalesce(sum(CASE WHEN tbl_name = 'events' THEN pgsize END), 0),
                            coalesce(sum(CASE WHEN tbl_name IN ('task_view', 'task_streams') THEN pgsize END), 0)
                     FROM dbstat JOIN sqlite_schema ON dbstat.name = sqlite_schema.name",
                )
                .fetch_one(&mut connection)
                .await?;
                return Ok(Storage {
                    events: events as u64,
                    read_model: read_model as u64,
                });
            }
        }
        let mut connection = self.connect().await?;
        let (events, read_model): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint
                     FROM pg_inherits i WHERE i.inhparent = 'events'::regclass),
                    pg_total_relation_size('task_view') + pg_total_relation_size('task_streams')",
        )
        .fetch_one(&mut connection)
        .await?;
        Ok(Storage {
            events: events as u64,
            read_model: read_model as u64,
        })
    }

    pub async fn count_events(&self) -> anyhow::Result<i64> {
        const COUNT: &str = "SELECT count(*) FROM events";
        Ok(match &*self.store {
            BenchStore::Postgres(_) => sqlx::query_scalar(COUNT).fetch_one(&mut self.connect().await?).await?,
            BenchStore::Embedded(dir) => sqlx::query_scalar(COUNT).fetch_one(&mut embedded(dir).await?).await?,
        })
    }
}

/// A read-only connection to the embedded store in `dir`.
async fn embedded(dir: &std::path::Path) -> anyhow::Result<sqlx::SqliteConnection> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bida.db"))
        .read_only(true);
    Ok(sqlx::SqliteConnection::connect_with(&options).await?)
}

/// User + system CPU time of a process (`self` for this one) so far.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

/// CPU seconds used so far by every running process of that name (`postgres`:
/// the server and its backends, Bida's pooled connections among them).
pub fn cpu_seconds_of_program(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name))
        .map(|pid| cpu_seconds_of(&pid))
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Drop for BidaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
