//! ActiveMQ (5.x, "Classic") over STOMP 1.2: a broker is its STOMP URL; a
//! consumer reads one queue, or a virtual topic through its group's queue
//! (`Consumer.<group>.VirtualTopic.<topic>`), its nodes competing for the
//! messages.

use serde::{Deserialize, Serialize};

use super::{is_destination_name, is_url, map_url_password, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

/// A queue has no positions to move or read again; its size (from the
/// broker's statistics plugin) is the lag; an unacknowledged message goes
/// back to the queue when its connection closes, for any other node.
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: false,
    resend_range: false,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "url",
    ("STOMP URL", "STOMP 地址"),
    "stomp://user:password@host:61613",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::text("queue", ("Queue", "队列"), "orders"),
    FormField::text(
        "virtual_topic",
        ("Virtual topic (instead of a queue)", "虚拟主题（代替队列）"),
        "orders",
    ),
    FormField::text("group", ("Virtual topic group", "虚拟主题消费组"), "bida"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivemqConnection {
    /// `stomp://[user:password@]host:61613` (TLS, `stomp+ssl://`, is not supported yet).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^stomp://([^@/?#\s]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?/?$"
        )
    )]
    pub url: String,
}

impl ConnectionSpec for ActivemqConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        let bare = url::Url::parse(&self.url)
            .is_ok_and(|u| matches!(u.path(), "" | "/") && u.query().is_none() && u.port() != Some(0));
        if self.url.starts_with("stomp+") {
            errors.add("url", "TLS (stomp+ssl://) is not supported yet: use stomp://");
        } else if !is_url(&self.url, &["stomp"]) || !bare {
            errors.add("url", "must be a STOMP URL: stomp://user:password@host:61613");
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        self.url = map_url_password(&self.url, f);
    }
}

/// A virtual topic read by one group: every group gets each message once,
/// the group's nodes compete for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VirtualTopicGroup {
    pub topic: String,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivemqSource {
    /// The queue read: the one named, or the virtual topic's group queue.
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_topic: Option<VirtualTopicGroup>,
}

/// `{"queue": "orders"}` or `{"virtual_topic": "orders", "group": "bida"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivemqSourceInput {
    /// The queue to read.
    pub queue: Option<String>,
    /// A virtual topic to read instead (`VirtualTopic.<name>`, published to
    /// as a topic), through the queue of `group`.
    pub virtual_topic: Option<String>,
    /// The virtual topic's group: each group gets every message.
    pub group: Option<String>,
}

/// A name ActiveMQ takes as one destination: no wildcards (`*`, `>`), no
/// composite lists (`,`), no spaces or slashes, no empty segment.
fn is_plain_name(name: &str) -> bool {
    is_destination_name(name)
        && !name.contains(['*', '>', ',', '/', ' '])
        && name.split('.').all(|segment| !segment.is_empty())
}

impl SourceSpec for ActivemqSource {
    type Input = ActivemqSourceInput;

    fn from_input(input: ActivemqSourceInput, errors: &mut ValidationErrors) -> Self {
        match (input.queue, input.virtual_topic) {
            (Some(queue), None) => {
                if !is_plain_name(&queue) {
                    errors.add(
                        "source.queue",
                        "must be a queue name (no *, >, commas, slashes or spaces)",
                    );
                }
                if input.group.is_some() {
                    errors.add(
                        "source.group",
                        "belongs to a virtual topic: name virtual_topic, not queue",
                    );
                }
                ActivemqSource {
                    queue,
                    virtual_topic: None,
                }
            }
            (None, Some(topic)) => {
                let topic = topic.strip_prefix("VirtualTopic.").unwrap_or(&topic).to_string();
                if !is_plain_name(&topic) {
                    errors.add(
                        "source.virtual_topic",
                        "must be a topic name (no *, >, commas, slashes or spaces)",
                    );
                }
                let group = input.group.unwrap_or_default();
                if !is_plain_name(&group) || group.contains('.') {
                    errors.add("source.group", "is required with a virtual topic: a name without dots");
                }
                ActivemqSource {
                    queue: format!("Consumer.{group}.VirtualTopic.{topic}"),
                    virtual_topic: Some(VirtualTopicGroup { topic, group }),
                }
            }
            (Some(_), Some(_)) => {
                errors.add("source.queue", "name a queue or a virtual topic, not both");
                ActivemqSource {
                    queue: String::new(),
                    virtual_topic: None,
                }
            }
            (None, None) => {
                errors.add("source.queue", "is required: a queue, or a virtual_topic and its group");
                ActivemqSource {
                    queue: String::new(),
                    virtual_topic: None,
                }
            }
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.queue == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.queue.clone()]
    }
}

/// Where a message written through Bida goes (`POST /v1/brokers/{id}/messages`):
/// a STOMP `SEND` to a queue, a virtual topic (read by each group's queue)
/// or a plain topic, written once the broker's receipt comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivemqTarget {
    /// A queue (`orders`).
    #[serde(default)]
    pub queue: Option<String>,
    /// A virtual topic (`orders`, sent to `VirtualTopic.orders`): every
    /// group reading it gets the message.
    #[serde(default)]
    pub virtual_topic: Option<String>,
    /// A plain topic: only subscribers connected now get it.
    #[serde(default)]
    pub topic: Option<String>,
    /// The ordering key, as the `bida-key` header.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// 0 to 9 (JMS priority; 4 by default).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 9))]
    pub priority: Option<u8>,
    /// How long the message may wait before the broker drops it.
    #[serde(default)]
    pub expiration_ms: Option<u64>,
    /// Kept on disk by the broker; true unless false.
    #[serde(default = "persistent")]
    pub persistent: bool,
}

