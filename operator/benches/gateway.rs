//! Gateway load benchmark with a trivial WebAssembly kernel (copy 4 bytes) on loopback:
//! the floors first — a bare tonic service answering the gateway's `Invoke` RPC with its
//! input, and a bare axum route answering the HTTP/JSON invocation with the same body
//! (same payloads, runtime and socket settings, nothing else) — then the executor called
//! directly over gRPC, and the same invocations through the gateway over gRPC and over
//! HTTP/JSON (gateway → executor over gRPC: two hops). Prints p50 and p99 of sequential
//! calls and invocations/s with 32 concurrent callers, each row as a ratio to its floor.
//!
//! Run: `cargo bench -p kaas-operator --bench gateway [-- NAME]`: with NAME, only the rows
//! whose path contains it are measured besides the two floors (to profile one path).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kaas_executor::proto::{self as ex, executor_client::ExecutorClient};
use kaas_operator::proto::{self as gw, gateway_client::GatewayClient};
use tonic::{Request, Response, Status};

/// The gRPC floor: the gateway's `Invoke` answered with its input.
struct Echo;

#[tonic::async_trait]
impl gw::gateway_server::Gateway for Echo {
    async fn invoke(&self, r: Request<gw::InvokeRequest>) -> Result<Response<gw::InvokeResponse>, Status> {
        let mut inputs = r.into_inner().inputs;
        let out = inputs.remove("in").unwrap_or_default();
        Ok(Response::new(gw::InvokeResponse {
            outputs: [("out".to_string(), out)].into(),
            device: "echo".into(),
            ..Default::default()
        }))
    }
}

/// The HTTP floor: the invocation's JSON body decoded (base64 inputs) and the same
/// shape of answer encoded, as the gateway's route does, with nothing in between.
async fn http_echo(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let out = STANDARD.decode(v["inputs"]["in"].as_str().unwrap_or_default()).unwrap_or_default();
    axum::Json(serde_json::json!({
        "outputs": { "out": STANDARD.encode(out) },
        "coldStart": false,
        "device": "echo",
        "timing": { "queueMs": 0.0, "nodeQueueMs": 0.0, "coldStartMs": 0.0, "execMs": 0.0, "totalMs": 0.0 },
    }))
    .into_response()
}

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
    /// Index of the row this one is measured against.
    floor: usize,
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

async fn measure(name: &'static str, n: usize, floor: usize, call: Call) -> Row {
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
    Row { name, p50: pct(&mut lat, 0.5), p99: pct(&mut lat, 0.99), per_sec, floor }
}

fn main() {
    let n = 10_000;
    // `cargo bench` passes `--bench`; any other argument picks rows by name.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = move |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    kaas_executor::logs::init_stderr();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rows = rt.block_on(async {
        let exec_addr = common::serve_executor(function()).await;
        let (grpc_addr, http_addr) = common::serve_gateway(exec_addr, function()).await;

        let grpc_echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_echo_addr = grpc_echo.local_addr().unwrap();
        tokio::spawn(
            kaas_executor::service::grpc_server()
                .add_service(gw::gateway_server::GatewayServer::new(Echo))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(grpc_echo).with_nodelay(Some(true)),
                ),
        );
        let http_echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_echo_addr = http_echo_listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new()
                .route("/v1/namespaces/{ns}/functions/{action}", axum::routing::post(http_echo));
            axum::serve(http_echo_listener, app).await
        });

        let mut rows = Vec::new();
        let echo = GatewayClient::connect(format!("http://{grpc_echo_addr}")).await.unwrap();
        rows.push(measure("tonic echo (floor)", n, 0, invoke_over_grpc(echo)).await);
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        rows.push(
            measure(
                "axum echo (floor)",
                n,
                1,
                invoke_over_http(
                    http.clone(),
                    format!("http://{http_echo_addr}/v1/namespaces/bench/functions/copy:invoke"),
                ),
            )
            .await,
        );
        let exec = ExecutorClient::connect(format!("http://{exec_addr}")).await.unwrap();
        if wanted("executor direct (gRPC)") {
            rows.push(
                measure(
                    "executor direct (gRPC)",
                    n,
                    0,
                    Arc::new(move || {
                        let mut c = exec.clone();
                        Box::pin(async move {
                            let r = c
                                .execute(ex::ExecuteRequest {
                                    namespace: "bench".into(),
                                    name: "copy".into(),
                                    inputs: [("in".to_string(), vec![1, 2, 3, 4].into())].into(),
                                    ..Default::default()
                                })
                                .await
                                .unwrap();
                            assert_eq!(r.into_inner().outputs["out"][..], vec![1, 2, 3, 4]);
                        })
                    }),
                )
                .await,
            );
        }
        let gw = GatewayClient::connect(format!("http://{grpc_addr}")).await.unwrap();
        if wanted("gateway (gRPC)") {
            rows.push(measure("gateway (gRPC)", n, 0, invoke_over_grpc(gw)).await);
        }
        let url = format!("http://{http_addr}/v1/namespaces/bench/functions/copy:invoke");
        if wanted("gateway (HTTP/JSON)") {
            rows.push(measure("gateway (HTTP/JSON)", n, 1, invoke_over_http(http, url)).await);
        }
        rows
    });
    println!(
        "\ngateway load, trivial WASM kernel, loopback, {n} calls each (throughput: 32 concurrent callers)"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>14} {:>11} {:>12}",
        "path", "p50 µs", "p99 µs", "invocations/s", "p50/floor", "rate/floor"
    );
    for r in &rows {
        let f = &rows[r.floor];
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>14.0} {:>11.2} {:>12.2}",
            r.name,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.per_sec,
            r.p50.as_secs_f64() / f.p50.as_secs_f64(),
            r.per_sec / f.per_sec
        );
    }
}

/// One invocation of `bench/copy` through a gateway's gRPC API (or its floor).
fn invoke_over_grpc(client: GatewayClient<tonic::transport::Channel>) -> Call {
    Arc::new(move || {
        let mut c = client.clone();
        Box::pin(async move {
            let r = c
                .invoke(gw::InvokeRequest {
                    namespace: "bench".into(),
                    name: "copy".into(),
                    inputs: [("in".to_string(), vec![1, 2, 3, 4].into())].into(),
                    deadline_ms: 0,
                })
                .await
                .unwrap();
            assert_eq!(r.into_inner().outputs["out"][..], vec![1, 2, 3, 4]);
        })
    })
}

/// One invocation of `bench/copy` through a gateway's HTTP/JSON API (or its floor).
fn invoke_over_http(client: reqwest::Client, url: String) -> Call {
    Arc::new(move || {
        let (c, url) = (client.clone(), url.clone());
        Box::pin(async move {
            let r =
                c.post(&url).json(&serde_json::json!({"inputs": {"in": "AQIDBA=="}})).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["outputs"]["out"], "AQIDBA==");
        })
    })
}
