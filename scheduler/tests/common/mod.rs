//! A minimal event loop over the scheduler for tests: arrivals at given times, every
//! dispatch runs for exactly its expected load + runtime.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use kaas_scheduler::*;

/// What happened to a request, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// Request index started kernel(s) on a device.
    Run { t: Nanos, req: usize, device: u32, kernel: u16, cold: bool },
    /// Request index finished.
    Done { t: Nanos, req: usize },
    /// Request index rejected at arrival.
    Rejected { t: Nanos, req: usize, why: String },
    /// Request index dropped by the policy.
    Dropped { t: Nanos, req: usize },
    /// A warm-up (scale from zero) of a function started on a device.
    Warmup { t: Nanos, function: u32, device: u32 },
}

/// Called after every batch of dispatches at one instant.
pub type Check<'a> = dyn FnMut(&Scheduler, Nanos, &[(ReqId, usize)]) + 'a;

/// Runs `arrivals` (time, function) through `s` and returns the event trace.
pub fn run(s: &mut Scheduler, arrivals: &[(Nanos, FunctionId)]) -> Vec<Ev> {
    run_checked(s, arrivals, &mut |_, _, _| {})
}

/// Like [`run`], calling `check` after each instant's dispatches.
pub fn run_checked(s: &mut Scheduler, arrivals: &[(Nanos, FunctionId)], check: &mut Check) -> Vec<Ev> {
    let mut trace = Vec::new();
    let mut ends: BinaryHeap<Reverse<(Nanos, u64, ReqId)>> = BinaryHeap::new();
    let mut ids: BTreeMap<ReqId, usize> = BTreeMap::new();
    let mut next = 0usize;
    let mut seq = 0u64;
    let mut wakeup: Option<Nanos> = None;
    loop {
        let t_arr = arrivals.get(next).map(|a| a.0);
        let t_end = ends.peek().map(|e| e.0.0);
        let Some(now) = [t_arr, t_end, wakeup].into_iter().flatten().min() else { break };
        if wakeup == Some(now) {
            wakeup = None;
        }
        while ends.peek().is_some_and(|e| e.0.0 == now) {
            let Reverse((_, _, id)) = ends.pop().unwrap();
            if let Some(Completed::Request) = s.complete(now, id) {
                trace.push(Ev::Done { t: now, req: ids.remove(&id).unwrap() });
            }
        }
        while arrivals.get(next).is_some_and(|a| a.0 == now) {
            let (t, f) = arrivals[next];
            let deadline = t + s.functions()[f.0 as usize].deadline;
            match s.submit(now, Request { function: f, arrival: t, deadline }) {
                Ok(id) => {
                    ids.insert(id, next);
                }
                Err(why) => trace.push(Ev::Rejected { t: now, req: next, why: why.to_string() }),
            }
            next += 1;
        }
        while let Some(d) = s.next_dispatch(now) {
            if d.warmup {
                trace.push(Ev::Warmup { t: now, function: d.function.0, device: d.device.0 });
                seq += 1;
                ends.push(Reverse((now + d.load, seq, d.id)));
                continue;
            }
            trace.push(Ev::Run {
                t: now,
                req: ids[&d.id],
                device: d.device.0,
                kernel: d.kernel,
                cold: d.cold,
            });
            seq += 1;
            ends.push(Reverse((now + d.load + d.expected, seq, d.id)));
        }
        for dr in s.take_dropped() {
            trace.push(Ev::Dropped { t: now, req: ids.remove(&dr.id).unwrap() });
        }
        let live: Vec<(ReqId, usize)> = ids.iter().map(|(k, v)| (*k, *v)).collect();
        check(s, now, &live);
        if let Some(w) = s.next_wakeup(now) {
            wakeup = Some(wakeup.map_or(w, |x: Nanos| x.min(w)));
        }
    }
    trace
}

/// One class of `n` identical GPUs with `slots` slots and `memory` bytes each.
pub fn gpus(n: usize, slots: u32, memory: u64) -> Cluster {
    let mut c = Cluster::default();
    c.add_class(
        AcceleratorClass {
            name: "gpu".into(),
            kind: DeviceKind::Gpu,
            speed: 1.0,
            memory_bytes: memory,
            slots,
            price_per_hour: 1.0,
        },
        n,
    );
    c
}

/// Milliseconds.
pub fn msec(v: u64) -> Nanos {
    v * MS
}

/// The `Run` events as `(t_ms, req, device, cold)`.
pub fn runs(trace: &[Ev]) -> Vec<(u64, usize, u32, bool)> {
    trace
        .iter()
        .filter_map(|e| match e {
            Ev::Run { t, req, device, cold, .. } => Some((t / MS, *req, *device, *cold)),
            _ => None,
        })
        .collect()
}
