//! The discrete-event loop: arrivals and completions drive the scheduler core, the
//! metrics accumulator records every outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::learn::Learner;
use kaas_scheduler::metrics::{Metrics, Report};
use kaas_scheduler::{Cluster, Completed, Function, FunctionId, Nanos, ReqId, Request, SEC, Scheduler};
use serde::Serialize;

use crate::SimError;
use crate::heap::EventHeap;
use crate::rng::Rng;
use crate::scenario::{Generator, Scenario, Service};
use crate::topology::{self, Charge, MAX_TRIES, Router, Topology};
use crate::workload::{self, Arrival};

/// Quantiles at which latency CDFs are sampled.
pub const CDF_QUANTILES: [f64; 21] = [
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995,
    0.998, 0.999, 1.0,
];

/// The result of simulating one policy on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Cluster variant (`base` for the scenario's own).
    pub variant: String,
    /// Load factor.
    pub load_factor: f64,
    /// Policy name.
    pub policy: String,
    /// Every metric, overall.
    #[serde(flatten)]
    pub report: Report,
    /// Wall-clock seconds the simulation took.
    pub sim_wall_s: f64,
    /// Events (arrivals, dispatches, completions) simulated per wall-clock second.
    pub events_per_s: f64,
    /// Requests simulated per wall-clock second.
    #[serde(skip)]
    pub requests_per_s: f64,
    /// Per-function reports.
    #[serde(skip)]
    pub per_function: Vec<(String, Report)>,
    /// Latency quantiles (ms) at [`CDF_QUANTILES`].
    #[serde(skip)]
    pub latency_cdf: Vec<f64>,
    /// With [`Scenario::record_predictions`] under `deadline` admission: per admitted and
    /// completed request, (actual − predicted completion) / its relative deadline.
    #[serde(skip)]
    pub prediction_errors: Vec<f64>,
    /// Requests started per (function, accelerator class), by name: where routing and
    /// the policies sent the work.
    #[serde(skip)]
    pub placements: BTreeMap<(String, String), u64>,
    /// Requests whose own recorded runtime, on an idle device of the function's fastest
    /// class, is longer than their deadline: no schedule serves them in time (known only
    /// for trace durations).
    pub infeasible: u64,
    /// Of those, the ones admitted.
    #[serde(skip)]
    pub infeasible_admitted: u64,
}

impl RunResult {
    /// `slo_met` over the admitted requests that some schedule could have served in time
    /// (see [`RunResult::infeasible`]): what admission can be held to when it cannot know
    /// one request's runtime before it runs.
    pub fn servable_admitted_slo_attainment(&self) -> f64 {
        let servable = self.report.admitted.saturating_sub(self.infeasible_admitted);
        if servable == 0 { 1.0 } else { self.report.slo_met as f64 / servable as f64 }
    }
}

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The dispatch of the request in this node scheduler's slot finishes.
    Complete(u32, u32),
    /// A keep-alive that blocks waiting work on this node ends.
    Wakeup(u32),
    /// A closed-loop client of this function issues its next request.
    Issue(u32),
}

/// An event as one integer: time in the high 64 bits, then the kind (2 bits), the node
/// (30 bits) and the slot or function (32 bits), so the heap compares single integers.
/// Events at the same instant run completions first, then wakeups, then issues; two
/// events with the same key are the same event.
fn event(t: Nanos, kind: Kind) -> u128 {
    let (k, node, arg) = match kind {
        Kind::Complete(node, slot) => (0u128, node, slot),
        Kind::Wakeup(node) => (1, node, 0),
        Kind::Issue(f) => (2, 0, f),
    };
    (t as u128) << 64 | k << 62 | (node as u128) << 32 | arg as u128
}

fn decode(e: u128) -> (Nanos, Kind) {
    let arg = e as u32;
    let node = ((e >> 32) as u32) & ((1 << 30) - 1);
    let kind = match ((e >> 62) & 3) as u32 {
        0 => Kind::Complete(node, arg),
        1 => Kind::Wakeup(node),
        _ => Kind::Issue(arg),
    };
    ((e >> 64) as Nanos, kind)
}

/// What the simulation keeps per scheduler request slot besides what the scheduler keeps
/// (function, arrival, deadline): only for trace durations and closed-loop clients, so a
/// synthetic open workload, whose queue may hold a million requests, keeps nothing.
#[derive(Clone, Copy)]
struct Side {
    /// Service time from the trace.
    duration: Option<Nanos>,
    client: bool,
}

