//! An in-memory broker and its source, for unit tests of the consumer
//! runtime: fast and deterministic where the end-to-end suite against real
//! brokers is neither (that suite stays the conformance check).
//!
//! It keeps the promises the runtime relies on from a real MQ:
//! - a message is handed out at most `prefetch` unacknowledged at a time per
//!   source, in publish order (a message given back returns to its place, as
//!   RabbitMQ requeues it);
//! - `next()` is cancel-safe: the state changes only when it returns;
//! - a paused source hands out nothing; its backlog stays in the broker;
//! - closing a source (or losing it) gives its unacknowledged messages back,
//!   for the next source opened on the same broker;
//! - an acknowledgement counts only from the source that holds the message
//!   (a late one from a closed source fails, and the message comes again);
//! - a revoked partition's unacknowledged messages go back to the broker and
//!   the source reports the partition through `take_revoked`, as a Kafka
//!   rebalance that hands the partition straight back to the same member.
//!
//! Tests drive it through [`MemoryBroker`]: publish, inject a lost
//! connection, revoke a partition, hook or hold acknowledgements, and read
//! what was handed out and acknowledged, in order.

use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::SourceMessage;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

use super::{Acknowledge, Backlog, BacklogProbe, Incoming, Source, SourceError};

/// Awaited by an acknowledgement before it counts: lets a test look at the
/// store at the moment of the acknowledgement, or hold acknowledgements back.
pub type AckHook = Arc<dyn Fn(SourceMessage) -> BoxFuture<'static, ()> + Send + Sync>;

/// What happened in the broker, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logged {
    Opened {
        session: u64,
    },
    /// A message handed to a source (again, if it was before).
    Handed {
        session: u64,
        message_id: String,
    },
    Acked {
        session: u64,
        message_id: String,
    },
    /// A source paused or resumed; `ready`: messages waiting in the broker then.
    Paused {
        session: u64,
        paused: bool,
        ready: usize,
    },
    Prefetch {
        session: u64,
        messages: u32,
    },
    /// An injected failure ended a source's `next()`.
    Failed {
        session: u64,
    },
    /// A source closed; `returned`: its unacknowledged messages given back.
    Closed {
        session: u64,
        returned: usize,
    },
}

#[derive(Clone)]
struct Stored {
    seq: u64,
    message: SourceMessage,
}

struct Session {
    prefetch: u32,
    paused: bool,
    revoked: Vec<Position>,
}

struct State {
    destination: String,
    next_seq: u64,
    next_offset: HashMap<Option<i32>, i64>,
    next_session: u64,
    /// Waiting to be handed out, by publish order.
    ready: BTreeMap<u64, Stored>,
    /// Handed out, not acknowledged: by publish order, with the holding session.
    unacked: BTreeMap<u64, (u64, Stored)>,
    sessions: HashMap<u64, Session>,
    /// Acknowledged, in the order the acknowledgements came.
    acked: Vec<SourceMessage>,
    log: Vec<Logged>,
    handed: usize,
    /// Injected failures: (after this many hand-outs in all, the error).
    failures: Vec<(usize, String)>,
    ack_hook: Option<AckHook>,
}

struct Inner {
    state: Mutex<State>,
    /// Woken at every change, for sources waiting for messages and tests
    /// waiting for a condition.
    changed: Notify,
}

