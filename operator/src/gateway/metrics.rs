//! Prometheus metrics of the gateway.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome label: `ok` or a [`GatewayError`](super::GatewayError) reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// Outcome.
    pub outcome: String,
}

/// Gateway metrics.
pub struct GatewayMetrics {
    /// Invocations answered by outcome.
    pub invocations: Family<Outcome, Counter>,
    /// End-to-end latency of served invocations.
    pub latency_seconds: Histogram,
    /// Requests retried on another node after theirs failed.
    pub retries: Counter,
    /// Node failures seen.
    pub node_failures: Counter,
    /// Requests sent to executors and not answered yet (the gateway does not queue).
    pub in_flight: Gauge,
    /// Healthy devices across nodes.
    pub healthy_devices: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            invocations: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(2e-5, 2.0, 24)),
            retries: Counter::default(),
            node_failures: Counter::default(),
            in_flight: Gauge::default(),
            healthy_devices: Gauge::default(),
        }
    }
}

impl GatewayMetrics {
    /// Registers every metric under `kaas_gateway_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kaas_gateway");
        r.register("invocations", "Invocations answered, by outcome", self.invocations.clone());
        r.register(
            "latency_seconds",
            "End-to-end latency of served invocations",
            self.latency_seconds.clone(),
        );
        r.register("retries", "Requests retried on another node", self.retries.clone());
        r.register("node_failures", "Node executor failures seen", self.node_failures.clone());
        r.register(
            "in_flight_requests",
            "Requests sent to executors and not answered yet",
            self.in_flight.clone(),
        );
        r.register("healthy_devices", "Healthy devices across nodes", self.healthy_devices.clone());
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.invocations.get_or_create(&Outcome { outcome: outcome.to_string() }).inc();
    }
}