impl Side {
    const NONE: Side = Side { duration: None, client: false };
}

/// One node: its scheduler and what the simulation keeps per request slot of it.
struct Node {
    s: Scheduler,
    side: Vec<Side>,
    /// Per slot, the predicted completion of the request there (when recording).
    predicted: Vec<Nanos>,
    /// Per slot, what the router charged (per-node topology).
    charges: Vec<Charge>,
    wakeup: Option<Nanos>,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    nodes: Vec<Node>,
    /// The router in front of the nodes (per-node topology).
    router: Option<Router>,
    /// The global function table (each node's copy keeps only the classes it has).
    functions: Vec<Function>,
    metrics: Metrics,
    events: EventHeap,
    /// Whether arrivals carry durations or come from clients (else `side` stays empty).
    needs_side: bool,
    rng: Rng,
    exponential: Vec<bool>,
    /// Relative deadline per function.
    deadlines: Vec<Nanos>,
    /// Router to node, one way (per-node topology; 0 in a pool).
    hop: Nanos,
    best: Vec<Nanos>,
    think: Nanos,
    count: u64,
    last_arrival: Nanos,
    /// Time of the last event: the simulated makespan once the queue has drained.
    last_event: Nanos,
    /// Whether to record admission's predictions (and then, per slot, the predicted
    /// completion of the request there).
    record: bool,
    prediction_errors: Vec<f64>,
    /// See [`RunResult::infeasible`].
    infeasible: u64,
    infeasible_admitted: u64,
    /// Requests started per function and class (index `function × classes + class`, the
    /// class list every node's cluster shares; a flat table: it is counted on every
    /// dispatch).
    placements: Vec<u64>,
    /// Runtimes each node's scheduler learns, when the scenario says so.
    learner: Option<Learner>,
}

fn put<T: Copy>(v: &mut Vec<T>, slot: usize, value: T, empty: T) {
    if slot >= v.len() {
        v.resize(slot + 1, empty);
    }
    v[slot] = value;
}

