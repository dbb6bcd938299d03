//! A test kubelet (a real `Registration` server on a unix socket in a temp dir), a
//! PodResources stand-in, device stand-ins whose health a test can flip, and a daemon
//! started against them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kaas_device_plugin::daemon::{Daemon, DaemonConfig};
use kaas_device_plugin::kubelet::connect;
use kaas_device_plugin::plugin::SocketMount;
use kaas_device_plugin::proto::{
    self, device_plugin_client::DevicePluginClient, podresources, registration_server,
};
use kaas_executor::ExecError;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::backend::{Backend, DeviceInfo, Invocation, Outputs};
use kaas_executor::memory::Owner;
use kaas_executor::model::FunctionDef;
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// What the test kubelet saw: a registration, and whether the plugin's socket was
/// already accepting connections when it arrived.
#[derive(Debug)]
pub struct Seen {
    pub request: proto::RegisterRequest,
    pub plugin_was_serving: bool,
}

struct Registrar {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<Seen>,
}

#[tonic::async_trait]
impl registration_server::Registration for Registrar {
    async fn register(
        &self,
        request: tonic::Request<proto::RegisterRequest>,
    ) -> Result<tonic::Response<proto::Empty>, tonic::Status> {
        let request = request.into_inner();
        // Like the kubelet: dial the plugin's endpoint and ask for its options.
        let plugin_was_serving = match connect(&self.dir.join(&request.endpoint)).await {
            Ok(ch) => DevicePluginClient::new(ch).get_device_plugin_options(proto::Empty {}).await.is_ok(),
            Err(_) => false,
        };
        let _ = self.tx.send(Seen { request, plugin_was_serving });
        Ok(tonic::Response::new(proto::Empty {}))
    }
}

/// Serves `router` on a unix socket bound at `socket` until `stop` fires (or is dropped).
fn serve_on(
    socket: &Path,
    router: tonic::transport::server::Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async {
                let _ = stop.await;
            })
            .await
            .unwrap();
    })
}

/// A kubelet's registration endpoint at `<dir>/kubelet.sock`.
pub struct TestKubelet {
    pub dir: PathBuf,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestKubelet {
    pub async fn start(dir: &Path) -> TestKubelet {
        let (tx, seen) = mpsc::unbounded_channel();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let socket = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&socket);
        let registrar = Registrar { dir: dir.to_path_buf(), tx };
        let router = tonic::transport::Server::builder()
            .add_service(registration_server::RegistrationServer::new(registrar));
        let task = serve_on(&socket, router, rx);
        TestKubelet { dir: dir.to_path_buf(), seen, stop: Some(stop), task: Some(task) }
    }

    /// Stops like a restarting kubelet: its socket and every plugin socket are removed.
    pub async fn crash(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sock") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    /// The next registration, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Seen {
        tokio::time::timeout(limit, self.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no registration within {limit:?}"))
            .expect("kubelet stopped")
    }
}

/// A device whose health the test controls; kernels run on the WebAssembly backend
/// underneath. `kind` "gpu" stands in for a GPU so the GPU resource is exercised on
/// machines without one.
pub struct Flaky {
    inner: WasmBackend,
    id: String,
    kind: String,
    pub healthy: Arc<AtomicBool>,
}

impl Flaky {
    pub fn device(id: &str, kind: &str) -> (Arc<dyn Backend>, Arc<AtomicBool>) {
        let healthy = Arc::new(AtomicBool::new(true));
        let d = Flaky {
            inner: WasmBackend::new(64 << 20, 2, Duration::from_millis(500)).unwrap(),
            id: id.into(),
            kind: kind.into(),
            healthy: healthy.clone(),
        };
        (Arc::new(d), healthy)
    }
}

impl Backend for Flaky {
    fn info(&self) -> DeviceInfo {
        DeviceInfo { id: self.id.clone(), kind: self.kind.clone(), ..self.inner.info() }
    }
    fn free_memory(&self) -> u64 {
        self.inner.free_memory()
    }
    fn can_run(&self, f: &FunctionDef) -> bool {
        self.inner.can_run(f)
    }
    fn is_resident(&self, f: &FunctionDef) -> bool {
        self.inner.is_resident(f)
    }
    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError> {
        self.inner.load(f)
    }
    fn unload(&self, key: &str) {
        self.inner.unload(key)
    }
    fn set_isolation(&self, isolation: kaas_executor::backend::Isolation) {
        self.inner.set_isolation(isolation)
    }
    fn begin(
        &self,
        f: &Arc<FunctionDef>,
        owner: Owner,
        inputs: Outputs,
    ) -> Result<Box<dyn Invocation>, ExecError> {
        self.inner.begin(f, owner, inputs)
    }
    fn health(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("Xid 79: GPU has fallen off the bus".into())
        }
    }
}

