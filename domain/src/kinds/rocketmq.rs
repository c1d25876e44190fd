//! RocketMQ: a broker is its name servers; a consumer reads one topic as a
//! consumer group, each node pulling the queues the group's rebalance gives
//! it, a queue being a partition and the queue offset its position.

use serde::{Deserialize, Serialize};

use super::kafka::StartAt;
use super::{is_host_port, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: true,
    resend_range: true,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "name_server",
    ("Name servers", "NameServer 地址"),
    "host:9876;host2:9876",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::text("topic", ("Topic", "主题"), "orders"),
    FormField::text("group", ("Consumer group", "消费组"), "bida"),
    FormField::text(
        "tags",
        ("Tag filter (optional)", "Tag 过滤（可选）"),
        "paid || refunded",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RocketmqConnection {
    /// `host:9876`, several separated by `;` (RocketMQ's own notation) or `,`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[^;,\s/@]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})([;,] ?[^;,\s/@]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))*$"
        )
    )]
    pub name_server: String,
}

impl RocketmqConnection {
    /// The name servers, in the order given.
    pub fn name_servers(&self) -> Vec<&str> {
        self.name_server
            .split([';', ','])
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .collect()
    }
}

impl ConnectionSpec for RocketmqConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        let servers = self.name_servers();
        if servers.is_empty()
            || !servers
                .iter()
                .all(|address| is_host_port(address) && !address.contains(['/', '@']))
        {
            errors.add(
                "name_server",
                "must be name server addresses (host:9876), several separated by ;",
            );
        }
    }

    /// No credentials: ACL signing is not supported (see the README).
    fn map_secrets(&mut self, _f: &dyn Fn(&str) -> String) {}
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RocketmqSource {
    pub topic: String,
    /// The consumer group: nodes sharing it share the topic's queues.
    pub group: String,
    /// A tag expression (`paid || refunded`); every message when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Where a group without a committed offset starts on a queue.
    #[serde(default)]
    pub start: StartAt,
}

impl RocketmqSource {
    /// The subscription expression as the broker takes it, without spaces:
    /// the Rust broker (1.0) hashes each tag untrimmed, so `a || b` would
    /// match nothing there.
    pub fn expression(&self) -> String {
        match self.tags {
            Some(_) => self.tag_set().join("||"),
            None => "*".to_string(),
        }
    }

    /// The tags a message must carry, or none for every message.
    pub fn tag_set(&self) -> Vec<&str> {
        match &self.tags {
            Some(tags) => tags.split("||").map(str::trim).filter(|t| !t.is_empty()).collect(),
            None => Vec::new(),
        }
    }
}

/// `{"topic": "orders", "group": "bida"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RocketmqSourceInput {
    /// The topic to consume.
    pub topic: Option<String>,
    /// The consumer group.
    pub group: Option<String>,
    /// Only messages with one of these tags: `paid || refunded`.
    pub tags: Option<String>,
    /// earliest (default) or latest, for a group new to a queue.
    pub start: Option<StartAt>,
}

/// RocketMQ's topic and group names: letters, digits, `%`, `|`, `_`, `-`,
/// at most 127 characters (its `TopicValidator`).
fn is_rocketmq_name(name: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-');
    !name.is_empty() && name.len() <= 127 && name.chars().all(legal)
}

impl SourceSpec for RocketmqSource {
    type Input = RocketmqSourceInput;

