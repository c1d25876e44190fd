//! RabbitMQ: a broker is its AMQP URL and, optionally, its management API; a
//! consumer reads one queue, which it may declare and bind.

use serde::{Deserialize, Serialize};

use super::{is_destination_name, is_url, map_url_password, Capabilities, ConnectionSpec, FormField, SourceSpec};
use crate::ValidationErrors;

/// A queue is a backlog without positions: there is nothing to reset or read again.
pub const CAPABILITIES: Capabilities = Capabilities {
    lag: true,
    offset_reset: false,
    resend_range: false,
    keys: true,
    takeover: true,
};

pub const CONNECTION_FORM: &[FormField] = &[
    FormField::text("url", ("AMQP URL", "AMQP 地址"), "amqp://user:password@host:5672/%2f"),
    FormField::text(
        "management_url",
        ("Management URL (optional)", "管理接口地址（可选）"),
        "http://user:password@host:15672",
    ),
];

pub const SOURCE_FORM: &[FormField] = &[FormField::text("queue", ("Queue", "队列"), "")];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitmqConnection {
    /// `amqp://user:password@host:5672/vhost`
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^amqps?://([^@/?#\s]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(0|(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})))?(/\S*)?$"
        )
    )]
    pub url: String,
    /// The management API (`http://user:password@host:15672`), for queue listings and node figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^https?://([^@/?#\s\\]*@)?[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/\S*)?$"
        )
    )]
    pub management_url: Option<String>,
}

impl ConnectionSpec for RabbitmqConnection {
    fn validate(&self, errors: &mut ValidationErrors) {
        if !is_url(&self.url, &["amqp", "amqps"]) {
            errors.add("url", "must be an AMQP URL: amqp://user:password@host:5672/%2f");
        }
        if let Some(management) = &self.management_url {
            if !url::Url::parse(management).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                errors.add(
                    "management_url",
                    "must be an http(s) URL: http://user:password@host:15672",
                );
            }
        }
    }

    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
        self.url = map_url_password(&self.url, f);
        if let Some(management) = &mut self.management_url {
            *management = map_url_password(management, f);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitmqSource {
    pub queue: String,
    /// Declare the queue (durable) if it does not exist.
    #[serde(default)]
    pub declare: bool,
    /// Bind the queue to this exchange (declared as a durable topic exchange if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

/// `{"queue": "q"}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitmqSourceInput {
    /// The queue to consume.
    pub queue: Option<String>,
    /// Declare the queue if missing.
    pub declare: Option<bool>,
    /// Bind the queue to this exchange.
    pub exchange: Option<String>,
    /// The binding's routing key.
    pub routing_key: Option<String>,
}

impl SourceSpec for RabbitmqSource {
    type Input = RabbitmqSourceInput;

    fn from_input(input: RabbitmqSourceInput, errors: &mut ValidationErrors) -> Self {
        let queue = input.queue.unwrap_or_default();
        if !is_destination_name(&queue) {
            errors.add("source.queue", "is required: the queue to consume");
        }
        if input.routing_key.is_some() && input.exchange.is_none() {
            errors.add("source.routing_key", "needs source.exchange to bind to");
        }
        RabbitmqSource {
            queue,
            declare: input.declare.unwrap_or(false) || input.exchange.is_some(),
            exchange: input.exchange,
            routing_key: input.routing_key,
        }
    }

    fn reads(&self, destination: &str) -> bool {
        self.queue == destination
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.queue.clone()]
    }
}

/// Where a message written through Bida goes, and its AMQP properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RabbitmqTarget {
    /// The exchange; the default exchange (`""`) routes by queue name.
    #[serde(default)]
    pub exchange: String,
    pub routing_key: String,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub priority: Option<u8>,
    /// How long the message may wait in a queue.
    #[serde(default)]
    pub expiration_ms: Option<u64>,
    /// Written to disk by the broker (delivery mode 2); true unless false.
    #[serde(default = "persistent")]
    pub persistent: bool,
}

fn persistent() -> bool {
    true
}

impl RabbitmqTarget {
    /// Where the message goes, as lists name it: the routing key (a queue,
    /// through the default exchange), or `exchange/routing_key`.
    pub fn destination(&self) -> String {
        if self.exchange.is_empty() {
            self.routing_key.clone()
        } else {
            format!("{}/{}", self.exchange, self.routing_key)
        }
    }

    pub fn validate(&self, context: &str, errors: &mut ValidationErrors) {
        // AMQP short strings: at most 255 bytes.
        for (field, value) in [
            ("exchange", Some(&self.exchange)),
            ("routing_key", Some(&self.routing_key)),
            ("message_id", self.message_id.as_ref()),
            ("correlation_id", self.correlation_id.as_ref()),
        ] {
            if value.is_some_and(|v| v.len() > 255) {
                errors.add(format!("{context}{field}"), "must be at most 255 bytes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_name_their_field() {
        let mut errors = ValidationErrors::default();
        RabbitmqConnection {
            url: "http://x".into(),
            management_url: Some("amqp://x".into()),
        }
        .validate(&mut errors);
        let fields: Vec<_> = errors.0.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["url", "management_url"]);
    }

    #[test]
    fn views_hide_passwords() {
        let mut connection = RabbitmqConnection {
            url: "amqp://guest:secret@h:5672/%2f".into(),
            management_url: Some("http://guest:secret@h:15672".into()),
        };
        connection.map_secrets(&|_| "***".into());
        assert_eq!(connection.url, "amqp://guest:***@h:5672/%2f");
        assert_eq!(connection.management_url.as_deref(), Some("http://guest:***@h:15672/"));
    }
}
