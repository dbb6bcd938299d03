//! The `kaas-sim` command line: formats, metric names, determinism, sweeps, bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaas-sim"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run kaas-sim")
}

fn ok(args: &[&str]) -> String {
    let out = sim(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn err(args: &[&str]) -> String {
    let out = sim(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

const METRICS: [&str; 25] = [
    "requests",
    "admitted",
    "rejected",
    "completed",
    "slo_met",
    "slo_attainment",
    "admitted_slo_attainment",
    "goodput_rps",
    "cold_starts",
    "cold_start_rate",
    "wait_ms_mean",
    "wait_ms_p50",
    "wait_ms_p95",
    "wait_ms_p99",
    "latency_ms_mean",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "fairness_jain",
    "utilization",
    "cost",
    "sim_wall_s",
    "events_per_s",
    "policy",
    "load_factor",
];

const SCENARIO: &str = "examples/scenarios/azure-functions-2021.yaml";

#[test]
fn policies_lists_every_name() {
    let out = ok(&["policies"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names, ["balance", "exclusive", "static", "cfs-affinity", "edf", "slo-aware", "mqfq-sticky"]);
}

#[test]
fn csv_has_every_metric_and_one_row_per_policy() {
    let out = ok(&["run", "--scenario", SCENARIO, "--policy", "all", "--format", "csv"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for m in METRICS {
        assert!(header.contains(&m), "missing column {m} in {header:?}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 7);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for r in &rows {
        assert_eq!(r[col("requests")], "199", "the trace has 199 invocations");
        let att: f64 = r[col("slo_attainment")].parse().unwrap();
        assert!((0.0..=1.0).contains(&att));
    }
}

#[test]
fn json_nests_wait_and_latency_distributions() {
    let out = ok(&["run", "--scenario", SCENARIO, "--policy", "edf", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &v[0];
    for k in ["requests", "slo_attainment", "admitted_slo_attainment", "goodput_rps", "fairness_jain", "cost"]
    {
        assert!(row.get(k).is_some(), "{k}");
    }
    for d in ["wait_ms", "latency_ms"] {
        for k in ["mean", "p50", "p95", "p99"] {
            assert!(row[d][k].is_number(), "{d}.{k}");
        }
    }
    assert!(row["sim_wall_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn same_scenario_and_seed_give_byte_identical_output() {
    let args = [
        "run",
        "--scenario",
        "examples/scenarios/azure-functions-2019.yaml",
        "--policy",
        "all",
        "--format",
        "csv",
        "--no-timing",
    ];
    let a = ok(&args);
    let b = ok(&args);
    assert_eq!(a, b);
    assert!(a.lines().count() == 8);
}

#[test]
fn sweep_writes_csv_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    ok(&[
        "sweep",
        "--scenario",
        SCENARIO,
        "--out",
        out_dir,
        "--load-factors",
        "0.5,1,2",
        "--policies",
        "balance,edf,cfs-affinity",
        "--quiet",
    ]);
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 3);
    for f in
        ["slo-attainment-vs-load.svg", "p99-latency-vs-load.svg", "latency-cdf.svg", "cold-start-rate.svg"]
    {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline") || svg.contains("<rect x="), "{f}");
        for p in ["balance", "edf", "cfs-affinity"] {
            assert!(svg.contains(p), "{f} lacks {p}");
        }
    }
}

/// Issue 13, point 5: `kaas-sim report` runs loads x policies x admission modes and writes
/// report.md with the answers and every plot, on a pool with GPUs and CPUs.
#[test]
fn report_writes_answers_table_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/scenarios/hetero-cold.yaml");
    let out = ok(&[
        "report",
        "--scenario",
        scenario,
        "--out",
        dir.path().to_str().unwrap(),
        "--load-factors",
        "1,3",
        "--policies",
        "edf,slo-aware",
        "--quiet",
    ]);
    assert!(out.contains("| fewest cold starts"), "{out}");
    assert!(out.contains("what `deadline` admission buys at load 3"), "{out}");
    assert!(out.contains("what CPU fallback buys (`"), "the pool has CPUs next to its GPUs: {out}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    // 2 admission modes x 2 loads x 2 policies.
    assert_eq!(md.lines().filter(|l| l.starts_with("| none |") || l.starts_with("| deadline |")).count(), 8);
    let csv = std::fs::read_to_string(dir.path().join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8);
    assert!(csv.starts_with("admission,scenario,"), "{}", &csv[..40]);
    for f in [
        "slo-attainment-none.svg",
        "slo-attainment-deadline.svg",
        "rejection-rate-deadline.svg",
        "cold-start-rate.svg",
        "p99-latency-none.svg",
        "p99-latency-deadline.svg",
        "jain-fairness.svg",
        "cost.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{f}");
        assert!(md.contains(&format!("]({f})")), "report.md links {f}");
        for p in ["edf", "slo-aware"] {
            assert!(svg.contains(p), "{f} lacks {p}");
        }
    }
}

fn scenario_with(trace: &str, format: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trace.csv"), trace).unwrap();
    let yaml = format!(
        "name: bad\ncluster: [{{ name: gpu, memoryBytes: 1000000000, count: 1 }}]\n\
         functions: [{{ name: f, slo: {{ deadlineMs: 100 }}, profile: [{{ acceleratorClass: gpu, runtimeMs: 1 }}] }}]\n\
         policy: {{ name: balance }}\nworkload: {{ trace: {{ format: {format}, path: trace.csv }} }}\n"
    );
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

#[test]
fn bad_input_is_a_clear_error() {
    let e = err(&["run", "--scenario", "does/not/exist.yaml"]);
    assert!(e.contains("does/not/exist.yaml") && e.contains("No such file"), "{e}");

    let (_d, p) = scenario_with("f,1\nf,2\n", "parquet");
    let e = err(&["run", "--scenario", p.to_str().unwrap()]);
    assert!(e.contains("unknown variant `parquet`") && e.contains("csv"), "{e}");

    let (_d, p) = scenario_with("function,arrival_ms\nf,1\nf,abc\n", "csv");
    let e = err(&["run", "--scenario", p.to_str().unwrap()]);
    assert!(e.contains("trace.csv:3") && e.contains("not a number"), "{e}");

    let (_d, p) = scenario_with("f,1\ng,2\n", "csv");
    let e = err(&["run", "--scenario", p.to_str().unwrap()]);
    assert!(e.contains("trace.csv:2") && e.contains("unknown function \"g\""), "{e}");

    let (_d, p) = scenario_with("f,-5\n", "csv");
    let e = err(&["run", "--scenario", p.to_str().unwrap()]);
    assert!(e.contains("trace.csv:1") && e.contains("negative"), "{e}");

    let (_d, p) = scenario_with("f,5\nf,2\n", "csv");
    let e = err(&["run", "--scenario", p.to_str().unwrap()]);
    assert!(e.contains("trace.csv:2") && e.contains("time order"), "{e}");

    let e = err(&["run", "--scenario", SCENARIO, "--policy", "fifo"]);
    assert!(e.contains("unknown policy `fifo`") && e.contains("mqfq-sticky"), "{e}");
}

/// Issue 17, point 5: traces and reports are CSV as RFC 4180 means it. A function named
/// with a comma, quoted in a trace with CRLF line ends, a comment and a blank line, runs;
/// and `per-function.csv` quotes the name so that it reads back as one field.
#[test]
fn quoted_names_crlf_and_comments_round_trip_through_csv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trace.csv"),
        "function,arrival_ms,duration_ms\r\n# a comment\r\n\"f, the first\",1,0.5\r\n\r\n\"f, the first\" , 2 ,\r\n",
    )
    .unwrap();
    let yaml = "name: quoted\ncluster: [{ name: gpu, memoryBytes: 1000000000, count: 1 }]\n\
         functions: [{ name: \"f, the first\", slo: { deadlineMs: 100 }, profile: [{ acceleratorClass: gpu, runtimeMs: 1 }] }]\n\
         policy: { name: balance }\nworkload: { trace: { format: csv, path: trace.csv } }\n";
    let scenario = dir.path().join("s.yaml");
    std::fs::write(&scenario, yaml).unwrap();
    let out = dir.path().join("out");
    ok(&["run", "--scenario", scenario.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(out.join("per-function.csv")).unwrap();
    println!("{text}");
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{text}");
    let field = |name: &str| &rows[0][header.iter().position(|h| h == name).unwrap()];
    assert_eq!(field("function"), "f, the first");
    assert_eq!(field("requests"), "2", "both rows of the trace were read");
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut r = csv::Reader::from_reader(results.as_bytes());
    let width = r.headers().unwrap().len();
    assert!(r.records().all(|x| x.unwrap().len() == width), "every results row has every column");
}
