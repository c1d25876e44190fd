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

/// serde also takes a variant's index for an internally tagged enum's tag
/// (`"kind": 0` reads as the first kind); Bida names variants only by name.
/// For an enum derived with `#[serde(remote = "Self")]`, this implements
/// Serialize and Deserialize through the derived code, refusing a tag that is
/// not text.
macro_rules! tagged_by_name {
    ($type:ty, $tag:literal) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$type>::serialize(self, serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                let mut value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
                if value.get($tag).is_some_and(|tag| !tag.is_string()) {
                    return Err(D::Error::custom(concat!(
                        "`",
                        $tag,
                        "` must be a name the API document lists"
                    )));
                }
                // JSON Schema counts `83.0` an integer, as the API's body
                // reader does; these enums hold no payload whose floats matter.
                $crate::integral_floats_as_integers(&mut value);
                <$type>::deserialize(value).map_err(D::Error::custom)
            }
        }
    };
}

#[doc(hidden)]
pub fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *value = Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

pub mod access;
pub mod body;
pub mod broker;
pub mod consumer;
pub mod descriptors;
pub mod grpc;
pub mod kinds;
pub mod matcher;
pub mod retry;
pub mod stats;
pub mod status_set;
pub mod task;
pub mod timestamp;
pub mod topic;
pub mod validation;

pub use body::Body;
pub use matcher::{Expect, JsonExpectation, Observation, Verdict};
pub use retry::Backoff;
pub use status_set::StatusSet;
pub use validation::{has_nul, FieldError, ValidationErrors};
