//! A stream read through its consumer group: each node a consumer of the
//! group, each entry acknowledged (`XACK`) once its outcome is recorded.
//!
//! Redis hands an entry to one consumer and keeps it in that consumer's
//! pending list until acknowledged; it never gives it to another by itself.
//! So every node claims (`XAUTOCLAIM`) the entries idle longer than the
//! claim wait, which is how a killed node's entries reach the others; a live
//! node keeps its own from being claimed by touching them (`XCLAIM ...
//! JUSTID`) while their outcomes are at the endpoint or being recorded, and
//! makes those it lets go unrecorded look idle at once, so that the next
//! claim takes them.

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{SourceMessage, StartAt};
use bida_domain::kinds::redis::{RedisConnection, RedisSource};
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimOptions, StreamClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

use crate::sources::{
    clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Client, Incoming, Source, SourceError,
};

/// How long an entry may sit unacknowledged in a consumer's pending list,
/// beyond the endpoint's timeout, before another node claims it: how long a
/// killed node's entries wait.
const RECORDING_MARGIN: Duration = Duration::from_secs(20);
/// How often a live node touches the entries it holds, so that no other
/// node claims them however long their recording takes.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often a node looks for entries to claim.
const CLAIM_EVERY: Duration = Duration::from_secs(2);
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// Consumers of the group with nothing pending and not seen for this long
/// are removed (nodes that are gone; one that comes back is added again).
const FORGET_CONSUMERS_AFTER: Duration = Duration::from_secs(3600);

/// A connection of its own; `reads` sizes its answer timeout for blocking reads.
pub(super) async fn connect(connection: &RedisConnection, reads: bool) -> Result<MultiplexedConnection, SourceError> {
    let client = redis::Client::open(connection.url.as_str()).map_err(|e| SourceError::Connect(e.to_string()))?;
    let answer_within = if reads {
        BLOCK + Duration::from_secs(10)
    } else {
        Duration::from_secs(10)
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(answer_within));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| SourceError::Connect(e.to_string()))
}

pub(super) fn broker_error(e: redis::RedisError) -> SourceError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        SourceError::Lost(e.to_string())
    } else {
        SourceError::Broker(e.to_string())
    }
}

/// The group, created at the source's start if it does not exist.
async fn ensure_group(commands: &mut MultiplexedConnection, source: &RedisSource) -> Result<(), SourceError> {
    let start = match source.start {
        StartAt::Earliest => "0",
        StartAt::Latest => "$",
    };
    let created: redis::RedisResult<()> = commands
        .xgroup_create_mkstream(&source.stream, &source.group, start)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(broker_error(e)),
    }
}

/// The group's backlog: entries not yet delivered to it and those delivered
/// but not yet acknowledged (as a Kafka group's lag counts from its
/// committed offset).
pub(super) async fn group_backlog(
    commands: &mut MultiplexedConnection,
    source: &RedisSource,
) -> Result<Vec<Backlog>, SourceError> {
    let groups: redis::streams::StreamInfoGroupsReply =
        commands.xinfo_groups(&source.stream).await.map_err(broker_error)?;
    let group = groups
        .groups
        .into_iter()
        .find(|group| group.name == source.group)
        .ok_or_else(|| SourceError::Broker(format!("the stream {} has no group {}", source.stream, source.group)))?;
    let undelivered = match group.lag {
        Some(lag) => lag as i64,
        // Unknown after entries were deleted or the group moved: count them.
        None => {
            let after = format!("({}", group.last_delivered_id);
            let entries: redis::streams::StreamRangeReply = commands
                .xrange_count(&source.stream, after, "+", 100_000)
                .await
                .map_err(broker_error)?;
            entries.ids.len() as i64
        }
    };
    Ok(vec![Backlog::of(
        &source.stream,
        None,
        undelivered + group.pending as i64,
    )])
}

/// What the reader does next.
#[derive(Clone, Debug)]
enum Fetch {
    /// This consumer's own pending entries after this id, from an earlier
    /// life of the node.
    Own { after: String },
    /// Entries idle past the claim wait in any consumer's pending list.
    Claim { cursor: String },
    /// New entries.
    New,
}

struct Fetched {
    entries: Vec<StreamId>,
    /// Where the next claim goes on from.
    cursor: Option<String>,
}