    fn from_input(input: RocketmqSourceInput, errors: &mut ValidationErrors) -> Self {
        let topic = input.topic.unwrap_or_default();
        if !is_rocketmq_name(&topic) {
            errors.add(
                "source.topic",
                "is required: a topic name (letters, digits, %, |, _ and -; at most 127)",
            );
        }
        let group = input.group.unwrap_or_default();
        if !is_rocketmq_name(&group) {
            errors.add(
                "source.group",
                "is required: a consumer group name (letters, digits, %, |, _ and -; at most 127)",
            );
        }
        let tags = input.tags.map(|tags| tags.trim().to_string());
        if let Some(tags) = &tags {
            let parts: Vec<&str> = tags.split("||").map(str::trim).collect();
            if parts
                .iter()
                .any(|tag| tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                errors.add("source.tags", "must be tags separated by || (paid || refunded)");
            }
        }
        RocketmqSource {
            topic,
            group,
            tags: tags.filter(|tags| tags != "*"),
            start: input.start.unwrap_or_default(),
        }
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
/// a topic's queue (the sharding key's, or the next in turn), written once
/// the broker stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RocketmqTarget {
    pub topic: String,
    /// The message's tag (`paid`), which tag filters match.
    #[serde(default)]
    pub tags: Option<String>,
    /// Its keys (`KEYS`, separated by spaces): RocketMQ indexes them, and
    /// Bida's consumers take the first as the ordering key.
    #[serde(default)]
    pub keys: Option<String>,
    /// Messages with one sharding key go to one queue, in order; Bida's
    /// consumers take it as the ordering key.
    #[serde(default)]
    pub sharding_key: Option<String>,
}

/// Property names RocketMQ keeps for itself (its `MessageConst`): headers
/// may not take them.
pub const RESERVED_PROPERTIES: [&str; 18] = [
    "KEYS",
    "TAGS",
    "WAIT",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "UNIQ_KEY",
    "MSG_REGION",
    "TRACE_ON",
    "__SHARDINGKEY",
    "content-type",
];

impl RocketmqTarget {
    /// Where the message goes, as lists name it: the topic.
    pub fn destination(&self) -> String {
        self.topic.clone()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        if !is_rocketmq_name(&self.topic) {
            errors.add(
                format!("{context}topic"),
                "must be a RocketMQ topic (letters, digits, %, |, _ and -; at most 127)",
            );
        }
        for (field, value) in [
            ("tags", &self.tags),
            ("keys", &self.keys),
            ("sharding_key", &self.sharding_key),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 1024 || v.chars().any(char::is_control))
            {
                errors.add(
                    format!("{context}{field}"),
                    "must be 1 to 1024 characters without control characters",
                );
            }
        }
        if self.tags.as_ref().is_some_and(|tags| tags.contains("||")) {
            errors.add(format!("{context}tags"), "is one tag (|| belongs to filters)");
        }
    }

    /// Headers go as message properties: not those RocketMQ keeps.
    pub fn check_headers(
        &self,
        headers: &std::collections::BTreeMap<String, String>,
        context: &str,
        errors: &mut ValidationErrors,
    ) {
        let reserved = |name: &str| RESERVED_PROPERTIES.iter().any(|r| r.eq_ignore_ascii_case(name));
        super::fields::refuse_headers(
            headers,
            context,
            errors,
            reserved,
            "is a property RocketMQ keeps for itself",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: ValidationErrors) -> Vec<String> {
        errors.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn sources_name_their_bad_fields() {
        let mut errors = ValidationErrors::default();
        let source = RocketmqSource::from_input(
            RocketmqSourceInput {
                topic: Some("orders".into()),
                group: Some("bida".into()),
                tags: Some(" paid || refunded ".into()),
                start: None,
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(source.expression(), "paid||refunded");
        assert_eq!(source.tag_set(), ["paid", "refunded"]);
        assert_eq!(source.exclusive_group(), Some("bida"));
        let mut errors = ValidationErrors::default();
        RocketmqSource::from_input(
            RocketmqSourceInput {
                topic: Some("a.b".into()),
                group: None,
                tags: Some("paid ||".into()),
                start: None,
            },
            &mut errors,
        );
        assert_eq!(fields(errors), ["source.topic", "source.group", "source.tags"]);
        let every = RocketmqSource::from_input(
            RocketmqSourceInput {
                topic: Some("t".into()),
                group: Some("g".into()),
                tags: Some("*".into()),
                start: None,
            },
            &mut ValidationErrors::default(),
        );
        assert_eq!((every.expression().as_str(), every.tag_set().len()), ("*", 0));
    }

    #[test]
    fn name_servers_are_host_ports() {
        let connection = RocketmqConnection {
            name_server: "a:9876; b:9876,c:9876".into(),
        };
        let mut errors = ValidationErrors::default();
        connection.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(connection.name_servers(), ["a:9876", "b:9876", "c:9876"]);
        let mut errors = ValidationErrors::default();
        RocketmqConnection {
            name_server: "http://a:9876".into(),
        }
        .validate(&mut errors);
        assert_eq!(fields(errors), ["name_server"]);
    }
}
