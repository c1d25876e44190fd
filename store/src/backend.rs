//! What a store does, one trait per concern; [`Backend`] is all of them.
//! Everything above the store crate reaches them through [`crate::Store`].

use async_trait::async_trait;
use bida_domain::stats::{Overview, StatsQuery, StatsSeries};
use bida_domain::task::{TaskCursor, TaskFilter, TaskPage, TaskSummary};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

use crate::topics::{ClaimRequest, Claimed, LogMessage, LogSearch, PartitionBounds, Publish, Published, SliceDropped};
use crate::{
    Append, Channel, ClaimedTask, ConsumerCounterChange, FeedPosition, FeedRead, HeldLease, LaneBacklog, LeaseRequest,
    Leased, MemberRow, NodeInfo, Readiness, RetentionPolicy, RetentionReport, RuntimeRow, ScheduleEntry, SessionRow,
    StatsBucket, StatusCountChange, StoreError, StoredEvent, WriterStats,
};

/// Every concern of a store.
pub trait Backend:
    AccessRecords
    + Announcements
    + Appends
    + Checkpoints
    + ConsumerRuntime
    + EventLog
    + Folds
    + Health
    + Leadership
    + Nodes
    + PullQueues
    + Retention
    + Schedule
    + Sessions
    + StatsReads
    + TaskListReads
    + TaskStreams
    + TopicLog
{
}

impl<T> Backend for T where
    T: AccessRecords
        + Announcements
        + Appends
        + Checkpoints
        + ConsumerRuntime
        + EventLog
        + Folds
        + Health
        + Leadership
        + Nodes
        + PullQueues
        + Retention
        + Schedule
        + Sessions
        + StatsReads
        + TaskListReads
        + TaskStreams
        + TopicLog
{
}

/// Every concern's trait, for the stores' implementations (callers of a
/// [`crate::Store`] need none of them in scope).
pub mod prelude {
    pub use super::{
        AccessRecords, Announcements, Appends, Checkpoints, ConsumerRuntime, EventLog, Folds, Health, Leadership,
        Nodes, PullQueues, Retention, Schedule, Sessions, StatsReads, TaskListReads, TaskStreams, TopicLog,
    };
}

/// Appending events (with the schedule changes they imply).
#[async_trait]
pub trait Appends: Send + Sync {
    /// Appends through the group commit and waits until it is durable.
    async fn append(&self, append: Append) -> Result<(), StoreError>;

    /// What the group commit has done so far.
    fn writer_stats(&self) -> &WriterStats;

    /// The PostgreSQL pool behind the store, if that is what it is: for
    /// tests and benchmarks that look at tables directly, never for Bida.
    fn postgres_pool(&self) -> Option<&PgPool> {
        None
    }
}

/// Who runs each singleton reader (a projection, the notifier): one node at a time.
pub trait Leadership: Send + Sync {
    /// A contender for leadership of `name`.
    fn singleton(&self, name: &str) -> Singleton;
}

/// A contender for one singleton's leadership.
pub struct Singleton(pub(crate) Box<dyn Lead>);

impl Singleton {
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Whether this node leads now, taking the lead if it is free.
    pub async fn lead(&mut self) -> Result<bool, StoreError> {
        self.0.lead().await
    }
}

#[async_trait]
pub(crate) trait Lead: Send + Sync {
    fn name(&self) -> &str;
    async fn lead(&mut self) -> Result<bool, StoreError>;
}

/// A connection listening on one [`Channel`].
pub struct Notifications(pub(crate) Box<dyn Listener>);

impl Notifications {
    /// The next announcement's payload; `None` once the connection is lost,
    /// after which the caller listens again (and reloads: what was announced
    /// meanwhile was not heard). Cancel-safe.
    pub async fn next(&mut self) -> Option<String> {
        self.0.next().await
    }
}

#[async_trait]
pub(crate) trait Listener: Send + Sync {
    async fn next(&mut self) -> Option<String>;
}

/// A page of a projection being folded. Nothing is visible to readers until
/// [`FoldPage::commit`]; dropped without it, nothing happened.
pub type Fold = Box<dyn FoldPage>;

/// What folding a page reads and writes, in one transaction.
#[async_trait]
pub trait FoldPage: Send {
    /// Ends the page: the reader's checkpoint moves to `last`, and everything
    /// written becomes visible at once.
    async fn commit(self: Box<Self>, last: FeedPosition) -> Result<(), StoreError>;

