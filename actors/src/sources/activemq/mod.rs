//! ActiveMQ over STOMP 1.2: a subscription per consumer and node on its
//! queue (a virtual topic's group queue included), messages acknowledged
//! one by one once their outcomes are recorded; the lag and the broker's
//! figures from its statistics plugin. A queue keeps no positions: no
//! offset reset or resend.

mod admin;
pub(crate) mod producer;
mod source;
/// Public for the benchmark's bare pipe, which reads with the same client.
pub mod stomp;

pub use source::ActivemqMessages;

use bida_domain::kinds::activemq::{ActivemqConnection, ActivemqSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Inspection, Kind, SourceError};

pub struct Activemq;

impl Kind for Activemq {
    type Connection = ActivemqConnection;
    type Source = ActivemqSource;

    fn open<'a>(
        connection: &'a ActivemqConnection,
        source: &'a ActivemqSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            Ok(BoxedSource::new(
                ActivemqMessages::connect(connection, source, client).await?,
            ))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a ActivemqConnection,
        _known: Vec<&'a ActivemqSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        admin::look(connection).boxed()
    }

    fn backlog<'a>(
        connection: &'a ActivemqConnection,
        source: &'a ActivemqSource,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        admin::backlog(connection, source).boxed()
    }
}
