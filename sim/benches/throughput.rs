//! Simulator speed: simulated requests per wall-clock second for every policy on 100
//! devices and 1,000 functions with Poisson arrivals at 80 % utilisation, single-threaded.
//! Printed next to a baseline measured in the same run: a bare M/M/c FIFO loop (arrival
//! draws, a completion heap, a queue) over the same workload, without the scheduler core.
//!
//! Every figure is the best of `--runs` runs (3 by default): this machine is shared, and
//! other tenants' load only ever slows a run down, so the fastest run is the closest to
//! what the code does on its own. The spread is printed alongside.
//!
//! Run: `cargo bench -p kaas-sim --bench throughput` (add `-- --requests N` to change
//! size, `-- --runs N` to change repetitions, `-- --policy NAME` for one policy,
//! `-- --admission deadline` to run every policy with deadline admission on).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::Path;
use std::time::Instant;

use kaas_scheduler::POLICY_NAMES;
use kaas_sim::rng::Rng;
use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::simulate;

const DEVICES: usize = 100;
const FUNCTIONS: usize = 1000;
const RUNTIME_MS: f64 = 5.0;

fn scenario(requests: u64) -> Scenario {
    // 100 devices × 1 slot, 5 ms per request: capacity 20,000 req/s; 80 % of it.
    let rate = 0.8 * DEVICES as f64 * 1000.0 / RUNTIME_MS / FUNCTIONS as f64;
    let mut y = format!(
        "name: bench\nseed: 1\nmaxRequests: {requests}\ncluster:\n  - {{ name: gpu, kind: GPU, memoryBytes: 68719476736, slotsPerDevice: 1, count: {DEVICES} }}\nfunctions:\n"
    );
    for i in 0..FUNCTIONS {
        y += &format!(
            "  - {{ name: f{i}, slo: {{ deadlineMs: 100 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: {RUNTIME_MS}, loadMs: 50 }}], expectedRate: {rate}, residentBytes: 33554432, prewarm: {DEVICES}, service: exponential }}\n"
        );
    }
    y += "policy: { name: balance }\nadmission: none\ngranularity: request\nworkload:\n  synthetic: { generator: poisson }\n";
    Scenario::from_yaml(&y, Path::new(".")).expect("bench scenario")
}

/// The floor: M/M/c FIFO with the same arrival rate and service, no scheduler.
fn baseline(requests: u64) -> f64 {
    let mut rng = Rng::seed_from_u64(1);
    let lambda = 0.8 * DEVICES as f64 * 1000.0 / RUNTIME_MS;
    let mean = RUNTIME_MS / 1000.0;
    let mut free = DEVICES;
    let mut queue: VecDeque<f64> = VecDeque::new();
    let mut ends: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let (mut served, mut wait) = (0u64, 0.0f64);
    let start = Instant::now();
    let mut next_arrival = 0.0;
    let mut arrived = 0u64;
    while served < requests {
        let next_end = ends.peek().map(|e| e.0 as f64 / 1e9);
        let t;
        if arrived < requests && next_end.is_none_or(|e| next_arrival <= e) {
            t = next_arrival;
            queue.push_back(t);
            arrived += 1;
            next_arrival = t + rng.exp1() / lambda;
        } else {
            ends.pop();
            t = next_end.unwrap();
            free += 1;
            served += 1;
        }
        while free > 0 {
            let Some(a) = queue.pop_front() else { break };
            free -= 1;
            wait += t - a;
            let s = rng.exp1() * mean;
            ends.push(Reverse(((t + s) * 1e9) as u64));
        }
    }
    std::hint::black_box(wait);
    requests as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000u64);
    let only = args.iter().position(|a| a == "--policy").and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runs = runs.max(1);
    let mut s = scenario(requests);
    let admission = args.iter().position(|a| a == "--admission").and_then(|i| args.get(i + 1)).cloned();
    if let Some(a) = &admission {
        s.admission = serde_json::from_value(serde_json::Value::String(a.clone()))
            .unwrap_or_else(|e| panic!("--admission {a}: {e} (none, deadline or token-bucket)"));
    }
    let bases: Vec<f64> = (0..runs).map(|_| baseline(requests)).collect();
    let base = best(&bases);
    println!(
        "simulator speed: {DEVICES} devices, {FUNCTIONS} functions, {requests} requests, Poisson at 80 % load, best of {runs}, admission {}",
        admission.as_deref().unwrap_or("none")
    );
    println!(
        "{:<14} {:>14} {:>14} {:>10} {:>8} {:>9} {:>8}   all runs (M requests/s)",
        "policy", "requests/s", "events/s", "vs base", "target", "rejected", "in time"
    );
    println!(
        "{:<14} {:>14.0} {:>14} {:>10} {:>8} {:>9} {:>8}   {}",
        "baseline",
        base,
        "-",
        "1.00",
        "-",
        "-",
        "-",
        spread(&bases)
    );
    for p in POLICY_NAMES.into_iter().filter(|p| only.as_deref().is_none_or(|o| o == *p)) {
        let results: Vec<_> = (0..runs).map(|_| simulate(&s, p, 1.0, None).expect("simulation")).collect();
        let rates: Vec<f64> = results.iter().map(|r| r.requests_per_s).collect();
        let r = results.iter().max_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s)).expect("a run");
        let target = if p == "balance" { 5e6 } else { 1e6 };
        let share = |n: u64| 100.0 * n as f64 / r.report.requests.max(1) as f64;
        println!(
            "{:<14} {:>14.0} {:>14.0} {:>10.2} {:>8} {:>8.1}% {:>7.1}%   {}",
            p,
            r.requests_per_s,
            r.events_per_s,
            r.requests_per_s / base,
            if r.requests_per_s >= target { "met" } else { "MISSED" },
            share(r.report.rejected),
            100.0 * r.report.slo_attainment,
            spread(&rates)
        );
    }
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

fn spread(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{:.2}", x / 1e6)).collect::<Vec<_>>().join(" ")
}
