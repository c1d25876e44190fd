//! SDK mode for pull consumers: a member that pulls, runs a handler on each
//! message and acks or nacks it ([`PullConsumer::run`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{sleep_until, Instant};

use crate::client::Client;
use crate::error::Error;
use crate::types::{HeartbeatRequest, MemberSettings, NackRequest, PullRequest, Pulled, PulledMessage};

/// The longest long poll the server waits for (`wait_ms` above is taken as
/// this).
pub const MAX_PULL_WAIT: Duration = Duration::from_secs(60);

/// Most leases the server settles in one ack or nack.
const MAX_SETTLE: usize = 1000;
/// How long a handled message's ack waits for others to share its request
/// (while other handlers still run).
const SETTLE_LINGER: Duration = Duration::from_millis(20);
/// The least time between two pulls that found nothing (a server that
/// answered at once: no long poll, or `wait` of 0).
const IDLE_GAP: Duration = Duration::from_millis(250);
/// The longest nack reason the server records.
const MAX_REASON: usize = 256;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A member of a pull consumer, to [`run`](Self::run) a handler on its
/// messages: made by [`Client::pull_consumer`], set up with the methods
/// below.
///
/// ```no_run
/// # async fn example() -> Result<(), bida_client::Error> {
/// use bida_client::Client;
/// use std::time::Duration;
///
/// let bida = Client::new("http://127.0.0.1:8080", "bida_…")?;
/// // Completed to stop: a signal, say (`tokio::signal::ctrl_c()`).
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// let report = bida
///     .pull_consumer("<consumer id>", "host-1")
///     .wait(Duration::from_secs(20))
///     .run(
///         |message| async move {
///             let order: serde_json::Value = message.json()?;   // an Err is nacked
///             println!("{} (attempt {}): {order}", message.task_id, message.attempt);
///             Ok::<_, serde_json::Error>(())                    // acked
///         },
///         async { stopped.await.ok(); },
///     )
///     .await?;
/// println!("acked {}, nacked {}", report.acked, report.nacked);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PullConsumer {
    client: Client,
    consumer_id: String,
    member: String,
    max: Option<u32>,
    wait: Duration,
    address: Option<String>,
    client_version: String,
    nack_delay: Option<Duration>,
    drain_timeout: Option<Duration>,
    retry_initial: Duration,
    retry_max: Duration,
}

/// What a [`PullConsumer::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages leased to this member (each ran the handler).
    pub pulled: u64,
    /// Handled with `Ok` and acknowledged.
    pub acked: u64,
    /// Handled with `Err` (or a panic) and given back.
    pub nacked: u64,
    /// Acks and nacks answered as expired: the lease had run out (the
    /// handler took longer than `lease_ms`, or the member was taken for
    /// gone), so the message is, or was, given again.
    pub expired: u64,
    /// Handlers that panicked (their messages nacked).
    pub panicked: u64,
    /// Handlers still running at the drain timeout, stopped: their leases
    /// run out and the messages are given again.
    pub abandoned: u64,
    /// Handled messages whose ack or nack was never answered (the run
    /// stopped on an error, or the server was unreachable until the lease
    /// ran out): given again once their lease runs out.
    pub unsettled: u64,
    /// Requests that failed for a while (no answer, `5xx`) and were tried
    /// again.
    pub retries: u64,
}

/// A handled message, to ack (`failure` none) or nack.
#[derive(Debug)]
struct Handled {
    lease: String,
    leased_until: DateTime<Utc>,
    failure: Option<String>,
}

/// Pulls and heartbeats: one at a time.
enum ControlKind {
    Pull,
    Heartbeat,
}

enum ControlDone {
    Pulled(Result<Pulled, Error>),
    Heartbeat(Result<MemberSettings, Error>),
}

/// What a round of acks and nacks did; `unsent` were not answered
/// (`error` says why).
struct SettleDone {
    acked: u64,
    nacked: u64,
    expired: u64,
    unsent: Vec<Handled>,
    error: Option<Error>,
}

