//! The task list: one row per task with the columns lists filter on, and the
//! task's summary as a JSON document.

use bida_domain::task::{EndpointHost, TaskEvent, TaskStatus, TaskSummary};
use bida_store::{FeedPosition, StoredEvent, TASK_TYPE};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Transaction};
use std::collections::{HashMap, HashSet};

use crate::stats::StatsTally;
use crate::status_counts::StatusMoves;
use crate::{Projection, ProjectionError};

/// The task list, the consumers' counters and the per-minute statistics:
/// all need each task's consumer, apps and URL, which only its first event holds.
pub struct TaskList;

/// Tasks started and finished in a page, counted in telemetry once it
/// commits. Label sets are kept once per page, not once per event: a page
/// holds thousands of events of a handful of consumers and apps.
#[derive(Debug, Default)]
pub struct Milestones {
    reached: Vec<(FeedPosition, usize)>,
    kinds: Vec<MilestoneKind>,
}

/// What a milestone is counted as: the metric and its labels.
#[derive(Debug)]
struct MilestoneKind {
    milestone: Milestone,
    consumer: Option<String>,
    source_app: Option<String>,
    /// Only finished tasks are counted by their target.
    target_app: Option<String>,
}

impl MilestoneKind {
    fn labels(&self) -> Vec<bida_telemetry::KeyValue> {
        use bida_telemetry::KeyValue;
        let mut labels = Vec::with_capacity(4);
        if let Some(consumer) = &self.consumer {
            labels.push(KeyValue::new("bida.consumer", consumer.clone()));
        }
        if let Some(app) = &self.source_app {
            labels.push(KeyValue::new("bida.source_app", app.clone()));
        }
        if let Some(app) = &self.target_app {
            labels.push(KeyValue::new("bida.target_app", app.clone()));
        }
        match self.milestone {
            Milestone::Submitted => {}
            Milestone::Delivered => labels.push(KeyValue::new("bida.outcome", "delivered")),
            Milestone::Dead => labels.push(KeyValue::new("bida.outcome", "dead")),
        }
        labels
    }
}

/// What a task event means to telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Milestone {
    Submitted,
    Delivered,
    Dead,
}

impl Milestone {
    fn of(event: &TaskEvent) -> &'static [Milestone] {
        match event {
            TaskEvent::TaskSubmitted { .. } => &[Milestone::Submitted],
            TaskEvent::AttemptSucceeded { .. } => &[Milestone::Delivered],
            TaskEvent::MessageDelivered { .. } => &[Milestone::Submitted, Milestone::Delivered],
            TaskEvent::TaskDeadLettered { .. } => &[Milestone::Dead],
            _ => &[],
        }
    }
}

/// Where the furthest event counted in telemetry is kept. A rebuild folds old
/// events again and must not count them twice, on this node or another; a
/// rebuild resets the checkpoint, never this mark.
const COUNTED_MARK: &str = "task_list.counted";

impl Milestones {
    /// Keeps only what no fold has counted yet, and moves the mark past it.
    async fn uncounted(mut self, tx: &mut Transaction<'static, Postgres>) -> Result<Self, ProjectionError> {
        let Some(last) = self.reached.iter().map(|(at, _)| *at).max() else {
            return Ok(self);
        };
        let mark: Option<(i64, i64)> =
            sqlx::query_as("SELECT transaction_id::text::bigint, position FROM projection_checkpoints WHERE name = $1")
                .bind(COUNTED_MARK)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((transaction_id, position)) = mark {
            let mark = FeedPosition {
                transaction_id,
                position,
            };
            self.reached.retain(|(at, _)| *at > mark);
            if last <= mark {
                return Ok(self);
            }
        }
        bida_store::save_checkpoint_in(tx, COUNTED_MARK, last).await?;
        Ok(self)
    }

