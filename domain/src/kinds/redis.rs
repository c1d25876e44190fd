//! Redis Streams: a broker is a Redis server's URL; a consumer reads one
//! stream through a consumer group, its nodes being the group's consumers.
//! An entry's fields carry the message: its body, key, content type and
//! trace context each in a field of their own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::kafka::StartAt;
use super::{is_destination_name, is_url, map_url_password, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

/// A group's position can be set anew (`XGROUP SETID`); past entries are
/// read again by id (`XRANGE`).
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: true,
    resend_range: true,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "url",
    ("Server URL", "服务地址"),
    "redis://user:password@host:6379/0",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::text("stream", ("Stream", "流"), "orders"),
    FormField::text("group", ("Consumer group", "消费组"), "bida"),
    FormField::text("body_field", ("Body field", "消息体字段"), DEFAULT_BODY_FIELD),
    FormField::text("key_field", ("Key field", "键字段"), DEFAULT_KEY_FIELD),
];

/// The entry field holding the body unless the source names another.
pub const DEFAULT_BODY_FIELD: &str = "body";
/// The entry field holding the ordering key unless the source names another.
pub const DEFAULT_KEY_FIELD: &str = "key";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisConnection {
    /// `redis://[user:password@]host:6379[/db]` (TLS, `rediss://`, is not supported yet).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^redis://([^@/?#\s]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(0|6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[0-9]{0,2})?$"
        )
    )]
    pub url: String,
}

impl ConnectionSpec for RedisConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        let database_ok = url::Url::parse(&self.url).is_ok_and(|u| {
            let path = u.path().trim_start_matches('/');
            path.is_empty() || path.parse::<u8>().is_ok()
        });
        if self.url.starts_with("rediss:") {
            errors.add("url", "TLS (rediss://) is not supported yet: use redis://");
        } else if !is_url(&self.url, &["redis"]) || !database_ok {
            errors.add("url", "must be a Redis URL: redis://user:password@host:6379/0");
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        self.url = map_url_password(&self.url, f);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisSource {
    /// The stream's key.
    pub stream: String,
    /// The consumer group: nodes sharing it share the entries.
    pub group: String,
    /// Where a new group starts: earliest (the whole stream) or latest.
    #[serde(default)]
    pub start: StartAt,
    /// The entry field holding the body; an entry without it is delivered
    /// as a JSON object of all its fields.
    #[serde(default = "default_body_field")]
    pub body_field: String,
    /// The entry field holding the ordering key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
}

fn default_body_field() -> String {
    DEFAULT_BODY_FIELD.to_string()
}

fn default_key_field() -> String {
    DEFAULT_KEY_FIELD.to_string()
}

/// `{"stream": "orders", "group": "bida"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisSourceInput {
    /// The stream's key.
    pub stream: Option<String>,
    /// The consumer group's name (created if it does not exist).
    pub group: Option<String>,
    /// earliest (default) or latest, for a new group.
    pub start: Option<StartAt>,
    /// The entry field holding the body (default `body`).
    pub body_field: Option<String>,
    /// The entry field holding the ordering key (default `key`).
    pub key_field: Option<String>,
}

impl SourceSpec for RedisSource {
    type Input = RedisSourceInput;

    fn from_input(input: RedisSourceInput, errors: &mut ValidationErrors) -> Self {
        let mut required = |value: Option<String>, field: &str, what: &str| {
            let value = value.unwrap_or_default();
            if !is_destination_name(&value) {
                errors.add(field, format!("is required: {what}"));
            }
            value
        };
        let stream = required(input.stream, "source.stream", "the stream's key");
        let group = required(input.group, "source.group", "the consumer group's name");
        let body_field = required(
            Some(input.body_field.unwrap_or_else(default_body_field)),
            "source.body_field",
            "the field holding the body",
        );
        let key_field = required(
            Some(input.key_field.unwrap_or_else(default_key_field)),
            "source.key_field",
            "the field holding the key",
        );
        RedisSource {
            stream,
            group,
            start: input.start.unwrap_or_default(),
            body_field,
            key_field,
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.stream == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.stream.clone()]
    }