    /// A position kept beside the checkpoints (how far telemetry counted, say).
    async fn mark(&mut self, name: &str) -> Result<Option<FeedPosition>, StoreError>;

    async fn set_mark(&mut self, name: &str, at: FeedPosition) -> Result<(), StoreError>;

    /// The stored summaries of these tasks (those the list has).
    async fn task_summaries(&mut self, ids: &[&str]) -> Result<HashMap<String, TaskSummary>, StoreError>;

    /// Writes the tasks' summaries, new or changed.
    async fn save_task_summaries(&mut self, summaries: Vec<TaskSummary>) -> Result<(), StoreError>;

    /// Moves the counts of tasks by status and apps. Callers pass changes in
    /// one order (sorted), so concurrent writers lock rows alike.
    async fn add_status_counts(&mut self, changes: &[StatusCountChange]) -> Result<(), StoreError>;

    /// Adds to the consumers' totals.
    async fn add_consumer_counters(&mut self, changes: Vec<(String, ConsumerCounterChange)>) -> Result<(), StoreError>;

    /// Adds to the per-minute statistics.
    async fn add_stats(&mut self, buckets: Vec<StatsBucket>) -> Result<(), StoreError>;

    /// Empties the task list's read models, for a rebuild.
    async fn clear_task_list(&mut self) -> Result<(), StoreError>;
}

/// Keys found by hash and when they were last used.
#[async_trait]
pub trait AccessRecords: Send + Sync {
    /// The id of the key whose hash (SHA-256, hex) this is, revoked or not.
    async fn key_id_by_hash(&self, hash: &str) -> Result<Option<String>, StoreError>;

    /// Whether any key was ever issued.
    async fn has_keys(&self) -> Result<bool, StoreError>;

    /// Records that keys were used (the later time wins).
    async fn touch_keys(&self, used: &[(String, DateTime<Utc>)]) -> Result<(), StoreError>;

    async fn key_usage(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError>;
}

/// What nodes report of the consumers they run, and the consumers' totals.
#[async_trait]
pub trait ConsumerRuntime: Send + Sync {
    /// Publishes this node's consumer reports: the rows of consumers not in
    /// `running` go, `changed` rows (consumer id, state, report) are written,
    /// and the node's stamp confirms its other rows as they stand.
    async fn publish_consumer_runtime(
        &self,
        node: Uuid,
        running: &[&str],
        changed: &[(String, String, Value)],
    ) -> Result<(), StoreError>;

    /// Reports on some consumers (`None`: on every consumer) from nodes that
    /// confirmed them within `fresh_secs`, by consumer.
    async fn consumer_runtime(
        &self,
        consumers: Option<&[&str]>,
        fresh_secs: f64,
    ) -> Result<Vec<RuntimeRow>, StoreError>;

    /// Tasks submitted and delivered per second over the last minute, from the
    /// per-minute statistics (the current minute counts for what has passed of
    /// it), for each of `consumers` that had any.
    async fn consumer_rates(&self, consumers: &[&str]) -> Result<HashMap<String, (f64, f64)>, StoreError>;

    /// Running totals and gauges of consumers' tasks (from the task list
    /// projection), for each of `consumers` that has any.
    async fn consumer_counters(&self, consumers: &[&str]) -> Result<HashMap<String, [i64; 7]>, StoreError>;
}

/// How far each catch-up reader has read the feed.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// Where the reader `name` stands; the start of the feed if it never read.
    async fn checkpoint(&self, name: &str) -> Result<FeedPosition, StoreError> {
        Ok(self.saved_checkpoint(name).await?.unwrap_or_default())
    }

    async fn saved_checkpoint(&self, name: &str) -> Result<Option<FeedPosition>, StoreError>;

    /// How many committed events the reader `name` has not read yet,
    /// including those it cannot read yet (on PostgreSQL a transaction still
    /// running anywhere in the cluster, in any database, holds every catch-up
    /// reader below it): a reader held back shows as behind, not as caught up.
    async fn unread_events(&self, name: &str) -> Result<i64, StoreError>;

    async fn save_checkpoint(&self, name: &str, at: FeedPosition) -> Result<(), StoreError>;
}

