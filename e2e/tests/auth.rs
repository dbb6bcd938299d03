//! Issue 16, point 1, standalone: `--auth-token-file` turns the invocation checks on over
//! HTTP and gRPC alike — no token 401, a token for another namespace 403, the right token
//! 200 — and without a token file standalone refuses to listen beyond loopback.

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kaas_e2e::standalone::{Class, write_functions};
use kaas_e2e::{Proc, addr_after, binary};
use kaas_operator::proto::InvokeRequest;
use kaas_operator::proto::gateway_client::GatewayClient;

fn standalone(op_bin: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(op_bin);
    cmd.args(["standalone", "--functions", dir.to_str().unwrap(), "--backend", "wasm"]);
    cmd.args(extra);
    cmd.env("RUST_LOG", "warn");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_invokes_over_http_and_grpc() {
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    std::fs::create_dir(&functions).unwrap();
    write_functions(
        &functions,
        &[Class { name: "probe", iterations: 1000, runtime_ms: 1.0, deadline_ms: 2_000 }],
        "edf",
        "none",
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# token namespaces\ntok-e2e e2e\ntok-other other,more\n").unwrap();
    let cmd = standalone(
        &op_bin,
        &functions,
        &[
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--auth-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let (_gw, line) = Proc::start(cmd, "HTTP on http://").unwrap();
    let http = addr_after(&line, "HTTP on http://").unwrap();
    let grpc = addr_after(&line, "gRPC on ").unwrap();

    let zeros = STANDARD.encode([0u8; 64]);
    let client = reqwest::Client::new();
    let call = |token: Option<&'static str>| {
        let mut r = client
            .post(format!("http://{http}/v1/namespaces/e2e/functions/probe:invoke"))
            .json(&serde_json::json!({ "inputs": { "in": zeros } }));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), challenge, r.text().await.unwrap())
        }
    };
    let (status, challenge, body) = call(None).await;
    println!("HTTP, no token: {status} {body}");
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, _, body) = call(Some("tok-wrong")).await;
    assert_eq!(status, 401, "an unknown token: {body}");
    let (status, _, body) = call(Some("tok-other")).await;
    println!("HTTP, another namespace's token: {status} {body}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("e2e/probe") && body.contains("forbidden"), "{body}");
    let (status, _, body) = call(Some("tok-e2e")).await;
    assert_eq!(status, 200, "{body}");

    let mut grpc = GatewayClient::connect(format!("http://{grpc}")).await.unwrap();
    let request = |token: Option<&str>| {
        let mut r = tonic::Request::new(InvokeRequest {
            namespace: "e2e".into(),
            name: "probe".into(),
            inputs: HashMap::from([("in".to_string(), vec![0u8; 64].into())]),
            deadline_ms: 0,
        });
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let e = grpc.invoke(request(None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = grpc.invoke(request(Some("tok-other"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let ok = grpc.invoke(request(Some("tok-e2e"))).await.unwrap().into_inner();
    assert!(ok.outputs.contains_key("out"), "{ok:?}");
    println!("gRPC: no token UNAUTHENTICATED, another namespace PERMISSION_DENIED, the right token served");
}

#[test]
fn without_a_token_file_standalone_listens_on_loopback_only() {
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_functions(
        dir.path(),
        &[Class { name: "probe", iterations: 1000, runtime_ms: 1.0, deadline_ms: 2_000 }],
        "edf",
        "none",
    );
    let out = standalone(&op_bin, dir.path(), &["--listen", "0.0.0.0:0", "--grpc-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("--auth-token-file") && stderr.contains("loopback"), "{stderr}");
}