fn persistent() -> bool {
    true
}

/// Headers STOMP or ActiveMQ give a meaning of their own: the message's
/// fields set them.
pub const RESERVED_HEADERS: [&str; 14] = [
    "destination",
    "receipt",
    "content-length",
    "content-type",
    "transaction",
    "persistent",
    "priority",
    "expires",
    "correlation-id",
    "reply-to",
    "message-id",
    "subscription",
    "ack",
    "bida-key",
];

impl ActivemqTarget {
    /// The STOMP destination: `/queue/<name>` or `/topic/<name>`.
    pub fn stomp_destination(&self) -> String {
        match (&self.queue, &self.virtual_topic, &self.topic) {
            (Some(queue), _, _) => format!("/queue/{queue}"),
            (None, Some(topic), _) => format!("/topic/VirtualTopic.{topic}"),
            (None, None, Some(topic)) => format!("/topic/{topic}"),
            (None, None, None) => String::new(),
        }
    }

    /// Where the message goes, as lists name it: the queue, or the topic.
    pub fn destination(&self) -> String {
        match (&self.queue, &self.virtual_topic, &self.topic) {
            (Some(queue), _, _) => queue.clone(),
            (None, Some(topic), _) => format!("VirtualTopic.{topic}"),
            (None, None, Some(topic)) => topic.clone(),
            (None, None, None) => String::new(),
        }
    }

    /// The field naming the destination (what a refusal names).
    pub fn destination_field(&self) -> &'static str {
        match (&self.queue, &self.virtual_topic) {
            (Some(_), _) => "queue",
            (None, Some(_)) => "virtual_topic",
            (None, None) => "topic",
        }
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        let named = [
            ("queue", &self.queue),
            ("virtual_topic", &self.virtual_topic),
            ("topic", &self.topic),
        ];
        match named.iter().filter(|(_, value)| value.is_some()).count() {
            0 => errors.add(
                format!("{context}queue"),
                "is required: a queue, a virtual_topic or a topic",
            ),
            1 => {}
            _ => errors.add(
                format!("{context}{}", self.destination_field()),
                "name one of queue, virtual_topic and topic",
            ),
        }
        for (field, value) in named {
            if let Some(name) = value {
                let name = if field == "virtual_topic" {
                    name.strip_prefix("VirtualTopic.").unwrap_or(name)
                } else {
                    name
                };
                if !is_plain_name(name) {
                    errors.add(
                        format!("{context}{field}"),
                        "must be a destination name (no *, >, commas, slashes or spaces)",
                    );
                }
            }
        }
        if self.priority.is_some_and(|p| p > 9) {
            errors.add(format!("{context}priority"), "must be 0 to 9");
        }
        if self.expiration_ms == Some(0) {
            errors.add(format!("{context}expiration_ms"), "must be 1 or more");
        }
    }

    /// Headers go as STOMP headers: not those the message's fields set.
    pub fn check_headers(
        &self,
        headers: &std::collections::BTreeMap<String, String>,
        context: &str,
        errors: &mut ValidationErrors,
    ) {
        let reserved = |name: &str| RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name));
        super::fields::refuse_headers(
            headers,
            context,
            errors,
            reserved,
            "is a STOMP header the message's own fields set",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(json: serde_json::Value) -> (ActivemqSource, Vec<String>) {
        let mut errors = ValidationErrors::default();
        let source = ActivemqSource::from_input(serde_json::from_value(json).unwrap(), &mut errors);
        (source, errors.0.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn a_queue_or_a_virtual_topic_and_its_group() {
        let (queue, errors) = source(serde_json::json!({"queue": "orders.created"}));
        assert_eq!((queue.queue.as_str(), errors.len()), ("orders.created", 0));
        let (group, errors) = source(serde_json::json!({"virtual_topic": "VirtualTopic.orders", "group": "bida"}));
        assert_eq!(group.queue, "Consumer.bida.VirtualTopic.orders");
        assert!(errors.is_empty(), "{errors:?}");
        for (bad, field) in [
            (serde_json::json!({"queue": "a.>"}), "source.queue"),
            (serde_json::json!({"queue": "a,b"}), "source.queue"),
            (serde_json::json!({"queue": "a", "virtual_topic": "b"}), "source.queue"),
            (serde_json::json!({}), "source.queue"),
            (serde_json::json!({"virtual_topic": "orders"}), "source.group"),
            (
                serde_json::json!({"virtual_topic": "orders", "group": "a.b"}),
                "source.group",
            ),
            (serde_json::json!({"queue": "orders", "group": "g"}), "source.group"),
        ] {
            let (_, errors) = source(bad.clone());
            assert_eq!(errors, [field], "{bad}");
        }
    }

    #[test]
    fn urls_are_plain_stomp_and_hide_their_password() {
        for (url, valid) in [
            ("stomp://127.0.0.1:61613", true),
            ("stomp://u:p@h", true),
            ("stomp+ssl://h:61614", false),
            ("stomp://h:61613/x", false),
            ("tcp://h:61616", false),
        ] {
            let mut errors = ValidationErrors::default();
            ActivemqConnection { url: url.into() }.validate(&mut errors);
            assert_eq!(errors.is_empty(), valid, "{url}: {errors:?}");
        }
        let mut connection = ActivemqConnection {
            url: "stomp://u:secret@h:61613".into(),
        };
        connection.map_secrets(&|_| "***".into());
        assert!(!connection.url.contains("secret"), "{}", connection.url);
    }
}
