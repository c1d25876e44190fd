//! The broker kinds Bida consumes from. Each kind is one module here (how to
//! reach its broker, what a consumer reads from it, and what it can do) and
//! one folder in the runtime; the `kinds!` line below is the only place that
//! names them all. The enums it generates keep the API's and the event
//! store's shape: `{"kind": "kafka", ...the kind's own fields}`.

pub mod activemq;
pub mod builtin;
mod fields;
pub mod kafka;
pub mod mqtt;
pub mod nats;
mod position;
pub mod produce;
pub mod rabbitmq;
pub mod redis;
pub mod rocketmq;

pub use position::{Offset, Position};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ValidationErrors;

/// What a kind of broker can do beyond delivering its messages. The API
/// answers a clear problem for what a kind cannot do, and the console hides
/// its button.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capabilities {
    /// The broker tells how many messages wait for a consumer.
    pub lag: bool,
    /// A consumer's position can be moved to the start, the end, a time or offsets.
    pub offset_reset: bool,
    /// A range of past messages can be read again and resent.
    pub resend_range: bool,
    /// Messages carry keys, so `ordering: key` orders each key's messages.
    pub keys: bool,
    /// What a node leaves unacknowledged (and, for brokers that assign
    /// messages to members ahead, its share) goes to the other nodes when it
    /// leaves; without it, it waits for that node to come back.
    pub takeover: bool,
}

/// A setting as the console's forms ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormField {
    /// The field's name in the API.
    pub name: &'static str,
    /// Its label, in English and in Chinese.
    pub label: (&'static str, &'static str),
    /// A value to show as the placeholder.
    pub example: &'static str,
    /// A list, written separated by commas.
    pub list: bool,
}

impl FormField {
    pub const fn text(name: &'static str, label: (&'static str, &'static str), example: &'static str) -> Self {
        Self {
            name,
            label,
            example,
            list: false,
        }
    }

    pub const fn list(name: &'static str, label: (&'static str, &'static str), example: &'static str) -> Self {
        Self {
            name,
            label,
            example,
            list: true,
        }
    }

    /// The API value of what a form sent: nothing when empty, a list split
    /// at commas for lists.
    pub fn value(&self, text: &str) -> Option<serde_json::Value> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(if self.list {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| serde_json::Value::String(item.to_string()))
                .collect()
        } else {
            serde_json::Value::String(text.to_string())
        })
    }
}

/// How to reach one kind of broker.
pub trait ConnectionSpec: Clone + Serialize + DeserializeOwned {
    fn validate(&self, errors: &mut ValidationErrors);
    /// Every credential replaced by `f` of it: sealed for the event store,
    /// opened for a connection, hidden for a view.
    fn map_secrets(&mut self, f: &dyn Fn(&str) -> String);
}

/// What a consumer reads from one kind of broker.
pub trait SourceSpec: Clone + Serialize + DeserializeOwned {
    /// The source as a client writes it; its struct refuses other fields.
    type Input: DeserializeOwned + Default;
    fn from_input(input: Self::Input, errors: &mut ValidationErrors) -> Self;
    /// Whether it reads this destination (topic, queue, stream...).
    fn reads(&self, destination: &str) -> bool;
    /// The destinations it reads, for telemetry and listings.
    fn destinations(&self) -> Vec<String>;
    /// A name two consumers of one broker must not share, or each would get
    /// only part of the messages (a Kafka group).
    fn exclusive_group(&self) -> Option<&str> {
        None
    }
}

