//! The scheduling core of kaas.
//!
//! Sans-IO and deterministic: no clock, no threads, no sockets. Time is an argument and
//! decisions come out, so the same code decides in the simulator, the gateway and the
//! executor. The [`Scheduler`] holds the cluster, the function table, the resident-state
//! caches and the active [`policy`]; callers [`submit`](Scheduler::submit) requests,
//! pull [`Dispatch`]es with [`next_dispatch`](Scheduler::next_dispatch) and report
//! [`complete`](Scheduler::complete)ions. [`metrics`] turns outcomes into the report
//! every component prints.

pub mod admission;
pub mod cache;
pub mod devset;
mod engine;
pub mod estimate;
pub mod margin;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod route;
pub mod sketch;
mod view;

pub use admission::{AdmissionMode, Rejection};
pub use cache::Eviction;
pub use engine::{Completed, Dispatch, Dropped, Lost, Prediction, Scheduler};
pub use model::{
    AcceleratorClass, ClassId, Cluster, Device, DeviceId, DeviceKind, Function, FunctionId, MS, Nanos,
    Request, SEC, ms, to_ms,
};
pub use policy::{POLICY_NAMES, PolicyConfig, Registry};

use serde::{Deserialize, Serialize};

/// Handle of a request inside a [`Scheduler`]: a slot and a generation, so a stale
/// handle never names a newer request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

impl ReqId {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        ReqId(((generation as u64) << 32) | index as u64)
    }
    /// The slot this request occupies: unique among live requests and below the
    /// largest number of requests alive at once, so callers can keep side tables in a Vec.
    pub fn slot(self) -> usize {
        self.index()
    }
    pub(crate) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// What a device is held for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// A request holds its device slot from its first kernel to its last.
    Request,
    /// Kernels of different requests interleave on a device at kernel boundaries.
    #[default]
    Kernel,
}

impl Granularity {
    /// Names accepted in configuration.
    pub const NAMES: [&'static str; 2] = ["request", "kernel"];

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        match name {
            "request" => Ok(Granularity::Request),
            "kernel" => Ok(Granularity::Kernel),
            other => Err(ConfigError::UnknownName {
                what: "granularity",
                name: other.to_string(),
                valid: Self::NAMES.join(", "),
            }),
        }
    }
}

/// How tenants (namespaces) share a device. Not a scheduling decision: it travels with the
/// configuration because the cluster's `SchedulingPolicy` carries it to every executor,
/// which applies it to device memory and contexts; the scheduler core ignores it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Each namespace gets its own CUDA context per device, and `Const` buffers are shared
    /// (deduplicated) only within a namespace.
    #[default]
    Namespace,
    /// One CUDA context per device for everyone, `Const` buffers deduplicated across
    /// namespaces: for mutually trusting tenants only.
    Shared,
}

impl Isolation {
    /// Names accepted in configuration.
    pub const NAMES: [&'static str; 2] = ["namespace", "shared"];

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        match name {
            "namespace" => Ok(Isolation::Namespace),
            "shared" => Ok(Isolation::Shared),
            other => Err(ConfigError::UnknownName {
                what: "isolation",
                name: other.to_string(),
                valid: Self::NAMES.join(", "),
            }),
        }
    }

    /// The scope a function of `namespace` shares device state in: its namespace, or
    /// the empty scope everyone shares.
    pub fn scope<'a>(&self, namespace: &'a str) -> &'a str {
        match self {
            Isolation::Namespace => namespace,
            Isolation::Shared => "",
        }
    }
}

/// Everything that configures a [`Scheduler`] besides the cluster and functions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// The policy and its parameters.
    pub policy: PolicyConfig,
    /// Admission control.
    #[serde(default)]
    pub admission: AdmissionMode,
    /// Token-bucket burst, in requests.
    #[serde(default = "default_burst")]
    pub token_bucket_burst: f64,
    /// `deadline` admission keeps this share of each request's relative deadline free
    /// for the variance of service times it cannot predict: it admits only if the
    /// predicted completion is at most `arrival + (1 - headroom) × deadline`.
    #[serde(default = "default_headroom")]
    pub deadline_headroom: f64,
    /// Cache eviction.
    #[serde(default)]
    pub eviction: Eviction,
    /// Kernel or request granularity.
    #[serde(default)]
    pub granularity: Granularity,
    /// Tenant isolation on devices (applied by executors, see [`Isolation`]).
    #[serde(default)]
    pub isolation: Isolation,
}

fn default_burst() -> f64 {
    10.0
}

fn default_headroom() -> f64 {
    0.1
}

impl SchedulerConfig {
    /// A configuration with the named policy and defaults otherwise.
    pub fn new(policy: PolicyConfig) -> Self {
        SchedulerConfig {
            policy,
            admission: AdmissionMode::None,
            token_bucket_burst: default_burst(),
            deadline_headroom: default_headroom(),
            eviction: Eviction::Gdsf,
            granularity: Granularity::Kernel,
            isolation: Isolation::Namespace,
        }
    }
}

/// A configuration error, listing what would have been valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A name that is not one of the valid ones.
    #[error("unknown {what} `{name}`; valid: {valid}")]
    UnknownName {
        /// What was being named.
        what: &'static str,
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A parameter a policy does not take, or a bad value for one.
    #[error("policy `{policy}`: bad parameter `{param}`: {reason}")]
    BadParameter {
        /// Policy name.
        policy: String,
        /// Parameter name.
        param: String,
        /// What is wrong, with the valid parameters.
        reason: String,
    },
    /// A cluster or function the scheduler cannot work with.
    #[error("invalid model: {0}")]
    Model(String),
}
