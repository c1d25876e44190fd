//! Messages written to a broker through Bida (`POST /v1/brokers/{id}/messages`):
//! the body, content type and headers every kind shares, and where each
//! goes in its kind's own fields (`topic` for Kafka, `routing_key` for
//! RabbitMQ, `subject` for NATS...). The `targets!` line is the one place
//! naming the kinds that can be written to; the others are refused by name.

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{activemq, builtin, fields, kafka, mqtt, nats, rabbitmq, redis, rocketmq, BrokerKind};
use crate::ValidationErrors;

/// At most this many messages per request.
pub const MAX_BATCH: usize = 1_000;

/// One message to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub body: Bytes,
    pub content_type: String,
    pub headers: BTreeMap<String, String>,
    pub target: Target,
}

macro_rules! targets {
    ($($variant:ident => $module:ident::$target:ident),+ $(,)?) => {
        /// Where a message goes, by kind.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(untagged)]
        pub enum Target {
            $($variant($module::$target)),+
        }

        impl Target {
            /// Where the message goes, as lists and filters name it (a topic,
            /// a subject, `exchange/routing_key`...).
            pub fn destination(&self) -> String {
                match self {
                    $(Self::$variant(target) => target.destination()),+
                }
            }
        }

        /// Whether Bida can write to this kind of broker.
        pub fn can_produce(kind: BrokerKind) -> bool {
            matches!(kind, $(BrokerKind::$variant)|+)
        }

        /// The kinds Bida writes to.
        pub const WRITABLE: &[BrokerKind] = &[$(BrokerKind::$variant),+];

        fn parse_target(
            kind: BrokerKind,
            context: &str,
            rest: Map<String, Value>,
            headers: &BTreeMap<String, String>,
            errors: &mut ValidationErrors,
        ) -> Option<Target> {
            match kind {
                $(BrokerKind::$variant => {
                    let target: $module::$target = fields::parse_as(kind, context, "message", rest, errors)?;
                    target.validate(&prefix(context), errors);
                    // The kind's own `check_headers` where it has one (an
                    // inherent method wins over the trait's), else none.
                    target.check_headers(headers, &prefix(context), errors);
                    Some(Target::$variant(target))
                })+
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }

        /// Every writable kind's fields, for the API document.
        #[cfg(feature = "openapi")]
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        #[serde(untagged)]
        pub enum AnyTarget {
            $($variant($module::$target)),+
        }
    };
}

targets! {
    Kafka => kafka::KafkaTarget,
    Rabbitmq => rabbitmq::RabbitmqTarget,
    Nats => nats::NatsTarget,
    Redis => redis::RedisTarget,
    Mqtt => mqtt::MqttTarget,
    Activemq => activemq::ActivemqTarget,
    Rocketmq => rocketmq::RocketmqTarget,
    Builtin => builtin::BuiltinTarget,
}

/// Headers every kind takes as they are, unless its target has a
/// `check_headers` of its own (Redis entry fields, STOMP headers and
/// RocketMQ properties keep some names for themselves).
trait AnyHeaders {
    fn check_headers(&self, _headers: &BTreeMap<String, String>, _context: &str, _errors: &mut ValidationErrors) {}
}

impl<T> AnyHeaders for T {}

/// The kinds Bida writes to, for people: `Kafka, RabbitMQ, ...`.
fn writable_titles() -> String {
    WRITABLE.iter().map(|kind| kind.title()).collect::<Vec<_>>().join(", ")
}

fn prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}.")
    }
}

/// A request's messages, and whether it sent them as a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub messages: Vec<Outgoing>,
    pub batch: bool,
}

impl Request {
    /// How errors name a field of message `index`: `topic`, or
    /// `messages[2].topic` in a batch.
    pub fn field(&self, index: usize, name: &str) -> String {
        if self.batch {
            format!("messages[{index}].{name}")
        } else {
            name.to_string()
        }
    }
}

/// A kind of broker Bida does not write to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Bida cannot write to {} brokers (only to {})", .0.title(), writable_titles())]
pub struct CannotProduce(pub BrokerKind);

/// The messages of a request: one message object, or `{"messages": [...]}`.
/// Every mistake is named (`topic`, or `messages[2].topic` in a batch).
pub fn parse_request(
    kind: BrokerKind,
    request: Value,
    errors: &mut ValidationErrors,
) -> Result<Request, CannotProduce> {
    if !can_produce(kind) {
        return Err(CannotProduce(kind));
    }
    let Value::Object(mut request) = request else {
        errors.add("body", "must be a message object, or {\"messages\": [...]}");
        return Ok(Request::default());
    };
    let is_batch = request.contains_key("messages");
    let batch = match request.remove("messages") {
        Some(Value::Array(messages)) => {
            if let Some(other) = request.keys().next() {
                errors.add(other.clone(), "a batch takes only `messages`");
            }
            if messages.is_empty() || messages.len() > MAX_BATCH {
                errors.add("messages", format!("must hold 1 to {MAX_BATCH} messages"));
            }
            messages
                .into_iter()
                .enumerate()
                .map(|(index, message)| (format!("messages[{index}]"), message))
                .collect()
        }
        Some(_) => {
            errors.add("messages", "must be an array of messages");
            Vec::new()
        }
        None => vec![(String::new(), Value::Object(request))],
    };
    let mut messages = Vec::with_capacity(batch.len());
    for (context, message) in batch {
        if let Some(message) = parse_message(kind, &context, message, errors) {
            messages.push(message);
        }
    }
    Ok(Request {
        messages,
        batch: is_batch,
    })
}

