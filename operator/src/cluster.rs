//! `kaas-operator run`: the in-cluster operator. Every replica serves the gateway (fed
//! from watches of the kaas resources); the replica holding the Lease also runs the
//! controllers that write status, events and finalizers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use kaas_crds::{AcceleratorClass, KaasNode, KernelFunction, SchedulingPolicy};
use kaas_executor::liveness::Liveness;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::{self, Context, leader, sync};
use crate::gateway::grpc::GatewayService;
use crate::gateway::http::{HttpState, ops_router, router};
use crate::gateway::{Gateway, GatewayConfig};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Gateway HTTP address.
    pub http_listen: SocketAddr,
    /// Gateway gRPC address.
    pub grpc_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Heartbeat age that takes a node out of placement.
    pub node_stale_after: Duration,
    /// Keep per-function gateway metrics (labels `namespace`, `function`).
    pub function_metrics: bool,
    /// This replica's Pod UID: its stats ConfigMap is owned by the Pod (and goes with it).
    pub pod_uid: Option<String>,
    /// The largest invocation payload over gRPC and HTTP.
    pub max_request_bytes: usize,
    /// Check callers by TokenReview and SubjectAccessReview (else anyone may invoke).
    pub kubernetes_auth: bool,
    /// How executors are reached (mutual TLS unless --insecure-executor-api).
    pub executor_connector: crate::gateway::Connector,
    /// Ceilings of invocations and their input bytes held by this replica.
    pub max_inflight: (usize, u64),
}

/// A reflector store kept current by a background watch.
fn store<K>(liveness: &Liveness, name: &'static str, api: Api<K>) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api, watcher::Config::default()).default_backoff()).applied_objects();
    liveness.spawn(name, async move {
        futures::pin_mut!(stream);
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                warn!(error = %e, "watch error (retrying)");
            }
        }
    });
    reader
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let client =
        Client::try_default().await.context("no Kubernetes API configuration (in-cluster or kubeconfig)")?;
    let gateway = Gateway::start(GatewayConfig {
        function_metrics: opts.function_metrics,
        executor_connector: opts.executor_connector.clone(),
        max_inflight_requests: opts.max_inflight.0,
        max_inflight_bytes: opts.max_inflight.1,
        ..GatewayConfig::default()
    })?;
    info!(tls = opts.executor_connector.is_tls(), "executors are reached over TCP");
    if opts.kubernetes_auth {
        gateway.require_auth(Arc::new(crate::gateway::auth::KubeAuth::new(client.clone())));
    } else {
        warn!("--auth=none: anyone who reaches the gateway may invoke any function");
    }
    let mut registry = Registry::default();
    gateway.metrics().register(&mut registry);
    let liveness = Liveness::new();
    let state = HttpState {
        gateway: gateway.clone(),
        registry: Arc::new(registry),
        liveness: liveness.clone(),
        max_request_bytes: opts.max_request_bytes,
    };

    let l = &liveness;
    let classes = store(l, "AcceleratorClass watch", Api::<AcceleratorClass>::all(client.clone()));
    let nodes = store(l, "KaasNode watch", Api::<KaasNode>::all(client.clone()));
    let functions = store(l, "KernelFunction watch", Api::<KernelFunction>::all(client.clone()));
    let policies = store(l, "SchedulingPolicy watch", Api::<SchedulingPolicy>::all(client.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let feeds = sync::Feeds {
        classes: classes.clone(),
        nodes: nodes.clone(),
        functions: functions.clone(),
        policies,
    };
    let sync_task = liveness.spawn(
        "gateway sync",
        sync::run(client.clone(), gateway.clone(), feeds, opts.node_stale_after, stop_rx.clone()),
    );

    let (leader_tx, mut leader_rx) = watch::channel(false);
    let stats_task = liveness.spawn(
        "function stats",
        controller::stats::StatsTask {
            client: client.clone(),
            gateway: gateway.clone(),
            namespace: opts.lease_namespace.clone(),
            replica: opts.identity.clone(),
            owner: opts
                .pod_uid
                .clone()
                .map(|uid| controller::stats::PodRef { name: opts.identity.clone(), uid }),
        }
        .run(functions.clone(), leader_rx.clone(), stop_rx.clone()),
    );
    let election = liveness.spawn(
        "leader election",
        leader::elect(
            client.clone(),
            opts.lease_namespace.clone(),
            opts.lease_name.clone(),
            opts.identity.clone(),
            leader_tx,
            stop_rx.clone(),
        ),
    );
    let mut ctx = Context::new(
        client,
        (classes, nodes, functions),
        opts.node_stale_after,
        "default".into(),
        Some(opts.identity.clone()),
    );
    ctx.connector = opts.executor_connector.clone();
    let ctx = Arc::new(ctx);
    let controllers = liveness.spawn("controllers", async move {
        loop {
            if leader_rx.wait_for(|l| *l).await.is_err() {
                return;
            }
            info!("leading: starting controllers");
            tokio::select! {
                _ = controller::run_controllers(ctx.clone()) => {}
                r = leader_rx.wait_for(|l| !*l) => {
                    if r.is_err() { return; }
                    info!("lost the lease: controllers stopped");
                }
            }
        }
    });

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
    };
    let (http, grpc, ops) =
        (bind(opts.http_listen).await?, bind(opts.grpc_listen).await?, bind(opts.metrics_listen).await?);
    info!(http = %opts.http_listen, grpc = %opts.grpc_listen, metrics = %opts.metrics_listen, identity = %opts.identity, "kaas operator serving");
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_task = liveness.spawn(
        "HTTP server",
        axum::serve(http, router(state.clone())).with_graceful_shutdown(until(stop_rx.clone())).into_future(),
    );
    let ops_task = liveness.spawn(
        "metrics server",
        axum::serve(ops, ops_router(state)).with_graceful_shutdown(until(stop_rx.clone())).into_future(),
    );
    let grpc_task = liveness.spawn(
        "gRPC server",
        kaas_executor::service::grpc_server()
            .layer(tower::util::MapResponseLayer::new(kaas_executor::service::oversize_is_resource_exhausted))
            .add_service(GatewayService::server(gateway, opts.max_request_bytes))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                until(stop_rx.clone()),
            ),
    );
    crate::shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = election.await;
    controllers.abort();
    let _ = sync_task.await;
    let _ = stats_task.await;
    http_task.await??;
    ops_task.await??;
    grpc_task.await??;
    Ok(())
}
