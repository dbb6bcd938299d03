//! The gRPC service over real sockets: a unix socket in a temp dir and TCP on loopback.

mod common;

use std::time::Duration;

use common::*;
use kaas_executor::proto::executor_client::ExecutorClient;
use kaas_executor::proto::{self, BufferKind::Input, BufferKind::Output};
use kaas_executor::service;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_api_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("executor.sock");
    let ex = executor(256 << 20, 2, "edf", vec![]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let ex = ex.clone();
        let sock = sock.clone();
        async move {
            service::serve_unix(ex, &sock, async {
                stop_rx.await.ok();
            })
            .await
        }
    });
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = service::connect_unix(&sock).await.unwrap();

    let mut status =
        client.watch_status(proto::WatchStatusRequest { interval_ms: 10 }).await.unwrap().into_inner();
    let first = status.message().await.unwrap().unwrap();
    assert_eq!(first.node, "test-node");
    assert_eq!(first.devices[0].id, "cpu");
    assert!(first.devices[0].healthy);

    let f = wat_function(
        "copy",
        TEST_KERNELS,
        &[("in", 8, Input), ("out", 8, Output)],
        &[("copy", 2, &["in", "out"])],
    );
    let put = client.put_function(f).await.unwrap().into_inner();
    assert_eq!(put.runnable_on, vec!["cpu"]);

    let pre = client
        .preload(proto::PreloadRequest {
            function: Some(proto::FunctionRef { namespace: "t".into(), name: "copy".into() }),
            device: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pre.devices, vec!["cpu"]);
    // The status stream reports the function resident.
    let resident = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = status.message().await.unwrap().unwrap();
            if s.resident.iter().any(|r| r.name == "copy") {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(resident.resident[0].device, "cpu");

    let r = client
        .execute(proto::ExecuteRequest {
            namespace: "t".into(),
            name: "copy".into(),
            inputs: [("in".to_string(), vec![1, 2, 3, 4, 5, 6, 7, 8].into())].into(),
            deadline_ms: 0,
            share_id: String::new(),
            device: "cpu".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs["out"][..], vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(!r.cold_start, "preloaded");
    assert_eq!(r.device, "cpu");
    let t = r.timing.unwrap();
    assert!(t.total_ms >= t.exec_ms && t.exec_ms > 0.0);

    // Errors carry codes the gateway maps to HTTP.
    let bad = client
        .execute(proto::ExecuteRequest {
            namespace: "t".into(),
            name: "copy".into(),
            inputs: [("in".to_string(), vec![1].into())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("1 bytes"), "{}", bad.message());
    assert_eq!(bad.metadata().get("kaas-error").unwrap(), "bad_input");
    let missing = client
        .execute(proto::ExecuteRequest { namespace: "t".into(), name: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let invalid = client
        .put_function(proto::FunctionDef { namespace: "t".into(), name: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);

    let ev = client
        .evict(proto::FunctionRef { namespace: "t".into(), name: "copy".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ev.devices, vec!["cpu"]);
    let gone = client
        .execute(proto::ExecuteRequest {
            namespace: "t".into(),
            name: "copy".into(),
            inputs: [("in".to_string(), vec![0; 8].into())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // The status stream is still open: shutdown must not wait for it forever.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("shutdown within the grace period")
        .unwrap()
        .unwrap();
    drop(status);
    assert!(!sock.exists(), "the socket is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_api_and_shares() {
    let shares =
        vec![kaas_executor::Share { id: "cpu-share-0".into(), device: 0, weight: 2, memory_quota: 64 }];
    let ex = executor(256 << 20, 2, "cfs-affinity", shares);
    let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service::serve_tcp(ex.clone(), listener, None, std::future::pending()));
    let mut client = ExecutorClient::connect(format!("http://{addr}")).await.unwrap();
    let f = wat_function(
        "copy",
        TEST_KERNELS,
        &[("in", 8, Input), ("out", 8, Output)],
        &[("copy", 2, &["in", "out"])],
    );
    client.put_function(f).await.unwrap();
    let req = |share: &str, size: usize| proto::ExecuteRequest {
        namespace: "t".into(),
        name: "copy".into(),
        inputs: [("in".to_string(), vec![3; size].into())].into(),
        share_id: share.into(),
        ..Default::default()
    };
    let r = client.execute(req("cpu-share-0", 8)).await.unwrap().into_inner();
    assert_eq!(r.outputs["out"][..], vec![3; 8]);
    let unknown = client.execute(req("gpu-9-share-9", 8)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("unknown share"), "{}", unknown.message());
    // A function larger than the share's quota is refused by the executor.
    let big = wat_function(
        "big",
        TEST_KERNELS,
        &[("in", 64, Input), ("out", 64, Output)],
        &[("copy", 1, &["in", "out"])],
    );
    client.put_function(big).await.unwrap();
    let e = client
        .execute(proto::ExecuteRequest {
            namespace: "t".into(),
            name: "big".into(),
            inputs: [("in".to_string(), vec![0; 64].into())].into(),
            share_id: "cpu-share-0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("quota of 64"), "{}", e.message());
}