macro_rules! kinds {
    ($($variant:ident = $name:literal, $title:literal: $module:ident::{$connection:ident, $source:ident, $input:ident}),+ $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum BrokerKind {
            $($variant),+
        }

        impl BrokerKind {
            pub const ALL: &'static [BrokerKind] = &[$(BrokerKind::$variant),+];

            /// Its name in the API and in telemetry (`messaging.system`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }

            /// Its name for people.
            pub fn title(self) -> &'static str {
                match self {
                    $(Self::$variant => $title),+
                }
            }

            pub fn capabilities(self) -> Capabilities {
                match self {
                    $(Self::$variant => $module::CAPABILITIES),+
                }
            }

            /// The settings the console asks for to register a broker.
            pub fn connection_form(self) -> &'static [FormField] {
                match self {
                    $(Self::$variant => $module::CONNECTION_FORM),+
                }
            }

            /// Whether brokers of this kind are registered: the built-in
            /// broker, which asks for no settings, is always there.
            pub fn registered(self) -> bool {
                !self.connection_form().is_empty()
            }

            /// The fields the console asks for a consumer's source.
            pub fn source_form(self) -> &'static [FormField] {
                match self {
                    $(Self::$variant => $module::SOURCE_FORM),+
                }
            }
        }

        /// How to reach the broker, by kind.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(remote = "Self", tag = "kind", rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum Connection {
            $($variant($module::$connection)),+
        }

        tagged_by_name!(Connection, "kind");

        impl Connection {
            pub fn kind(&self) -> BrokerKind {
                match self {
                    $(Self::$variant(_) => BrokerKind::$variant),+
                }
            }

            pub fn validate(&self, errors: &mut ValidationErrors) {
                match self {
                    $(Self::$variant(connection) => connection.validate(errors)),+
                }
            }

            pub fn map_secrets(&mut self, f: &dyn Fn(&str) -> String) {
                match self {
                    $(Self::$variant(connection) => connection.map_secrets(f)),+
                }
            }

            fn parse_settings(
                kind: BrokerKind,
                settings: serde_json::Map<String, serde_json::Value>,
                errors: &mut ValidationErrors,
            ) -> Option<Self> {
                match kind {
                    $(BrokerKind::$variant => fields::parse::<$module::$connection>(kind, "", settings, errors).map(Self::$variant)),+
                }
            }
        }

        /// Where a consumer reads from.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum Source {
            $($variant($module::$source)),+
        }

        impl Source {
            pub fn kind(&self) -> BrokerKind {
                match self {
                    $(Self::$variant(_) => BrokerKind::$variant),+
                }
            }

            /// Validates a client's source against the broker's kind.
            pub fn from_input(kind: BrokerKind, input: SourceInput, errors: &mut ValidationErrors) -> Option<Self> {
                match kind {
                    $(BrokerKind::$variant => fields::parse::<$module::$input>(kind, "source", input.0, errors)
                        .map(|input| Self::$variant(<$module::$source as SourceSpec>::from_input(input, errors)))),+
                }
            }

            fn spec(&self) -> &dyn SourceView {
                match self {
                    $(Self::$variant(source) => source),+
                }
            }
        }

        /// Form fields that name no field of their kind's struct.
        #[cfg(test)]
        fn misnamed_form_fields() -> Vec<String> {
            let mut wrong = Vec::new();
            $(
                let known = fields::field_names::<$module::$connection>();
                let taken = fields::field_names::<$module::$input>();
                for field in $module::CONNECTION_FORM.iter().filter(|f| !known.contains(&f.name)) {
                    wrong.push(format!("{} connection: {}", $name, field.name));
                }
                for field in $module::SOURCE_FORM.iter().filter(|f| !taken.contains(&f.name)) {
                    wrong.push(format!("{} source: {}", $name, field.name));
                }
            )+
            wrong
        }

        /// Every kind's source input, for the API document: which one applies
        /// depends on the broker's kind.
        #[cfg(feature = "openapi")]
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        #[serde(untagged)]
        enum AnySourceInput {
            $($variant($module::$input)),+
        }
    };
}

kinds! {
    Kafka = "kafka", "Kafka": kafka::{KafkaConnection, KafkaSource, KafkaSourceInput},
    Rabbitmq = "rabbitmq", "RabbitMQ": rabbitmq::{RabbitmqConnection, RabbitmqSource, RabbitmqSourceInput},
    Nats = "nats", "NATS JetStream": nats::{NatsConnection, NatsSource, NatsSourceInput},
    Redis = "redis", "Redis Streams": redis::{RedisConnection, RedisSource, RedisSourceInput},
    Mqtt = "mqtt", "MQTT 5": mqtt::{MqttConnection, MqttSource, MqttSourceInput},
    Activemq = "activemq", "ActiveMQ": activemq::{ActivemqConnection, ActivemqSource, ActivemqSourceInput},
    Rocketmq = "rocketmq", "RocketMQ": rocketmq::{RocketmqConnection, RocketmqSource, RocketmqSourceInput},
    Builtin = "builtin", "Bida topics": builtin::{BuiltinConnection, BuiltinSource, BuiltinSourceInput},
}

/// [`SourceSpec`]'s questions, object-safe.
trait SourceView {
    fn reads(&self, destination: &str) -> bool;
    fn destinations(&self) -> Vec<String>;
    fn exclusive_group(&self) -> Option<&str>;
}

impl<T: SourceSpec> SourceView for T {
    fn reads(&self, destination: &str) -> bool {
        SourceSpec::reads(self, destination)
    }
    fn destinations(&self) -> Vec<String> {
        SourceSpec::destinations(self)
    }
    fn exclusive_group(&self) -> Option<&str> {
        SourceSpec::exclusive_group(self)
    }
}

impl Source {
    /// Whether it reads this destination (a Kafka topic, a RabbitMQ queue...).
    pub fn reads(&self, destination: &str) -> bool {
        self.spec().reads(destination)
    }

    pub fn destinations(&self) -> Vec<String> {
        self.spec().destinations()
    }

    /// A name two consumers of one broker must not share.
    pub fn exclusive_group(&self) -> Option<&str> {
        self.spec().exclusive_group()
    }
}

