//! A broker: a registered MQ cluster Bida consumes from, with its connection
//! settings. Every change is an event, so its history says who changed what.

mod aggregate;
mod spec;

pub use aggregate::{Broker, BrokerCommand, BrokerError, BrokerEvent};
pub use spec::{BrokerKind, BrokerSpec, Connection, KAFKA_RESERVED_OPTIONS, OPTION_NAME};
