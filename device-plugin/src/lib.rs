//! `kaas-device-plugin`: the node DaemonSet. It hosts the node's executor and speaks the
//! kubelet device plugin API (v1beta1) so pods can be scheduled onto shares of its devices:
//!
//! - [`shares`]: which shares a node advertises (`kaas.dev/gpu-share`,
//!   `kaas.dev/cpu-share`), their stable IDs, and how allocations are packed.
//! - [`plugin`]: the `DevicePlugin` gRPC service of one resource.
//! - [`kubelet`]: serving on the plugin socket, registering with the kubelet, and serving
//!   again when the kubelet restarts.
//! - [`podresources`]: which pod holds a share, from the kubelet's PodResources API; a
//!   pod's share socket is bound to that pod's namespace.
//! - [`publish`]: the node's `KaasNode` object, kept current through the Kubernetes API
//!   when it is reachable.
//! - [`daemon`]: all of it together, as the binary runs it.

pub mod daemon;
pub mod kubelet;
pub mod metrics;
pub mod plugin;
pub mod podresources;
pub mod publish;
pub mod shares;

/// Generated types of `proto/deviceplugin.proto` (kubelet device plugin API v1beta1).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("v1beta1");

    /// Generated types of `proto/podresources.proto` (the kubelet's PodResources API v1).
    pub mod podresources {
        tonic::include_proto!("v1");
    }
}

/// Version string of the kubelet API this plugin speaks.
pub const API_VERSION: &str = "v1beta1";
/// Socket of the kubelet's `Registration` service, inside the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
