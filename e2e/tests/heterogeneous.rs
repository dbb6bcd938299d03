//! Issue 14, point 2: heterogeneity end to end. Two executor processes of different
//! AcceleratorClasses: `cpu-fast` (relativeSpeed 1, 1.00 per hour) and `cpu-cheap`
//! (relativeSpeed 1/6, 0.10 per hour; its executor emulates the slower device with
//! `--emulate-slowdown 6`). Both functions run the same ~5 ms kernel, profiled on
//! `cpu-fast` only: the cheap class's runtime comes from `relativeSpeed`. Under
//! `slo-aware`, the tight-deadline function (25 ms: only the fast class makes it) goes to
//! the fast node and the loose one (400 ms) to the cheap node, in the proportions
//! `kaas-sim` predicts for the same setup (a `per-node` scenario of the two nodes, the
//! same arrivals, each request with the service time it had live).

use std::collections::BTreeMap;
use std::time::Duration;

use std::fmt::Write as _;

use kaas_e2e::binary;
use kaas_e2e::standalone::*;
use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::simulate;

/// Runtime of both functions on each class: profiled on `cpu-fast`, the cheap class's
/// from `relativeSpeed` (what the gateway and `convert` compute).
const FAST_MS: f64 = 6.5;
const CHEAP_MS: f64 = 6.5 * 6.0;

/// Where `slo-aware` places each function in the simulation of the same setup: shares
/// of (tight on fast, loose on cheap).
fn simulated(dir: &std::path::Path, classes: &[Class], outcomes: &[Outcome], rate: f64) -> (f64, f64) {
    let mut csv = String::from("function,arrival_ms,duration_ms\n");
    for (i, o) in outcomes.iter().enumerate() {
        // Durations are on the fastest class: one served on the cheap node took 6x.
        let cheap = !o.device.split('/').next().unwrap_or_default().ends_with("-0");
        let d = if o.status == 200 {
            (o.server_ms - o.queue_ms).max(0.01) * if cheap { FAST_MS / CHEAP_MS } else { 1.0 }
        } else {
            FAST_MS
        };
        writeln!(csv, "{},{:.3},{d:.3}", classes[o.function].name, i as f64 * 1000.0 / rate).unwrap();
    }
    std::fs::write(dir.join("trace.csv"), csv).unwrap();
    let mut y = String::from(
        "name: heterogeneous\ntopology: per-node\ncluster:\n\
         \x20 - { name: cpu-fast, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 1, relativeSpeed: 1, costPerHour: 1.0, count: 1 }\n\
         \x20 - { name: cpu-cheap, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 1, relativeSpeed: 0.1667, costPerHour: 0.1, count: 1 }\n\
         policy: { name: slo-aware }\nadmission: none\ngranularity: request\n\
         workload: { trace: { format: csv, path: trace.csv } }\nfunctions:\n",
    );
    for c in classes {
        writeln!(
            y,
            "  - {{ name: {}, slo: {{ deadlineMs: {} }}, profile: [{{ acceleratorClass: cpu-fast, runtimeMs: {FAST_MS} }}, {{ acceleratorClass: cpu-cheap, runtimeMs: {CHEAP_MS} }}] }}",
            c.name, c.deadline_ms
        )
        .unwrap();
    }
    std::fs::write(dir.join("scenario.yaml"), y).unwrap();
    let s = Scenario::load(&dir.join("scenario.yaml")).unwrap();
    let r = simulate(&s, "slo-aware", 1.0, None).unwrap();
    let on =
        |f: &str, c: &str| r.placements.get(&(f.to_string(), c.to_string())).copied().unwrap_or(0) as f64;
    let share = |f: &str, c: &str| on(f, c) / (on(f, "cpu-fast") + on(f, "cpu-cheap")).max(1.0);
    println!("simulated placements: {:?}", r.placements);
    (share("tight", "cpu-fast"), share("loose", "cpu-cheap"))
}