/// A shared in-memory broker: one destination, partitions optional.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl MemoryBroker {
    pub fn new(destination: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    destination: destination.to_string(),
                    next_seq: 0,
                    next_offset: HashMap::new(),
                    next_session: 0,
                    ready: BTreeMap::new(),
                    unacked: BTreeMap::new(),
                    sessions: HashMap::new(),
                    acked: Vec::new(),
                    log: Vec::new(),
                    handed: 0,
                    failures: Vec::new(),
                    ack_hook: None,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state and wakes everyone waiting for a change.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state());
        self.inner.changed.notify_waiters();
        out
    }

    /// Publishes a message; returns its id (`memory:<destination>[/<partition>]@<offset>`).
    pub fn publish(&self, key: Option<&str>, body: impl Into<Bytes>, partition: Option<i32>) -> String {
        let body = body.into();
        self.change(|state| {
            let offset = state.next_offset.entry(partition).or_insert(0);
            let at = Position {
                destination: state.destination.clone(),
                partition,
                offset: Some(Offset::Number(*offset)),
            };
            *offset += 1;
            let message = SourceMessage {
                message_id: format!("memory:{at}"),
                position: at,
                key: key.map(String::from),
                body,
                content_type: Some("text/plain".into()),
                traceparent: None,
            };
            let seq = state.next_seq;
            state.next_seq += 1;
            let id = message.message_id.clone();
            state.ready.insert(seq, Stored { seq, message });
            id
        })
    }

    /// A new source on this broker, handing out one message at a time until
    /// its prefetch is set.
    pub fn open(&self) -> MemorySource {
        let session = self.change(|state| {
            state.next_session += 1;
            let session = state.next_session;
            state.sessions.insert(
                session,
                Session {
                    prefetch: 1,
                    paused: false,
                    revoked: Vec::new(),
                },
            );
            state.log.push(Logged::Opened { session });
            session
        });
        MemorySource {
            broker: self.clone(),
            session,
        }
    }

    /// Once `handed` messages were handed out in all, the next `next()` of
    /// any source fails with a lost connection (once per call of this).
    pub fn fail_after(&self, handed: usize, error: &str) {
        self.change(|state| state.failures.push((handed, error.to_string())));
    }

    /// Gives the unacknowledged messages of `partition` back to the broker
    /// and tells every source it lost the partition.
    pub fn revoke(&self, partition: i32) {
        self.change(|state| {
            let lost = Position::partition(state.destination.clone(), partition);
            let taken: Vec<u64> = state
                .unacked
                .iter()
                .filter(|(_, (_, stored))| stored.message.position.same_partition(&lost))
                .map(|(seq, _)| *seq)
                .collect();
            for seq in taken {
                if let Some((_, stored)) = state.unacked.remove(&seq) {
                    state.ready.insert(seq, stored);
                }
            }
            for session in state.sessions.values_mut() {
                session.revoked.push(lost.clone());
            }
        });
    }

    /// Every acknowledgement awaits `hook` before it counts.
    pub fn set_ack_hook(&self, hook: AckHook) {
        self.state().ack_hook = Some(hook);
    }

    /// Acknowledged messages' ids, in the order of their acknowledgements.
    pub fn acked(&self) -> Vec<String> {
        self.state().acked.iter().map(|m| m.message_id.clone()).collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    /// Hand-outs so far, redeliveries included.
    pub fn handed(&self) -> usize {
        self.state().handed
    }

    /// Messages waiting in the broker (not handed out).
    pub fn ready(&self) -> usize {
        self.state().ready.len()
    }

    /// Messages handed out and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.state().unacked.len()
    }

    pub fn open_sessions(&self) -> usize {
        self.state().sessions.len()
    }

    /// Whether some open source is paused.
    pub fn paused(&self) -> bool {
        self.state().sessions.values().any(|s| s.paused)
    }

    /// Waits until `done` holds of the broker, or `timeout` passes; whether it holds.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&MemoryBroker) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }
}

/// One consumer's connection to a [`MemoryBroker`].
pub struct MemorySource {
    broker: MemoryBroker,
    session: u64,
}

impl MemorySource {
    /// The next message for this source, if it may take one now.
    fn take(&self, state: &mut State) -> Option<Result<Incoming, SourceError>> {
        if let Some(at) = state.failures.iter().position(|(after, _)| state.handed >= *after) {
            let (_, error) = state.failures.remove(at);
            state.log.push(Logged::Failed { session: self.session });
            return Some(Err(SourceError::Lost(error)));
        }
        let session = state.sessions.get(&self.session)?;
        let held = state.unacked.values().filter(|(s, _)| *s == self.session).count();
        if session.paused || held >= session.prefetch as usize {
            return None;
        }
        let (seq, stored) = state.ready.pop_first()?;
        state.handed += 1;
        state.log.push(Logged::Handed {
            session: self.session,
            message_id: stored.message.message_id.clone(),
        });
        let message = stored.message.clone();
        state.unacked.insert(seq, (self.session, stored));
        Some(Ok(Incoming {
            message,
            ack: Box::new(MemoryAck {
                broker: self.broker.clone(),
                session: self.session,
                seq,
            }),
        }))
    }

