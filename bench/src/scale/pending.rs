//! Pending work: delayed messages due in an hour (the schedule a retry
//! waits in too), then a few due over a short window while they wait.
//! The `delayed` subcommand's two phases, in the other order and per size.

use crate::delayed::{self, Lateness, Pending, Target};
use crate::process::StoreKind;
use crate::report::{self, Table};
use crate::Node;

use super::mib;

/// The messages whose lateness is measured while the pending ones wait.
#[derive(Clone, Copy)]
pub struct Due {
    pub messages: usize,
    pub over: u64,
    pub lead: u64,
}

pub async fn run(sizes: &[usize], due: Due) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "Pending delayed messages (RabbitMQ) on one node",
        &[
            "pending",
            "submitted at",
            "node RSS",
            "memory per pending",
            "database",
            "database per pending",
            "due meanwhile: written / early",
            "lateness p50 / p99 / max",
        ],
    );
    table.note(format!(
        "{} messages due over {} s, submitted {} s before the first is due, once the pending ones are in.",
        due.messages, due.over, due.lead
    ));
    for &size in sizes {
        let target = Target::start(Node {
            config: "",
            store: StoreKind::Postgres,
        })
        .await?;
        let cost = delayed::pend(&target, size).await?;
        let Lateness {
            received,
            early,
            histogram,
            ..
        } = delayed::lateness(&target, due.messages, due.over, due.lead).await?;
        let (per_rss, per_byte) = cost.per_message(size);
        let Pending { seconds, rss, bytes } = cost;
        table.row(vec![
            size.to_string(),
            format!("{:.0} msgs/s", size as f64 / seconds),
            format!("{} → {}", mib(rss.0), mib(rss.1)),
            format!("{per_rss:.1} bytes"),
            format!("{} → {} MiB", bytes.0 >> 20, bytes.1 >> 20),
            format!("{per_byte:.0} bytes"),
            format!("{received} of {} / {early}", due.messages),
            report::millis(&histogram),
        ]);
    }
    Ok(table)
}
