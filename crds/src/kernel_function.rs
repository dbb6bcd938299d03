//! `KernelFunction`: a small graph of GPU kernels with its buffers and a latency SLO.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::Source;

/// Largest block dimensions and threads per block CUDA allows (compute capability 5.0+).
pub const CUDA_MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
/// Largest number of threads in one block.
pub const CUDA_MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest grid dimensions CUDA allows.
pub const CUDA_MAX_GRID: [u32; 3] = [2_147_483_647, 65_535, 65_535];
/// Largest dynamic shared memory per block (227 KiB on Hopper, the largest of any GPU).
pub const CUDA_MAX_SHARED_MEM_BYTES: u32 = 232_448;

/// Desired state of a kernel function.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kaas.dev",
    version = "v1alpha1",
    kind = "KernelFunction",
    plural = "kernelfunctions",
    shortname = "kf",
    category = "kaas",
    namespaced,
    status = "KernelFunctionStatus",
    printcolumn = r#"{"name":"Admitted","type":"string","jsonPath":".status.conditions[?(@.type==\"Admitted\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Deadline","type":"integer","jsonPath":".spec.slo.deadlineMs","description":"SLO deadline in milliseconds"}"#,
    printcolumn = r#"{"name":"P99-ms","type":"number","jsonPath":".status.latencyMs.p99","description":"observed p99 latency"}"#,
    printcolumn = r#"{"name":"SLO","type":"number","jsonPath":".status.sloAttainment","description":"fraction of requests that met the deadline"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.modules.all(m, self.modules.exists_one(o, o.name == m.name))").message("module names must be unique").field_path(".modules"))]
#[x_kube(validation = Rule::new("self.buffers.all(b, self.buffers.exists_one(o, o.name == b.name))").message("buffer names must be unique").field_path(".buffers"))]
#[x_kube(validation = Rule::new("self.kernels.all(k, self.modules.exists(m, m.name == k.module))").message("every kernel's module must name an entry of modules").field_path(".kernels"))]
#[x_kube(validation = Rule::new("self.kernels.all(k, k.args.all(a, !has(a.buffer) || self.buffers.exists(b, b.name == a.buffer)))").message("every kernel argument buffer must name an entry of buffers").field_path(".kernels"))]
#[x_kube(validation = Rule::new("self.buffers.exists(b, b.kind == 'Output')").message("a function needs at least one Output buffer").field_path(".buffers"))]
pub struct KernelFunctionSpec {
    /// Code modules; each provides the kernel entry points for one or both backends.
    #[schemars(length(min = 1, max = 16))]
    pub modules: Vec<Module>,
    /// Buffers the kernels read and write.
    #[schemars(length(min = 1, max = 64))]
    pub buffers: Vec<Buffer>,
    /// Kernels, launched in order; each sees the buffers written by the ones before it.
    #[schemars(length(min = 1, max = 64))]
    pub kernels: Vec<Kernel>,
    /// Latency objective and fair-share weight.
    pub slo: Slo,
    /// Expected runtime per accelerator class (measured or declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub profile: Vec<ProfileEntry>,
    /// Expected invocations per second, reserved at function-level admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub expected_rate: Option<f64>,
}

/// A code module, with a build for each backend it supports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cuda) || has(self.wasm)").message("a module needs a cuda or a wasm build"))]
pub struct Module {
    /// Name kernels refer to.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Build for NVIDIA GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<CudaModule>,
    /// WebAssembly build for CPU nodes; see the executor's ABI in the README.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<Source>,
}

/// Form of a CUDA module.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CudaFormat {
    /// PTX assembly text, JIT-compiled by the driver.
    #[serde(rename = "ptx")]
    Ptx,
    /// A compiled cubin for a given architecture.
    #[serde(rename = "cubin")]
    Cubin,
    /// CUDA C source, compiled with NVRTC when loaded.
    #[serde(rename = "cuda-c")]
    CudaC,
}

/// A CUDA build of a module.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CudaModule {
    /// PTX, cubin or CUDA C.
    pub format: CudaFormat,
    /// Where the module's bytes come from.
    pub source: Source,
}

/// Role of a buffer in an invocation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BufferKind {
    /// Written by the caller on every invocation.
    Input,
    /// Returned to the caller.
    Output,
    /// Scratch space between kernels, zeroed for every invocation.
    Temp,
    /// Constant data (weights), uploaded once and kept resident on devices.
    Const,
}

