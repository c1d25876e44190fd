//! Sets of HTTP status codes written the way operators say them:
//! `"5xx"`, `"429"`, `"500-504"`, as a list or one comma-separated string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
    spelled: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a status code pattern; use a code (429), a class (5xx) or a range (500-504) between 100 and 599")]
pub struct StatusPatternError(pub String);

impl StatusSet {
    /// Patterns as written by hand (a config's comma-separated text): each
    /// is trimmed, empty ones are skipped.
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, StatusPatternError> {
        Self::parse_exact(patterns.into_iter().map(str::trim).filter(|p| !p.is_empty()))
    }

    /// Patterns exactly as given (a JSON list), each one of [`PATTERN`].
    pub fn parse_exact<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, StatusPatternError> {
        let mut set = Self {
            ranges: Vec::new(),
            spelled: Vec::new(),
        };
        for pattern in patterns {
            set.ranges.push(parse_pattern(pattern)?);
            set.spelled.push(pattern.to_ascii_lowercase());
        }
        Ok(set)
    }

    /// `2xx`: what counts as success unless a task says otherwise.
    pub fn success() -> Self {
        Self::from_static(&[("2xx", (200, 299))])
    }

    /// Retried by default: server errors, request timeout, too many requests.
    pub fn default_retry_on() -> Self {
        Self::from_static(&[("5xx", (500, 599)), ("408", (408, 408)), ("429", (429, 429))])
    }

    fn from_static(patterns: &[(&str, (u16, u16))]) -> Self {
        Self {
            ranges: patterns.iter().map(|(_, range)| *range).collect(),
            spelled: patterns.iter().map(|(text, _)| text.to_string()).collect(),
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(low, high)| (low..=high).contains(&status))
    }

    pub fn patterns(&self) -> &[String] {
        &self.spelled
    }
}

/// One pattern, as the API document states it: a code, a class or a range
/// (its ends in either order), from 100 to 599.
pub const PATTERN: &str = "^([1-5][0-9]{2}|[1-5][xX]{2}|[1-5][0-9]{2}-[1-5][0-9]{2})$";

fn parse_pattern(pattern: &str) -> Result<(u16, u16), StatusPatternError> {
    let bad = || StatusPatternError(pattern.to_string());
    // Exactly three digits, the first 1 to 5 (no sign, no padding).
    let code = |text: &str| -> Result<u16, StatusPatternError> {
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 3 && (b'1'..=b'5').contains(&bytes[0]) && bytes.iter().all(u8::is_ascii_digit);
        well_formed.then(|| text.parse::<u16>().ok()).flatten().ok_or_else(bad)
    };
    let lower = pattern.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        return match class.as_bytes() {
            [digit @ b'1'..=b'5'] => Ok((u16::from(digit - b'0') * 100, u16::from(digit - b'0') * 100 + 99)),
            _ => Err(bad()),
        };
    }
    if let Some((low, high)) = lower.split_once('-') {
        let (low, high) = (code(low)?, code(high)?);
        return Ok((low.min(high), low.max(high)));
    }
    code(&lower).map(|c| (c, c))
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelled.join(", "))
    }
}

impl Serialize for StatusSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.spelled.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            List(Vec<String>),
            Joined(String),
        }
        let parsed = match Spelling::deserialize(deserializer)? {
            Spelling::List(items) => Self::parse_exact(items.iter().map(String::as_str)),
            Spelling::Joined(text) => Self::parse(text.split(',')),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for StatusSet {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String).pattern(Some(PATTERN)))
            .description(Some(
                "Status code patterns: a code (`429`), a class (`5xx`) or a range (`500-504`).",
            ))
            .examples([serde_json::json!(["5xx", "408", "429"])])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for StatusSet {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_codes_and_ranges() {
        let set = StatusSet::parse(["5xx", "429", "400-404"]).unwrap();
        for code in [500, 503, 599, 429, 400, 404] {
            assert!(set.contains(code), "{code}");
        }
        for code in [200, 428, 430, 405, 499, 600] {
            assert!(!set.contains(code), "{code}");
        }
    }

    #[test]
    fn rejects_nonsense_with_the_offending_pattern() {
        for bad in [
            "6xx", "0xx", "abc", "99", "600", "5x", "+429", "0429", "42 9", "500-", "1xxx",
        ] {
            let err = StatusSet::parse([bad]).unwrap_err();
            assert_eq!(err.0, bad);
        }
        assert!(
            StatusSet::parse_exact([" 429"]).is_err(),
            "a list item is taken as written"
        );
        assert!(StatusSet::parse_exact([""]).is_err());
    }

    #[test]
    fn a_range_reads_the_same_either_way() {
        assert_eq!(
            StatusSet::parse(["504-500"]).unwrap().ranges,
            StatusSet::parse(["500-504"]).unwrap().ranges
        );
    }

    #[test]
    fn deserializes_lists_and_comma_strings() {
        let a: StatusSet = serde_json::from_str(r#"["5xx","408"]"#).unwrap();
        let b: StatusSet = serde_json::from_str(r#""5xx, 408""#).unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"["5xx","408"]"#);
        assert!(serde_json::from_str::<StatusSet>(r#"["7xx"]"#).is_err());
    }

    #[test]
    fn defaults_equal_their_spelling() {
        assert_eq!(StatusSet::success(), StatusSet::parse(["2xx"]).unwrap());
        assert_eq!(
            StatusSet::default_retry_on(),
            StatusSet::parse(["5xx", "408", "429"]).unwrap()
        );
    }

    #[test]
    fn defaults() {
        let retry = StatusSet::default_retry_on();
        assert!(retry.contains(502) && retry.contains(408) && retry.contains(429));
        assert!(!retry.contains(404));
        assert!(StatusSet::success().contains(204));
    }
}
