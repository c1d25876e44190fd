//! The one place that names every kind at run time: each line hands a kind
//! its own connection and source, and a consumer whose source does not fit
//! its broker's kind is refused here. The built-in kind's log is Bida's own
//! store, which it is handed in place of a connection.

use bida_domain::broker::Connection;
use bida_domain::consumer::{OffsetReset, PartitionOffset, Source, SourceMessage};

use bida_store::Store;

use super::{
    activemq::Activemq, builtin, kafka::Kafka, mqtt::Mqtt, nats::Nats, rabbitmq::Rabbitmq, redis::Redis,
    rocketmq::Rocketmq,
};
use super::{Backlog, BoxedSource, Client, Inspection, Kind, Range, SourceError};

macro_rules! registry {
    ($($variant:ident => $kind:ty),+ $(,)?) => {
        /// Connects the consumer's source on its broker.
        pub async fn open(store: &Store, connection: &Connection, source: &Source, client: &Client) -> Result<BoxedSource, SourceError> {
            match (connection, source) {
                (Connection::Builtin(_), Source::Builtin(source)) => builtin::open(store, source, client).await,
                $((Connection::$variant(connection), Source::$variant(source)) => <$kind>::open(connection, source, client).await,)+
                _ => Err(misfit(connection, source)),
            }
        }

        /// Whether the broker answers and what is inside it; `known` are the
        /// sources of its consumers.
        pub async fn look(store: &Store, connection: &Connection, known: &[Source]) -> Result<Inspection, SourceError> {
            match connection {
                Connection::Builtin(_) => {
                    let known = known
                        .iter()
                        .filter_map(|source| match source {
                            Source::Builtin(source) => Some(source),
                            _ => None,
                        })
                        .collect();
                    builtin::look(store, known).await
                }
                $(Connection::$variant(connection) => {
                    let known = known
                        .iter()
                        .filter_map(|source| match source {
                            Source::$variant(source) => Some(source),
                            #[allow(unreachable_patterns)]
                            _ => None,
                        })
                        .collect();
                    <$kind>::look(connection, known).await
                })+
            }
        }

        /// The source's backlog as the broker sees it now.
        pub async fn backlog(store: &Store, connection: &Connection, source: &Source) -> Result<Vec<Backlog>, SourceError> {
            match (connection, source) {
                (Connection::Builtin(_), Source::Builtin(source)) => builtin::backlog(store, source).await,
                $((Connection::$variant(connection), Source::$variant(source)) => <$kind>::backlog(connection, source).await,)+
                _ => Err(misfit(connection, source)),
            }
        }

        /// Moves a stopped consumer's position.
        pub async fn reset_offsets(
            store: &Store,
            connection: &Connection,
            source: &Source,
            reset: &OffsetReset,
        ) -> Result<Vec<PartitionOffset>, SourceError> {
            match (connection, source) {
                (Connection::Builtin(_), Source::Builtin(source)) => builtin::reset_offsets(store, source, reset).await,
                $((Connection::$variant(connection), Source::$variant(source)) => <$kind>::reset_offsets(connection, source, reset).await,)+
                _ => Err(misfit(connection, source)),
            }
        }

        /// The messages of a range of the source, to deliver again.
        pub async fn read_range(store: &Store, connection: &Connection, source: &Source, range: &Range) -> Result<Vec<SourceMessage>, SourceError> {
            match (connection, source) {
                (Connection::Builtin(_), Source::Builtin(source)) => builtin::read_range(store, source, range).await,
                $((Connection::$variant(connection), Source::$variant(source)) => <$kind>::read_range(connection, source, range).await,)+
                _ => Err(misfit(connection, source)),
            }
        }
    };
}

registry! {
    Kafka => Kafka,
    Rabbitmq => Rabbitmq,
    Nats => Nats,
    Redis => Redis,
    Mqtt => Mqtt,
    Activemq => Activemq,
    Rocketmq => Rocketmq,
}

fn misfit(connection: &Connection, source: &Source) -> SourceError {
    SourceError::Invalid(format!(
        "the consumer reads a {} source; its broker is {}",
        source.kind().title(),
        connection.kind().title()
    ))
}
