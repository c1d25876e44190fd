//! Requests about one queue of a topic, for the source and the admin
//! operations alike: offsets, commits, pulls.

use std::time::Duration;

use super::message::{decode_all, StoredMessage};
use super::remoting::{code, status, Remote, Request};
use crate::sources::SourceError;

/// `PULL_MESSAGE` system flags.
const FLAG_SUSPEND: i32 = 0x2;
const FLAG_SUBSCRIPTION: i32 = 0x4;
/// How long the broker may hold a pull that finds nothing (it answers as
/// soon as a message arrives).
pub const LONG_POLL: Duration = Duration::from_secs(2);
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = super::cluster::CALL_TIMEOUT;

/// The group's committed offset on a queue; none when it never committed.
pub async fn committed(remote: &Remote, group: &str, topic: &str, queue: i32) -> Result<Option<i64>, SourceError> {
    let request = Request::new(code::QUERY_CONSUMER_OFFSET)
        .field("consumerGroup", group)
        .field("topic", topic)
        .field("queueId", queue)
        .field("setZeroIfNotFound", false);
    let response = remote.call(request, CALL_TIMEOUT).await?;
    if response.code == status::QUERY_NOT_FOUND {
        return Ok(None);
    }
    let offset = response.ok()?.number("offset")?;
    Ok((offset >= 0).then_some(offset))
}

/// Sets the group's offset on a queue (the next message to read).
pub async fn commit(remote: &Remote, group: &str, topic: &str, queue: i32, offset: i64) -> Result<(), SourceError> {
    let request = Request::new(code::UPDATE_CONSUMER_OFFSET)
        .field("consumerGroup", group)
        .field("topic", topic)
        .field("queueId", queue)
        .field("commitOffset", offset);
    remote.call(request, CALL_TIMEOUT).await?.ok().map(|_| ())
}

/// Moves the group's offset on a queue to `offset`, backwards too: RocketMQ
/// brokers differ there (the Rust broker ignores a commit below the stored
/// offset; a Java broker without server-side resets takes only commits), so
/// a commit is tried first and the broker's reset when it did not hold.
pub async fn set(remote: &Remote, group: &str, topic: &str, queue: i32, offset: i64) -> Result<(), SourceError> {
    commit(remote, group, topic, queue, offset).await?;
    if committed(remote, group, topic, queue).await? == Some(offset) {
        return Ok(());
    }
    let reset = Request::new(code::INVOKE_BROKER_TO_RESET_OFFSET)
        .field("topic", topic)
        .field("group", group)
        .field("queueId", queue)
        .field("offset", offset)
        .field("timestamp", -1)
        .field("isForce", true);
    remote.call(reset, CALL_TIMEOUT).await?.ok()?;
    match committed(remote, group, topic, queue).await? {
        Some(stored) if stored == offset => Ok(()),
        stored => Err(SourceError::Broker(format!(
            "the broker kept the offset of queue {queue} at {stored:?}, not {offset}"
        ))),
    }
}

async fn offset_request(remote: &Remote, request_code: i32, topic: &str, queue: i32) -> Result<i64, SourceError> {
    let request = Request::new(request_code).field("topic", topic).field("queueId", queue);
    remote.call(request, CALL_TIMEOUT).await?.ok()?.number("offset")
}

/// The offset after the queue's last message.
pub async fn end(remote: &Remote, topic: &str, queue: i32) -> Result<i64, SourceError> {
    offset_request(remote, code::GET_MAX_OFFSET, topic, queue).await
}

/// The queue's first offset still stored.
pub async fn start(remote: &Remote, topic: &str, queue: i32) -> Result<i64, SourceError> {
    offset_request(remote, code::GET_MIN_OFFSET, topic, queue).await
}

/// The first offset stored at or after `millis`.
pub async fn at_time(remote: &Remote, topic: &str, queue: i32, millis: i64) -> Result<i64, SourceError> {
    let request = Request::new(code::SEARCH_OFFSET_BY_TIMESTAMP)
        .field("topic", topic)
        .field("queueId", queue)
        .field("timestamp", millis)
        .field("boundaryType", "LOWER");
    remote.call(request, CALL_TIMEOUT).await?.ok()?.number("offset")
}

/// What a pull found.
#[derive(Debug)]
pub enum Pulled {
    /// Messages (tag-filtered by the broker, perhaps not all of the range),
    /// and where to read next.
    Messages(Vec<StoredMessage>, i64),
    /// Nothing new; read next from here (past messages the filter dropped).
    Nothing(i64),
    /// The offset is not in the queue (aged out, or past its end): read
    /// from `next` instead.
    Moved(i64),
}

/// A pull of up to `max` messages from `offset`; with `wait`, the broker
/// holds it up to [`LONG_POLL`] when there is nothing yet.
#[allow(clippy::too_many_arguments)]
pub async fn pull(
    remote: &Remote,
    group: &str,
    topic: &str,
    queue: i32,
    offset: i64,
    max: u32,
    expression: &str,
    wait: bool,
) -> Result<Pulled, SourceError> {
    let suspend = if wait { FLAG_SUSPEND } else { 0 };
    let request = Request::new(code::PULL_MESSAGE)
        .field("consumerGroup", group)
        .field("topic", topic)
        .field("queueId", queue)
        .field("queueOffset", offset)
        .field("maxMsgNums", max)
        .field("sysFlag", suspend | FLAG_SUBSCRIPTION)
        .field("commitOffset", 0)
        .field("suspendTimeoutMillis", LONG_POLL.as_millis())
        .field("subscription", expression)
        .field("subVersion", chrono::Utc::now().timestamp_millis())
        .field("expressionType", "TAG");
    let response = remote.call(request, PULL_TIMEOUT + LONG_POLL).await?;
    let next = response.field("nextBeginOffset").and_then(|n| n.parse().ok());
    match response.code {
        status::SUCCESS => {
            let next = next.ok_or_else(|| SourceError::Broker("a pull answer without nextBeginOffset".into()))?;
            Ok(Pulled::Messages(decode_all(response.body)?, next))
        }
        status::PULL_NOT_FOUND | status::PULL_RETRY_IMMEDIATELY => Ok(Pulled::Nothing(next.unwrap_or(offset))),
        status::PULL_OFFSET_MOVED => {
            let next =
                next.ok_or_else(|| SourceError::Broker("an offset-moved answer without nextBeginOffset".into()))?;
            Ok(Pulled::Moved(next))
        }
        _ => Err(response.refusal()),
    }
}