    fn update_session(&self, f: impl FnOnce(&mut Session, usize) -> Option<Logged>) {
        self.broker.change(|state| {
            let ready = state.ready.len();
            if let Some(session) = state.sessions.get_mut(&self.session) {
                if let Some(logged) = f(session, ready) {
                    state.log.push(logged);
                }
            }
        });
    }
}

struct MemoryAck {
    broker: MemoryBroker,
    session: u64,
    seq: u64,
}

impl Acknowledge for MemoryAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let (hook, message) = {
                let state = self.broker.state();
                let message = state.unacked.get(&self.seq).map(|(_, stored)| stored.message.clone());
                (state.ack_hook.clone(), message)
            };
            if let (Some(hook), Some(message)) = (hook, message) {
                hook(message).await;
            }
            self.broker.change(|state| match state.unacked.get(&self.seq) {
                Some((holder, _)) if *holder == self.session => {
                    let (_, stored) = state.unacked.remove(&self.seq).expect("present");
                    state.log.push(Logged::Acked {
                        session: self.session,
                        message_id: stored.message.message_id.clone(),
                    });
                    state.acked.push(stored.message);
                    Ok(())
                }
                // Given back meanwhile (closed, revoked): it comes again.
                _ => Err(SourceError::Lost("the message is no longer held by this source".into())),
            })
        })
    }
}

impl Source for MemorySource {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        loop {
            // Registered before looking, so that no change slips in between.
            let changed = self.broker.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(taken) = self.take(&mut self.broker.state()) {
                self.broker.inner.changed.notify_waiters();
                return taken;
            }
            changed.await;
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        let session = self.session;
        self.update_session(|s, ready| {
            (s.paused != paused).then(|| {
                s.paused = paused;
                Logged::Paused { session, paused, ready }
            })
        });
        Ok(())
    }

    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        let session = self.session;
        self.update_session(|s, _| {
            s.prefetch = messages.max(1);
            Some(Logged::Prefetch { session, messages })
        });
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(MemoryProbe(self.broker.clone()))
    }

    fn take_revoked(&mut self) -> Vec<Position> {
        let session = self.session;
        self.broker.change(|state| {
            state
                .sessions
                .get_mut(&session)
                .map(|s| std::mem::take(&mut s.revoked))
                .unwrap_or_default()
        })
    }

    async fn close(self) {
        let session = self.session;
        self.broker.change(|state| {
            state.sessions.remove(&session);
            let held: Vec<u64> = state
                .unacked
                .iter()
                .filter(|(_, (holder, _))| *holder == session)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in &held {
                if let Some((_, stored)) = state.unacked.remove(seq) {
                    state.ready.insert(stored.seq, stored);
                }
            }
            state.log.push(Logged::Closed {
                session,
                returned: held.len(),
            });
        });
    }
}

/// The backlog as a broker counts it: every message not yet acknowledged,
/// per partition.
struct MemoryProbe(MemoryBroker);

impl BacklogProbe for MemoryProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async move {
            let state = self.0.state();
            let mut lag: BTreeMap<Option<i32>, i64> = state.next_offset.keys().map(|p| (*p, 0)).collect();
            let pending = state
                .ready
                .values()
                .chain(state.unacked.values().map(|(_, stored)| stored));
            for stored in pending {
                *lag.entry(stored.message.position.partition).or_default() += 1;
            }
            Ok(lag
                .into_iter()
                .map(|(partition, lag)| Backlog::of(&state.destination, partition, lag))
                .collect())
        })
    }
}
