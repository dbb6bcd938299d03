//! Scenario files: the cluster, the functions, the scheduler configuration and the
//! workload of one simulation. Field names follow the `AcceleratorClass` and
//! `KernelFunction` resources where they overlap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kaas_scheduler::policy::ParamValue;
use kaas_scheduler::{
    AcceleratorClass, AdmissionMode, Cluster, DeviceKind, Eviction, Function, Granularity, PolicyConfig,
    SchedulerConfig, ms,
};
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::topology::Topology;

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports.
    pub name: String,
    /// Seed of every random choice; same seed, same result.
    #[serde(default)]
    pub seed: u64,
    /// Arrivals after this many seconds are ignored (all arrivals when absent).
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Stop after this many arrivals.
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Accelerator classes with device counts.
    pub cluster: Vec<ClassSpec>,
    /// Functions.
    pub functions: Vec<FunctionSpec>,
    /// Policy; `kaas-sim run --policy` overrides the name.
    #[serde(default)]
    pub policy: PolicySpec,
    /// `none`, `deadline` or `token-bucket`.
    #[serde(default)]
    pub admission: AdmissionMode,
    /// Token-bucket burst in requests.
    #[serde(default = "ten")]
    pub token_bucket_burst: f64,
    /// Share of each deadline `deadline` admission keeps free for service-time variance.
    #[serde(default = "tenth")]
    pub deadline_headroom: f64,
    /// `lru` or `gdsf`.
    #[serde(default)]
    pub cache_eviction: Eviction,
    /// `request` or `kernel`.
    #[serde(default)]
    pub granularity: Granularity,
    /// `pool` (one scheduler over every device, the ideal) or `per-node` (a scheduler per
    /// node, as each executor runs, behind a router, as each gateway is).
    #[serde(default)]
    pub topology: Topology,
    /// With `per-node`: how often each node's report reaches the router, ms (an executor
    /// publishes at most every 20 ms).
    #[serde(default = "twenty")]
    pub report_interval_ms: f64,
    /// With `per-node`: how long a request takes to get from the router to a node, and
    /// its answer back, ms each way (the network and the gateway's own handling; 0 by
    /// default). It comes out of the request's deadline: a node is offered what is left
    /// of it when the request gets there (each refusal costs a round trip), and the
    /// answer must be back within the deadline.
    #[serde(default)]
    pub hop_ms: f64,
    /// Whether each node's scheduler learns runtimes from what runs, as every live
    /// executor does (mean plus two deviations of the measured runtimes per function and
    /// class, from the 8th run); off by default: the declared profile holds throughout.
    #[serde(default)]
    pub learn_runtimes: bool,
    /// What arrives.
    pub workload: Workload,
    /// For `kaas-sim sweep`: the grid.
    #[serde(default)]
    pub sweep: Option<SweepSpec>,
    /// Record what `deadline` admission predicted for each admitted request, to compare
    /// with when it completed ([`RunResult::prediction_errors`](crate::simulate::RunResult)).
    #[serde(skip)]
    pub record_predictions: bool,
    /// Directory relative paths are resolved against (the scenario file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn twenty() -> f64 {
    20.0
}

fn ten() -> f64 {
    10.0
}

fn tenth() -> f64 {
    0.1
}

/// An accelerator class and how many devices of it the cluster has.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassSpec {
    /// Class name (functions' profiles refer to it).
    pub name: String,
    /// `GPU` or `CPU`.
    #[serde(default = "gpu")]
    pub kind: String,
    /// Device model, for reports.
    #[serde(default)]
    pub model: Option<String>,
    /// Memory per device in bytes.
    pub memory_bytes: u64,
    /// Speed relative to the reference class.
    #[serde(default = "one")]
    pub relative_speed: f64,
    /// Price per device-hour.
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Kernel slots per device.
    #[serde(default = "one_u32")]
    pub slots_per_device: u32,
    /// Number of devices.
    pub count: usize,
    /// With `topology: per-node`: devices per node (the class's devices are cut into
    /// nodes of this size; all in one node when absent).
    #[serde(default)]
    pub devices_per_node: Option<usize>,
}

fn gpu() -> String {
    "GPU".into()
}
fn one() -> f64 {
    1.0
}
fn one_u32() -> u32 {
    1
}

/// Service-time distribution of a function when the workload gives no durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// Exactly the profile's runtime.
    #[default]
    Deterministic,
    /// Exponential with the profile's runtime as mean.
    Exponential,
}

