//! Invocation overhead with a trivial WebAssembly kernel (copy 4 bytes): a direct call
//! into the WASM backend (the baseline), the executor in-process (scheduler actor and
//! blocking pool), and the executor through gRPC on loopback TCP. Prints p50, p99 and
//! invocations/s (sequential latency, then 32 concurrent callers for throughput).
//!
//! Run: `cargo bench -p kaas-executor --bench invoke`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_executor::backend::Backend;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::memory::Owner;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto::{self, executor_client::ExecutorClient};
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

const WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "copy") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (i32.store (local.get $out) (i32.load (local.get $in)))))"#;

fn function() -> proto::FunctionDef {
    let buf = |n: &str, k: proto::BufferKind| proto::Buffer {
        name: n.into(),
        size: 4,
        kind: k as i32,
        content: vec![],
    };
    proto::FunctionDef {
        namespace: "bench".into(),
        name: "copy".into(),
        version: "1".into(),
        modules: vec![proto::Module { name: "m".into(), wasm: WAT.as_bytes().to_vec(), cuda: None }],
        buffers: vec![buf("in", proto::BufferKind::Input), buf("out", proto::BufferKind::Output)],
        kernels: vec![proto::Kernel {
            module: "m".into(),
            entry: "copy".into(),
            grid: vec![1, 1, 1],
            block: vec![1, 1, 1],
            shared_mem_bytes: 0,
            args: ["in", "out"]
                .iter()
                .map(|a| proto::Arg { value: Some(proto::arg::Value::Buffer(a.to_string())) })
                .collect(),
        }],
        deadline_ms: 60_000,
        weight: 1,
        ..Default::default()
    }
}

struct Row {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn inputs() -> BTreeMap<String, Vec<u8>> {
    [("in".to_string(), vec![1, 2, 3, 4])].into()
}

fn main() {
    let n = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rows = Vec::new();

    // Baseline: straight into the backend on this thread.
    let backend = WasmBackend::new(1 << 30, 2, Duration::from_secs(5)).unwrap();
    let f = Arc::new(FunctionDef::try_from(function()).unwrap());
    backend.load(&f).unwrap();
    let owner = Owner { function: f.key(), function_quota: 0, share: None };
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let mut inv = backend.begin(&f, owner.clone(), inputs()).unwrap();
        inv.run_kernel(0).unwrap();
        let out = inv.finish().unwrap();
        assert_eq!(out["out"], vec![1, 2, 3, 4]);
        lat.push(t.elapsed());
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    rows.push(Row {
        name: "direct backend call",
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        per_sec,
    });

    let config = ExecutorConfig {
        node: "bench".into(),
        scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
        shares: vec![],
        health_interval: Duration::from_secs(1),
        accelerator_classes: Default::default(),
    };
    let (in_proc, grpc) = rt.block_on(async {
        let ex = Executor::start(
            vec![Arc::new(WasmBackend::new(1 << 30, 2, Duration::from_secs(5)).unwrap())],
            config,
        )
        .unwrap();
        ex.put_function(FunctionDef::try_from(function()).unwrap()).await.unwrap();
        ex.preload("bench/copy", None).await.unwrap();
        let measure_in_proc = {
            let ex = ex.clone();
            async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    ex.execute("bench/copy", inputs(), None, None).await.unwrap();
                    lat.push(t.elapsed());
                }
                let start = Instant::now();
                let tasks: Vec<_> = (0..32)
                    .map(|_| {
                        let ex = ex.clone();
                        tokio::spawn(async move {
                            for _ in 0..n / 32 {
                                ex.execute("bench/copy", inputs(), None, None).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                (lat, (n / 32 * 32) as f64 / start.elapsed().as_secs_f64())
            }
        };
        let in_proc = measure_in_proc.await;
        let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(service::serve_tcp(ex.clone(), listener, None, std::future::pending()));
        let client = ExecutorClient::connect(format!("http://{addr}")).await.unwrap();
        let req = || proto::ExecuteRequest {
            namespace: "bench".into(),
            name: "copy".into(),
            inputs: [("in".to_string(), vec![1, 2, 3, 4])].into(),
            ..Default::default()
        };
        let mut lat = Vec::with_capacity(n);
        let mut c = client.clone();
        for _ in 0..n {
            let t = Instant::now();
            c.execute(req()).await.unwrap();
            lat.push(t.elapsed());
        }
        let start = Instant::now();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let mut c = client.clone();
                tokio::spawn(async move {
                    for _ in 0..n / 32 {
                        c.execute(req()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        (in_proc, (lat, (n / 32 * 32) as f64 / start.elapsed().as_secs_f64()))
    });
    let (mut lat, per_sec) = in_proc;
    rows.push(Row {
        name: "executor in-process",
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        per_sec,
    });
    let (mut lat, per_sec) = grpc;
    rows.push(Row {
        name: "executor over gRPC/TCP",
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        per_sec,
    });

    println!("\ninvocation overhead, trivial WASM kernel, {n} calls each");
    println!("{:<24} {:>10} {:>10} {:>12} {:>10}", "path", "p50 µs", "p99 µs", "invocations/s", "p50/base");
    let base = rows[0].p50.as_secs_f64();
    for r in &rows {
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>12.0} {:>10.1}",
            r.name,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.per_sec,
            r.p50.as_secs_f64() / base
        );
    }
}
