//! NATS JetStream: a broker is its server URL; a consumer reads a stream
//! through a durable pull consumer, the subject being a message's key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::kafka::StartAt;
use super::{is_destination_name, is_url, map_url_password, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

/// A durable consumer cannot be moved to another sequence; past messages are
/// read again by sequence.
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: false,
    resend_range: true,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[FormField::text(
    "url",
    ("Server URL", "服务地址"),
    "nats://user:password@host:4222",
)];

pub const SOURCE_FORM: &[FormField] = &[
    FormField::text("stream", ("Stream", "流"), "ORDERS"),
    FormField::text("durable", ("Durable consumer", "持久消费者"), "bida"),
    FormField::text(
        "filter_subject",
        ("Subject filter (optional)", "主题过滤（可选）"),
        "orders.>",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NatsConnection {
    /// `nats://[user:password@]host:4222`; several servers separated by commas.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(nats|tls)://([^@/?#\s,]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(0|6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(,(nats|tls)://([^@/?#\s,]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(0|6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?)*$"
        )
    )]
    pub url: String,
    /// An authentication token, for servers that use one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub token: Option<String>,
}

impl ConnectionSpec for NatsConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        if self
            .url
            .split(',')
            .map(str::trim)
            .any(|url| !is_url(url, &["nats", "tls"]))
        {
            errors.add(
                "url",
                "must be a NATS URL (nats://host:4222), or several separated by commas",
            );
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            errors.add("token", "is empty; leave it out for servers without tokens");
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        self.url = self
            .url
            .split(',')
            .map(|url| map_url_password(url.trim(), f))
            .collect::<Vec<_>>()
            .join(",");
        if let Some(token) = &mut self.token {
            *token = f(token);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NatsSource {
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable consumer: nodes sharing it share the messages.
    pub durable: String,
    /// Only messages whose subject matches (`orders.>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    /// Where a new durable consumer starts: earliest (the whole stream) or latest.
    #[serde(default)]
    pub start: StartAt,
}

/// `{"stream": "ORDERS", "durable": "bida"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NatsSourceInput {
    /// The stream to read.
    pub stream: Option<String>,
    /// The durable consumer's name.
    pub durable: Option<String>,
    /// Only messages whose subject matches.
    pub filter_subject: Option<String>,
    /// earliest (default) or latest, for a new durable consumer.
    pub start: Option<StartAt>,
}

/// Stream and consumer names: no spaces, dots, wildcards or separators.
fn is_nats_name(name: &str) -> bool {
    is_destination_name(name) && !name.contains([' ', '.', '*', '>', '/', '\\']) && name.len() <= 255
}

impl SourceSpec for NatsSource {
    type Input = NatsSourceInput;

    fn from_input(input: NatsSourceInput, errors: &mut ValidationErrors) -> Self {
        let stream = input.stream.unwrap_or_default();
        if !is_nats_name(&stream) {
            errors.add(
                "source.stream",
                "is required: a stream name (no spaces, dots or wildcards)",
            );
        }
        let durable = input.durable.unwrap_or_default();
        if !is_nats_name(&durable) {
            errors.add(
                "source.durable",
                "is required: the durable consumer's name (no spaces, dots or wildcards)",
            );
        }
        if let Some(filter) = &input.filter_subject {
            if filter.is_empty() || filter.contains(char::is_whitespace) || filter.split('.').any(str::is_empty) {
                errors.add(
                    "source.filter_subject",
                    "must be a subject like orders.> or orders.*.paid",
                );
            }
        }
        NatsSource {
            stream,
            durable,
            filter_subject: input.filter_subject,
            start: input.start.unwrap_or_default(),
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.stream == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.stream.clone()]
    }

    fn exclusive_group(&self) -> Option<&str> {
        Some(&self.durable)
    }
}

/// Where a message written through Bida goes (`POST /v1/brokers/{id}/messages`):
/// a subject of a JetStream stream, which acknowledges it with its sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NatsTarget {
    /// The subject (`orders.paid`); a stream must take it. Bida's NATS
    /// consumers read it as the message's key.
    pub subject: String,
    /// Sent as `Nats-Msg-Id`: the stream drops a message with an id it saw
    /// within its duplicate window (answered `duplicate: true`).
    #[serde(default)]
    pub msg_id: Option<String>,
}

impl NatsTarget {
    /// Where the message goes, as lists name it: the subject.
    pub fn destination(&self) -> String {
        self.subject.clone()
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        let subject = &self.subject;
        if subject.is_empty()
            || subject.len() > 4096
            || subject
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
            || subject.split('.').any(str::is_empty)
        {
            errors.add(
                format!("{context}subject"),
                "must be a subject like orders.paid (no spaces, wildcards or empty tokens)",
            );
        }
        if self
            .msg_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > 1024 || id.chars().any(char::is_control))
        {
            errors.add(
                format!("{context}msg_id"),
                "must be 1 to 1024 characters without control characters",
            );
        }
    }

    /// NATS header names are visible ASCII without `:`.
    pub fn check_headers(&self, headers: &BTreeMap<String, String>, context: &str, errors: &mut ValidationErrors) {
        let illegal = |name: &str| !name.chars().all(|c| c.is_ascii_graphic() && c != ':');
        super::fields::refuse_headers(
            headers,
            context,
            errors,
            illegal,
            "NATS header names are visible ASCII characters without `:`",
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
        let source = NatsSource::from_input(
            NatsSourceInput {
                stream: Some("ORDERS".into()),
                durable: Some("bida".into()),
                filter_subject: Some("orders.>".into()),
                start: None,
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(source.exclusive_group(), Some("bida"));
        let mut errors = ValidationErrors::default();
        NatsSource::from_input(
            NatsSourceInput {
                stream: Some("a.b".into()),
                durable: None,
                filter_subject: Some("orders..x".into()),
                start: None,
            },
            &mut errors,
        );
        assert_eq!(
            fields(errors),
            ["source.stream", "source.durable", "source.filter_subject"]
        );
    }

    #[test]
    fn credentials_are_sealed() {
        let mut connection = NatsConnection {
            url: "nats://u:secret@a:4222, nats://u:secret@b:4222".into(),
            token: Some("t0k3n".into()),
        };
        let mut errors = ValidationErrors::default();
        connection.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        connection.map_secrets(&|_| "***".into());
        assert!(!connection.url.contains("secret"), "{}", connection.url);
        assert_eq!(connection.token.as_deref(), Some("***"));
        let mut errors = ValidationErrors::default();
        NatsConnection {
            url: "http://h:4222".into(),
            token: None,
        }
        .validate(&mut errors);
        assert_eq!(fields(errors), ["url"]);
    }
}