/// SLO of a function, as in `KernelFunction.spec.slo`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SloSpec {
    /// Deadline in milliseconds.
    pub deadline_ms: f64,
    /// Target percentile (reported, not enforced).
    #[serde(default = "ninety_nine")]
    pub percentile: f64,
    /// Fair-share weight.
    #[serde(default = "one_u32")]
    pub weight: u32,
    /// Priority.
    #[serde(default)]
    pub priority: i32,
}

fn ninety_nine() -> f64 {
    99.0
}

/// One profile entry, as in `KernelFunction.spec.profile`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    /// Class name.
    pub accelerator_class: String,
    /// Warm runtime in milliseconds.
    pub runtime_ms: f64,
    /// Cold-start time in milliseconds.
    #[serde(default)]
    pub load_ms: f64,
}

/// A function of the scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    /// Name; traces in `exact` mapping refer to it.
    pub name: String,
    /// Tenant (defaults to the name).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Latency objective.
    pub slo: SloSpec,
    /// Runtime per class; classes not listed cannot run it.
    pub profile: Vec<ProfileSpec>,
    /// Reserved rate for token-bucket admission, and the default synthetic rate.
    #[serde(default)]
    pub expected_rate: Option<f64>,
    /// Bytes of resident state (modules and const buffers).
    #[serde(default = "mib")]
    pub resident_bytes: u64,
    /// Bytes of per-invocation buffers.
    #[serde(default)]
    pub working_bytes: u64,
    /// Number of kernels, splitting the runtime evenly (or `kernelShares`).
    #[serde(default = "one_u32")]
    pub kernels: u32,
    /// Share of the runtime of each kernel.
    #[serde(default)]
    pub kernel_shares: Option<Vec<f64>>,
    /// Service-time distribution when the trace gives none.
    #[serde(default)]
    pub service: Service,
    /// Devices to make it resident on before the first arrival (the operator's placement),
    /// the lowest-numbered devices that can run it.
    #[serde(default)]
    pub prewarm: u32,
}

fn mib() -> u64 {
    1 << 20
}

/// Policy by name with parameters in camelCase, as in `SchedulingPolicy.spec`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Policy name.
    pub name: String,
    /// Parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
}

impl Default for PolicySpec {
    fn default() -> Self {
        PolicySpec { name: "slo-aware".into(), parameters: BTreeMap::new() }
    }
}

/// What arrives: a trace or a synthetic generator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Multiplies arrival rates (compresses trace time).
    #[serde(default = "one")]
    pub load_factor: f64,
    /// A trace file.
    #[serde(default)]
    pub trace: Option<TraceSpec>,
    /// A synthetic generator.
    #[serde(default)]
    pub synthetic: Option<SyntheticSpec>,
}

/// Trace formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceFormat {
    /// Azure Functions 2019: per-minute counts, with durations and memory files.
    Azure2019,
    /// Azure Functions 2021: `app,func,end_timestamp,duration` in seconds.
    Azure2021,
    /// Azure LLM inference 2023: `TIMESTAMP,ContextTokens,GeneratedTokens`.
    AzureLlm,
    /// `function,arrival_ms[,duration_ms]`, ordered by arrival.
    Csv,
}

/// How trace function names map to scenario functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FunctionMap {
    /// A trace name must be a scenario function's name.
    #[default]
    Exact,
    /// Trace names are spread over the scenario functions by a stable hash.
    Hash,
}

/// A trace file and how to read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceSpec {
    /// Format.
    pub format: TraceFormat,
    /// Path (relative to the scenario file). For `azure2019`, the invocations file.
    pub path: PathBuf,
    /// `azure2019`: the durations file.
    #[serde(default)]
    pub durations: Option<PathBuf>,
    /// `azure2019`: the memory file (sets resident bytes of mapped functions when larger).
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// Name mapping.
    #[serde(default)]
    pub function_map: FunctionMap,
    /// `azure-llm`: the scenario function every request goes to.
    #[serde(default)]
    pub function: Option<String>,
    /// `azure-llm`: the token-to-runtime model.
    #[serde(default)]
    pub token_model: TokenModel,
}

