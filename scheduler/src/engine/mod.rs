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
    /// Per function: the warm-up started for it and not finished (scale from zero).
    warmup_of: Vec<Option<WarmUp>>,
    /// Per function: when deadline admission may next let a probe through (see
    /// `admit_by_deadline`).
    probe_at: Vec<Nanos>,
    /// Warm-ups waiting for a free slot on a device of their class (the engine places
    /// them, not the policy), and whether they may only use room nobody holds.
    pending_warmups: Vec<(ReqId, ClassId, bool)>,
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
            warmup_of: Vec::new(),
            probe_at: Vec::new(),
            pending_warmups: Vec::new(),
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

    /// Adds a function; returns its id.
    pub fn add_function(&mut self, f: Function) -> Result<FunctionId, ConfigError> {
        self.settle();
        let id = FunctionId(self.functions.len() as u32);
        self.functions.push(f);
        self.v.resident.push(DeviceSet::new(self.cluster.devices.len()));
        self.v.runnable.push(DeviceSet::new(self.cluster.devices.len()));
        self.v.hot.push(Hot::default());
        self.warmup_of.push(None);
        self.probe_at.push(0);
        self.v.costs.extend(std::iter::repeat_n(ClassCost::NONE, self.cluster.classes.len()));
        if let Err(e) = self.update_function(id, self.functions[id.0 as usize].clone()) {
            self.functions.pop();
            self.v.resident.pop();
            self.v.runnable.pop();
            self.v.hot.pop();
            self.warmup_of.pop();
            self.probe_at.pop();
            self.v.costs.truncate(self.v.costs.len() - self.cluster.classes.len());
            return Err(e);
        }
        Ok(id)
    }

    /// Replaces a function's model (a new profile, say). Queued requests keep their deadlines.
    pub fn update_function(&mut self, id: FunctionId, f: Function) -> Result<(), ConfigError> {
        self.settle();
        let classes = self.cluster.classes.len();
        if f.runtime.len() != classes || f.load_time.len() != classes {
            return Err(ConfigError::Model(format!(
                "function {} gives {} runtimes and {} load times for {classes} classes",
                f.name,
                f.runtime.len(),
                f.load_time.len()
            )));
        }
        if f.weight == 0 || f.kernel_shares.iter().any(|s| s.is_nan() || *s < 0.0) {
            return Err(ConfigError::Model(format!(
                "function {} needs weight ≥ 1 and kernel shares ≥ 0",
                f.name
            )));
        }
        let mut runnable = DeviceSet::new(self.cluster.devices.len());
        let pinned = self.pinned.get(id.0 as usize).copied().flatten();
        for (i, dev) in self.cluster.devices.iter().enumerate() {
            let class = &self.cluster.classes[dev.class.0 as usize];
            if f.runtime_on(dev.class).is_some()
                && f.resident_bytes + f.working_bytes <= class.memory_bytes
                && pinned.is_none_or(|p| p.0 as usize == i)
            {
                runnable.insert(DeviceId(i as u32));
            }
        }
        self.v.runnable[id.0 as usize] = runnable;
        let i = id.0 as usize;
        self.v.hot[i] = Hot {
            best: f.best_runtime().unwrap_or(0),
            resident_bytes: f.resident_bytes,
            working_bytes: f.working_bytes,
            kernels: f.kernel_count() as u16,
            priority: f.priority,
            weight: f.weight,
        };
        for c in 0..classes {
            let class = crate::model::ClassId(c as u16);
            let whole = (0..f.kernel_count()).map(|k| f.kernel_runtime(class, k)).sum::<Option<Nanos>>();
            self.v.costs[i * classes + c] = ClassCost {
                whole: whole.unwrap_or(NONE),
                runtime: f.runtime_on(class).unwrap_or(NONE),
                load: f.load_time[c],
            };
        }
        let horizon = f.deadline;
        self.functions[i] = f;
        if self.track.as_ref().is_some_and(|t| !t.by_deadline.covers(horizon)) {
            self.retrack();
        }
        Ok(())
    }

    /// Restricts a function to one device (a device-plugin share), or lifts the restriction.
    pub fn pin_function(&mut self, id: FunctionId, device: Option<DeviceId>) -> Result<(), ConfigError> {
        self.settle();
        let i = id.0 as usize;
        if self.pinned.len() <= i {
            self.pinned.resize(i + 1, None);
        }
        self.pinned[i] = device;
        let f = self.functions[i].clone();
        self.update_function(id, f)
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

    fn best_continuation(&self) -> Option<(Rank, DeviceId)> {
        self.has_continuation
            .iter_common(&self.v.free)
            .filter_map(|d| self.continuations[d.0 as usize].peek().map(|Reverse((r, _))| (*r, d)))
            .min()
    }

    /// The next dispatch at `now`, or `None` when nothing more can start. Call until `None`
    /// after every submit, completion or health change.
    #[inline]
    pub fn next_dispatch(&mut self, now: Nanos) -> Option<Dispatch> {
        if let Some((at, req, device)) = self.offered.take() {
            if at != now {
                self.requeue(at, req);
            } else if let Some(d) = self.start(now, req, device, false, self.kernel_rank(now, &req)) {
                return Some(d);
            }
        }
        // Most calls find nothing waiting: answer them without setting up a decision.
        if self.has_continuation.is_empty() && self.waiting == 0 {
            return None;
        }
        self.decide(now)
    }

    /// Queues the offered request in the policy, as if it had been queued at submit
    /// (called first by everything that could change what the policy would pick).
    #[inline]
    pub(crate) fn settle(&mut self) {
        if let Some((at, req, _)) = self.offered.take() {
            self.requeue(at, req);
        }
    }

    /// Hands an offered request to the policy's queue, as submitted at `at`.
    fn requeue(&mut self, at: Nanos, req: Queued) {
        let cx = cx!(self, at);
        self.policy.enqueue(&cx, req);
    }

    /// The rank a request starting whole is recorded with: needed only when its later
    /// kernels will compete with other requests (kernel granularity).
    fn kernel_rank(&self, now: Nanos, req: &Queued) -> Option<Rank> {
        (self.config.granularity != Granularity::Request).then(|| {
            let cx = cx!(self, now);
            self.policy.rank(&cx, req)
        })
    }

    fn decide(&mut self, now: Nanos) -> Option<Dispatch> {
        if !self.pending_warmups.is_empty()
            && let Some(d) = self.start_warmup(now)
        {
            return Some(d);
        }
        loop {
            let cont = if self.has_continuation.is_empty() { None } else { self.best_continuation() };
            let (pick, rank) = {
                let cx = cx!(self, now);
                if self.waiting == 0 {
                    (None, None)
                } else {
                    match self.policy.peek(&cx) {
                        // The rank orders a request against kernels waiting on a device;
                        // with no continuations and whole-request dispatch nobody reads it.
                        Some(p) if cont.is_none() && self.config.granularity == Granularity::Request => {
                            (Some(p), None)
                        }
                        Some(p) => {
                            let r = self.policy.rank(&cx, p.req());
                            (Some(p), Some(r))
                        }
                        None => (None, None),
                    }
                }
            };
            if let Some((crank, device)) = cont
                && rank.is_none_or(|r| crank <= r)
            {
                return Some(self.start_continuation(now, device));
            }
            let pick = pick?;
            {
                let cx = cx!(self, now);
                self.policy.commit(&cx, &pick);
            }
            match pick {
                Pick::Drop { req } => {
                    self.backlog -= self.v.hot[req.function.0 as usize].best as f64;
                    self.left_queue(req.id, req.function);
                    self.release_id(req.id);
                    self.waiting -= 1;
                    if self.warmup_at(req.id.index()) {
                        continue;
                    }
                    self.dropped.push(Dropped {
                        id: req.id,
                        function: req.function,
                        arrival: req.arrival,
                        at: now,
                    });
                }
                Pick::Run { req, device, flush } => {
                    if let Some(d) = self.start(now, req, device, flush, rank) {
                        return Some(d);
                    }
                }
            }
        }
    }

    fn take_slot(&mut self, d: DeviceId) {
        if let Some(t) = &mut self.track {
            t.classes[self.cluster.devices[d.0 as usize].class.0 as usize].free -= 1;
        }
        let slots = &mut self.free_slots[d.0 as usize];
        *slots -= 1;
        if *slots == 0 {
            self.v.free.remove(d);
        }
    }

    /// The running cells of device `d`.
    #[inline]
    fn cells(&mut self, d: usize) -> &mut [(ReqId, Nanos)] {
        &mut self.running[self.running_base[d]..self.running_base[d + 1]]
    }

    fn note_running(&mut self, d: DeviceId, id: ReqId, end: Nanos) {
        let di = d.0 as usize;
        let cells = self.cells(di);
        let idle = cells.iter().all(|c| c.0 == NOBODY);
        if let Some(c) = cells.iter_mut().find(|c| c.0 == NOBODY) {
            *c = (id, end);
        }
        let busy = &mut self.v.busy_until[di];
        *busy = if idle { end } else { (*busy).min(end) };
        if let Some(t) = &mut self.track {
            t.classes[self.cluster.devices[di].class.0 as usize].start(end);
        }
    }

    fn start(
        &mut self,
        now: Nanos,
        req: Queued,
        device: DeviceId,
        flush: bool,
        rank: Option<Rank>,
    ) -> Option<Dispatch> {
        let fi = req.function.0 as usize;
        let di = device.0 as usize;
        let class = self.cluster.devices[di].class;
        let classes = self.cluster.classes.len();
        self.evicted.clear();
        if flush {
            self.v.caches[di].flush(&mut self.evicted);
        }
        let hot = self.v.hot[fi];
        let ClassCost { whole, load: load_time, .. } = self.v.costs[fi * classes + class.0 as usize];
        let acquired = self.v.caches[di].acquire(
            req.function,
            hot.resident_bytes,
            hot.working_bytes,
            load_time,
            now,
            &mut self.evicted,
        );
        for g in self.evicted.drain(..) {
            self.v.resident[g.0 as usize].remove(device);
            if self.record_evictions {
                self.evictions.push((g, device));
            }
        }
        let Some(acquired) = acquired else {
            // The policy offered a device the function does not fit on: put the request
            // back rather than lose it.
            debug_assert!(
                false,
                "policy {} picked a device where the function does not fit",
                self.policy.name()
            );
            if !self.warmup_at(req.id.index()) {
                let cx = cx!(self, now);
                self.policy.enqueue(&cx, req);
            }
            return None;
        };
        if acquired.cold {
            self.v.resident[fi].insert(device);
        }
        let slot = req.id.index();
        if slot >= self.held.len() {
            self.held.resize(slot + 1, 0);
        }
        self.held[slot] = hot.working_bytes;
        let n = hot.kernels;
        let warmup = self.warmup_at(slot);
        let (kernels, expected) = match self.config.granularity {
            _ if warmup => (n, 0),
            Granularity::Request => (n, if whole == NONE { 0 } else { whole }),
            Granularity::Kernel => (1, self.functions[fi].kernel_runtime(class, 0).unwrap_or(0)),
        };
        if let Some(t) = &mut self.track
            && !warmup
        {
            t.unqueue(slot, req.function);
        }
        self.take_slot(device);
        self.waiting -= 1;
        let load = if acquired.cold { load_time } else { 0 };
        self.v.queued[req.id.index()] = 0;
        let state = &mut self.requests[req.id.index()];
        state.phase = Phase::Running { device, kernel: 0, kernels };
        if let Some(rank) = rank {
            let i = req.id.index();
            if i >= self.ranks.len() {
                self.ranks.resize(i + 1, Rank::new(0, 0, 0));
            }
            self.ranks[i] = rank;
        }
        self.note_running(device, req.id, now + load + expected);
        Some(Dispatch {
            id: req.id,
            function: req.function,
            device,
            kernel: 0,
            kernels,
            last: kernels == n,
            cold: acquired.cold,
            load,
            expected,
            start: now,
            warmup,
            arrival: req.arrival,
            deadline: req.deadline,
        })
    }

    fn start_continuation(&mut self, now: Nanos, device: DeviceId) -> Dispatch {
        let di = device.0 as usize;
        let Reverse((_, id)) = self.continuations[di].pop().expect("continuation present");
        if self.continuations[di].is_empty() {
            self.has_continuation.remove(device);
        }
        let state = self.requests[id.index()];
        let Phase::Continuing { kernel, .. } = state.phase else {
            unreachable!("continuation in wrong phase")
        };
        let func = &self.functions[state.request.function.0 as usize];
        let class = self.cluster.devices[di].class;
        let expected = func.kernel_runtime(class, kernel as usize).unwrap_or(0);
        let last = kernel as usize + 1 == func.kernel_count();
        self.requests[id.index()].phase = Phase::Running { device, kernel, kernels: 1 };
        self.take_slot(device);
        self.note_running(device, id, now + expected);
        Dispatch {
            id,
            function: state.request.function,
            device,
            kernel,
            kernels: 1,
            last,
            cold: false,
            load: 0,
            expected,
            start: now,
            warmup: false,
            arrival: state.request.arrival,
            deadline: state.request.deadline,
        }
    }

    fn free_slot(&mut self, d: DeviceId, id: ReqId) {
        let di = d.0 as usize;
        self.free_slots[di] += 1;
        let healthy = self.v.healthy.contains(d);
        if healthy {
            self.v.free.insert(d);
        }
        let class = self.cluster.devices[di].class.0 as usize;
        if healthy && let Some(t) = &mut self.track {
            t.classes[class].free += 1;
        }
        let cells = self.cells(di);
        if let Some(c) = cells.iter_mut().find(|c| c.0 == id) {
            let end = std::mem::replace(c, (NOBODY, 0)).1;
            if let Some(t) = &mut self.track {
                t.classes[class].end(end);
            }
            // The earliest end changes only when it is the one leaving.
            if end <= self.v.busy_until[di] {
                let cells = self.cells(di);
                self.v.busy_until[di] =
                    cells.iter().filter(|c| c.0 != NOBODY).map(|c| c.1).min().unwrap_or(0);
            }
        }
    }

    /// Reports that a dispatch finished (successfully or not: a failed kernel is reported
    /// with [`fail`](Self::fail) instead).
    pub fn complete(&mut self, now: Nanos, id: ReqId) -> Option<Completed> {
        self.settle();
        let state = *self.state(id)?;
        let Phase::Running { device, kernel, kernels } = state.phase else { return None };
        self.free_slot(device, id);
        let fi = state.request.function.0 as usize;
        let hot = self.v.hot[fi];
        let n = hot.kernels as usize;
        let share = if n <= 1 {
            1.0
        } else {
            let func = &self.functions[fi];
            remaining_share(func, kernel) - remaining_share(func, kernel + kernels)
        };
        self.backlog -= share * hot.best as f64;
        let next = (kernel + kernels) as usize;
        if next >= n || self.warmup_at(id.index()) {
            let warmup = self.warmup_at(id.index());
            if warmup {
                self.end_warmup(id, state.request.function);
            }
            let keep = self.policy.keep_alive();
            let keep_until = if keep > 0 { now + keep } else { 0 };
            if keep > 0 {
                self.keep_alive_ends.push(Reverse(keep_until));
            }
            let held = self.held[id.index()];
            self.v.caches[device.0 as usize].release(state.request.function, held, now, keep_until);
            self.learn_margin(now, id.index(), &state.request);
            self.release_id(id);
            return Some(if warmup { Completed::Warmup } else { Completed::Request });
        }
        self.requests[id.index()].phase = Phase::Continuing { device, kernel: next as u16 };
        let rank = self.ranks.get(id.index()).copied().unwrap_or(Rank::new(0, 0, 0));
        self.continuations[device.0 as usize].push(Reverse((rank, id)));
        self.has_continuation.insert(device);
        Some(Completed::Kernel)
    }

    /// Reports that a running request failed (its kernel faulted, its executor answered
    /// an error). The request is forgotten; the caller answers it.
    pub fn fail(&mut self, now: Nanos, id: ReqId) -> Option<Request> {
        self.settle();
        let state = *self.state(id)?;
        let Phase::Running { device, kernel, .. } = state.phase else { return None };
        self.free_slot(device, id);
        let func = &self.functions[state.request.function.0 as usize];
        self.backlog -= remaining_share(func, kernel) * func.best_runtime().unwrap_or(0) as f64;
        let held = self.held[id.index()];
        self.v.caches[device.0 as usize].release(state.request.function, held, now, 0);
        self.end_warmup(id, state.request.function);
        self.release_id(id);
        Some(state.request)
    }
}

/// Share of a function's runtime from kernel `from` to the end of its graph.
fn remaining_share(func: &Function, from: u16) -> f64 {
    if func.kernel_count() <= 1 {
        return if from == 0 { 1.0 } else { 0.0 };
    }
    func.kernel_shares.get(from as usize..).map_or(0.0, |s| s.iter().sum())
}

// Declared after the `cx!` macro it uses (macros are scoped textually).
mod control;
mod predict;
mod query;
mod report;
mod submit;
mod warmup;