impl Connection {
    /// The connection with a partial change applied (`PATCH /v1/brokers/{id}`):
    /// each named setting replaced, `null` or `""` clearing an optional one.
    /// A setting of another kind is refused by name.
    pub fn patched(
        &self,
        settings: serde_json::Map<String, serde_json::Value>,
        errors: &mut ValidationErrors,
    ) -> Option<Self> {
        let kind = self.kind();
        let serde_json::Value::Object(mut current) = serde_json::to_value(self).ok()? else {
            return None;
        };
        for (name, value) in settings {
            if name == "kind" {
                if value.as_str() != Some(kind.as_str()) {
                    errors.add("kind", "a broker's kind cannot change; register a new broker");
                }
                continue;
            }
            match value {
                serde_json::Value::Null => {
                    current.remove(&name);
                }
                serde_json::Value::String(text) if text.is_empty() => {
                    current.remove(&name);
                }
                value => {
                    current.insert(name, value);
                }
            }
        }
        current.remove("kind");
        Self::parse_settings(kind, current, errors)
    }
}

/// The source as a client writes it: the fields of the broker's kind
/// (`{"queue": "q"}` for RabbitMQ, `{"topics": ["t"], "group": "g"}` for
/// Kafka...), checked once the broker, and so the kind, is known.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = AnySourceInput))]
pub struct SourceInput(pub serde_json::Map<String, serde_json::Value>);

impl SourceInput {
    pub fn validate(self, kind: BrokerKind, errors: &mut ValidationErrors) -> Option<Source> {
        Source::from_input(kind, self, errors)
    }
}

/// Names for destinations and groups: not blank, no control characters, at
/// most 249 bytes (Kafka's limit, and plenty for the others).
pub(crate) fn is_destination_name(text: &str) -> bool {
    !text.trim().is_empty() && text.len() <= 249 && !text.chars().any(char::is_control)
}

/// `host:port`.
pub(crate) fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// A URL with its password replaced by `f` of it.
pub(crate) fn map_url_password(text: &str, f: &dyn Fn(&str) -> String) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) => match parsed.password().map(f) {
            Some(new) if parsed.set_password(Some(&new)).is_ok() => parsed.to_string(),
            _ => text.to_string(),
        },
        _ => text.to_string(),
    }
}

/// Whether `text` is a URL with one of `schemes` and a host.
pub(crate) fn is_url(text: &str, schemes: &[&str]) -> bool {
    url::Url::parse(text).is_ok_and(|u| schemes.contains(&u.scheme()) && u.host_str().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_shapes_read_as_before() {
        let source: Source = serde_json::from_value(json!({"kind": "kafka", "topics": ["t"], "group": "g"})).unwrap();
        assert_eq!(source.kind(), BrokerKind::Kafka);
        assert_eq!(source.exclusive_group(), Some("g"));
        assert_eq!(
            serde_json::to_value(&source).unwrap(),
            json!({"kind": "kafka", "topics": ["t"], "group": "g", "start": "earliest"})
        );
        let queue: Source = serde_json::from_value(json!({"kind": "rabbitmq", "queue": "q"})).unwrap();
        assert!(queue.reads("q") && queue.exclusive_group().is_none());
        let connection: Connection =
            serde_json::from_value(json!({"kind": "rabbitmq", "url": "amqp://h/%2f"})).unwrap();
        assert_eq!(
            serde_json::to_value(&connection).unwrap(),
            json!({"kind": "rabbitmq", "url": "amqp://h/%2f"})
        );
    }

    #[test]
    fn a_patch_changes_what_it_names_and_refuses_other_kinds_settings() {
        let connection: Connection = serde_json::from_value(
            json!({"kind": "rabbitmq", "url": "amqp://h/%2f", "management_url": "http://h:15672"}),
        )
        .unwrap();
        let mut errors = ValidationErrors::default();
        let patch = json!({"url": "amqp://other/%2f", "management_url": ""});
        let patched = connection
            .patched(patch.as_object().unwrap().clone(), &mut errors)
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            serde_json::to_value(&patched).unwrap(),
            json!({"kind": "rabbitmq", "url": "amqp://other/%2f"})
        );
        let foreign = json!({"bootstrap_servers": "k:9092", "kind": "kafka"});
        connection.patched(foreign.as_object().unwrap().clone(), &mut errors);
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["kind", "bootstrap_servers"]);
    }

    #[test]
    fn every_kind_names_itself_and_says_what_it_can_do() {
        for kind in BrokerKind::ALL {
            let parsed: BrokerKind = serde_json::from_value(json!(kind.as_str())).unwrap();
            assert_eq!(parsed, *kind);
            assert!(!kind.title().is_empty());
            let _ = kind.capabilities();
            assert!(!kind.source_form().is_empty());
            assert_eq!(kind.registered(), *kind != BrokerKind::Builtin);
        }
        assert!(misnamed_form_fields().is_empty(), "{:?}", misnamed_form_fields());
    }
}
