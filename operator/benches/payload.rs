//! Large payloads (issue 15): one 16 MiB input through the executor and through the
//! gateway (gateway → executor over gRPC), against a `memcpy` of the same 16 MiB measured
//! in the same run, and against a bare tonic service that takes the same request and
//! answers four bytes (what gRPC itself costs). Prints bytes/s of sequential calls as a
//! fraction of the memcpy, and the copies of the payload alive at once on the serving
//! side: the peak of heap bytes live during one call (a counting global allocator), above
//! what was live before it, in units of the payload. The client sends one pre-encoded
//! request body (a `Bytes` handed to HTTP/2 without a copy, over raw hyper), so every
//! counted byte is the servers'. The kernel's own copy, in WebAssembly linear memory
//! (mmap'd by wasmtime, not the heap), is not counted: it is the device's buffer.
//!
//! Run: `cargo bench -p kaas-operator --bench payload`

// The counting allocator forwards to the system's: the only unsafe code here.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kaas_executor::proto as ex;
use kaas_operator::proto as gw;
use tonic::{Request, Response, Status};

const PAYLOAD: usize = 16 << 20;

/// Who allocates: the bench's client (0), the gateway (1) and the executor (2), each on
/// runtimes of their own whose threads say which they are.
const PARTS: usize = 3;

thread_local! {
    static PART: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts live heap bytes per part and their peak.
struct Counting;

static LIVE: [AtomicIsize; PARTS] = [const { AtomicIsize::new(0) }; PARTS];
static PEAK: [AtomicIsize; PARTS] = [const { AtomicIsize::new(0) }; PARTS];

fn part() -> usize {
    PART.try_with(|p| p.get()).unwrap_or(0)
}

fn grew(by: usize) {
    let i = part();
    let now = LIVE[i].fetch_add(by as isize, Ordering::Relaxed) + by as isize;
    PEAK[i].fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    LIVE[part()].fetch_sub(by as isize, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        shrank(l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Counted as if the old and the new block were both alive for a moment (they are,
        // when the block moves): an upper bound.
        grew(new);
        let q = unsafe { System.realloc(p, l, new) };
        shrank(if q.is_null() { new } else { l.size() });
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A runtime whose threads (workers and blocking pool) count as `part`.
fn runtime(part: usize, name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .on_thread_start(move || PART.with(|p| p.set(part)))
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC service taking the gateway's `Invoke` and answering four bytes of the input.
struct Echo;

#[tonic::async_trait]
impl gw::gateway_server::Gateway for Echo {
    async fn invoke(&self, r: Request<gw::InvokeRequest>) -> Result<Response<gw::InvokeResponse>, Status> {
        let inputs = r.into_inner().inputs;
        let head = inputs.get("in").map(|v| v.slice(..4)).unwrap_or_default();
        Ok(Response::new(gw::InvokeResponse {
            outputs: [("out".to_string(), head)].into(),
            device: "echo".into(),
            ..Default::default()
        }))
    }
}

/// Copies the first four bytes of a 16 MiB input to a 4-byte output.
const WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "head") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (i32.store (local.get $out) (i32.load (local.get $in)))))"#;

fn function() -> ex::FunctionDef {
    let buf = |n: &str, size: u64, k: ex::BufferKind| ex::Buffer {
        name: n.into(),
        size,
        kind: k as i32,
        content: vec![],
    };
    ex::FunctionDef {
        namespace: "bench".into(),
        name: "big".into(),
        version: "1".into(),
        modules: vec![ex::Module { name: "m".into(), wasm: WAT.as_bytes().to_vec(), cuda: None }],
        buffers: vec![
            buf("in", PAYLOAD as u64, ex::BufferKind::Input),
            buf("out", 4, ex::BufferKind::Output),
        ],
        kernels: vec![ex::Kernel {
            module: "m".into(),
            entry: "head".into(),
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

/// A gRPC request body: the length-prefixed message, encoded once.
fn grpc_frame(m: &impl prost::Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut f = Vec::with_capacity(5 + body.len());
    f.push(0);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    Bytes::from(f)
}

/// One HTTP/2 connection sending pre-encoded gRPC bodies.
#[derive(Clone)]
struct RawGrpc {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

impl RawGrpc {
    async fn connect(addr: std::net::SocketAddr) -> RawGrpc {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        RawGrpc { send, authority: addr.to_string() }
    }

    /// Sends `frame` to `path`; the answer's message bytes.
    async fn call(&mut self, path: &str, frame: Bytes) -> Bytes {
        let req = http::Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame))
            .unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await.unwrap();
        let status = status.or_else(|| collected.trailers().and_then(|t| t.get("grpc-status").cloned()));
        assert_eq!(status.as_ref().map(|s| s.as_bytes()), Some(&b"0"[..]), "gRPC status {status:?}");
        collected.to_bytes().slice(5..)
    }
}

struct Row {
    name: &'static str,
    p50: Duration,
    /// Most payload-sized heap bytes alive in one call, per part.
    copies: [f64; PARTS],
}

/// Sequential calls: the median, and the most heap bytes alive in one, per part.
async fn measure<F, Fut>(name: &'static str, n: usize, mut call: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..3 {
        call().await;
    }
    let (mut lat, mut copies) = (Vec::with_capacity(n), [0f64; PARTS]);
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(5)).await; // the last answer's buffers freed
        let before: [isize; PARTS] = std::array::from_fn(|i| LIVE[i].load(Ordering::Relaxed));
        for (p, b) in PEAK.iter().zip(before) {
            p.store(b, Ordering::Relaxed);
        }
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed());
        for (i, c) in copies.iter_mut().enumerate() {
            let grew = PEAK[i].load(Ordering::Relaxed) - before[i];
            *c = c.max(grew.max(0) as f64 / PAYLOAD as f64);
        }
    }
    lat.sort();
    Row { name, p50: lat[n / 2], copies }
}

/// Sequential calls of one pre-encoded gRPC request to `path` at `addr`, each answer's
/// `out` checked against `head`.
async fn grpc_row<R: prost::Message + Default>(
    name: &'static str,
    n: usize,
    addr: std::net::SocketAddr,
    path: &'static str,
    frame: &Bytes,
    head: &[u8],
    outputs: fn(R) -> std::collections::HashMap<String, Bytes>,
) -> Row {
    let c = RawGrpc::connect(addr).await;
    measure(name, n, || {
        let (f, mut c, head) = (frame.clone(), c.clone(), head.to_vec());
        async move {
            let r = R::decode(c.call(path, f).await).unwrap();
            assert_eq!(outputs(r)["out"][..], head);
        }
    })
    .await
}

fn memcpy_floor(n: usize) -> Duration {
    let src: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    let mut dst = vec![0u8; PAYLOAD];
    let mut lat: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed()
        })
        .collect();
    lat.sort();
    lat[n / 2]
}

