//! Messages as a broker's pull answer carries them: RocketMQ's stored
//! message layout, one after another.

use bytes::{Buf, Bytes};
use std::collections::HashMap;
use std::io::Read;

use crate::sources::SourceError;

const MAGIC_V1: i32 = -626_843_481;
/// Topics longer than 255 bytes: the topic's length takes two bytes.
const MAGIC_V2: i32 = -626_843_477;
const COMPRESSED: i32 = 0x1;
const BORN_HOST_V6: i32 = 0x1 << 4;
const STORE_HOST_V6: i32 = 0x1 << 5;
const COMPRESSION_TYPE: i32 = 0x7 << 8;
const ZLIB: i32 = 0x3 << 8;

/// Property names (RocketMQ's `MessageConst`).
pub const UNIQ_KEY: &str = "UNIQ_KEY";
pub const KEYS: &str = "KEYS";
pub const SHARDING_KEY: &str = "__SHARDINGKEY";
pub const TAGS: &str = "TAGS";

#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub body: Bytes,
    pub properties: HashMap<String, String>,
    pub store_timestamp: i64,
    /// The broker's id of the stored message (host, port, commit log offset).
    pub offset_id: String,
    /// The body is compressed in a way Bida cannot undo (LZ4, Zstandard).
    pub still_compressed: bool,
}

impl StoredMessage {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// The producer's message id, or the broker's when it set none.
    pub fn id(&self) -> &str {
        self.property(UNIQ_KEY).unwrap_or(&self.offset_id)
    }

    /// The ordering key: the sharding key of ordered messages, else the first key.
    pub fn key(&self) -> Option<&str> {
        self.property(SHARDING_KEY).filter(|key| !key.is_empty()).or_else(|| {
            self.property(KEYS)
                .and_then(|keys| keys.split(' ').find(|k| !k.is_empty()))
        })
    }
}

fn short(what: &str) -> SourceError {
    SourceError::Broker(format!("a truncated message in the pull answer ({what})"))
}

fn take(buffer: &mut Bytes, length: usize, what: &str) -> Result<Bytes, SourceError> {
    if buffer.remaining() < length {
        return Err(short(what));
    }
    Ok(buffer.split_to(length))
}

