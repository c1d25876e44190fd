//! Built-in topics: Bida as its own message queue (seed 002, KapokMQ).
//! A topic is an aggregate (its creation, changes and deletion are events);
//! its messages live in the store's topic log, and consumers subscribe to
//! it through the `builtin` broker kind like to any other broker.

mod aggregate;
mod spec;

pub use aggregate::{Topic, TopicCommand, TopicError, TopicEvent};
pub use spec::{Retention, TopicInput, TopicName, TopicPatch, TopicSpec, DEFAULT_RETENTION, MAX_PARTITIONS};
