//! Memory stays flat in the number of requests: the same scenario with ten times the
//! requests peaks at (nearly) the same resident set. Workloads are streamed, queues hold
//! only waiting requests, histograms grow with the range of values, not their count.
//! The peak is read from `/proc/<pid>/status` (VmHWM) while `kaas-sim` runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A scenario with cold starts and evictions all along: 20 devices whose memory holds half
/// of 200 functions, 70 % load, exponential service.
fn scenario(dir: &Path, requests: u64) -> std::path::PathBuf {
    let mut y = format!(
        "name: flat\nseed: 3\nmaxRequests: {requests}\n\
         cluster: [{{ name: gpu, memoryBytes: 3355443200, slotsPerDevice: 2, count: 20 }}]\nfunctions:\n"
    );
    // 20 devices × 2 slots × 1000 / 4 ms = 10,000 req/s of capacity; 70 % of it over 200 functions.
    for i in 0..200 {
        y += &format!(
            "  - {{ name: f{i}, slo: {{ deadlineMs: 50 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 4, loadMs: 2 }}], expectedRate: 35, residentBytes: 33554432, service: exponential }}\n"
        );
    }
    y += "policy: { name: balance }\nadmission: none\nworkload:\n  synthetic: { generator: poisson }\n";
    let path = dir.join(format!("flat-{requests}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

/// Peak resident set (KiB) of one `kaas-sim run`.
fn peak_rss_kib(scenario: &Path) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaas-sim"))
        .args(["run", "--scenario", scenario.to_str().unwrap(), "--policy", "balance", "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kaas-sim");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // VmHWM only rises; the last reading before the process exits is its peak.
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "kaas-sim failed on {}", scenario.display());
            return peak;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn peak_memory_does_not_grow_with_requests() {
    if !Path::new("/proc/self/status").exists() {
        panic!("this test reads /proc/<pid>/status and needs Linux");
    }
    let dir = tempfile::tempdir().unwrap();
    let small = peak_rss_kib(&scenario(dir.path(), 300_000));
    let large = peak_rss_kib(&scenario(dir.path(), 3_000_000));
    println!("peak RSS: 300k requests {small} KiB, 3M requests {large} KiB");
    assert!(small > 0 && large > 0, "no VmHWM reading");
    // Ten times the requests; allow 2 MiB of allocator noise, not growth with the count
    // (3 M requests × even 8 bytes each would be 23 MiB).
    assert!(large <= small + 2048, "peak RSS grew from {small} KiB to {large} KiB with 10x the requests");
}
