//! HTTPS sources (issue 16, point 5), against a real HTTPS server on loopback: bodies
//! streamed with a size cap (a 5 GiB body is refused with the process's peak RSS up by
//! well under 300 MB), https only, no redirect to plaintext or internal addresses, the
//! digest checked, and each `(url, sha256)` fetched once while cached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kaas_operator::controller::sources::{DEFAULT_MAX_DOWNLOAD_BYTES, Downloader};
use sha2::{Digest, Sha256};

const SMALL: &[u8] = b"kernel weights, 32 bytes exactly";

/// An HTTPS server for `localhost` on a fresh port; returns its address, the PEM of the
/// CA that signed its certificate, and how many requests it served.
async fn https_server() -> (SocketAddr, Vec<u8>, Arc<AtomicUsize>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let redirect = |to: &'static str| {
        move || async move { (StatusCode::FOUND, [(header::LOCATION, to)]).into_response() }
    };
    let app = Router::new()
        .route("/small", get(|| async { SMALL }))
        .route(
            "/huge",
            get(|| async {
                // 5 GiB in 1 MiB chunks, made as they are sent, with no Content-Length.
                let chunks = futures::stream::iter(0..5120u32)
                    .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![0x5au8; 1 << 20])));
                Response::new(Body::from_stream(chunks))
            }),
        )
        .route(
            "/declared-huge",
            get(|| async {
                // 5 GiB again, this time saying so up front.
                let chunks = futures::stream::iter(0..5120u32)
                    .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![0x5au8; 1 << 20])));
                let mut r = Response::new(Body::from_stream(chunks));
                r.headers_mut().insert(header::CONTENT_LENGTH, (5u64 << 30).into());
                r
            }),
        )
        .route("/to-http", get(redirect("http://example.com/weights")))
        .route("/to-private", get(redirect("https://10.1.2.3/weights")))
        .route("/to-metadata", get(redirect("https://169.254.169.254/latest/meta-data")))
        .route("/to-loopback6", get(redirect("https://[::1]/weights")))
        .route("/to-localhost", get(redirect("https://localhost:1/weights")))
        .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                next.run(req).await
            }
        }));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem.into_bytes(), hits)
}

use futures::StreamExt as _;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn rss(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sources_are_capped_pinned_cached_and_never_redirected_inward() {
    let (addr, ca, hits) = https_server().await;
    let d = Downloader::new(DEFAULT_MAX_DOWNLOAD_BYTES, 1 << 20, &[ca]).unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());

    // Fetched, verified, then served from the cache: one request for two gets.
    let got = d.get(&url("/small"), &sha(SMALL)).await.unwrap();
    assert_eq!(&got[..], SMALL);
    let again = d.get(&url("/small"), &sha(SMALL).to_uppercase()).await.unwrap();
    assert_eq!(&again[..], SMALL);
    assert_eq!(hits.load(Ordering::Relaxed), 1, "the same (url, sha256) is fetched once");
    assert_eq!(d.cached(), (1, SMALL.len() as u64));

    // A wrong pin: refused, and nothing cached under it.
    let e = d.get(&url("/small"), &sha(b"other")).await.unwrap_err().to_string();
    assert!(e.contains("the resource pins"), "{e}");
    assert_eq!(d.cached().0, 1);

    // Plain http is never fetched.
    let e = d.get(&format!("http://localhost:{}/small", addr.port()), &sha(SMALL)).await.unwrap_err();
    assert!(e.to_string().contains("only https://"), "{e}");

    // Redirects to plaintext or internal addresses are refused.
    for (path, why) in [
        ("/to-http", "non-https"),
        ("/to-private", "internal address"),
        ("/to-metadata", "internal address"),
        ("/to-loopback6", "internal address"),
        ("/to-localhost", "localhost"),
    ] {
        let e = format!("{:#}", d.get(&url(path), &sha(SMALL)).await.unwrap_err());
        let chain = format!("{e} {:?}", e);
        println!("{path}: {e}");
        assert!(chain.contains(why), "{path}: {e}");
    }

    // A declared 5 GiB body is refused before it is read.
    let e = d.get(&url("/declared-huge"), &sha(SMALL)).await.unwrap_err().to_string();
    assert!(e.contains("over the limit") && e.contains("--max-download-bytes"), "{e}");
}

/// 5 GiB sent without a Content-Length: refused at the default cap of 128 MiB, with the
/// process's peak RSS (server included) up by less than 300 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_gib_body_is_refused_with_rss_under_300_mb() {
    let (addr, ca, _) = https_server().await;
    let d = Downloader::new(DEFAULT_MAX_DOWNLOAD_BYTES, 1 << 20, &[ca]).unwrap();
    let before = rss("VmRSS:");
    let e =
        d.get(&format!("https://localhost:{}/huge", addr.port()), &sha(b"")).await.unwrap_err().to_string();
    let peak = rss("VmHWM:");
    println!(
        "5 GiB body: {e}; peak RSS {} MB over {} MB before",
        (peak - before) / 1_000_000,
        before / 1_000_000
    );
    assert!(e.contains("over the limit of 134217728"), "{e}");
    assert!(peak - before < 300_000_000, "peak RSS grew by {} bytes", peak - before);
}
