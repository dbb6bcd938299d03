//! The pure middle of the KernelFunction reconciler: validation the schema cannot do,
//! function-level admission against the capacity that meets the deadline, placement, and
//! status conditions. No I/O: the world comes in, a decision goes out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kaas_crds::{
    AcceleratorClass, BufferKind, DeviceKind, KaasNode, KernelFunction, KernelFunctionStatus, Placement,
};
use kaas_executor::proto;
use kube::ResourceExt;

use crate::convert::ConvertError;

/// Everything a decision depends on besides the function itself.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Accelerator classes.
    pub classes: Vec<AcceleratorClass>,
    /// Nodes of the pool.
    pub nodes: Vec<KaasNode>,
    /// Every other KernelFunction (for their reservations).
    pub functions: Vec<KernelFunction>,
    /// Now.
    pub now: Timestamp,
    /// A node whose heartbeat is older than this is out of placement.
    pub stale_after: std::time::Duration,
}

/// What to do about one function.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The definition to serve, when admitted.
    pub def: Option<proto::FunctionDef>,
    /// The new status.
    pub status: KernelFunctionStatus,
    /// The class it was admitted on.
    pub class: Option<String>,
}

/// One condition as computed (timestamps are filled in against the old status).
#[derive(Clone, Debug, PartialEq)]
struct Cond {
    kind: &'static str,
    status: bool,
    reason: String,
    message: String,
}

impl World {
    /// Whether a node's heartbeat is fresh.
    pub fn is_live(&self, n: &KaasNode) -> bool {
        n.status.as_ref().and_then(|s| s.heartbeat.as_ref()).is_some_and(|h| {
            let age = self.now.as_second() - h.0.as_second();
            age >= -5 && (age as u64) <= self.stale_after.as_secs()
        })
    }

    fn class(&self, name: &str) -> Option<&AcceleratorClass> {
        self.classes.iter().find(|c| c.name_any() == name)
    }

    /// Healthy devices of a class on live nodes: (node, device ID, free memory).
    pub fn devices_of(&self, class: &str) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| self.is_live(n)) {
            let status = n.status.clone().unwrap_or_default();
            for d in n.spec.devices.iter().filter(|d| d.accelerator_class.as_deref() == Some(class)) {
                let st = status.devices.iter().find(|s| s.id == d.id);
                if st.is_none_or(|s| s.healthy) {
                    out.push((
                        n.name_any(),
                        d.id.clone(),
                        st.map_or(d.memory_bytes, |s| s.free_memory_bytes),
                    ));
                }
            }
        }
        out
    }
}

