//! Read models folded from the event stream.
//!
//! Each projection follows the feed from its checkpoint and folds a page of
//! events in one transaction together with the new checkpoint, so every event
//! is folded exactly once and a rebuild from position 0 gives the same result.

mod runner;
mod stats;
mod status_counts;
mod task_list;

pub use bida_domain::stats::{
    endpoint_of, AppCounts, Counts, Dimension, Overview, StatsPoint, StatsQuery, StatsSeries, Step, TaskCounts,
};
pub use bida_domain::task::{TaskCursor, TaskFilter, TaskPage};
pub use runner::{catch_up, lag, rebuild, run, Projection, ProjectionError, RunnerConfig};
pub use stats::Stats;
pub use task_list::TaskList;

/// Names of every projection, for `bida projections rebuild`.
pub const ALL: [&str; 1] = [TaskList::NAME];
