//! The node's `KaasNode`: devices, their classes, health, free memory, resident functions,
//! the executor endpoint and a heartbeat. Built by a pure function from the executor's
//! status; written with server-side apply by a loop that tolerates an unreachable API
//! server (it logs, counts and tries again; kubelet and executor paths never wait on it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kaas_crds::{
    AcceleratorClass, DeviceKind, DeviceStatus, KaasNode, KaasNodeSpec, KaasNodeStatus, NodeDevice,
    ResidentFunction, class_for_device,
};
use kaas_executor::status::NodeSnapshot;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::metrics::PluginMetrics;

/// Field manager of what the device plugin writes.
pub const FIELD_MANAGER: &str = "kaas.dev/device-plugin";

/// What the node says about itself besides the executor's status.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    /// Kubernetes node name (also the `KaasNode` name).
    pub node_name: String,
    /// gRPC endpoint of the executor.
    pub endpoint: String,
    /// Shares advertised per executor device.
    pub shares: Vec<u32>,
}

/// When the node's readiness last changed: `previous` (readiness, since when) carries
/// over while readiness stays the same; a change starts now.
pub fn ready_since(previous: Option<(bool, Timestamp)>, ready: bool, now: Timestamp) -> Timestamp {
    match previous {
        Some((was, since)) if was == ready => since,
        _ => now,
    }
}

/// The `KaasNode` (spec and status) for a snapshot of the executor. The `Ready`
/// condition's `lastTransitionTime` is `ready_since` (see [`ready_since`]).
pub fn kaas_node(
    facts: &NodeFacts,
    snap: &NodeSnapshot,
    classes: &[AcceleratorClass],
    labels: &BTreeMap<String, String>,
    now: Timestamp,
    ready_since: Timestamp,
) -> KaasNode {
    let mut devices = Vec::new();
    let mut status = KaasNodeStatus { heartbeat: Some(Time(now)), ..Default::default() };
    for (i, d) in snap.devices.iter().enumerate() {
        let kind = if d.info.kind == "gpu" { DeviceKind::Gpu } else { DeviceKind::Cpu };
        devices.push(NodeDevice {
            id: d.info.id.clone(),
            kind,
            model: d.info.model.clone(),
            accelerator_class: class_for_device(classes, kind, &d.info.model, labels)
                .and_then(|c| c.metadata.name.clone()),
            memory_bytes: d.info.memory_bytes,
            slots: d.info.slots,
            shares: facts.shares.get(i).copied().unwrap_or(0),
        });
        status.healthy_devices += u32::from(d.healthy);
        status.devices.push(DeviceStatus {
            id: d.info.id.clone(),
            healthy: d.healthy,
            message: (!d.message.is_empty()).then(|| d.message.clone()),
            free_memory_bytes: d.free_memory_bytes,
            queue_depth: d.queue_depth,
        });
        for key in &d.resident {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            status.resident_functions.push(ResidentFunction {
                namespace: namespace.into(),
                name: name.into(),
                device: d.info.id.clone(),
            });
        }
    }
    status.conditions.push(Condition {
        type_: "Ready".into(),
        status: if status.healthy_devices > 0 { "True" } else { "False" }.into(),
        reason: if status.healthy_devices > 0 { "ExecutorServing" } else { "NoHealthyDevice" }.into(),
        message: format!("{} of {} devices healthy", status.healthy_devices, snap.devices.len()),
        last_transition_time: Time(ready_since),
        observed_generation: None,
    });
    let mut node = KaasNode::new(
        &facts.node_name,
        KaasNodeSpec {
            node_name: facts.node_name.clone(),
            executor_endpoint: facts.endpoint.clone(),
            devices,
        },
    );
    node.status = Some(status);
    node
}

/// Keeps the `KaasNode` current through the API server.
pub struct Publisher {
    /// API client.
    pub client: Client,
    /// Node facts.
    pub facts: NodeFacts,
    /// Heartbeat period; a health change is published sooner.
    pub interval: Duration,
    /// Metrics.
    pub metrics: Arc<PluginMetrics>,
}

/// Limit of one round of API calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two publications.
const MIN_GAP: Duration = Duration::from_secs(1);

