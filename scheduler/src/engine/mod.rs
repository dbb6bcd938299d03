//! The scheduler engine: request lifecycle, device slots, caches and the dispatch loop
//! around the active policy.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::admission::{AdmissionMode, Rejection, TokenBuckets};
use crate::cache::{DeviceCache, Eviction};
use crate::devset::DeviceSet;
use crate::model::{ClassId, Cluster, DeviceId, Function, FunctionId, Nanos, Request};
use crate::policy::{BuiltPolicy, Cx, Pick, Policy, PolicyConfig, Queued, Rank, Registry};
use crate::{ConfigError, Granularity, ReqId, SchedulerConfig};

mod backlog;
mod inflow;
mod types;
pub(crate) use crate::view::{ClassCost, Hot, NONE, View};
use backlog::Backlog;
pub use predict::Prediction;
pub(crate) use types::NOBODY;
pub use types::{Completed, Dispatch, Dropped, Lost};
use warmup::WarmUp;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Free,
    Queued,
    /// Running kernels `[kernel, kernel + kernels)` on a device.
    Running {
        device: DeviceId,
        kernel: u16,
        kernels: u16,
    },
    /// Waiting on a device for its next kernel.
    Continuing {
        device: DeviceId,
        kernel: u16,
    },
}

/// A request slot: 40 bytes, because an overloaded scheduler holds one per waiting
/// request (ranks, needed only to interleave kernels, live in `ranks`).
#[derive(Copy, Clone, Debug)]
struct ReqState {
    generation: u32,
    phase: Phase,
    request: Request,
    /// Admitted as a probe (see `Queued::probe`).
    probe: bool,
}

/// The scheduling engine. See the crate documentation.
pub struct Scheduler {
    /// Scratch for [`Scheduler::predict`]'s slot groups, kept between calls so that an
    /// arrival's prediction allocates nothing (it is taken, filled and put back).
    predict_groups: std::cell::Cell<Vec<predict::Slots>>,
    /// The completion `deadline` admission predicted for the request last admitted.
    admitted_prediction: Option<Nanos>,
    /// Whether the request being admitted is a probe (see `Queued::probe`).
    admitted_probe: bool,
    /// Per request slot: the completion admission predicted for it (0: none), which the
    /// margin compares its actual completion with.
    predicted: Vec<Nanos>,
    /// Deadline admission's margin, learned from those comparisons.
    margin: crate::margin::Margin,
    /// The headroom admission uses now: the configured one (a floor) or the learned one.
    headroom: f64,
    cluster: Cluster,
    functions: Vec<Function>,
    registry: Registry,
    policy: BuiltPolicy,
    config: SchedulerConfig,
    free_slots: Vec<u32>,
    /// What runs on each device and when it ends: one cell per slot, device `d`'s cells
    /// at `running_base[d]..running_base[d + 1]`, empty ones holding [`NOBODY`]. Flat, so
    /// a completion finds its cell without chasing a per-device allocation.
    running: Vec<(ReqId, Nanos)>,
    running_base: Vec<usize>,
    continuations: Vec<BinaryHeap<Reverse<(Rank, ReqId)>>>,
    has_continuation: DeviceSet,
    requests: Vec<ReqState>,
    /// Per request slot: the policy's rank at dispatch, when one was computed (kernel
    /// granularity, or continuations competing).
    ranks: Vec<Rank>,
    /// Per request slot: the working bytes its invocation pinned on its device, given back
    /// at the end even if the function's model changed in between.
    held: Vec<u64>,
    free_ids: Vec<u32>,
    tokens: TokenBuckets,
    /// Expected remaining work of admitted requests, in nanoseconds on each one's fastest class.
    backlog: f64,
    /// Healthy slots weighted by class speed relative to the fastest class.
    capacity: f64,
    seq: u64,
    /// Live requests waiting to start (the policy may still hold cancelled ones): the
    /// hot paths ask this instead of the policy whether anything waits.
    waiting: usize,
    /// A request submitted while nothing else waited, with the device the policy would
    /// give it (see [`Policy::place_alone`]), not queued in the policy: the next
    /// `next_dispatch` at the same instant starts it; anything else queues it first.
    offered: Option<(Nanos, Queued, DeviceId)>,
    dropped: Vec<Dropped>,
    evicted: Vec<FunctionId>,
    /// When keep-alive protections end (may hold ends already past).
    keep_alive_ends: BinaryHeap<Reverse<Nanos>>,
    /// Resident state the cache model evicted, for the caller to free for real.
    evictions: Vec<(FunctionId, DeviceId)>,
    record_evictions: bool,
    /// Functions restricted to one device.
    pinned: Vec<Option<DeviceId>>,
    /// What deadline admission predicts from; kept only while it is on.
    track: Option<Backlog>,
    /// Admitted work per function over the recent past (deadline admission only).
    inflow: inflow::Inflow,
    /// Per function: the warm-up started for it and not finished (scale from zero).
    warmup_of: Vec<Option<WarmUp>>,
    /// Per function: when deadline admission may next let a probe through (see
    /// `admit_by_deadline`).
    probe_at: Vec<Nanos>,
    /// Warm-ups waiting for a free slot on a device of their class (the engine places
    /// them, not the policy), and whether they may only use room nobody holds.
    pending_warmups: Vec<(ReqId, ClassId, bool)>,
    /// Warm-ups queued in the policy to claim a device (see `engine::warmup`), with their
    /// load: work that admission counts ahead where everything queued runs first.
    claims: Vec<(ReqId, Nanos)>,
    /// The sum of their loads.
    claim_work: Nanos,
    /// Per request slot: whether the request there is a warm-up.
    is_warmup: Vec<bool>,
    /// What policies read while deciding (borrowed whole by [`Cx`]).
    v: View,
}

