//! Any kind's source behind one type, for the consumer actor: [`Source`]
//! uses `async fn`s, which a trait object cannot, so each call is boxed here
//! (one allocation per fetched message, next to the events it records).

use bida_domain::broker::Position;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{BacklogProbe, Incoming, Observed, Source, SourceError};

trait DynSource: Send {
    fn next(&mut self) -> BoxFuture<'_, Result<Incoming, SourceError>>;
    fn set_paused(&mut self, paused: bool) -> BoxFuture<'_, Result<(), SourceError>>;
    fn set_prefetch(&mut self, messages: u32) -> BoxFuture<'_, Result<(), SourceError>>;
    fn backlog_probe(&self) -> Arc<dyn BacklogProbe>;
    fn take_revoked(&mut self) -> Vec<Position>;
    fn take_anomaly_feed(&mut self) -> Option<UnboundedReceiver<Observed>>;
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

impl<S: Source> DynSource for S {
    fn next(&mut self) -> BoxFuture<'_, Result<Incoming, SourceError>> {
        Source::next(self).boxed()
    }
    fn set_paused(&mut self, paused: bool) -> BoxFuture<'_, Result<(), SourceError>> {
        Source::set_paused(self, paused).boxed()
    }
    fn set_prefetch(&mut self, messages: u32) -> BoxFuture<'_, Result<(), SourceError>> {
        Source::set_prefetch(self, messages).boxed()
    }
    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Source::backlog_probe(self)
    }
    fn take_revoked(&mut self) -> Vec<Position> {
        Source::take_revoked(self)
    }
    fn take_anomaly_feed(&mut self) -> Option<UnboundedReceiver<Observed>> {
        Source::take_anomaly_feed(self)
    }
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Source::close(*self).boxed()
    }
}

/// A source of any kind.
pub struct BoxedSource(Box<dyn DynSource>);

impl BoxedSource {
    pub fn new(source: impl Source) -> Self {
        Self(Box::new(source))
    }
}

impl Source for BoxedSource {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        self.0.next().await
    }
    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        self.0.set_paused(paused).await
    }
    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        self.0.set_prefetch(messages).await
    }
    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        self.0.backlog_probe()
    }
    fn take_revoked(&mut self) -> Vec<Position> {
        self.0.take_revoked()
    }
    fn take_anomaly_feed(&mut self) -> Option<UnboundedReceiver<Observed>> {
        self.0.take_anomaly_feed()
    }
    async fn close(self) {
        self.0.close().await
    }
}