/// Whether condition `kind` of the function's status is `True`.
pub fn is_true(kf: &KernelFunction, kind: &str) -> bool {
    kf.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Device-seconds per second a function reserves on a class: expected rate × runtime.
fn demand(kf: &KernelFunction, class: &str) -> Option<f64> {
    let runtime = kf.spec.profile.iter().find(|p| p.accelerator_class == class)?.runtime_ms;
    Some(kf.spec.expected_rate.unwrap_or(0.0) * runtime / 1000.0)
}

/// The decision for `kf`: `def` is its converted definition (or why conversion failed).
pub fn decide(kf: &KernelFunction, world: &World, def: Result<proto::FunctionDef, ConvertError>) -> Decision {
    let old = kf.status.clone().unwrap_or_default();
    let mut conds = Vec::new();
    let mut class = None;
    let mut placements = Vec::new();
    let admitted_def = match def {
        Err(e) => {
            conds.push(Cond {
                kind: "Admitted",
                status: false,
                reason: e.reason().into(),
                message: e.to_string(),
            });
            None
        }
        Ok(def) => match admit(kf, world, &def) {
            Err((reason, message)) => {
                conds.push(Cond { kind: "Admitted", status: false, reason, message });
                None
            }
            Ok((c, message)) => {
                conds.push(Cond {
                    kind: "Admitted",
                    status: true,
                    reason: "CapacityReserved".into(),
                    message,
                });
                placements = place(kf, world, &c);
                class = Some(c);
                Some(def)
            }
        },
    };
    let admitted = admitted_def.is_some();
    let warm = placements.iter().filter(|p| p.warm).count();
    let (ready, reason, message) = match (admitted, placements.len(), warm) {
        (false, _, _) => {
            (false, "NotAdmitted", "the function is not admitted; see the Admitted condition".to_string())
        }
        (true, 0, _) => (false, "NoLiveNode", "no live node has a healthy device of its class".to_string()),
        (true, n, 0) => (
            true,
            "Serving",
            format!("served from {n} device(s); the first invocation on each pays a cold start"),
        ),
        (true, n, w) => (true, "Serving", format!("served from {n} device(s), warm on {w}")),
    };
    conds.push(Cond { kind: "Ready", status: ready, reason: reason.into(), message });
    let wanted = class.as_deref().map_or(0, |c| wanted_devices(kf, world, c));
    let degraded = admitted && placements.len() < wanted;
    conds.push(Cond {
        kind: "Degraded",
        status: degraded,
        reason: if degraded { "TooFewDevices".into() } else { "AsPlanned".into() },
        message: if degraded {
            format!("{} of the {wanted} devices it needs are live", placements.len())
        } else {
            "placement as planned".into()
        },
    });
    let conditions =
        conds.into_iter().map(|c| condition(&old.conditions, kf.metadata.generation, world.now, c)).collect();
    Decision {
        def: admitted_def,
        class,
        status: KernelFunctionStatus {
            conditions,
            observed_generation: kf.metadata.generation,
            placements,
            ..old
        },
    }
}

/// The cheapest class with a build, room in memory, a runtime within the deadline and
/// capacity left for the reserved rate; or why there is none.
fn admit(
    kf: &KernelFunction,
    world: &World,
    def: &proto::FunctionDef,
) -> Result<(String, String), (String, String)> {
    let has_cuda = def.modules.iter().all(|m| m.cuda.is_some());
    let has_wasm = def.modules.iter().all(|m| !m.wasm.is_empty());
    let bytes: u64 = kf.spec.buffers.iter().map(|b| b.size).sum();
    let const_bytes: u64 =
        kf.spec.buffers.iter().filter(|b| b.kind == BufferKind::Const).map(|b| b.size).sum();
    let deadline = kf.spec.slo.deadline_ms as f64;
    let rate = kf.spec.expected_rate.unwrap_or(0.0);
    let mut candidates: Vec<(f64, String, String)> = Vec::new();
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in &world.classes {
        let name = c.name_any();
        let buildable = match c.spec.kind {
            DeviceKind::Gpu => has_cuda,
            DeviceKind::Cpu => has_wasm,
        };
        if !buildable {
            reasons.entry("NoBuild").or_default().push(name);
            continue;
        }
        if bytes > c.spec.memory_bytes {
            reasons.entry("TooLarge").or_default().push(name);
            continue;
        }
        let devices = world.devices_of(&name);
        if devices.is_empty() {
            reasons.entry("NoDevices").or_default().push(name);
            continue;
        }
        let Some(profile) = kf.spec.profile.iter().find(|p| p.accelerator_class == name) else {
            reasons.entry("NoProfile").or_default().push(name);
            continue;
        };
        if profile.runtime_ms > deadline {
            reasons.entry("TooSlow").or_default().push(name);
            continue;
        }
        let capacity = devices.len() as f64 * c.spec.slots_per_device as f64;
        let reserved: f64 = world
            .functions
            .iter()
            .filter(|o| (o.namespace(), o.name_any()) != (kf.namespace(), kf.name_any()))
            .filter(|o| is_true(o, "Admitted"))
            .filter(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.placements.first())
                    .and_then(|p| p.accelerator_class.as_deref())
                    == Some(&name)
            })
            .filter_map(|o| demand(o, &name))
            .sum();
        let need = rate * profile.runtime_ms / 1000.0;
        if reserved + need > capacity {
            reasons.entry("InsufficientCapacity").or_default().push(format!(
                "{name} (needs {need:.2} device-seconds/s, {:.2} of {capacity:.2} left)",
                capacity - reserved
            ));
            continue;
        }
        let cost = c.spec.cost_per_hour / c.spec.slots_per_device as f64 * profile.runtime_ms;
        let message = format!(
            "admitted on {name}: {rate} req/s × {} ms reserves {need:.3} of {capacity:.2} device-seconds/s ({:.3} already reserved); const data {const_bytes} bytes",
            profile.runtime_ms, reserved
        );
        candidates.push((cost, name, message));
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    if let Some((_, name, message)) = candidates.into_iter().next() {
        return Ok((name, message));
    }
    // The most actionable reason first.
    let order = ["InsufficientCapacity", "TooSlow", "NoDevices", "TooLarge", "NoProfile", "NoBuild"];
    let reason = order.iter().find(|r| reasons.contains_key(**r)).copied().unwrap_or("NoAcceleratorClass");
    let message = match reason {
        "NoAcceleratorClass" => "no AcceleratorClass exists; create one per device kind".to_string(),
        "InsufficientCapacity" => format!(
            "not enough capacity that meets the {deadline} ms deadline: {}",
            reasons[reason].join(", ")
        ),
        "TooSlow" => format!(
            "its profiled runtime exceeds the {deadline} ms deadline on {}",
            reasons[reason].join(", ")
        ),
        "NoDevices" => format!("no live node has a healthy device of {}", reasons[reason].join(", ")),
        "TooLarge" => {
            format!("its {bytes} bytes of buffers exceed the memory of {}", reasons[reason].join(", "))
        }
        "NoProfile" => format!("add a profile entry (runtimeMs) for {}", reasons[reason].join(", ")),
        _ => format!("no module build for the device kind of {}", reasons[reason].join(", ")),
    };
    Err((reason.to_string(), message))
}

