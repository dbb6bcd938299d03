//! Issue 17, point 2: every metric the chart's Grafana dashboard and PrometheusRule query
//! is in a real `/metrics` scrape of standalone mode (gateway and executor families; the
//! device plugin's are found by `kaas-device-plugin`'s kubelet test), after traffic that
//! exercises each series: a cold start (no prewarm), served invocations, and a rejection.

use std::process::Command;

use kaas_e2e::monitoring::{exposed, monitored_metric_names};
use kaas_e2e::standalone::{Class, write_functions};
use kaas_e2e::{Proc, addr_after, binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported_by_standalone() {
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_functions(
        dir.path(),
        &[
            Class { name: "probe", iterations: 1000, runtime_ms: 1.0, deadline_ms: 2_000 },
            // Profiled far beyond its deadline: deadline admission turns it away.
            Class { name: "hopeless", iterations: 1000, runtime_ms: 5_000.0, deadline_ms: 100 },
        ],
        "edf",
        "deadline",
    );
    let mut cmd = Command::new(&op_bin);
    cmd.args([
        "standalone",
        "--functions",
        dir.path().to_str().unwrap(),
        "--backend",
        "wasm",
        "--no-prewarm",
    ]);
    cmd.args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    let (_proc, line) = Proc::start(cmd, "HTTP on http://").unwrap();
    let gw = addr_after(&line, "HTTP on http://").unwrap();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for (function, n) in [("probe", 3), ("hopeless", 2)] {
        for i in 0..n {
            let (status, ..) = kaas_e2e::standalone::invoke(&client, &gw, function, i).await;
            statuses.push((function, status));
        }
    }
    assert!(statuses.iter().any(|&(f, s)| f == "probe" && s == 200), "{statuses:?}");
    assert!(statuses.iter().any(|&(f, s)| f == "hopeless" && s == 429), "{statuses:?}");
    let scrape = reqwest::get(format!("http://{gw}/metrics")).await.unwrap().text().await.unwrap();
    let have = exposed(&scrape);
    let wanted: Vec<String> =
        monitored_metric_names().into_iter().filter(|n| !n.starts_with("kaas_device_plugin_")).collect();
    println!("checked in the standalone scrape: {wanted:?}");
    assert!(wanted.len() >= 15, "too few names extracted: {wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported by standalone: {missing:?}\n{scrape}");
}
