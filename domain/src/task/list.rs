//! What a task list asks for and gets: filters, cursors, pages.

use chrono::{DateTime, Utc};

use super::{EndpointHost, TaskStatus, TaskSummary};

/// Which tasks a list shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub source_app: Option<String>,
    pub target_app: Option<String>,
    /// Either the source or the target app.
    pub app: Option<String>,
    pub consumer_id: Option<String>,
    /// Tasks whose requests go to this host.
    pub endpoint_host: Option<EndpointHost>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks that write to a broker (delayed messages), of this broker
    /// and destination when given.
    pub produced_to: Option<super::ProducedTo>,
    /// Only these tasks (a search's candidates).
    pub ids: Option<Vec<String>>,
}

impl TaskFilter {
    /// Apps, consumer ids and hosts have no control characters (and Postgres text
    /// cannot hold NUL): a filter naming one matches no task.
    pub fn matches_nothing(&self) -> bool {
        [&self.source_app, &self.target_app, &self.app, &self.consumer_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.endpoint_host.as_ref().map(EndpointHost::as_str))
            .chain(
                self.produced_to
                    .iter()
                    .flat_map(|p| p.broker_id.iter().chain(&p.destination))
                    .map(String::as_str),
            )
            .any(|name| name.chars().any(char::is_control))
    }
}

/// Where a page ends: lists are ordered newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl TaskCursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('.')?;
        // Ids are UUIDs; nothing else may reach the query (Postgres refuses NUL in text).
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        // Years 1 to 9999: what every store's timestamps hold.
        let micros: i64 = micros.parse().ok()?;
        if !(-62_135_596_800_000_000..=253_402_300_799_999_999).contains(&micros) {
            return None;
        }
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros)?,
            id: id.to_string(),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskPage {
    pub items: Vec<TaskSummary>,
    pub next_cursor: Option<TaskCursor>,
    /// Set when reading stopped at the page's time budget before the page
    /// was full: tasks created before this were not read yet, and
    /// `next_cursor` goes on from here.
    pub stopped_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_outside_the_stores_years_are_refused() {
        let cursor = TaskCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap(),
            id: "01a2".into(),
        };
        assert_eq!(TaskCursor::decode(&cursor.encode()), Some(cursor));
        for text in [
            "-975976629644000692.4x-gOCnUdLAf",
            "253402300800000000.a",
            "x.a",
            "1.a b",
        ] {
            assert_eq!(TaskCursor::decode(text), None, "{text}");
        }
    }
}
