//! Bida's domain: what a callback task is, how it moves between states, and the
//! pure rules behind delivery (retry schedule, which responses count as success).
//!
//! Nothing here performs I/O or reads the clock or a random source: callers pass
//! `now` and jitter samples in, so every rule is deterministic and unit-tested.

/// `impl cqrs_es::Aggregate` for an aggregate whose rules are its own pure
/// `decide(&self, command) -> Result<Vec<Event>, Error>` and
/// `apply_event(&mut self, &event)`: every aggregate of the domain.
macro_rules! decided_aggregate {
    ($aggregate:ty, $type_name:literal, $command:ty, $event:ty, $error:ty) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type_name;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _: &(),
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.apply_event(&event);
            }
        }
    };
}

pub mod access;
pub mod body;
pub mod broker;
pub mod consumer;
pub mod matcher;
pub mod retry;
pub mod status_set;
pub mod task;
pub mod validation;

pub use body::Body;
pub use matcher::{Expect, JsonExpectation, Observation, Verdict};
pub use retry::Backoff;
pub use status_set::StatusSet;
pub use validation::{has_nul, FieldError, ValidationErrors};
