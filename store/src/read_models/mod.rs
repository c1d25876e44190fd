//! The read models the task list projection folds (`task_view`,
//! `task_counts`, `consumer_counters`, `stats_minute`): how a page of events
//! is written into them together with its checkpoint, and how they are read.
//!
//! The folding itself (what an event changes) is the projections crate's;
//! here is only what reaches the database, so that the store is the one
//! place that speaks SQL.

mod fold;
mod stats;
mod task_view;

pub use fold::{ConsumerCounterChange, Fold, StatsBucket, StatusCountChange};
