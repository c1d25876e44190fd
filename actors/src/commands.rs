//! Commands on the low-traffic aggregates (brokers, consumers) through cqrs-es
//! on the shared event store. Several nodes and the API may write to one
//! consumer at once (a crash record, a pause); a command that loses the race
//! is decided again on the fresh state.

use bida_store::{EventRepository, Store};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use std::sync::Arc;

/// Tries of a command that keeps meeting concurrent writers.
const TRIES: usize = 5;

pub struct Commands<A: Aggregate> {
    cqrs: Arc<CqrsFramework<A, PersistedEventStore<EventRepository, A>>>,
}

impl<A: Aggregate> Clone for Commands<A> {
    fn clone(&self) -> Self {
        Self {
            cqrs: self.cqrs.clone(),
        }
    }
}

impl<A> Commands<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone,
{
    pub fn new(store: &Store) -> Self {
        let events = PersistedEventStore::new_event_store(EventRepository::new(store.clone()));
        Self {
            cqrs: Arc::new(CqrsFramework::new(events, Vec::new(), ())),
        }
    }

    pub async fn execute(&self, id: &str, command: A::Command) -> Result<(), AggregateError<A::Error>> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .cqrs
                .execute_with_metadata(id, command.clone(), crate::audit::metadata())
                .await
            {
                Err(AggregateError::AggregateConflict) if tries < TRIES => continue,
                outcome => return outcome,
            }
        }
    }
}
