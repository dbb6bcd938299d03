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

/// A function's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub function: String,
}

/// A function's labels and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionOutcome {
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub function: String,
    /// `ok` or a [`GatewayError`](super::GatewayError) reason.
    pub outcome: String,
}

/// A node's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The KaasNode's name.
    pub node: String,
}

type LatencyFamily = Family<FunctionLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(2e-5, 2.0, 24))
}

/// Gateway metrics.
pub struct GatewayMetrics {
    /// Whether the per-function families (labels `namespace`, `function`) are kept: off
    /// for clusters with so many functions that the series would be a burden.
    pub per_function: bool,
    /// Invocations answered per function and outcome.
    pub function_invocations: Family<FunctionOutcome, Counter>,
    /// Served invocations that met their deadline, per function.
    pub function_slo_met: Family<FunctionLabel, Counter>,
    /// Served invocations that paid a cold start, per function.
    pub function_cold_starts: Family<FunctionLabel, Counter>,
    /// End-to-end latency of served invocations, per function.
    pub function_latency_seconds: LatencyFamily,
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
    /// Seconds since each KaasNode's last heartbeat (cluster mode; a node deleted drops
    /// its series).
    pub node_heartbeat_age: Family<NodeLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            per_function: true,
            function_invocations: Family::default(),
            function_slo_met: Family::default(),
            function_cold_starts: Family::default(),
            function_latency_seconds: Family::new_with_constructor(latency_histogram),
            invocations: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(2e-5, 2.0, 24)),
            retries: Counter::default(),
            node_failures: Counter::default(),
            in_flight: Gauge::default(),
            healthy_devices: Gauge::default(),
            node_heartbeat_age: Family::default(),
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
        r.register(
            "node_heartbeat_age_seconds",
            "Seconds since each KaasNode's last heartbeat (cluster mode)",
            self.node_heartbeat_age.clone(),
        );
        if self.per_function {
            r.register(
                "function_invocations",
                "Invocations answered, by namespace, function and outcome",
                self.function_invocations.clone(),
            );
            r.register(
                "function_slo_met",
                "Served invocations that met their deadline, by function",
                self.function_slo_met.clone(),
            );
            r.register(
                "function_cold_starts",
                "Served invocations that paid a cold start, by function",
                self.function_cold_starts.clone(),
            );
            r.register(
                "function_latency_seconds",
                "End-to-end latency of served invocations, by function",
                self.function_latency_seconds.clone(),
            );
        }
    }

    /// A gateway's metrics without the per-function families.
    pub fn without_function_labels() -> Self {
        GatewayMetrics { per_function: false, ..GatewayMetrics::default() }
    }

    /// Records one answered invocation of `key` (`namespace/name`).
    pub(crate) fn answered(&self, key: &str, outcome: &str, served: Option<(f64, bool, bool)>) {
        self.outcome(outcome);
        if let Some((latency, _, _)) = served {
            self.latency_seconds.observe(latency);
        }
        if !self.per_function {
            return;
        }
        let (namespace, function) = key.split_once('/').unwrap_or(("", key));
        let label = FunctionLabel { namespace: namespace.into(), function: function.into() };
        self.function_invocations
            .get_or_create(&FunctionOutcome {
                namespace: label.namespace.clone(),
                function: label.function.clone(),
                outcome: outcome.into(),
            })
            .inc();
        if let Some((latency, in_time, cold)) = served {
            self.function_latency_seconds.get_or_create(&label).observe(latency);
            if in_time {
                self.function_slo_met.get_or_create(&label).inc();
            }
            if cold {
                self.function_cold_starts.get_or_create(&label).inc();
            }
        }
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.invocations.get_or_create(&Outcome { outcome: outcome.to_string() }).inc();
    }
}
