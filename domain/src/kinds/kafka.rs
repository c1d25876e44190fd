//! Kafka: a broker is its bootstrap servers and client options; a consumer
//! reads topics as a consumer group.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{is_destination_name, is_host_port, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: true,
    resend_range: true,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "bootstrap_servers",
    ("Bootstrap servers", "Bootstrap 地址"),
    "host:9092",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::list("topics", ("Topics", "主题"), "orders, refunds"),
    FormField::text("group", ("Consumer group", "消费组"), ""),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KafkaConnection {
    /// `host:port[,host:port...]`
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[^,\s]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})(,[^,\s]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))*$"
        )
    )]
    pub bootstrap_servers: String,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.*`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Client properties Bida sets itself on Kafka consumers (at-least-once depends on them).
pub const RESERVED_OPTIONS: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// librdkafka property names: letters, digits, dots, dashes and underscores.
pub const OPTION_NAME: &str = "^[A-Za-z0-9._-]+$";

fn is_option_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ConnectionSpec for KafkaConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        if self
            .bootstrap_servers
            .split(',')
            .map(str::trim)
            .any(|s| !is_host_port(s))
        {
            errors.add(
                "bootstrap_servers",
                "must be host:port, or several separated by commas (127.0.0.1:9092)",
            );
        }
        for key in self.options.keys() {
            if RESERVED_OPTIONS.contains(&key.as_str()) {
                errors.add(format!("options.{key}"), "is set by Bida itself");
            } else if !is_option_name(key) {
                errors.add(
                    "options",
                    "option names are librdkafka property names (security.protocol)",
                );
            }
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        for (key, value) in self.options.iter_mut() {
            if key.contains("password") || key.contains("secret") {
                *value = f(value);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KafkaSource {
    pub topics: Vec<String>,
    /// The consumer group: nodes sharing it split the partitions.
    pub group: String,
    /// Where a group without committed offsets starts.
    #[serde(default)]
    pub start: StartAt,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StartAt {
    #[default]
    Earliest,
    Latest,
}

/// `{"topics": ["t"], "group": "g"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KafkaSourceInput {
    /// Topics to consume.
    pub topics: Option<Vec<String>>,
    /// The consumer group.
    pub group: Option<String>,
    /// earliest (default) or latest, for a new group.
    pub start: Option<StartAt>,
}

impl SourceSpec for KafkaSource {
    type Input = KafkaSourceInput;

    fn from_input(input: KafkaSourceInput, errors: &mut ValidationErrors) -> Self {
        let topics = input.topics.unwrap_or_default();
        if topics.is_empty() {
            errors.add("source.topics", "is required: one or more topic names");
        }
        for topic in &topics {
            // Kafka's legal characters; a leading `^` would be a regex subscription.
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                errors.add(
                    "source.topics",
                    format!("`{topic}` is not a Kafka topic name (letters, digits, . _ -)"),
                );
            }
        }
        let group = input.group.unwrap_or_default();
        if !is_destination_name(&group) {
            errors.add("source.group", "is required: the consumer group id");
        }
        KafkaSource {
            topics,
            group,
            start: input.start.unwrap_or_default(),
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.topics.iter().any(|topic| topic == destination)
    }

    fn destinations(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn exclusive_group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

/// Where a message written through Bida goes (`POST /v1/brokers/{id}/messages`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KafkaTarget {
    pub topic: String,
    /// The record key (its partition, unless `partition` is given).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub partition: Option<i32>,
}

impl KafkaTarget {
    /// Where the message goes, as lists name it: the topic.
    pub fn destination(&self) -> String {
        self.topic.clone()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.topic.is_empty() || self.topic.len() > 249 || !self.topic.chars().all(legal) {
            errors.add(
                format!("{context}topic"),
                "must be a Kafka topic name (letters, digits, ., _ and -; at most 249)",
            );
        }
        if self.partition.is_some_and(|p| p < 0) {
            errors.add(format!("{context}partition"), "must be 0 or more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_field() {
        let fields = |servers: &str, option: &str| {
            let mut errors = ValidationErrors::default();
            KafkaConnection {
                bootstrap_servers: servers.into(),
                options: BTreeMap::from([(option.to_string(), "x".to_string())]),
            }
            .validate(&mut errors);
            errors.0.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert_eq!(fields("localhost", "client.id"), ["bootstrap_servers"]);
        assert_eq!(fields("a:1,b:2", "group.id"), ["options.group.id"]);
        assert!(fields("a:1", "sasl.password").is_empty());
    }

    #[test]
    fn only_secret_options_are_sealed() {
        let mut connection = KafkaConnection {
            bootstrap_servers: "k:9092".into(),
            options: BTreeMap::from([
                ("sasl.password".to_string(), "p".to_string()),
                ("client.id".to_string(), "c".to_string()),
            ]),
        };
        connection.map_secrets(&|_| "***".into());
        assert_eq!(connection.options["sasl.password"], "***");
        assert_eq!(connection.options["client.id"], "c");
    }
}