/// A buffer of the kernel graph.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'Const' ? has(self.source) : !has(self.source)").message("Const buffers need a source; other kinds must not have one"))]
pub struct Buffer {
    /// Name used by kernel arguments and in invocation inputs and outputs.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Size in bytes; inputs must match it exactly.
    #[schemars(range(min = 1, max = 68_719_476_736_u64))]
    pub size: u64,
    /// Input, Output, Temp or Const.
    pub kind: BufferKind,
    /// Content of a Const buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One kernel launch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.block[0] <= 1024 && self.block[1] <= 1024 && self.block[2] <= 64").message("block dimensions are limited to [1024, 1024, 64]").field_path(".block"))]
#[x_kube(validation = Rule::new("self.block[0] * self.block[1] * self.block[2] <= 1024").message("a block has at most 1024 threads").field_path(".block"))]
#[x_kube(validation = Rule::new("self.grid[1] <= 65535 && self.grid[2] <= 65535").message("grid y and z are limited to 65535").field_path(".grid"))]
pub struct Kernel {
    /// Name of the module holding the entry point.
    #[schemars(length(min = 1, max = 63))]
    pub module: String,
    /// Exported function / `extern "C" __global__` name.
    #[schemars(length(min = 1, max = 256))]
    pub entry: String,
    /// Grid dimensions in blocks.
    #[schemars(inner(range(min = 1, max = 2_147_483_647)))]
    pub grid: [u32; 3],
    /// Block dimensions in threads.
    #[schemars(inner(range(min = 1, max = 1024)))]
    pub block: [u32; 3],
    /// Dynamic shared memory per block.
    #[serde(default)]
    #[schemars(range(max = 232_448))]
    pub shared_mem_bytes: u32,
    /// Arguments in order: buffers (passed as device pointers) and typed literals.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub args: Vec<KernelArg>,
}

/// One kernel argument: a buffer, or a literal of one type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.buffer), has(self.i32), has(self.u32), has(self.i64), has(self.u64), has(self.f32), has(self.f64)].filter(x, x).size() == 1"
).message("an argument is exactly one of buffer, i32, u32, i64, u64, f32, f64"))]
pub struct KernelArg {
    /// A buffer of this function, passed by address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<String>,
    /// A 32-bit signed literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i32: Option<i32>,
    /// A 32-bit unsigned literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u32: Option<u32>,
    /// A 64-bit signed literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i64: Option<i64>,
    /// A 64-bit unsigned literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u64: Option<u64>,
    /// A 32-bit float literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32: Option<f32>,
    /// A 64-bit float literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f64: Option<f64>,
}

/// Latency objective.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Slo {
    /// End-to-end deadline of one invocation, in milliseconds.
    #[schemars(range(min = 1, max = 3_600_000))]
    pub deadline_ms: u32,
    /// Share of invocations that must meet the deadline, in percent.
    #[serde(default = "default_percentile")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub percentile: f64,
    /// Fair-share weight against other functions.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
    /// Higher runs first where a policy honours priority.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
}

fn default_percentile() -> f64 {
    99.0
}
fn default_weight() -> u32 {
    1
}

/// How a profile figure was obtained.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ProfileSource {
    /// Written by a person.
    #[default]
    Declared,
    /// Measured by kaas on that class.
    Measured,
}

/// Expected runtime of the whole kernel graph on one accelerator class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileEntry {
    /// Name of an `AcceleratorClass`.
    #[schemars(length(min = 1, max = 253))]
    pub accelerator_class: String,
    /// Warm runtime of one invocation, in milliseconds.
    #[schemars(range(min = 0.001))]
    pub runtime_ms: f64,
    /// Time to make the function resident on a device of that class (cold start), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub load_ms: Option<f64>,
    /// Declared or Measured.
    #[serde(default)]
    pub source: ProfileSource,
}

/// Where a function is kept warm.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Kubernetes node name.
    pub node: String,
    /// Device ID on that node.
    pub device: String,
    /// Accelerator class of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_class: Option<String>,
    /// Whether the function is resident there now.
    pub warm: bool,
}

/// Observed latency percentiles in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct LatencyPercentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Observed state of a kernel function.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelFunctionStatus {
    /// `Admitted`, `Ready` and `Degraded`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Generation of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Devices chosen to keep the function warm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<Placement>,
    /// Observed end-to-end latency of served invocations, over every gateway replica
    /// (read from a histogram: within 9 % of the exact percentile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencyPercentiles>,
    /// Fraction of invocations that met the deadline (rejections count as misses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_attainment: Option<f64>,
    /// Invocations answered since the current gateway replicas started (served, rejected
    /// or failed; malformed requests are not counted). Written by the leader at most every
    /// 10 s.
    #[serde(default)]
    pub invocations: u64,
    /// Invocations that paid a cold start.
    #[serde(default)]
    pub cold_starts: u64,
    /// Invocations rejected by admission control.
    #[serde(default)]
    pub rejections: u64,
}
