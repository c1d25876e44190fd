//! What stands between this node and an endpoint: each consumer's terms of
//! the moment (its tasks waiting for a retry follow live changes) and the
//! gates that hold a consumer's `rate_per_sec` and `concurrency`, or an
//! endpoint host's (`delivery.host_limits`), for the whole cluster, first
//! attempts and retries together.
//!
//! Every node runs every consumer, so each holds a share of each limit. The
//! shares follow demand: every heartbeat a node says which of its gates made
//! a delivery wait lately ("busy"), reads what the other live nodes said, and
//! weighs each node 1 if busy and [`IDLE_WEIGHT`] if not. Its share is its
//! weight over the sum: the shares add up to the limit whenever the nodes
//! read the same table, so a node alone with a backlog gets nearly all of it
//! and three busy nodes a third each.
//!
//! Nodes read the table at different moments, so a node gives up share at
//! once but takes a larger one only a heartbeat and a half after the change
//! that grants it: by then every other node has read the change and given up
//! its part. How exact that is (stated in the README): each rate share lets a
//! burst of 1/20 of a second through, so any one second sees at most
//! `1.05 × rate` plus one request per node (and one more burst when a share
//! moves); a node that joins holds its idle share for up to a heartbeat
//! before the others make room; a node killed keeps its share in the others'
//! views until its heartbeat is stale (`node_ttl_ms`), which errs below the
//! limit. Every node keeps at least one delivery slot, so a `concurrency`
//! below the node count is exceeded to one per node rather than starving a
//! node's partitions.

use bida_domain::consumer::{Consumer, ConsumerSpec};
use bida_domain::task::{CallbackTask, EndpointHost, TaskEvent, TaskSpec};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The weight of a node whose gate has not been busy lately: enough for it
/// to start delivering at once, small enough to leave the busy ones the rest.
pub const IDLE_WEIGHT: f64 = 0.1;

/// How long a gate counts as busy after a delivery last waited at it: longer
/// than a heartbeat, so shares do not flap between two heartbeats.
const BUSY_FOR: Duration = Duration::from_secs(10);

/// A rate share lets this much of a second through at once.
const BURST_FRACTION: f64 = 0.05;

/// What a gate limits: a consumer's deliveries, or every delivery to an
/// endpoint host (`delivery.host_limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateKey {
    Consumer(String),
    Host(String),
}

impl GateKey {
    /// The name other nodes read in the nodes table.
    pub fn name(&self) -> String {
        match self {
            Self::Consumer(id) => format!("consumer:{id}"),
            Self::Host(host) => format!("host:{host}"),
        }
    }
}

/// A limit for the whole cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Requests per second; 0: none.
    pub rate_per_sec: u32,
    /// Deliveries at the endpoint at once; 0: none.
    pub concurrency: u32,
}

/// This node's part of one limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Share {
    pub rate_per_sec: f64,
    pub concurrency: usize,
}

impl Share {
    /// As a node's report shows it.
    pub fn shown(&self) -> serde_json::Value {
        serde_json::json!({
            "rate_per_sec": (self.rate_per_sec * 100.0).round() / 100.0,
            "concurrency": self.concurrency,
        })
    }
}

/// The live nodes as the last heartbeat read them: node → its busy gates.
#[derive(Clone, Debug, Default)]
struct ClusterView {
    nodes: BTreeMap<Uuid, Vec<String>>,
}

impl ClusterView {
    /// This node's share of `limit` at gate `name`, by the weights of the
    /// view (this node counted busy when `busy_here`).
    fn share(&self, me: Uuid, name: &str, busy_here: bool, limit: Limit) -> Share {
        let mut weights: BTreeMap<Uuid, f64> = self
            .nodes
            .iter()
            .map(|(node, busy)| (*node, weight(busy.iter().any(|b| b == name))))
            .collect();
        weights.insert(me, weight(busy_here));
        let total: f64 = weights.values().sum();
        let fraction = weights[&me] / total;
        Share {
            rate_per_sec: f64::from(limit.rate_per_sec) * fraction,
            concurrency: concurrency_share(me, &weights, total, limit.concurrency),
        }
    }
}

fn weight(busy: bool) -> f64 {
    if busy {
        1.0
    } else {
        IDLE_WEIGHT
    }
}

