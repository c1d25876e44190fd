//! gRPC beside HTTP: the same tasks submitted through the HTTP API and
//! delivered to the HTTP bench receiver; submitted through the HTTP API and
//! delivered to a gRPC method (`orders.v1.Callbacks/Paid` of the testkit's
//! tonic server, its types from reflection); and submitted through Bida's
//! gRPC interface (`bida.v1.Tasks/SubmitTask`) and delivered over HTTP. Each
//! run has a node and database of its own.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use bida_testkit::grpc::GrpcReceiver;

use crate::process::{self, BidaProcess, StoreKind};
use crate::receiver::BenchReceiver;
use crate::report;

/// What one run measured.
struct Figures {
    submitted_per_sec: f64,
    delivered: usize,
    delivered_per_sec: f64,
    latency: Histogram<u64>,
    bida_cpu_per_10k: f64,
    postgres_cpu_per_10k: f64,
}

/// How tasks reach Bida.
#[derive(Clone, Copy)]
enum Submit {
    Http,
    Grpc,
}

/// The end of a run: the receiving side of one protocol.
enum Sink {
    Http(BenchReceiver),
    Grpc(GrpcReceiver, Instant),
}

impl Sink {
    /// A task's body for message `seq`, stamped with when it was sent (µs
    /// since the sink's epoch) and padded to about `size` bytes.
    fn task(&self, seq: usize, sent_at_us: u64, padding: &str) -> Value {
        match self {
            Self::Http(receiver) => json!({
                "url": receiver.url(),
                "params": {"seq": seq, "sent_at_us": sent_at_us, "pad": padding},
            }),
            Self::Grpc(server, _) => json!({
                "grpc": {"target": server.target, "method": "orders.v1.Callbacks/Paid"},
                "params": {"order_id": seq.to_string(), "cents": sent_at_us, "tags": [padding]},
            }),
        }
    }

    fn epoch(&self) -> Instant {
        match self {
            Self::Http(receiver) => receiver.epoch(),
            Self::Grpc(_, epoch) => *epoch,
        }
    }