impl Publisher {
    /// Publishes every `interval` and on health changes until `shutdown` turns true.
    pub async fn run(self, mut status: watch::Receiver<NodeSnapshot>, mut shutdown: watch::Receiver<bool>) {
        let mut labels = BTreeMap::new();
        let mut classes = Vec::new();
        let mut last_health: Vec<bool>;
        let mut failing = false;
        // Readiness and since when, as last published (seeded from the object on start).
        let mut ready: Option<(bool, Timestamp)> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let snap = status.borrow_and_update().clone();
            last_health = snap.devices.iter().map(|d| d.healthy).collect();
            match tokio::time::timeout(
                CALL_TIMEOUT,
                self.publish(&snap, &mut labels, &mut classes, &mut ready),
            )
            .await
            {
                Ok(Ok(())) => {
                    self.metrics.publishes.inc();
                    if failing {
                        info!(node = %self.facts.node_name, "KaasNode published again");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    self.metrics.publish_errors.inc();
                    // One warning per outage, then quieter: the API server may be down for a while.
                    if !failing {
                        warn!(node = %self.facts.node_name, error = %e, "cannot publish KaasNode; kubelet and executor keep serving");
                    } else {
                        debug!(error = %e, "KaasNode publish failed again");
                    }
                    failing = true;
                }
                Err(_) => {
                    self.metrics.publish_errors.inc();
                    if !failing {
                        warn!(node = %self.facts.node_name, "KaasNode publish timed out; kubelet and executor keep serving");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(MIN_GAP).await;
            let deadline = tokio::time::Instant::now() + self.interval.saturating_sub(MIN_GAP);
            // Until the heartbeat is due, wake early only for a change of device health.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.changed() => return,
                    r = status.changed() => {
                        if r.is_err() {
                            return;
                        }
                        let health: Vec<bool> = status.borrow().devices.iter().map(|d| d.healthy).collect();
                        if health != last_health {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn publish(
        &self,
        snap: &NodeSnapshot,
        labels: &mut BTreeMap<String, String>,
        classes: &mut Vec<AcceleratorClass>,
        ready: &mut Option<(bool, Timestamp)>,
    ) -> Result<(), kube::Error> {
        // Labels and classes are refreshed each round; on a read error the last ones stand.
        match Api::<Node>::all(self.client.clone()).get(&self.facts.node_name).await {
            Ok(n) => *labels = n.metadata.labels.unwrap_or_default(),
            Err(e) => debug!(error = %e, "cannot read Node labels"),
        }
        match Api::<AcceleratorClass>::all(self.client.clone()).list(&ListParams::default()).await {
            Ok(l) => *classes = l.items,
            Err(e) => debug!(error = %e, "cannot list AcceleratorClasses"),
        }
        let api = Api::<KaasNode>::all(self.client.clone());
        if ready.is_none() {
            // After a restart, keep the transition time the object already carries.
            if let Ok(Some(existing)) = api.get_opt(&self.facts.node_name).await {
                *ready = existing
                    .status
                    .iter()
                    .flat_map(|s| &s.conditions)
                    .find(|c| c.type_ == "Ready")
                    .map(|c| (c.status == "True", c.last_transition_time.0));
            }
        }
        let now = Timestamp::now();
        let healthy = snap.devices.iter().any(|d| d.healthy);
        let since = ready_since(*ready, healthy, now);
        let node = kaas_node(&self.facts, snap, classes, labels, now, since);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let mut spec_only = node.clone();
        spec_only.status = None;
        api.patch(&self.facts.node_name, &pp, &Patch::Apply(&spec_only)).await?;
        let status = serde_json::json!({
            "apiVersion": KaasNode::api_version(&()),
            "kind": KaasNode::kind(&()),
            "status": node.status,
        });
        api.patch_status(&self.facts.node_name, &pp, &Patch::Apply(&status)).await?;
        *ready = Some((healthy, since));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kaas_crds::AcceleratorClassSpec;
    use kaas_executor::backend::DeviceInfo;
    use kaas_executor::status::DeviceSnapshot;

    use super::*;

    fn device(id: &str, kind: &str, model: &str, healthy: bool, resident: &[&str]) -> DeviceSnapshot {
        DeviceSnapshot {
            info: DeviceInfo {
                id: id.into(),
                kind: kind.into(),
                model: model.into(),
                memory_bytes: 16 << 30,
                slots: 4,
            },
            healthy,
            message: if healthy { String::new() } else { "CUDA_ERROR_ECC_UNCORRECTABLE".into() },
            free_memory_bytes: 10 << 30,
            queue_depth: 3,
            running: 1,
            resident: resident.iter().map(|s| s.to_string()).collect(),
            backlog_ms: 0.0,
            accelerator_class: String::new(),
        }
    }

    #[test]
    fn ready_transition_time_moves_only_when_readiness_changes() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let (t0, t1, t2) = (t("2026-11-28T10:00:00Z"), t("2026-11-28T10:00:10Z"), t("2026-11-28T10:00:20Z"));
        assert_eq!(ready_since(None, true, t0), t0);
        assert_eq!(ready_since(Some((true, t0)), true, t1), t0, "a heartbeat keeps the time");
        assert_eq!(ready_since(Some((true, t0)), false, t2), t2, "a change moves it");
        assert_eq!(ready_since(Some((false, t2)), false, t2), t2);
    }

    #[test]
    fn kaas_node_describes_devices_classes_health_and_residents() {
        let facts = NodeFacts {
            node_name: "gpu-1".into(),
            endpoint: "http://10.0.0.7:7070".into(),
            shares: vec![8, 4],
        };
        let snap = NodeSnapshot {
            node: "gpu-1".into(),
            devices: vec![
                device("GPU-1234", "gpu", "Tesla T4", false, &["team-a/saxpy"]),
                device("cpu", "cpu", "AMD EPYC 7B13", true, &["team-a/saxpy", "team-b/matmul"]),
            ],
            invocations_total: 5,
            sequence: 9,
        };
        let class = |name: &str, kind, model: &str| {
            let mut c = AcceleratorClass::new(
                name,
                AcceleratorClassSpec {
                    kind,
                    model: model.into(),
                    node_selector: Default::default(),
                    memory_bytes: 1,
                    relative_speed: 1.0,
                    cost_per_hour: 0.0,
                    slots_per_device: 1,
                },
            );
            c.metadata.name = Some(name.into());
            c
        };
        let classes =
            [class("nvidia-t4", DeviceKind::Gpu, "Tesla T4"), class("cpu-wasm", DeviceKind::Cpu, "any")];
        let now: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        let earlier: Timestamp = "2026-11-28T09:00:00Z".parse().unwrap();
        let n = kaas_node(&facts, &snap, &classes, &BTreeMap::new(), now, earlier);
        assert_eq!(n.metadata.name.as_deref(), Some("gpu-1"));
        assert_eq!(n.spec.executor_endpoint, "http://10.0.0.7:7070");
        assert_eq!(n.spec.devices[0].accelerator_class.as_deref(), Some("nvidia-t4"));
        assert_eq!(n.spec.devices[0].shares, 8);
        assert_eq!(n.spec.devices[1].accelerator_class.as_deref(), Some("cpu-wasm"));
        let st = n.status.unwrap();
        assert_eq!(st.heartbeat, Some(Time(now)));
        assert_eq!(st.healthy_devices, 1);
        assert!(!st.devices[0].healthy);
        assert_eq!(st.devices[0].message.as_deref(), Some("CUDA_ERROR_ECC_UNCORRECTABLE"));
        assert_eq!(st.devices[1].message, None);
        assert_eq!(st.resident_functions.len(), 3);
        assert_eq!(
            st.resident_functions[2],
            ResidentFunction { namespace: "team-b".into(), name: "matmul".into(), device: "cpu".into() }
        );
        assert_eq!(st.conditions[0].status, "True");
        assert_eq!(st.conditions[0].last_transition_time, Time(earlier));
        // The object passes the CRD's own schema.
        let v = serde_json::to_value(KaasNode { status: Some(st), ..n }).unwrap();
        let crds: Vec<_> = kaas_crds::crds().into_iter().map(|(_, c)| c).collect();
        kaas_crds::validate::validate_object(&crds, &v).unwrap();
    }
}
