//! The gateway core: a router, the first level of two-level scheduling (DESIGN.md §2).
//!
//! The gateway holds no queue and no residency model of its own. Each node's executor
//! runs the scheduler core over its devices with the cluster's policy (pushed from here
//! on connect and on change): it is where a request queues and where deadline admission
//! is final. The gateway picks the node, with [`kaas_scheduler::route::rank`] over what
//! each executor last reported (per device: health, slots, the backlog its policy
//! predicts, residency) plus what this replica sent it since; when an executor refuses,
//! the next-best node is tried while the deadline allows. Any number of gateway replicas
//! can do this in front of the same executors without overbooking a device.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaas_executor::proto;
use kaas_scheduler::SchedulerConfig;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::metrics::GatewayMetrics;
use super::node::{NodeClient, NodeFailure};
use super::{Bytes, GatewayError, Invoked};

mod candidates;
mod invoke;
mod nodes;
mod refuse;

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The cluster's scheduling policy, pushed to every executor.
    pub scheduler: SchedulerConfig,
    /// Price per device-hour by device kind, for devices whose class is not known.
    pub prices: BTreeMap<String, f64>,
    /// The `AcceleratorClass` model by class name: what routing uses for devices that
    /// report their class.
    pub classes: BTreeMap<String, ClassModel>,
    /// Keep per-function metric series (labels `namespace`, `function`).
    pub function_metrics: bool,
    /// How executors announced by `KaasNode`s are reached (mutual TLS in a cluster).
    pub executor_connector: super::node::Connector,
    /// Requests this gateway holds at most (routing, dispatched or retrying); past it an
    /// invocation is answered 429 at once.
    pub max_inflight_requests: usize,
    /// Input bytes of those requests this gateway holds at most.
    pub max_inflight_bytes: u64,
}

/// What routing knows of an `AcceleratorClass`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassModel {
    /// `gpu` or `cpu`.
    pub kind: String,
    /// Speed relative to the reference class: an unprofiled class's runtime is a profiled
    /// class's of the same kind scaled by their speeds.
    pub relative_speed: f64,
    /// Price of one device-hour.
    pub price_per_hour: f64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            scheduler: SchedulerConfig::new(kaas_scheduler::PolicyConfig::named("slo-aware")),
            prices: [("gpu".to_string(), 1.0), ("cpu".to_string(), 0.05)].into(),
            classes: BTreeMap::new(),
            function_metrics: true,
            executor_connector: super::node::Connector::plaintext(),
            max_inflight_requests: kaas_executor::inflight::DEFAULT_GATEWAY_REQUESTS,
            max_inflight_bytes: kaas_executor::inflight::DEFAULT_GATEWAY_BYTES,
        }
    }
}

pub use kaas_scheduler::route::MAX_TRIES;

/// What a dispatched request gets beyond its deadline before the gateway stops waiting,
/// answers 504 and cancels it at the executor.
pub const DISPATCH_GRACE: Duration = Duration::from_millis(500);

/// One device of a node as its executor last reported it, with what this gateway routed
/// there since.
#[derive(Clone, Debug)]
pub(crate) struct DeviceView {
    pub(crate) status: proto::DeviceStatus,
    /// Requests routed here since the report.
    pub(crate) charged: u32,
    /// Their predicted work, ms.
    pub(crate) charged_ms: f64,
}

pub(crate) struct NodeEntry {
    /// Increases each time a node of this name is (re)added; reports from an older
    /// incarnation's follower are ignored.
    pub(crate) incarnation: u64,
    pub(crate) client: NodeClient,
    pub(crate) devices: Vec<DeviceView>,
    /// (function key, device ID) resident there, as reported.
    pub(crate) resident: HashSet<(String, String)>,
    pub(crate) up: bool,
    /// Function key → version registered there.
    pub(crate) registered: HashMap<String, String>,
    /// The policy version this node has been sent.
    pub(crate) policy_sent: u64,
    /// Counts status reports: a charge made before the latest report is in it.
    pub(crate) reports: u64,
    /// The status follower; aborted when the node is removed or replaced.
    pub(crate) follower: Option<tokio::task::AbortHandle>,
}