    fn note(&mut self, at: FeedPosition, summary: &TaskSummary, event: &TaskEvent) {
        for &milestone in Milestone::of(event) {
            let target_app = match milestone {
                Milestone::Submitted => None,
                Milestone::Delivered | Milestone::Dead => summary.target_app.as_deref(),
            };
            let same = |kind: &MilestoneKind| {
                kind.milestone == milestone
                    && kind.consumer == summary.consumer_id
                    && kind.source_app == summary.source_app
                    && kind.target_app.as_deref() == target_app
            };
            let index = match self.kinds.iter().position(same) {
                Some(index) => index,
                None => {
                    self.kinds.push(MilestoneKind {
                        milestone,
                        consumer: summary.consumer_id.clone(),
                        source_app: summary.source_app.clone(),
                        target_app: target_app.map(String::from),
                    });
                    self.kinds.len() - 1
                }
            };
            self.reached.push((at, index));
        }
    }

    /// How many of each kind were reached.
    fn tally(&self) -> impl Iterator<Item = (&MilestoneKind, u64)> {
        let mut counts = vec![0u64; self.kinds.len()];
        for (_, index) in &self.reached {
            counts[*index] += 1;
        }
        self.kinds.iter().zip(counts).filter(|(_, n)| *n > 0)
    }
}

