//! Invocation overhead with a trivial WebAssembly kernel (copy 4 bytes): a direct call
//! into the WASM backend (the in-process floor), the executor in-process (scheduler actor
//! and blocking pool), and the executor through gRPC on loopback TCP against its floor, a
//! bare tonic service answering the same `Execute` RPC with its input (same messages,
//! codec, runtime and socket settings, nothing else). Prints p50, p99 and invocations/s
//! (sequential latency, then 32 concurrent callers for throughput), and each row as a
//! ratio to its floor.
//!
//! Run: `cargo bench -p kaas-executor --bench invoke`

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_executor::backend::Backend;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::memory::Owner;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto::{self, executor_client::ExecutorClient, executor_server};
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use tonic::{Request, Response, Status};

/// The floor of a gRPC hop: the executor's own `Execute` RPC answered with its input.
struct Echo;

#[tonic::async_trait]
impl executor_server::Executor for Echo {
    async fn put_function(
        &self,
        _: Request<proto::FunctionDef>,
    ) -> Result<Response<proto::PutFunctionResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn execute(
        &self,
        r: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let mut inputs = r.into_inner().inputs;
        let out = inputs.remove("in").unwrap_or_default();
        Ok(Response::new(proto::ExecuteResponse {
            outputs: [("out".to_string(), out)].into(),
            device: "echo".into(),
            ..Default::default()
        }))
    }

    async fn preload(
        &self,
        _: Request<proto::PreloadRequest>,
    ) -> Result<Response<proto::PreloadResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn evict(&self, _: Request<proto::FunctionRef>) -> Result<Response<proto::EvictResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn set_policy(
        &self,
        _: Request<proto::PolicyUpdate>,
    ) -> Result<Response<proto::PolicyAck>, Status> {
        Err(Status::unimplemented("echo"))
    }

    type WatchStatusStream = service::StatusStream;

    async fn watch_status(
        &self,
        _: Request<proto::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

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
    /// Index of the row this one is measured against.
    floor: usize,
}

impl Row {
    fn new(name: &'static str, (mut lat, per_sec): (Vec<Duration>, f64), floor: usize) -> Row {
        Row { name, p50: pct(&mut lat, 0.5), p99: pct(&mut lat, 0.99), per_sec, floor }
    }
}

fn request() -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        namespace: "bench".into(),
        name: "copy".into(),
        inputs: [("in".to_string(), vec![1, 2, 3, 4].into())].into(),
        ..Default::default()
    }
}

/// `n` sequential calls (their latencies), then `n` calls from 32 concurrent callers
/// (invocations per second), over one connection.
async fn grpc(addr: std::net::SocketAddr, n: usize) -> (Vec<Duration>, f64) {
    let client = ExecutorClient::connect(format!("http://{addr}")).await.unwrap();
    let mut lat = Vec::with_capacity(n);
    let mut c = client.clone();
    for _ in 0..n {
        let t = Instant::now();
        let out = c.execute(request()).await.unwrap().into_inner();
        assert_eq!(out.outputs["out"][..], vec![1, 2, 3, 4]);
        lat.push(t.elapsed());
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move {
                for _ in 0..n / 32 {
                    c.execute(request()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (lat, (n / 32 * 32) as f64 / start.elapsed().as_secs_f64())
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn inputs() -> kaas_executor::backend::Outputs {
    [("in".to_string(), vec![1, 2, 3, 4].into())].into()
}

fn main() {
    // Logs as the binaries do (see `kaas_executor::logs`).
    kaas_executor::logs::init_stderr();
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
    rows.push(Row::new("direct backend call", (lat, per_sec), 0));

    let config = ExecutorConfig {
        node: "bench".into(),
        scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
        shares: vec![],
        health_interval: Duration::from_secs(1),
        accelerator_classes: Default::default(),
    };
    let (in_proc, kaas, echo) = rt.block_on(async {
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
        let m = ex.metrics();
        println!(
            "in-process: {} of {} invocations ran on the scheduler thread ({} overran its budget)",
            m.inline_runs.get(),
            n + n / 32 * 32,
            m.inline_overruns.get()
        );
        let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(service::serve_tcp(ex.clone(), listener, None, std::future::pending()));
        let kaas = grpc(addr, n).await;
        // The floor, with the same server settings as `serve_tcp` (no-delay sockets).
        let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(executor_server::ExecutorServer::new(Echo))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        let echo = grpc(addr, n).await;
        (in_proc, kaas, echo)
    });
    rows.push(Row::new("executor in-process", in_proc, 0));
    rows.push(Row::new("tonic echo (floor)", echo, 2));
    rows.push(Row::new("executor over gRPC/TCP", kaas, 2));

    println!("\ninvocation overhead, trivial WASM kernel, {n} calls each");
    println!(
        "{:<24} {:>9} {:>9} {:>13} {:>11} {:>12} {:>11}",
        "path", "p50 µs", "p99 µs", "invocations/s", "p50/floor", "p50-floor µs", "rate/floor"
    );
    for r in &rows {
        let f = &rows[r.floor];
        println!(
            "{:<24} {:>9.1} {:>9.1} {:>13.0} {:>11.2} {:>12.1} {:>11.2}",
            r.name,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.per_sec,
            r.p50.as_secs_f64() / f.p50.as_secs_f64(),
            (r.p50.as_secs_f64() - f.p50.as_secs_f64()) * 1e6,
            r.per_sec / f.per_sec
        );
    }
}
