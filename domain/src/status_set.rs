//! Sets of HTTP status codes written the way operators say them:
//! `"5xx"`, `"429"`, `"500-504"`, as a list or one comma-separated string.

use serde::de::{self, SeqAccess, Visitor};
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
        let mut set = Self::with_capacity(0);
        for pattern in patterns {
            set.push(pattern.to_string())?;
        }
        Ok(set)
    }

    fn with_capacity(patterns: usize) -> Self {
        Self {
            ranges: Vec::with_capacity(patterns),
            spelled: Vec::with_capacity(patterns),
        }
    }

    fn push(&mut self, mut pattern: String) -> Result<(), StatusPatternError> {
        self.ranges.push(parse_pattern(&pattern)?);
        pattern.make_ascii_lowercase();
        self.spelled.push(pattern);
        Ok(())
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
    /// A visitor rather than an untagged enum: an untagged enum buffers the
    /// value to try each spelling, and every task event carries a set.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Spelling;

        impl<'de> Visitor<'de> for Spelling {
            type Value = StatusSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of status patterns or one comma-separated string of them")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<StatusSet, E> {
                StatusSet::parse(text.split(',')).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<StatusSet, A::Error> {
                let mut set = StatusSet::with_capacity(items.size_hint().unwrap_or(0).min(16));
                while let Some(pattern) = items.next_element::<String>()? {
                    set.push(pattern).map_err(de::Error::custom)?;
                }
                Ok(set)
            }
        }

        deserializer.deserialize_any(Spelling)
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
        // Read from a parsed document too (a config), spelled in capitals.
        let c: StatusSet = serde_json::from_value(serde_json::json!(["5XX", "408"])).unwrap();
        assert_eq!((c.patterns(), c.contains(503)), (a.patterns(), true));
        let wrong = serde_json::from_str::<StatusSet>("500").unwrap_err().to_string();
        assert!(wrong.contains("a list of status patterns"), "{wrong}");
        let wrong = serde_json::from_str::<StatusSet>(r#"["5xx", 7]"#)
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("invalid type"), "{wrong}");
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
