//! Statistics of task events: what they are kept by, what a bucket counts,
//! and the series and overviews read back from them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

use crate::task::{TaskEvent, TaskSummary};

/// What statistics are kept by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Everything (key `""`).
    All,
    Consumer,
    SourceApp,
    TargetApp,
    /// `scheme://host:port` of the task's URL.
    Endpoint,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Self::All,
        Self::Consumer,
        Self::SourceApp,
        Self::TargetApp,
        Self::Endpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Consumer => "consumer",
            Self::SourceApp => "source_app",
            Self::TargetApp => "target_app",
            Self::Endpoint => "endpoint",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    pub fn key(self, task: &TaskSummary, endpoints: &mut HashMap<String, Option<String>>) -> Option<String> {
        match self {
            Self::All => Some(String::new()),
            Self::Consumer => task.consumer_id.clone(),
            Self::SourceApp => task.source_app.clone(),
            Self::TargetApp => task.target_app.clone(),
            // A page holds many tasks of few URLs: each is parsed once.
            Self::Endpoint => match endpoints.get(&task.url) {
                Some(endpoint) => endpoint.clone(),
                None => endpoints
                    .entry(task.url.clone())
                    .or_insert_with(|| endpoint_of(&task.url))
                    .clone(),
            },
        }
    }
}

/// The endpoint a URL names: `scheme://host:port` (the path and query vary per message).
pub fn endpoint_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// One bucket's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Tasks submitted (from the API or a consumer).
    pub submitted: i64,
    /// Delivery attempts made.
    pub attempts: i64,
    /// Tasks delivered.
    pub delivered: i64,
    /// Attempts that failed.
    pub failed: i64,
    /// Failed attempts followed by a retry.
    pub retried: i64,
    /// Attempts cut at the timeout.
    pub timeouts: i64,
    /// Tasks dead-lettered.
    pub dead: i64,
    /// Sum of the attempts' latencies.
    pub latency_sum_ms: i64,
    /// Slowest attempt.
    pub latency_max_ms: i64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.submitted += other.submitted;
        self.attempts += other.attempts;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retried += other.retried;
        self.timeouts += other.timeouts;
        self.dead += other.dead;
        self.latency_sum_ms += other.latency_sum_ms;
        self.latency_max_ms = self.latency_max_ms.max(other.latency_max_ms);
    }

    /// What one event adds.
    pub fn of(event: &TaskEvent) -> Option<Counts> {
        let mut counts = Counts {
            submitted: i64::from(event.submission().is_some()),
            ..Counts::default()
        };
        if let Some(attempt) = event.attempt() {
            counts.attempts = 1;
            counts.latency_sum_ms = attempt.latency_ms as i64;
            counts.latency_max_ms = attempt.latency_ms as i64;
        }
        match event {
            TaskEvent::TaskSubmitted { .. } => {}
            TaskEvent::AttemptSucceeded { .. } | TaskEvent::MessageDelivered { .. } => counts.delivered = 1,
            TaskEvent::AttemptFailed {
                attempt,
                next_attempt_at,
            } => {
                counts.failed = 1;
                counts.retried = i64::from(next_attempt_at.is_some());
                counts.timeouts = i64::from(attempt.timed_out);
            }
            TaskEvent::TaskDeadLettered { .. } => counts.dead = 1,
            TaskEvent::TaskCancelled { .. } | TaskEvent::RetryRequested { .. } | TaskEvent::TermsAdopted { .. } => {
                return None
            }
        }
        Some(counts)
    }
}

/// Width of one point of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Minute,
    TenMinutes,
    Hour,
}

impl Step {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1m" => Some(Self::Minute),
            "10m" => Some(Self::TenMinutes),
            "1h" => Some(Self::Hour),
            _ => None,
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::TenMinutes => 600,
            Self::Hour => 3600,
        }
    }
}

/// Which series to read.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsQuery {
    pub dimension: Dimension,
    /// One value of the dimension; `None`: a series per value.
    pub key: Option<String>,
    pub step: Step,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsPoint {
    /// Start of the step.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSeries {
    pub key: String,
    /// Totals over the whole range.
    pub total: Counts,
    /// Steps with activity, oldest first (steps without any are left out).
    pub points: Vec<StatsPoint>,
}

/// Tasks by status, and per app.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCounts {
    pub total: i64,
    pub by_status: HashMap<String, i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppCounts {
    pub app: String,
    /// Tasks it sent (source app).
    pub sent: TaskCounts,
    /// Tasks sent to it (target app).
    pub received: TaskCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    pub tasks: TaskCounts,
    /// Distinct apps, as source or target.
    pub app_count: usize,
    pub apps: Vec<AppCounts>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_and_port() {
        assert_eq!(
            endpoint_of("https://a.example.com/x?y=1").as_deref(),
            Some("https://a.example.com:443")
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:8081/hook").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(endpoint_of("not a url"), None);
    }

    #[test]
    fn steps_parse() {
        assert_eq!(Step::parse("10m"), Some(Step::TenMinutes));
        assert_eq!(Step::parse("5m"), None);
        assert_eq!(Dimension::parse("endpoint"), Some(Dimension::Endpoint));
    }
}
