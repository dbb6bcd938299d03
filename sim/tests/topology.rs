//! `topology: per-node` (issue 14): a scheduler per node behind the router every gateway
//! runs. One node is the pool exactly; several nodes below capacity serve about what the
//! pool serves; `slo-aware` routes tight deadlines to the fast class and loose ones to
//! the cheap class.

use std::path::Path;

use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::{RunResult, simulate};
use kaas_sim::topology::Topology;

const POLICIES: [&str; 4] = ["slo-aware", "edf", "mqfq-sticky", "balance"];

fn homogeneous(devices: usize, per_node: &str, admission: &str) -> Scenario {
    let y = format!(
        "name: homogeneous\nseed: 7\nmaxRequests: 20000\n\
         cluster: [{{ name: gpu, memoryBytes: 1073741824, slotsPerDevice: 2, count: {devices}{per_node} }}]\n\
         functions:\n\
         \x20 - {{ name: short, slo: {{ deadlineMs: 40 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 4, loadMs: 50 }}], expectedRate: {short}, service: exponential, prewarm: {devices} }}\n\
         \x20 - {{ name: long, slo: {{ deadlineMs: 400 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 40, loadMs: 50 }}], expectedRate: {long}, service: exponential, prewarm: {devices} }}\n\
         admission: {admission}\n\
         workload: {{ synthetic: {{ generator: poisson }} }}\n",
        // Each function fills half the slots at load 1.
        short = 250 * devices,
        long = 25 * devices,
    );
    Scenario::from_yaml(&y, Path::new(".")).unwrap()
}

fn line(r: &RunResult) -> String {
    format!(
        "{:<12} attainment {:.4} admitted {:.4} wait {:.3} ms rejected {}",
        r.policy,
        r.report.slo_attainment,
        r.report.admitted_slo_attainment,
        r.report.wait_ms.mean,
        r.report.rejected
    )
}

/// A `per-node` cluster of one node is the pool: the router has one place to send to,
/// the node's scheduler is the pool's. Same numbers, for every policy and admission.
#[test]
fn one_node_is_the_pool() {
    for admission in ["none", "deadline"] {
        let pool = homogeneous(4, "", admission);
        let mut one = pool.clone();
        one.topology = Topology::PerNode;
        for policy in POLICIES {
            let (a, b) =
                (simulate(&pool, policy, 1.2, None).unwrap(), simulate(&one, policy, 1.2, None).unwrap());
            println!("{admission} pool     {}\n{admission} per-node {}", line(&a), line(&b));
            assert_eq!(a.report.slo_met, b.report.slo_met, "{policy} {admission}");
            assert_eq!(a.report.rejected, b.report.rejected, "{policy} {admission}");
            assert_eq!(a.report.wait_ms.mean, b.report.wait_ms.mean, "{policy} {admission}");
        }
    }
}

/// Four nodes of two devices behind the router, at 70 % load: the router's view is up to
/// 20 ms stale and charged with what it sent since, and still serves within two points of
/// the ideal pool (random routing would not). Each node serves a share of the work.
#[test]
fn per_node_below_capacity_serves_what_the_pool_serves() {
    for admission in ["none", "deadline"] {
        let pool = homogeneous(8, ", devicesPerNode: 2", admission);
        let mut nodes = pool.clone();
        nodes.topology = Topology::PerNode;
        for policy in POLICIES {
            let a = simulate(&pool, policy, 0.7, None).unwrap();
            let b = simulate(&nodes, policy, 0.7, None).unwrap();
            println!("{admission} pool     {}\n{admission} per-node {}", line(&a), line(&b));
            assert!(a.report.slo_attainment > 0.95, "{policy} {admission}: pool {}", line(&a));
            assert!(
                b.report.slo_attainment >= a.report.slo_attainment - 0.02,
                "{policy} {admission}: per-node {} vs pool {}",
                line(&b),
                line(&a)
            );
            assert_eq!(b.report.completed + b.report.rejected + b.report.failed, b.report.requests);
        }
    }
}

/// Heterogeneous nodes: one of fast, dear devices and one of slow (1/6 speed), cheap
/// ones. `slo-aware` sends the function whose deadline only the fast class meets there,
/// and the loose one to the cheap class; the soonest-completion policies do not care
/// about price.
#[test]
fn slo_aware_routes_tight_work_fast_and_loose_work_cheap() {
    let y = "name: hetero\nseed: 3\nmaxRequests: 6000\ntopology: per-node\n\
             cluster:\n\
             \x20 - { name: fast, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 2, count: 1, costPerHour: 3.0 }\n\
             \x20 - { name: cheap, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 1, relativeSpeed: 0.1667, count: 1, costPerHour: 0.5 }\n\
             functions:\n\
             \x20 - { name: tight, slo: { deadlineMs: 10 }, profile: [{ acceleratorClass: fast, runtimeMs: 2 }, { acceleratorClass: cheap, runtimeMs: 12 }], expectedRate: 100, prewarm: 2 }\n\
             \x20 - { name: loose, slo: { deadlineMs: 200 }, profile: [{ acceleratorClass: fast, runtimeMs: 2 }, { acceleratorClass: cheap, runtimeMs: 12 }], expectedRate: 30, prewarm: 2 }\n\
             admission: deadline\n\
             workload: { synthetic: { generator: poisson } }\n";
    let s = Scenario::from_yaml(y, Path::new(".")).unwrap();
    let r = simulate(&s, "slo-aware", 1.0, None).unwrap();
    let share = |f: &str, class: &str| {
        let on = |c: &str| r.placements.get(&(f.to_string(), c.to_string())).copied().unwrap_or(0) as f64;
        on(class) / (on("fast") + on("cheap")).max(1.0)
    };
    println!("{}\n{:?}", line(&r), r.placements);
    assert!(share("tight", "fast") > 0.95, "tight on fast: {:.3}", share("tight", "fast"));
    assert!(share("loose", "cheap") > 0.8, "loose on cheap: {:.3}", share("loose", "cheap"));
    assert!(r.report.slo_attainment > 0.97, "{}", line(&r));
    let edf = simulate(&s, "edf", 1.0, None).unwrap();
    println!("{}\n{:?}", line(&edf), edf.placements);
    let loose_cheap = edf.placements.get(&("loose".to_string(), "cheap".to_string())).copied().unwrap_or(0);
    assert!(
        (loose_cheap as f64) < 0.5 * 30.0 * r.report.requests as f64 / 130.0,
        "edf goes soonest: {loose_cheap}"
    );
}