/// Largest remainders: every node computes the same split of `limit`
/// slots from the same view, so they add up to it (each node keeps one).
/// No limit (0) is no slots: such a gate holds no permits.
fn concurrency_share(me: Uuid, weights: &BTreeMap<Uuid, f64>, total: f64, limit: u32) -> usize {
    if limit == 0 {
        return 0;
    }
    let exact: Vec<(Uuid, f64)> = weights
        .iter()
        .map(|(node, w)| (*node, f64::from(limit) * w / total))
        .collect();
    let mut slots: BTreeMap<Uuid, usize> = exact.iter().map(|(n, e)| (*n, e.floor() as usize)).collect();
    let left = (limit as usize).saturating_sub(slots.values().sum());
    let mut by_remainder = exact.clone();
    by_remainder.sort_by(|(a, x), (b, y)| (y - y.floor()).total_cmp(&(x - x.floor())).then(a.cmp(b)));
    for (node, _) in by_remainder.into_iter().take(left) {
        *slots.entry(node).or_default() += 1;
    }
    slots[&me].max(1)
}

/// One limit on this node: a semaphore for its concurrency share and a
/// rate limiter for its rate share.
pub struct Gate {
    state: Mutex<GateState>,
    permits: Arc<Semaphore>,
    rate: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    /// A delivery waited here since the last heartbeat.
    waited: AtomicBool,
}

#[derive(Default)]
struct GateState {
    limit: Limit,
    share: Share,
    /// Slots given back that must be dropped: the share shrank while they
    /// were in use.
    debt: usize,
    /// A larger share waits until the other nodes have read why (one
    /// heartbeat and a half), so that they give up theirs first.
    raise_at: Option<Instant>,
    busy_until: Option<Instant>,
}

/// Passage through a task's gates (its consumer's, its host's): the slots
/// are given back when it is dropped.
#[derive(Default)]
pub struct Pass {
    held: [Option<(Arc<Gate>, Option<OwnedSemaphorePermit>)>; 2],
}

impl Drop for Pass {
    fn drop(&mut self) {
        for (gate, permit) in self.held.iter_mut().filter_map(Option::take) {
            if let Some(permit) = permit {
                let mut state = gate.state();
                if state.debt > 0 {
                    state.debt -= 1;
                    permit.forget();
                }
            }
        }
    }
}

impl Gate {
    fn new() -> Self {
        Self {
            state: Mutex::default(),
            permits: Arc::new(Semaphore::new(0)),
            rate: RwLock::new(None),
            waited: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit(&self) -> Limit {
        self.state().limit
    }

    /// Whether deliveries waited here lately (and forgets the last wait).
    fn busy(&self, now: Instant) -> bool {
        let mut state = self.state();
        if self.waited.swap(false, Ordering::Relaxed) {
            state.busy_until = Some(now + BUSY_FOR);
        }
        state.busy_until.is_some_and(|until| now < until)
    }

    /// Moves to `target`: at once where it is smaller (or `now_all`, a new
    /// limit every node reads at the same time), after `raise_after` where it
    /// is larger.
    fn apply(&self, target: Share, now: Instant, raise_after: Duration, now_all: bool) {
        let mut state = self.state();
        let current = state.share;
        let lower = Share {
            rate_per_sec: target.rate_per_sec.min(current.rate_per_sec),
            concurrency: target.concurrency.min(current.concurrency),
        };
        let next = if now_all || lower == target {
            state.raise_at = None;
            target
        } else {
            match state.raise_at {
                Some(at) if now >= at => {
                    state.raise_at = None;
                    target
                }
                Some(_) => lower,
                None => {
                    state.raise_at = Some(now + raise_after);
                    lower
                }
            }
        };
        self.set_slots(&mut state, next.concurrency);
        // A new limiter starts with a full burst: rebuilt only on a real change.
        let (old, new) = (current.rate_per_sec, next.rate_per_sec);
        if (old - new).abs() > old * 0.01 || (old == 0.0) != (new == 0.0) {
            *self.rate.write().unwrap_or_else(|p| p.into_inner()) = rate_limiter(new);
            state.share.rate_per_sec = new;
        }
    }

    fn set_slots(&self, state: &mut GateState, share: usize) {
        let held = state.share.concurrency;
        if share > held {
            let mut grow = share - held;
            let repaid = grow.min(state.debt);
            state.debt -= repaid;
            grow -= repaid;
            self.permits.add_permits(grow);
        } else if share < held {
            let shrink = held - share;
            let forgotten = self.permits.forget_permits(shrink);
            state.debt += shrink - forgotten;
        }
        state.share.concurrency = share;
    }

    async fn enter(self: &Arc<Self>) -> Option<OwnedSemaphorePermit> {
        let limit = self.limit();
        let permit = if limit.concurrency == 0 {
            None
        } else {
            Some(match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.waited.store(true, Ordering::Relaxed);
                    self.permits.clone().acquire_owned().await.ok()?
                }
            })
        };
        let rate = self.rate.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(rate) = rate {
            if rate.check().is_err() {
                self.waited.store(true, Ordering::Relaxed);
                rate.until_ready().await;
            }
        }
        permit
    }
}

