//! A kind's own struct from a client's fields, with every mistake named: a
//! field the kind does not take (another kind's, a typo) is reported and left
//! out, so that the fields it does take are still checked.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use super::BrokerKind;
use crate::ValidationErrors;

/// `context` is the field the settings sit in (`source`), or empty when they
/// are the top level of the request (a broker's settings).
pub(super) fn parse<T: DeserializeOwned>(
    kind: BrokerKind,
    context: &str,
    fields: Map<String, Value>,
    errors: &mut ValidationErrors,
) -> Option<T> {
    let what = if context.is_empty() { "broker" } else { context };
    parse_as(kind, context, what, fields, errors)
}

/// [`parse`], naming the thing the fields describe (`message`) in errors.
pub(super) fn parse_as<T: DeserializeOwned>(
    kind: BrokerKind,
    context: &str,
    what: &str,
    mut fields: Map<String, Value>,
    errors: &mut ValidationErrors,
) -> Option<T> {
    let known = field_names::<T>();
    let unknown: Vec<String> = fields
        .keys()
        .filter(|name| !known.contains(&name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        let takes = known.join(", ");
        for name in &unknown {
            fields.remove(name);
            let field = if context.is_empty() {
                name.clone()
            } else {
                format!("{context}.{name}")
            };
            errors.add(
                field,
                format!("`{name}` is not a field of a {} {what}; it takes {takes}", kind.title()),
            );
        }
    }
    match serde_path_to_error::deserialize::<_, T>(Value::Object(fields)) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            // The field at fault by name: a value of the wrong type at its
            // path, a required one left out (or cleared by a patch) as itself.
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let name = match missing {
                Some(name) => Some(name.to_string()),
                None if path != "." && !path.is_empty() => Some(path),
                None => None,
            };
            let field = match (name, context.is_empty()) {
                (Some(name), true) => name,
                (Some(name), false) => format!("{context}.{name}"),
                (None, true) => "kind".to_string(),
                (None, false) => context.to_string(),
            };
            errors.add(field, message);
            None
        }
    }
}

/// The field names a derived struct deserialises (serde hands them to the
/// deserializer; this one only catches them).
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut caught = None;
    let _ = T::deserialize(FieldCatcher(&mut caught));
    caught.unwrap_or(&[])
}

struct FieldCatcher<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldCatcher<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields caught"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Names every header of a message that `refused` says no to, with `why`
/// (a name the kind keeps for itself, or cannot carry).
pub(super) fn refuse_headers(
    headers: &std::collections::BTreeMap<String, String>,
    context: &str,
    errors: &mut crate::ValidationErrors,
    refused: impl Fn(&str) -> bool,
    why: &str,
) {
    for name in headers.keys().filter(|name| refused(name)) {
        errors.add(format!("{context}headers.{name}"), why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        queue: Option<String>,
        declare: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Required {
        url: String,
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut errors = ValidationErrors::default();
        assert!(parse::<Required>(BrokerKind::Rabbitmq, "", serde_json::Map::new(), &mut errors).is_none());
        assert_eq!(errors.0[0].field, "url");
    }

    #[test]
    fn knows_a_structs_fields() {
        assert_eq!(field_names::<Sample>(), ["queue", "declare"]);
    }

    #[test]
    fn names_foreign_fields_and_checks_the_rest() {
        let mut errors = ValidationErrors::default();
        let fields = serde_json::json!({"queue": "q", "topics": ["t"]});
        let parsed: Option<Sample> = parse(
            BrokerKind::Rabbitmq,
            "source",
            fields.as_object().unwrap().clone(),
            &mut errors,
        );
        assert_eq!(parsed.unwrap().queue.as_deref(), Some("q"));
        let reported: Vec<_> = errors
            .0
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            reported,
            [(
                "source.topics",
                "`topics` is not a field of a RabbitMQ source; it takes queue, declare"
            )]
        );
        let mut errors = ValidationErrors::default();
        let wrong = serde_json::json!({"declare": "yes"});
        assert!(parse::<Sample>(
            BrokerKind::Rabbitmq,
            "source",
            wrong.as_object().unwrap().clone(),
            &mut errors
        )
        .is_none());
        // A value of the wrong type is named by its field.
        assert_eq!(errors.0[0].field, "source.declare");
    }
}