fn main() {
    kaas_executor::logs::init_stderr();
    let n = 20;
    let memcpy = memcpy_floor(50);
    let exec_rt = runtime(2, "executor");
    let gw_rt = runtime(1, "gateway");
    let exec_addr = exec_rt.block_on(common::serve_executor(function()));
    let (grpc_addr, http_addr, echo_addr) = gw_rt.block_on(async {
        let (grpc_addr, http_addr) = common::serve_gateway(exec_addr, function()).await;
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(
            kaas_executor::service::grpc_server()
                .add_service(gw::gateway_server::GatewayServer::new(Echo).max_decoding_message_size(1 << 30))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(echo).with_nodelay(Some(true)),
                ),
        );
        (grpc_addr, http_addr, echo_addr)
    });
    let client_rt = runtime(0, "client");
    let rows = client_rt.block_on(async {
        let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7) as u8).collect();
        let head = payload[..4].to_vec();
        let inputs = || [("in".to_string(), Bytes::from(payload.clone()))].into();
        let invoke = grpc_frame(&gw::InvokeRequest {
            namespace: "bench".into(),
            name: "big".into(),
            inputs: inputs(),
            deadline_ms: 0,
        });
        let execute = grpc_frame(&ex::ExecuteRequest {
            namespace: "bench".into(),
            name: "big".into(),
            inputs: inputs(),
            ..Default::default()
        });
        let json = Bytes::from(
            serde_json::to_vec(&serde_json::json!({"inputs": {"in": STANDARD.encode(&payload)}})).unwrap(),
        );
        drop(payload);

        let mut rows = Vec::new();
        const INVOKE: &str = "/kaas.gateway.v1.Gateway/Invoke";
        const EXECUTE: &str = "/kaas.executor.v1.Executor/Execute";
        let invoked = |r: gw::InvokeResponse| r.outputs;
        let executed = |r: ex::ExecuteResponse| r.outputs;
        rows.push(grpc_row("tonic service (floor)", n, echo_addr, INVOKE, &invoke, &head, invoked).await);
        rows.push(grpc_row("executor (gRPC)", n, exec_addr, EXECUTE, &execute, &head, executed).await);
        rows.push(grpc_row("gateway (gRPC)", n, grpc_addr, INVOKE, &invoke, &head, invoked).await);
        let client = reqwest::Client::new();
        let url = format!("http://{http_addr}/v1/namespaces/bench/functions/big:invoke");
        let want = STANDARD.encode(&head);
        rows.push(
            measure("gateway (HTTP/JSON)", n, || {
                let (client, url, body, want) = (client.clone(), url.clone(), json.clone(), want.clone());
                async move {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(v["outputs"]["out"], want.as_str());
                }
            })
            .await,
        );
        rows
    });
    let rate = |d: Duration| PAYLOAD as f64 / d.as_secs_f64() / (1 << 30) as f64;
    println!("\n16 MiB input, 4-byte output, loopback, {n} sequential calls each (median)");
    println!("copies alive: the most heap bytes live at once in one call, in payloads, per process part");
    println!(
        "{:<24} {:>9} {:>8} {:>10} {:>15} {:>16}",
        "path", "ms", "GiB/s", "of memcpy", "gateway copies", "executor copies"
    );
    println!(
        "{:<24} {:>9.2} {:>8.2} {:>10.2} {:>15} {:>16}",
        "memcpy (floor)",
        memcpy.as_secs_f64() * 1e3,
        rate(memcpy),
        1.0,
        "-",
        "-"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9.2} {:>8.2} {:>10.3} {:>15.2} {:>16.2}",
            r.name,
            r.p50.as_secs_f64() * 1e3,
            rate(r.p50),
            memcpy.as_secs_f64() / r.p50.as_secs_f64(),
            r.copies[1],
            r.copies[2]
        );
    }
    drop((gw_rt, exec_rt));
}
