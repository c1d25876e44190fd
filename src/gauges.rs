//! Refreshes the gauges that come from shared state (read models, consumer
//! reports, broker probes) and this node's report in the node list.

use bida_actors::brokers::BrokerService;
use bida_actors::consumer::ConsumerService;
use bida_actors::NodeContextView;
use bida_projections::{lag, Stats, TaskList};
use bida_store::Store;
use bida_telemetry::{set_gauge, Gauge, KeyValue, Point};
use chrono::TimeDelta;
use std::time::{Duration, Instant};

use bida_projections::Projection as _;

/// Brokers are probed less often than the database is read: a probe opens connections.
const BROKER_EVERY: Duration = Duration::from_secs(30);
/// Statistics older than this are dropped.
const STATS_KEPT: TimeDelta = TimeDelta::days(7);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Sampler {
    pub store: Store,
    pub consumers: ConsumerService,
    pub brokers: BrokerService,
    pub node: NodeContextView,
    pub interval: Duration,
}

impl Sampler {
    /// Samples until aborted; brokers are probed by a task of their own, so
    /// that an unreachable one does not hold the other gauges back.
    pub fn spawn(self) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
        let brokers = self.brokers.clone();
        let probes = tokio::spawn(async move {
            loop {
                probe_brokers(&brokers).await;
                tokio::time::sleep(BROKER_EVERY).await;
            }
        });
        let sampler = tokio::spawn(async move {
            let started = Instant::now();
            let mut pruned_at: Option<Instant> = None;
            loop {
                if let Err(e) = self.sample(started).await {
                    tracing::debug!(error = %e, "gauges not refreshed");
                }
                if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    pruned_at = Some(Instant::now());
                    match Stats::prune(&self.store, STATS_KEPT).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(buckets = n, "old statistics dropped"),
                        Err(e) => tracing::warn!(error = %e, "cannot drop old statistics"),
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        });
        (sampler, probes)
    }

    async fn sample(&self, started: Instant) -> Result<(), String> {
        let by_status = Stats::by_status(&self.store).await.map_err(|e| e.to_string())?;
        set_gauge(
            Gauge::Tasks,
            by_status
                .into_iter()
                .map(|(status, n)| (vec![KeyValue::new("bida.status", status)], n as f64))
                .collect(),
        );
        let behind = lag(&self.store, TaskList::NAME).await.map_err(|e| e.to_string())?;
        set_gauge(
            Gauge::ProjectionLag,
            vec![(vec![KeyValue::new("bida.projection", TaskList::NAME)], behind as f64)],
        );
        self.sample_consumers().await?;
        let consumer_actors = self
            .store
            .consumer_actors_on(self.node.id, 10.0)
            .await
            .map_err(|e| e.to_string())?;
        let task_actors = self.node.task_actors();
        set_gauge(
            Gauge::NodeActors,
            vec![
                (vec![KeyValue::new("bida.actor", "task")], task_actors as f64),
                (vec![KeyValue::new("bida.actor", "consumer")], consumer_actors as f64),
            ],
        );
        let report = serde_json::json!({
            "uptime_secs": started.elapsed().as_secs(),
            "rss_bytes": bida_telemetry::resident_bytes(),
            "cpu_seconds": bida_telemetry::cpu_seconds(),
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "task_actors": task_actors,
            "consumer_actors": consumer_actors,
        });
        self.store
            .set_node_report(self.node.id, &report)
            .await
            .map_err(|e| e.to_string())
    }

    async fn sample_consumers(&self) -> Result<(), String> {
        let consumers = self.consumers.observed().await.map_err(|e| e.to_string())?;
        let mut states: Vec<Point> = Vec::new();
        let mut lags: Vec<Point> = Vec::new();
        for consumer in consumers {
            states.push((
                vec![
                    KeyValue::new("bida.consumer", consumer.id.clone()),
                    KeyValue::new("bida.consumer.name", consumer.spec.name.clone()),
                    KeyValue::new("bida.state", consumer.state.as_str()),
                ],
                1.0,
            ));
            let system = consumer.spec.source.kind().as_str();
            // Each node reports the partitions it holds (Kafka) or the queue's
            // depth (RabbitMQ): the union, the freshest report winning.
            let mut reports: Vec<_> = consumer.nodes.iter().collect();
            reports.sort_by_key(|n| n.updated_at);
            let mut latest: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
            for report in reports {
                for entry in report
                    .report
                    .get("backlog")
                    .and_then(|b| b.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(source) = entry.get("source").and_then(|s| s.as_str()) {
                        latest.insert(source.to_string(), entry.clone());
                    }
                }
            }
            for entry in latest.values() {
                let (Some(destination), Some(lag)) = (
                    entry.get("destination").and_then(|s| s.as_str()),
                    entry.get("lag").and_then(|l| l.as_i64()),
                ) else {
                    continue;
                };
                let partition = entry.get("partition").and_then(|p| p.as_i64());
                let mut labels = vec![
                    KeyValue::new("bida.consumer", consumer.id.clone()),
                    KeyValue::new("messaging.system", system),
                    KeyValue::new("messaging.destination.name", destination.to_string()),
                ];
                if let Some(partition) = partition {
                    labels.push(KeyValue::new(
                        "messaging.destination.partition.id",
                        partition.to_string(),
                    ));
                }
                lags.push((labels, lag as f64));
            }
        }
        set_gauge(Gauge::ConsumerState, states);
        set_gauge(Gauge::ConsumerLag, lags);
        Ok(())
    }
}

async fn probe_brokers(service: &BrokerService) {
    let Ok(brokers) = service.list().await else {
        return;
    };
    let (mut points, mut produced, mut publish_rates) = (Vec::new(), Vec::new(), Vec::new());
    for broker in brokers.into_iter().filter(|b| !b.deleted) {
        let view = service.view(&broker.id, broker.online).await.ok();
        let up = view
            .as_ref()
            .and_then(|v| v.health.as_ref())
            .is_some_and(|h| h.reachable);
        let system = broker.kind.as_str();
        let labels = vec![
            KeyValue::new("bida.broker", broker.id.clone()),
            KeyValue::new("bida.broker.name", broker.name.clone()),
            KeyValue::new("messaging.system", system),
        ];
        let figures = view.as_ref().and_then(|v| v.figures.as_ref());
        for destination in figures.map(|f| f.destinations.as_slice()).unwrap_or_default() {
            let Some(written) = destination.written else { continue };
            let mut destination_labels = labels.clone();
            destination_labels.push(KeyValue::new("messaging.destination.name", destination.name.clone()));
            produced.push((destination_labels, written as f64));
        }
        if let Some(rate) = figures.and_then(|f| f.publish_rate) {
            publish_rates.push((labels.clone(), rate));
        }
        points.push((labels, f64::from(u8::from(up))));
    }
    set_gauge(Gauge::BrokerUp, points);
    set_gauge(Gauge::BrokerProduced, produced);
    set_gauge(Gauge::BrokerPublishRate, publish_rates);
}
