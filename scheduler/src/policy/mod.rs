//! Scheduling policies: the one trait every policy implements, the context it decides
//! in, and the registry that builds policies by name from configuration.
//!
//! # Writing a policy
//!
//! A policy owns the queue of waiting requests. The engine tells it about arrivals
//! ([`Policy::enqueue`]) and asks what to run next ([`Policy::peek`], then
//! [`Policy::commit`] for the pick it takes). [`Cx`] answers the questions a policy asks
//! about the cluster: which devices are free, where a function is warm, whether it fits.
//!
//! ```
//! use std::collections::VecDeque;
//! use kaas_scheduler::policy::{Cx, Pick, Policy, Queued, Rank, Registry};
//!
//! /// Last in, first out: the newest request runs first, on the lowest free device.
//! #[derive(Default)]
//! struct Lifo(VecDeque<Queued>);
//!
//! impl Policy for Lifo {
//!     fn name(&self) -> &str { "lifo" }
//!     fn enqueue(&mut self, _cx: &Cx, req: Queued) { self.0.push_back(req) }
//!     fn peek(&mut self, cx: &Cx) -> Option<Pick> {
//!         while self.0.back().is_some_and(|r| !cx.is_live(r)) { self.0.pop_back(); }
//!         let req = *self.0.back()?;
//!         cx.first_free_fitting(req.function).map(|device| Pick::Run { req, device, flush: false })
//!     }
//!     fn commit(&mut self, _cx: &Cx, _pick: &Pick) { self.0.pop_back(); }
//!     fn rank(&self, _cx: &Cx, req: &Queued) -> Rank { Rank::new(0, u64::MAX - req.arrival, req.seq) }
//!     fn len(&self) -> usize { self.0.len() }
//!     fn drain(&mut self) -> Vec<Queued> { self.0.drain(..).collect() }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register("lifo", &[], |_params| Ok(Box::new(Lifo::default())));
//! assert!(registry.names().contains(&"lifo".to_string()));
//! ```

mod balance;
mod built;
mod cfs_affinity;
mod edf;
mod exclusive;
mod flows;
mod mqfq;
mod slo_aware;
mod static_partition;

pub use balance::Balance;
pub use built::BuiltPolicy;
pub use cfs_affinity::CfsAffinity;
pub use edf::Edf;
pub use exclusive::Exclusive;
pub use mqfq::MqfqSticky;
pub use slo_aware::SloAware;
pub use static_partition::StaticPartition;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::devset::DeviceSet;
use crate::model::{DeviceId, FunctionId, Nanos};
pub use crate::view::Cx;
use crate::{ConfigError, ReqId};

/// A waiting request as policies see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Handle of the request.
    pub id: ReqId,
    /// Its function.
    pub function: FunctionId,
    /// Arrival time.
    pub arrival: Nanos,
    /// Absolute deadline.
    pub deadline: Nanos,
    /// Priority of its function (higher first where honoured).
    pub priority: i32,
    /// Arrival order, unique: the final tie-break everywhere.
    pub seq: u64,
    /// Let through by `deadline` admission to measure a function its model says cannot
    /// meet the deadline: a policy runs it like any other and never sheds it as hopeless,
    /// or the model could never be corrected.
    pub probe: bool,
}

/// Order of work on a device: lower runs first. Compared between a request a policy
/// offers and the next kernel of a request already running on that device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(i64, u64, u64);

impl Rank {
    /// Ranks by priority (higher first), then `key` (lower first), then `seq`.
    pub fn new(priority: i32, key: u64, seq: u64) -> Self {
        Rank(-(priority as i64), key, seq)
    }
}

/// A policy's decision.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Start `req` on `device`. `flush` evicts the device's unpinned state first (a
    /// dedicated worker changing hands).
    Run {
        /// The request.
        req: Queued,
        /// The device.
        device: DeviceId,
        /// Whether to flush the device's cache first.
        flush: bool,
    },
    /// Answer `req` with an error without running it: it can no longer meet its deadline.
    Drop {
        /// The request.
        req: Queued,
    },
}