/// Runtime of an LLM request on the reference class:
/// `baseMs + perContextTokenMs × context + perGeneratedTokenMs × generated`.
/// Defaults: 20 ms + 0.03 ms per prompt token (prefill) + 25 ms per generated token
/// (decode), the order of a 7B model on one H100.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenModel {
    /// Fixed cost per request.
    pub base_ms: f64,
    /// Cost per context (prompt) token.
    pub per_context_token_ms: f64,
    /// Cost per generated token.
    pub per_generated_token_ms: f64,
}

impl Default for TokenModel {
    fn default() -> Self {
        TokenModel { base_ms: 20.0, per_context_token_ms: 0.03, per_generated_token_ms: 25.0 }
    }
}

/// Synthetic generators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    /// Poisson arrivals.
    Poisson,
    /// Two-state Markov-modulated Poisson (bursty).
    Mmpp,
    /// Poisson with a sinusoidal daily rate.
    Diurnal,
    /// Closed loop: each client sends its next request when the previous one is answered.
    Closed,
}

/// A synthetic workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Generator.
    pub generator: Generator,
    /// Requests per second per function; functions not listed use their `expectedRate`.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// `mmpp`: rate multiplier in the burst state.
    #[serde(default = "five")]
    pub burst_factor: f64,
    /// `mmpp`: mean seconds in the normal state.
    #[serde(default = "ten")]
    pub mean_normal_s: f64,
    /// `mmpp`: mean seconds in the burst state.
    #[serde(default = "two")]
    pub mean_burst_s: f64,
    /// `diurnal`: period in seconds.
    #[serde(default = "day")]
    pub period_s: f64,
    /// `diurnal`: relative amplitude in [0, 1].
    #[serde(default = "half")]
    pub amplitude: f64,
    /// `closed`: clients per function.
    #[serde(default = "one_u32")]
    pub clients: u32,
    /// `closed`: think time between an answer and the next request, ms.
    #[serde(default)]
    pub think_ms: f64,
}

fn five() -> f64 {
    5.0
}
fn two() -> f64 {
    2.0
}
fn day() -> f64 {
    86_400.0
}
fn half() -> f64 {
    0.5
}

/// The grid of `kaas-sim sweep`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepSpec {
    /// Load factors.
    pub load_factors: Vec<f64>,
    /// Policies (all when empty).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Cluster variants: a name and device counts per class (classes not listed keep theirs).
    #[serde(default)]
    pub clusters: Vec<ClusterVariant>,
}

