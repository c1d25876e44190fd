//! Messages written to a broker through Bida (`POST /v1/brokers/{id}/messages`):
//! the body, content type and headers every kind shares, and where each
//! goes in its kind's own fields (`topic` for Kafka, `routing_key` for
//! RabbitMQ...). The `targets!` line is the one place naming the kinds that
//! can be written to; the others are refused by name.

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{fields, kafka, rabbitmq, BrokerKind};
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

        /// Whether Bida can write to this kind of broker.
        pub fn can_produce(kind: BrokerKind) -> bool {
            matches!(kind, $(BrokerKind::$variant)|+)
        }

        fn parse_target(kind: BrokerKind, context: &str, rest: Map<String, Value>, errors: &mut ValidationErrors) -> Option<Target> {
            match kind {
                $(BrokerKind::$variant => {
                    let target: $module::$target = fields::parse_as(kind, context, "message", rest, errors)?;
                    target.validate(&prefix(context), errors);
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
#[error("Bida cannot write to {} brokers yet (Kafka and RabbitMQ only)", .0.title())]
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
    let target = parse_target(kind, context, fields, errors);
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
        assert!(parse_request(BrokerKind::Nats, json!({"body": 1}), &mut errors).is_err());
        let mut errors = ValidationErrors::default();
        parse_request(BrokerKind::Rabbitmq, json!({"body": 1}), &mut errors).unwrap();
        assert_eq!(fields(&errors), ["routing_key"]);
    }
}
