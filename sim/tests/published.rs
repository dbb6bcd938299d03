//! The simulator against a published result: the Kernel-as-a-Service contention table
//! (arXiv 2212.08146, measured on V100s, numbers in examples/traces/properties.json).
//! With 4 GPUs, exclusive per-function workers collapse once functions outnumber GPUs,
//! because nearly every request becomes a cold start, while a shared pool keeps its
//! throughput.

use std::path::Path;

use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::simulate;

struct Published {
    /// Aggregate QPS of exclusive workers with n = 1..8 client replicas.
    exclusive: Vec<f64>,
    kaas: Vec<f64>,
    resident_bytes: u64,
}

fn published() -> Published {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/traces");
    // Python wrote the file: missing measurements are bare `NaN`, which JSON lacks.
    let text = std::fs::read_to_string(dir.join("properties.json")).unwrap().replace("NaN", "null");
    let props: serde_json::Value = serde_json::from_str(&text).unwrap();
    let series = |mode: &str| -> Vec<f64> {
        props["full"]["resnet50"][mode]["throughput"].as_array().unwrap()[..8]
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let reqs = std::fs::read_to_string(dir.join("resourceReqs.yaml")).unwrap();
    let reqs: serde_json::Value = serde_yaml_ng::from_str(&reqs).unwrap();
    Published {
        exclusive: series("exclusive"),
        kaas: series("kaas"),
        resident_bytes: reqs["resnet50"]["kaas"]["mem"].as_u64().unwrap(),
    }
}

/// `n` copies of resnet50 as separate functions, each with 4 closed-loop clients, on 4 V100s.
fn scenario(p: &Published, n: usize) -> Scenario {
    // Device time per request: 4 GPUs serve the published 4-replica exclusive QPS.
    let service_ms = 4.0 * 1000.0 / p.exclusive[3];
    // A cold start (a new exclusive worker) implied by the collapse at 5 replicas.
    let load_ms = 4.0 * 1000.0 / p.exclusive[4] - service_ms;
    let mut y = "name: kaas-contention\nseed: 1\ndurationS: 600\n\
         cluster: [{ name: v100, memoryBytes: 17179869184, slotsPerDevice: 1, count: 4 }]\nfunctions:\n"
        .to_string();
    for i in 0..n {
        y += &format!(
            "  - {{ name: resnet50-{i}, slo: {{ deadlineMs: 3600000 }}, residentBytes: {}, profile: [{{ acceleratorClass: v100, runtimeMs: {service_ms}, loadMs: {load_ms} }}] }}\n",
            p.resident_bytes
        );
    }
    y +=
        "admission: none\ngranularity: request\nworkload: { synthetic: { generator: closed, clients: 4 } }\n";
    Scenario::from_yaml(&y, Path::new(".")).unwrap()
}

fn throughput(s: &Scenario, policy: &str) -> f64 {
    let r = simulate(s, policy, 1.0, None).unwrap();
    r.report.completed as f64 / 600.0
}

#[test]
fn exclusive_collapses_when_functions_outnumber_gpus_and_a_shared_pool_does_not() {
    let p = published();
    println!("replicas  exclusive(sim)  exclusive(paper)  cfs-affinity(sim)  kaas(paper)");
    let mut excl = Vec::new();
    let mut cfs = Vec::new();
    for n in [1, 4, 5, 8] {
        let s = scenario(&p, n);
        let (e, c) = (throughput(&s, "exclusive"), throughput(&s, "cfs-affinity"));
        println!("{n:>8}  {e:>14.1}  {:>16.1}  {c:>17.1}  {:>11.1}", p.exclusive[n - 1], p.kaas[n - 1]);
        excl.push(e);
        cfs.push(c);
    }
    // Up to 4 functions each keeps a warm worker: the published ~204 QPS.
    assert!((excl[1] - p.exclusive[3]).abs() / p.exclusive[3] < 0.05, "{excl:?}");
    // 5 and 8 functions: collapse to a few QPS, the order of the published 1.5 QPS. (The
    // model's collapse is milder, about 6 QPS: a worker that takes a device serves the
    // requests already queued for it before losing it again.)
    for (i, n) in [(2, 5), (3, 8)] {
        assert!(excl[i] < 0.05 * excl[1], "exclusive with {n} functions: {excl:?}");
        assert!(excl[i] < 10.0 * p.exclusive[4], "exclusive with {n} functions: {excl:?}");
    }
    // The shared pool keeps its throughput as functions multiply.
    assert!(cfs[2] > 0.9 * cfs[1] && cfs[3] > 0.9 * cfs[1], "{cfs:?}");
    assert!(cfs[3] > 20.0 * excl[3], "{cfs:?} vs {excl:?}");
}
