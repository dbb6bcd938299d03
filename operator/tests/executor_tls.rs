//! The gateway ↔ executor mutual TLS as the chart deploys it (issue 16, point 2): the
//! certificates `helm template` generates, mounted the way the operator Deployment and
//! device-plugin DaemonSet mount them, let a gateway's [`Connector`] reach an executor
//! over real TCP; a plaintext connector, or one holding the executor's own certificate,
//! is refused; a TLS connector never falls back to plaintext.
//!
//! Needs `helm` on PATH (`.ci/install-tools` provides it; CI sets KAAS_REQUIRE_HELM=1 and
//! the test fails without it). Elsewhere without helm it prints that it did not run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use kaas_executor::service;
use kaas_executor::tls::TlsFiles;
use kaas_operator::gateway::Connector;
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

/// The chart's two TLS Secrets (name → key → bytes), or `None` without helm.
fn chart_secrets() -> Option<BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kaas");
    let out = match Command::new("helm")
        .args([
            "template",
            "kaas",
            "--namespace",
            "kaas-system",
            "--show-only",
            "templates/executor-tls.yaml",
        ])
        .arg(&chart)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            let required = std::env::var("KAAS_REQUIRE_HELM").as_deref() == Ok("1");
            assert!(!required, "KAAS_REQUIRE_HELM=1 but helm cannot run: {e}");
            println!("NOT RUN: helm is not on PATH ({e}); .ci/install-tools provides it");
            return None;
        }
    };
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut secrets = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] != "Secret" {
            continue;
        }
        let data = v["data"].as_object().unwrap();
        let decoded = data
            .iter()
            .map(|(k, b)| {
                (k.clone(), base64::engine::general_purpose::STANDARD.decode(b.as_str().unwrap()).unwrap())
            })
            .collect();
        secrets.insert(v["metadata"]["name"].as_str().unwrap().to_string(), decoded);
    }
    Some(secrets)
}

/// Writes `(secret, key)` items under `dir` as the pod's projected volume would.
fn mount(
    dir: &Path,
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    items: &[(&str, &str, &str)],
) -> Vec<std::path::PathBuf> {
    items
        .iter()
        .map(|(secret, key, path)| {
            let bytes = &secrets[*secret][*key];
            let p = dir.join(path);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

/// The device plugin's volume: its certificate and key, and the gateways' CA.
fn executor_side(dir: &Path, secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> TlsFiles {
    let items = [
        ("kaas-executor-tls", "tls.crt", "server.crt"),
        ("kaas-executor-tls", "tls.key", "server.key"),
        ("kaas-gateway-tls", "ca.crt", "gateway-ca.crt"),
    ];
    let s = mount(dir, secrets, &items);
    TlsFiles { cert: s[0].clone(), key: s[1].clone(), ca: s[2].clone() }
}

/// The operator's volume: its certificate and key, and the executors' CA.
fn gateway_side(dir: &Path, secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> TlsFiles {
    let items = [
        ("kaas-gateway-tls", "tls.crt", "client.crt"),
        ("kaas-gateway-tls", "tls.key", "client.key"),
        ("kaas-executor-tls", "ca.crt", "executor-ca.crt"),
    ];
    let c = mount(dir, secrets, &items);
    TlsFiles { cert: c[0].clone(), key: c[1].clone(), ca: c[2].clone() }
}

/// An executor serving its TCP API on loopback, over TLS when given.
async fn serve(tls: Option<tonic::transport::ServerTlsConfig>) -> std::net::SocketAddr {
    let (ex, _) = common::executor_over(64 << 20, &SchedulerConfig::new(PolicyConfig::named("edf")));
    let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service::serve_tcp(ex, listener, tls, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_certificates_connect_gateway_and_executor_and_nothing_else() {
    let Some(secrets) = chart_secrets() else { return };
    assert_eq!(secrets.len(), 2, "{:?}", secrets.keys().collect::<Vec<_>>());
    for (name, data) in &secrets {
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            assert!(data.contains_key(key), "{name} has no {key}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (executor_side(dir.path(), &secrets), gateway_side(dir.path(), &secrets));
    let addr = serve(Some(server.server().unwrap())).await;

    // The endpoint as a KaasNode publishes it; the TLS connector dials it over TLS.
    let gateway = Connector::tls(client.client().unwrap());
    for endpoint in [format!("https://{addr}"), format!("http://{addr}")] {
        let node = gateway.remote(&endpoint).unwrap();
        node.put_function(common::function("f")).await.unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
    }
    // A plaintext gateway: refused by the connector for https, by the executor for http.
    let e =
        Connector::plaintext().remote(&format!("https://{addr}")).err().expect("https without certificates");
    println!("plaintext connector, https endpoint: {e}");
    let plain = Connector::plaintext().remote(&format!("http://{addr}")).unwrap();
    let e = plain.put_function(common::function("g")).await.expect_err("plaintext to a TLS executor");
    println!("plaintext to the TLS executor: {e:?}");
    // The executor's own certificate (what a device-plugin pod holds) is no gateway's.
    let impostor = TlsFiles { cert: server.cert.clone(), key: server.key.clone(), ca: client.ca.clone() };
    let node = Connector::tls(impostor.client().unwrap()).remote(&format!("https://{addr}")).unwrap();
    let e = node
        .put_function(common::function("h"))
        .await
        .expect_err("a device plugin's certificate as a client");
    println!("the executor's certificate as a client: {e:?}");
}

/// A gateway with certificates never talks plaintext: against a plaintext executor its
/// calls fail instead of falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_gateway_does_not_fall_back_to_plaintext() {
    let Some(secrets) = chart_secrets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let client = gateway_side(dir.path(), &secrets);
    let addr = serve(None).await;
    let node = Connector::tls(client.client().unwrap()).remote(&format!("http://{addr}")).unwrap();
    let e = node.put_function(common::function("f")).await.expect_err("TLS to a plaintext executor");
    println!("TLS gateway, plaintext executor: {e:?}");
    // The same executor answers a plaintext gateway: the failure above was the TLS.
    Connector::plaintext()
        .remote(&format!("http://{addr}"))
        .unwrap()
        .put_function(common::function("f"))
        .await
        .unwrap();
}