impl Projection for TaskList {
    const NAME: &'static str = "task_list";
    // Message bodies can be large and the list never shows them.
    const WITHOUT: &'static [&'static str] = &["spec", "request", "body"];

    type Committed = Milestones;

    fn committed(&self, milestones: Milestones) {
        let metrics = bida_telemetry::instruments();
        for (kind, n) in milestones.tally() {
            let counter = match kind.milestone {
                Milestone::Submitted => &metrics.tasks_submitted,
                Milestone::Delivered | Milestone::Dead => &metrics.tasks_finished,
            };
            counter.add(n, &kind.labels());
        }
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[StoredEvent],
    ) -> Result<Milestones, ProjectionError> {
        let mut decoded = Vec::new();
        for stored in events.iter().filter(|e| e.aggregate_type == TASK_TYPE) {
            match stored.decode::<TaskEvent>() {
                Ok(event) => decoded.push((stored.aggregate_id.as_str(), event, stored.feed_position())),
                // One event this version cannot read (written by a newer one,
                // say) must not stop the whole list; it is reported and skipped.
                Err(e) => {
                    tracing::error!(error = %e, position = stored.position, "task event skipped by the task list")
                }
            }
        }
        if decoded.is_empty() {
            return Ok(Milestones::default());
        }
        // Tasks whose first event is not in this page are folded on top of their stored summary.
        let mut started: HashSet<&str> = HashSet::new();
        let mut to_load: HashSet<&str> = HashSet::new();
        for (id, event, _) in &decoded {
            if event.submission().is_some() {
                started.insert(id);
            } else if !started.contains(id) {
                to_load.insert(id);
            }
        }
        let to_load: Vec<&str> = to_load.into_iter().collect();
        let mut summaries: HashMap<String, TaskSummary> = HashMap::new();
        if !to_load.is_empty() {
            let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, doc::text FROM task_view WHERE id = ANY($1)")
                .bind(&to_load)
                .fetch_all(&mut **tx)
                .await?;
            for (id, doc) in rows {
                let summary = serde_json::from_str(&doc).map_err(|e| bida_store::StoreError::Decode {
                    aggregate_id: id.clone(),
                    sequence: 0,
                    message: format!("task_view document: {e}"),
                })?;
                summaries.insert(id, summary);
            }
        }
        let initial: HashMap<String, TaskStatus> = summaries.iter().map(|(id, s)| (id.clone(), s.status)).collect();
        let mut counters: HashMap<String, ConsumerCounters> = HashMap::new();
        let mut stats = StatsTally::default();
        let mut milestones = Milestones::default();
        for (id, event, at) in &decoded {
            let (before, summary) = match summaries.get_mut(*id) {
                Some(summary) => {
                    let before = summary.status;
                    summary.apply(event);
                    (Some(before), summary)
                }
                None => match TaskSummary::start(id, event) {
                    Some(summary) => (None, summaries.entry(id.to_string()).or_insert(summary)),
                    None => {
                        tracing::warn!(task = id, "event for a task the list has never seen; skipped");
                        continue;
                    }
                },
            };
            if let Some(consumer) = &summary.consumer_id {
                counters
                    .entry(consumer.clone())
                    .or_default()
                    .count(event, before, summary.status);
            }
            stats.count(summary, event);
            milestones.note(*at, summary, event);
        }
        let mut moves = StatusMoves::default();
        for (id, summary) in &summaries {
            moves.moved(initial.get(id).copied(), summary);
        }
        moves.save(tx).await?;
        upsert(tx, summaries.into_values()).await?;
        add_counters(tx, counters).await?;
        stats.save(tx).await?;
        milestones.uncounted(tx).await
    }

    async fn reset(&self, tx: &mut Transaction<'static, Postgres>) -> Result<(), ProjectionError> {
        sqlx::query("TRUNCATE task_view, task_counts, consumer_counters, stats_minute")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// What a page of task events adds to one consumer's totals.
#[derive(Debug, Default)]
struct ConsumerCounters {
    consumed: i64,
    delivered: i64,
    failed_attempts: i64,
    timeouts: i64,
    dead_lettered: i64,
    /// Changes of how many tasks are retrying / dead now.
    retrying: i64,
    dead: i64,
}

impl ConsumerCounters {
    fn count(&mut self, event: &TaskEvent, before: Option<TaskStatus>, after: TaskStatus) {
        let moved = |status: TaskStatus| i64::from(after == status) - i64::from(before == Some(status));
        self.retrying += moved(TaskStatus::Retrying);
        self.dead += moved(TaskStatus::Dead);
        match event {
            TaskEvent::TaskSubmitted { .. } => self.consumed += 1,
            TaskEvent::AttemptSucceeded { .. } => self.delivered += 1,
            TaskEvent::MessageDelivered { .. } => {
                self.consumed += 1;
                self.delivered += 1;
            }
            TaskEvent::AttemptFailed { attempt, .. } => {
                self.failed_attempts += 1;
                self.timeouts += i64::from(attempt.timed_out);
            }
            TaskEvent::TaskDeadLettered { .. } => self.dead_lettered += 1,
            TaskEvent::TaskCancelled { .. } | TaskEvent::RetryRequested { .. } => {}
        }
    }
}

async fn add_counters(
    tx: &mut Transaction<'static, Postgres>,
    counters: HashMap<String, ConsumerCounters>,
) -> Result<(), ProjectionError> {
    if counters.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut columns: [Vec<i64>; 7] = Default::default();
    for (id, c) in counters {
        ids.push(id);
        let values = [
            c.consumed,
            c.delivered,
            c.failed_attempts,
            c.timeouts,
            c.dead_lettered,
            c.retrying,
            c.dead,
        ];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
    }
    let [consumed, delivered, failed, timeouts, dead_lettered, retrying, dead] = columns;
    sqlx::query(
        "INSERT INTO consumer_counters AS c
             (consumer_id, consumed, delivered, failed_attempts, timeouts, dead_lettered, retrying, dead)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                              $7::bigint[], $8::bigint[])
         ON CONFLICT (consumer_id) DO UPDATE SET
             consumed = c.consumed + EXCLUDED.consumed,
             delivered = c.delivered + EXCLUDED.delivered,
             failed_attempts = c.failed_attempts + EXCLUDED.failed_attempts,
             timeouts = c.timeouts + EXCLUDED.timeouts,
             dead_lettered = c.dead_lettered + EXCLUDED.dead_lettered,
             retrying = c.retrying + EXCLUDED.retrying,
             dead = c.dead + EXCLUDED.dead",
    )
    .bind(&ids)
    .bind(&consumed)
    .bind(&delivered)
    .bind(&failed)
    .bind(&timeouts)
    .bind(&dead_lettered)
    .bind(&retrying)
    .bind(&dead)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert(
    tx: &mut Transaction<'static, Postgres>,
    summaries: impl Iterator<Item = TaskSummary>,
) -> Result<(), ProjectionError> {
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut consumers = Vec::new();
    let mut sources = Vec::new();
    let mut targets = Vec::new();
    let mut created = Vec::new();
    let mut updated = Vec::new();
    let mut docs = Vec::new();
    let mut hosts: Vec<Option<String>> = Vec::new();
    // A consumer's tasks share one URL: parse it once per run of them.
    let mut last_url: Option<String> = None;
    for summary in summaries {
        match (&last_url, hosts.last()) {
            (Some(url), Some(host)) if *url == summary.url => hosts.push(host.clone()),
            _ => {
                hosts.push(EndpointHost::of_url(&summary.url).map(|host| host.to_string()));
                last_url = Some(summary.url.clone());
            }
        }
        docs.push(
            serde_json::to_string(&summary).map_err(|e| bida_store::StoreError::Decode {
                aggregate_id: summary.id.clone(),
                sequence: 0,
                message: e.to_string(),
            })?,
        );
        ids.push(summary.id);
        statuses.push(summary.status.as_str());
        consumers.push(summary.consumer_id);
        sources.push(summary.source_app);
        targets.push(summary.target_app);
        created.push(summary.created_at);
        updated.push(summary.updated_at);
    }
    sqlx::query(
        "INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id,
                                endpoint_host)
         SELECT t.id, t.status, t.source_app, t.target_app, t.created_at, t.updated_at, t.doc::json, t.consumer_id,
                t.endpoint_host
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::text[])
              AS t(id, status, source_app, target_app, created_at, updated_at, doc, consumer_id, endpoint_host)
         ON CONFLICT (id) DO UPDATE
             SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc,
                 endpoint_host = EXCLUDED.endpoint_host",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&sources)
    .bind(&targets)
    .bind(&created)
    .bind(&updated)
    .bind(&docs)
    .bind(&consumers)
    .bind(&hosts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Which tasks a list shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub source_app: Option<String>,
    pub target_app: Option<String>,
    /// Either the source or the target app.
    pub app: Option<String>,
    pub consumer_id: Option<String>,
    /// Tasks whose requests go to this host.
    pub endpoint_host: Option<EndpointHost>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Only these tasks (a search's candidates).
    pub ids: Option<Vec<String>>,
}

impl TaskFilter {
    /// Apps, consumer ids and hosts have no control characters (and Postgres text
    /// cannot hold NUL): a filter naming one matches no task.
    pub fn matches_nothing(&self) -> bool {
        [&self.source_app, &self.target_app, &self.app, &self.consumer_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.endpoint_host.as_ref().map(EndpointHost::as_str))
            .any(|name| name.chars().any(char::is_control))
    }
}

/// Where a page ends: lists are ordered newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl TaskCursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('.')?;
        // Ids are UUIDs; nothing else may reach the query (Postgres refuses NUL in text).
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskPage {
    pub items: Vec<TaskSummary>,
    pub next_cursor: Option<TaskCursor>,
}

/// Statuses as readers see them: a due task claimed by a node is delivering.
const OBSERVED_STATUS: &str = "CASE WHEN v.status IN ('pending', 'retrying') AND s.owner IS NOT NULL
                                     AND s.due_at <= now() THEN 'delivering' ELSE v.status END";

/// An attempt is due and a node holds the task.
const IN_FLIGHT: &str = "(s.owner IS NOT NULL AND s.due_at <= now())";

/// Newest first (pages) or oldest first (replay).
#[derive(Clone, Copy, PartialEq)]
enum Order {
    NewestFirst,
    OldestFirst,
}

impl Order {
    /// The ORDER BY clause over columns of `table` (`v.` or none).
    fn sql(self, table: &str) -> String {
        match self {
            Self::NewestFirst => format!(" ORDER BY {table}created_at DESC, {table}id DESC"),
            Self::OldestFirst => format!(" ORDER BY {table}created_at, {table}id"),
        }
    }
}

/// What a query returns per task.
#[derive(Clone, Copy, PartialEq)]
enum Columns {
    /// id, summary document, observed status, created_at
    Summaries,
    /// id, created_at
    Ids,
}

impl TaskList {
    /// Each branch walks one index in list order and stops at the limit; an
    /// `app` filter is two branches (source, then target app), merged after.
    fn select<'a>(
        filter: &'a TaskFilter,
        after: Option<&'a TaskCursor>,
        columns: Columns,
        order: Order,
        limit: i64,
    ) -> QueryBuilder<'a, Postgres> {
        let mut query = QueryBuilder::new(match columns {
            Columns::Summaries => "SELECT id, doc, observed, created_at FROM (",
            Columns::Ids => "SELECT id, created_at FROM (",
        });
        let branches: Vec<Option<(&str, &String)>> = match &filter.app {
            Some(app) => vec![Some(("source_app", app)), Some(("target_app", app))],
            None => vec![None],
        };
        for (n, branch) in branches.iter().enumerate() {
            if n > 0 {
                query.push(" UNION ALL ");
            }
            query.push("(SELECT v.id, v.created_at");
            if columns == Columns::Summaries {
                query
                    .push(", v.doc::text AS doc, ")
                    .push(OBSERVED_STATUS)
                    .push(" AS observed");
            }
            if filter.status == Some(TaskStatus::Delivering) {
                // Few tasks are in flight: start from the schedule.
                query.push(" FROM task_schedule s JOIN task_view v ON v.id = s.task_id WHERE ");
                query.push(IN_FLIGHT).push(" AND v.status IN ('pending', 'retrying')");
            } else {
                query.push(" FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id WHERE true");
                // A literal, not a parameter: the status index leaves delivered
                // tasks out (migrations/0007_lean_task_list.up.sql), and only a
                // literal lets the planner see it may use it. Statuses are a
                // closed set of plain words.
                if let Some(status) = filter.status {
                    query.push(format_args!(" AND v.status = '{}'", status.as_str()));
                }
                if matches!(filter.status, Some(TaskStatus::Pending | TaskStatus::Retrying)) {
                    query.push(" AND NOT ").push(IN_FLIGHT);
                }
            }
            if let Some((column, app)) = branch {
                query.push(format!(" AND v.{column} = ")).push_bind(*app);
                if n > 0 {
                    // Counted once when it is both the source and the target.
                    query.push(" AND v.source_app IS DISTINCT FROM ").push_bind(*app);
                }
            }
            if let Some(app) = &filter.source_app {
                query.push(" AND v.source_app = ").push_bind(app);
            }
            if let Some(app) = &filter.target_app {
                query.push(" AND v.target_app = ").push_bind(app);
            }
            if let Some(consumer) = &filter.consumer_id {
                query.push(" AND v.consumer_id = ").push_bind(consumer);
            }
            if let Some(host) = &filter.endpoint_host {
                query.push(" AND v.endpoint_host = ").push_bind(host.as_str());
            }
            if let Some(ids) = &filter.ids {
                query.push(" AND v.id = ANY(").push_bind(ids).push(")");
            }
            if let Some(after) = filter.created_after {
                query.push(" AND v.created_at >= ").push_bind(after);
            }
            if let Some(before) = filter.created_before {
                query.push(" AND v.created_at < ").push_bind(before);
            }
            if let Some(cursor) = after {
                query.push(" AND (v.created_at, v.id) < (").push_bind(cursor.created_at);
                query.push(", ").push_bind(&cursor.id).push(")");
            }
            query.push(order.sql("v."));
            query.push(" LIMIT ").push_bind(limit).push(")");
        }
        query
            .push(") page")
            .push(order.sql(""))
            .push(" LIMIT ")
            .push_bind(limit);
        query
    }

    /// One page of tasks, newest first.
    pub async fn page(
        store: &bida_store::Store,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, ProjectionError> {
        if filter.matches_nothing() {
            return Ok(TaskPage {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let rows: Vec<(String, String, String, DateTime<Utc>)> =
            Self::select(filter, after, Columns::Summaries, Order::NewestFirst, limit + 1)
                .build_query_as()
                .fetch_all(store.pool())
                .await?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, doc, status, _) in rows {
            let mut summary: TaskSummary = serde_json::from_str(&doc).map_err(|e| bida_store::StoreError::Decode {
                aggregate_id: id,
                sequence: 0,
                message: format!("task_view document: {e}"),
            })?;
            summary.status = TaskStatus::parse(&status).unwrap_or(summary.status);
            items.push(summary);
        }
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|last| TaskCursor {
                created_at: last.created_at,
                id: last.id.clone(),
            })
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    /// Ids of up to `limit` tasks matching the filter, oldest first (for bulk replay).
    pub async fn ids(
        store: &bida_store::Store,
        filter: &TaskFilter,
        limit: i64,
    ) -> Result<Vec<String>, ProjectionError> {
        if filter.matches_nothing() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, DateTime<Utc>)> = Self::select(filter, None, Columns::Ids, Order::OldestFirst, limit)
            .build_query_as()
            .fetch_all(store.pool())
            .await?;
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }
}