/// Devices needed to keep the reserved rate below 80 % utilisation, at least one.
fn wanted_devices(kf: &KernelFunction, world: &World, class: &str) -> usize {
    let slots = world.class(class).map_or(1, |c| c.spec.slots_per_device.max(1)) as f64;
    let need = demand(kf, class).unwrap_or(0.0);
    ((need / (0.8 * slots)).ceil() as usize).max(1)
}

/// Which devices keep the function warm: of its class on live nodes, those where it is
/// already resident first, then by most free memory; as many as it needs.
fn place(kf: &KernelFunction, world: &World, class: &str) -> Vec<Placement> {
    let key = (kf.namespace().unwrap_or_default(), kf.name_any());
    let resident = |node: &str, device: &str| {
        world.nodes.iter().filter(|n| n.name_any() == node).any(|n| {
            n.status.as_ref().is_some_and(|s| {
                s.resident_functions
                    .iter()
                    .any(|r| r.namespace == key.0 && r.name == key.1 && r.device == device)
            })
        })
    };
    let mut devices: Vec<(bool, u64, String, String)> = world
        .devices_of(class)
        .into_iter()
        .map(|(node, device, free)| (resident(&node, &device), free, node, device))
        .collect();
    devices.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    devices
        .into_iter()
        .take(wanted_devices(kf, world, class))
        .map(|(warm, _, node, device)| Placement {
            node,
            device,
            accelerator_class: Some(class.to_string()),
            warm,
        })
        .collect()
}

/// A condition with its transition time kept when its status did not change.
fn condition(old: &[Condition], generation: Option<i64>, now: Timestamp, c: Cond) -> Condition {
    transition(old, c.kind, c.status, c.reason, c.message, generation, now)
}

/// The conditions of `new` whose status or reason differ from `old`'s condition of the
/// same type, or that `old` lacks, in order: each transition gets an event.
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|c| {
            old.iter()
                .find(|o| o.type_ == c.type_)
                .is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .collect()
}

/// Whether a condition in this state deserves a Warning event: `Degraded` when True,
/// every other condition when False.
pub fn is_bad(c: &Condition) -> bool {
    (c.type_ == "Degraded") == (c.status == "True")
}

/// Condition `kind` as it is now; its `lastTransitionTime` comes from the old one of the
/// same type when the status did not change, else it is `now`.
pub fn transition(
    old: &[Condition],
    kind: &str,
    status: bool,
    reason: String,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = match old.iter().find(|o| o.type_ == kind) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason,
        message,
        last_transition_time,
        observed_generation: generation,
    }
}
