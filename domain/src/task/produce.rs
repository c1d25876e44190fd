//! Tasks whose delivery is a write to a registered broker: the delayed
//! messages of `POST /v1/brokers/{id}/messages` with `deliver_at` or
//! `delay_ms`. They are callback tasks in every other way (durable schedule,
//! retries, dead letters, cancel, statistics), so only the attempt differs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Body;

/// The scheme of a broker-writing task's `url`, which lists and the console
/// show: `broker://<broker id>/<destination>`.
pub const BROKER_SCHEME: &str = "broker";

/// Where a task writes, and the message's fields besides its body (the body
/// is the task's request body, where search and the console find it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProduceSpec {
    pub broker_id: String,
    /// A topic, a subject, `exchange/routing_key`...: as the kind names it.
    pub destination: String,
    /// The kind's own fields, `content_type` and `headers`, as given.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub message: Map<String, Value>,
}

impl ProduceSpec {
    /// The task's `url`: where it writes, as one text.
    pub fn locator(&self) -> String {
        format!("{BROKER_SCHEME}://{}/{}", self.broker_id, self.destination)
    }

    /// The broker id and destination of a task `url` made by
    /// [`ProduceSpec::locator`]; none for another task's.
    pub fn parse_locator(url: &str) -> Option<(&str, &str)> {
        url.strip_prefix(BROKER_SCHEME)?.strip_prefix("://")?.split_once('/')
    }

    /// The message as the produce route takes it, body included.
    pub fn request(&self, body: Option<&Body>) -> Value {
        use base64::Engine;
        let mut message = self.message.clone();
        let bytes = body.map_or(&[][..], Body::as_bytes);
        message.insert(
            "body_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        );
        Value::Object(message)
    }
}

/// Broker-writing tasks, optionally of one broker and one destination: a
/// match on their `url`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducedTo {
    pub broker_id: Option<String>,
    pub destination: Option<String>,
}

impl ProducedTo {
    /// A SQL `LIKE` pattern (escape character `\`) for the `url` of the tasks it names.
    pub fn like_pattern(&self) -> String {
        fn escape(text: &str) -> String {
            text.chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect()
        }
        let broker = self.broker_id.as_deref().map_or("%".to_string(), escape);
        let destination = self.destination.as_deref().map_or("%".to_string(), escape);
        format!("{BROKER_SCHEME}://{broker}/{destination}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn the_message_comes_back_with_its_body_and_its_place_in_one_text() {
        let spec = ProduceSpec {
            broker_id: "orders-kafka".into(),
            destination: "orders".into(),
            message: json!({"topic": "orders", "key": "k", "content_type": "application/json"})
                .as_object()
                .unwrap()
                .clone(),
        };
        assert_eq!(spec.locator(), "broker://orders-kafka/orders");
        assert_eq!(
            ProduceSpec::parse_locator(&spec.locator()),
            Some(("orders-kafka", "orders"))
        );
        assert_eq!(ProduceSpec::parse_locator("https://orders-kafka/orders"), None);
        let request = spec.request(Some(&Body(Bytes::from_static(b"{\"n\":1}"))));
        assert_eq!(request["body_base64"], "eyJuIjoxfQ==");
        assert_eq!(request["key"], "k");
    }

    #[test]
    fn patterns_escape_what_like_reads() {
        let all = ProducedTo::default();
        assert_eq!(all.like_pattern(), "broker://%/%");
        let one = ProducedTo {
            broker_id: Some("b_1".into()),
            destination: Some("100%".into()),
        };
        assert_eq!(one.like_pattern(), r"broker://b\_1/100\%");
        let topic = ProducedTo {
            broker_id: None,
            destination: Some("orders".into()),
        };
        assert_eq!(topic.like_pattern(), "broker://%/orders");
    }
}