/// Builds the policy context from the scheduler's fields (a macro so the policy itself
/// can stay mutably borrowed).
macro_rules! cx {
    ($s:ident, $now:expr) => {{ Cx { now: $now, cluster: &$s.cluster, functions: &$s.functions, v: &$s.v } }};
}

impl Scheduler {
    /// A scheduler over `cluster` with the built-in policies.
    pub fn new(cluster: Cluster, config: SchedulerConfig) -> Result<Self, ConfigError> {
        Self::with_registry(cluster, config, Registry::builtin())
    }

    /// A scheduler whose policies come from `registry` (built-ins plus your own).
    pub fn with_registry(
        cluster: Cluster,
        config: SchedulerConfig,
        registry: Registry,
    ) -> Result<Self, ConfigError> {
        if !(0.0..1.0).contains(&config.deadline_headroom) {
            return Err(ConfigError::Model(format!(
                "deadline headroom must be in [0, 1), got {}",
                config.deadline_headroom
            )));
        }
        let headroom = config.deadline_headroom;
        if config.token_bucket_burst < 1.0 || !config.token_bucket_burst.is_finite() {
            return Err(ConfigError::Model(format!(
                "token bucket burst must be at least 1, got {}",
                config.token_bucket_burst
            )));
        }
        for c in &cluster.classes {
            if c.slots == 0 || c.speed.is_nan() || c.speed <= 0.0 {
                return Err(ConfigError::Model(format!("class {} needs slots ≥ 1 and speed > 0", c.name)));
            }
        }
        let policy = registry.build(&config.policy)?;
        let n = cluster.devices.len();
        let mut class_sets = vec![DeviceSet::new(n); cluster.classes.len()];
        let mut healthy = DeviceSet::new(n);
        for (i, dev) in cluster.devices.iter().enumerate() {
            let c = dev.class.0 as usize;
            if c >= cluster.classes.len() {
                return Err(ConfigError::Model(format!("device {} has unknown class {c}", dev.name)));
            }
            class_sets[c].insert(DeviceId(i as u32));
            healthy.insert(DeviceId(i as u32));
        }
        let caches = (0..n)
            .map(|i| DeviceCache::new(cluster.class_of(DeviceId(i as u32)).memory_bytes, config.eviction))
            .collect();
        let free_slots: Vec<u32> = (0..n).map(|i| cluster.class_of(DeviceId(i as u32)).slots).collect();
        let running_base: Vec<usize> = std::iter::once(0)
            .chain(free_slots.iter().scan(0usize, |sum, &k| {
                *sum += k as usize;
                Some(*sum)
            }))
            .collect();
        let mut s = Scheduler {
            v: View {
                free: healthy.clone(),
                healthy,
                class_sets,
                caches,
                busy_until: vec![0; n],
                resident: Vec::new(),
                runnable: Vec::new(),
                queued: Vec::new(),
                cancelled_waiting: false,
                hot: Vec::new(),
                costs: Vec::new(),
            },
            free_slots,
            running: vec![(NOBODY, 0); running_base[n]],
            running_base,
            continuations: vec![BinaryHeap::new(); n],
            has_continuation: DeviceSet::new(n),
            cluster,
            functions: Vec::new(),
            registry,
            policy,
            config,
            requests: Vec::new(),
            ranks: Vec::new(),
            held: Vec::new(),
            free_ids: Vec::new(),
            tokens: TokenBuckets::default(),
            backlog: 0.0,
            capacity: 0.0,
            seq: 0,
            waiting: 0,
            offered: None,
            admitted_prediction: None,
            predict_groups: std::cell::Cell::new(Vec::new()),
            admitted_probe: false,
            predicted: Vec::new(),
            margin: Default::default(),
            headroom,
            dropped: Vec::new(),
            evicted: Vec::new(),
            keep_alive_ends: BinaryHeap::new(),
            evictions: Vec::new(),
            record_evictions: true,
            pinned: Vec::new(),
            track: None,
            inflow: Default::default(),
            warmup_of: Vec::new(),
            probe_at: Vec::new(),
            pending_warmups: Vec::new(),
            claims: Vec::new(),
            claim_work: 0,
            is_warmup: Vec::new(),
        };
        s.capacity = s.v.healthy.iter().map(|d| s.slot_capacity(d)).sum();
        s.retrack();
        Ok(s)
    }

