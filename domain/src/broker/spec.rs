use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ValidationErrors;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BrokerKind {
    Kafka,
    Rabbitmq,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Rabbitmq => "rabbitmq",
        }
    }
}

/// How to reach the broker, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Connection {
    Kafka {
        /// `host:port[,host:port...]`
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = r"^[^,\s]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})(,[^,\s]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))*$"
            )
        )]
        bootstrap_servers: String,
        /// Extra librdkafka client properties (`security.protocol`, `sasl.*`...).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        options: BTreeMap<String, String>,
    },
    Rabbitmq {
        /// `amqp://user:password@host:5672/vhost`
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = r"^amqps?://([^@/?#\s]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(:(0|(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})))?(/\S*)?$"
            )
        )]
        url: String,
        /// The management API (`http://user:password@host:15672`), for queue listings and node figures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = r"^https?://([^@/?#\s\\]*@)?[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/\S*)?$"
            )
        )]
        management_url: Option<String>,
    },
}

tagged_by_name!(Connection, "kind");

/// Client properties Bida sets itself on Kafka consumers (at-least-once depends on them).
pub const KAFKA_RESERVED_OPTIONS: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerSpec {
    /// 1 to 128 characters, not only spaces, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    #[serde(flatten)]
    pub connection: Connection,
}

impl BrokerSpec {
    pub fn kind(&self) -> BrokerKind {
        match self.connection {
            Connection::Kafka { .. } => BrokerKind::Kafka,
            Connection::Rabbitmq { .. } => BrokerKind::Rabbitmq,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !crate::validation::is_printable_name(&self.name, 128) {
            errors.add("name", "must be 1 to 128 printable characters");
        }
        match &self.connection {
            Connection::Kafka {
                bootstrap_servers,
                options,
            } => {
                let servers: Vec<&str> = bootstrap_servers.split(',').map(str::trim).collect();
                if servers.iter().any(|s| !is_host_port(s)) {
                    errors.add(
                        "bootstrap_servers",
                        "must be host:port, or several separated by commas (127.0.0.1:9092)",
                    );
                }
                for key in options.keys() {
                    if KAFKA_RESERVED_OPTIONS.contains(&key.as_str()) {
                        errors.add(format!("options.{key}"), "is set by Bida itself");
                    } else if !is_option_name(key) {
                        errors.add(
                            "options",
                            "option names are librdkafka property names (security.protocol)",
                        );
                    }
                }
            }
            Connection::Rabbitmq { url, management_url } => {
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "amqp" | "amqps") && u.host_str().is_some() => {}
                    _ => errors.add("url", "must be an AMQP URL: amqp://user:password@host:5672/%2f"),
                }
                if let Some(management) = management_url {
                    match url::Url::parse(management) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                        _ => errors.add(
                            "management_url",
                            "must be an http(s) URL: http://user:password@host:15672",
                        ),
                    }
                }
            }
        }
        errors.finish(())
    }

    /// The spec with passwords hidden, for views and logs.
    pub fn redacted(&self) -> Self {
        self.map_secrets(|_| "***".into())
    }

    /// The spec with every credential (URL passwords, Kafka options named
    /// like a password or secret) replaced by `f` of it: sealed for the event
    /// store, opened for a connection, hidden for a view.
    pub fn map_secrets(&self, f: impl Fn(&str) -> String) -> Self {
        let mut copy = self.clone();
        match &mut copy.connection {
            Connection::Rabbitmq { url, management_url } => {
                *url = map_url_password(url, &f);
                if let Some(m) = management_url {
                    *m = map_url_password(m, &f);
                }
            }
            Connection::Kafka { options, .. } => {
                for (key, value) in options.iter_mut() {
                    if key.contains("password") || key.contains("secret") {
                        *value = f(value);
                    }
                }
            }
        }
        copy
    }
}

/// librdkafka property names: letters, digits, dots, dashes and underscores
/// (the document's `OPTION_NAME`).
fn is_option_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What [`is_option_name`] takes, as a JSON Schema pattern.
pub const OPTION_NAME: &str = "^[A-Za-z0-9._-]+$";

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn map_url_password(text: &str, f: impl Fn(&str) -> String) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) => match parsed.password().map(&f) {
            Some(new) if parsed.set_password(Some(&new)).is_ok() => parsed.to_string(),
            _ => text.to_string(),
        },
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kind_is_a_name_not_an_index() {
        let named: BrokerSpec =
            serde_json::from_str(r#"{"name": "b", "kind": "kafka", "bootstrap_servers": "k:9092"}"#).unwrap();
        assert_eq!(named.kind(), BrokerKind::Kafka);
        assert_eq!(serde_json::to_value(&named).unwrap()["kind"], "kafka");
        let indexed = serde_json::from_str::<BrokerSpec>(r#"{"name": "b", "kind": 0, "bootstrap_servers": "k:9092"}"#);
        assert!(indexed.unwrap_err().to_string().contains("`kind` must be a name"));
        let unknown = r#"{"name": "b", "kind": "kafka", "bootstrap_servers": "k:9092", "url": "amqp://x"}"#;
        assert!(serde_json::from_str::<BrokerSpec>(unknown).is_err());
    }

    #[test]
    fn the_api_shapes_deserialize() {
        let rabbit: BrokerSpec = serde_json::from_value(
            json!({"name": "mq", "kind": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:5672/%2f"}),
        )
        .unwrap();
        assert_eq!(rabbit.kind(), BrokerKind::Rabbitmq);
        rabbit.validate().unwrap();
        let kafka: BrokerSpec =
            serde_json::from_value(json!({"name": "k", "kind": "kafka", "bootstrap_servers": "127.0.0.1:9092"}))
                .unwrap();
        assert_eq!(kafka.kind(), BrokerKind::Kafka);
        kafka.validate().unwrap();
        assert!(serde_json::from_value::<BrokerSpec>(json!({"name": "x", "kind": "pulsar", "url": "x"})).is_err());
    }

    #[test]
    fn bad_connections_name_their_field() {
        let fields =
            |spec: BrokerSpec| -> Vec<String> { spec.validate().unwrap_err().0.into_iter().map(|e| e.field).collect() };
        let kafka = |servers: &str, option: &str| BrokerSpec {
            name: "k".into(),
            connection: Connection::Kafka {
                bootstrap_servers: servers.into(),
                options: BTreeMap::from([(option.to_string(), "x".to_string())]),
            },
        };
        assert_eq!(fields(kafka("localhost", "client.id")), ["bootstrap_servers"]);
        assert_eq!(fields(kafka("a:1,b:2", "group.id")), ["options.group.id"]);
        let rabbit = BrokerSpec {
            name: " ".into(),
            connection: Connection::Rabbitmq {
                url: "http://x".into(),
                management_url: Some("amqp://x".into()),
            },
        };
        assert_eq!(fields(rabbit), ["name", "url", "management_url"]);
    }

    #[test]
    fn views_hide_passwords() {
        let spec = BrokerSpec {
            name: "mq".into(),
            connection: Connection::Rabbitmq {
                url: "amqp://guest:secret@h:5672/%2f".into(),
                management_url: Some("http://guest:secret@h:15672".into()),
            },
        };
        let shown = serde_json::to_string(&spec.redacted()).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("guest:***@h"), "{shown}");
    }
}
