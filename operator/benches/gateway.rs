//! Gateway load benchmark with a trivial WebAssembly kernel (copy 4 bytes) on loopback:
//! the executor called directly over gRPC (the baseline), then the same invocations
//! through the gateway over gRPC and over HTTP/JSON (gateway → executor over gRPC).
//! Prints p50 and p99 of sequential calls and invocations/s with 32 concurrent callers.
//!
//! Run: `cargo bench -p kaas-operator --bench gateway`

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto::{self as ex, executor_client::ExecutorClient};
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_operator::gateway::grpc::GatewayService;
use kaas_operator::gateway::http::{HttpState, router};
use kaas_operator::gateway::{Gateway, GatewayConfig, NodeClient};
use kaas_operator::proto::{self as gw, gateway_client::GatewayClient};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use prometheus_client::registry::Registry;

const WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "copy") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (i32.store (local.get $out) (i32.load (local.get $in)))))"#;

fn function() -> ex::FunctionDef {
    let buf =
        |n: &str, k: ex::BufferKind| ex::Buffer { name: n.into(), size: 4, kind: k as i32, content: vec![] };
    ex::FunctionDef {
        namespace: "bench".into(),
        name: "copy".into(),
        version: "1".into(),
        modules: vec![ex::Module { name: "m".into(), wasm: WAT.as_bytes().to_vec(), cuda: None }],
        buffers: vec![buf("in", ex::BufferKind::Input), buf("out", ex::BufferKind::Output)],
        kernels: vec![ex::Kernel {
            module: "m".into(),
            entry: "copy".into(),
            grid: vec![1, 1, 1],
            block: vec![1, 1, 1],
            shared_mem_bytes: 0,
            args: ["in", "out"]
                .iter()
                .map(|a| ex::Arg { value: Some(ex::arg::Value::Buffer(a.to_string())) })
                .collect(),
        }],
        deadline_ms: 60_000,
        weight: 1,
        ..Default::default()
    }
}

type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

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

async fn measure(name: &'static str, n: usize, call: Call) -> Row {
    for _ in 0..200 {
        call().await; // warm connections and caches
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed());
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..n / 32 {
                    call().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let per_sec = (n / 32 * 32) as f64 / start.elapsed().as_secs_f64();
    Row { name, p50: pct(&mut lat, 0.5), p99: pct(&mut lat, 0.99), per_sec }
}

fn main() {
    let n = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rows = rt.block_on(async {
        let executor = Executor::start(
            vec![Arc::new(WasmBackend::new(1 << 30, 2, Duration::from_secs(5)).unwrap())],
            ExecutorConfig {
                node: "bench".into(),
                scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
                shares: vec![],
                health_interval: Duration::from_secs(1),
                accelerator_classes: Default::default(),
            },
        )
        .unwrap();
        executor.put_function(FunctionDef::try_from(function()).unwrap()).await.unwrap();
        executor.preload("bench/copy", None).await.unwrap();
        let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let exec_addr = listener.local_addr().unwrap();
        tokio::spawn(service::serve_tcp(executor, listener, None, std::future::pending()));

        let gateway = Gateway::start(GatewayConfig {
            scheduler: SchedulerConfig::new(PolicyConfig::named("balance")),
            ..GatewayConfig::default()
        })
        .unwrap();
        gateway.add_node("bench", NodeClient::remote(&format!("http://{exec_addr}")).unwrap());
        gateway.put_function(function());
        assert!(gateway.wait_ready(Duration::from_secs(10)).await, "executor never became ready");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GatewayService::server(gateway.clone(), 1 << 30))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                ),
        );
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let state = HttpState {
            gateway,
            registry: Arc::new(Registry::default()),
            liveness: Default::default(),
            max_request_bytes: 1 << 30,
        };
        tokio::spawn(async move { axum::serve(http, router(state)).await });

        let mut rows = Vec::new();
        let exec = ExecutorClient::connect(format!("http://{exec_addr}")).await.unwrap();
        rows.push(
            measure(
                "executor direct (gRPC)",
                n,
                Arc::new(move || {
                    let mut c = exec.clone();
                    Box::pin(async move {
                        let r = c
                            .execute(ex::ExecuteRequest {
                                namespace: "bench".into(),
                                name: "copy".into(),
                                inputs: [("in".to_string(), vec![1, 2, 3, 4])].into(),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        assert_eq!(r.into_inner().outputs["out"], vec![1, 2, 3, 4]);
                    })
                }),
            )
            .await,
        );
        let gw = GatewayClient::connect(format!("http://{grpc_addr}")).await.unwrap();
        rows.push(
            measure(
                "gateway (gRPC)",
                n,
                Arc::new(move || {
                    let mut c = gw.clone();
                    Box::pin(async move {
                        let r = c
                            .invoke(gw::InvokeRequest {
                                namespace: "bench".into(),
                                name: "copy".into(),
                                inputs: [("in".to_string(), vec![1, 2, 3, 4])].into(),
                                deadline_ms: 0,
                            })
                            .await
                            .unwrap();
                        assert_eq!(r.into_inner().outputs["out"], vec![1, 2, 3, 4]);
                    })
                }),
            )
            .await,
        );
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        let url = format!("http://{http_addr}/v1/namespaces/bench/functions/copy:invoke");
        rows.push(
            measure(
                "gateway (HTTP/JSON)",
                n,
                Arc::new(move || {
                    let (c, url) = (http.clone(), url.clone());
                    Box::pin(async move {
                        let r = c
                            .post(&url)
                            .json(&serde_json::json!({"inputs": {"in": "AQIDBA=="}}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                        let v: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(v["outputs"]["out"], "AQIDBA==");
                    })
                }),
            )
            .await,
        );
        rows
    });
    println!(
        "\ngateway load, trivial WASM kernel, loopback, {n} calls each (throughput: 32 concurrent callers)"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>14} {:>10} {:>12}",
        "path", "p50 µs", "p99 µs", "invocations/s", "p50/base", "tput/base"
    );
    let (b50, btp) = (rows[0].p50.as_secs_f64(), rows[0].per_sec);
    for r in &rows {
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>14.0} {:>10.2} {:>12.2}",
            r.name,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.per_sec,
            r.p50.as_secs_f64() / b50,
            r.per_sec / btp
        );
    }
}