fn number<const N: usize>(buffer: &mut Bytes, what: &str) -> Result<[u8; N], SourceError> {
    let bytes = take(buffer, N, what)?;
    let mut out = [0; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn i32_of(buffer: &mut Bytes, what: &str) -> Result<i32, SourceError> {
    number::<4>(buffer, what).map(i32::from_be_bytes)
}

fn i64_of(buffer: &mut Bytes, what: &str) -> Result<i64, SourceError> {
    number::<8>(buffer, what).map(i64::from_be_bytes)
}

/// Every message of a pull answer's body.
pub fn decode_all(mut body: Bytes) -> Result<Vec<StoredMessage>, SourceError> {
    let mut messages = Vec::new();
    while body.has_remaining() {
        let size = i32_of(&mut body.clone(), "size")?;
        let size = usize::try_from(size).map_err(|_| short("a negative size"))?;
        let one = take(&mut body, size, "body")?;
        messages.push(decode(one)?);
    }
    Ok(messages)
}

fn decode(mut buffer: Bytes) -> Result<StoredMessage, SourceError> {
    let _size = i32_of(&mut buffer, "size")?;
    let magic = i32_of(&mut buffer, "magic")?;
    if magic != MAGIC_V1 && magic != MAGIC_V2 {
        return Err(SourceError::Broker(format!(
            "a message with an unknown magic code {magic}"
        )));
    }
    let _body_crc = i32_of(&mut buffer, "crc")?;
    let queue_id = i32_of(&mut buffer, "queue")?;
    let _flag = i32_of(&mut buffer, "flag")?;
    let queue_offset = i64_of(&mut buffer, "queue offset")?;
    let commit_log_offset = i64_of(&mut buffer, "commit log offset")?;
    let sys_flag = i32_of(&mut buffer, "system flag")?;
    let _born_timestamp = i64_of(&mut buffer, "born time")?;
    let born_host = if sys_flag & BORN_HOST_V6 != 0 { 16 } else { 4 };
    take(&mut buffer, born_host + 4, "born host")?;
    let store_timestamp = i64_of(&mut buffer, "store time")?;
    let store_host_len = if sys_flag & STORE_HOST_V6 != 0 { 16 } else { 4 };
    let store_host = take(&mut buffer, store_host_len + 4, "store host")?;
    let _reconsume_times = i32_of(&mut buffer, "reconsume times")?;
    let _prepared = i64_of(&mut buffer, "transaction offset")?;
    let body_len = i32_of(&mut buffer, "body length")?;
    let mut body = take(&mut buffer, body_len.max(0) as usize, "body")?;
    let topic_len = if magic == MAGIC_V2 {
        u16::from_be_bytes(number::<2>(&mut buffer, "topic length")?) as usize
    } else {
        number::<1>(&mut buffer, "topic length")?[0] as usize
    };
    let topic = String::from_utf8_lossy(&take(&mut buffer, topic_len, "topic")?).into_owned();
    let properties_len = u16::from_be_bytes(number::<2>(&mut buffer, "properties length")?) as usize;
    let properties = parse_properties(&take(&mut buffer, properties_len, "properties")?);
    let mut still_compressed = false;
    if sys_flag & COMPRESSED != 0 {
        let kind = sys_flag & COMPRESSION_TYPE;
        // Older producers set no type: zlib, the only one then.
        if kind == 0 || kind == ZLIB {
            let mut inflated = Vec::with_capacity(body.len() * 4);
            flate2::read::ZlibDecoder::new(&body[..])
                .read_to_end(&mut inflated)
                .map_err(|e| SourceError::Broker(format!("a zlib body that does not inflate: {e}")))?;
            body = Bytes::from(inflated);
        } else {
            still_compressed = true;
        }
    }
    let mut offset_id = String::with_capacity(32);
    for byte in store_host.iter().chain(commit_log_offset.to_be_bytes().iter()) {
        offset_id.push_str(&format!("{byte:02X}"));
    }
    Ok(StoredMessage {
        topic,
        queue_id,
        queue_offset,
        body,
        properties,
        store_timestamp,
        offset_id,
        still_compressed,
    })
}

/// `name\x01value\x02name\x01value\x02`
pub fn parse_properties(bytes: &[u8]) -> HashMap<String, String> {
    bytes
        .split(|byte| *byte == 2)
        .filter_map(|entry| {
            let at = entry.iter().position(|byte| *byte == 1)?;
            let name = String::from_utf8_lossy(&entry[..at]).into_owned();
            let value = String::from_utf8_lossy(&entry[at + 1..]).into_owned();
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BufMut;

    /// The inverse of [`parse_properties`].
    fn write_properties<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let mut out = String::new();
        for (name, value) in properties {
            out.push_str(name);
            out.push('\u{1}');
            out.push_str(value);
            out.push('\u{2}');
        }
        out
    }

    /// A stored message as a broker writes it (IPv4 hosts, magic v1).
    pub fn stored(queue_offset: i64, body: &[u8], properties: &[(&str, &str)], sys_flag: i32) -> Vec<u8> {
        let properties = write_properties(properties.iter().copied());
        let topic = b"orders";
        let mut out = Vec::new();
        out.put_i32(0);
        out.put_i32(MAGIC_V1);
        out.put_i32(0);
        out.put_i32(2);
        out.put_i32(0);
        out.put_i64(queue_offset);
        out.put_i64(4096 + queue_offset);
        out.put_i32(sys_flag);
        out.put_i64(1);
        out.put_slice(&[127, 0, 0, 1, 0, 0, 0x30, 0x39]);
        out.put_i64(2);
        out.put_slice(&[127, 0, 0, 1, 0, 0, 0x2a, 0x9f]);
        out.put_i32(0);
        out.put_i64(0);
        out.put_i32(body.len() as i32);
        out.put_slice(body);
        out.put_u8(topic.len() as u8);
        out.put_slice(topic);
        out.put_u16(properties.len() as u16);
        out.put_slice(properties.as_bytes());
        let size = out.len() as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out
    }

    #[test]
    fn reads_messages_one_after_another() {
        let mut body = stored(7, b"first", &[(UNIQ_KEY, "AB12"), (KEYS, "k1 k2"), (TAGS, "paid")], 0);
        body.extend(stored(8, b"second", &[], 0));
        let messages = decode_all(Bytes::from(body)).unwrap();
        assert_eq!(messages.len(), 2);
        let first = &messages[0];
        assert_eq!(
            (first.topic.as_str(), first.queue_id, first.queue_offset),
            ("orders", 2, 7)
        );
        assert_eq!(
            (first.id(), first.key(), &first.body[..]),
            ("AB12", Some("k1"), &b"first"[..])
        );
        assert_eq!(first.property(TAGS), Some("paid"));
        // Without a producer's id, the broker's: store host and port, commit log offset.
        assert_eq!(messages[1].id(), "7F00000100002A9F0000000000001008");
        assert_eq!(messages[1].key(), None);
    }

    #[test]
    fn zlib_bodies_are_inflated_and_truncation_is_an_error() {
        use flate2::write::ZlibEncoder;
        use std::io::Write;
        let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"a body compressed by the producer").unwrap();
        let compressed = encoder.finish().unwrap();
        let body = stored(1, &compressed, &[(SHARDING_KEY, "order-1")], COMPRESSED | ZLIB);
        let message = &decode_all(Bytes::from(body.clone())).unwrap()[0];
        assert_eq!(&message.body[..], b"a body compressed by the producer");
        assert_eq!(message.key(), Some("order-1"));
        assert!(decode_all(Bytes::copy_from_slice(&body[..body.len() - 3])).is_err());
    }
}