impl Pick {
    /// The request the pick is about.
    pub fn req(&self) -> &Queued {
        match self {
            Pick::Run { req, .. } | Pick::Drop { req } => req,
        }
    }
}

/// Removes the request with `id` from a FIFO queue, checking the front first (where
/// picks almost always are).
pub(crate) fn remove_id(queue: &mut std::collections::VecDeque<Queued>, id: crate::ReqId) {
    if queue.front().is_some_and(|r| r.id == id) {
        queue.pop_front();
    } else if let Some(i) = queue.iter().position(|r| r.id == id) {
        queue.remove(i);
    }
}

/// Which queued work runs before a new request under a policy: what `deadline`
/// admission counts when it predicts the request's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ahead {
    /// Everything queued (FIFO order, and the conservative default for policies that do
    /// not say).
    All,
    /// Queued work with an earlier deadline (EDF order).
    EarlierDeadline,
    /// The function's own queued work, scaled by its share of the backlogged flows'
    /// weights (fair queueing), but never more than everything queued.
    FlowShare,
    /// The function's own queued work only (a flow that has devices to itself).
    Flow,
}

/// What a policy tells admission about a request of one function.
#[derive(Clone, Debug)]
pub struct AdmissionScope {
    /// The work that runs first.
    pub ahead: Ahead,
    /// The devices the request may run on, when narrower than every device that can run
    /// the function (a partition, owned workers).
    pub devices: Option<DeviceSet>,
    /// Whether the policy picks the class per request: the cheapest (price per slot ×
    /// its time on the slot) whose completion meets the deadline, else the one that
    /// finishes first (else the prediction takes the class of the slot that frees first).
    pub class_aware: bool,
    /// Whether the engine may load the function onto an idle device of any class ahead
    /// of need while scaling out from zero (see `engine::warmup`): not where a device
    /// belongs to one function at a time.
    pub replicate: bool,
    /// Whether the function holds no device of its own and takes one to run: when its
    /// prediction misses the deadline but a warm run would not, the engine queues a load
    /// in the policy's own order, which claims a device for the function as its requests
    /// would (see `engine::warmup`), rather than loading it where the policy would not
    /// run it.
    pub claim: bool,
    /// Which of the policy's [`admission_zones`](Policy::admission_zones) `devices` is,
    /// when it is exactly one of them.
    pub zone: Option<u32>,
}

impl AdmissionScope {
    /// Everything queued runs first, on any device that can run the function, and the
    /// request may land on its slowest class: never optimistic about a policy it does
    /// not know.
    pub fn conservative() -> Self {
        AdmissionScope {
            ahead: Ahead::All,
            devices: None,
            class_aware: false,
            replicate: true,
            claim: false,
            zone: None,
        }
    }

    /// A scope with `ahead` over every device that can run the function.
    pub fn with(ahead: Ahead) -> Self {
        AdmissionScope { ahead, devices: None, class_aware: false, replicate: true, claim: false, zone: None }
    }
}

