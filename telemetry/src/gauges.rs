//! Gauges read from shared state (read models, broker probes): a sampler
//! refreshes their points now and then, the exporters observe the last ones.

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gauge {
    /// `bida.consumer.lag`: Kafka lag per partition, RabbitMQ queue depth.
    ConsumerLag,
    /// `bida.consumer.state`: 1 for each consumer's current state.
    ConsumerState,
    /// `bida.tasks`: tasks by status in the read model.
    Tasks,
    /// `bida.projection.lag`: events a projection has not folded.
    ProjectionLag,
    /// `bida.broker.up`: 1 when the broker answered its last probe.
    BrokerUp,
    /// `bida.node.actors`: actors alive on this node.
    NodeActors,
    /// `bida.broker.produced`: messages ever written to a Kafka topic (the
    /// sum of its partitions' end offsets; its rate is the produce rate).
    BrokerProduced,
    /// `bida.broker.publish.rate`: messages/s published to a RabbitMQ cluster
    /// (its management API's figure).
    BrokerPublishRate,
}

impl Gauge {
    const ALL: [Gauge; 8] = [
        Self::ConsumerLag,
        Self::ConsumerState,
        Self::Tasks,
        Self::ProjectionLag,
        Self::BrokerUp,
        Self::NodeActors,
        Self::BrokerProduced,
        Self::BrokerPublishRate,
    ];

    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::ConsumerLag => (
                "bida.consumer.lag",
                "{message}",
                "Messages not yet consumed: Kafka lag per partition, RabbitMQ messages ready",
            ),
            Self::ConsumerState => ("bida.consumer.state", "", "1 for the consumer's current state"),
            Self::Tasks => ("bida.tasks", "{task}", "Tasks by status in the read model"),
            Self::ProjectionLag => (
                "bida.projection.lag",
                "{event}",
                "Committed events a projection has not folded",
            ),
            Self::BrokerUp => ("bida.broker.up", "", "1 when the broker answered its last probe"),
            Self::NodeActors => ("bida.node.actors", "{actor}", "Actors alive on this node"),
            Self::BrokerProduced => (
                "bida.broker.produced",
                "{message}",
                "Messages ever written to a Kafka topic (sum of end offsets); rate() is the produce rate",
            ),
            Self::BrokerPublishRate => (
                "bida.broker.publish.rate",
                "{message}/s",
                "Messages per second published to a RabbitMQ cluster (management API)",
            ),
        }
    }
}

/// One observation: attributes and value.
pub type Point = (Vec<KeyValue>, f64);

fn points() -> &'static Mutex<HashMap<Gauge, Vec<Point>>> {
    static POINTS: OnceLock<Mutex<HashMap<Gauge, Vec<Point>>>> = OnceLock::new();
    POINTS.get_or_init(Default::default)
}

/// Replaces every point of a gauge (series that vanished stop being reported).
pub fn set_gauge(gauge: Gauge, values: Vec<Point>) {
    points().lock().unwrap_or_else(|p| p.into_inner()).insert(gauge, values);
}

/// Registers the observable gauges on `meter`, and the process's own figures.
pub(crate) fn register(meter: &Meter) {
    for gauge in Gauge::ALL {
        let (name, unit, description) = gauge.describe();
        // The gauge lives as long as the meter provider holds its callback.
        let _ = meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                let points = points().lock().unwrap_or_else(|p| p.into_inner());
                for (attributes, value) in points.get(&gauge).into_iter().flatten() {
                    observer.observe(*value, attributes);
                }
            })
            .build();
    }
    let _ = meter
        .u64_observable_gauge("process.memory.usage")
        .with_unit("By")
        .with_description("Resident memory of this process")
        .with_callback(|observer| {
            if let Some(bytes) = resident_bytes() {
                observer.observe(bytes, &[]);
            }
        })
        .build();
    let _ = meter
        .f64_observable_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time of this process (user and system)")
        .with_callback(|observer| {
            if let Some(seconds) = cpu_seconds() {
                observer.observe(seconds, &[]);
            }
        })
        .build();
}

/// Resident memory (VmRSS of /proc/self/status) on Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// User and system CPU time (/proc/self/stat, in clock ticks) on Linux.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / if ticks > 0 { ticks as f64 } else { 100.0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_figures_read() {
        assert!(super::resident_bytes().unwrap() > 0);
        assert!(super::cpu_seconds().unwrap() >= 0.0);
    }
}
