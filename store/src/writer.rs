//! Appends: the events of one aggregate (with the task schedule change they
//! imply) handed to the store's group commit, and its settings and counters.

use bida_domain::task::ScheduleChange;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Most events in one batch statement.
    pub max_batch_events: usize,
    /// Most payload bytes in one batch statement.
    pub max_batch_bytes: usize,
    /// Batches committing at once (each holds a pool connection meanwhile).
    pub concurrency: usize,
    /// Appends waiting for a batch before callers are held back.
    pub queue: usize,
    /// How long a batch of patient appends (see [`Append`]) that found
    /// others waiting, or follows a batch of several, waits for more before
    /// it commits. Fewer, larger transactions cost Postgres less per event;
    /// a lone append, when nothing else is being written, never waits. 0:
    /// never. Tokio's timer counts whole milliseconds, so a wait can run up
    /// to a millisecond over.
    pub linger_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 2_000,
            max_batch_bytes: 16 * 1024 * 1024,
            // One batch at a time: what arrives while it commits waits for the
            // next. Four at once made more, smaller transactions, and cost
            // more CPU per message at steady rates (README, "Where a
            // message's cost goes at a steady rate, and one committer").
            concurrency: 1,
            queue: 50_000,
            // Consumers' records wait up to 2 ms for company: at a steady
            // 2,000 msgs/s Postgres spent 30% less per message; drains did not
            // move beyond their spread (README, "Fewer, larger commits: the
            // writer lingers for consumers' records").
            linger_ms: 2,
        }
    }
}

/// One event to append. `payload` and `metadata` are JSON text.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub aggregate_type: Cow<'static, str>,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: Cow<'static, str>,
    pub event_version: Cow<'static, str>,
    pub payload: String,
    pub metadata: Option<String>,
    /// The partition the event goes to: a task's submission day
    /// ([`crate::task_epoch`]), 0 for aggregates kept for good.
    pub epoch: i32,
}

/// A task's schedule change, written with its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleWrite {
    pub task_id: String,
    pub change: ScheduleChange,
    /// The node that keeps the task in memory until it is due; `None` leaves it
    /// to whichever node's scheduler claims it.
    pub owner: Option<Uuid>,
    /// The pull lane of a pulled message's task (`PullLane::key`): only
    /// members' pulls claim it. `None` keeps the lane the row has.
    pub lane: Option<String>,
}

/// What one caller appends atomically: events of one aggregate, with the
/// expected sequence implied by the first event's `sequence`.
#[derive(Clone, Debug, Default)]
pub struct Append {
    pub events: Vec<NewEvent>,
    pub schedule: Option<ScheduleWrite>,
    /// Nobody is held up while this append waits for its commit (a consumed
    /// message already delivered, acknowledged once recorded): the writer may
    /// keep it up to `linger_ms` for more appends to share the commit. An
    /// append someone waits on (an API submission, a lane kept in order)
    /// commits at once with whatever is queued.
    pub patient: bool,
}

impl Append {
    pub(crate) fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.payload.len() + e.metadata.as_ref().map_or(0, String::len))
            .sum()
    }
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub conflicts: AtomicU64,
    pub failures: AtomicU64,
    /// Sum of batch commit times, in microseconds.
    pub commit_micros: AtomicU64,
}

/// Counts a committed batch's events by aggregate type.
fn record_batch<'a>(appends: impl Iterator<Item = &'a Append>, events: usize, took: Duration) {
    let metrics = bida_telemetry::instruments();
    metrics.append_duration.record(took.as_secs_f64(), &[]);
    metrics.append_batch_size.record(events as u64, &[]);
    let mut by_type: Vec<(&str, u64)> = Vec::new();
    for event in appends.flat_map(|a| &a.events) {
        match by_type.iter_mut().find(|(t, _)| *t == event.aggregate_type) {
            Some((_, n)) => *n += 1,
            None => by_type.push((&event.aggregate_type, 1)),
        }
    }
    for (aggregate_type, n) in by_type {
        metrics.events_appended.add(
            n,
            &[bida_telemetry::KeyValue::new(
                "bida.aggregate_type",
                aggregate_type.to_string(),
            )],
        );
    }
}