/// A cluster variant of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterVariant {
    /// Name in reports.
    pub name: String,
    /// Device count per class name.
    pub counts: BTreeMap<String, usize>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io(path.to_path_buf(), e))?;
        let mut s: Scenario = serde_yaml_ng::from_str(&text)
            .map_err(|e| SimError::Scenario(format!("{}: {e}", path.display())))?;
        s.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        s.check()?;
        Ok(s)
    }

    /// Parses a scenario from YAML text, resolving paths against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, SimError> {
        let mut s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| SimError::Scenario(e.to_string()))?;
        s.base_dir = base_dir.to_path_buf();
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Scenario(m));
        if self.cluster.is_empty() {
            return bad("cluster has no accelerator classes".into());
        }
        for c in &self.cluster {
            if c.kind != "GPU" && c.kind != "CPU" {
                return bad(format!("class {}: kind must be GPU or CPU, got {}", c.name, c.kind));
            }
            if c.devices_per_node == Some(0) {
                return bad(format!("class {}: devicesPerNode must be positive", c.name));
            }
            if c.slots_per_device == 0 || c.relative_speed <= 0.0 || c.memory_bytes == 0 {
                return bad(format!(
                    "class {}: slotsPerDevice, relativeSpeed and memoryBytes must be positive",
                    c.name
                ));
            }
        }
        if self.functions.is_empty() {
            return bad("scenario has no functions".into());
        }
        for f in &self.functions {
            if f.slo.deadline_ms <= 0.0 {
                return bad(format!("function {}: slo.deadlineMs must be positive", f.name));
            }
            for p in &f.profile {
                if !self.cluster.iter().any(|c| c.name == p.accelerator_class) {
                    return bad(format!(
                        "function {}: profile names unknown class {} (classes: {})",
                        f.name,
                        p.accelerator_class,
                        self.cluster.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
                if p.runtime_ms <= 0.0 || p.load_ms < 0.0 {
                    return bad(format!(
                        "function {}: runtimeMs must be positive and loadMs not negative",
                        f.name
                    ));
                }
            }
            if f.profile.is_empty() {
                return bad(format!("function {}: profile is empty, it cannot run anywhere", f.name));
            }
        }
        if !(self.hop_ms >= 0.0 && self.hop_ms.is_finite()) {
            return bad(format!("hopMs must be finite and not negative, got {}", self.hop_ms));
        }
        if !(self.report_interval_ms >= 0.0 && self.report_interval_ms.is_finite()) {
            return bad(format!(
                "reportIntervalMs must be finite and not negative, got {}",
                self.report_interval_ms
            ));
        }
        let w = &self.workload;
        if w.load_factor <= 0.0 || !w.load_factor.is_finite() {
            return bad(format!("workload.loadFactor must be positive, got {}", w.load_factor));
        }
        if w.trace.is_some() == w.synthetic.is_some() {
            return bad("workload needs exactly one of trace and synthetic".into());
        }
        Ok(())
    }

    /// Resolves a path written in the scenario.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }

    /// The scheduler's cluster model, with `counts` overriding device counts by class name.
    pub fn cluster(&self, counts: Option<&BTreeMap<String, usize>>) -> Cluster {
        let mut cluster = Cluster::default();
        for c in &self.cluster {
            let n = counts.and_then(|m| m.get(&c.name)).copied().unwrap_or(c.count);
            cluster.add_class(
                AcceleratorClass {
                    name: c.name.clone(),
                    kind: if c.kind == "CPU" { DeviceKind::Cpu } else { DeviceKind::Gpu },
                    speed: c.relative_speed,
                    memory_bytes: c.memory_bytes,
                    slots: c.slots_per_device,
                    price_per_hour: c.cost_per_hour,
                },
                n,
            );
        }
        cluster
    }

    /// The scheduler's function models, in scenario order.
    pub fn functions(&self) -> Vec<Function> {
        self.functions
            .iter()
            .map(|f| {
                let runtime = self
                    .cluster
                    .iter()
                    .map(|c| {
                        f.profile.iter().find(|p| p.accelerator_class == c.name).map(|p| ms(p.runtime_ms))
                    })
                    .collect();
                let load_time = self
                    .cluster
                    .iter()
                    .map(|c| {
                        f.profile.iter().find(|p| p.accelerator_class == c.name).map_or(0, |p| ms(p.load_ms))
                    })
                    .collect();
                let shares = match &f.kernel_shares {
                    Some(s) => {
                        let total: f64 = s.iter().sum();
                        s.iter().map(|x| x / total).collect()
                    }
                    None => vec![1.0 / f.kernels.max(1) as f64; f.kernels.max(1) as usize],
                };
                Function {
                    name: f.name.clone(),
                    tenant: f.tenant.clone().unwrap_or_else(|| f.name.clone()),
                    runtime,
                    load_time,
                    resident_bytes: f.resident_bytes,
                    working_bytes: f.working_bytes,
                    deadline: ms(f.slo.deadline_ms),
                    weight: f.slo.weight.max(1),
                    priority: f.slo.priority,
                    kernel_shares: shares,
                    reserved_rate: f.expected_rate,
                }
            })
            .collect()
    }

    /// The scheduler configuration with `policy` as the policy name. Parameters come from
    /// the scenario when it names the same policy; `static` without partitions splits the
    /// devices evenly over the functions in scenario order.
    pub fn scheduler_config(&self, policy: &str, devices: usize) -> SchedulerConfig {
        let mut params =
            if policy == self.policy.name { self.policy.parameters.clone() } else { BTreeMap::new() };
        if policy == "static" && !params.contains_key("partitions") {
            let each = (devices / self.functions.len()).max(1) as u32;
            let parts = self
                .functions
                .iter()
                .take(devices)
                .map(|f| kaas_scheduler::policy::PartitionEntry { function: f.name.clone(), devices: each })
                .collect();
            params.insert("partitions".into(), ParamValue::Partitions(parts));
        }
        SchedulerConfig {
            policy: PolicyConfig { name: policy.to_string(), params },
            admission: self.admission,
            token_bucket_burst: self.token_bucket_burst,
            deadline_headroom: self.deadline_headroom,
            eviction: self.cache_eviction,
            granularity: self.granularity,
            // Tenant isolation changes device memory and contexts, which the simulator
            // does not model; the default is carried for completeness.
            isolation: kaas_scheduler::Isolation::default(),
        }
    }
}
