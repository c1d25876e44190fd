//! The retry schedule: exponential backoff with jitter, and the endpoint's own
//! `Retry-After`, both held inside the policy's bounds.
//!
//! The schedule is computed from the number of failures, not kept in a timer,
//! because the next attempt time is persisted in the task's events (the event
//! store is the retry queue) and must be reproducible after a restart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::ValidationErrors;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backoff {
    /// Delay after the first failure, in milliseconds.
    pub initial_ms: u64,
    /// Upper bound of any delay, in milliseconds (also bounds `Retry-After`).
    pub max_ms: u64,
    /// Growth factor between consecutive delays (>= 1).
    pub multiplier: f64,
    /// Random spread as a fraction of the delay, 0 to 1: 0.2 means ±20%.
    #[serde(default = "Backoff::default_jitter")]
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 500,
            max_ms: 3_600_000,
            multiplier: 2.0,
            jitter: Self::default_jitter(),
        }
    }
}

/// A delay longer than this is surely a typo (about 30 days).
const LONGEST_DELAY_MS: u64 = 30 * 24 * 3_600_000;

impl Backoff {
    fn default_jitter() -> f64 {
        0.2
    }

    pub fn validate(&self, prefix: &str, errors: &mut ValidationErrors) {
        if self.initial_ms == 0 {
            errors.add(format!("{prefix}.initial_ms"), "must be at least 1 ms");
        }
        if self.max_ms < self.initial_ms {
            errors.add(
                format!("{prefix}.max_ms"),
                format!("must be >= initial_ms ({})", self.initial_ms),
            );
        }
        if self.max_ms > LONGEST_DELAY_MS {
            errors.add(
                format!("{prefix}.max_ms"),
                format!("must be at most {LONGEST_DELAY_MS} ms (30 days)"),
            );
        }
        if !(1.0..=100.0).contains(&self.multiplier) {
            errors.add(format!("{prefix}.multiplier"), "must be between 1 and 100");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            errors.add(format!("{prefix}.jitter"), "must be between 0 and 1");
        }
    }

    /// Delay before the next attempt after `failures` consecutive failed
    /// attempts (1 after the first failure). `jitter_sample` is uniform in [0, 1).
    pub fn delay_after(&self, failures: u32, jitter_sample: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(1_000) as i32;
        let base = (self.initial_ms as f64 * self.multiplier.powi(exponent)).min(self.max_ms as f64);
        let spread = base * self.jitter;
        let jittered = base - spread + 2.0 * spread * jitter_sample.clamp(0.0, 1.0);
        Duration::from_millis(jittered.clamp(0.0, self.max_ms as f64).round() as u64)
    }

    /// An endpoint-requested delay, held inside `[initial_ms, max_ms]`.
    pub fn clamp(&self, requested: Duration) -> Duration {
        let ms = (requested.as_millis().min(u64::MAX as u128) as u64).clamp(self.initial_ms, self.max_ms);
        Duration::from_millis(ms)
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn no_jitter() -> Backoff {
        Backoff {
            initial_ms: 500,
            max_ms: 10_000,
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let b = no_jitter();
        let delays: Vec<u64> = (1..=7).map(|n| b.delay_after(n, 0.5).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(b.delay_after(u32::MAX, 0.5), Duration::from_millis(10_000));
    }

    #[test]
    fn jitter_spreads_within_the_fraction_and_never_exceeds_the_cap() {
        let b = Backoff {
            jitter: 0.2,
            ..no_jitter()
        };
        assert_eq!(b.delay_after(2, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay_after(2, 0.5), Duration::from_millis(1_000));
        assert_eq!(b.delay_after(2, 1.0), Duration::from_millis(1_200));
        assert_eq!(b.delay_after(20, 1.0), Duration::from_millis(10_000));
    }

    #[test]
    fn clamp_holds_retry_after_inside_bounds() {
        let b = no_jitter();
        assert_eq!(b.clamp(Duration::from_millis(1)), Duration::from_millis(500));
        assert_eq!(b.clamp(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(b.clamp(Duration::from_secs(3600)), Duration::from_secs(10));
    }

    #[test]
    fn validation_names_each_bad_field() {
        let bad = Backoff {
            initial_ms: 0,
            max_ms: 0,
            multiplier: 0.5,
            jitter: 2.0,
        };
        let mut errors = ValidationErrors::default();
        bad.validate("backoff", &mut errors);
        let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["backoff.initial_ms", "backoff.multiplier", "backoff.jitter"]);
        let mut errors = ValidationErrors::default();
        Backoff::default().validate("backoff", &mut errors);
        assert!(errors.is_empty());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
