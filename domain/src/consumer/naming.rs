//! The id of the task a consumed message becomes.
//!
//! It is the same for every redelivery of the message (that is how a message
//! whose outcome was recorded before a crash is recognised), so it is a
//! function of the consumer, its offset resets and the message id alone.
//! Three of the eight index entries a consumed message writes are keyed by
//! it; ids that grow with the message's number in its partition put each
//! partition's inserts at one place in those indexes, where random ids touch
//! a new page with every row (the README's "What key order costs those rows").

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Task ids of consumed messages live in this namespace.
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_a0c3_5f2e_4c8a_9d47_0b1d_a000_0002);

/// How a consumer names the tasks it makes of messages. Fixed when it is
/// created: a message in flight across a change of naming would become a
/// second task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskNaming {
    /// A UUIDv5 of the consumer, its resets and the message id, random in
    /// every index: consumers created before ordered naming existed.
    #[default]
    Hashed,
    /// A message id that ends in its number within a partition or stream
    /// (`kafka:orders:3:1207`, `nats:orders:88`) gives a UUIDv8 whose first
    /// 58 bits hash the consumer, its resets and the rest of the message id,
    /// and whose last 64 are the number; any other message id is hashed.
    Ordered,
}

impl TaskNaming {
    /// The task id of `message_id` read by `consumer_id` after `epoch` offset
    /// resets.
    pub fn task_id(self, consumer_id: &str, epoch: u64, message_id: &str) -> String {
        match self.ordinal(message_id) {
            Some((lane, number)) => ordered(&hashed(consumer_id, epoch, lane), number),
            None => hashed(consumer_id, epoch, message_id),
        }
        .to_string()
    }

    /// The message id's lane and number, if this naming orders it. Only
    /// digits without a leading zero count, so that two message ids never
    /// share a number (`007` and `7`).
    fn ordinal(self, message_id: &str) -> Option<(&str, u64)> {
        if self == Self::Hashed {
            return None;
        }
        let (lane, number) = message_id.rsplit_once(':')?;
        let canonical = number.bytes().all(|b| b.is_ascii_digit()) && (number == "0" || !number.starts_with('0'));
        Some((lane, number.parse().ok().filter(|_| canonical)?))
    }

    /// The id of a different message that came with `taken`'s message id (a
    /// recreated topic, a producer reusing message ids), told apart by a
    /// digest of its body.
    pub fn reused_id(taken: &str, body_digest: &[u8]) -> String {
        Uuid::new_v5(&MESSAGE_NAMESPACE, [taken.as_bytes(), body_digest].concat().as_slice()).to_string()
    }
}

fn hashed(consumer_id: &str, epoch: u64, text: &str) -> Uuid {
    Uuid::new_v5(&MESSAGE_NAMESPACE, format!("{consumer_id}\n{epoch}\n{text}").as_bytes())
}

/// The lane's hash, then the number big-endian around the version and
/// variant bits, so that ids of one lane sort as their numbers do (as bytes
/// and as lowercase hex text). Two lanes whose 58 hash bits collide and whose
/// numbers meet share an id: recording tells them apart by their bodies, as
/// it does any other reuse of an id.
fn ordered(lane: &Uuid, number: u64) -> Uuid {
    let hash = lane.as_bytes();
    let n = number.to_be_bytes();
    let mut bytes = [0u8; 16];
    bytes[..7].copy_from_slice(&hash[..7]);
    // Byte 6's high nibble becomes the version; byte 7 keeps six hash bits
    // and takes the number's top two.
    bytes[7] = (hash[7] & 0xfc) | (n[0] >> 6);
    // Byte 8's top two bits become the variant; the number's next six
    // follow, then its last seven bytes.
    bytes[8] = n[0] & 0x3f;
    bytes[9..].copy_from_slice(&n[1..]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_naming_is_the_uuid_v5_of_before() {
        let id = TaskNaming::Hashed.task_id("c1", 2, "kafka:orders:0:17");
        let expected = Uuid::new_v5(&MESSAGE_NAMESPACE, b"c1\n2\nkafka:orders:0:17");
        assert_eq!(id, expected.to_string());
    }

    #[test]
    fn ordered_ids_sort_as_their_numbers_within_a_lane() {
        let numbers = [
            0,
            1,
            2,
            63,
            64,
            255,
            256,
            1 << 20,
            (1 << 56) - 1,
            1 << 56,
            1 << 62,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ids: Vec<String> = numbers
            .iter()
            .map(|n| TaskNaming::Ordered.task_id("c1", 0, &format!("kafka:orders:3:{n}")))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        let first = Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(first.get_version_num(), 8);
        assert_eq!(first.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn every_number_is_kept_whole() {
        for n in [0u64, 1, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63, 3 << 62] {
            let id = Uuid::parse_str(&TaskNaming::Ordered.task_id("c", 0, &format!("nats:s:{n}"))).unwrap();
            let b = id.as_bytes();
            let mut bits: u128 = u128::from_be_bytes(*b);
            // The number's top two bits end the first half; its other 62
            // follow the variant's two.
            let low = bits & ((1u128 << 62) - 1);
            bits >>= 64;
            let high = bits & 0b11;
            assert_eq!(((high << 62) | low) as u64, n, "{id}");
        }
    }

    #[test]
    fn lanes_consumers_and_resets_part_the_ids() {
        let id = |consumer: &str, epoch: u64, message: &str| TaskNaming::Ordered.task_id(consumer, epoch, message);
        let base = id("c1", 0, "kafka:orders:3:5");
        assert_eq!(base, id("c1", 0, "kafka:orders:3:5"));
        assert_ne!(base, id("c1", 0, "kafka:orders:4:5"));
        assert_ne!(base, id("c2", 0, "kafka:orders:3:5"));
        assert_ne!(base, id("c1", 1, "kafka:orders:3:5"));
        // The lane's prefix is shared; a new lane starts elsewhere.
        assert_eq!(base[..8], id("c1", 0, "kafka:orders:3:900")[..8]);
    }

    #[test]
    fn ids_without_a_plain_number_at_the_end_are_hashed() {
        for message in [
            "redis:s:1700000000000-0",
            "kafka:orders:3:007",
            "kafka:orders:3:+7",
            "plain",
            "x:",
            "a:b\nmember",
        ] {
            assert_eq!(
                TaskNaming::Ordered.task_id("c", 0, message),
                TaskNaming::Hashed.task_id("c", 0, message),
                "{message}"
            );
        }
    }
}
