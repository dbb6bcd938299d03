//! The plugin's life with the kubelet: serve on its socket in the plugin directory, then
//! register at `kubelet.sock`; watch the directory and, when the kubelet restarts (it
//! removes plugin sockets and re-creates `kubelet.sock`), serve again and re-register.
//!
//! The directory is polled every [`POLL`]: cheap, works on every filesystem the kubelet
//! directory may live on, and keeps re-registration well within a second.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::metrics::{PluginMetrics, ResourceLabel};
use crate::plugin::{PluginService, SocketMount};
use crate::proto::{self, device_plugin_server::DevicePluginServer, registration_client::RegistrationClient};
use crate::shares::ResourcePlan;
use crate::{API_VERSION, KUBELET_SOCKET};

/// How often the plugin directory is checked.
pub const POLL: Duration = Duration::from_millis(100);
/// Limit of one registration call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC channel over a unix socket. The `:authority` is `localhost`, which is what
/// kubelets since 1.26 send and accept.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// Announces a plugin to the kubelet listening in `dir`.
pub async fn register(dir: &Path, plan: &ResourcePlan) -> anyhow::Result<()> {
    let channel = connect(&dir.join(KUBELET_SOCKET)).await?;
    let request = proto::RegisterRequest {
        version: API_VERSION.into(),
        endpoint: plan.socket_name.clone(),
        resource_name: plan.resource.clone(),
        options: Some(PluginService::options()),
    };
    tokio::time::timeout(REGISTER_TIMEOUT, RegistrationClient::new(channel).register(request))
        .await
        .map_err(|_| anyhow::anyhow!("kubelet did not answer Register within {REGISTER_TIMEOUT:?}"))??;
    Ok(())
}

/// Identity of a file: (device, inode), or `None` when it does not exist.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// One resource's plugin, kept served and registered until `shutdown` turns true.
pub struct ResourcePlugin {
    /// The resource and its shares.
    pub plan: Arc<ResourcePlan>,
    /// The kubelet's device-plugin directory.
    pub dir: PathBuf,
    /// Device health by executor device index.
    pub health: watch::Receiver<Vec<bool>>,
    /// The executor socket directory as mounted into pods.
    pub mount: SocketMount,
    /// Metrics.
    pub metrics: Arc<PluginMetrics>,
    /// Whether it is registered with the current kubelet (read by `/readyz`).
    pub registered: Arc<AtomicBool>,
}

impl ResourcePlugin {
    /// Serves and registers, again after every kubelet restart, until `shutdown`; the
    /// socket is removed on the way out.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let socket = self.dir.join(&self.plan.socket_name);
        let label = ResourceLabel::of(&self.plan.resource);
        self.metrics.shares.get_or_create(&label).set(self.plan.shares.len() as i64);
        let mut first = true;
        while !*shutdown.borrow() {
            if !first {
                self.metrics.restarts.get_or_create(&label).inc();
            }
            first = false;
            let _ = std::fs::remove_file(&socket);
            let listener = tokio::net::UnixListener::bind(&socket)
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?;
            let ours = identity(&socket);
            let (stop_tx, stop_rx) = watch::channel(false);
            let service = PluginService::new(
                self.plan.clone(),
                self.health.clone(),
                self.mount.clone(),
                self.metrics.clone(),
                stop_rx.clone(),
            );
            let mut stop_server = stop_rx.clone();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(DevicePluginServer::new(service))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                        let _ = stop_server.wait_for(|s| *s).await;
                    }),
            );
            info!(resource = %self.plan.resource, socket = %socket.display(), "serving");
            // Registered with the kubelet whose socket had this identity.
            let mut registered_with: Option<(u64, u64)> = None;
            let mut failures = 0u32;
            let mut next_attempt = tokio::time::Instant::now();
            loop {
                if *shutdown.borrow() {
                    break;
                }
                if identity(&socket) != ours {
                    warn!(resource = %self.plan.resource, "plugin socket removed (kubelet restart?): serving again");
                    break;
                }
                let kubelet = identity(&self.dir.join(KUBELET_SOCKET));
                if kubelet.is_none() {
                    registered_with = None;
                    self.registered.store(false, Ordering::Relaxed);
                } else if kubelet != registered_with && tokio::time::Instant::now() >= next_attempt {
                    match register(&self.dir, &self.plan).await {
                        Ok(()) => {
                            info!(resource = %self.plan.resource, "registered with the kubelet");
                            self.metrics.registrations.get_or_create(&label).inc();
                            self.registered.store(true, Ordering::Relaxed);
                            registered_with = kubelet;
                            failures = 0;
                        }
                        Err(e) => {
                            failures += 1;
                            self.metrics.registration_errors.get_or_create(&label).inc();
                            self.registered.store(false, Ordering::Relaxed);
                            // Quick retries first (the kubelet may still be starting), then back off.
                            let wait = POLL * 2u32.saturating_pow(failures.min(6));
                            warn!(resource = %self.plan.resource, error = %e, retry_in = ?wait, "registration failed");
                            next_attempt = tokio::time::Instant::now() + wait;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            self.registered.store(false, Ordering::Relaxed);
            let _ = stop_tx.send(true);
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(resource = %self.plan.resource, error = %e, "plugin server failed"),
                Err(e) => warn!(resource = %self.plan.resource, error = %e, "plugin server panicked"),
            }
            // Only our own socket: after a kubelet restart a new plugin may already own the path.
            if identity(&socket) == ours {
                let _ = std::fs::remove_file(&socket);
            }
        }
        info!(resource = %self.plan.resource, "stopped");
        Ok(())
    }
}