/// A scheduling policy. See the [module documentation](self) for an example.
pub trait Policy: Send {
    /// Its configuration name.
    fn name(&self) -> &str;
    /// A request arrived (after admission).
    fn enqueue(&mut self, cx: &Cx, req: Queued);
    /// The next decision, without taking it. Must return the same pick until the state
    /// changes; may drop cancelled entries ([`Cx::is_live`]) on the way.
    fn peek(&mut self, cx: &Cx) -> Option<Pick>;
    /// Takes the pick [`peek`](Self::peek) returned.
    fn commit(&mut self, cx: &Cx, pick: &Pick);
    /// Where `req` stands in this policy's order; used to interleave kernels of requests
    /// already running with new ones.
    fn rank(&self, cx: &Cx, req: &Queued) -> Rank;
    /// Waiting requests (cancelled ones may still be counted until met).
    fn len(&self) -> usize;
    /// Whether the queue is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device [`peek`](Self::peek) would pick for a request of function `f` if it were
    /// queued alone, when the policy can say so from the function alone, without queueing
    /// it and without changing its own state; `None` (the default) queues it as usual.
    /// Asked only when no other live request and no kernel waits; the engine then starts
    /// the request on that device without `enqueue`, `peek` and `commit`, or queues it if
    /// anything changes before it is dispatched.
    fn place_alone(&self, _cx: &Cx, _f: FunctionId) -> Option<DeviceId> {
        None
    }
    /// What admission should count ahead of a new request of `f`, and where it may run.
    /// The default is [`AdmissionScope::conservative`].
    fn admission_scope(&self, _cx: &Cx, _f: FunctionId) -> AdmissionScope {
        AdmissionScope::conservative()
    }
    /// Fixed, disjoint device sets that [`AdmissionScope::zone`] names by index (the
    /// partitions of a layout that does not change): the engine keeps each one's free and
    /// busy slots up to date as work starts and ends, so predicting over a partition of
    /// hundreds of devices reads a few counters instead of every device. Asked whenever
    /// admission's state is rebuilt (admission or policy changed); none by default.
    fn admission_zones(&self, _cx: &Cx) -> Vec<DeviceSet> {
        Vec::new()
    }
    /// Whether any [`admission_scope`](Self::admission_scope) may count
    /// [`Ahead::EarlierDeadline`]: only then does the engine keep queued and arriving work
    /// by deadline for admission (a scope that counts it anyway gets everything queued).
    fn orders_by_deadline(&self) -> bool {
        true
    }
    /// Whether the policy is one of the design's, whose [`admission_scope`](Self::admission_scope)
    /// describes its order exactly (a custom policy's prediction also takes its slowest class).
    fn exact_scope(&self) -> bool {
        false
    }
    /// Why the policy can never run `f`, if so (checked at arrival).
    fn refuse(&self, _cx: &Cx, _f: FunctionId) -> Option<String> {
        None
    }
    /// How long a function's state stays protected from eviction after a run.
    fn keep_alive(&self) -> Nanos {
        0
    }
    /// Whether the policy never leaves a device idle while a request that fits it waits.
    fn work_conserving(&self) -> bool {
        false
    }
    /// Every waiting request, in no particular order (used when switching policy live).
    fn drain(&mut self) -> Vec<Queued>;
}

/// A policy parameter value from configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A number.
    Number(f64),
    /// A `function → devices` partition (for `static`).
    Partitions(Vec<PartitionEntry>),
}

/// Devices reserved for one function under `static`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Function name.
    pub function: String,
    /// Device count.
    pub devices: u32,
}

/// A policy by name with its parameters, as written in configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// One of [`Registry::names`].
    pub name: String,
    /// Parameters in camelCase, as in the `SchedulingPolicy` resource.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
}

impl PolicyConfig {
    /// A policy with default parameters.
    pub fn named(name: &str) -> Self {
        PolicyConfig { name: name.to_string(), params: BTreeMap::new() }
    }

    /// Adds a numeric parameter.
    pub fn with(mut self, key: &str, value: f64) -> Self {
        self.params.insert(key.to_string(), ParamValue::Number(value));
        self
    }
}

/// Parameters handed to a policy constructor, with typed getters that produce errors
/// naming the parameter.
pub struct Params<'a> {
    policy: &'a str,
    map: &'a BTreeMap<String, ParamValue>,
}

impl Params<'_> {
    /// A non-negative number, or `default` when absent.
    pub fn number(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(ParamValue::Number(v)) if v.is_finite() && *v >= 0.0 => Ok(*v),
            Some(other) => Err(ConfigError::BadParameter {
                policy: self.policy.to_string(),
                param: key.to_string(),
                reason: format!("expected a non-negative number, got {other:?}"),
            }),
        }
    }

    /// A partition list, or empty when absent.
    pub fn partitions(&self, key: &str) -> Result<Vec<PartitionEntry>, ConfigError> {
        match self.map.get(key) {
            None => Ok(Vec::new()),
            Some(ParamValue::Partitions(p)) => Ok(p.clone()),
            Some(other) => Err(ConfigError::BadParameter {
                policy: self.policy.to_string(),
                param: key.to_string(),
                reason: format!("expected a list of {{function, devices}}, got {other:?}"),
            }),
        }
    }
}

