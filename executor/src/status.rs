//! Node status: what the executor reports to subscribers (the gateway, the device plugin).

use std::sync::Arc;

use crate::backend::{Backend, DeviceInfo};
use crate::proto;

/// One device's state.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSnapshot {
    /// What the device is.
    pub info: DeviceInfo,
    /// Whether it accepts work.
    pub healthy: bool,
    /// Why not.
    pub message: String,
    /// Bytes free.
    pub free_memory_bytes: u64,
    /// Requests waiting for a slot on this node.
    pub queue_depth: u32,
    /// Kernels running.
    pub running: u32,
    /// Functions resident (`namespace/name`).
    pub resident: Vec<String>,
    /// Predicted wait before a new request could start here, ms (see the proto).
    pub backlog_ms: f64,
    /// Its AcceleratorClass, if the node was told.
    pub accelerator_class: String,
}

/// The node's state.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSnapshot {
    /// Node name.
    pub node: String,
    /// Devices.
    pub devices: Vec<DeviceSnapshot>,
    /// Invocations answered so far.
    pub invocations_total: u64,
    /// Increases with every change.
    pub sequence: u64,
}

impl NodeSnapshot {
    pub(crate) fn new(
        node: &str,
        devices: &[Arc<dyn Backend>],
        classes: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        NodeSnapshot {
            node: node.to_string(),
            devices: devices
                .iter()
                .map(|d| {
                    let info = d.info();
                    DeviceSnapshot {
                        accelerator_class: classes.get(&info.kind).cloned().unwrap_or_default(),
                        free_memory_bytes: info.memory_bytes,
                        info,
                        healthy: true,
                        message: String::new(),
                        queue_depth: 0,
                        running: 0,
                        resident: Vec::new(),
                        backlog_ms: 0.0,
                    }
                })
                .collect(),
            invocations_total: 0,
            sequence: 0,
        }
    }

    /// Equal but for the sequence number and the invocation count (which change on
    /// every request and would make every answer a status update).
    pub(crate) fn same_state(&self, other: &NodeSnapshot) -> bool {
        self.devices == other.devices && self.node == other.node
    }
}

impl From<&NodeSnapshot> for proto::NodeStatus {
    fn from(s: &NodeSnapshot) -> Self {
        let mut resident = Vec::new();
        let devices = s
            .devices
            .iter()
            .map(|d| {
                for key in &d.resident {
                    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                    resident.push(proto::ResidentFunction {
                        namespace: namespace.into(),
                        name: name.into(),
                        device: d.info.id.clone(),
                    });
                }
                proto::DeviceStatus {
                    id: d.info.id.clone(),
                    kind: d.info.kind.clone(),
                    model: d.info.model.clone(),
                    healthy: d.healthy,
                    message: d.message.clone(),
                    memory_bytes: d.info.memory_bytes,
                    free_memory_bytes: d.free_memory_bytes,
                    slots: d.info.slots,
                    queue_depth: d.queue_depth,
                    running: d.running,
                    backlog_ms: d.backlog_ms,
                    accelerator_class: d.accelerator_class.clone(),
                }
            })
            .collect();
        proto::NodeStatus {
            node: s.node.clone(),
            devices,
            resident,
            invocations_total: s.invocations_total,
            sequence: s.sequence,
        }
    }
}
