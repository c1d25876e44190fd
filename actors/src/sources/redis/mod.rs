//! Redis Streams through redis-rs: a consumer group per consumer (each node
//! a consumer of it), each entry acknowledged once its outcome is recorded,
//! a killed node's entries claimed by the others, the backlog the group's
//! lag and pending entries.

mod admin;
pub(crate) mod producer;
mod source;

pub use source::RedisEntries;

use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::redis::{RedisConnection, RedisSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Inspection, Kind, Range, SourceError};

pub struct Redis;

impl Kind for Redis {
    type Connection = RedisConnection;
    type Source = RedisSource;

    fn open<'a>(
        connection: &'a RedisConnection,
        source: &'a RedisSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            Ok(BoxedSource::new(
                RedisEntries::connect(connection, source, client).await?,
            ))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a RedisConnection,
        known: Vec<&'a RedisSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        admin::look(connection, known).boxed()
    }

    fn backlog<'a>(
        connection: &'a RedisConnection,
        source: &'a RedisSource,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        async move {
            let mut commands = source::connect(connection, false).await?;
            source::group_backlog(&mut commands, source).await
        }
        .boxed()
    }

    fn reset_offsets<'a>(
        connection: &'a RedisConnection,
        source: &'a RedisSource,
        reset: &'a OffsetReset,
    ) -> BoxFuture<'a, Result<Vec<PartitionOffset>, SourceError>> {
        admin::reset(connection, source, reset).boxed()
    }

    fn read_range<'a>(
        connection: &'a RedisConnection,
        source: &'a RedisSource,
        range: &'a Range,
    ) -> BoxFuture<'a, Result<Vec<SourceMessage>, SourceError>> {
        admin::read_range(connection, source, range).boxed()
    }
}