    /// Waits for `count` distinct deliveries; answers how many came and
    /// their latency from submission.
    async fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<(usize, Histogram<u64>)> {
        match self {
            Self::Http(receiver) => Ok((receiver.wait_for(count, timeout).await, receiver.latency())),
            Self::Grpc(server, epoch) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let hits = server.hits();
                    let mut seen = HashSet::new();
                    let mut latency = Histogram::<u64>::new(3)?;
                    for hit in &hits {
                        let sent = hit.request["cents"].as_str().and_then(|c| c.parse::<u64>().ok());
                        if let (true, Some(sent)) = (seen.insert(hit.request["orderId"].clone()), sent) {
                            let arrived = hit.received_at.duration_since(*epoch).as_micros() as u64;
                            latency.record(arrived.saturating_sub(sent))?;
                        }
                    }
                    if seen.len() >= count || Instant::now() > deadline {
                        return Ok((seen.len(), latency));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn one(
    submit_over: Submit,
    sink: Sink,
    tasks: usize,
    concurrency: usize,
    size: usize,
    store: StoreKind,
) -> anyhow::Result<Figures> {
    use bida_api::grpc::proto::{tasks_client::TasksClient, GrpcTarget, SubmitTaskRequest};
    let bida = BidaProcess::start("", store).await?;
    let http = process::api_client(reqwest::Client::builder().pool_max_idle_per_host(concurrency))?;
    let channel = tonic::transport::Channel::from_shared(bida.grpc_url.clone())?
        .connect()
        .await?;
    let padding = "x".repeat(size.saturating_sub(60));
    let cpu_before = bida.cpu_seconds();
    let postgres_before = process::cpu_seconds_of_program("postgres");
    let epoch = sink.epoch();
    let url = format!("{}/v1/tasks", bida.url);
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let key: tonic::metadata::MetadataValue<_> = format!("Bearer {}", process::BENCH_KEY).parse()?;
    let submit = |_| async {
        let mut client = TasksClient::new(channel.clone());
        loop {
            let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if seq >= tasks {
                return Ok::<_, anyhow::Error>(());
            }
            let body = sink.task(seq, epoch.elapsed().as_micros() as u64, &padding);
            match submit_over {
                Submit::Http => {
                    let response = http.post(&url).json(&body).send().await?;
                    anyhow::ensure!(response.status() == 202, "task {seq}: {}", response.text().await?);
                }
                Submit::Grpc => {
                    let grpc = body.get("grpc").map(|target| GrpcTarget {
                        target: target["target"].as_str().unwrap_or_default().into(),
                        method: target["method"].as_str().unwrap_or_default().into(),
                    });
                    let mut request = tonic::Request::new(SubmitTaskRequest {
                        url: body["url"].as_str().unwrap_or_default().into(),
                        grpc,
                        params: Some(bida_api::grpc::json_value(body["params"].clone())),
                        ..SubmitTaskRequest::default()
                    });
                    request.metadata_mut().insert("authorization", key.clone());
                    client
                        .submit_task(request)
                        .await
                        .map_err(|status| anyhow::anyhow!("task {seq}: {status}"))?;
                }
            }
        }
    };
    futures::future::try_join_all((0..concurrency).map(submit)).await?;
    let submitted_in = started.elapsed();
    let (delivered, latency) = sink.wait_for(tasks, Duration::from_secs(600)).await?;
    let delivered_in = started.elapsed();
    let per_10k = |seconds: f64| seconds * 10_000.0 / delivered.max(1) as f64;
    Ok(Figures {
        submitted_per_sec: tasks as f64 / submitted_in.as_secs_f64(),
        delivered,
        delivered_per_sec: delivered as f64 / delivered_in.as_secs_f64(),
        latency,
        bida_cpu_per_10k: per_10k(bida.cpu_seconds() - cpu_before),
        postgres_cpu_per_10k: per_10k(process::cpu_seconds_of_program("postgres") - postgres_before),
    })
}

pub async fn run(tasks: usize, concurrency: usize, size: usize, store: StoreKind) -> anyhow::Result<()> {
    let http_sink = || async { anyhow::Ok(Sink::Http(BenchReceiver::start().await?)) };
    let http = one(Submit::Http, http_sink().await?, tasks, concurrency, size, store).await?;
    let server = GrpcReceiver::start(true).await;
    let grpc = one(
        Submit::Http,
        Sink::Grpc(server, Instant::now()),
        tasks,
        concurrency,
        size,
        store,
    )
    .await?;
    let submitted_over_grpc = one(Submit::Grpc, http_sink().await?, tasks, concurrency, size, store).await?;
    let runs = [
        ("HTTP API", "HTTP", &http),
        ("HTTP API", "gRPC", &grpc),
        ("gRPC interface", "HTTP", &submitted_over_grpc),
    ];
    println!(
        "\nAPI tasks submitted and delivered over HTTP and gRPC ({tasks} tasks, ~{size} bytes, {concurrency} clients)"
    );
    println!("| submitted through | delivered over | submitted tasks/s | delivered tasks/s | submit→delivery p50 / p99 / max | bida CPU per 10k | postgres CPU per 10k |");
    println!("|---|---|---|---|---|---|---|");
    for (submit, delivery, figures) in runs {
        println!(
            "| {submit} | {delivery} | {:.0} | {:.0} | {} | {:.2} s | {:.2} s |",
            figures.submitted_per_sec,
            figures.delivered_per_sec,
            report::millis(&figures.latency),
            figures.bida_cpu_per_10k,
            figures.postgres_cpu_per_10k,
        );
    }
    for (submit, delivery, figures) in runs {
        anyhow::ensure!(
            figures.delivered == tasks,
            "{submit} to {delivery}: only {} of {tasks} tasks were delivered",
            figures.delivered
        );
    }
    Ok(())
}
