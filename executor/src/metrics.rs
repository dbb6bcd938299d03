//! Prometheus metrics of the executor.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of an invocation outcome: `ok` or an error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Outcome.
    pub outcome: String,
}

/// Label naming a device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// Device ID.
    pub device: String,
}

/// Every metric the executor exports.
pub struct ExecutorMetrics {
    /// Invocations by outcome.
    pub invocations: Family<OutcomeLabel, Counter>,
    /// Device time of completed invocations.
    pub exec_seconds: Histogram,
    /// Time from arrival to first kernel.
    pub queue_seconds: Histogram,
    /// Time to make a function resident.
    pub load_seconds: Histogram,
    /// Invocations that found their function not resident.
    pub cold_starts: Counter,
    /// Resident-state lookups that hit.
    pub cache_hits: Counter,
    /// Resident-state lookups that missed.
    pub cache_misses: Counter,
    /// Functions evicted from a device.
    pub evictions: Counter,
    /// Bytes in use per device.
    pub memory_bytes: Family<DeviceLabel, Gauge>,
    /// Share of each deadline `deadline` admission keeps in reserve now (the configured
    /// headroom, or more where this node's predictions have run late).
    pub admission_headroom: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(1e-5, 2.0, 24));
        ExecutorMetrics {
            invocations: Family::default(),
            exec_seconds: seconds(),
            queue_seconds: seconds(),
            load_seconds: seconds(),
            cold_starts: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            evictions: Counter::default(),
            memory_bytes: Family::default(),
            admission_headroom: Gauge::default(),
        }
    }
}

impl ExecutorMetrics {
    /// Registers every metric under `kaas_executor_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kaas_executor");
        r.register("invocations", "Invocations answered, by outcome", self.invocations.clone());
        r.register("execution_seconds", "Device time of completed invocations", self.exec_seconds.clone());
        r.register("queue_seconds", "Time from arrival to the first kernel", self.queue_seconds.clone());
        r.register(
            "load_seconds",
            "Time to make a function resident (cold start)",
            self.load_seconds.clone(),
        );
        r.register(
            "cold_starts",
            "Invocations that found their function not resident",
            self.cold_starts.clone(),
        );
        r.register("cache_hits", "Resident-state lookups that hit", self.cache_hits.clone());
        r.register("cache_misses", "Resident-state lookups that missed", self.cache_misses.clone());
        r.register("cache_evictions", "Functions evicted from a device", self.evictions.clone());
        r.register("memory_in_use_bytes", "Device memory in use", self.memory_bytes.clone());
        r.register(
            "admission_headroom_ratio",
            "Share of each deadline deadline-admission keeps in reserve (learned from prediction errors)",
            self.admission_headroom.clone(),
        );
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.invocations.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    pub(crate) fn memory_in_use(&self, device: &str, bytes: u64) {
        self.memory_bytes.get_or_create(&DeviceLabel { device: device.to_string() }).set(bytes as i64);
    }
}