type Constructor = Box<dyn Fn(&Params) -> Result<BuiltPolicy, ConfigError> + Send + Sync>;

struct Entry {
    params: Vec<&'static str>,
    build: Constructor,
}

/// Builds policies by name. [`Registry::builtin`] holds the policies of the design;
/// users add their own with [`Registry::register`].
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    order: Vec<String>,
}

/// Names of the built-in policies, in the order reports list them.
pub const POLICY_NAMES: [&str; 7] =
    ["balance", "exclusive", "static", "cfs-affinity", "edf", "slo-aware", "mqfq-sticky"];

impl Registry {
    /// The built-in policies.
    pub fn builtin() -> Self {
        let mut r = Registry { entries: BTreeMap::new(), order: Vec::new() };
        r.builtin_entry("balance", &[], |_| Ok(BuiltPolicy::Balance(Balance::default())));
        r.builtin_entry("exclusive", &[], |_| Ok(BuiltPolicy::Exclusive(Exclusive::default())));
        r.builtin_entry("static", &["partitions"], |p| {
            let parts = p.partitions("partitions")?;
            if parts.is_empty() {
                return Err(ConfigError::BadParameter {
                    policy: "static".into(),
                    param: "partitions".into(),
                    reason: "static needs at least one {function, devices} partition".into(),
                });
            }
            Ok(BuiltPolicy::Static(StaticPartition::new(parts)))
        });
        r.builtin_entry("cfs-affinity", &["affinityPenalty"], |p| {
            Ok(BuiltPolicy::CfsAffinity(CfsAffinity::new(p.number("affinityPenalty", 10.0)?)))
        });
        r.builtin_entry("edf", &[], |_| Ok(BuiltPolicy::Edf(Edf::default())));
        r.builtin_entry("slo-aware", &[], |_| Ok(BuiltPolicy::SloAware(SloAware::default())));
        r.builtin_entry("mqfq-sticky", &["throttleMs", "keepAliveMs"], |p| {
            Ok(BuiltPolicy::MqfqSticky(MqfqSticky::new(
                crate::model::ms(p.number("throttleMs", 50.0)?),
                crate::model::ms(p.number("keepAliveMs", 10_000.0)?),
            )))
        });
        r
    }

    /// Adds (or replaces) a policy under `name`, accepting the parameters `params`.
    pub fn register(
        &mut self,
        name: &str,
        params: &[&'static str],
        build: impl Fn(&Params) -> Result<Box<dyn Policy>, ConfigError> + Send + Sync + 'static,
    ) {
        self.builtin_entry(name, params, move |p| build(p).map(BuiltPolicy::Custom));
    }

    fn builtin_entry(
        &mut self,
        name: &str,
        params: &[&'static str],
        build: impl Fn(&Params) -> Result<BuiltPolicy, ConfigError> + Send + Sync + 'static,
    ) {
        if !self.entries.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.entries.insert(name.to_string(), Entry { params: params.to_vec(), build: Box::new(build) });
    }

    /// Registered names, built-ins first in design order.
    pub fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    /// Parameters a policy accepts.
    pub fn params_of(&self, name: &str) -> Option<&[&'static str]> {
        self.entries.get(name).map(|e| e.params.as_slice())
    }

    /// Builds the policy a configuration names. Unknown names and parameters are errors
    /// that list what is valid.
    pub fn build(&self, config: &PolicyConfig) -> Result<BuiltPolicy, ConfigError> {
        let entry = self.entries.get(&config.name).ok_or_else(|| ConfigError::UnknownName {
            what: "policy",
            name: config.name.clone(),
            valid: self.order.join(", "),
        })?;
        if let Some(bad) = config.params.keys().find(|k| !entry.params.contains(&k.as_str())) {
            return Err(ConfigError::BadParameter {
                policy: config.name.clone(),
                param: bad.clone(),
                reason: if entry.params.is_empty() {
                    "this policy takes no parameters".to_string()
                } else {
                    format!("valid parameters: {}", entry.params.join(", "))
                },
            });
        }
        (entry.build)(&Params { policy: &config.name, map: &config.params })
    }
}
