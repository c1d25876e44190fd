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
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, StatusPatternError> {
        let mut set = Self {
            ranges: Vec::new(),
            spelled: Vec::new(),
        };
        for raw in patterns {
            let pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
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

fn parse_pattern(pattern: &str) -> Result<(u16, u16), StatusPatternError> {
    let bad = || StatusPatternError(pattern.to_string());
    let code = |text: &str| -> Result<u16, StatusPatternError> {
        text.parse::<u16>()
            .ok()
            .filter(|code| (100..=599).contains(code))
            .ok_or_else(bad)
    };
    let lower = pattern.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        let digit = class.parse::<u16>().ok().filter(|d| (1..=5).contains(d));
        return digit.map(|d| (d * 100, d * 100 + 99)).ok_or_else(bad);
    }
    if let Some((low, high)) = lower.split_once('-') {
        let (low, high) = (code(low.trim())?, code(high.trim())?);
        return if low <= high { Ok((low, high)) } else { Err(bad()) };
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
            Spelling::List(items) => Self::parse(items.iter().map(String::as_str)),
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
            .items(ObjectBuilder::new().schema_type(Type::String))
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
        for bad in ["6xx", "0xx", "abc", "99", "600", "504-500", "5x"] {
            let err = StatusSet::parse([bad]).unwrap_err();
            assert_eq!(err.0, bad);
        }
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