/// The output of `future`, or never while there is none.
async fn maybe<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// A reason the server takes: printable, up to 256 bytes.
fn reason(text: &str) -> String {
    let mut reason: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

fn panic_reason(error: JoinError) -> String {
    let payload = error.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("the handler panicked: {text}")
}

/// A random factor in [0.5, 1): members retrying after the same outage do
/// not come back all at once.
fn jitter() -> f64 {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    0.5 + (random % 1000) as f64 / 2000.0
}

impl PullConsumer {
    pub(crate) fn new(client: Client, consumer_id: String, member: String) -> Self {
        Self {
            client,
            consumer_id,
            member,
            max: None,
            wait: Duration::from_secs(20),
            address: None,
            client_version: concat!("bida-client/", env!("CARGO_PKG_VERSION")).to_string(),
            nack_delay: None,
            drain_timeout: None,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// Most messages one pull asks for (the consumer's `batch` by default;
    /// never more than it, nor than the handlers free to take them).
    pub fn max(mut self, max: u32) -> Self {
        self.max = Some(max.max(1));
        self
    }

    /// How long one pull waits for a message when none is due (a long
    /// poll; 20 s by default, at most [`MAX_PULL_WAIT`], and at most twice
    /// the consumer's `heartbeat_ms`, since a pull is the member's
    /// heartbeat).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(MAX_PULL_WAIT);
        self
    }

    /// Where the member runs, shown in the members list.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Shown in the members list (`bida-client/<version>` by default).
    pub fn client_version(mut self, version: impl Into<String>) -> Self {
        self.client_version = version.into();
        self
    }

    /// A failed message is pulled again after this long (the consumer's
    /// backoff by default).
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = Some(delay);
        self
    }

    /// Once stopping, how long handlers still running may take; then they
    /// are stopped (their messages are given again when their leases run
    /// out). Without it (the default), `run` waits for every handler.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// The wait before trying again a request that got no answer or a
    /// `5xx`: `initial`, doubled each time up to `max` (250 ms and 5 s by
    /// default), less a random part of up to half.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .retry_initial
            .saturating_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX));
        doubled.min(self.retry_max).mul_f64(jitter())
    }

    fn start_pull(&self, settings: &MemberSettings, free: usize) -> BoxFuture<ControlDone> {
        let max = self
            .max
            .unwrap_or(u32::MAX)
            .min(settings.batch)
            .min(u32::try_from(free).unwrap_or(u32::MAX))
            .max(1);
        let wait = self
            .wait
            .min(Duration::from_millis(settings.heartbeat_ms.saturating_mul(2)));
        let mut request = PullRequest::new(&self.member)
            .max(max)
            .wait(wait)
            .client_version(&self.client_version);
        request.address = self.address.clone();
        let client = self.client.clone();
        let consumer_id = self.consumer_id.clone();
        Box::pin(async move { ControlDone::Pulled(client.pull(&consumer_id, &request).await) })
    }

    fn start_heartbeat(&self) -> BoxFuture<ControlDone> {
        let request = HeartbeatRequest {
            address: self.address.clone(),
            client_version: Some(self.client_version.clone()),
        };
        let client = self.client.clone();
        let consumer_id = self.consumer_id.clone();
        let member = self.member.clone();
        Box::pin(async move { ControlDone::Heartbeat(client.heartbeat(&consumer_id, &member, &request).await) })
    }

    /// Acks the handled messages that succeeded and nacks the others (one
    /// nack per reason), up to [`MAX_SETTLE`] leases a request.
    fn start_settle(&self, handled: Vec<Handled>) -> BoxFuture<SettleDone> {
        let client = self.client.clone();
        let consumer_id = self.consumer_id.clone();
        let member = self.member.clone();
        let nack_delay = self.nack_delay;
        Box::pin(async move {
            let mut groups: BTreeMap<Option<String>, Vec<Handled>> = BTreeMap::new();
            for one in handled {
                groups.entry(one.failure.clone()).or_default().push(one);
            }
            let mut batches: Vec<(Option<String>, Vec<Handled>)> = Vec::new();
            for (failure, mut group) in groups {
                while !group.is_empty() {
                    let rest = group.split_off(group.len().min(MAX_SETTLE));
                    batches.push((failure.clone(), std::mem::replace(&mut group, rest)));
                }
            }
            let mut done = SettleDone {
                acked: 0,
                nacked: 0,
                expired: 0,
                unsent: Vec::new(),
                error: None,
            };
            for (failure, batch) in batches {
                if done.error.is_some() {
                    done.unsent.extend(batch);
                    continue;
                }
                let leases = batch.iter().map(|h| h.lease.as_str());
                let answer = match &failure {
                    None => client.ack(&consumer_id, leases, Some(&member)).await,
                    Some(failure) => {
                        let mut nack = NackRequest::new(leases).member(&member).reason(failure);
                        nack.delay_ms = nack_delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                        client.nack(&consumer_id, &nack).await
                    }
                };
                match answer {
                    Ok(settled) => {
                        let count = settled.settled.len() as u64;
                        match failure {
                            None => done.acked += count,
                            Some(_) => done.nacked += count,
                        }
                        done.expired += settled.expired.len() as u64;
                    }
                    Err(error) => {
                        done.error = Some(error);
                        done.unsent.extend(batch);
                    }
                }
            }
            done
        })
    }

    /// Runs `handler` on this member's messages until `shutdown` completes
    /// (or a problem the server answers says to stop), then returns what it
    /// did.
    ///
    /// - It pulls with a long poll while fewer handlers run than the
    ///   consumer's `concurrency`, asking for at most as many messages as
    ///   there are free handlers (and the consumer's `batch`, and
    ///   [`max`](Self::max)), so a message's lease starts when a handler is
    ///   free for it. The settings are the consumer's live ones, read from
    ///   every pull and heartbeat: a patch of the consumer reaches running
    ///   members. While the consumer is paused the server answers no
    ///   messages, and the member keeps polling.
    /// - Each message runs `handler` on a task of its own (`tokio::spawn`):
    ///   `Ok` acks it, `Err` nacks it with the error's `Display` as the
    ///   reason (a panic too), to be pulled again after the consumer's
    ///   backoff (or [`nack_delay`](Self::nack_delay)) until its attempts
    ///   run out and it is dead-lettered. Acks and nacks are sent in
    ///   batches: those handled while the previous batch was being sent (or
    ///   within 20 ms of each other) go together.
    /// - While every handler is busy the member pulls nothing, so it sends
    ///   a heartbeat every `heartbeat_ms`; a member not heard from for the
    ///   consumer's `member_timeout_ms` is gone and its leases return.
    /// - No answer, or a `5xx` (a node restarting), is tried again after a
    ///   short backoff, indefinitely. A `4xx` problem ends the run with
    ///   that error (`404` the consumer was deleted, `409` it is not a pull
    ///   consumer, `422` the member name is refused, `401`/`403` the key),
    ///   once the handlers running have finished and their acks and nacks
    ///   have been tried.
    /// - When `shutdown` completes it stops pulling (a long poll still
    ///   waiting is dropped), waits for the handlers running (up to
    ///   [`drain_timeout`](Self::drain_timeout)), sends their acks and
    ///   nacks, and returns.
    ///
    /// Delivery is at least once, and a member may see a message twice
    /// (a later `attempt` of the same `task_id`): when a handler takes
    /// longer than the lease (`lease_ms`) the message is given again
    /// (perhaps to another member) while it still runs, and its ack is
    /// answered as [`expired`](RunReport::expired); when the member stops
    /// or crashes between handling a message and its ack being recorded,
    /// or a long poll is dropped at shutdown just as it leased messages,
    /// they come again once their leases run out. Make handlers idempotent,
    /// or de-duplicate by [`PulledMessage::task_id`]. In broadcast mode
    /// each member gets its own copy of every message (its own `task_id`).
    pub async fn run<F, Fut, E>(self, mut handler: F, shutdown: impl Future<Output = ()>) -> Result<RunReport, Error>
    where
        F: FnMut(PulledMessage) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        let mut report = RunReport::default();
        let mut settings: Option<MemberSettings> = None;
        let mut last_contact = Instant::now();
        let mut control: Option<BoxFuture<ControlDone>> = None;
        let mut control_kind = ControlKind::Heartbeat;
        let mut control_started = Instant::now();
        let mut control_ready_at = Instant::now();
        let mut control_failures = 0u32;
        let mut settle: Option<BoxFuture<SettleDone>> = None;
        let mut settle_ready_at = Instant::now();
        let mut settle_failures = 0u32;
        let mut pending: Vec<Handled> = Vec::new();
        let mut pending_since: Option<Instant> = None;
        let mut handlers: JoinSet<Result<(), String>> = JoinSet::new();
        let mut in_flight: HashMap<Id, (String, DateTime<Utc>)> = HashMap::new();
        let mut stopping = false;
        let mut fatal: Option<Error> = None;
        let mut draining = false;
        let mut drain_deadline: Option<Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            let now = Instant::now();
            let running = !stopping && fatal.is_none();
            if !running {
                if matches!(control_kind, ControlKind::Pull) {
                    control = None;
                }
                if !draining {
                    draining = true;
                    drain_deadline = self.drain_timeout.map(|timeout| now + timeout);
                }
                if drain_deadline.is_some_and(|deadline| now >= deadline) && !in_flight.is_empty() {
                    handlers.abort_all();
                    report.abandoned += in_flight.len() as u64;
                    in_flight.clear();
                    handlers = JoinSet::new();
                }
                // Leases that ran out while the server could not be told:
                // nothing is left to settle for them.
                if settle.is_none() && settle_failures > 0 {
                    let before = pending.len();
                    let utc = Utc::now();
                    pending.retain(|h| h.leased_until > utc);
                    report.unsettled += (before - pending.len()) as u64;
                }
            }

            // A pull when handlers are free, or a heartbeat when due.
            if control.is_none() && now >= control_ready_at {
                let heartbeat_due =
                    settings.is_some_and(|s| now >= last_contact + Duration::from_millis(s.heartbeat_ms));
                match settings {
                    None if running => {
                        control = Some(self.start_heartbeat());
                        control_kind = ControlKind::Heartbeat;
                        control_started = now;
                    }
                    Some(current) => {
                        let free = (current.concurrency.max(1) as usize).saturating_sub(in_flight.len());
                        if running && free > 0 {
                            control = Some(self.start_pull(&current, free));
                            control_kind = ControlKind::Pull;
                            control_started = now;
                        } else if heartbeat_due && (running || !in_flight.is_empty()) {
                            control = Some(self.start_heartbeat());
                            control_kind = ControlKind::Heartbeat;
                            control_started = now;
                        }
                    }
                    None => {}
                }
            }

            // Acks and nacks of what was handled.
            if settle.is_none() && !pending.is_empty() && now >= settle_ready_at {
                let lingered = pending_since.is_some_and(|since| now >= since + SETTLE_LINGER);
                if in_flight.is_empty() || lingered || pending.len() >= MAX_SETTLE || !running {
                    settle = Some(self.start_settle(std::mem::take(&mut pending)));
                    pending_since = None;
                }
            }

            if !running && in_flight.is_empty() && pending.is_empty() && settle.is_none() {
                return match fatal {
                    Some(error) => Err(error),
                    None => Ok(report),
                };
            }

            // When to look again with nothing else happening: the next of
            // the times above still to come.
            let mut times = Vec::with_capacity(4);
            if control.is_none() {
                times.push(control_ready_at);
                if let Some(current) = settings {
                    times.push(last_contact + Duration::from_millis(current.heartbeat_ms));
                }
            }
            if settle.is_none() && !pending.is_empty() {
                let linger = pending_since.map_or(now, |since| since + SETTLE_LINGER);
                times.push(settle_ready_at.max(linger));
            }
            if !in_flight.is_empty() {
                times.extend(drain_deadline);
            }
            let wake = times
                .into_iter()
                .filter(|at| *at > now)
                .min()
                .unwrap_or(now + Duration::from_secs(3600));

            tokio::select! {
                // What has come in first: an answer with messages is handled
                // even when `shutdown` completed meanwhile.
                biased;
                Some(joined) = handlers.join_next_with_id(), if !handlers.is_empty() => {
                    let (id, failure) = match joined {
                        Ok((id, result)) => (id, result.err()),
                        Err(error) if error.is_panic() => {
                            report.panicked += 1;
                            (error.id(), Some(panic_reason(error)))
                        }
                        Err(_) => continue,
                    };
                    if let Some((lease, leased_until)) = in_flight.remove(&id) {
                        pending.push(Handled { lease, leased_until, failure: failure.map(|f| reason(&f)) });
                        pending_since.get_or_insert_with(Instant::now);
                    }
                }
                done = maybe(&mut control) => {
                    control = None;
                    let now = Instant::now();
                    let result = match done {
                        ControlDone::Pulled(Ok(pulled)) => {
                            settings = Some(pulled.settings);
                            if pulled.messages.is_empty() {
                                control_ready_at = control_started + IDLE_GAP;
                            }
                            report.pulled += pulled.messages.len() as u64;
                            for message in pulled.messages {
                                let lease = (message.lease.clone(), message.leased_until);
                                let work = handler(message);
                                let task = handlers.spawn(async move { work.await.map_err(|e| e.to_string()) });
                                in_flight.insert(task.id(), lease);
                            }
                            Ok(())
                        }
                        ControlDone::Heartbeat(Ok(current)) => {
                            settings = Some(current);
                            Ok(())
                        }
                        ControlDone::Pulled(Err(error)) | ControlDone::Heartbeat(Err(error)) => Err(error),
                    };
                    match result {
                        Ok(()) => {
                            last_contact = control_started;
                            control_failures = 0;
                        }
                        Err(error) if error.is_transient() => {
                            report.retries += 1;
                            control_ready_at = now + self.backoff(control_failures);
                            control_failures = control_failures.saturating_add(1);
                        }
                        Err(error) => {
                            fatal.get_or_insert(error);
                        }
                    }
                }
                done = maybe(&mut settle) => {
                    settle = None;
                    report.acked += done.acked;
                    report.nacked += done.nacked;
                    report.expired += done.expired;
                    match done.error {
                        None => settle_failures = 0,
                        Some(error) if error.is_transient() => {
                            report.retries += 1;
                            settle_ready_at = Instant::now() + self.backoff(settle_failures);
                            settle_failures = settle_failures.saturating_add(1);
                            let mut unsent = done.unsent;
                            unsent.append(&mut pending);
                            pending = unsent;
                        }
                        Some(error) => {
                            report.unsettled += done.unsent.len() as u64;
                            fatal.get_or_insert(error);
                        }
                    }
                }
                () = &mut shutdown, if !stopping => {
                    stopping = true;
                }
                () = sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_what_the_server_takes() {
        assert_eq!(reason("bad\nthing\t!"), "bad thing !");
        let long = reason(&"é".repeat(300));
        assert!(long.len() <= MAX_REASON, "{}", long.len());
        assert!(long.ends_with('…'));
        assert_eq!(reason("short"), "short");
    }

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let consumer = Client::new("http://127.0.0.1:1", "k")
            .unwrap()
            .pull_consumer("c", "m")
            .retry_backoff(Duration::from_millis(100), Duration::from_millis(1000));
        for (failures, ceiling) in [(0, 100), (1, 200), (3, 800), (4, 1000), (40, 1000)] {
            let wait = consumer.backoff(failures);
            assert!(wait <= Duration::from_millis(ceiling), "{failures}: {wait:?}");
            assert!(wait >= Duration::from_millis(ceiling / 2), "{failures}: {wait:?}");
        }
    }
}
