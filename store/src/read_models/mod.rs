//! What the task list projection writes into its read models (task
//! summaries, counts by status and app, consumers' totals, per-minute
//! statistics), beside its checkpoint.
//!
//! The folding itself (what an event changes) is the projections crate's;
//! the store only keeps what it is given.

mod fold;

pub use fold::{ConsumerCounterChange, StatsBucket, StatusCountChange};
