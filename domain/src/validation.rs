//! Validation errors that name the field and say what to fix.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field at fault, as a JSON path (`backoff.initial_ms`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was reported, so validators can end with `errors.finish(value)`.
    pub fn finish<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

/// A name as the API documents names: at most `max` characters as sent, not
/// only spaces, no control characters. (Names are kept trimmed.)
pub fn is_printable_name(raw: &str, max: usize) -> bool {
    !raw.trim().is_empty() && raw.chars().count() <= max && !raw.chars().any(char::is_control)
}

/// Postgres `jsonb` refuses the NUL character, so no text that ends up in an
/// event may carry one.
pub fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod name_tests {
    use super::is_printable_name;

    #[test]
    fn names_are_measured_as_sent() {
        assert!(is_printable_name("shop", 4));
        assert!(is_printable_name(" 商店 ", 4));
        assert!(!is_printable_name(" shop", 4), "the space counts");
        assert!(!is_printable_name("\u{a0} ", 4), "only spaces");
        assert!(!is_printable_name("a\u{85}b", 4), "a control character");
        assert!(!is_printable_name("", 4));
    }
}
