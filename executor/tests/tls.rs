//! Mutual TLS on the executor's TCP API (issue 16, point 2), over real sockets: only a
//! client holding a certificate of the gateway CA gets an answer. No certificate, a
//! certificate of another CA, the executor's own server certificate used as a client
//! one, or plaintext: the handshake (or the connection) fails and nothing is served.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use kaas_executor::proto::{self, executor_client::ExecutorClient};
use kaas_executor::service;
use kaas_executor::tls::{SERVER_NAME, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { pem, issuer: Issuer::new(params, key) }
}

/// A leaf certificate and key (PEM) for `names`, for server or client use.
fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages.push(usage);
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
}

fn files(dir: &Path, name: &str, (cert, key): &(String, String), ca: &Ca) -> TlsFiles {
    let f = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(format!("{name}-ca.crt")),
    };
    std::fs::write(&f.cert, cert).unwrap();
    std::fs::write(&f.key, key).unwrap();
    std::fs::write(&f.ca, &ca.pem).unwrap();
    f
}

async fn call(endpoint: Endpoint) -> Result<(), String> {
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut c = ExecutorClient::new(channel);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.put_function(wat_function(
            "f",
            TEST_KERNELS,
            &[("in", 4, proto::BufferKind::Input), ("out", 4, proto::BufferKind::Output)],
            &[("copy", 1, &["in", "out"])],
        )),
    )
    .await
    .map_err(|_| "call timed out".to_string())?;
    r.map(drop).map_err(|s| format!("call: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_with_a_gateway_certificate_reaches_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let (executor_ca, gateway_ca, rogue_ca) =
        (ca("kaas-executor-ca"), ca("kaas-gateway-ca"), ca("someone-else"));
    let server = leaf(&executor_ca, &[SERVER_NAME], ExtendedKeyUsagePurpose::ServerAuth);
    let gateway = leaf(&gateway_ca, &["kaas-gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    let rogue = leaf(&rogue_ca, &["kaas-gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    let server_files = files(dir.path(), "server", &server, &gateway_ca);

    let ex = executor(64 << 20, 1, "edf", vec![]);
    let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service::serve_tcp(
        ex,
        listener,
        Some(server_files.server().unwrap()),
        std::future::pending(),
    ));

    let https = || Endpoint::from_shared(format!("https://{addr}")).unwrap();
    let trusting = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&executor_ca.pem))
            .domain_name(SERVER_NAME)
    };
    let with = |(cert, key): &(String, String)| trusting().identity(Identity::from_pem(cert, key));

    let right = files(dir.path(), "gateway", &gateway, &executor_ca).client().unwrap();
    call(https().tls_config(right).unwrap()).await.expect("the gateway's certificate is accepted");

    let cases = [
        ("no client certificate", https().tls_config(trusting()).unwrap()),
        ("a certificate of another CA", https().tls_config(with(&rogue)).unwrap()),
        ("the executor's own server certificate as a client's", https().tls_config(with(&server)).unwrap()),
        ("plaintext", Endpoint::from_shared(format!("http://{addr}")).unwrap()),
    ];
    for (what, endpoint) in cases {
        let e = call(endpoint).await.expect_err(what);
        println!("{what}: refused ({e})");
    }
    // And a gateway that does not trust the executor's CA refuses the executor.
    let wrong_trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&rogue_ca.pem))
        .domain_name(SERVER_NAME)
        .identity(Identity::from_pem(&gateway.0, &gateway.1));
    let e = call(https().tls_config(wrong_trust).unwrap()).await.expect_err("an executor of another CA");
    println!("an executor certificate of another CA: refused ({e})");
}

#[test]
fn tls_files_must_be_all_or_none_and_pem() {
    let e = TlsFiles::from_flags(Some("a".into()), None, None, "--tls-*").unwrap_err();
    assert!(e.contains("all three or none"), "{e}");
    assert_eq!(TlsFiles::from_flags(None, None, None, "--tls-*").unwrap(), None);
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let f = TlsFiles { cert: junk.clone(), key: junk.clone(), ca: junk };
    let e = f.server().unwrap_err().to_string();
    assert!(e.contains("not a PEM file") && e.contains("junk.pem"), "{e}");
    let f = TlsFiles {
        cert: "/nonexistent.crt".into(),
        key: "/nonexistent.key".into(),
        ca: "/nonexistent".into(),
    };
    let e = f.client().unwrap_err().to_string();
    assert!(e.contains("/nonexistent.crt"), "{e}");
}
