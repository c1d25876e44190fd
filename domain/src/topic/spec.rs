//! What a built-in topic is: its name, how many partitions spread its
//! messages, and how long they are kept.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::ValidationErrors;

/// A partition count: more lets more nodes and lanes share a topic; it can
/// grow but not shrink (a key's partition would change under its subscribers).
pub const MAX_PARTITIONS: u16 = 256;
/// Retention of a topic created without one (seed 002's three days).
pub const DEFAULT_RETENTION: Retention = Retention(3 * DAY);
const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// At least an hour: messages are dropped by the hour, never one by one.
const MIN_RETENTION: u64 = HOUR;
const MAX_RETENTION: u64 = 365 * DAY;

/// `[A-Za-z0-9._-]`, 1 to 128 characters: it names the topic in URLs,
/// metric labels and message ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
pub struct TopicName(String);

impl TopicName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let fits = (1..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if fits {
            Ok(Self(text))
        } else {
            Err("a topic name is 1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-'".into())
        }
    }
}

impl FromStr for TopicName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::try_from(text.to_string())
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a topic keeps its messages, written `90m`, `12h` or `3d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = r"^[1-9][0-9]{0,5}[mhd]$", example = "3d"))]
pub struct Retention(u64);

impl Retention {
    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.0 as i64)
    }
}

impl TryFrom<String> for Retention {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || format!("`{text}` is not a retention: write minutes, hours or days, as `90m`, `12h` or `3d`");
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let unit = match unit {
            "m" => MINUTE,
            "h" => HOUR,
            "d" => DAY,
            _ => return Err(wrong()),
        };
        if number.is_empty() || number.len() > 6 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(wrong());
        }
        let millis = number.parse::<u64>().map_err(|_| wrong())? * unit;
        if !(MIN_RETENTION..=MAX_RETENTION).contains(&millis) {
            return Err("a retention is at least an hour (`1h`) and at most a year (`365d`)".into());
        }
        Ok(Self(millis))
    }
}

impl From<Retention> for String {
    fn from(retention: Retention) -> Self {
        retention.to_string()
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ms if ms % DAY == 0 => write!(f, "{}d", ms / DAY),
            ms if ms % HOUR == 0 => write!(f, "{}h", ms / HOUR),
            ms => write!(f, "{}m", ms / MINUTE),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicSpec {
    /// 1 to 256; messages with the same key go to the same partition.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub partitions: u16,
    pub retention: Retention,
}

impl TopicSpec {
    pub fn validate(&self, errors: &mut ValidationErrors) {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            errors.add("partitions", format!("must be 1 to {MAX_PARTITIONS}"));
        }
    }

    /// The partition a message goes to: its key's, or `spread` (a round
    /// robin the publisher keeps) without one.
    pub fn partition_for(&self, key: Option<&str>, spread: u64) -> u16 {
        let partitions = u64::from(self.partitions.max(1));
        let slot = match key {
            // FNV-1a: stable across builds and nodes, unlike std's hasher.
            Some(key) => key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, b| {
                (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
            None => spread,
        };
        (slot % partitions) as u16
    }
}

/// A new topic as a client writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicInput {
    pub name: TopicName,
    /// 1 by default.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub partitions: Option<u16>,
    /// `3d` by default.
    pub retention: Option<Retention>,
}

impl TopicInput {
    pub fn into_spec(self) -> Result<(TopicName, TopicSpec), ValidationErrors> {
        let spec = TopicSpec {
            partitions: self.partitions.unwrap_or(1),
            retention: self.retention.unwrap_or(DEFAULT_RETENTION),
        };
        let mut errors = ValidationErrors::default();
        spec.validate(&mut errors);
        errors.finish((self.name, spec))
    }
}

/// A change of a topic (`PATCH /v1/topics/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicPatch {
    /// More partitions (never fewer).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub partitions: Option<u16>,
    pub retention: Option<Retention>,
}

impl TopicPatch {
    pub fn applied_to(&self, current: TopicSpec) -> Result<TopicSpec, ValidationErrors> {
        let spec = TopicSpec {
            partitions: self.partitions.unwrap_or(current.partitions),
            retention: self.retention.unwrap_or(current.retention),
        };
        let mut errors = ValidationErrors::default();
        spec.validate(&mut errors);
        if spec.partitions < current.partitions {
            errors.add(
                "partitions",
                format!(
                    "a topic's partitions can grow but not shrink (it has {}): keys would move under their subscribers",
                    current.partitions
                ),
            );
        }
        errors.finish(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_read_and_print_in_their_largest_unit() {
        for (text, millis, printed) in [
            ("3d", 3 * DAY, "3d"),
            ("72h", 3 * DAY, "3d"),
            ("90m", 90 * MINUTE, "90m"),
            ("1h", HOUR, "1h"),
        ] {
            let retention: Retention = text.parse().unwrap();
            assert_eq!(
                (retention.as_millis(), retention.to_string().as_str()),
                (millis, printed)
            );
        }
        for wrong in [
            "", "d", "3", "3w", "-1d", "0h", "59m", "366d", "1.5d", "9999999d", " 3d",
        ] {
            assert!(wrong.parse::<Retention>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn names_are_url_and_label_safe() {
        for good in ["orders", "a.b-c_d", &"x".repeat(128)] {
            assert!(good.parse::<TopicName>().is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "订单", &"x".repeat(129), "a\0"] {
            assert!(bad.parse::<TopicName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_keeps_its_partition_and_keyless_messages_spread() {
        let spec = TopicSpec {
            partitions: 8,
            retention: DEFAULT_RETENTION,
        };
        let first = spec.partition_for(Some("customer-1"), 0);
        assert!((0..100).all(|spread| spec.partition_for(Some("customer-1"), spread) == first));
        let spread: std::collections::HashSet<u16> = (0..8).map(|n| spec.partition_for(None, n)).collect();
        assert_eq!(spread.len(), 8);
        let keys: std::collections::HashSet<u16> = (0..200)
            .map(|n| spec.partition_for(Some(&format!("k{n}")), 0))
            .collect();
        assert_eq!(keys.len(), 8, "keys reach every partition");
    }

    #[test]
    fn partitions_grow_but_never_shrink() {
        let current = TopicSpec {
            partitions: 4,
            retention: DEFAULT_RETENTION,
        };
        let grown = TopicPatch {
            partitions: Some(6),
            retention: None,
        };
        assert_eq!(grown.applied_to(current).unwrap().partitions, 6);
        let shrunk = TopicPatch {
            partitions: Some(2),
            retention: None,
        };
        assert_eq!(shrunk.applied_to(current).unwrap_err().0[0].field, "partitions");
        let zero = TopicInput {
            name: "t".parse().unwrap(),
            partitions: Some(0),
            retention: None,
        };
        assert!(zero.into_spec().is_err());
    }
}
