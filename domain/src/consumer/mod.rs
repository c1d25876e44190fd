//! A consumer: one broker source bound to one endpoint (HTTP push or members' pull) with a delivery
//! policy. Its configuration is live: every change is an event that running
//! consumer actors apply without a restart.

mod aggregate;
mod anomaly;
mod naming;
pub mod pull;
mod spec;
mod state;

pub use aggregate::{
    Consumer, ConsumerCommand, ConsumerError, ConsumerEvent, DesiredState, OffsetReset, PartitionOffset,
    RecordedAnomaly, ANOMALIES_KEPT,
};
pub use anomaly::{SourceAnomaly, TopicPartition};
pub use naming::TaskNaming;
pub use spec::{
    check_pairing, BreakerInput, BreakerPolicy, ConsumerInput, ConsumerPatch, ConsumerPolicy, ConsumerSpec, Endpoint,
    EndpointInput, EndpointKind, HttpEndpoint, KafkaSource, Ordering, PolicyDefaults, PolicyInput, RabbitmqSource,
    Source, SourceInput, SourceMessage, StartAt,
};
pub use state::{ConsumerState, NodeState};
