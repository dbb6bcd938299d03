//! The standalone suites' workload: a spin kernel of calibrated length, functions written
//! as resources, executor and gateway processes, and an open-loop load generator.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::{Proc, addr_after};

/// Spins `n` iterations, then writes out[i] = in[i] + 1 for 16 i32s.
pub const KERNEL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "work") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32) (param $n i32)
    (local $i i32)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.set $i (i32.const 0))
    (block $d2 (loop $l2
      (br_if $d2 (i32.ge_u (local.get $i) (i32.const 64)))
      (i32.store (i32.add (local.get $out) (local.get $i))
        (i32.add (i32.load (i32.add (local.get $in) (local.get $i))) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l2)))))"#;

/// A function of the workload: a spin kernel and its SLO.
pub struct Class {
    /// Function name (namespace `e2e`).
    pub name: &'static str,
    /// Spin iterations of the kernel.
    pub iterations: u64,
    /// Profiled CPU runtime.
    pub runtime_ms: f64,
    /// SLO deadline.
    pub deadline_ms: u64,
}

impl Class {
    /// The profile entry: the CPU runtime, and a load time when one is given.
    pub fn profile(&self, load_ms: Option<u64>) -> String {
        match load_ms {
            Some(l) => format!("[{{ acceleratorClass: cpu, runtimeMs: {}, loadMs: {l} }}]", self.runtime_ms),
            None => format!("[{{ acceleratorClass: cpu, runtimeMs: {} }}]", self.runtime_ms),
        }
    }
}

/// Writes the classes as KernelFunctions plus a SchedulingPolicy into `dir`.
pub fn write_functions(dir: &Path, classes: &[Class], policy: &str, admission: &str) {
    write_functions_loading(dir, classes, policy, admission, None)
}

/// As [`write_functions`], each function profiled with `load_ms` of load time if given.
pub fn write_functions_loading(
    dir: &Path,
    classes: &[Class],
    policy: &str,
    admission: &str,
    load_ms: Option<u64>,
) {
    write_functions_with(dir, classes, policy, admission, load_ms, 0.25)
}

/// As [`write_functions_loading`], with deadline admission keeping `headroom` of each
/// deadline in reserve.
pub fn write_functions_with(
    dir: &Path,
    classes: &[Class],
    policy: &str,
    admission: &str,
    load_ms: Option<u64>,
    headroom: f64,
) {
    let mut y = String::from(
        "apiVersion: kaas.dev/v1alpha1\nkind: AcceleratorClass\nmetadata: { name: cpu }\nspec: { kind: CPU, model: e2e, memoryBytes: 1073741824, slotsPerDevice: 1 }\n",
    );
    // Deadline admission keeps 25 % of each deadline in reserve: this machine's two cores
    // run the gateway, both executors and the load generator, and stalls of tens of ms
    // are common (with the default 10 % an occasional burst of slow-class requests
    // finished 15–40 ms late).
    y += &format!(
        "---\napiVersion: kaas.dev/v1alpha1\nkind: SchedulingPolicy\nmetadata: {{ name: default }}\nspec: {{ policy: {policy}, admission: {admission}, granularity: request, parameters: {{ deadlineHeadroom: {headroom} }} }}\n"
    );
    let wat: String = KERNEL.lines().map(|l| format!("            {l}\n")).collect();
    for c in classes {
        y += &format!(
            "---\napiVersion: kaas.dev/v1alpha1\nkind: KernelFunction\nmetadata: {{ name: {name}, namespace: e2e }}\nspec:\n  modules:\n    - name: m\n      wasm:\n        inline: |\n{wat}  buffers:\n    - {{ name: in, size: 64, kind: Input }}\n    - {{ name: out, size: 64, kind: Output }}\n  kernels:\n    - {{ module: m, entry: work, grid: [1, 1, 1], block: [1, 1, 1], args: [{{ buffer: in }}, {{ buffer: out }}, {{ u32: {n} }}] }}\n  slo: {{ deadlineMs: {d} }}\n  profile: {p}\n",
            name = c.name,
            n = c.iterations,
            d = c.deadline_ms,
            p = c.profile(load_ms),
        );
    }
    std::fs::write(dir.join("functions.yaml"), y).unwrap();
}

/// Starts a `kaas-executor` with one WASM slot; returns it and its URL.
pub fn start_executor(bin: &Path, name: &str) -> (Proc, String) {
    start_executor_with(bin, name, &[])
}