impl Sim<'_> {
    fn push(&mut self, t: Nanos, kind: Kind) {
        self.events.push(event(t, kind));
    }

    #[inline]
    fn side(&self, n: usize, slot: usize) -> Side {
        if self.needs_side { self.nodes[n].side[slot] } else { Side::NONE }
    }

    /// Offers a request to node `n` as its `tries`-th offer (0: the first); its handle
    /// when the node's scheduler admits it. The node gets what is left of the deadline
    /// when the offer reaches it: each refusal before cost a round trip and this offer
    /// one hop (the request enters the node's queue at its arrival, so the node's clock
    /// runs that far ahead for it, see [`Sim::complete`]).
    fn offer(&mut self, n: usize, a: &Arrival, client: bool, tries: u64) -> Option<ReqId> {
        let f = FunctionId(a.function);
        let deadline = (a.t + self.deadlines[a.function as usize]).saturating_sub((2 * tries + 1) * self.hop);
        let node = &mut self.nodes[n];
        let predicted = if self.record { node.s.predict_completion(f, deadline, a.t) } else { None };
        let id = node.s.submit(a.t, Request { function: f, arrival: a.t, deadline }).ok()?;
        if let Some(p) = predicted {
            put(&mut node.predicted, id.slot(), p, 0);
        }
        if self.needs_side {
            put(&mut node.side, id.slot(), Side { duration: a.duration, client }, Side::NONE);
        }
        Some(id)
    }

    /// An arrival: straight to the one scheduler (pool), or routed (per-node); then
    /// every node it was offered to dispatches (a refusal may have started a warm-up).
    fn arrive(&mut self, a: Arrival, client: bool) {
        self.count += 1;
        self.last_arrival = self.last_arrival.max(a.t);
        let f = FunctionId(a.function);
        // The nodes offered the request, in order (no allocation: this runs per arrival).
        let mut tried = [0usize; MAX_TRIES];
        let mut offered = 0;
        let accepted = match self.router.take() {
            None => {
                offered = 1;
                self.offer(0, &a, client, 0).is_some()
            }
            Some(mut router) => {
                for (n, node) in self.nodes.iter().enumerate() {
                    router.refresh(n, &node.s, a.t);
                }
                let clusters: Vec<&Cluster> = self.nodes.iter().map(|n| n.s.cluster()).collect();
                let func = &self.functions[a.function as usize];
                let relative = self.deadlines[a.function as usize].saturating_sub(2 * self.hop);
                let order = router.order(func, f, relative, &clusters);
                let mut accepted = false;
                for (n, device, run_ms) in order {
                    if tried[..offered].contains(&n) {
                        continue;
                    }
                    if offered == MAX_TRIES {
                        break;
                    }
                    tried[offered] = n;
                    offered += 1;
                    if let Some(id) = self.offer(n, &a, client, offered as u64 - 1) {
                        let c = router.charge(n, device, run_ms);
                        put(&mut self.nodes[n].charges, id.slot(), c, Charge::default());
                        accepted = true;
                        break;
                    }
                }
                self.router = Some(router);
                accepted
            }
        };
        if a.duration.is_some_and(|d| d > self.deadlines[a.function as usize]) {
            self.infeasible += 1;
            self.infeasible_admitted += accepted as u64;
        }
        if accepted {
            self.metrics.admitted(f);
        } else {
            self.metrics.rejected(f);
            if client {
                self.push(a.t + self.think, Kind::Issue(a.function));
            }
        }
        for &n in &tried[..offered] {
            self.dispatch(a.t, n);
        }
    }

    /// The router takes back a request's charge once it is answered.
    fn answered(&mut self, n: usize, slot: usize) {
        if let Some(router) = &mut self.router
            && let Some(&c) = self.nodes[n].charges.get(slot)
        {
            router.uncharge(n, c);
        }
    }

    fn complete(&mut self, now: Nanos, n: usize, slot: u32) {
        let node = &mut self.nodes[n];
        let in_slot = node.s.in_slot(slot as usize).map(|(id, &r)| (id, r));
        let done = in_slot.and_then(|(id, _)| node.s.complete(now, id));
        // Measured at completion, as an executor measures.
        if let Some(l) = &mut self.learner {
            l.completed(n, slot as usize, &mut node.s, in_slot.is_some());
        }
        let Some((_, r)) = in_slot else { return };
        if let Some(Completed::Request) = done {
            // With hops, the k-th offer's node deadline is the request's less (2k + 1)
            // hops (see `offer`), and the node's clock runs that far ahead for it: the
            // answer is back at the router one hop after `now` plus that, so in time when
            // `now + hop <= r.deadline`, and its latency is `now + hop + D - r.deadline`.
            let (latency, in_time) = if self.hop == 0 {
                (now - r.arrival, now <= r.deadline)
            } else {
                let relative = self.deadlines[r.function.0 as usize];
                (now + self.hop + relative - r.deadline, now + self.hop <= r.deadline)
            };
            self.metrics.completed(r.function, latency, in_time);
            if let Some(&p) = node.predicted.get(slot as usize).filter(|&&p| p > 0) {
                let relative = r.deadline.saturating_sub(r.arrival).max(1) as f64;
                self.prediction_errors.push((now as f64 - p as f64) / relative);
                node.predicted[slot as usize] = 0;
            }
            self.answered(n, slot as usize);
            if self.side(n, slot as usize).client {
                self.push(now + self.think, Kind::Issue(r.function.0));
            }
        }
    }

    #[inline]
    fn dispatch(&mut self, now: Nanos, n: usize) {
        // After most completions nothing waits: skip the dispatch loop entirely.
        if self.nodes[n].s.is_quiet() {
            return;
        }
        self.dispatch_waiting(now, n);
    }

    fn dispatch_waiting(&mut self, now: Nanos, n: usize) {
        while let Some(d) = self.nodes[n].s.next_dispatch(now) {
            let fi = d.function.0 as usize;
            let class_id = self.nodes[n].s.cluster().devices[d.device.0 as usize].class;
            let class = &self.nodes[n].s.cluster().classes[class_id.0 as usize];
            let (price, slots) = (class.price_per_hour, class.slots);
            if d.warmup {
                // Scale from zero: the load holds a slot and answers nobody.
                self.metrics.busy(d.function, d.load, price, slots);
                self.count += 1;
                self.push(now + d.load, Kind::Complete(n as u32, d.id.slot() as u32));
                continue;
            }
            let side = self.side(n, d.id.slot());
            // What it really takes on average, whatever the scheduler has learned.
            let expected = match &self.learner {
                Some(l) => l.truth(n, fi, class_id.0 as usize, d.expected),
                None => d.expected,
            };
            let run = match side.duration {
                Some(dur) => (expected as f64 * dur as f64 / self.best[fi].max(1) as f64) as Nanos,
                None if self.exponential[fi] => (self.rng.exp1() * expected as f64) as Nanos,
                None => expected,
            };
            if let Some(l) = &mut self.learner {
                l.dispatched(n, d.id.slot(), fi, class_id.0 as usize, d.kernel, run);
            }
            let busy = d.load + run;
            self.metrics.busy(d.function, busy, price, slots);
            if d.kernel == 0 {
                self.metrics.started(d.function, now - d.arrival, d.cold);
                let classes = self.nodes[n].s.cluster().classes.len();
                self.placements[fi * classes + class_id.0 as usize] += 1;
            }
            self.count += 1;
            self.push(now + busy, Kind::Complete(n as u32, d.id.slot() as u32));
        }
        if self.nodes[n].s.has_dropped() {
            for dr in self.nodes[n].s.take_dropped() {
                self.metrics.failed(dr.function);
                self.answered(n, dr.id.slot());
                if self.side(n, dr.id.slot()).client {
                    self.push(now + self.think, Kind::Issue(dr.function.0));
                }
            }
        }
        let node = &mut self.nodes[n];
        if let Some(w) = node.s.next_wakeup(now)
            && node.wakeup.is_none_or(|x| x <= now || w < x)
        {
            node.wakeup = Some(w);
            self.push(w, Kind::Wakeup(n as u32));
        }
    }
}

