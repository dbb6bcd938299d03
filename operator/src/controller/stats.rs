//! `KernelFunction.status` from every gateway replica's traffic (DESIGN.md §4).
//!
//! Every [`INTERVAL`], each replica publishes what it answered since it started (a
//! [`Snapshot`]) as ConfigMap `kaas-gateway-stats-<replica>` in the Lease's namespace,
//! labelled [`STATS_LABEL`] and owned by the replica's Pod when its UID is known, so a
//! replica that goes away takes its counts with it. The leader lists those ConfigMaps,
//! sums them per function and writes invocations, SLO attainment, latency percentiles,
//! cold starts and rejections to each function's status — with its own field manager
//! ([`STATS_FIELD_MANAGER`]), so it never races the reconciler's conditions — and only
//! when a figure changed.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kaas_crds::{KernelFunction, KernelFunctionStatus};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::gateway::Gateway;
use crate::gateway::stats::{FunctionCounts, FunctionFigures, Snapshot, merge};

/// How often replicas publish and the leader writes status.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Label (value `"true"`) of the replicas' stats ConfigMaps.
pub const STATS_LABEL: &str = "kaas.dev/gateway-stats";
/// The ConfigMap key holding the snapshot's JSON.
pub const STATS_KEY: &str = "stats.json";
/// Field manager of the status figures.
pub const STATS_FIELD_MANAGER: &str = "kaas-operator-stats";
/// Functions one replica publishes at most (the busiest): a ConfigMap holds 1 MiB, and
/// a function's counts take a few hundred bytes.
pub const MAX_FUNCTIONS: usize = 2000;

/// The replica's Pod, to own its ConfigMap.
#[derive(Clone, Debug)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
}

/// The name of a replica's stats ConfigMap.
pub fn configmap_name(replica: &str) -> String {
    let clean: String = replica
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    let mut name = format!("kaas-gateway-stats-{}", clean.trim_matches(|c| c == '-' || c == '.'));
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// A replica's snapshot as the ConfigMap it applies.
pub fn snapshot_configmap(snapshot: &Snapshot, namespace: &str, owner: Option<&PodRef>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(&snapshot.replica)),
            namespace: Some(namespace.into()),
            labels: Some([(STATS_LABEL.to_string(), "true".to_string())].into()),
            owner_references: owner.map(|p| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some(
            [(STATS_KEY.to_string(), serde_json::to_string(snapshot).unwrap_or_else(|_| "{}".into()))].into(),
        ),
        ..Default::default()
    }
}

/// Reads the snapshots out of listed ConfigMaps; one that does not parse is skipped with
/// a warning (it cannot take the others down).
pub fn snapshots(cms: &[ConfigMap]) -> Vec<Snapshot> {
    cms.iter()
        .filter_map(|cm| {
            let text = cm.data.as_ref()?.get(STATS_KEY)?;
            match serde_json::from_str::<Snapshot>(text) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(configmap = %cm.name_any(), error = %e, "unreadable gateway stats: skipped");
                    None
                }
            }
        })
        .collect()
}

/// Whether the status already shows these figures.
pub fn shows(status: Option<&KernelFunctionStatus>, f: &FunctionFigures) -> bool {
    let Some(s) = status else { return false };
    let latency = match (f.p50_ms, f.p95_ms, f.p99_ms) {
        (Some(p50), Some(p95), Some(p99)) => Some((p50, p95, p99)),
        _ => None,
    };
    s.invocations == f.invocations
        && s.cold_starts == f.cold_starts
        && s.rejections == f.rejections
        && s.slo_attainment == f.slo_attainment
        && s.latency_ms.as_ref().map(|l| (l.p50, l.p95, l.p99)) == latency
}

/// The server-side-apply body of a function's figures.
pub fn status_patch(f: &FunctionFigures) -> serde_json::Value {
    let mut status = serde_json::json!({
        "invocations": f.invocations,
        "coldStarts": f.cold_starts,
        "rejections": f.rejections,
    });
    if let Some(a) = f.slo_attainment {
        status["sloAttainment"] = a.into();
    }
    if let (Some(p50), Some(p95), Some(p99)) = (f.p50_ms, f.p95_ms, f.p99_ms) {
        status["latencyMs"] = serde_json::json!({ "p50": p50, "p95": p95, "p99": p99 });
    }
    serde_json::json!({
        "apiVersion": KernelFunction::api_version(&()),
        "kind": KernelFunction::kind(&()),
        "status": status,
    })
}

/// Applies this replica's snapshot.
pub async fn publish(client: &Client, namespace: &str, cm: &ConfigMap) -> kube::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(&cm.name_any(), &PatchParams::apply(STATS_FIELD_MANAGER).force(), &Patch::Apply(cm)).await?;
    Ok(())
}

/// The leader's step: sums every replica's snapshot and writes the figures of each
/// function whose status shows others. Returns how many statuses were written.
pub async fn write_statuses(
    client: &Client,
    namespace: &str,
    functions: &[std::sync::Arc<KernelFunction>],
) -> kube::Result<usize> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let listed = cms.list(&ListParams::default().labels(&format!("{STATS_LABEL}=true"))).await?;
    let merged: BTreeMap<String, FunctionCounts> = merge(&snapshots(&listed.items));
    let mut written = 0;
    for kf in functions {
        let ns = kf.namespace().unwrap_or_default();
        let Some(counts) = merged.get(&format!("{ns}/{}", kf.name_any())) else { continue };
        let figures = counts.figures();
        if shows(kf.status.as_ref(), &figures) {
            continue;
        }
        let api: Api<KernelFunction> = Api::namespaced(client.clone(), &ns);
        let patch = status_patch(&figures);
        match api
            .patch_status(
                &kf.name_any(),
                &PatchParams::apply(STATS_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => written += 1,
            // Deleted since the store saw it: nothing to write.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// A replica's publisher of its counts (and, while it leads, the status writer).
pub struct StatsTask {
    /// API client.
    pub client: Client,
    /// This replica's gateway.
    pub gateway: Gateway,
    /// Namespace of the ConfigMaps (the Lease's).
    pub namespace: String,
    /// This replica's identity.
    pub replica: String,
    /// Its Pod, when known.
    pub owner: Option<PodRef>,
}

impl StatsTask {
    /// Publishes every [`INTERVAL`]; writes status while `leader` says so; until `stop`.
    pub async fn run(
        self,
        functions: Store<KernelFunction>,
        leader: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let StatsTask { client, gateway, namespace, replica, owner } = self;
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let snapshot = gateway.stats_snapshot(&replica, MAX_FUNCTIONS);
            if !snapshot.functions.is_empty() {
                let cm = snapshot_configmap(&snapshot, &namespace, owner.as_ref());
                if let Err(e) = publish(&client, &namespace, &cm).await {
                    warn!(error = %e, "publishing gateway stats failed (retried next interval)");
                }
            }
            if *leader.borrow() {
                match write_statuses(&client, &namespace, &functions.state()).await {
                    Ok(n) => debug!(written = n, "function status figures"),
                    Err(e) => {
                        warn!(error = %e, "writing function status figures failed (retried next interval)")
                    }
                }
            }
        }
    }
}
