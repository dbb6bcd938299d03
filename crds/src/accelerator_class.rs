//! `AcceleratorClass`: a kind of device in the pool and how to find it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a class runs CUDA kernels or their WebAssembly builds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeviceKind {
    /// An NVIDIA GPU driven through CUDA.
    #[serde(rename = "GPU")]
    Gpu,
    /// CPU cores running WebAssembly builds of the kernels.
    #[serde(rename = "CPU")]
    Cpu,
}

/// A device model of the pool (cluster-scoped).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kaas.dev",
    version = "v1alpha1",
    kind = "AcceleratorClass",
    plural = "acceleratorclasses",
    shortname = "acc",
    category = "kaas",
    status = "AcceleratorClassStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Speed","type":"number","jsonPath":".spec.relativeSpeed"}"#,
    printcolumn = r#"{"name":"Cost/h","type":"number","jsonPath":".spec.costPerHour"}"#,
    printcolumn = r#"{"name":"Devices","type":"integer","jsonPath":".status.devices"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorClassSpec {
    /// GPU or CPU.
    pub kind: DeviceKind,
    /// Device model as reported by the driver (for example `NVIDIA H100 80GB HBM3`), or the CPU model.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// Labels a node must carry for its devices to belong to this class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Memory of one device in bytes (for CPU classes: memory the executor may use).
    #[schemars(range(min = 1))]
    pub memory_bytes: u64,
    /// Speed relative to the reference class (1.0): expected runtime = reference runtime / speed.
    #[serde(default = "one")]
    #[schemars(range(min = 0.001, max = 1000.0))]
    pub relative_speed: f64,
    /// Price of one device-hour, in the currency of the cluster's bill.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub cost_per_hour: f64,
    /// Kernels that may run concurrently on one device.
    #[serde(default = "one_slot")]
    #[schemars(range(min = 1, max = 128))]
    pub slots_per_device: u32,
}

fn one() -> f64 {
    1.0
}
fn one_slot() -> u32 {
    1
}

/// Observed state of an accelerator class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorClassStatus {
    /// Healthy devices of this class across live nodes.
    #[serde(default)]
    pub devices: u32,
    /// Nodes with at least one device of this class.
    #[serde(default)]
    pub nodes: u32,
    /// `Ready` when at least one healthy device exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
