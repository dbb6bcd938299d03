//! Prometheus metrics of the device plugin, registered next to the executor's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of per-resource metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    /// Extended resource name.
    pub resource: String,
}

impl ResourceLabel {
    /// The label of a resource.
    pub fn of(resource: &str) -> Self {
        ResourceLabel { resource: resource.to_string() }
    }
}

/// Counters and gauges of the device plugin.
#[derive(Default, Debug)]
pub struct PluginMetrics {
    /// Successful registrations with the kubelet.
    pub registrations: Family<ResourceLabel, Counter>,
    /// Failed registration attempts.
    pub registration_errors: Family<ResourceLabel, Counter>,
    /// Times the plugin served again because the kubelet restarted or removed its socket.
    pub restarts: Family<ResourceLabel, Counter>,
    /// Containers allocated shares.
    pub allocations: Family<ResourceLabel, Counter>,
    /// Shares currently advertised healthy.
    pub healthy_shares: Family<ResourceLabel, Gauge>,
    /// Shares advertised.
    pub shares: Family<ResourceLabel, Gauge>,
    /// `KaasNode` updates written.
    pub publishes: Counter,
    /// `KaasNode` updates that failed (API server unreachable, forbidden, ...).
    pub publish_errors: Counter,
}

impl PluginMetrics {
    /// Registers every metric under `kaas_device_plugin_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kaas_device_plugin");
        r.register("registrations", "Successful registrations with the kubelet", self.registrations.clone());
        r.register(
            "registration_errors",
            "Failed registration attempts with the kubelet",
            self.registration_errors.clone(),
        );
        r.register(
            "restarts",
            "Times the plugin served again after a kubelet restart",
            self.restarts.clone(),
        );
        r.register("allocations", "Containers allocated shares", self.allocations.clone());
        r.register("healthy_shares", "Shares advertised Healthy", self.healthy_shares.clone());
        r.register("shares", "Shares advertised", self.shares.clone());
        r.register("kaasnode_publishes", "KaasNode updates written", self.publishes.clone());
        r.register("kaasnode_publish_errors", "KaasNode updates that failed", self.publish_errors.clone());
    }
}