impl Drop for NodeEntry {
    fn drop(&mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

/// Runtimes this gateway measured (the executor's `exec` time) per (function, node, device
/// kind).
pub(crate) type Measured = kaas_scheduler::estimate::RuntimeEstimate;

pub(crate) struct State {
    pub(crate) config: GatewayConfig,
    /// Bumped by every policy change; nodes whose `policy_sent` differs get it pushed.
    pub(crate) policy_version: u64,
    pub(crate) nodes: BTreeMap<String, NodeEntry>,
    pub(crate) next_incarnation: u64,
    pub(crate) functions: BTreeMap<String, Arc<proto::FunctionDef>>,
    pub(crate) measured: HashMap<(String, String, String), Measured>,
}

pub(crate) struct Inner {
    pub(crate) state: Mutex<State>,
    pub(crate) metrics: Arc<GatewayMetrics>,
    /// Per-function counts for `KernelFunction.status`.
    pub(crate) stats: super::stats::Stats,
    pub(crate) ready: watch::Sender<bool>,
    /// Who may invoke; unset: anyone who can reach the gateway.
    pub(crate) auth: std::sync::OnceLock<Arc<dyn super::auth::Authorize>>,
    /// How executors are reached.
    pub(crate) connector: super::node::Connector,
    /// Requests and input bytes held, under the configured ceilings.
    pub(crate) in_flight: Arc<kaas_executor::inflight::InFlight>,
}

/// A handle to the gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

impl Gateway {
    /// Starts a gateway with no nodes and no functions.
    pub fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        validate(&config.scheduler)?;
        let (ready, _) = watch::channel(false);
        let metrics = if config.function_metrics {
            GatewayMetrics::default()
        } else {
            GatewayMetrics::without_function_labels()
        };
        let connector = config.executor_connector.clone();
        let in_flight = kaas_executor::inflight::InFlight::new(
            "gateway",
            config.max_inflight_requests,
            config.max_inflight_bytes,
        );
        Ok(Gateway {
            inner: Arc::new(Inner {
                connector,
                in_flight,
                state: Mutex::new(State {
                    config,
                    policy_version: 1,
                    nodes: BTreeMap::new(),
                    next_incarnation: 0,
                    functions: BTreeMap::new(),
                    measured: HashMap::new(),
                }),
                metrics: Arc::new(metrics),
                stats: Default::default(),
                ready,
                auth: std::sync::OnceLock::new(),
            }),
        })
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requires every invocation over HTTP and gRPC to pass `auth` (set once, at start).
    pub fn require_auth(&self, auth: Arc<dyn super::auth::Authorize>) {
        if self.inner.auth.set(auth).is_err() {
            warn!("the gateway's authorizer was already set; keeping the first");
        }
    }

    /// Checks the bearer of `token` may invoke `namespace/name` (always, with no
    /// authorizer set).
    pub async fn authorize(
        &self,
        token: Option<&str>,
        namespace: &str,
        name: &str,
    ) -> Result<(), GatewayError> {
        match self.inner.auth.get() {
            Some(a) => a.authorize(token, namespace, name).await,
            None => Ok(()),
        }
    }

    /// This replica's per-function counts (at most `limit` functions, the busiest), for
    /// the leader to merge into `KernelFunction.status`.
    pub fn stats_snapshot(&self, replica: &str, limit: usize) -> super::stats::Snapshot {
        self.inner.stats.snapshot(replica, limit)
    }

    /// Registers or updates a function (it is pushed to a node when first sent there).
    pub fn put_function(&self, def: proto::FunctionDef) {
        let key = format!("{}/{}", def.namespace, def.name);
        info!(function = %key, version = %def.version, "function registered with the gateway");
        self.state().functions.insert(key, Arc::new(def));
    }

    /// Removes a function and evicts it from every node.
    pub fn remove_function(&self, key: &str) {
        let mut st = self.state();
        if st.functions.remove(key).is_none() {
            return;
        }
        self.inner.stats.forget(key);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        for n in st.nodes.values_mut() {
            n.registered.remove(key);
            n.resident.retain(|(k, _)| k != key);
            let client = n.client.clone();
            let (ns, name) = (ns.to_string(), name.to_string());
            tokio::spawn(async move {
                if let Err(e) = client.evict(&ns, &name).await {
                    warn!("evicting {ns}/{name}: {e:?}");
                }
            });
        }
    }

    /// Switches policy, admission, eviction or granularity live: checked here, then
    /// pushed to every connected executor (a node that cannot take it now gets it when it
    /// is next used or reconnects).
    pub async fn set_scheduler(&self, config: SchedulerConfig) -> Result<(), GatewayError> {
        validate(&config)?;
        let nodes: Vec<(String, NodeClient)> = {
            let mut st = self.state();
            st.config.scheduler = config.clone();
            st.policy_version += 1;
            let v = st.policy_version;
            let mut out = Vec::new();
            for (name, n) in st.nodes.iter_mut().filter(|(_, n)| n.up) {
                n.policy_sent = v;
                out.push((name.clone(), n.client.clone()));
            }
            out
        };
        info!(policy = %config.policy.name, admission = config.admission.name(), "scheduling policy switched");
        for (name, client) in nodes {
            if let Err(e) = client.set_policy(&config).await {
                warn!(node = %name, "pushing the scheduling policy: {e:?}");
                if let Some(n) = self.state().nodes.get_mut(&name) {
                    n.policy_sent = 0;
                }
                if let NodeFailure::Answer(e) = e {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Replaces the `AcceleratorClass` model (classes added, changed or removed).
    pub fn set_classes(&self, classes: BTreeMap<String, ClassModel>) {
        self.state().config.classes = classes;
    }

    /// Requests and input bytes this gateway holds now.
    pub fn in_flight(&self) -> (usize, u64) {
        self.inner.in_flight.now()
    }

    /// How executors are reached.
    pub fn connector(&self) -> &super::node::Connector {
        &self.inner.connector
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.inner.metrics
    }

    /// Whether at least one healthy device is known.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until at least one healthy device is known, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }
}

/// A scheduler configuration the executors will accept: the policy exists and its
/// parameters parse.
fn validate(config: &SchedulerConfig) -> Result<(), GatewayError> {
    // A scheduler over no devices checks everything but the cluster.
    kaas_scheduler::Scheduler::new(kaas_scheduler::Cluster::default(), config.clone())
        .map(drop)
        .map_err(|e| GatewayError::BadInput(format!("scheduling policy: {e}")))
}