pub struct RedisEntries {
    /// Acknowledgements, claims and probes.
    commands: MultiplexedConnection,
    /// Blocking reads, on a connection of their own.
    reader: MultiplexedConnection,
    spec: RedisSource,
    me: String,
    claim_idle: Duration,
    /// A read under way, on a task of its own so that a cancelled `next`
    /// does not lose entries Redis already moved to this consumer.
    fetching: Option<JoinHandle<Result<Fetched, SourceError>>>,
    buffer: VecDeque<StreamId>,
    /// Where the reading of its own pending entries goes on; none once done.
    own_after: Option<String>,
    claim_cursor: String,
    last_claim: Instant,
    held: Held,
    /// Touches the held entries until the source closes.
    progress: JoinHandle<()>,
    prefetch: usize,
}

/// Entries handed out and not yet acknowledged.
type Held = Arc<Mutex<HashSet<String>>>;

impl RedisEntries {
    pub async fn connect(
        connection: &RedisConnection,
        spec: &RedisSource,
        client: &Client,
    ) -> Result<Self, SourceError> {
        let mut commands = connect(connection, false).await?;
        let reader = connect(connection, true).await?;
        ensure_group(&mut commands, spec).await?;
        let held = Held::default();
        Ok(Self {
            progress: keep_in_progress(commands.clone(), spec.clone(), client.id.clone(), held.clone()),
            commands,
            reader,
            spec: spec.clone(),
            me: client.id.clone(),
            claim_idle: client.delivery_timeout + RECORDING_MARGIN,
            fetching: None,
            buffer: VecDeque::new(),
            own_after: Some("0".into()),
            claim_cursor: "0-0".into(),
            last_claim: Instant::now(),
            held,
            prefetch: client.concurrency.max(1) as usize,
        })
    }

    fn next_fetch(&self) -> Fetch {
        if let Some(after) = &self.own_after {
            Fetch::Own { after: after.clone() }
        } else if self.last_claim.elapsed() >= CLAIM_EVERY {
            Fetch::Claim {
                cursor: self.claim_cursor.clone(),
            }
        } else {
            Fetch::New
        }
    }

    async fn fetched(&mut self) -> Result<(), SourceError> {
        let fetch = self.next_fetch();
        let handle = self.fetching.get_or_insert_with(|| {
            let (reader, commands) = (self.reader.clone(), self.commands.clone());
            let (spec, me, count) = (self.spec.clone(), self.me.clone(), self.prefetch);
            let claim_idle = self.claim_idle.as_millis() as u64;
            tokio::spawn(async move { fetch_entries(reader, commands, spec, me, count, claim_idle, fetch).await })
        });
        let fetched = handle.await;
        self.fetching = None;
        let fetched = fetched.map_err(|e| SourceError::Lost(e.to_string()))??;
        match fetched.cursor {
            Some(cursor) => {
                self.claim_cursor = cursor;
                self.last_claim = Instant::now();
            }
            None if self.own_after.is_some() => {
                self.own_after = fetched.entries.last().map(|entry| entry.id.clone());
            }
            None => {}
        }
        self.buffer.extend(fetched.entries);
        Ok(())
    }
}

async fn fetch_entries(
    mut reader: MultiplexedConnection,
    mut commands: MultiplexedConnection,
    spec: RedisSource,
    me: String,
    count: usize,
    claim_idle_ms: u64,
    fetch: Fetch,
) -> Result<Fetched, SourceError> {
    let read = |from: String, block: Option<usize>| {
        let mut options = StreamReadOptions::default().group(&spec.group, &me).count(count);
        if let Some(block) = block {
            options = options.block(block);
        }
        (from, options)
    };
    let (from, options) = match fetch {
        Fetch::Own { after } => read(after, None),
        Fetch::New => read(">".into(), Some(BLOCK.as_millis() as usize)),
        Fetch::Claim { cursor } => {
            let claimed: redis::streams::StreamAutoClaimReply = commands
                .xautoclaim_options(
                    &spec.stream,
                    &spec.group,
                    &me,
                    claim_idle_ms,
                    cursor,
                    StreamAutoClaimOptions::default().count(count),
                )
                .await
                .map_err(broker_error)?;
            if !claimed.claimed.is_empty() {
                tracing::info!(
                    stream = %spec.stream,
                    entries = claimed.claimed.len(),
                    "claimed entries another consumer left unacknowledged"
                );
            }
            if claimed.next_stream_id == "0-0" {
                forget_gone_consumers(&mut commands, &spec).await;
            }
            return Ok(Fetched {
                entries: claimed.claimed,
                cursor: Some(claimed.next_stream_id),
            });
        }
    };
    let reply: Option<StreamReadReply> = reader
        .xread_options(&[&spec.stream], &[from], &options)
        .await
        .map_err(broker_error)?;
    let entries = reply
        .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
        .unwrap_or_default();
    Ok(Fetched { entries, cursor: None })
}

