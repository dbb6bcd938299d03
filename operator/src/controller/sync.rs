//! Feeds this replica's gateway from the reflector stores, on every replica (the
//! gateway serves on all of them; only the leader writes to the API):
//! live `KaasNode`s become executor connections and stale ones are dropped, admitted
//! `KernelFunction`s are resolved and registered, the `default` SchedulingPolicy is
//! applied live.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kaas_crds::{AcceleratorClass, KaasNode, KernelFunction, SchedulingPolicy};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::decide::World;
use super::sources::prefetch;
use crate::convert::function_def;
use crate::gateway::metrics::{GatewayMetrics, NodeLabel};
use crate::gateway::{ClassModel, Gateway};
use crate::policy::scheduler_config;

/// The stores the gateway is fed from.
pub struct Feeds {
    /// Classes.
    pub classes: Store<AcceleratorClass>,
    /// Nodes.
    pub nodes: Store<KaasNode>,
    /// Functions.
    pub functions: Store<KernelFunction>,
    /// Policies (the one named `default` is applied).
    pub policies: Store<SchedulingPolicy>,
}

/// Nodes the gateway should use: live ones, by name, with their endpoints (pure).
pub fn live_nodes(nodes: &[KaasNode], now: Timestamp, stale_after: Duration) -> BTreeMap<String, String> {
    let world = World { now, stale_after, ..Default::default() };
    nodes
        .iter()
        .filter(|n| world.is_live(n))
        .map(|n| (n.name_any(), n.spec.executor_endpoint.clone()))
        .collect()
}

/// Sets `kaas_gateway_node_heartbeat_age_seconds` for every KaasNode with a heartbeat
/// and drops the series of nodes gone since (`aged`: the nodes with a series).
fn heartbeat_ages(metrics: &GatewayMetrics, nodes: &[KaasNode], now: Timestamp, aged: &mut BTreeSet<String>) {
    let family = &metrics.node_heartbeat_age;
    let mut seen = BTreeSet::new();
    for n in nodes {
        let Some(h) = n.status.as_ref().and_then(|s| s.heartbeat.as_ref()) else { continue };
        let age = (now.as_millisecond() - h.0.as_millisecond()).max(0) as f64 / 1e3;
        let node = n.name_any();
        family.get_or_create(&NodeLabel { node: node.clone() }).set(age);
        seen.insert(node);
    }
    for gone in aged.difference(&seen) {
        family.remove(&NodeLabel { node: gone.clone() });
    }
    *aged = seen;
}

fn admitted(kf: &KernelFunction) -> bool {
    kf.metadata.deletion_timestamp.is_none()
        && kf
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Admitted" && c.status == "True"))
}

/// A function being served: the (uid, generation) it was resolved from, the version it
/// resolved to, and when.
type Served = ((String, Option<i64>), String, std::time::Instant);

/// How often an unchanged function's sources are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// The gateway's model of each AcceleratorClass (pure).
pub fn class_model(classes: &[AcceleratorClass]) -> BTreeMap<String, ClassModel> {
    classes
        .iter()
        .map(|c| {
            let kind = if c.spec.kind == kaas_crds::DeviceKind::Gpu { "gpu" } else { "cpu" };
            (
                c.name_any(),
                ClassModel {
                    kind: kind.into(),
                    relative_speed: c.spec.relative_speed,
                    price_per_hour: c.spec.cost_per_hour,
                },
            )
        })
        .collect()
}

