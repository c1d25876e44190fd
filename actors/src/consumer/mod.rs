//! Consumers at work on a node: a supervisor reconciling what the consumer and
//! broker events ask for, one actor per consumer owning its source, a pump
//! fetching under the consumer's policy, and the delivery pipeline.

pub mod actor;
pub mod breaker;
pub mod pipeline;
pub mod pump;
mod reports;
pub mod service;
pub mod supervisor;

pub use actor::{ConsumerActor, ConsumerReport};
pub use pipeline::{LiveConfig, Pipeline};
pub use service::{ConsumerService, ConsumerView, ResendRequest};
pub use supervisor::ConsumerSupervisor;

#[cfg(test)]
mod tests;