/// Simulates `policy` on a scenario at a load factor, with optional device counts per class.
pub fn simulate(
    scenario: &Scenario,
    policy: &str,
    load_factor: f64,
    variant: Option<(&str, &BTreeMap<String, usize>)>,
) -> Result<RunResult, SimError> {
    let cluster = scenario.cluster(variant.map(|v| v.1));
    let devices = cluster.devices.len();
    let slot_count: u64 =
        cluster.devices.iter().map(|d| cluster.classes[d.class.0 as usize].slots as u64).sum();
    let config = scenario.scheduler_config(policy, devices);
    let per_node: Vec<Option<usize>> = scenario.cluster.iter().map(|c| c.devices_per_node).collect();
    let layout = topology::layout(scenario.topology, &cluster, &per_node);
    let mut metrics = Metrics::new();
    let functions = workload::with_trace_memory(scenario, scenario.functions())?;
    let mut best = Vec::new();
    for f in &functions {
        let b = f.best_runtime().unwrap_or(0);
        metrics.add_function(&f.name, b);
        best.push(b);
    }
    let mut nodes = Vec::with_capacity(layout.len());
    let mut models = Vec::with_capacity(layout.len());
    // Where each global device is: (node, device on it).
    let mut place = vec![(0usize, 0u32); devices];
    for (n, devs) in layout.iter().enumerate() {
        let c = topology::node_cluster(&cluster, devs);
        let mut s = Scheduler::new(c, config.clone())?;
        // Nothing frees real memory here: keeping the record would grow with every eviction.
        s.record_evictions(false);
        let mine: Vec<Function> = functions.iter().map(|f| topology::node_function(f, s.cluster())).collect();
        for f in &mine {
            s.add_function(f.clone())?;
        }
        models.push(mine);
        for (i, &d) in devs.iter().enumerate() {
            place[d] = (n, i as u32);
        }
        nodes.push(Node { s, side: Vec::new(), predicted: Vec::new(), charges: Vec::new(), wakeup: None });
    }
    for (i, f) in scenario.functions.iter().enumerate() {
        let fid = FunctionId(i as u32);
        let mut placed = 0;
        for &(n, d) in &place {
            if placed >= f.prewarm {
                break;
            }
            placed += nodes[n].s.preload(0, fid, kaas_scheduler::DeviceId(d)) as u32;
        }
    }
    let mut arrivals = workload::open(scenario, load_factor)?;
    let deadlines = functions.iter().map(|f| f.deadline).collect();
    let closed = scenario.workload.synthetic.as_ref().filter(|g| g.generator == Generator::Closed);
    let router = (scenario.topology == Topology::PerNode)
        .then(|| Router::new(policy, kaas_scheduler::ms(scenario.report_interval_ms), nodes.len()));
    let mut sim = Sim {
        scenario,
        nodes,
        router,
        functions,
        metrics,
        events: EventHeap::default(),
        needs_side: scenario.workload.trace.is_some() || closed.is_some(),
        rng: Rng::seed_from_u64(scenario.seed.wrapping_add(0x5eed)),
        exponential: scenario.functions.iter().map(|f| f.service == Service::Exponential).collect(),
        deadlines,
        hop: if scenario.topology == Topology::PerNode { kaas_scheduler::ms(scenario.hop_ms) } else { 0 },
        best,
        think: closed.map_or(0, |g| kaas_scheduler::ms(g.think_ms)),
        count: 0,
        last_arrival: 0,
        last_event: 0,
        record: scenario.record_predictions && scenario.admission == kaas_scheduler::AdmissionMode::Deadline,
        prediction_errors: Vec::new(),
        infeasible: 0,
        infeasible_admitted: 0,
        placements: vec![0; scenario.functions.len() * cluster.classes.len()],
        learner: scenario.learn_runtimes.then(|| Learner::new(cluster.classes.len(), models)),
    };
    if let Some(g) = closed {
        for (i, f) in scenario.functions.iter().enumerate() {
            let clients = if g.rates.is_empty() || g.rates.contains_key(&f.name) { g.clients } else { 0 };
            for _ in 0..clients {
                sim.push(0, Kind::Issue(i as u32));
            }
        }
    }
    let limit = scenario.duration_s.map(|d| (d * SEC as f64) as Nanos);
    let max_requests = scenario.max_requests;
    let mut issued = 0u64;
    let started = Instant::now();
    let mut next_arrival = arrivals.pull().map_err(|e| *e)?;
    loop {
        let next_event = sim.events.peek().map(|e| decode(e).0);
        let now = match (next_event, next_arrival) {
            (Some(e), Some(a)) if e <= a.t => e,
            (_, Some(a)) => {
                sim.arrive(a, false);
                next_arrival = arrivals.pull().map_err(|e| *e)?;
                continue;
            }
            (Some(e), None) => e,
            (None, None) => break,
        };
        let (_, kind) = decode(sim.events.pop().unwrap());
        sim.last_event = sim.last_event.max(now);
        match kind {
            Kind::Complete(n, slot) => {
                sim.count += 1;
                sim.complete(now, n as usize, slot);
                sim.dispatch(now, n as usize);
            }
            Kind::Wakeup(n) => sim.dispatch(now, n as usize),
            Kind::Issue(f) => {
                let in_time = limit.is_none_or(|l| now <= l) && max_requests.is_none_or(|m| issued < m);
                if in_time {
                    issued += 1;
                    sim.arrive(Arrival { t: now, function: f, duration: None }, true);
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    // Rates and utilisation are over the makespan: a queue that drains after the last
    // arrival keeps devices busy past it.
    let duration = limit.unwrap_or(0).max(sim.last_arrival).max(sim.last_event).max(1);
    let slot_seconds = slot_count as f64 * duration as f64 / SEC as f64;
    let report = sim.metrics.report(duration, slot_seconds);
    Ok(RunResult {
        scenario: sim.scenario.name.clone(),
        variant: variant.map_or("base", |v| v.0).to_string(),
        load_factor,
        policy: policy.to_string(),
        sim_wall_s: wall,
        events_per_s: sim.count as f64 / wall,
        requests_per_s: report.requests as f64 / wall,
        per_function: sim.metrics.per_function(duration, slot_seconds),
        latency_cdf: sim.metrics.latency_quantiles(&CDF_QUANTILES),
        prediction_errors: std::mem::take(&mut sim.prediction_errors),
        infeasible: sim.infeasible,
        infeasible_admitted: sim.infeasible_admitted,
        placements: sim
            .placements
            .iter()
            .enumerate()
            .filter(|&(_, &k)| k > 0)
            .map(|(i, &k)| {
                let classes = &sim.nodes[0].s.cluster().classes;
                let (f, c) = (i / classes.len(), i % classes.len());
                ((sim.functions[f].name.clone(), classes[c].name.clone()), k)
            })
            .collect(),
        report,
    })
}