fn rate_limiter(per_second: f64) -> Option<Arc<DefaultDirectRateLimiter>> {
    if per_second <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new((per_second * BURST_FRACTION) as u32).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(Arc::new(RateLimiter::direct(quota)))
}

/// A consumer as this node last loaded it.
struct ConsumerTerms {
    version: i64,
    spec: Arc<ConsumerSpec>,
}

/// This node's gates: consumers' by id, endpoint hosts' by host.
#[derive(Default)]
struct Gates {
    consumers: HashMap<String, Arc<Gate>>,
    hosts: HashMap<String, Arc<Gate>>,
}

impl Gates {
    fn map(&mut self, key: &GateKey) -> (&mut HashMap<String, Arc<Gate>>, String) {
        match key {
            GateKey::Consumer(id) => (&mut self.consumers, id.clone()),
            GateKey::Host(host) => (&mut self.hosts, host.clone()),
        }
    }

    fn get(&self, key: &GateKey) -> Option<&Arc<Gate>> {
        match key {
            GateKey::Consumer(id) => self.consumers.get(id),
            GateKey::Host(host) => self.hosts.get(host),
        }
    }

    fn all(&self) -> impl Iterator<Item = (GateKey, &Arc<Gate>)> {
        let consumers = self.consumers.iter().map(|(id, g)| (GateKey::Consumer(id.clone()), g));
        consumers.chain(self.hosts.iter().map(|(host, g)| (GateKey::Host(host.clone()), g)))
    }
}

/// The consumers' terms and the gates of this node.
pub struct DeliveryLimits {
    node_id: Uuid,
    /// How long a node waits before taking a larger share.
    raise_after: Duration,
    consumers: RwLock<HashMap<String, ConsumerTerms>>,
    gates: RwLock<Gates>,
    view: Mutex<ClusterView>,
}

impl DeliveryLimits {
    /// `heartbeat`: how often nodes exchange their busy gates.
    pub fn new(node_id: Uuid, heartbeat: Duration) -> Self {
        Self {
            node_id,
            raise_after: heartbeat.mul_f64(1.5),
            consumers: RwLock::default(),
            gates: RwLock::default(),
            view: Mutex::default(),
        }
    }

    /// The endpoint hosts' limits (`delivery.host_limits`), set at start.
    pub fn set_host_limits(&self, limits: &[crate::config::HostLimit]) {
        for limit in limits {
            let host = EndpointHost::typed(&limit.host).to_string();
            let limit = Limit {
                rate_per_sec: limit.rate_per_sec,
                concurrency: limit.concurrency,
            };
            self.set_limit(GateKey::Host(host), limit);
        }
    }

