//! What a source saw that breaks the broker's own promises: offsets it
//! skipped, offsets that went back, an end below the committed offset, a
//! partition that stopped moving. Each is recorded as a consumer event and
//! alerted, never passed over in silence: a consumer that commits past
//! messages it never saw loses them without a trace.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One partition of a Kafka topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SourceAnomaly {
    /// The broker served no message at offsets `from..to` of a topic that is
    /// not compacted, even when read again from before them: they were never
    /// delivered, and the consumer moved past them only after this was recorded.
    OffsetGap {
        #[serde(flatten)]
        at: TopicPartition,
        from: i64,
        to: i64,
    },
    /// The broker served `got` after `expected`, below offsets this consumer
    /// had read already: its log was truncated or recreated. The messages
    /// from `got` on are delivered as new ones.
    OffsetsRewound {
        #[serde(flatten)]
        at: TopicPartition,
        expected: i64,
        got: i64,
    },
    /// The group's committed offset is past the partition's end: messages
    /// produced below it would never be read.
    EndBelowCommitted {
        #[serde(flatten)]
        at: TopicPartition,
        committed: i64,
        end: i64,
    },
    /// Messages at offsets `from..to` of a built-in topic were dropped by its
    /// retention before this subscription read them: it missed `to - from`
    /// messages, and reads on from `to`.
    Expired {
        #[serde(flatten)]
        at: TopicPartition,
        from: i64,
        to: i64,
    },
    /// The partition had messages to read and its committed offset did not
    /// move while the consumer was running.
    PartitionStalled {
        #[serde(flatten)]
        at: TopicPartition,
        committed: i64,
        end: i64,
        since: DateTime<Utc>,
    },
}

impl SourceAnomaly {
    pub fn partition(&self) -> &TopicPartition {
        match self {
            Self::OffsetGap { at, .. }
            | Self::Expired { at, .. }
            | Self::OffsetsRewound { at, .. }
            | Self::EndBelowCommitted { at, .. }
            | Self::PartitionStalled { at, .. } => at,
        }
    }

    /// One line for logs and chat alerts.
    pub fn describe(&self) -> String {
        match self {
            Self::OffsetGap { at, from, to } => format!(
                "{at}: the broker served no message at offsets {from}..{} ({} offsets skipped)",
                to - 1,
                to - from
            ),
            Self::Expired { at, from, to } => format!(
                "{at}: {} messages (offsets {from}..{}) expired under the topic's retention before they were read",
                to - from,
                to - 1
            ),
            Self::OffsetsRewound { at, expected, got } => {
                format!("{at}: offsets went back from {expected} to {got} (the log was truncated or recreated)")
            }
            Self::EndBelowCommitted { at, committed, end } => {
                format!("{at}: the committed offset {committed} is past the partition's end {end}")
            }
            Self::PartitionStalled {
                at,
                committed,
                end,
                since,
            } => {
                format!(
                    "{at}: stalled at offset {committed} since {} with {} messages to read",
                    since.format("%Y-%m-%d %H:%M:%S UTC"),
                    end - committed
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_serialise_flat_with_their_kind() {
        let gap = SourceAnomaly::OffsetGap {
            at: TopicPartition {
                topic: "orders".into(),
                partition: 2,
            },
            from: 625,
            to: 713,
        };
        let json = serde_json::to_value(&gap).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "offset_gap", "topic": "orders", "partition": 2, "from": 625, "to": 713})
        );
        assert_eq!(serde_json::from_value::<SourceAnomaly>(json).unwrap(), gap);
        assert!(
            gap.describe().contains("625..712 (88 offsets skipped)"),
            "{}",
            gap.describe()
        );
    }
}
