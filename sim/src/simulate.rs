//! The discrete-event loop: arrivals and completions drive the scheduler core, the
//! metrics accumulator records every outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use kaas_scheduler::metrics::{Metrics, Report};
use kaas_scheduler::{Completed, FunctionId, Nanos, Request, SEC, Scheduler};
use serde::Serialize;

use crate::SimError;
use crate::heap::EventHeap;
use crate::rng::Rng;
use crate::scenario::{Generator, Scenario, Service};
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
}

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The dispatch of the request in this scheduler slot finishes.
    Complete(u32),
    /// A keep-alive that blocks waiting work ends.
    Wakeup,
    /// A closed-loop client of this function issues its next request.
    Issue(u32),
}

/// An event as one integer: time in the high 64 bits, then the kind and its argument, so
/// the heap compares single integers. Events at the same instant run completions first,
/// then wakeups, then issues; two events with the same key are the same event.
fn event(t: Nanos, kind: Kind) -> u128 {
    let (k, arg) = match kind {
        Kind::Complete(slot) => (0u128, slot),
        Kind::Wakeup => (1, 0),
        Kind::Issue(f) => (2, f),
    };
    (t as u128) << 64 | k << 32 | arg as u128
}

fn decode(e: u128) -> (Nanos, Kind) {
    let arg = e as u32;
    let kind = match (e >> 32) as u32 {
        0 => Kind::Complete(arg),
        1 => Kind::Wakeup,
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

struct Sim<'a> {
    scenario: &'a Scenario,
    s: Scheduler,
    metrics: Metrics,
    events: EventHeap,
    side: Vec<Side>,
    /// Whether arrivals carry durations or come from clients (else `side` stays empty).
    needs_side: bool,
    rng: Rng,
    exponential: Vec<bool>,
    /// Relative deadline per function.
    deadlines: Vec<Nanos>,
    best: Vec<Nanos>,
    think: Nanos,
    wakeup: Option<Nanos>,
    count: u64,
    last_arrival: Nanos,
    /// Time of the last event: the simulated makespan once the queue has drained.
    last_event: Nanos,
    /// Whether to record admission's predictions (and then, per slot, the predicted
    /// completion of the request there).
    record: bool,
    predicted: Vec<Nanos>,
    prediction_errors: Vec<f64>,
}

impl Sim<'_> {
    fn push(&mut self, t: Nanos, kind: Kind) {
        self.events.push(event(t, kind));
    }

    #[inline]
    fn side(&self, slot: usize) -> Side {
        if self.needs_side { self.side[slot] } else { Side::NONE }
    }

    fn arrive(&mut self, a: Arrival, client: bool) {
        self.count += 1;
        self.last_arrival = self.last_arrival.max(a.t);
        let f = FunctionId(a.function);
        let deadline = a.t + self.deadlines[a.function as usize];
        let predicted = if self.record { self.s.predict_completion(f, deadline, a.t) } else { None };
        match self.s.submit(a.t, Request { function: f, arrival: a.t, deadline }) {
            Ok(id) => {
                self.metrics.admitted(f);
                if let Some(p) = predicted {
                    let slot = id.slot();
                    if slot >= self.predicted.len() {
                        self.predicted.resize(slot + 1, 0);
                    }
                    self.predicted[slot] = p;
                }
                if self.needs_side {
                    let slot = id.slot();
                    if slot >= self.side.len() {
                        self.side.resize(slot + 1, Side::NONE);
                    }
                    self.side[slot] = Side { duration: a.duration, client };
                }
            }
            Err(_) => {
                self.metrics.rejected(f);
                if client {
                    self.push(a.t + self.think, Kind::Issue(a.function));
                }
            }
        }
    }

    fn complete(&mut self, now: Nanos, slot: u32) {
        let Some((id, &r)) = self.s.in_slot(slot as usize) else { return };
        if let Some(Completed::Request) = self.s.complete(now, id) {
            let latency = now - r.arrival;
            self.metrics.completed(r.function, latency, now <= r.deadline);
            if let Some(&p) = self.predicted.get(slot as usize).filter(|&&p| p > 0) {
                let relative = r.deadline.saturating_sub(r.arrival).max(1) as f64;
                self.prediction_errors.push((now as f64 - p as f64) / relative);
                self.predicted[slot as usize] = 0;
            }
            if self.side(slot as usize).client {
                self.push(now + self.think, Kind::Issue(r.function.0));
            }
        }
    }

    #[inline]
    fn dispatch(&mut self, now: Nanos) {
        // After most completions nothing waits: skip the dispatch loop entirely.
        if self.s.is_quiet() {
            return;
        }
        self.dispatch_waiting(now);
    }

    fn dispatch_waiting(&mut self, now: Nanos) {
        while let Some(d) = self.s.next_dispatch(now) {
            let fi = d.function.0 as usize;
            if d.warmup {
                // Scale from zero: the load holds a slot and answers nobody.
                let class = self.s.cluster().class_of(d.device);
                let (price, slots) = (class.price_per_hour, class.slots);
                self.metrics.busy(d.function, d.load, price, slots);
                self.count += 1;
                self.push(now + d.load, Kind::Complete(d.id.slot() as u32));
                continue;
            }
            let side = self.side(d.id.slot());
            let run = match side.duration {
                Some(dur) => (d.expected as f64 * dur as f64 / self.best[fi].max(1) as f64) as Nanos,
                None if self.exponential[fi] => (self.rng.exp1() * d.expected as f64) as Nanos,
                None => d.expected,
            };
            let busy = d.load + run;
            let class = self.s.cluster().class_of(d.device);
            let (price, slots) = (class.price_per_hour, class.slots);
            self.metrics.busy(d.function, busy, price, slots);
            if d.kernel == 0 {
                self.metrics.started(d.function, now - d.arrival, d.cold);
            }
            self.count += 1;
            self.push(now + busy, Kind::Complete(d.id.slot() as u32));
        }
        if self.s.has_dropped() {
            for dr in self.s.take_dropped() {
                self.metrics.failed(dr.function);
                if self.side(dr.id.slot()).client {
                    self.push(now + self.think, Kind::Issue(dr.function.0));
                }
            }
        }
        if let Some(w) = self.s.next_wakeup(now)
            && self.wakeup.is_none_or(|x| x <= now || w < x)
        {
            self.wakeup = Some(w);
            self.push(w, Kind::Wakeup);
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
    let mut s = Scheduler::new(cluster, scenario.scheduler_config(policy, devices))?;
    // Nothing frees real memory here: keeping the record would grow with every eviction.
    s.record_evictions(false);
    let mut metrics = Metrics::new();
    let functions = workload::with_trace_memory(scenario, scenario.functions())?;
    let mut best = Vec::new();
    for f in functions {
        let b = f.best_runtime().unwrap_or(0);
        metrics.add_function(&f.name, b);
        best.push(b);
        s.add_function(f)?;
    }
    for (i, f) in scenario.functions.iter().enumerate() {
        let fid = FunctionId(i as u32);
        let mut placed = 0;
        for d in 0..devices {
            if placed >= f.prewarm {
                break;
            }
            placed += s.preload(0, fid, kaas_scheduler::DeviceId(d as u32)) as u32;
        }
    }
    let mut arrivals = workload::open(scenario, load_factor)?;
    let deadlines = s.functions().iter().map(|f| f.deadline).collect();
    let closed = scenario.workload.synthetic.as_ref().filter(|g| g.generator == Generator::Closed);
    let mut sim = Sim {
        scenario,
        s,
        metrics,
        events: EventHeap::default(),
        side: Vec::new(),
        needs_side: scenario.workload.trace.is_some() || closed.is_some(),
        rng: Rng::seed_from_u64(scenario.seed.wrapping_add(0x5eed)),
        exponential: scenario.functions.iter().map(|f| f.service == Service::Exponential).collect(),
        deadlines,
        best,
        think: closed.map_or(0, |g| kaas_scheduler::ms(g.think_ms)),
        wakeup: None,
        count: 0,
        last_arrival: 0,
        last_event: 0,
        record: scenario.record_predictions && scenario.admission == kaas_scheduler::AdmissionMode::Deadline,
        predicted: Vec::new(),
        prediction_errors: Vec::new(),
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
                sim.dispatch(a.t);
                next_arrival = arrivals.pull().map_err(|e| *e)?;
                continue;
            }
            (Some(e), None) => e,
            (None, None) => break,
        };
        let (_, kind) = decode(sim.events.pop().unwrap());
        sim.last_event = sim.last_event.max(now);
        match kind {
            Kind::Complete(slot) => {
                sim.count += 1;
                sim.complete(now, slot);
            }
            Kind::Wakeup => {}
            Kind::Issue(f) => {
                let in_time = limit.is_none_or(|l| now <= l) && max_requests.is_none_or(|m| issued < m);
                if in_time {
                    issued += 1;
                    sim.arrive(Arrival { t: now, function: f, duration: None }, true);
                }
            }
        }
        sim.dispatch(now);
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
        report,
    })
}
