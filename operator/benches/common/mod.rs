//! What the gateway benches stand up: an executor serving one function over TCP, and a
//! gateway in front of it serving gRPC and HTTP, on loopback with kaas's own settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto as ex;
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_operator::gateway::grpc::GatewayService;
use kaas_operator::gateway::http::{HttpState, router};
use kaas_operator::gateway::{Gateway, GatewayConfig, NodeClient};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use prometheus_client::registry::Registry;

/// An executor (one WASM device, 1 GiB, 2 slots, `edf`) with `def` resident, serving its
/// node API on loopback (tasks on the calling runtime); its address.
pub async fn serve_executor(def: ex::FunctionDef) -> SocketAddr {
    let executor = Executor::start(
        vec![Arc::new(WasmBackend::new(1 << 30, 2, Duration::from_secs(5)).unwrap())],
        ExecutorConfig {
            node: "bench".into(),
            scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
            shares: vec![],
            health_interval: Duration::from_secs(1),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap();
    let key = format!("{}/{}", def.namespace, def.name);
    executor.put_function(FunctionDef::try_from(def).unwrap()).await.unwrap();
    executor.preload(&key, None).await.unwrap();
    let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service::serve_tcp(executor, listener, None, std::future::pending()));
    addr
}

/// A gateway (`balance`) routing `def` to the executor at `executor`, serving its gRPC and
/// HTTP APIs on loopback (tasks on the calling runtime); their addresses.
pub async fn serve_gateway(executor: SocketAddr, def: ex::FunctionDef) -> (SocketAddr, SocketAddr) {
    let gateway = Gateway::start(GatewayConfig {
        scheduler: SchedulerConfig::new(PolicyConfig::named("balance")),
        ..GatewayConfig::default()
    })
    .unwrap();
    gateway.add_node("bench", NodeClient::remote(&format!("http://{executor}")).unwrap());
    gateway.put_function(def);
    assert!(gateway.wait_ready(Duration::from_secs(10)).await, "executor never became ready");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    tokio::spawn(
        service::grpc_server()
            .add_service(GatewayService::server(gateway.clone(), 1 << 30))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true))),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let state = HttpState {
        gateway,
        registry: Arc::new(Registry::default()),
        liveness: Default::default(),
        max_request_bytes: 1 << 30,
    };
    tokio::spawn(async move { axum::serve(http, router(state)).await });
    (grpc_addr, http_addr)
}
