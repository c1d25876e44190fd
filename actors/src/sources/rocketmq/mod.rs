//! RocketMQ through a client of our own for its remoting protocol
//! (`remoting.rs`): a consumer is a member of a consumer group that pulls
//! the queues a rebalance gives it, commits each queue's offset only as far
//! as every message's outcome is recorded, and leaves the group when it
//! stops. Lag is the queues' end minus the group's offsets; offsets can be
//! moved while the consumer is stopped and ranges of a queue read again.
//! The Rust client on crates.io was not used: it brings some 700 crates and
//! a second TLS provider (aws-lc) next to our ring.

mod admin;
mod cluster;
mod message;
pub(crate) mod producer;
mod queues;
mod remoting;
mod source;

pub use source::RocketmqMessages;

use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::rocketmq::{RocketmqConnection, RocketmqSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Inspection, Kind, Range, SourceError};

pub struct Rocketmq;

impl Kind for Rocketmq {
    type Connection = RocketmqConnection;
    type Source = RocketmqSource;

    fn open<'a>(
        connection: &'a RocketmqConnection,
        source: &'a RocketmqSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            Ok(BoxedSource::new(
                RocketmqMessages::connect(connection, source, client).await?,
            ))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a RocketmqConnection,
        known: Vec<&'a RocketmqSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        admin::look(connection, known).boxed()
    }

    fn backlog<'a>(
        connection: &'a RocketmqConnection,
        source: &'a RocketmqSource,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        admin::backlog(connection, source).boxed()
    }

    fn reset_offsets<'a>(
        connection: &'a RocketmqConnection,
        source: &'a RocketmqSource,
        reset: &'a OffsetReset,
    ) -> BoxFuture<'a, Result<Vec<PartitionOffset>, SourceError>> {
        admin::reset_offsets(connection, source, reset).boxed()
    }

    fn read_range<'a>(
        connection: &'a RocketmqConnection,
        source: &'a RocketmqSource,
        range: &'a Range,
    ) -> BoxFuture<'a, Result<Vec<SourceMessage>, SourceError>> {
        admin::read_range(connection, source, range).boxed()
    }
}