fn parse_message(kind: BrokerKind, context: &str, message: Value, errors: &mut ValidationErrors) -> Option<Outgoing> {
    let field = |name: &str| format!("{}{name}", prefix(context));
    let Value::Object(mut fields) = message else {
        errors.add(context.to_string(), "must be a message object");
        return None;
    };
    let json = fields.remove("body");
    let base64 = fields.remove("body_base64");
    let content_type = fields.remove("content_type");
    let headers = fields.remove("headers");
    let before = errors.0.len();
    let (body, default_type) = match (json, base64) {
        (Some(_), Some(_)) => {
            errors.add(field("body"), "give `body` (JSON) or `body_base64` (bytes), not both");
            (Bytes::new(), "")
        }
        (None, None) => {
            errors.add(field("body"), "is required: `body` (JSON) or `body_base64` (bytes)");
            (Bytes::new(), "")
        }
        (Some(json), None) => (Bytes::from(json.to_string()), "application/json"),
        (None, Some(Value::String(text))) => match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            Ok(bytes) => (Bytes::from(bytes), "application/octet-stream"),
            Err(e) => {
                errors.add(field("body_base64"), format!("is not base64: {e}"));
                (Bytes::new(), "")
            }
        },
        (None, Some(_)) => {
            errors.add(field("body_base64"), "must be a base64 string");
            (Bytes::new(), "")
        }
    };
    let content_type = match content_type {
        None => default_type.to_string(),
        Some(Value::String(text)) if http_header_value(&text) && !text.is_empty() => text,
        Some(_) => {
            errors.add(field("content_type"), "must be a media type (application/json)");
            String::new()
        }
    };
    let headers = match headers {
        None => BTreeMap::new(),
        Some(Value::Object(headers)) => {
            let mut out = BTreeMap::new();
            for (name, value) in headers {
                match value {
                    Value::String(text) if !name.is_empty() && http_header_value(&text) => {
                        out.insert(name, text);
                    }
                    _ => errors.add(
                        field(&format!("headers.{name}")),
                        "headers are named text values without control characters",
                    ),
                }
            }
            out
        }
        Some(_) => {
            errors.add(field("headers"), "must be an object of text values");
            BTreeMap::new()
        }
    };
    let target = parse_target(kind, context, fields, &headers, errors);
    (errors.0.len() == before).then_some(Outgoing {
        body,
        content_type,
        headers,
        target: target?,
    })
}