/// Keeps `gateway` in line with the stores until `shutdown`.
pub async fn run(
    client: Client,
    gateway: Gateway,
    feeds: Feeds,
    stale_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut nodes: BTreeMap<String, String> = BTreeMap::new();
    // (namespace/name) → (uid, generation) registered, the version it resolved to, and
    // when it was last resolved.
    let mut functions: BTreeMap<String, Served> = BTreeMap::new();
    let mut class_models = BTreeMap::new();
    let mut policy_generation: Option<(String, Option<i64>)> = None;
    let mut aged = BTreeSet::new();
    loop {
        let all: Vec<KaasNode> = feeds.nodes.state().iter().map(|n| (**n).clone()).collect();
        let now = Timestamp::now();
        heartbeat_ages(gateway.metrics(), &all, now, &mut aged);
        let want = live_nodes(&all, now, stale_after);
        for (name, endpoint) in &want {
            if nodes.get(name) != Some(endpoint) {
                match gateway.connector().remote(endpoint) {
                    Ok(c) => {
                        info!(node = %name, %endpoint, "executor joins the gateway");
                        gateway.add_node(name, c);
                        nodes.insert(name.clone(), endpoint.clone());
                    }
                    Err(e) => warn!(node = %name, error = %e, "bad executor endpoint"),
                }
            }
        }
        for name in nodes.keys().filter(|n| !want.contains_key(*n)).cloned().collect::<Vec<_>>() {
            info!(node = %name, "executor leaves the gateway (stale heartbeat or deleted)");
            gateway.remove_node(&name);
            nodes.remove(&name);
        }

        if let Some(p) = feeds.policies.state().iter().find(|p| p.name_any() == "default") {
            let id = (p.uid().unwrap_or_default(), p.metadata.generation);
            if policy_generation.as_ref() != Some(&id) {
                match scheduler_config(&p.spec) {
                    Ok(config) => match gateway.set_scheduler(config).await {
                        Ok(()) => info!(generation = ?id.1, "SchedulingPolicy applied"),
                        Err(e) => warn!(error = %e, "SchedulingPolicy rejected by the gateway"),
                    },
                    Err(e) => warn!(error = %e, "invalid SchedulingPolicy; keeping the previous one"),
                }
                policy_generation = Some(id);
            }
        }

        let classes: Vec<AcceleratorClass> = feeds.classes.state().iter().map(|c| (**c).clone()).collect();
        let models = class_model(&classes);
        if models != class_models {
            gateway.set_classes(models.clone());
            class_models = models;
        }
        let mut seen = BTreeSet::new();
        for kf in feeds.functions.state().iter().filter(|kf| admitted(kf)) {
            let key = format!("{}/{}", kf.namespace().unwrap_or_default(), kf.name_any());
            let id = (kf.uid().unwrap_or_default(), kf.metadata.generation);
            seen.insert(key.clone());
            // Re-resolved when the resource changes, and every RESOLVE_EVERY anyway: an
            // edited ConfigMap or Secret changes the version without touching the resource.
            if functions.get(&key).is_some_and(|(had, _, at)| *had == id && at.elapsed() < RESOLVE_EVERY) {
                continue;
            }
            let def = match prefetch(&client, kf).await {
                Ok(fetched) => function_def(kf, &fetched, &classes).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match def {
                Ok(def) => {
                    let now = std::time::Instant::now();
                    if functions.get(&key).is_some_and(|(_, version, _)| *version == def.version) {
                        functions.insert(key, (id, def.version, now));
                        continue;
                    }
                    info!(function = %key, generation = ?id.1, version = %def.version, "serving");
                    let version = def.version.clone();
                    gateway.put_function(def);
                    functions.insert(key, (id, version, now));
                }
                // Retried next round; the leader's status says why if it persists.
                Err(e) => warn!(function = %key, error = %e, "cannot resolve an admitted function"),
            }
        }
        for key in functions.keys().filter(|k| !seen.contains(*k)).cloned().collect::<Vec<_>>() {
            info!(function = %key, "no longer served");
            gateway.remove_function(&key);
            functions.remove(&key);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, heartbeat: Option<Timestamp>) -> KaasNode {
        let spec = kaas_crds::KaasNodeSpec {
            node_name: name.into(),
            executor_endpoint: "http://10.0.0.1:7070".into(),
            devices: Vec::new(),
        };
        let mut n = KaasNode::new(name, spec);
        n.status = Some(kaas_crds::KaasNodeStatus {
            heartbeat: heartbeat.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            ..Default::default()
        });
        n
    }

    /// `kaas_gateway_node_heartbeat_age_seconds` (what the chart's KaasNodeHeartbeatStale
    /// alert and dashboard read; standalone mode has no KaasNodes) says each node's age
    /// and forgets a node once it is gone.
    #[test]
    fn heartbeat_ages_are_exported_per_node_and_dropped_with_the_node() {
        let metrics = GatewayMetrics::default();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let now = Timestamp::now();
        let old = now - std::time::Duration::from_secs(90);
        let mut aged = BTreeSet::new();
        heartbeat_ages(
            &metrics,
            &[node("gpu-0", Some(now)), node("gpu-1", Some(old)), node("new", None)],
            now,
            &mut aged,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("kaas_gateway_node_heartbeat_age_seconds{node=\"gpu-0\"} 0.0"), "{text}");
        assert!(text.contains("kaas_gateway_node_heartbeat_age_seconds{node=\"gpu-1\"} 90.0"), "{text}");
        assert!(!text.contains("node=\"new\""), "a node without a heartbeat has no age: {text}");
        heartbeat_ages(&metrics, &[node("gpu-0", Some(now))], now, &mut aged);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("gpu-1"), "a deleted node keeps its series: {text}");
    }
}