/// Removes the group's consumers that hold nothing and have not been seen
/// for a long time: the nodes that are gone.
async fn forget_gone_consumers(commands: &mut MultiplexedConnection, spec: &RedisSource) {
    let consumers: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
        commands.xinfo_consumers(&spec.stream, &spec.group).await;
    let Ok(consumers) = consumers else { return };
    for consumer in consumers.consumers {
        if consumer.pending == 0 && consumer.idle as u128 > FORGET_CONSUMERS_AFTER.as_millis() {
            let _: redis::RedisResult<i64> = commands
                .xgroup_delconsumer(&spec.stream, &spec.group, &consumer.name)
                .await;
        }
    }
}

/// Touches the held entries every [`PROGRESS_EVERY`], until aborted, so
/// that no other node claims them while this one works on them. Only those
/// still in this consumer's pending list: one claimed away meanwhile is
/// the other node's now.
fn keep_in_progress(mut commands: MultiplexedConnection, spec: RedisSource, me: String, held: Held) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // the first tick is immediate
        loop {
            every.tick().await;
            let holding = held.lock().unwrap_or_else(|p| p.into_inner()).len();
            if holding == 0 {
                continue;
            }
            let mine: redis::RedisResult<redis::streams::StreamPendingCountReply> = commands
                .xpending_consumer_count(&spec.stream, &spec.group, "-", "+", holding.max(1000), &me)
                .await;
            let Ok(mine) = mine else { continue };
            let touch: Vec<String> = {
                let held = held.lock().unwrap_or_else(|p| p.into_inner());
                mine.ids
                    .into_iter()
                    .map(|p| p.id)
                    .filter(|id| held.contains(id))
                    .collect()
            };
            if touch.is_empty() {
                continue;
            }
            // Lost: the entries are claimed after the claim wait, and their
            // task ids make that a repeat.
            let _: redis::RedisResult<Value> = commands
                .xclaim_options(
                    &spec.stream,
                    &spec.group,
                    &me,
                    0,
                    &touch,
                    StreamClaimOptions::default().with_justid(),
                )
                .await;
        }
    })
}

/// Makes entries look idle past the claim wait, so the next claim (this
/// node's or another's) takes them at once.
async fn give_back(
    commands: &mut MultiplexedConnection,
    spec: &RedisSource,
    me: &str,
    claim_idle: Duration,
    ids: &[String],
) {
    if ids.is_empty() {
        return;
    }
    let _: redis::RedisResult<Value> = commands
        .xclaim_options(
            &spec.stream,
            &spec.group,
            me,
            0,
            ids,
            StreamClaimOptions::default()
                .idle(claim_idle.as_millis() as usize)
                .with_justid(),
        )
        .await;
}

struct RedisAck {
    id: String,
    commands: MultiplexedConnection,
    spec: RedisSource,
    me: String,
    claim_idle: Duration,
    held: Held,
}

impl RedisAck {
    fn take(&self) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id)
    }
}

impl Acknowledge for RedisAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let holding = self.take();
        Box::pin(async move {
            if !holding {
                // Given back when the source closed: another node has it.
                return Ok(());
            }
            let mut commands = self.commands.clone();
            let _: i64 = commands
                .xack(&self.spec.stream, &self.spec.group, &[&self.id])
                .await
                .map_err(broker_error)?;
            Ok(())
        })
    }
}

