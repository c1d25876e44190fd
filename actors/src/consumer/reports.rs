//! What a node last wrote of its consumers' reports, so that a publish
//! writes only the rows that changed. The node's stamp on every publish
//! keeps the others current (`migrations/0016_consumer_reports_at.up.sql`):
//! at rest nothing changes, and 1,000 idle consumers no longer mean 1,000
//! rows rewritten every 2 s.

use serde_json::Value;
use std::collections::HashMap;

/// A consumer's row: its id, its state, its report.
pub(super) type ReportRow = (String, String, Value);

/// Every row is written again this often (in publishes, 30 s at the 2 s
/// period) even when unchanged: a row removed behind the node's back (a
/// restored database, a hand) comes back.
const ALL_EVERY: u32 = 15;

#[derive(Debug, Default)]
pub(super) struct PublishedReports {
    rows: HashMap<String, (String, Value)>,
    /// Publishes since every row was written; 0: write them all now.
    since_all: u32,
}

impl PublishedReports {
    /// The rows of `current` the next publish must write.
    pub(super) fn to_write(&self, current: &[ReportRow]) -> Vec<ReportRow> {
        let all = self.since_all == 0;
        current
            .iter()
            .filter(|(id, state, report)| {
                all || self
                    .rows
                    .get(id)
                    .is_none_or(|(written_state, written)| written_state != state || written != report)
            })
            .cloned()
            .collect()
    }

    /// `current` is what the store holds now.
    pub(super) fn published(&mut self, current: Vec<ReportRow>) {
        self.rows = current
            .into_iter()
            .map(|(id, state, report)| (id, (state, report)))
            .collect();
        self.since_all = (self.since_all + 1) % ALL_EVERY;
    }

    /// The publish failed: what the store holds is unknown, so the next one writes every row.
    pub(super) fn lost(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: &str, state: &str, fetched: u64) -> ReportRow {
        (id.to_string(), state.to_string(), json!({"fetched": fetched}))
    }

    fn ids(rows: &[ReportRow]) -> Vec<&str> {
        rows.iter().map(|(id, _, _)| id.as_str()).collect()
    }

    #[test]
    fn only_changed_and_new_rows_are_written_between_full_publishes() {
        let mut published = PublishedReports::default();
        let first = vec![row("a", "running", 1), row("b", "running", 2)];
        assert_eq!(
            ids(&published.to_write(&first)),
            ["a", "b"],
            "the first publish writes all"
        );
        published.published(first.clone());

        assert!(published.to_write(&first).is_empty(), "at rest nothing is written");

        let next = vec![row("a", "running", 5), row("b", "paused", 2), row("c", "running", 0)];
        assert_eq!(
            ids(&published.to_write(&next)),
            ["a", "b", "c"],
            "a report, a state, a new consumer"
        );
        published.published(next.clone());

        let fewer = vec![row("c", "running", 0)];
        assert!(
            published.to_write(&fewer).is_empty(),
            "a consumer gone is the store's delete, not a write"
        );
        published.published(fewer.clone());
        published.published(fewer.clone());
        assert_eq!(
            ids(&published.to_write(&[row("a", "running", 5)])),
            ["a"],
            "back after it went"
        );
    }

    #[test]
    fn every_row_is_written_again_every_so_often_and_after_a_failed_publish() {
        let rows = vec![row("a", "running", 1), row("b", "running", 1)];
        let mut published = PublishedReports::default();
        let mut written = Vec::new();
        for _ in 0..ALL_EVERY * 2 {
            written.push(published.to_write(&rows).len());
            published.published(rows.clone());
        }
        let full: Vec<usize> = written
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == 2)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(full, [0, ALL_EVERY as usize], "{written:?}");
        assert!(written.iter().all(|n| *n == 0 || *n == 2));

        published.lost();
        assert_eq!(published.to_write(&rows).len(), 2);
    }
}