fn http_header_value(text: &str) -> bool {
    !text.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &ValidationErrors) -> Vec<&str> {
        errors.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn one_message_or_a_batch_with_the_kinds_own_fields() {
        let mut errors = ValidationErrors::default();
        let one = parse_request(
            BrokerKind::Kafka,
            json!({"topic": "orders", "key": "k", "body": {"n": 1}, "headers": {"h": "v"}}),
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((one.batch, one.field(0, "topic")), (false, "topic".to_string()));
        let one = one.messages;
        assert_eq!(&one[0].body[..], br#"{"n":1}"#);
        assert_eq!(one[0].content_type, "application/json");
        assert_eq!(one[0].headers["h"], "v");
        let Target::Kafka(target) = &one[0].target else {
            panic!("a Kafka target")
        };
        assert_eq!((target.topic.as_str(), target.key.as_deref()), ("orders", Some("k")));

        let batch = parse_request(
            BrokerKind::Rabbitmq,
            json!({"messages": [
                {"routing_key": "q", "body_base64": "AP8=", "content_type": "image/x"},
                {"routing_key": "q", "exchange": "ex", "persistent": false, "body": "text"},
            ]}),
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(batch.field(1, "routing_key"), "messages[1].routing_key");
        let batch = batch.messages;
        assert_eq!(
            (&batch[0].body[..], batch[0].content_type.as_str()),
            (&[0u8, 255][..], "image/x")
        );
        assert_eq!(&batch[1].body[..], br#""text""#);
        let Target::Rabbitmq(second) = &batch[1].target else {
            panic!("a RabbitMQ target")
        };
        assert!(!second.persistent && second.exchange == "ex");
    }

    #[test]
    fn mistakes_are_named_and_other_kinds_refused() {
        let mut errors = ValidationErrors::default();
        let none = parse_request(
            BrokerKind::Kafka,
            json!({"messages": [
                {"topic": "t", "body": 1},
                {"topic": "t", "body": 1, "body_base64": "AA=="},
                {"body": 1, "colour": "red"},
                {"topic": "t", "body_base64": "not base64!"},
                {"topic": "bad topic", "partition": -1, "body": 1},
            ]}),
            &mut errors,
        )
        .unwrap();
        assert_eq!(none.messages.len(), 1, "only the good one parsed");
        assert_eq!(
            fields(&errors),
            [
                "messages[1].body",
                "messages[2].colour",
                "messages[2].topic",
                "messages[3].body_base64",
                "messages[4].topic",
                "messages[4].partition"
            ]
        );
        assert!(errors.0[1].message.contains("colour"), "{errors:?}");
        let mut errors = ValidationErrors::default();
        parse_request(BrokerKind::Kafka, json!({"messages": []}), &mut errors).unwrap();
        assert_eq!(fields(&errors), ["messages"]);
        assert!(
            BrokerKind::ALL.iter().all(|kind| can_produce(*kind)),
            "every kind is written to"
        );
        let mut errors = ValidationErrors::default();
        parse_request(BrokerKind::Rabbitmq, json!({"body": 1}), &mut errors).unwrap();
        assert_eq!(fields(&errors), ["routing_key"]);
    }

    #[test]
    fn every_kind_takes_its_own_fields_and_names_its_mistakes() {
        let cases = [
            (
                BrokerKind::Nats,
                json!({"subject": "orders.paid", "msg_id": "m-1", "body": 1}),
                vec![],
            ),
            (
                BrokerKind::Nats,
                json!({"subject": "orders.*", "body": 1}),
                vec!["subject"],
            ),
            (
                BrokerKind::Nats,
                json!({"subject": "a", "body": 1, "headers": {"a b": "x"}}),
                vec!["headers.a b"],
            ),
            (
                BrokerKind::Redis,
                json!({"stream": "s", "key": "k", "id": "5-1", "maxlen": 10, "body": 1}),
                vec![],
            ),
            (
                BrokerKind::Redis,
                json!({"stream": "s", "id": "x-1", "maxlen": 0, "body": 1}),
                vec!["id", "maxlen"],
            ),
            (
                BrokerKind::Redis,
                json!({"stream": "s", "body": 1, "headers": {"body": "x", "trace": "t"}}),
                vec!["headers.body"],
            ),
            (
                BrokerKind::Mqtt,
                json!({"topic": "a/b", "qos": 2, "retain": true, "body": 1}),
                vec![],
            ),
            (
                BrokerKind::Mqtt,
                json!({"topic": "a/#", "qos": 3, "body": 1}),
                vec!["topic", "qos"],
            ),
            (
                BrokerKind::Activemq,
                json!({"queue": "orders", "priority": 9, "body": 1}),
                vec![],
            ),
            (
                BrokerKind::Activemq,
                json!({"virtual_topic": "orders", "body": 1, "headers": {"x": "y"}}),
                vec![],
            ),
            (BrokerKind::Activemq, json!({"body": 1}), vec!["queue"]),
            (
                BrokerKind::Activemq,
                json!({"queue": "a", "topic": "b", "priority": 10, "body": 1}),
                vec!["queue", "priority"],
            ),
            (
                BrokerKind::Activemq,
                json!({"queue": "a", "body": 1, "headers": {"Persistent": "x"}}),
                vec!["headers.Persistent"],
            ),
            (
                BrokerKind::Rocketmq,
                json!({"topic": "t", "tags": "paid", "keys": "k1 k2", "sharding_key": "s", "body": 1}),
                vec![],
            ),
            (
                BrokerKind::Rocketmq,
                json!({"topic": "a b", "tags": "a || b", "body": 1, "headers": {"KEYS": "k"}}),
                vec!["topic", "tags", "headers.KEYS"],
            ),
        ];
        for (kind, request, expected) in cases {
            let mut errors = ValidationErrors::default();
            let parsed = parse_request(kind, request.clone(), &mut errors).unwrap();
            assert_eq!(fields(&errors), expected, "{kind:?} {request}");
            assert_eq!(parsed.messages.len(), usize::from(expected.is_empty()), "{request}");
        }
        let mut errors = ValidationErrors::default();
        let parsed = parse_request(BrokerKind::Mqtt, json!({"topic": "a", "body": 1}), &mut errors).unwrap();
        let Target::Mqtt(target) = &parsed.messages[0].target else {
            panic!("an MQTT target")
        };
        assert_eq!((target.qos, target.retain), (1, false), "QoS 1 unless asked");
        assert_eq!(parsed.messages[0].target.destination(), "a");
        let parsed = parse_request(
            BrokerKind::Activemq,
            json!({"virtual_topic": "o", "body": 1}),
            &mut errors,
        )
        .unwrap();
        let Target::Activemq(target) = &parsed.messages[0].target else {
            panic!("an ActiveMQ target")
        };
        assert_eq!(target.stomp_destination(), "/topic/VirtualTopic.o");
        assert!(target.persistent);
        assert!(CannotProduce(BrokerKind::Kafka)
            .to_string()
            .contains("Kafka, RabbitMQ, NATS"));
    }
}
