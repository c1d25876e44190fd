//! A circuit breaker per consumer endpoint.
//!
//! After `failures` consecutive failed deliveries the breaker opens: the
//! consumer stops fetching, so the backlog stays in the MQ (as lag) instead of
//! piling up as retry tasks. After `open_ms` one probe delivery is let through;
//! its success closes the breaker, its failure opens it again.

use bida_domain::consumer::BreakerPolicy;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe delivery is under way.
    Probing,
}

/// What the consumer may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Deliver,
    /// Deliver one message as a probe.
    Probe,
    /// Fetch nothing until then (or until the probe's outcome).
    Wait(Option<Instant>),
}

#[derive(Clone, Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    pub fn set_policy(&mut self, policy: BreakerPolicy) {
        self.policy = policy;
        if policy.failures == 0 {
            self.state = BreakerState::Closed;
            self.failures = 0;
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// What may be fetched now. Asking changes nothing: a probe begins only
    /// when a message was actually fetched for it ([`Breaker::probe_started`]).
    pub fn admission(&self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Deliver,
            BreakerState::Open { until } if now >= until => Admission::Probe,
            BreakerState::Open { until } => Admission::Wait(Some(until)),
            BreakerState::Probing => Admission::Wait(None),
        }
    }

    pub fn probe_started(&mut self) {
        self.state = BreakerState::Probing;
    }

    /// A delivery's outcome: `Some(true)` success, `Some(false)` an endpoint
    /// failure, `None` neither (a client error that says nothing of health).
    pub fn record(&mut self, healthy: Option<bool>, probe: bool, now: Instant) {
        match healthy {
            Some(true) => {
                self.failures = 0;
                self.state = BreakerState::Closed;
            }
            Some(false) => {
                self.failures = self.failures.saturating_add(1);
                let tripped = self.policy.failures > 0 && self.failures >= self.policy.failures;
                if probe || (tripped && self.state == BreakerState::Closed) {
                    self.state = BreakerState::Open {
                        until: now + Duration::from_millis(self.policy.open_ms),
                    };
                }
            }
            None if probe => self.state = BreakerState::Closed,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            failures: 3,
            open_ms: 1_000,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_pause() {
        let t = Instant::now();
        let mut b = breaker();
        b.record(Some(false), false, t);
        b.record(Some(false), false, t);
        assert_eq!(b.admission(t), Admission::Deliver);
        b.record(Some(false), false, t);
        let reopen = t + Duration::from_millis(1_000);
        assert_eq!(b.admission(t), Admission::Wait(Some(reopen)));
        assert_eq!(b.admission(reopen), Admission::Probe);
        assert_eq!(b.admission(reopen), Admission::Probe, "asking starts nothing");
        b.probe_started();
        assert_eq!(b.admission(reopen), Admission::Wait(None), "one probe at a time");
        b.record(Some(false), true, reopen);
        assert!(
            matches!(b.state(), BreakerState::Open { .. }),
            "a failed probe opens it again"
        );
        let later = reopen + Duration::from_millis(1_000);
        assert_eq!(b.admission(later), Admission::Probe);
        b.probe_started();
        b.record(Some(true), true, later);
        assert_eq!(b.admission(later), Admission::Deliver);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..10 {
            b.record(Some(false), false, t);
            b.record(Some(false), false, t);
            b.record(Some(true), false, t);
        }
        assert!(b.is_closed());
    }

    #[test]
    fn client_errors_do_not_count_and_zero_turns_it_off() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..10 {
            b.record(None, false, t);
        }
        assert!(b.is_closed());
        b.set_policy(BreakerPolicy {
            failures: 0,
            open_ms: 1_000,
        });
        for _ in 0..10 {
            b.record(Some(false), false, t);
        }
        assert!(b.is_closed());
    }
}