/// The console's login sessions.
#[async_trait]
pub trait Sessions: Send + Sync {
    async fn start_session(
        &self,
        token_hash: &str,
        username: &str,
        role: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
        client_ip: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The session, unless it expired or ended.
    async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError>;

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError>;

    /// Ends every session of a user (deleted, or its password or role changed),
    /// and forgets expired ones.
    async fn end_sessions_of(&self, username: &str) -> Result<u64, StoreError>;
}

/// The event log: one aggregate's events, and the feed every catch-up reader follows.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// One aggregate's events, in order.
    async fn events_of(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// One aggregate's events after `after_sequence`, in order.
    /// Every event of every aggregate of a type, by aggregate and in order.
    async fn events_of_type(&self, aggregate_type: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// One aggregate's events after `after_sequence`, in order.
    async fn events_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The events of many aggregates of one type, ordered by aggregate then sequence.
    async fn events_of_many(&self, aggregate_type: &str, ids: &[String]) -> Result<Vec<StoredEvent>, StoreError>;

    /// The aggregate's current version: its last sequence number, 0 if it has none.
    async fn last_sequence(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError>;

    /// Up to `limit` events after `after`, from transactions that can no longer
    /// be overtaken by a running one.
    async fn read_feed(
        &self,
        after: FeedPosition,
        limit: i64,
        read: FeedRead<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The last readable position of the feed, to measure how far readers lag.
    async fn feed_head(&self) -> Result<FeedPosition, StoreError>;
}

/// The nodes sharing the store, their heartbeats and reports.
#[async_trait]
pub trait Nodes: Send + Sync {
    async fn register_node(&self, id: Uuid, name: &str, version: &str, listen: &str) -> Result<(), StoreError>;

    /// Records that the node is alive. `false` when the node was declared
    /// stopped meanwhile (then its tasks may already belong to others).
    async fn heartbeat(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Stores what the node says about itself, shown in the node list.
    async fn set_node_report(&self, id: Uuid, report: &serde_json::Value) -> Result<(), StoreError>;

    /// Consumer actors that reported from a node in the last `fresh_secs`.
    async fn consumer_actors_on(&self, node: Uuid, fresh_secs: f64) -> Result<i64, StoreError>;

    async fn mark_node_stopped(&self, id: Uuid) -> Result<(), StoreError>;

    /// Forgets nodes that stopped (or went silent) more than `age` ago.
    async fn prune_nodes(&self, age: Duration) -> Result<u64, StoreError>;

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// Records which of the node's delivery gates were busy, and reads what
    /// every node alive in the last `fresh` said: (node, its busy gates),
    /// this node included.
    async fn share_busy_gates(
        &self,
        id: Uuid,
        busy: &[String],
        fresh: Duration,
    ) -> Result<Vec<(Uuid, Vec<String>)>, StoreError>;
}

/// The durable schedule: which task is due when, and which node holds it.
#[async_trait]
pub trait Schedule: Send + Sync {
    /// Claims up to `limit` free tasks due within `lookahead`, earliest first.
    /// `SKIP LOCKED` lets several nodes claim at once without taking the same task.
    async fn claim_due(&self, node: Uuid, lookahead: Duration, limit: i64) -> Result<Vec<ClaimedTask>, StoreError>;

    /// Frees the tasks held by nodes that stopped or whose heartbeat is older
    /// than `ttl`, so any live node can claim them; never those of `caller`,
    /// which is alive whatever its heartbeat says (a node whose heartbeat
    /// was late freed its own tasks, and wrote them twice).
    async fn free_tasks_of_dead_nodes(&self, caller: Uuid, ttl: Duration) -> Result<u64, StoreError>;

    /// Tasks this node has held for longer than `older_than` (to find ones no
    /// actor holds any more).
    async fn tasks_owned_by(&self, node: Uuid, older_than: Duration) -> Result<Vec<String>, StoreError>;

    /// Gives tasks back to the shared schedule.
    async fn release_tasks(&self, node: Uuid, task_ids: &[String]) -> Result<u64, StoreError>;

    /// Gives back every task the node holds (at shutdown).
    async fn release_all_tasks(&self, node: Uuid) -> Result<u64, StoreError>;

    async fn schedule_of(&self, task_ids: &[String]) -> Result<HashMap<String, ScheduleEntry>, StoreError>;

    /// How many tasks have an attempt due, and how many are overdue by more than `late`.
    async fn schedule_depth(&self, late: Duration) -> Result<(i64, i64), StoreError>;
}

/// Pull lanes and their members (pull consumers).
#[async_trait]
pub trait PullQueues: Send + Sync {
    /// Leases up to `limit` of the lane's due rows to the member, earliest
    /// first; rows whose lease ran out (or whose member is gone) come back
    /// as [`Leased::Expired`] instead, not leased.
    async fn lease_due(&self, request: LeaseRequest<'_>) -> Result<Vec<Leased>, StoreError>;

    /// The leases among `lease_ids` that are still held (whatever their lane).
    async fn held_leases(&self, lease_ids: &[Uuid]) -> Result<Vec<HeldLease>, StoreError>;

    /// Records that the member was heard from (a pull or a heartbeat).
    async fn touch_member(
        &self,
        consumer_id: &str,
        member: &str,
        address: Option<&str>,
        client_version: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Counts `acked` acks of the member.
    async fn count_acks(&self, consumer_id: &str, member: &str, acked: i64) -> Result<(), StoreError>;

    /// The consumer's members, with the leases each holds.
    async fn members(&self, consumer_id: &str) -> Result<Vec<MemberRow>, StoreError>;

    /// The members heard from within `timeout`.
    async fn live_members(&self, consumer_id: &str, timeout: Duration) -> Result<Vec<String>, StoreError>;

    /// Each of the consumer's lanes with what waits in it.
    async fn lane_backlogs(&self, consumer_id: &str) -> Result<Vec<LaneBacklog>, StoreError>;

    /// Forgets the consumer's members (it was deleted).
    async fn forget_members(&self, consumer_id: &str) -> Result<u64, StoreError>;

    /// Forgets one member: its leases return at the next pull (it is gone).
    async fn forget_member(&self, consumer_id: &str, member: &str) -> Result<bool, StoreError>;

    /// The most messages waiting (not leased) in any one of `lanes`.
    async fn most_waiting(&self, lanes: &[String]) -> Result<i64, StoreError>;

    /// Up to `limit` of the tasks waiting or leased in `lane`.
    async fn lane_tasks(&self, lane: &str, limit: i64) -> Result<Vec<String>, StoreError>;
}

/// Tasks' event streams, loaded for the API and searched.
#[async_trait]
pub trait TaskStreams: Send + Sync {
    /// The partition of task `id`, if it exists.
    async fn task_stream_epoch(&self, id: &str) -> Result<Option<i32>, StoreError>;

    /// Tasks submitted since `since` whose request body contains `text`,
    /// newest first: a scan of those days' partitions only, cut off after
    /// `budget` (a search of a large store answers fast, or says it could
    /// not, rather than load the database).
    async fn tasks_whose_body_contains(
        &self,
        text: &str,
        since: DateTime<Utc>,
        limit: i64,
        budget: std::time::Duration,
    ) -> Result<Vec<String>, StoreError>;
}

/// The built-in topics' log (see [`crate::topics`]).
#[async_trait]
pub trait TopicLog: Send + Sync {
    /// Makes a log for a new topic (its partitions start at offset 0), or
    /// brings an existing one to `partitions` (more, never fewer) and
    /// `retention`.
    async fn shape_log(&self, topic: &str, partitions: i32, retention: TimeDelta) -> Result<(), StoreError>;

    /// Drops a topic's log: its messages, its subscriptions' offsets and claims.
    async fn drop_log(&self, topic: &str) -> Result<(), StoreError>;

    /// Appends messages in one transaction, each partition's in order, and
    /// wakes the topics' readers on every node at commit.
    async fn publish(&self, messages: Vec<Publish>) -> Result<Vec<Published>, StoreError>;

    /// Up to `limit` messages of a partition from offset `from` on.
    async fn read_log(&self, topic: &str, partition: i32, from: i64, limit: i64)
        -> Result<Vec<LogMessage>, StoreError>;

    /// Each partition's first kept and next offset.
    async fn log_bounds(&self, topic: &str) -> Result<Vec<PartitionBounds>, StoreError>;

    /// Each partition's first offset published at or after `at` (its next
    /// offset when none is).
    async fn offsets_at(&self, topic: &str, at: DateTime<Utc>) -> Result<Vec<(i32, i64)>, StoreError>;

    /// A subscription's committed offsets (the next to read), by partition.
    async fn subscription_offsets(&self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, StoreError>;

    /// Moves a subscription's committed offsets forward (never back: a
    /// member late with its commit does not undo its successor's).
    async fn commit_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), StoreError>;

    /// Sets a stopped subscription's offsets, back or forward.
    async fn reset_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), StoreError>;

    /// Forgets a subscription (its consumer was deleted).
    async fn forget_subscription(&self, group: &str) -> Result<(), StoreError>;

    /// Records the member alive and takes its share of the topic's
    /// partitions: those free (or held by a member gone silent) that fall to
    /// it among the live members. Answers the partitions it holds now and
    /// its share; [`StoreError::Missing`] when the topic has no log.
    async fn claim_partitions(&self, claim: ClaimRequest<'_>) -> Result<Claimed, StoreError>;

    /// The members of a subscription heard from within `timeout`.
    async fn group_members(
        &self,
        group: &str,
        topic: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// The member leaves: its partitions are free for the others at once.
    async fn leave_group(&self, group: &str, topic: &str, member: &str) -> Result<(), StoreError>;

    /// Gives partitions back (their messages are done, or the member leaves).
    async fn release_partitions(
        &self,
        group: &str,
        topic: &str,
        member: &str,
        partitions: &[i32],
    ) -> Result<(), StoreError>;

    /// Makes every topic's slices for `now` and the next, and drops every
    /// slice older than its topic's retention at `now`.
    async fn maintain_logs(&self, now: DateTime<Utc>) -> Result<Vec<SliceDropped>, StoreError>;

    /// Messages of a topic matching the search, newest first.
    async fn search_log(&self, topic: &str, search: &LogSearch) -> Result<Vec<LogMessage>, StoreError>;
}

/// Finished tasks dropped after their retention.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Creates the partitions of yesterday, today and the next days.
    async fn ensure_partitions(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// One retention pass over every expired day, as of `now`.
    async fn retain(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport, StoreError>;
}

/// Changes announced to every node.
#[async_trait]
pub trait Announcements: Send + Sync {
    /// Starts listening on `channel`.
    async fn listen(&self, channel: Channel) -> Result<Notifications, StoreError>;

    /// Tells every node (this one too) about a change on `channel`.
    async fn announce(&self, channel: Channel) -> Result<(), StoreError>;
}

/// Pages of a projection folded with their checkpoint.
#[async_trait]
pub trait Folds: Send + Sync {
    /// Starts folding the page read at `at` for the reader `name`; `None`
    /// when another runner has moved the checkpoint on meanwhile (the page
    /// is then folded already). The checkpoint row stays locked until the
    /// fold ends, which serialises runners.
    async fn begin_fold(&self, name: &str, at: FeedPosition) -> Result<Option<Fold>, StoreError>;

    /// Starts a rebuild of the reader `name`: its read model emptied by the
    /// caller, its checkpoint back at the start when the fold commits.
    async fn begin_rebuild(&self, name: &str) -> Result<Fold, StoreError>;
}

/// Statistics read from the read models.
#[async_trait]
pub trait StatsReads: Send + Sync {
    /// Series of the query, at most `max_series` of them (the busiest first).
    async fn stats_series(&self, query: &StatsQuery, max_series: i64) -> Result<Vec<StatsSeries>, StoreError>;

    /// Tasks by status, from the task list (every status, zeros included).
    async fn tasks_by_status(&self) -> Result<HashMap<String, i64>, StoreError>;

    /// Tasks by status, and per app, from the task list.
    async fn task_overview(&self) -> Result<Overview, StoreError>;

    /// Drops buckets older than `keep`; returns how many.
    async fn prune_stats(&self, keep: TimeDelta) -> Result<u64, StoreError>;
}

/// Task lists read from the read models.
#[async_trait]
pub trait TaskListReads: Send + Sync {
    /// One page of tasks, newest first.
    async fn task_page(
        &self,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, StoreError>;

    /// Ids of up to `limit` tasks matching the filter, oldest first (for bulk replay).
    async fn task_ids(&self, filter: &TaskFilter, limit: i64) -> Result<Vec<String>, StoreError>;
}

/// Whether the store answers and its schema is current.
#[async_trait]
pub trait Health: Send + Sync {
    async fn readiness(&self) -> Readiness;
}
