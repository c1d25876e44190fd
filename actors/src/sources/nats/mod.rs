//! NATS JetStream through async-nats: a durable pull consumer per consumer
//! (its nodes share it), each message acknowledged once its outcome is
//! recorded (reported in progress meanwhile, so that the server does not send
//! it again to a live node) and refused with a delay (`nak`) when let go
//! unrecorded, so another node takes it at once; the backlog is the
//! consumer's pending count.

mod admin;
pub(crate) mod producer;
mod source;

pub use source::NatsMessages;

use bida_domain::consumer::SourceMessage;
use bida_domain::kinds::nats::{NatsConnection, NatsSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Inspection, Kind, Range, SourceError};

pub struct Nats;

impl Kind for Nats {
    type Connection = NatsConnection;
    type Source = NatsSource;

    fn open<'a>(
        connection: &'a NatsConnection,
        source: &'a NatsSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            Ok(BoxedSource::new(
                NatsMessages::connect(connection, source, client).await?,
            ))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a NatsConnection,
        _: Vec<&'a NatsSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        admin::look(connection).boxed()
    }

    fn backlog<'a>(
        connection: &'a NatsConnection,
        source: &'a NatsSource,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        async move {
            let jetstream = source::jetstream(connection, "bida-lag").await?;
            source::consumer_backlog(&jetstream, source).await
        }
        .boxed()
    }

    fn read_range<'a>(
        connection: &'a NatsConnection,
        source: &'a NatsSource,
        range: &'a Range,
    ) -> BoxFuture<'a, Result<Vec<SourceMessage>, SourceError>> {
        admin::read_range(connection, source, range).boxed()
    }
}
