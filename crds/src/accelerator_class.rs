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
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
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
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// How well a class describes a device: `None` when it does not, else a rank where a
/// higher value is a more specific match.
fn match_rank(
    class: &AcceleratorClass,
    kind: DeviceKind,
    model: &str,
    labels: &BTreeMap<String, String>,
) -> Option<u8> {
    let spec = &class.spec;
    if spec.kind != kind || !spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return None;
    }
    let model_eq = spec.model.trim().eq_ignore_ascii_case(model.trim());
    match (model_eq, spec.node_selector.is_empty()) {
        (true, false) => Some(3),
        (true, true) => Some(2),
        // The node's labels name the product: the driver's spelling may differ.
        (false, false) => Some(1),
        // CPU classes describe a pool of cores, whatever their model string.
        (false, true) if kind == DeviceKind::Cpu => Some(0),
        (false, true) => None,
    }
}

/// The class a device of a node belongs to: same kind, node labels satisfying the class's
/// `nodeSelector`, and the same model (case-insensitive) unless the selector decides it. A
/// CPU class without selector takes any CPU. The most specific match wins; ties go to
/// the first name in order.
pub fn class_for_device<'a>(
    classes: &'a [AcceleratorClass],
    kind: DeviceKind,
    model: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a AcceleratorClass> {
    let mut best: Option<(u8, &AcceleratorClass)> = None;
    for c in classes {
        if let Some(rank) = match_rank(c, kind, model, labels) {
            let better = match best {
                None => true,
                Some((r, b)) => rank > r || (rank == r && c.metadata.name < b.metadata.name),
            };
            if better {
                best = Some((rank, c));
            }
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, kind: DeviceKind, model: &str, sel: &[(&str, &str)]) -> AcceleratorClass {
        let mut c = AcceleratorClass::new(
            name,
            AcceleratorClassSpec {
                kind,
                model: model.into(),
                node_selector: sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                memory_bytes: 1 << 30,
                relative_speed: 1.0,
                cost_per_hour: 1.0,
                slots_per_device: 1,
            },
        );
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn devices_match_the_most_specific_class() {
        let classes = vec![
            class("cpu-wasm", DeviceKind::Cpu, "x86_64 (WebAssembly)", &[]),
            class("h100", DeviceKind::Gpu, "NVIDIA H100 80GB HBM3", &[]),
            class("h100-labelled", DeviceKind::Gpu, "NVIDIA H100 80GB HBM3", &[("gpu", "h100")]),
            class("t4", DeviceKind::Gpu, "Tesla T4", &[("gpu", "t4")]),
        ];
        let none = BTreeMap::new();
        let h100: BTreeMap<_, _> = [("gpu".to_string(), "h100".to_string())].into();
        let t4: BTreeMap<_, _> = [("gpu".to_string(), "t4".to_string())].into();
        let name = |c: Option<&AcceleratorClass>| c.map(|c| c.metadata.name.clone().unwrap());
        assert_eq!(
            name(class_for_device(&classes, DeviceKind::Cpu, "AMD EPYC 7B13", &none)),
            Some("cpu-wasm".into())
        );
        assert_eq!(
            name(class_for_device(&classes, DeviceKind::Gpu, "nvidia h100 80gb hbm3", &none)),
            Some("h100".into())
        );
        assert_eq!(
            name(class_for_device(&classes, DeviceKind::Gpu, "NVIDIA H100 80GB HBM3", &h100)),
            Some("h100-labelled".into())
        );
        // The selector decides even when the driver spells the model differently.
        assert_eq!(name(class_for_device(&classes, DeviceKind::Gpu, "T4", &t4)), Some("t4".into()));
        assert_eq!(name(class_for_device(&classes, DeviceKind::Gpu, "NVIDIA A10G", &none)), None);
    }
}
