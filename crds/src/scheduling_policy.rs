//! `SchedulingPolicy`: the active policy, admission mode and cache eviction (singleton `default`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Policy names, exactly those of the scheduling core.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// One FIFO queue, any free device.
    Balance,
    /// Devices dedicated per function.
    Exclusive,
    /// Fixed partition of devices per function.
    Static,
    /// Weighted virtual time with a penalty for cold devices.
    CfsAffinity,
    /// Earliest deadline first, preferring warm devices.
    Edf,
    /// Cheapest class that meets the deadline, with admission control.
    #[default]
    SloAware,
    /// Multi-queue fair queueing with sticky keep-alive.
    MqfqSticky,
}

/// Per-request admission control.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionMode {
    /// Admit everything.
    None,
    /// Reject at arrival when the predicted completion misses the deadline.
    #[default]
    Deadline,
    /// Per-function token bucket at the reserved rate.
    TokenBucket,
}

/// How resident function state is evicted under memory pressure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CacheEviction {
    /// Least recently used.
    Lru,
    /// GreedyDual-Size-Frequency.
    #[default]
    Gdsf,
}

/// Unit a device is held for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// A request holds its device until done.
    Request,
    /// Kernels of different requests interleave at kernel boundaries.
    #[default]
    Kernel,
}

/// How tenants (namespaces) share a device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Each namespace gets its own CUDA context per device (a kernel cannot reach another
    /// namespace's device memory), and `Const` buffers are deduplicated only within a namespace.
    #[default]
    Namespace,
    /// One CUDA context per device for every namespace and `Const` buffers deduplicated
    /// across namespaces: a CUDA kernel can read and write any tenant's device memory
    /// through a raw pointer. For mutually trusting tenants only.
    Shared,
}

/// Devices reserved for one function under the `static` policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticPartition {
    /// `namespace/name` of the function.
    #[schemars(length(min = 3, max = 317))]
    pub function: String,
    /// How many devices it gets.
    #[schemars(range(min = 1, max = 100_000))]
    pub devices: u32,
}

/// Policy parameters; each applies to the policies named in its description.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyParameters {
    /// `cfs-affinity`: virtual-time penalty of a cold device, as a multiple of the weight (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub affinity_penalty: Option<f64>,
    /// `static`: device partition per function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub partitions: Vec<StaticPartition>,
    /// `mqfq-sticky`: how far (ms of virtual time) a flow may run ahead of the slowest before it is throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub throttle_ms: Option<f64>,
    /// `mqfq-sticky`: how long an idle flow keeps its devices warm, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub keep_alive_ms: Option<f64>,
    /// `deadline` admission: share of each request's deadline kept free for service-time
    /// variance (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub deadline_headroom: Option<f64>,
    /// `token-bucket` admission: burst size in requests (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub token_bucket_burst: Option<f64>,
}

/// The scheduling configuration of the cluster. Only the object named `default` is used.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[kube(
    group = "kaas.dev",
    version = "v1alpha1",
    kind = "SchedulingPolicy",
    plural = "schedulingpolicies",
    shortname = "spol",
    category = "kaas",
    status = "SchedulingPolicyStatus",
    validation = Rule::new("self.metadata.name == 'default'").message("the SchedulingPolicy must be named default"),
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Admission","type":"string","jsonPath":".spec.admission"}"#,
    printcolumn = r#"{"name":"Eviction","type":"string","jsonPath":".spec.cacheEviction"}"#,
    printcolumn = r#"{"name":"Isolation","type":"string","jsonPath":".spec.isolation"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"Applied\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.policy) || self.policy != 'static' || (has(self.parameters) && has(self.parameters.partitions) && size(self.parameters.partitions) > 0)").message("policy static needs parameters.partitions").field_path(".parameters.partitions"))]
pub struct SchedulingPolicySpec {
    /// Policy used by the gateway and executors.
    #[serde(default)]
    pub policy: PolicyName,
    /// Parameters of the policy.
    #[serde(default)]
    pub parameters: PolicyParameters,
    /// Per-request admission control.
    #[serde(default)]
    pub admission: AdmissionMode,
    /// Eviction of resident state under memory pressure.
    #[serde(default)]
    pub cache_eviction: CacheEviction,
    /// Whether kernels of different requests interleave on a device.
    #[serde(default)]
    pub granularity: Granularity,
    /// How tenants share devices: `namespace` (the default) or `shared` (mutually trusting
    /// tenants only). Changing it reloads each function on its next invocation.
    #[serde(default)]
    pub isolation: Isolation,
}

/// Observed state of the scheduling policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingPolicyStatus {
    /// Generation the gateway runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Policy the gateway runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_policy: Option<String>,
    /// `Applied`: whether the gateways run this spec (`kubectl wait
    /// --for=condition=Applied schedulingpolicy/default`); reason `Applied`, or
    /// `InvalidPolicy` with what is wrong, or `NotDefault` (only `default` is applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}