    fn exclusive_group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

/// Where a message written through Bida goes (`POST /v1/brokers/{id}/messages`):
/// an entry appended to a stream (`XADD`), in the fields Bida's Redis
/// consumers read: `body`, `key`, `content_type`, and each header as a
/// field of its own (`traceparent` included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisTarget {
    /// The stream's key (created by the first entry).
    pub stream: String,
    /// The ordering key, written in the `key` field.
    #[serde(default)]
    pub key: Option<String>,
    /// The entry id (`1700000000000-0`); Redis makes one when absent, and
    /// refuses one not above the stream's last.
    #[serde(default)]
    pub id: Option<String>,
    /// Trims the stream to about this many entries (`MAXLEN ~`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub maxlen: Option<u64>,
}

/// Entry fields the message itself fills: headers may not take them.
pub const RESERVED_FIELDS: [&str; 3] = [DEFAULT_BODY_FIELD, DEFAULT_KEY_FIELD, "content_type"];

impl RedisTarget {
    /// Where the message goes, as lists name it: the stream's key.
    pub fn destination(&self) -> String {
        self.stream.clone()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        if self.stream.is_empty() || self.stream.len() > 1024 || self.stream.chars().any(char::is_control) {
            errors.add(
                format!("{context}stream"),
                "must be a stream key (1 to 1024 characters, no control characters)",
            );
        }
        if let Some(id) = &self.id {
            let number = |text: &str| !text.is_empty() && text.len() <= 20 && text.parse::<u64>().is_ok();
            let valid = match id.split_once('-') {
                Some((ms, "*")) => number(ms),
                Some((ms, seq)) => number(ms) && number(seq),
                None => number(id),
            };
            if !valid || id == "0-0" || id == "0" {
                errors.add(
                    format!("{context}id"),
                    "must be an entry id above 0-0: <milliseconds>-<sequence>, <milliseconds>-* or <milliseconds>",
                );
            }
        }
        if self.maxlen == Some(0) {
            errors.add(format!("{context}maxlen"), "must be 1 or more");
        }
    }

    /// Headers become entry fields: not the fields the message fills.
    pub fn check_headers(&self, headers: &BTreeMap<String, String>, context: &str, errors: &mut ValidationErrors) {
        super::fields::refuse_headers(
            headers,
            context,
            errors,
            |name| RESERVED_FIELDS.contains(&name),
            "is a field the message fills (body, key, content_type): use the message's own field",
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
    fn sources_take_defaults_and_name_their_bad_fields() {
        let mut errors = ValidationErrors::default();
        let source = RedisSource::from_input(
            RedisSourceInput {
                stream: Some("orders".into()),
                group: Some("bida".into()),
                ..Default::default()
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((source.body_field.as_str(), source.key_field.as_str()), ("body", "key"));
        assert_eq!(source.exclusive_group(), Some("bida"));
        let mut errors = ValidationErrors::default();
        RedisSource::from_input(
            RedisSourceInput {
                stream: Some(" ".into()),
                body_field: Some(String::new()),
                ..Default::default()
            },
            &mut errors,
        );
        assert_eq!(fields(errors), ["source.stream", "source.group", "source.body_field"]);
    }

    #[test]
    fn urls_name_a_database_and_hide_their_password() {
        for (url, valid) in [
            ("redis://127.0.0.1:6379", true),
            ("redis://u:p@h:6379/3", true),
            ("redis://h", true),
            ("rediss://h", false),
            ("redis://h:6379/x", false),
            ("http://h:6379", false),
        ] {
            let mut errors = ValidationErrors::default();
            RedisConnection { url: url.into() }.validate(&mut errors);
            assert_eq!(errors.is_empty(), valid, "{url}: {errors:?}");
        }
        let mut connection = RedisConnection {
            url: "redis://u:secret@h:6379/0".into(),
        };
        connection.map_secrets(&|_| "***".into());
        assert!(!connection.url.contains("secret"), "{}", connection.url);
    }
}