/// As [`start_executor`] with extra arguments.
pub fn start_executor_with(bin: &Path, name: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--backend", "wasm", "--cpu-slots", "1", "--node-name", name]);
    cmd.args(extra);
    let (p, line) = Proc::start(cmd, "listening on").unwrap();
    let addr = addr_after(&line, "listening on ").unwrap();
    (p, format!("http://{addr}"))
}

/// Starts a standalone gateway over `executors`; returns it and its HTTP address.
pub fn start_gateway(bin: &Path, dir: &Path, executors: &[String]) -> (Proc, String) {
    start_gateway_with(bin, dir, executors, &[])
}

/// As [`start_gateway`] with extra arguments.
pub fn start_gateway_with(bin: &Path, dir: &Path, executors: &[String], extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(bin);
    cmd.args([
        "standalone",
        "--functions",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--no-local-executor",
    ]);
    for e in executors {
        cmd.args(["--executor", e]);
    }
    cmd.args(extra);
    cmd.env("RUST_LOG", "warn");
    let (p, line) = Proc::start(cmd, "HTTP on http://").unwrap();
    (p, addr_after(&line, "HTTP on http://").unwrap())
}

#[derive(Debug, Clone)]
/// One request's answer.
pub struct Outcome {
    /// `node/device` that served it.
    pub device: String,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// Index of its class.
    pub function: usize,
    /// End-to-end latency the gateway reported.
    pub server_ms: f64,
    /// Whether the output was right.
    pub correct: bool,
    /// Time it waited before its kernels started, as the gateway reported it (the
    /// executor's queue plus the hops to it).
    pub queue_ms: f64,
    /// Of `queue_ms`, the wait in the executor's queue alone, as it measured it.
    pub node_queue_ms: f64,
    /// Time its kernels ran, as the executor measured it.
    pub exec_ms: f64,
    /// When it was sent (its schedule says when it was due; a loaded client sends late).
    pub sent: Instant,
}

/// One invocation's answer.
pub struct Answer {
    /// HTTP status (0: no answer).
    pub status: u16,
    /// End-to-end latency the gateway reported.
    pub total_ms: f64,
    /// Whether the output was right.
    pub correct: bool,
    /// `node/device` that served it.
    pub device: String,
    /// Queue time the gateway reported.
    pub queue_ms: f64,
    /// Of it, the executor's queue.
    pub node_queue_ms: f64,
    /// Kernel time the executor measured.
    pub exec_ms: f64,
}

/// One invocation: (status, latency ms, output correct, device).
pub async fn invoke(
    client: &reqwest::Client,
    gw: &str,
    function: &str,
    seq: u32,
) -> (u16, f64, bool, String) {
    let a = invoke_timed(client, gw, function, seq).await;
    (a.status, a.total_ms, a.correct, a.device)
}

/// One invocation with the timings of its answer.
pub async fn invoke_timed(client: &reqwest::Client, gw: &str, function: &str, seq: u32) -> Answer {
    let input: Vec<u8> =
        (0..16u32).flat_map(|i| (seq.wrapping_mul(31).wrapping_add(i)).to_le_bytes()).collect();
    let body = json!({ "inputs": { "in": STANDARD.encode(&input) } });
    let url = format!("http://{gw}/v1/namespaces/e2e/functions/{function}:invoke");
    let none = |status| Answer {
        status,
        total_ms: 0.0,
        correct: false,
        device: String::new(),
        queue_ms: 0.0,
        node_queue_ms: 0.0,
        exec_ms: 0.0,
    };
    let Ok(resp) = client.post(url).json(&body).send().await else { return none(0) };
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if status != 200 {
        // KAAS_E2E_DEBUG=1 prints the body of every request not served.
        if std::env::var_os("KAAS_E2E_DEBUG").is_some() {
            eprintln!("{status}: {v}");
        }
        return none(status);
    }
    let out = STANDARD.decode(v["outputs"]["out"].as_str().unwrap_or_default()).unwrap_or_default();
    let want: Vec<u8> =
        (0..16u32).flat_map(|i| (seq.wrapping_mul(31).wrapping_add(i) + 1).to_le_bytes()).collect();
    let t = &v["timing"];
    Answer {
        status,
        total_ms: t["totalMs"].as_f64().unwrap_or(f64::MAX),
        correct: out == want,
        device: v["device"].as_str().unwrap_or_default().to_string(),
        queue_ms: t["queueMs"].as_f64().unwrap_or(0.0),
        node_queue_ms: t["nodeQueueMs"].as_f64().unwrap_or(0.0),
        exec_ms: t["execMs"].as_f64().unwrap_or(0.0),
    }
}

