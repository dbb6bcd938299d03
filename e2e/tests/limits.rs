//! Issue 16, point 5: bounded input, through a standalone gateway process (in-process
//! executor). A 100 MiB gRPC invocation is answered RESOURCE_EXHAUSTED and a 100 MiB
//! HTTP body 413, each refused from its length before it is read: the gateway's peak RSS
//! grows by less than 100 MB. An absurd `deadlineMs` is a 400. Nothing else is harmed:
//! the next ordinary invocation is served.

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use kaas_e2e::standalone::{Class, write_functions};
use kaas_e2e::{Proc, addr_after, binary};
use kaas_operator::proto::InvokeRequest;
use kaas_operator::proto::gateway_client::GatewayClient;

/// Peak resident memory of a process, bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// A standalone gateway process (in-process WebAssembly executor) serving one function,
/// `e2e/probe`, with `extra` flags; its first log line (which names its ports) and the
/// directory of its functions.
fn standalone(extra: &[&str]) -> (Proc, String, tempfile::TempDir) {
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = [Class { name: "probe", iterations: 1000, runtime_ms: 1.0, deadline_ms: 2_000 }];
    write_functions(dir.path(), &probe, "edf", "none");
    let mut cmd = Command::new(&op_bin);
    cmd.args(["standalone", "--functions", dir.path().to_str().unwrap()]);
    cmd.args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--backend", "wasm"]);
    cmd.args(extra);
    cmd.env("RUST_LOG", "warn");
    let (gw, line) = Proc::start(cmd, "HTTP on http://").unwrap();
    (gw, line, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_before_they_are_read() {
    let (gw, line, _dir) = standalone(&[]);
    let http = addr_after(&line, "HTTP on http://").unwrap();
    let grpc = addr_after(&line, "gRPC on ").unwrap();
    let pid = gw.child.id();
    let zeros = STANDARD.encode([0u8; 64]);
    let ordinary = || async {
        let body = serde_json::json!({ "inputs": { "in": zeros.clone() } });
        let r = reqwest::Client::new()
            .post(format!("http://{http}/v1/namespaces/e2e/functions/probe:invoke"))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };
    assert_eq!(ordinary().await, 200);
    let before = peak_rss(pid);

    // 100 MiB over gRPC (the default limit is 64 MiB).
    let mut client = GatewayClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .max_encoding_message_size(200 << 20)
        .max_decoding_message_size(200 << 20);
    let huge = InvokeRequest {
        namespace: "e2e".into(),
        name: "probe".into(),
        inputs: HashMap::from([("in".to_string(), vec![7u8; 100 << 20].into())]),
        deadline_ms: 0,
    };
    let err = client.invoke(huge).await.expect_err("a 100 MiB request is refused");
    println!("gRPC 100 MiB: {:?} {}", err.code(), err.message());
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    println!("gateway peak RSS after the gRPC request: {} MB", peak_rss(pid) >> 20);

    // 100 MiB over HTTP, declared: the answer comes before any of the body is sent.
    let (status, text) = declared_body(&http, 100 << 20).await;
    println!("HTTP 100 MiB: {status} {text}");
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("exceeds the limit"), "{text}");
    // And sent: refused alike (the server may close before the client finishes).
    let r = reqwest::Client::new()
        .post(format!("http://{http}/v1/namespaces/e2e/functions/probe:invoke"))
        .header("content-type", "application/json")
        .body(vec![b' '; 100 << 20])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }

    // An absurd deadline.
    let r = reqwest::Client::new()
        .post(format!("http://{http}/v1/namespaces/e2e/functions/probe:invoke"))
        .json(&serde_json::json!({ "inputs": { "in": zeros }, "deadlineMs": 18446744073709551615u64 }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    println!("deadlineMs u64::MAX: {status} {text}");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("exceeds the maximum"), "{text}");

    let after = peak_rss(pid);
    println!("gateway peak RSS {} MB -> {} MB", before >> 20, after >> 20);
    // The issue asks for < 100 MB; reading the HTTP body up to its 85 MiB limit before
    // refusing it stayed under that (+87 MB), so the bound here is what refusing from the
    // length costs (+1 MB measured), with room for noise.
    assert!(after.saturating_sub(before) < 32 << 20, "peak RSS grew by {} bytes", after - before);
    assert_eq!(ordinary().await, 200, "the next ordinary request is served");
}

/// Sends only the headers of a POST declaring `len` bytes of body; returns the answer.
async fn declared_body(http: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/namespaces/e2e/functions/probe:invoke HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The gateway's in-flight ceiling is a standalone flag too: with room for 32 bytes of
/// inputs, a 64-byte invocation is refused at once (429 with Retry-After), saying which
/// ceiling, and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_gateway_ceiling_is_a_flag() {
    let (_gw, line, _dir) = standalone(&["--max-inflight-bytes", "32", "--max-inflight-requests", "4"]);
    let http = addr_after(&line, "HTTP on http://").unwrap();
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .post(format!("http://{http}/v1/namespaces/e2e/functions/probe:invoke"))
            .json(&serde_json::json!({ "inputs": { "in": STANDARD.encode([0u8; 64]) } }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").is_some();
        let text = r.text().await.unwrap();
        println!("64 bytes under a 32-byte ceiling: {status} {text}");
        assert_eq!(status, 429, "{text}");
        assert!(retry, "no Retry-After");
        assert!(text.contains("ceiling of 32"), "{text}");
    }
}
