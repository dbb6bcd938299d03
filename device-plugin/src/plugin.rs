//! The kubelet-facing `DevicePlugin` service of one extended resource.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::metrics::{PluginMetrics, ResourceLabel};
use crate::proto::{self, device_plugin_server::DevicePlugin};
use crate::shares::{ResourcePlan, pack};

/// Device health strings of the API.
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// Env var naming the socket of the container's first share, inside the container.
pub const ENV_SOCKET: &str = "KAAS_EXECUTOR_SOCKET";
/// Env var listing the container's share IDs, comma separated.
pub const ENV_SHARES: &str = "KAAS_SHARE_IDS";
/// File name of the executor's node API socket in the socket directory (owner-only; never
/// mounted into pods).
pub const EXECUTOR_SOCKET: &str = "executor.sock";
/// Subdirectory of the socket directory holding one directory per share.
pub const SHARES_DIR: &str = "shares";

/// Where the executor socket directory is, seen from the host and from pods.
#[derive(Clone, Debug)]
pub struct SocketMount {
    /// Directory on the host; the kubelet mounts a share's own directory under it
    /// (`shares/<id>/`) into the container, never the whole of it.
    pub host_dir: PathBuf,
    /// Where share directories appear inside containers: `<pod_dir>/<id>/executor.sock`.
    pub pod_dir: PathBuf,
}

impl SocketMount {
    /// A share's directory as the host sees it.
    pub fn host_share_dir(&self, share: &str) -> PathBuf {
        self.host_dir.join(SHARES_DIR).join(share)
    }

    /// A share's directory inside a container.
    pub fn pod_share_dir(&self, share: &str) -> PathBuf {
        self.pod_dir.join(share)
    }
}

/// `DevicePlugin` of one resource. Health per device comes from the executor's status.
pub struct PluginService {
    plan: Arc<ResourcePlan>,
    health: watch::Receiver<Vec<bool>>,
    mount: SocketMount,
    metrics: Arc<PluginMetrics>,
    stop: watch::Receiver<bool>,
}

impl PluginService {
    /// A service for `plan`; `health[i]` is whether executor device `i` is healthy;
    /// `stop` turning true ends open `ListAndWatch` streams (so the server can shut down).
    pub fn new(
        plan: Arc<ResourcePlan>,
        health: watch::Receiver<Vec<bool>>,
        mount: SocketMount,
        metrics: Arc<PluginMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        PluginService { plan, health, mount, metrics, stop }
    }

    /// The plugin's options: no pre-start hook, preferred allocations available.
    pub fn options() -> proto::DevicePluginOptions {
        proto::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
    }
}

/// The device list as the kubelet sees it for a health vector.
pub fn device_list(plan: &ResourcePlan, health: &[bool]) -> proto::ListAndWatchResponse {
    proto::ListAndWatchResponse {
        devices: plan
            .shares
            .iter()
            .map(|s| proto::Device {
                id: s.id.clone(),
                health: if health.get(s.device).copied().unwrap_or(false) { HEALTHY } else { UNHEALTHY }
                    .into(),
                topology: None,
            })
            .collect(),
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<proto::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::DevicePluginOptions>, Status> {
        Ok(Response::new(Self::options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<proto::Empty>) -> Result<Response<DeviceStream>, Status> {
        let plan = self.plan.clone();
        let metrics = self.metrics.clone();
        let mut stop = self.stop.clone();
        let label = ResourceLabel::of(&plan.resource);
        // The current list first, then a new one on every change of device health.
        let stream = WatchStream::new(self.health.clone())
            .map(move |health| {
                let list = device_list(&plan, &health);
                let healthy = list.devices.iter().filter(|d| d.health == HEALTHY).count();
                metrics.healthy_shares.get_or_create(&label).set(healthy as i64);
                info!(resource = %plan.resource, healthy, total = list.devices.len(), "ListAndWatch update");
                Ok(list)
            })
            .take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<proto::PreferredAllocationRequest>,
    ) -> Result<Response<proto::PreferredAllocationResponse>, Status> {
        let mut out = Vec::new();
        for c in request.into_inner().container_requests {
            let size = usize::try_from(c.allocation_size)
                .map_err(|_| Status::invalid_argument("allocation_size must not be negative"))?;
            let ids = pack(&self.plan, &c.available_device_i_ds, &c.must_include_device_i_ds, size)
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.plan.resource)))?;
            out.push(proto::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(proto::PreferredAllocationResponse { container_responses: out }))
    }

    async fn allocate(
        &self,
        request: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        let mut out = Vec::new();
        for c in request.into_inner().container_requests {
            if c.devices_ids.is_empty() {
                return Err(Status::invalid_argument("a container request without device IDs"));
            }
            if let Some(bad) = c.devices_ids.iter().find(|id| self.plan.get(id).is_none()) {
                warn!(resource = %self.plan.resource, id = %bad, "Allocate of an unknown share");
                return Err(Status::invalid_argument(format!(
                    "{bad:?} is not a {} share of this node",
                    self.plan.resource
                )));
            }
            // Each share's own directory, holding only its socket: a pod reaches the
            // executor through the shares it was allocated and nothing else.
            let first = self.mount.pod_share_dir(&c.devices_ids[0]).join(kaas_executor::share::SHARE_SOCKET);
            let envs = [
                (ENV_SOCKET.to_string(), first.display().to_string()),
                (ENV_SHARES.to_string(), c.devices_ids.join(",")),
            ]
            .into();
            // Read-write: connecting to a unix socket needs write permission on it.
            let mounts = c
                .devices_ids
                .iter()
                .map(|id| proto::Mount {
                    container_path: self.mount.pod_share_dir(id).display().to_string(),
                    host_path: self.mount.host_share_dir(id).display().to_string(),
                    read_only: false,
                })
                .collect();
            info!(resource = %self.plan.resource, shares = ?c.devices_ids, "Allocate");
            self.metrics.allocations.get_or_create(&ResourceLabel::of(&self.plan.resource)).inc();
            out.push(proto::ContainerAllocateResponse { envs, mounts, ..Default::default() });
        }
        Ok(Response::new(proto::AllocateResponse { container_responses: out }))
    }

    async fn pre_start_container(
        &self,
        _: Request<proto::PreStartContainerRequest>,
    ) -> Result<Response<proto::PreStartContainerResponse>, Status> {
        // Nothing to prepare: the executor is already running and owns the devices.
        Ok(Response::new(proto::PreStartContainerResponse {}))
    }
}
