//! The task list's read models in tables: written a page at a time with the
//! checkpoint (`fold.rs`), read by lists and statistics.

mod fold;
mod stats;
mod task_view;
