//! A consumer: one broker source bound to one HTTP endpoint with a delivery
//! policy. Its configuration is live: every change is an event that running
//! consumer actors apply without a restart.

mod aggregate;
mod anomaly;
mod spec;
mod state;

pub use aggregate::{
    Consumer, ConsumerCommand, ConsumerError, ConsumerEvent, DesiredState, OffsetReset, PartitionOffset,
    RecordedAnomaly, ANOMALIES_KEPT,
};
pub use anomaly::{SourceAnomaly, TopicPartition};
pub use spec::{
    BreakerInput, BreakerPolicy, ConsumerInput, ConsumerPatch, ConsumerPolicy, ConsumerSpec, Endpoint, EndpointInput,
    KafkaSource, Ordering, PolicyDefaults, PolicyInput, RabbitmqSource, Source, SourceInput, SourceMessage, StartAt,
};
pub use state::{ConsumerState, NodeState};
