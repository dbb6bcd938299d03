//! The node daemon: the executor, its unix (node API and per-share) and TCP servers, one
//! kubelet plugin per resource, the `KaasNode` publisher and the metrics endpoint, started
//! and stopped as one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kaas_executor::backend::Backend;
use kaas_executor::liveness::Liveness;
use kaas_executor::share::{SHARE_SOCKET, ShareSocket, is_safe_share_id, serve_shares};
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_scheduler::SchedulerConfig;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::kubelet::ResourcePlugin;
use crate::metrics::PluginMetrics;
use crate::plugin::{EXECUTOR_SOCKET, SHARES_DIR, SocketMount};
use crate::podresources::PodResources;
use crate::publish::{NodeFacts, Publisher};
use crate::shares::{ResourcePlan, plan};

/// How the daemon runs.
#[derive(Clone)]
pub struct DaemonConfig {
    /// Kubernetes node name.
    pub node_name: String,
    /// The kubelet's device-plugin directory.
    pub device_plugin_dir: PathBuf,
    /// Directory of the executor's unix socket, as this process sees it.
    pub socket_dir: PathBuf,
    /// The same directory as the host and pods see it.
    pub mount: SocketMount,
    /// Shares per GPU.
    pub gpu_shares: u32,
    /// Shares of the CPU device.
    pub cpu_shares: u32,
    /// TCP address of the executor API for the gateway, if any.
    pub executor_listen: Option<SocketAddr>,
    /// Endpoint published in the `KaasNode` (default: `http://<executor_listen>`, or
    /// `https://` with `executor_tls`).
    pub executor_endpoint: Option<String>,
    /// Mutual TLS on the executor's TCP API (`None`: plaintext).
    pub executor_tls: Option<tonic::transport::ServerTlsConfig>,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Queues of the executor.
    pub scheduler: SchedulerConfig,
    /// How often device health is probed.
    pub health_interval: Duration,
    /// `KaasNode` heartbeat period.
    pub heartbeat: Duration,
    /// API client; without one no `KaasNode` is published.
    pub kube: Option<kube::Client>,
    /// The kubelet's PodResources socket, asked which pod (and so which namespace) holds
    /// a share when a pod first calls on its share socket.
    pub pod_resources_socket: PathBuf,
}

/// A running daemon.
pub struct Daemon {
    /// The hosted executor.
    pub executor: Executor,
    /// The advertised resources.
    pub plans: Vec<ResourcePlan>,
    /// Bound executor TCP address.
    pub executor_addr: Option<SocketAddr>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// Plugin metrics.
    pub metrics: Arc<PluginMetrics>,
    /// Per plan: registered with the current kubelet.
    pub registered: Vec<Arc<AtomicBool>>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    failures: tokio::sync::mpsc::UnboundedReceiver<String>,
}

#[derive(Clone)]
struct HttpState {
    registry: Arc<Registry>,
    registered: Vec<Arc<AtomicBool>>,
    health: watch::Receiver<Vec<bool>>,
    liveness: Liveness,
}

