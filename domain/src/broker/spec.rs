use serde::{Deserialize, Serialize};

pub use crate::kinds::{BrokerKind, Connection};
use crate::ValidationErrors;

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
        self.connection.kind()
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !crate::validation::is_printable_name(&self.name, 128) {
            errors.add("name", "must be 1 to 128 printable characters");
        }
        self.connection.validate(&mut errors);
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
        copy.connection.map_secrets(&f);
        copy
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
}