/// An entry let go unrecorded (a lane forgotten, a delivery abandoned) is
/// claimed again soon rather than after the whole claim wait.
impl Drop for RedisAck {
    fn drop(&mut self) {
        if self.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (mut commands, spec, me, claim_idle) = (
                    self.commands.clone(),
                    self.spec.clone(),
                    self.me.clone(),
                    self.claim_idle,
                );
                let ids = vec![self.id.clone()];
                runtime.spawn(async move { give_back(&mut commands, &spec, &me, claim_idle, &ids).await });
            }
        }
    }
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::Int(number) => Some(number.to_string().into_bytes()),
        _ => None,
    }
}

/// An entry as the pipeline takes it: id `redis:<stream>:<entry-id>`, the
/// body and key from their fields; an entry without a body field is
/// delivered as a JSON object of its fields.
pub(super) fn source_message(spec: &RedisSource, entry: &StreamId) -> SourceMessage {
    let field = |name: &str| entry.map.get(name).and_then(bytes);
    let (body, content_type) = match field(&spec.body_field) {
        Some(body) => (body, field("content_type").and_then(|v| header_text(&v))),
        None => {
            let fields: serde_json::Map<String, serde_json::Value> = entry
                .map
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), clean_text(&bytes(value)?).into())))
                .collect();
            (
                serde_json::to_vec(&fields).unwrap_or_default(),
                Some("application/json".to_string()),
            )
        }
    };
    SourceMessage {
        message_id: format!("redis:{}:{}", spec.stream, entry.id),
        position: Position::destination(&spec.stream).at(Offset::Id(entry.id.clone())),
        key: field(&spec.key_field).map(|key| clean_text(&key)),
        body: body.into(),
        content_type,
        traceparent: field("traceparent").and_then(|v| header_text(&v)),
    }
}

impl Source for RedisEntries {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        loop {
            let Some(entry) = self.buffer.pop_front() else {
                self.fetched().await?;
                continue;
            };
            // An entry deleted from the stream while pending: nothing to deliver.
            if entry.map.is_empty() {
                let _: redis::RedisResult<i64> = self
                    .commands
                    .xack(&self.spec.stream, &self.spec.group, &[&entry.id])
                    .await;
                continue;
            }
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(entry.id.clone());
            return Ok(Incoming {
                message: source_message(&self.spec, &entry),
                ack: Box::new(RedisAck {
                    id: entry.id,
                    commands: self.commands.clone(),
                    spec: self.spec.clone(),
                    me: self.me.clone(),
                    claim_idle: self.claim_idle,
                    held: self.held.clone(),
                }),
            });
        }
    }

    /// Nothing is read while paused; the backlog waits in the stream.
    async fn set_paused(&mut self, _paused: bool) -> Result<(), SourceError> {
        Ok(())
    }

    /// The next read asks for the new number.
    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        self.prefetch = messages.max(1) as usize;
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(RedisProbe {
            commands: self.commands.clone(),
            spec: self.spec.clone(),
        })
    }

    async fn close(mut self) {
        self.progress.abort();
        if let Some(fetching) = self.fetching.take() {
            if let Ok(Ok(fetched)) = fetching.await {
                self.buffer.extend(fetched.entries);
            }
        }
        // Whatever is read and unacknowledged was not recorded: make it
        // claimable now rather than after the claim wait.
        let mut ids: Vec<String> = self.buffer.drain(..).map(|entry| entry.id).collect();
        ids.extend(self.held.lock().unwrap_or_else(|p| p.into_inner()).drain());
        give_back(&mut self.commands, &self.spec, &self.me, self.claim_idle, &ids).await;
        // Leaves the group when it holds nothing: deleting a consumer drops
        // its pending entries, which no one would then get.
        let pending: redis::RedisResult<redis::streams::StreamPendingCountReply> = self
            .commands
            .xpending_consumer_count(&self.spec.stream, &self.spec.group, "-", "+", 1, &self.me)
            .await;
        if pending.is_ok_and(|pending| pending.ids.is_empty()) {
            let _: redis::RedisResult<i64> = self
                .commands
                .xgroup_delconsumer(&self.spec.stream, &self.spec.group, &self.me)
                .await;
        }
    }
}

/// A source dropped without being closed stops touching its entries: they
/// are claimed after the claim wait.
impl Drop for RedisEntries {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

struct RedisProbe {
    commands: MultiplexedConnection,
    spec: RedisSource,
}

impl BacklogProbe for RedisProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async move { group_backlog(&mut self.commands.clone(), &self.spec).await })
    }
}
