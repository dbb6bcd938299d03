//! `KaasNode`: one node's devices, health and resident functions, written by its device plugin.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::accelerator_class::DeviceKind;

/// A node of the kaas pool (cluster-scoped, named after the Kubernetes node).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kaas.dev",
    version = "v1alpha1",
    kind = "KaasNode",
    plural = "kaasnodes",
    shortname = "kn",
    category = "kaas",
    status = "KaasNodeStatus",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.executorEndpoint"}"#,
    printcolumn = r#"{"name":"Devices","type":"integer","jsonPath":".status.healthyDevices"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.heartbeat"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KaasNodeSpec {
    /// Kubernetes node this describes.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// gRPC endpoint of the node's executor, `http://host:port`.
    #[schemars(length(min = 1, max = 512))]
    pub executor_endpoint: String,
    /// Devices of the node.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub devices: Vec<NodeDevice>,
}

/// One device of a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDevice {
    /// Stable device ID (GPU UUID, or `cpu`).
    pub id: String,
    /// GPU or CPU.
    pub kind: DeviceKind,
    /// Model name reported by the driver.
    pub model: String,
    /// Matching `AcceleratorClass`, when one matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_class: Option<String>,
    /// Memory the executor may use on it, in bytes.
    pub memory_bytes: u64,
    /// Kernel slots.
    pub slots: u32,
    /// `kaas.dev/gpu-share` or `kaas.dev/cpu-share` units it is advertised as.
    pub shares: u32,
}

/// Live state of a node, refreshed with every heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KaasNodeStatus {
    /// Last time the device plugin reported; a stale heartbeat takes the node out of placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Time>,
    /// Healthy devices.
    #[serde(default)]
    pub healthy_devices: u32,
    /// Per-device health and load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceStatus>,
    /// Functions resident on this node's devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resident_functions: Vec<ResidentFunction>,
    /// `Ready` while the executor serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Health and load of one device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Device ID, as in the spec.
    pub id: String,
    /// Whether it accepts work.
    pub healthy: bool,
    /// Why it is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes not allocated by the executor.
    #[serde(default)]
    pub free_memory_bytes: u64,
    /// Kernels waiting for a slot.
    #[serde(default)]
    pub queue_depth: u32,
}

/// A function kept resident on a device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResidentFunction {
    /// Namespace of the `KernelFunction`.
    pub namespace: String,
    /// Name of the `KernelFunction`.
    pub name: String,
    /// Device it is resident on.
    pub device: String,
}