impl Daemon {
    /// Starts everything on `devices`. Fails only for what makes the node useless: no
    /// devices, a socket or port that cannot be bound.
    pub async fn start(devices: Vec<Arc<dyn Backend>>, cfg: DaemonConfig) -> anyhow::Result<Daemon> {
        anyhow::ensure!(!devices.is_empty(), "no devices to advertise");
        anyhow::ensure!(
            cfg.device_plugin_dir.is_dir(),
            "device plugin directory {} does not exist (is the kubelet's device-plugins directory mounted?)",
            cfg.device_plugin_dir.display()
        );
        let infos: Vec<_> = devices.iter().map(|d| d.info()).collect();
        let (plans, shares) = plan(&infos, cfg.gpu_shares, cfg.cpu_shares);
        anyhow::ensure!(!plans.is_empty(), "--gpu-shares and --cpu-shares leave nothing to advertise");
        let per_device: Vec<u32> =
            infos.iter().map(|d| if d.kind == "gpu" { cfg.gpu_shares } else { cfg.cpu_shares }).collect();
        let executor = Executor::start(
            devices,
            ExecutorConfig {
                node: cfg.node_name.clone(),
                scheduler: cfg.scheduler.clone(),
                shares,
                health_interval: cfg.health_interval,
                accelerator_classes: Default::default(),
            },
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(PluginMetrics::default());
        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let until_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        // Device health by index, changed only when some device's health changes.
        let (health_tx, health_rx) =
            watch::channel(executor.status().devices.iter().map(|d| d.healthy).collect::<Vec<_>>());
        let mut status = executor.watch();
        tasks.push((
            "health",
            tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    let h: Vec<bool> = status.borrow().devices.iter().map(|d| d.healthy).collect();
                    health_tx.send_if_modified(|old| {
                        let changed = *old != h;
                        *old = h;
                        changed
                    });
                }
                Ok(())
            }),
        ));

        std::fs::create_dir_all(&cfg.socket_dir)?;
        // The node API, for processes of this node (owner-only; pods get share sockets).
        let socket = cfg.socket_dir.join(EXECUTOR_SOCKET);
        tasks.push(("executor-unix", {
            let (executor, rx) = (executor.clone(), stop_rx.clone());
            let socket = socket.clone();
            tokio::spawn(async move { Ok(service::serve_unix(executor, &socket, until_stop(rx)).await?) })
        }));
        // One socket per share, each in its own directory for Allocate to mount.
        let share_sockets: Vec<ShareSocket> = plans
            .iter()
            .flat_map(|p| {
                p.shares.iter().map(|s| ShareSocket {
                    share: s.id.clone(),
                    resource: p.resource.clone(),
                    path: cfg.socket_dir.join(SHARES_DIR).join(&s.id).join(SHARE_SOCKET),
                })
            })
            .collect();
        if let Some(bad) = share_sockets.iter().find(|s| !is_safe_share_id(&s.share)) {
            anyhow::bail!(
                "share ID {:?} is not usable as a directory name (a device ID with odd characters?)",
                bad.share
            );
        }
        if !cfg.pod_resources_socket.exists() {
            warn!(
                socket = %cfg.pod_resources_socket.display(),
                "the kubelet's PodResources socket is missing: pods' calls on share sockets fail (UNAVAILABLE) until it appears"
            );
        }
        tasks.push(("executor-shares", {
            let (executor, rx) = (executor.clone(), stop_rx.clone());
            let owners = Arc::new(PodResources { socket: cfg.pod_resources_socket.clone() });
            tokio::spawn(
                async move { Ok(serve_shares(executor, share_sockets, owners, until_stop(rx)).await?) },
            )
        }));
        let executor_addr = match cfg.executor_listen {
            Some(addr) => {
                let listener = service::bind(addr).await?;
                let bound = listener.local_addr()?;
                let (executor, rx) = (executor.clone(), stop_rx.clone());
                let tls = cfg.executor_tls.clone();
                tasks.push((
                    "executor-tcp",
                    tokio::spawn(async move {
                        Ok(service::serve_tcp(executor, listener, tls, until_stop(rx)).await?)
                    }),
                ));
                Some(bound)
            }
            None => None,
        };

        // A plugin that cannot serve makes the node useless to the kubelet: the binary exits
        // (and Kubernetes restarts it) rather than limp on.
        let (fail_tx, failures) = tokio::sync::mpsc::unbounded_channel();
        let mut registered = Vec::new();
        for p in &plans {
            let flag = Arc::new(AtomicBool::new(false));
            registered.push(flag.clone());
            let plugin = ResourcePlugin {
                plan: Arc::new(p.clone()),
                dir: cfg.device_plugin_dir.clone(),
                health: health_rx.clone(),
                mount: cfg.mount.clone(),
                metrics: metrics.clone(),
                registered: flag,
            };
            let (fail, rx) = (fail_tx.clone(), stop_rx.clone());
            tasks.push((
                "plugin",
                tokio::spawn(async move {
                    let r = plugin.run(rx).await;
                    if let Err(e) = &r {
                        let _ = fail.send(format!("{e:#}"));
                    }
                    r
                }),
            ));
        }

        if let Some(client) = cfg.kube.clone() {
            let endpoint = cfg
                .executor_endpoint
                .clone()
                .or_else(|| {
                    let scheme = if cfg.executor_tls.is_some() { "https" } else { "http" };
                    executor_addr.map(|a| format!("{scheme}://{a}"))
                })
                .unwrap_or_else(|| format!("unix://{}", socket.display()));
            let publisher = Publisher {
                client,
                facts: NodeFacts { node_name: cfg.node_name.clone(), endpoint, shares: per_device },
                interval: cfg.heartbeat,
                metrics: metrics.clone(),
            };
            let (status, rx) = (executor.watch(), stop_rx.clone());
            tasks.push((
                "publisher",
                tokio::spawn(async move {
                    publisher.run(status, rx).await;
                    Ok(())
                }),
            ));
        } else {
            info!("no Kubernetes API configured: KaasNode is not published");
        }

        let metrics_addr = match cfg.metrics_listen {
            Some(addr) => {
                let mut registry = Registry::default();
                executor.metrics().register(&mut registry);
                metrics.register(&mut registry);
                // Alive while the executor's actor and every task started above run.
                let liveness = Liveness::new();
                let ex = executor.clone();
                liveness.check("executor actor", move || ex.alive());
                for (name, task) in &tasks {
                    let task = task.abort_handle();
                    liveness.check(name, move || !task.is_finished());
                }
                let state = HttpState {
                    registry: Arc::new(registry),
                    registered: registered.clone(),
                    health: health_rx,
                    liveness,
                };
                let app = Router::new()
                    .route("/metrics", get(metrics_handler))
                    .route("/healthz", get(healthz))
                    .route("/readyz", get(ready))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let bound = listener.local_addr()?;
                let rx = stop_rx.clone();
                tasks.push((
                    "metrics",
                    tokio::spawn(async move {
                        Ok(axum::serve(listener, app).with_graceful_shutdown(until_stop(rx)).await?)
                    }),
                ));
                Some(bound)
            }
            None => None,
        };
        info!(
            node = %cfg.node_name,
            resources = ?plans.iter().map(|p| (&p.resource, p.shares.len())).collect::<Vec<_>>(),
            executor = ?executor_addr,
            socket = %socket.display(),
            "device plugin started"
        );
        Ok(Daemon {
            executor,
            plans,
            executor_addr,
            metrics_addr,
            metrics,
            registered,
            stop,
            tasks,
            failures,
        })
    }

    /// Resolves with the reason when a kubelet plugin stops serving on its own.
    pub async fn failed(&mut self) -> String {
        self.failures.recv().await.unwrap_or_else(|| "plugin tasks ended".into())
    }

    /// Whether every resource is registered with the kubelet.
    pub fn is_registered(&self) -> bool {
        self.registered.iter().all(|r| r.load(Ordering::Relaxed))
    }

    /// Stops serving, removes the sockets and waits for every task.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (name, task) in self.tasks {
            if name == "health" {
                task.abort();
                continue;
            }
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.context(name));
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} panicked: {e}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn metrics_handler(State(s): State<HttpState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 503 naming what has died (the executor's actor, a plugin or server task), else 200.
async fn healthz(State(s): State<HttpState>) -> Response {
    let (code, body) = s.liveness.report();
    (StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), body).into_response()
}

/// Ready when every resource is registered with the kubelet and some device is healthy.
async fn ready(State(s): State<HttpState>) -> Response {
    let registered = s.registered.iter().all(|r| r.load(Ordering::Relaxed));
    let healthy = s.health.borrow().iter().any(|h| *h);
    match (registered, healthy) {
        (true, true) => (StatusCode::OK, "ready").into_response(),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not registered with the kubelet").into_response(),
        (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "no healthy device").into_response(),
    }
}