    /// A consumer loaded at `version` (the supervisor calls this on every
    /// load): its terms and its gate follow.
    pub fn consumer_changed(&self, id: &str, version: i64, consumer: &Consumer) {
        let Some(spec) = consumer.spec().filter(|_| !consumer.is_deleted()) else {
            self.consumers.write().unwrap_or_else(|p| p.into_inner()).remove(id);
            self.gates
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .consumers
                .remove(id);
            return;
        };
        let known = self
            .consumers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|t| t.version);
        if known.is_none_or(|known| known < version) {
            self.set_consumer(id, version, spec);
        }
    }

    /// Takes `spec` as the consumer's terms and limits of `version`.
    pub(crate) fn set_consumer(&self, id: &str, version: i64, spec: &ConsumerSpec) {
        self.consumers.write().unwrap_or_else(|p| p.into_inner()).insert(
            id.to_string(),
            ConsumerTerms {
                version,
                spec: Arc::new(spec.clone()),
            },
        );
        let limit = Limit {
            rate_per_sec: spec.policy.rate_per_sec,
            concurrency: spec.policy.concurrency,
        };
        self.set_limit(GateKey::Consumer(id.to_string()), limit);
    }

    fn set_limit(&self, key: GateKey, limit: Limit) {
        let gate = {
            let mut gates = self.gates.write().unwrap_or_else(|p| p.into_inner());
            let (map, name) = gates.map(&key);
            map.entry(name).or_insert_with(|| Arc::new(Gate::new())).clone()
        };
        let changed = std::mem::replace(&mut gate.state().limit, limit) != limit;
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = Instant::now();
        let busy = gate.busy(now);
        // Every node reads a new limit at about the same moment: it applies
        // at once; the same limit reloaded keeps a pending raise waiting.
        gate.apply(
            view.share(self.node_id, &key.name(), busy, limit),
            now,
            self.raise_after,
            changed,
        );
    }

    /// The event that moves a consumer's waiting task to the consumer's
    /// terms, when this node knows newer ones that differ from the task's.
    /// Cheap when nothing changed: the versions are compared first.
    pub fn newer_terms(&self, task: &CallbackTask) -> Option<TaskEvent> {
        let spec = task.spec()?;
        let origin = spec.origin.as_ref()?;
        let consumers = self.consumers.read().unwrap_or_else(|p| p.into_inner());
        let terms = consumers.get(&origin.consumer_id)?;
        if task.terms_version().is_some_and(|held| held >= terms.version) {
            return None;
        }
        let (policy, target) = terms.spec.terms_for(&spec.request)?;
        task.adopt_terms(terms.version, &policy, &target, chrono::Utc::now())
    }

    /// Waits until the task may go to its endpoint; the slots are held until
    /// the pass is dropped (when the endpoint has answered).
    pub async fn pass(&self, task: &TaskSpec) -> Pass {
        let gates = {
            let gates = self.gates.read().unwrap_or_else(|p| p.into_inner());
            let consumer = task.origin.as_ref().and_then(|o| gates.consumers.get(&o.consumer_id));
            let host = match gates.hosts.is_empty() {
                true => None,
                false => EndpointHost::of_url(&task.request.url).and_then(|h| gates.hosts.get(&h.to_string())),
            };
            [consumer.cloned(), host.cloned()]
        };
        // The consumer's gate, then the host's: one order for every task, so
        // that no two tasks wait on each other.
        let mut pass = Pass::default();
        for (slot, gate) in pass.held.iter_mut().zip(gates) {
            if let Some(gate) = gate {
                let permit = gate.enter().await;
                *slot = Some((gate, permit));
            }
        }
        pass
    }

    /// Says which gates were busy, reads the other nodes' and sets every
    /// share again (each heartbeat, and once at start before consumers run).
    pub async fn exchange(&self, store: &bida_store::Store, fresh: Duration) -> Result<(), bida_store::StoreError> {
        let now = Instant::now();
        let gates: Vec<(String, Arc<Gate>, bool)> = {
            let gates = self.gates.read().unwrap_or_else(|p| p.into_inner());
            gates
                .all()
                .map(|(key, gate)| (key.name(), gate.clone(), gate.busy(now)))
                .collect()
        };
        let busy: Vec<String> = gates
            .iter()
            .filter(|(.., busy)| *busy)
            .map(|(name, ..)| name.clone())
            .collect();
        let nodes = store.share_busy_gates(self.node_id, &busy, fresh).await?;
        let view = ClusterView {
            nodes: nodes.into_iter().collect(),
        };
        for (name, gate, busy) in &gates {
            let share = view.share(self.node_id, name, *busy, gate.limit());
            gate.apply(share, now, self.raise_after, false);
        }
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
        Ok(())
    }

    /// This node's share of a gate now (shown in reports and tests).
    pub fn share_of(&self, key: &GateKey) -> Option<Share> {
        let gates = self.gates.read().unwrap_or_else(|p| p.into_inner());
        let share = gates.get(key)?.state().share;
        Some(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[(Uuid, bool)]) -> ClusterView {
        ClusterView {
            nodes: nodes
                .iter()
                .map(|(n, busy)| (*n, if *busy { vec!["g".to_string()] } else { vec![] }))
                .collect(),
        }
    }

    fn ids(n: usize) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn shares_add_up_to_the_limit_and_follow_demand() {
        let limit = Limit {
            rate_per_sec: 50,
            concurrency: 16,
        };
        for busy in [
            [true, true, true],
            [true, false, false],
            [false, false, false],
            [true, true, false],
        ] {
            let nodes = ids(3);
            let cluster = view(&nodes.iter().copied().zip(busy).collect::<Vec<_>>());
            let shares: Vec<Share> = nodes
                .iter()
                .zip(busy)
                .map(|(n, b)| cluster.share(*n, "g", b, limit))
                .collect();
            let rate: f64 = shares.iter().map(|s| s.rate_per_sec).sum();
            let slots: usize = shares.iter().map(|s| s.concurrency).sum();
            assert!((rate - 50.0).abs() < 1e-9, "{busy:?}: {shares:?}");
            assert_eq!(slots, 16, "{busy:?}: {shares:?}");
            // A busy node gets at least an even split among the busy ones,
            // less what the (at most two) idle ones hold.
            let busy_nodes = busy.iter().filter(|x| **x).count() as f64;
            for (share, b) in shares.iter().zip(busy) {
                if b {
                    assert!(
                        share.rate_per_sec >= 50.0 / (busy_nodes + 0.2) - 1e-9,
                        "{busy:?}: {shares:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_node_alone_holds_the_whole_limit_and_every_node_keeps_a_slot() {
        let me = Uuid::new_v4();
        let limit = Limit {
            rate_per_sec: 10,
            concurrency: 2,
        };
        let alone = ClusterView::default().share(me, "g", false, limit);
        assert_eq!(alone.concurrency, 2);
        assert!((alone.rate_per_sec - 10.0).abs() < 1e-9);
        let nodes = ids(3);
        let cluster = view(&nodes.iter().map(|n| (*n, true)).collect::<Vec<_>>());
        for node in &nodes {
            assert_eq!(cluster.share(*node, "g", true, limit).concurrency, 1);
        }
    }

    #[tokio::test]
    async fn a_shrinking_share_takes_back_slots_as_they_are_given_back() {
        let gate = Arc::new(Gate::new());
        gate.state().limit = Limit {
            rate_per_sec: 0,
            concurrency: 4,
        };
        let share = |concurrency| Share {
            rate_per_sec: 0.0,
            concurrency,
        };
        let (now, later) = (Instant::now(), Duration::from_secs(3));
        gate.apply(share(4), now, later, true);
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| gate.enter())).await;
        gate.apply(share(1), now, later, false);
        let pass = |permit| Pass {
            held: [Some((gate.clone(), permit)), None],
        };
        let mut passes: Vec<Pass> = held.into_iter().map(pass).collect();
        passes.truncate(1);
        assert_eq!(gate.permits.available_permits(), 0, "three given back, three dropped");
        drop(passes);
        assert_eq!(gate.permits.available_permits(), 1);
        gate.apply(share(3), now, later, false);
        assert_eq!(
            gate.permits.available_permits(),
            1,
            "a larger share waits for the others"
        );
        gate.apply(share(3), now + later / 2, later, false);
        assert_eq!(gate.permits.available_permits(), 1);
        gate.apply(share(3), now + later, later, false);
        assert_eq!(gate.permits.available_permits(), 3);
    }

    #[test]
    fn rates_keep_a_small_burst() {
        let rate = rate_limiter(100.0).unwrap();
        let passed = (0..100).filter(|_| rate.check().is_ok()).count();
        assert_eq!(passed, 5, "a twentieth of a second at once");
        assert!(rate_limiter(0.0).is_none());
        assert!(rate_limiter(0.3).is_some());
    }
}