/// An append waiting for its batch, and where to answer.
pub(crate) struct Job {
    pub(crate) append: Append,
    pub(crate) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The front of a store's group commit: appends queue here and wait for
/// their batch; the store's collector takes them from the receiver.
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl Writer {
    pub(crate) fn new(config: &WriterConfig) -> (Self, mpsc::Receiver<Job>, Arc<WriterStats>) {
        let (queue, jobs) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(WriterStats::default());
        (
            Self {
                queue,
                stats: stats.clone(),
            },
            jobs,
            stats,
        )
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Appends and waits until the batch holding it has committed.
    pub(crate) async fn append(&self, append: Append) -> Result<(), StoreError> {
        if append.events.is_empty() && append.schedule.is_none() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { append, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// The batches a collector hands its committers: what is queued when it
/// takes the first append, and, while patient appends keep coming, what
/// arrives within `linger_ms` after it.
pub(crate) struct Gatherer {
    linger: Duration,
    /// The last batch held several appends: more are likely on their way.
    busy: bool,
}

impl Gatherer {
    pub(crate) fn new(config: &WriterConfig) -> Self {
        Self {
            linger: Duration::from_millis(config.linger_ms),
            busy: false,
        }
    }

    /// The next batch, up to the batch limits; `None` once every sender is gone.
    pub(crate) async fn next(&mut self, jobs: &mut mpsc::Receiver<Job>, config: &WriterConfig) -> Option<Vec<Job>> {
        let mut batch = Batch::new(jobs.recv().await?);
        while !batch.full(config) {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !self.linger.is_zero() && batch.patient && (self.busy || batch.jobs.len() > 1) {
            let deadline = tokio::time::Instant::now() + self.linger;
            while !batch.full(config) && batch.patient {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    // Closed: commit what there is; the next call ends it.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.busy = batch.jobs.len() > 1;
        Some(batch.jobs)
    }
}

/// Appends gathered so far, and their size against the batch limits.
struct Batch {
    jobs: Vec<Job>,
    events: usize,
    bytes: usize,
    /// Every append in it may wait for company.
    patient: bool,
}

impl Batch {
    fn new(first: Job) -> Self {
        Self {
            events: first.append.events.len(),
            bytes: first.append.bytes(),
            patient: first.append.patient,
            jobs: vec![first],
        }
    }

    fn push(&mut self, job: Job) {
        self.events += job.append.events.len();
        self.bytes += job.append.bytes();
        self.patient &= job.append.patient;
        self.jobs.push(job);
    }

    fn full(&self, config: &WriterConfig) -> bool {
        self.events >= config.max_batch_events || self.bytes >= config.max_batch_bytes
    }
}

/// Counts a committed batch, in telemetry and in the writer's stats.
pub(crate) fn count_committed(jobs: &[Job], started: Instant, stats: &WriterStats) {
    let events: usize = jobs.iter().map(|j| j.append.events.len()).sum();
    record_batch(jobs.iter().map(|j| &j.append), events, started.elapsed());
    stats.events.fetch_add(events as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .commit_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

pub(crate) fn fail_all(jobs: Vec<Job>, error: StoreError, stats: &WriterStats) {
    tracing::warn!(appends = jobs.len(), %error, "append failed");
    stats.failures.fetch_add(1, Ordering::Relaxed);
    for job in jobs {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// The error of an append whose sequence another took.
pub(crate) fn conflict(event: &NewEvent) -> StoreError {
    StoreError::Conflict {
        aggregate_type: event.aggregate_type.to_string(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: i64) -> Job {
        let event = NewEvent {
            aggregate_type: "test".into(),
            aggregate_id: format!("t{n}"),
            sequence: 1,
            event_type: "Happened".into(),
            event_version: "1".into(),
            payload: "{}".into(),
            metadata: None,
            epoch: 0,
        };
        let (reply, _) = oneshot::channel();
        Job {
            append: Append {
                events: vec![event],
                schedule: None,
                patient: true,
            },
            reply,
        }
    }

    fn config(linger_ms: u64, max_batch_events: usize) -> WriterConfig {
        WriterConfig {
            linger_ms,
            max_batch_events,
            ..WriterConfig::default()
        }
    }

    /// An append someone waits on.
    fn impatient(n: i64) -> Job {
        let mut job = job(n);
        job.append.patient = false;
        job
    }

    /// The next batch, which must come far sooner than the linger of these
    /// tests: a batch that lingered would miss the deadline.
    async fn promptly(gatherer: &mut Gatherer, jobs: &mut mpsc::Receiver<Job>, config: &WriterConfig) -> Vec<Job> {
        tokio::time::timeout(Duration::from_secs(30), gatherer.next(jobs, config))
            .await
            .expect("the batch did not wait for more")
            .expect("a batch")
    }

    #[tokio::test]
    async fn a_lone_append_does_not_linger() {
        let config = config(600_000, 100);
        let (queue, mut jobs) = mpsc::channel(10);
        queue.send(job(1)).await.unwrap();
        let mut gatherer = Gatherer::new(&config);
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn appends_that_found_company_wait_for_more_until_the_batch_is_full() {
        let config = config(600_000, 3);
        let (queue, mut jobs) = mpsc::channel(10);
        queue.send(job(1)).await.unwrap();
        queue.send(job(2)).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            queue.send(job(3)).await.unwrap();
            queue.send(job(4)).await.unwrap();
        });
        let mut gatherer = Gatherer::new(&config);
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        let ids: Vec<_> = batch.iter().map(|j| j.append.events[0].aggregate_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2", "t3"]);
        late.await.unwrap();
        // The batch before held several: the next waits for company too, and
        // the queue's closing ends the wait.
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        assert_eq!(batch.len(), 1);
        assert!(gatherer.next(&mut jobs, &config).await.is_none());
    }

    #[tokio::test]
    async fn an_append_someone_waits_on_commits_at_once_with_its_company() {
        let config = config(600_000, 100);
        let (queue, mut jobs) = mpsc::channel(10);
        queue.send(job(1)).await.unwrap();
        queue.send(impatient(2)).await.unwrap();
        let mut gatherer = Gatherer::new(&config);
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        assert_eq!(batch.len(), 2);
        // Busy, but the first append of the next batch is impatient too.
        queue.send(impatient(3)).await.unwrap();
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn without_linger_a_batch_is_what_was_queued() {
        let config = config(0, 100);
        let (queue, mut jobs) = mpsc::channel(10);
        queue.send(job(1)).await.unwrap();
        queue.send(job(2)).await.unwrap();
        let mut gatherer = Gatherer::new(&config);
        let batch = gatherer.next(&mut jobs, &config).await.unwrap();
        assert_eq!(batch.len(), 2);
        // Busy now, yet with no linger the next batch does not wait for company.
        queue.send(job(3)).await.unwrap();
        let batch = promptly(&mut gatherer, &mut jobs, &config).await;
        assert_eq!(batch.len(), 1);
    }
}
