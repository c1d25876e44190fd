//! Where a message was read: typed, so that nothing parses it back from text.

use std::fmt;

/// A message's place in its broker: the destination (topic, queue, stream),
/// the partition where the kind has them, and the offset, sequence or entry
/// id where it has one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub destination: String,
    pub partition: Option<i32>,
    pub offset: Option<Offset>,
}

/// A message's number within its partition or stream: a number in JSON, or
/// a string for ids that are not one (`"1700000000000-0"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Offset {
    /// Kafka offsets, NATS stream sequences, RocketMQ queue offsets.
    Number(i64),
    /// Identifiers that are not one number (Redis stream entry ids).
    Id(String),
}

impl Position {
    /// A destination without partitions or offsets (a RabbitMQ queue).
    pub fn destination(destination: impl Into<String>) -> Self {
        Self {
            destination: destination.into(),
            partition: None,
            offset: None,
        }
    }

    /// One partition of a destination, without an offset: what a consumer
    /// is assigned and loses.
    pub fn partition(destination: impl Into<String>, partition: i32) -> Self {
        Self {
            destination: destination.into(),
            partition: Some(partition),
            offset: None,
        }
    }

    pub fn at(mut self, offset: Offset) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Whether both are in the same partition (or the same destination, for
    /// kinds without partitions).
    pub fn same_partition(&self, other: &Position) -> bool {
        self.destination == other.destination && self.partition == other.partition
    }
}

impl Offset {
    pub fn number(&self) -> Option<i64> {
        match self {
            Self::Number(number) => Some(*number),
            Self::Id(_) => None,
        }
    }
}

/// A JSON number (`7`, or `7.0` as JSON Schema counts it an integer) or a string.
impl<'de> serde::Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(id) => Ok(Self::Id(id)),
            serde_json::Value::Number(number) => number
                .as_i64()
                .or_else(|| {
                    number
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                })
                .map(Self::Number)
                .ok_or_else(|| D::Error::custom("an offset is a whole number or an entry id")),
            _ => Err(D::Error::custom("an offset is a whole number or an entry id")),
        }
    }
}

/// A number where the text is one, an id otherwise.
impl std::str::FromStr for Offset {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(text
            .parse()
            .map(Self::Number)
            .unwrap_or_else(|_| Self::Id(text.to_string())))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => write!(f, "{number}"),
            Self::Id(id) => f.write_str(id),
        }
    }
}

/// `destination[/partition][@offset]`: how a task's origin records it
/// (`orders/3@1042` for Kafka, the queue's name for RabbitMQ).
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.destination)?;
        if let Some(partition) = self.partition {
            write!(f, "/{partition}")?;
        }
        if let Some(offset) = &self.offset {
            write!(f, "@{offset}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_origins_always_did() {
        assert_eq!(
            Position::partition("orders", 3).at(Offset::Number(1042)).to_string(),
            "orders/3@1042"
        );
        assert_eq!(Position::destination("q").to_string(), "q");
        assert_eq!(
            Position::destination("s")
                .at(Offset::Id("1700000000000-0".into()))
                .to_string(),
            "s@1700000000000-0"
        );
    }

    #[test]
    fn offsets_are_numbers_or_ids_in_json() {
        let offsets: Vec<Offset> = serde_json::from_str(r#"[7, "1700000000000-0", 8.0]"#).unwrap();
        assert_eq!(
            offsets,
            [
                Offset::Number(7),
                Offset::Id("1700000000000-0".into()),
                Offset::Number(8)
            ]
        );
        assert!(serde_json::from_str::<Offset>("7.5").is_err());
        assert_eq!(serde_json::to_string(&offsets).unwrap(), r#"[7,"1700000000000-0",8]"#);
        assert_eq!("42".parse::<Offset>(), Ok(Offset::Number(42)));
        assert_eq!("1-0".parse::<Offset>(), Ok(Offset::Id("1-0".into())));
    }

    #[test]
    fn partitions_match_whatever_the_offset() {
        let held = Position::partition("t", 1).at(Offset::Number(7));
        assert!(held.same_partition(&Position::partition("t", 1)));
        assert!(!held.same_partition(&Position::partition("t", 2)));
        assert!(!held.same_partition(&Position::partition("u", 1)));
    }
}
