//! A broker: a registered MQ cluster Bida consumes from, with its connection
//! settings. Every change is an event, so its history says who changed what.

mod aggregate;
mod spec;

pub use crate::kinds::kafka::{OPTION_NAME, RESERVED_OPTIONS as KAFKA_RESERVED_OPTIONS};
pub use crate::kinds::{Capabilities, Offset, Position};
pub use aggregate::{Broker, BrokerCommand, BrokerError, BrokerEvent};
pub use spec::{BrokerKind, BrokerSpec, Connection};