    fn slot_capacity(&self, d: DeviceId) -> f64 {
        let max_speed = self.cluster.classes.iter().map(|c| c.speed).fold(0.0, f64::max);
        let c = self.cluster.class_of(d);
        c.slots as f64 * c.speed / max_speed
    }

    /// Whether evictions are recorded for [`take_evictions`](Self::take_evictions) (on by
    /// default). A caller that never takes them, such as the simulator, turns this off so
    /// the record does not grow with every cold start.
    pub fn record_evictions(&mut self, on: bool) {
        self.record_evictions = on;
        if !on {
            self.evictions = Vec::new();
        }
    }

    /// Resident state the cache model evicted since the last call, as (function, device).
    pub fn take_evictions(&mut self) -> Vec<(FunctionId, DeviceId)> {
        std::mem::take(&mut self.evictions)
    }

    /// The live request in a slot (see [`ReqId::slot`]) and its handle: a caller that
    /// keys its own events by slot needs no copy of the handle.
    pub fn in_slot(&self, slot: usize) -> Option<(ReqId, &Request)> {
        let s = self.requests.get(slot).filter(|s| s.phase != Phase::Free)?;
        Some((ReqId::new(slot as u32, s.generation), &s.request))
    }

    fn state(&self, id: ReqId) -> Option<&ReqState> {
        self.requests.get(id.index()).filter(|r| r.generation == id.generation() && r.phase != Phase::Free)
    }

    fn release_id(&mut self, id: ReqId) {
        if let Some(p) = self.predicted.get_mut(id.index()) {
            *p = 0;
        }
        self.requests[id.index()].phase = Phase::Free;
        self.v.queued[id.index()] = 0;
        self.free_ids.push(id.index() as u32);
    }

    /// Withdraws a request that has not started (its caller gave up). Returns whether it
    /// was waiting; running requests cannot be withdrawn.
    pub fn cancel(&mut self, id: ReqId) -> bool {
        self.settle();
        match self.state(id) {
            // A warm-up is the platform's own: nobody outside holds it to cancel.
            Some(s) if s.phase == Phase::Queued && !self.warmup_at(id.index()) => {
                let f = s.request.function;
                self.backlog -= self.v.hot[f.0 as usize].best as f64;
                self.left_queue(id, f);
                self.release_id(id);
                self.waiting -= 1;
                self.v.cancelled_waiting = true;
                true
            }
            _ => false,
        }
    }

    /// When the caller should call [`next_dispatch`](Self::next_dispatch) again even if
    /// nothing else happens: a keep-alive that blocks waiting work expires then.
    #[inline]
    pub fn next_wakeup(&mut self, now: Nanos) -> Option<Nanos> {
        if self.keep_alive_ends.is_empty() {
            return None;
        }
        while self.keep_alive_ends.peek().is_some_and(|e| e.0 <= now) {
            self.keep_alive_ends.pop();
        }
        if self.waiting == 0 {
            return None;
        }
        self.keep_alive_ends.peek().map(|e| e.0)
    }

    /// Requests dropped since the last call (shed by the policy).
    pub fn take_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.dropped)
    }

    /// Whether drops are waiting in [`take_dropped`](Self::take_dropped).
    pub fn has_dropped(&self) -> bool {
        !self.dropped.is_empty()
    }

    /// Whether nothing waits, nothing was dropped and no keep-alive is pending: then
    /// [`next_dispatch`](Self::next_dispatch) and [`next_wakeup`](Self::next_wakeup)
    /// both answer `None` and need not be asked.
    #[inline]
    pub fn is_quiet(&self) -> bool {
        self.has_continuation.is_empty()
            && self.dropped.is_empty()
            && self.keep_alive_ends.is_empty()
            && self.waiting == 0
    }
}

/// Share of a function's runtime from kernel `from` to the end of its graph.
fn remaining_share(func: &Function, from: u16) -> f64 {
    if func.kernel_count() <= 1 {
        return if from == 0 { 1.0 } else { 0.0 };
    }
    func.kernel_shares.get(from as usize..).map_or(0.0, |s| s.iter().sum())
}

// Declared after the `cx!` macro they use (macros are scoped textually).
mod control;
mod dispatch;
mod functions;
mod predict;
mod query;
mod report;
mod submit;
mod tracking;
mod warmup;