fn write(dir: &std::path::Path, iterations: u64) {
    let wat: String = KERNEL.lines().map(|l| format!("            {l}\n")).collect();
    let mut y = String::new();
    for (name, speed, price) in [("cpu-fast", 1.0, 1.0), ("cpu-cheap", 1.0 / 6.0, 0.1)] {
        y += &format!(
            "apiVersion: kaas.dev/v1alpha1\nkind: AcceleratorClass\nmetadata: {{ name: {name} }}\nspec: {{ kind: CPU, model: e2e, memoryBytes: 1073741824, slotsPerDevice: 1, relativeSpeed: {speed}, costPerHour: {price} }}\n---\n"
        );
    }
    y += "apiVersion: kaas.dev/v1alpha1\nkind: SchedulingPolicy\nmetadata: { name: default }\nspec: { policy: slo-aware, admission: none, granularity: request }\n";
    for (name, deadline) in [("tight", 25), ("loose", 400)] {
        y += &format!(
            "---\napiVersion: kaas.dev/v1alpha1\nkind: KernelFunction\nmetadata: {{ name: {name}, namespace: e2e }}\nspec:\n  modules:\n    - name: m\n      wasm:\n        inline: |\n{wat}  buffers:\n    - {{ name: in, size: 64, kind: Input }}\n    - {{ name: out, size: 64, kind: Output }}\n  kernels:\n    - {{ module: m, entry: work, grid: [1, 1, 1], block: [1, 1, 1], args: [{{ buffer: in }}, {{ buffer: out }}, {{ u32: {iterations} }}] }}\n  slo: {{ deadlineMs: {deadline} }}\n  profile: [{{ acceleratorClass: cpu-fast, runtimeMs: 6.5 }}]\n"
        );
    }
    std::fs::write(dir.join("functions.yaml"), y).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_aware_sends_tight_deadlines_to_the_fast_class_and_loose_ones_to_the_cheap() {
    let exec_bin = binary("kaas-executor", "kaas-executor").unwrap();
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let (_fast, f) = start_executor_with(&exec_bin, "fast", &["--accelerator-class", "cpu=cpu-fast"]);
    let (_cheap, c) = start_executor_with(
        &exec_bin,
        "cheap",
        &["--accelerator-class", "cpu=cpu-cheap", "--emulate-slowdown", "6"],
    );
    let dir = tempfile::tempdir().unwrap();
    let ms_per_million = calibrate(&op_bin, dir.path(), std::slice::from_ref(&f)).await;
    let iterations = ((5.0 / ms_per_million) * 1e6) as u64;
    println!("calibration: {ms_per_million:.3} ms per million iterations; {iterations} for 5 ms");
    write(dir.path(), iterations);
    let classes = [
        Class { name: "tight", iterations, runtime_ms: 6.5, deadline_ms: 25 },
        Class { name: "loose", iterations, runtime_ms: 6.5, deadline_ms: 400 },
    ];
    let (_gw, addr) = start_gateway(&op_bin, dir.path(), &[f, c]);
    // 20 requests/s of each: the cheap node (~30 ms a request) runs at ~60 %.
    let outcomes = load(&addr, &classes, 40.0, 5.0, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered_total(&addr).await, outcomes.len() as u64);
    assert!(outcomes.iter().filter(|o| o.status == 200).all(|o| o.correct), "a wrong output");
    let mut by: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.status == 200) {
        let node = o.device.split('/').next().unwrap_or_default();
        let node = if node.ends_with("-0") { "fast" } else { "cheap" };
        *by.entry((classes[o.function].name, node)).or_default() += 1;
    }
    let share = |f: &str, node: &str| {
        let n = by.get(&(f, node)).copied().unwrap_or(0);
        let all: usize = by.iter().filter(|((g, _), _)| *g == f).map(|(_, v)| v).sum();
        n as f64 / all.max(1) as f64
    };
    let (att, admitted, total) = attainment(&outcomes, &classes);
    let failed: Vec<usize> =
        outcomes.iter().enumerate().filter(|(_, o)| o.status != 200).map(|(i, _)| i).collect();
    println!("not served: request indices {failed:?}");
    for (i, c) in classes.iter().enumerate() {
        let mut ms: Vec<f64> =
            outcomes.iter().filter(|o| o.function == i && o.status == 200).map(|o| o.server_ms).collect();
        ms.sort_by(f64::total_cmp);
        let statuses: BTreeMap<u16, usize> =
            outcomes.iter().filter(|o| o.function == i).fold(BTreeMap::new(), |mut m, o| {
                *m.entry(o.status).or_default() += 1;
                m
            });
        let q = |p: f64| {
            ms.get(((ms.len() as f64 * p) as usize).min(ms.len().saturating_sub(1))).copied().unwrap_or(0.0)
        };
        println!(
            "{}: statuses {statuses:?}, latency p50 {:.1} p90 {:.1} p99 {:.1} ms",
            c.name,
            q(0.5),
            q(0.9),
            q(0.99)
        );
    }
    println!(
        "served by (function, node): {by:?}; tight on fast {:.2}, loose on cheap {:.2}; \
         {admitted} of {total} answered, {:.2} % in time",
        share("tight", "fast"),
        share("loose", "cheap"),
        att * 100.0
    );
    assert!(share("tight", "fast") >= 0.9, "tight-deadline work goes to the fast class: {by:?}");
    assert!(share("loose", "cheap") >= 0.8, "loose-deadline work goes to the cheap class: {by:?}");
    let (sim_tight, sim_loose) = simulated(dir.path(), &classes, &outcomes, 40.0);
    println!(
        "tight on fast: live {:.3}, simulated {sim_tight:.3}; loose on cheap: live {:.3}, simulated {sim_loose:.3}",
        share("tight", "fast"),
        share("loose", "cheap")
    );
    assert!((share("tight", "fast") - sim_tight).abs() <= 0.1, "tight on fast: live vs simulated");
    assert!((share("loose", "cheap") - sim_loose).abs() <= 0.1, "loose on cheap: live vs simulated");
    assert!(att >= 0.95, "and the deadlines hold: {:.3}", att);
}
