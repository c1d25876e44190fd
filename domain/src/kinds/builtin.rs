//! Bida's own topics (seed 002): a broker present on every install as
//! `builtin`, whose log lives in Bida's store. A consumer of a topic is a
//! subscription: each consumer is its own group and gets every message
//! (publish/subscribe); its nodes and pull members share the topic's
//! partitions (point-to-point).

use serde::{Deserialize, Serialize};

use super::kafka::StartAt;
use super::{is_destination_name, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::topic::TopicName;
use crate::ValidationErrors;

/// The built-in broker's id: it is never registered.
pub const BROKER_ID: &str = "builtin";

/// Offsets are numbers per partition, kept by Bida; the log is read again
/// by offset within the retention.
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: true,
    resend_range: true,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[];

pub const SOURCE_FORM: &[FormField] = &[FormField::text("topic", ("Topic", "主题"), "orders")];

/// Nothing to say: the built-in broker is Bida's own store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuiltinConnection {}

impl ConnectionSpec for BuiltinConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        errors.add(
            "kind",
            format!("the built-in broker is always there, as `{BROKER_ID}`: create topics with POST /v1/topics"),
        );
    }

    fn map_secrets(&mut self, _f: &dyn Fn(&str) -> String) {}
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuiltinSource {
    pub topic: TopicName,
    /// The subscription's name in the log: each consumer has its own (one
    /// is made when the source names none), so each gets every message.
    pub group: String,
    /// Where a new subscription starts: earliest (what the topic still
    /// holds) or latest (what is published from its creation on).
    #[serde(default)]
    pub start: StartAt,
}

/// `{"topic": "orders"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuiltinSourceInput {
    /// The topic to subscribe to.
    pub topic: Option<String>,
    /// The subscription's name (made up when absent); two consumers cannot
    /// share one.
    pub group: Option<String>,
    /// earliest (default) or latest, for a new subscription.
    pub start: Option<StartAt>,
}

impl SourceSpec for BuiltinSource {
    type Input = BuiltinSourceInput;

    fn from_input(input: BuiltinSourceInput, errors: &mut ValidationErrors) -> Self {
        let topic = match input.topic.map(TopicName::try_from) {
            Some(Ok(topic)) => topic,
            Some(Err(e)) => {
                errors.add("source.topic", e);
                TopicName::try_from("invalid".to_string()).expect("a valid name")
            }
            None => {
                errors.add("source.topic", "is required: the topic to subscribe to");
                TopicName::try_from("invalid".to_string()).expect("a valid name")
            }
        };
        let group = match input.group {
            Some(group) if is_destination_name(&group) => group,
            Some(_) => {
                errors.add("source.group", "must be 1 to 249 printable characters");
                String::new()
            }
            None => format!("sub-{}", uuid::Uuid::now_v7()),
        };
        BuiltinSource {
            topic,
            group,
            start: input.start.unwrap_or_default(),
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.topic.as_str() == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.topic.to_string()]
    }

    fn exclusive_group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

/// Where a message written through the broker route goes
/// (`POST /v1/brokers/builtin/messages`): a topic, and a key for its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuiltinTarget {
    pub topic: TopicName,
    /// Messages with the same key go to the same partition, in order.
    #[serde(default)]
    pub key: Option<String>,
}

impl BuiltinTarget {
    /// Where the message goes, as lists name it: the topic.
    pub fn destination(&self) -> String {
        self.topic.to_string()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        if let Some(key) = &self.key {
            if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
                errors.add(
                    format!("{context}key"),
                    "must be 1 to 1024 bytes without control characters",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_names_its_topic() {
        let mut errors = ValidationErrors::default();
        let source = BuiltinSource::from_input(
            BuiltinSourceInput {
                topic: Some("orders".into()),
                ..Default::default()
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors}");
        assert!(source.reads("orders"));
        let other = BuiltinSource::from_input(
            BuiltinSourceInput {
                topic: Some("orders".into()),
                ..Default::default()
            },
            &mut errors,
        );
        assert_ne!(source.exclusive_group(), other.exclusive_group(), "each its own group");
        for topic in [None, Some("a b".to_string())] {
            let mut errors = ValidationErrors::default();
            BuiltinSource::from_input(
                BuiltinSourceInput {
                    topic,
                    ..Default::default()
                },
                &mut errors,
            );
            assert_eq!(errors.0[0].field, "source.topic");
        }
    }

    #[test]
    fn the_builtin_broker_is_not_registered() {
        let mut errors = ValidationErrors::default();
        BuiltinConnection {}.validate(&mut errors);
        assert_eq!(errors.0[0].field, "kind");
    }
}