/// `learnRuntimes` models the executors' learning: a function profiled at 2 ms whose
/// requests take 10 ms (a stale profile) is admitted by what the profile says until the
/// node has measured it — then by what it takes. Deadline admission at 1.25× load keeps
/// its admitted requests in time only when the model learns.
#[test]
fn learned_runtimes_correct_a_stale_profile() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("function,arrival_ms,duration_ms\n");
    for i in 0..2000 {
        csv.push_str(&format!("f,{},10\n", i * 8));
    }
    std::fs::write(dir.path().join("trace.csv"), csv).unwrap();
    let run = |learn: bool| {
        let y = format!(
            "name: stale\nseed: 1\ntopology: per-node\nlearnRuntimes: {learn}\n\
             cluster: [{{ name: cpu, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 1, count: 1, devicesPerNode: 1 }}]\n\
             functions:\n\
             \x20 - {{ name: f, slo: {{ deadlineMs: 40 }}, profile: [{{ acceleratorClass: cpu, runtimeMs: 2, loadMs: 5 }}], prewarm: 1 }}\n\
             admission: deadline\npolicy: {{ name: edf }}\n\
             workload: {{ trace: {{ format: csv, path: trace.csv }} }}\n"
        );
        let s = Scenario::from_yaml(&y, dir.path()).unwrap();
        simulate(&s, "edf", 1.0, None).unwrap()
    };
    let (stale, learned) = (run(false), run(true));
    println!("profile kept:    {}", line(&stale));
    println!("runtime learned: {}", line(&learned));
    assert!(stale.report.admitted_slo_attainment < 0.5, "a 5x stale profile admits what misses");
    assert!(learned.report.admitted_slo_attainment > 0.98, "{}", line(&learned));
    // Rejecting everything would meet that: it serves what one slot can, 10 ms per 8 ms.
    assert!(learned.report.slo_attainment > 0.7, "{}", line(&learned));
}

/// `hopMs`: the way from the router to a node and back takes two hops of every
/// request's latency and deadline. One node of one slot, a fixed 10 ms runtime, a 60 ms
/// deadline, a tenth of the capacity (so little waits, never 40 ms): 5 ms hops add 10 ms
/// to every latency and still make the deadline; 26 ms hops make every answer late (52 ms
/// of hops plus 10 ms of work), though the node, which only knows what was left of the
/// deadline when the request reached it (34 ms), admits them, as an executor does.
#[test]
fn hops_to_a_node_and_back_count_in_latency_and_deadline() {
    let run = |hop: f64, admission: &str| {
        let y = format!(
            "name: hops\nseed: 2\nmaxRequests: 2000\ntopology: per-node\nhopMs: {hop}\n\
             cluster: [{{ name: gpu, memoryBytes: 1073741824, slotsPerDevice: 1, count: 1 }}]\n\
             functions: [{{ name: f, slo: {{ deadlineMs: 60 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 10, loadMs: 5 }}], expectedRate: 10, prewarm: 1 }}]\n\
             admission: {admission}\n\
             workload: {{ synthetic: {{ generator: poisson }} }}\n"
        );
        simulate(&Scenario::from_yaml(&y, Path::new(".")).unwrap(), "edf", 1.0, None).unwrap()
    };
    let base = run(0.0, "none");
    assert_eq!(base.report.slo_met, base.report.completed);
    assert_eq!(base.report.completed, 2000);
    for (hop, admission) in [(5.0, "none"), (5.0, "deadline"), (26.0, "none"), (26.0, "deadline")] {
        let r = run(hop, admission);
        println!("hop {hop} ms, {admission}: {}, latency p50 {:.3} ms", line(&r), r.report.latency_ms.p50);
        assert_eq!(
            r.report.completed, base.report.completed,
            "hop {hop} {admission}: the node admits them all"
        );
        let added = r.report.latency_ms.mean - base.report.latency_ms.mean;
        assert!((added - 2.0 * hop).abs() < 1e-6, "hop {hop} {admission}: latency grew by {added} ms");
        assert_eq!(r.report.wait_ms.mean, base.report.wait_ms.mean, "the node's queue is the same");
        let in_time = if hop == 5.0 { r.report.completed } else { 0 };
        assert_eq!(r.report.slo_met, in_time, "hop {hop} {admission}");
    }
}

/// A negative or infinite `hopMs` is refused with the field's name.
#[test]
fn a_bad_hop_is_refused() {
    for hop in ["-1", ".inf"] {
        let y = format!(
            "name: bad\nseed: 1\ntopology: per-node\nhopMs: {hop}\n\
             cluster: [{{ name: gpu, memoryBytes: 1073741824, slotsPerDevice: 1, count: 1 }}]\n\
             functions: [{{ name: f, slo: {{ deadlineMs: 30 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 10, loadMs: 5 }}], expectedRate: 10 }}]\n\
             workload: {{ synthetic: {{ generator: poisson }} }}\n"
        );
        let e = Scenario::from_yaml(&y, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("hopMs"), "{hop}: {e}");
    }
}
