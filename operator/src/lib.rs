//! `kaas-operator`: reconciles kaas custom resources into admission and placement
//! decisions, and serves invocations through its gateway. `standalone` runs the gateway
//! with an in-process executor and no Kubernetes.

pub mod cluster;
pub mod controller;
pub mod convert;
pub mod crds;
pub mod gateway;
pub mod policy;
pub mod standalone;

/// Generated gRPC types of `proto/gateway.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("kaas.gateway.v1");
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
