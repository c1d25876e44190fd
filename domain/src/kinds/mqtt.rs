//! MQTT 5: a broker is its URL; a consumer subscribes (QoS 1) to a topic
//! filter through a shared subscription, its nodes being the group's
//! members.

use serde::{Deserialize, Serialize};

use super::{is_destination_name, is_url, map_url_password, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

/// MQTT keeps no positions and tells no backlog: nothing to reset, read again
/// or count. The topic (or a `bida-key` user property) is the key. A shared
/// subscription's message belongs to one member's session from the moment
/// it is published: a node's share waits for that node to come back.
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: false,
    offset_reset: false,
    resend_range: false,
    keys: true,
    takeover: false,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "url",
    ("Broker URL", "服务地址"),
    "mqtt://user:password@host:1883",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::text("topic", ("Topic filter", "主题过滤"), "orders/#"),
    FormField::text("group", ("Shared subscription group", "共享订阅组"), "bida"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MqttConnection {
    /// `mqtt://[user:password@]host:1883` (TLS, `mqtts://`, is not supported yet).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^mqtt://([^@/?#\s]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?/?$"
        )
    )]
    pub url: String,
}

impl ConnectionSpec for MqttConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        let bare = url::Url::parse(&self.url)
            .is_ok_and(|u| matches!(u.path(), "" | "/") && u.query().is_none() && u.port() != Some(0));
        if self.url.starts_with("mqtts:") {
            errors.add("url", "TLS (mqtts://) is not supported yet: use mqtt://");
        } else if !is_url(&self.url, &["mqtt"]) || !bare {
            errors.add("url", "must be an MQTT URL: mqtt://user:password@host:1883");
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        self.url = map_url_password(&self.url, f);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MqttSource {
    /// The topic filter (`orders/#`, `sensors/+/temperature`).
    pub topic: String,
    /// The shared subscription's group (`$share/<group>/<topic>`): nodes
    /// sharing it share the messages.
    pub group: String,
}

/// `{"topic": "orders/#", "group": "bida"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MqttSourceInput {
    /// The topic filter.
    pub topic: Option<String>,
    /// The shared subscription's group.
    pub group: Option<String>,
}

/// A topic filter as MQTT takes it: `+` a whole level, `#` the last level.
fn is_topic_filter(filter: &str) -> bool {
    if !is_destination_name(filter) || filter.starts_with('$') || filter.len() > 65_535 {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "+" => true,
        "#" => i == levels.len() - 1,
        level => !level.contains(['+', '#']),
    })
}

impl SourceSpec for MqttSource {
    type Input = MqttSourceInput;

    fn from_input(input: MqttSourceInput, errors: &mut ValidationErrors) -> Self {
        let topic = input.topic.unwrap_or_default();
        if !is_topic_filter(&topic) {
            errors.add(
                "source.topic",
                "is required: a topic filter (orders/#, sensors/+/temperature; + a whole level, # the last)",
            );
        }
        let group = input.group.unwrap_or_default();
        if !is_destination_name(&group) || group.contains(['/', '+', '#']) {
            errors.add(
                "source.group",
                "is required: the shared subscription's group (no /, + or #)",
            );
        }
        MqttSource { topic, group }
    }

    fn reads(&self, destination: &str) -> bool {
        self.topic == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn exclusive_group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

/// Where a message written through Bida goes (`POST /v1/brokers/{id}/messages`):
/// an MQTT 5 publish, its content type in the content type property and
/// its headers as user properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MqttTarget {
    /// The topic (no wildcards).
    pub topic: String,
    /// 1 (default): written once the broker acknowledges it (`PUBACK`);
    /// 2: once it completes (`PUBCOMP`); 0: sent, not confirmed.
    #[serde(default = "at_least_once")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2))]
    pub qos: u8,
    /// The broker keeps it as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
    /// The ordering key, as the `bida-key` user property (Bida's MQTT
    /// consumers use the topic otherwise).
    #[serde(default)]
    pub key: Option<String>,
    /// Sent as correlation data, which Bida's MQTT consumers take as the
    /// message id (repeats with the same id are one task).
    #[serde(default)]
    pub message_id: Option<String>,
    /// How long the broker keeps it for subscribers that are away.
    #[serde(default)]
    pub expiry_seconds: Option<u32>,
}

fn at_least_once() -> u8 {
    1
}

impl MqttTarget {
    /// Where the message goes, as lists name it: the topic.
    pub fn destination(&self) -> String {
        self.topic.clone()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        let topic = &self.topic;
        if topic.is_empty() || topic.len() > 65_535 || topic.contains(['+', '#']) || topic.chars().any(char::is_control)
        {
            errors.add(
                format!("{context}topic"),
                "must be a topic name (orders/paid; no + or # wildcards, no control characters)",
            );
        }
        if self.qos > 2 {
            errors.add(format!("{context}qos"), "must be 0, 1 or 2");
        }
        for (field, value) in [("key", &self.key), ("message_id", &self.message_id)] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 65_535) {
                errors.add(format!("{context}{field}"), "must be 1 to 65,535 bytes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_and_groups_are_checked() {
        for (filter, valid) in [
            ("orders/#", true),
            ("sensors/+/temperature", true),
            ("#", true),
            ("a/#/b", false),
            ("a/b+", false),
            ("$SYS/#", false),
            ("", false),
        ] {
            assert_eq!(is_topic_filter(filter), valid, "{filter}");
        }
        let mut errors = ValidationErrors::default();
        MqttSource::from_input(
            MqttSourceInput {
                topic: Some("orders/#".into()),
                group: Some("a/b".into()),
            },
            &mut errors,
        );
        let fields: Vec<_> = errors.0.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["source.group"]);
    }

    #[test]
    fn urls_are_plain_and_hide_their_password() {
        for (url, valid) in [
            ("mqtt://127.0.0.1:1883", true),
            ("mqtt://u:p@h", true),
            ("mqtts://h:8883", false),
            ("mqtt://h:1883/x", false),
            ("tcp://h:1883", false),
        ] {
            let mut errors = ValidationErrors::default();
            MqttConnection { url: url.into() }.validate(&mut errors);
            assert_eq!(errors.is_empty(), valid, "{url}: {errors:?}");
        }
        let mut connection = MqttConnection {
            url: "mqtt://u:secret@h:1883".into(),
        };
        connection.map_secrets(&|_| "***".into());
        assert!(!connection.url.contains("secret"), "{}", connection.url);
    }
}
