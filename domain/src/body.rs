//! Message bodies travel inside JSON events byte for byte.
//!
//! A body is stored as text when it is valid UTF-8 without NUL (Postgres `jsonb`
//! refuses `\u0000`), otherwise as base64, so what the endpoint receives is
//! exactly what was produced.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The body as text when it is printable as such (for views and excerpts).
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok().filter(|text| !text.contains('\0'))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_text() {
            Some(text) => write!(f, "Body({text:?})"),
            None => write!(f, "Body({} bytes)", self.0.len()),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Bytes::from(bytes))
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Repr<T> {
    Text(T),
    Base64(T),
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_text() {
            Some(text) => Repr::Text(text).serialize(serializer),
            None => Repr::Base64(BASE64.encode(&self.0)).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Repr::<String>::deserialize(deserializer)? {
            Repr::Text(text) => Ok(Self(Bytes::from(text))),
            Repr::Base64(encoded) => BASE64.decode(encoded).map(Self::from).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> (serde_json::Value, Body) {
        let body = Body::from(bytes.to_vec());
        let json = serde_json::to_value(&body).unwrap();
        let back: Body = serde_json::from_value(json.clone()).unwrap();
        (json, back)
    }

    #[test]
    fn utf8_is_stored_as_text() {
        let (json, back) = round_trip("{\"城市\":\"上海\"}".as_bytes());
        assert_eq!(json, serde_json::json!({"text": "{\"城市\":\"上海\"}"}));
        assert_eq!(back.as_bytes(), "{\"城市\":\"上海\"}".as_bytes());
    }

    #[test]
    fn binary_and_nul_are_stored_as_base64_and_come_back_unchanged() {
        for bytes in [&[0xff, 0xfe, 0x00, 0x01][..], b"a\0b"] {
            let (json, back) = round_trip(bytes);
            assert!(json.get("base64").is_some(), "{json}");
            assert_eq!(back.as_bytes(), bytes);
        }
    }

    #[test]
    fn invalid_base64_is_an_error() {
        let err = serde_json::from_value::<Body>(serde_json::json!({"base64": "!!"}));
        assert!(err.is_err());
    }
}
