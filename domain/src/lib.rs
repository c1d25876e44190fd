//! Bida's domain: what a callback task is, how it moves between states, and the
//! pure rules behind delivery (retry schedule, which responses count as success).
//!
//! Nothing here performs I/O or reads the clock or a random source: callers pass
//! `now` and jitter samples in, so every rule is deterministic and unit-tested.

pub mod access;
pub mod body;
pub mod broker;
pub mod consumer;
pub mod matcher;
pub mod retry;
pub mod status_set;
pub mod task;
pub mod validation;

pub use body::Body;
pub use matcher::{Expect, JsonExpectation, Observation, Verdict};
pub use retry::Backoff;
pub use status_set::StatusSet;
pub use validation::{has_nul, FieldError, ValidationErrors};