/// Open-loop load: `rate` requests/s for `secs`, alternating the classes; `at_half` runs
/// once half-way.
pub async fn load(
    gw: &str,
    classes: &[Class],
    rate: f64,
    secs: f64,
    at_half: Option<Box<dyn FnOnce() + Send>>,
) -> Vec<Outcome> {
    load_over(&[gw.to_string()], classes, rate, secs, at_half).await
}

/// As [`load`], request `i` going to gateway `i mod n`: one stream split over replicas.
pub async fn load_over(
    gws: &[String],
    classes: &[Class],
    rate: f64,
    secs: f64,
    at_half: Option<Box<dyn FnOnce() + Send>>,
) -> Vec<Outcome> {
    let total = (rate * secs) as u32;
    let schedule: Vec<(f64, usize)> =
        (0..total).map(|i| (i as f64 / rate, i as usize % classes.len())).collect();
    replay(gws, classes, &schedule, at_half).await
}

/// Replays a schedule of (seconds from start, class index) open-loop, request `i` going
/// to gateway `i mod n`; `at_half` runs once half-way.
pub async fn replay(
    gws: &[String],
    classes: &[Class],
    schedule: &[(f64, usize)],
    at_half: Option<Box<dyn FnOnce() + Send>>,
) -> Vec<Outcome> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let gws: Vec<Arc<String>> = gws.iter().map(|g| Arc::new(g.clone())).collect();
    let names: Vec<&'static str> = classes.iter().map(|c| c.name).collect();
    let total = schedule.len();
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut at_half = at_half;
    for (i, &(at, f)) in schedule.iter().enumerate() {
        let due = start + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due.into()).await;
        if i == total / 2
            && let Some(h) = at_half.take()
        {
            h();
        }
        let (client, gw) = (client.clone(), gws[i % gws.len()].clone());
        let name = names[f];
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let a = invoke_timed(&client, &gw, name, i as u32).await;
            Outcome {
                device: a.device,
                status: a.status,
                function: f,
                server_ms: a.total_ms,
                correct: a.correct,
                queue_ms: a.queue_ms,
                node_queue_ms: a.node_queue_ms,
                exec_ms: a.exec_ms,
                sent,
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Invocations the gateway counted as answered.
pub async fn answered_total(gw: &str) -> u64 {
    let text = reqwest::get(format!("http://{gw}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("kaas_gateway_invocations_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One per-function counter family of the gateway's `/metrics` (namespace `e2e`), by
/// `(function, outcome)` (outcome empty for families without one): for example
/// `kaas_gateway_function_invocations_total`.
pub async fn function_counter(gw: &str, family: &str) -> BTreeMap<(String, String), u64> {
    let text = reqwest::get(format!("http://{gw}/metrics")).await.unwrap().text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        assert_eq!(label("namespace"), "e2e", "{line}");
        let n = value.trim().parse::<f64>().unwrap_or_else(|_| panic!("{line}")) as u64;
        out.insert((label("function"), label("outcome")), n);
    }
    out
}

/// (share of admitted requests in time, admitted, total).
pub fn attainment(outcomes: &[Outcome], classes: &[Class]) -> (f64, usize, usize) {
    let admitted: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 429).collect();
    let met = admitted
        .iter()
        .filter(|o| o.status == 200 && o.server_ms <= classes[o.function].deadline_ms as f64)
        .count();
    (met as f64 / admitted.len().max(1) as f64, admitted.len(), outcomes.len())
}

/// How long a million iterations of the spin kernel take on this machine through the
/// whole stack (median executor-measured time of a dozen warm calls), in ms.
pub async fn calibrate(op_bin: &Path, dir: &Path, executors: &[String]) -> f64 {
    let probe = [Class { name: "probe", iterations: 2_000_000, runtime_ms: 1.0, deadline_ms: 10_000 }];
    write_functions(dir, &probe, "balance", "none");
    let (_gw, addr) = start_gateway(op_bin, dir, executors);
    let client = reqwest::Client::new();
    let mut exec_ms = Vec::new();
    for i in 0..15 {
        let body = json!({ "inputs": { "in": STANDARD.encode([0u8; 64]) } });
        let v: serde_json::Value = client
            .post(format!("http://{addr}/v1/namespaces/e2e/functions/probe:invoke"))
            .json(&body)
            .send()
            .await
            .expect("calibration request")
            .json()
            .await
            .expect("calibration answer");
        if i >= 3 {
            exec_ms.push(v["timing"]["execMs"].as_f64().expect("execMs in the answer"));
        }
    }
    exec_ms.sort_by(f64::total_cmp);
    exec_ms[exec_ms.len() / 2] / 2.0
}
