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

/// Label of an admission rejection: `deadline`, `warming`, `rate-limited`,
/// `no-capacity`, `policy` or `unknown-function`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason.
    pub reason: String,
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
    /// Requests the node's scheduler turned away, by reason.
    pub rejections: Family<ReasonLabel, Counter>,
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
    /// Invocations run on the scheduler thread (microsecond kernels).
    pub inline_runs: Counter,
    /// Of those tried there, the ones stopped at the budget and rerun on a blocking thread.
    pub inline_overruns: Counter,
    /// Functions evicted from a device.
    pub evictions: Counter,
    /// Bytes in use per device.
    pub memory_bytes: Family<DeviceLabel, Gauge>,
    /// Bytes per device the executor manages.
    pub memory_capacity: Family<DeviceLabel, Gauge>,
    /// Slot time spent running invocations (cold starts included), per device.
    pub busy_seconds: Family<DeviceLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Invocation slots per device.
    pub slots: Family<DeviceLabel, Gauge>,
    /// 1 while a device is healthy, 0 while it is not.
    pub healthy: Family<DeviceLabel, Gauge>,
    /// Admitted requests waiting for a slot.
    pub queued: Gauge,
    /// Share of each deadline `deadline` admission keeps in reserve now (the configured
    /// headroom, or more where this node's predictions have run late).
    pub admission_headroom: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(1e-5, 2.0, 24));
        ExecutorMetrics {
            invocations: Family::default(),
            rejections: Family::default(),
            exec_seconds: seconds(),
            queue_seconds: seconds(),
            load_seconds: seconds(),
            cold_starts: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            inline_runs: Counter::default(),
            inline_overruns: Counter::default(),
            evictions: Counter::default(),
            memory_bytes: Family::default(),
            memory_capacity: Family::default(),
            busy_seconds: Family::default(),
            slots: Family::default(),
            healthy: Family::default(),
            queued: Gauge::default(),
            admission_headroom: Gauge::default(),
        }
    }
}

impl ExecutorMetrics {
    /// Registers every metric under `kaas_executor_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kaas_executor");
        r.register("invocations", "Invocations answered, by outcome", self.invocations.clone());
        r.register(
            "rejections",
            "Requests the node's scheduler turned away, by reason (deadline, warming, rate-limited, no-capacity, policy)",
            self.rejections.clone(),
        );
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
        r.register(
            "inline_runs",
            "Invocations of microsecond kernels run on the scheduler thread, without a blocking-pool hand-off",
            self.inline_runs.clone(),
        );
        r.register(
            "inline_overruns",
            "Invocations tried on the scheduler thread, stopped at its 2 ms budget and rerun on a blocking thread",
            self.inline_overruns.clone(),
        );
        r.register("cache_evictions", "Functions evicted from a device", self.evictions.clone());
        r.register("memory_in_use_bytes", "Device memory in use", self.memory_bytes.clone());
        r.register(
            "memory_capacity_bytes",
            "Device memory the executor manages",
            self.memory_capacity.clone(),
        );
        r.register(
            "device_busy_seconds",
            "Slot time spent running invocations (cold starts included), per device; over slots and time it is the utilisation",
            self.busy_seconds.clone(),
        );
        r.register("device_slots", "Invocation slots per device", self.slots.clone());
        r.register(
            "device_healthy",
            "1 while the device is healthy, 0 while it is not",
            self.healthy.clone(),
        );
        r.register("queued_requests", "Admitted requests waiting for a slot", self.queued.clone());
        r.register(
            "admission_headroom_ratio",
            "Share of each deadline deadline-admission keeps in reserve (learned from prediction errors)",
            self.admission_headroom.clone(),
        );
    }

    pub(crate) fn rejected(&self, reason: &str) {
        self.rejections.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.invocations.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    /// What the executor publishes about one device.
    pub(crate) fn device(&self, device: &str, used: u64, capacity: u64, slots: u32, healthy: bool) {
        let label = DeviceLabel { device: device.to_string() };
        self.memory_bytes.get_or_create(&label).set(used as i64);
        self.memory_capacity.get_or_create(&label).set(capacity as i64);
        self.slots.get_or_create(&label).set(slots as i64);
        self.healthy.get_or_create(&label).set(healthy as i64);
    }

    /// Slot time a device spent on one step of an invocation or a load.
    pub(crate) fn busy(&self, device: &str, seconds: f64) {
        self.busy_seconds.get_or_create(&DeviceLabel { device: device.to_string() }).inc_by(seconds);
    }
}
