//! The task list: one row per task with the columns lists filter on, and the
//! task's summary as a JSON document.

use bida_domain::task::{TaskCursor, TaskEvent, TaskFilter, TaskPage, TaskStatus, TaskSummary};
use bida_store::{ConsumerCounterChange, FeedPosition, Fold, Store, StoredEvent, TASK_TYPE};
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
    async fn uncounted(mut self, fold: &mut Fold) -> Result<Self, ProjectionError> {
        let Some(last) = self.reached.iter().map(|(at, _)| *at).max() else {
            return Ok(self);
        };
        if let Some(mark) = fold.mark(COUNTED_MARK).await? {
            self.reached.retain(|(at, _)| *at > mark);
            if last <= mark {
                return Ok(self);
            }
        }
        fold.set_mark(COUNTED_MARK, last).await?;
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

    async fn apply(&self, fold: &mut Fold, events: &[StoredEvent]) -> Result<Milestones, ProjectionError> {
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
        let mut summaries = fold.task_summaries(&to_load).await?;
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
        moves.save(fold).await?;
        fold.save_task_summaries(summaries.into_values().collect()).await?;
        fold.add_consumer_counters(counters.into_iter().map(|(id, c)| (id, c.0)).collect())
            .await?;
        stats.save(fold).await?;
        milestones.uncounted(fold).await
    }

    async fn reset(&self, fold: &mut Fold) -> Result<(), ProjectionError> {
        Ok(fold.clear_task_list().await?)
    }
}

/// What a page of task events adds to one consumer's totals.
#[derive(Debug, Default)]
struct ConsumerCounters(ConsumerCounterChange);

impl ConsumerCounters {
    fn count(&mut self, event: &TaskEvent, before: Option<TaskStatus>, after: TaskStatus) {
        let moved = |status: TaskStatus| i64::from(after == status) - i64::from(before == Some(status));
        let c = &mut self.0;
        c.retrying += moved(TaskStatus::Retrying);
        c.dead += moved(TaskStatus::Dead);
        match event {
            TaskEvent::TaskSubmitted { .. } => c.consumed += 1,
            TaskEvent::AttemptSucceeded { .. } => c.delivered += 1,
            TaskEvent::MessageDelivered { .. } => {
                c.consumed += 1;
                c.delivered += 1;
            }
            TaskEvent::AttemptFailed { attempt, .. } => {
                c.failed_attempts += 1;
                c.timeouts += i64::from(attempt.timed_out);
            }
            TaskEvent::TaskDeadLettered { .. } => c.dead_lettered += 1,
            TaskEvent::TaskCancelled { .. } | TaskEvent::RetryRequested { .. } | TaskEvent::TermsAdopted { .. } => {}
        }
    }
}

impl TaskList {
    /// One page of tasks, newest first.
    pub async fn page(
        store: &Store,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, ProjectionError> {
        Ok(store.task_page(filter, after, limit).await?)
    }

    /// Ids of up to `limit` tasks matching the filter, oldest first (for bulk replay).
    pub async fn ids(store: &Store, filter: &TaskFilter, limit: i64) -> Result<Vec<String>, ProjectionError> {
        Ok(store.task_ids(filter, limit).await?)
    }
}
