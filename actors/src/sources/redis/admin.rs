//! A Redis server's streams, a group moved to another place, and past
//! entries read again by id.

use bida_domain::broker::Offset;
use bida_domain::consumer::{OffsetReset, PartitionOffset, SourceMessage};
use bida_domain::kinds::redis::{RedisConnection, RedisSource};
use redis::streams::{StreamInfoGroupsReply, StreamInfoStreamReply, StreamRangeReply};
use redis::AsyncCommands;

use super::source::{broker_error, connect, source_message};
use crate::sources::{Destination, Fact, Inspection, Range, SourceError};

/// Keys looked at when listing streams: a server with more shows the
/// streams of its consumers and those found within this many.
const SCAN_AT_MOST: usize = 100_000;
/// Streams shown at most.
const STREAMS_AT_MOST: usize = 1_000;

/// Every stream (up to a bound) with its length and groups, and the server's
/// version, memory and clients.
pub(super) async fn look(connection: &RedisConnection, known: Vec<&RedisSource>) -> Result<Inspection, SourceError> {
    let mut commands = connect(connection, false).await?;
    let mut names: Vec<String> = known.iter().map(|source| source.stream.clone()).collect();
    let mut cursor = 0u64;
    let mut scanned = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream")
            .query_async(&mut commands)
            .await
            .map_err(broker_error)?;
        names.extend(keys);
        scanned += 1000;
        cursor = next;
        if cursor == 0 || scanned >= SCAN_AT_MOST || names.len() >= STREAMS_AT_MOST {
            break;
        }
    }
    names.sort();
    names.dedup();
    names.truncate(STREAMS_AT_MOST);
    let mut destinations = Vec::new();
    let mut shown = Vec::new();
    for name in names {
        // A known stream not made yet (its consumer never started).
        let Ok(info): redis::RedisResult<StreamInfoStreamReply> = commands.xinfo_stream(&name).await else {
            continue;
        };
        let groups: StreamInfoGroupsReply = commands.xinfo_groups(&name).await.unwrap_or_default();
        destinations.push(Destination {
            name: name.clone(),
            messages: Some(info.length as i64),
            written: None,
            partitions: None,
            consumers: Some(groups.groups.iter().map(|g| g.consumers as i64).sum()),
        });
        let groups: Vec<serde_json::Value> = groups
            .groups
            .iter()
            .map(|group| {
                serde_json::json!({
                    "name": group.name,
                    "consumers": group.consumers,
                    "pending": group.pending,
                    "lag": group.lag,
                    "last_delivered_id": group.last_delivered_id,
                })
            })
            .collect();
        shown.push(serde_json::json!({
            "name": name,
            "length": info.length,
            "last_id": info.last_generated_id,
            "groups": groups,
        }));
    }
    let server: redis::InfoDict = redis::cmd("INFO")
        .query_async(&mut commands)
        .await
        .map_err(broker_error)?;
    let mut facts = Vec::new();
    for (key, label, field) in [
        ("version", ("Version", "版本"), "redis_version"),
        ("memory", ("Memory used", "内存占用"), "used_memory_human"),
        ("clients", ("Clients", "客户端"), "connected_clients"),
    ] {
        if let Some(value) = server.get::<String>(field) {
            let value = if key == "version" {
                format!("Redis {value}")
            } else {
                value
            };
            facts.push(Fact { key, label, value });
        }
    }
    let mut inspection = Inspection {
        destinations,
        facts,
        ..Inspection::default()
    };
    inspection.section("streams", shown);
    Ok(inspection)
}

/// An entry id as Redis takes it in a range: `<ms>-<seq>`, or a number of
/// milliseconds for all entries of that millisecond.
fn entry_id(offset: &Offset) -> Result<String, SourceError> {
    let text = offset.to_string();
    let well_formed = match text.split_once('-') {
        Some((ms, seq)) => ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        None => text.parse::<u64>().is_ok(),
    };
    if well_formed {
        Ok(text)
    } else {
        Err(SourceError::Invalid(format!(
            "`{text}` is not a stream entry id (1700000000000-0) or a time in milliseconds"
        )))
    }
}

/// The stream's entries from `from` to `to` (inclusive), at most the
/// range's limit.
pub(super) async fn read_range(
    connection: &RedisConnection,
    source: &RedisSource,
    range: &Range,
) -> Result<Vec<SourceMessage>, SourceError> {
    if range.partition.is_some_and(|p| p != 0) {
        return Err(SourceError::Invalid("a Redis stream has no partitions".into()));
    }
    let (from, to) = (entry_id(&range.from)?, entry_id(&range.to)?);
    let mut commands = connect(connection, false).await?;
    let entries: StreamRangeReply = commands
        .xrange_count(&source.stream, &from, &to, range.limit + 1)
        .await
        .map_err(broker_error)?;
    if entries.ids.len() > range.limit {
        return Err(SourceError::Invalid(format!(
            "more than {} entries from {from} to {to}: resend a shorter range",
            range.limit
        )));
    }
    Ok(entries.ids.iter().map(|entry| source_message(source, entry)).collect())
}

/// Moves the group (`XGROUP SETID`, or creates it there): it delivers next
/// the entries after the new place. Entries already pending stay pending.
pub(super) async fn reset(
    connection: &RedisConnection,
    source: &RedisSource,
    reset: &OffsetReset,
) -> Result<Vec<PartitionOffset>, SourceError> {
    let last_delivered = match reset {
        OffsetReset::Earliest => "0".to_string(),
        OffsetReset::Latest => "$".to_string(),
        // The last entry before that millisecond.
        OffsetReset::Timestamp { timestamp } => match timestamp.timestamp_millis() {
            ms if ms <= 0 => "0".to_string(),
            ms => format!("{}-{}", ms - 1, u64::MAX),
        },
        OffsetReset::Offsets { .. } => {
            return Err(SourceError::Invalid(
                "a Redis stream's entries have ids, not offsets: reset to earliest, latest or a timestamp".into(),
            ))
        }
    };
    let mut commands = connect(connection, false).await?;
    let moved: redis::RedisResult<()> = commands
        .xgroup_setid(&source.stream, &source.group, &last_delivered)
        .await;
    match moved {
        Ok(()) => {}
        Err(e) if e.to_string().contains("NOGROUP") => {
            let created: () = commands
                .xgroup_create_mkstream(&source.stream, &source.group, &last_delivered)
                .await
                .map_err(broker_error)?;
            created
        }
        Err(e) => return Err(broker_error(e)),
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_entry_ids_or_milliseconds() {
        assert_eq!(
            entry_id(&Offset::Id("1700000000000-3".into())).unwrap(),
            "1700000000000-3"
        );
        assert_eq!(entry_id(&Offset::Number(1700000000000)).unwrap(), "1700000000000");
        assert!(entry_id(&Offset::Id("+".into())).is_err());
        assert!(entry_id(&Offset::Id("1-x".into())).is_err());
        assert!(entry_id(&Offset::Number(-1)).is_err());
    }
}