/// A stand-in for the kubelet's PodResources API on a real unix socket: `List` answers
/// whatever the test last set.
pub struct TestPodResources {
    pub socket: PathBuf,
    pods: Arc<std::sync::Mutex<Vec<podresources::PodResources>>>,
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Lister {
    pods: Arc<std::sync::Mutex<Vec<podresources::PodResources>>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl podresources::pod_resources_lister_server::PodResourcesLister for Lister {
    async fn list(
        &self,
        _: tonic::Request<podresources::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<podresources::ListPodResourcesResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let pod_resources = self.pods.lock().unwrap().clone();
        Ok(tonic::Response::new(podresources::ListPodResourcesResponse { pod_resources }))
    }
}

impl TestPodResources {
    /// Serves at `socket` (the kubelet's `pod-resources/kubelet.sock`).
    pub async fn start(socket: &Path) -> TestPodResources {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(socket);
        let lister = Lister { pods: Default::default(), calls: Default::default() };
        let (pods, calls) = (lister.pods.clone(), lister.calls.clone());
        let (stop, rx) = tokio::sync::oneshot::channel();
        let router = tonic::transport::Server::builder()
            .add_service(podresources::pod_resources_lister_server::PodResourcesListerServer::new(lister));
        serve_on(socket, router, rx);
        TestPodResources { socket: socket.to_path_buf(), pods, calls, stop: Some(stop) }
    }

    /// From now on pod `namespace/name` holds `ids` of `resource` (replacing the pod of
    /// that name, if any).
    pub fn allocate(&self, namespace: &str, name: &str, resource: &str, ids: &[&str]) {
        let mut pods = self.pods.lock().unwrap();
        pods.retain(|p| !(p.namespace == namespace && p.name == name));
        pods.push(podresources::PodResources {
            name: name.into(),
            namespace: namespace.into(),
            containers: vec![podresources::ContainerResources {
                name: "main".into(),
                devices: vec![podresources::ContainerDevices {
                    resource_name: resource.into(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                }],
            }],
        });
    }

    /// Pod `namespace/name` is gone.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.pods.lock().unwrap().retain(|p| !(p.namespace == namespace && p.name == name));
    }

    /// Stops answering (a kubelet that is down).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Where tests put the PodResources socket for a daemon whose share sockets are in
/// `sockets`: beside it, as `pod-resources/kubelet.sock`.
pub fn pod_resources_socket(sockets: &Path) -> PathBuf {
    sockets.parent().unwrap().join("pod-resources/kubelet.sock")
}

/// A daemon on one stand-in GPU (`GPU-test-0`, 4 shares) and one CPU (3 shares), asking
/// the PodResources API at [`pod_resources_socket`] who holds a share.
pub async fn daemon(
    dir: &Path,
    sockets: &Path,
    devices: Vec<Arc<dyn Backend>>,
    kube: Option<kube::Client>,
) -> Daemon {
    Daemon::start(
        devices,
        DaemonConfig {
            node_name: "node-a".into(),
            device_plugin_dir: dir.to_path_buf(),
            socket_dir: sockets.to_path_buf(),
            mount: SocketMount { host_dir: sockets.to_path_buf(), pod_dir: "/var/run/kaas".into() },
            gpu_shares: 4,
            cpu_shares: 3,
            executor_listen: None,
            executor_endpoint: Some("http://10.0.0.7:7070".into()),
            executor_tls: None,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
            health_interval: Duration::from_millis(50),
            heartbeat: Duration::from_millis(300),
            kube,
            pod_resources_socket: pod_resources_socket(sockets),
        },
    )
    .await
    .unwrap()
}

/// A client of the plugin socket `name` in `dir`.
pub async fn plugin(dir: &Path, name: &str) -> DevicePluginClient<Channel> {
    DevicePluginClient::new(connect(&dir.join(name)).await.unwrap())
}

/// Waits until `f` holds, polling.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
