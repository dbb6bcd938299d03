//! Topologies: how the simulated cluster is scheduled.
//!
//! - `pool`: one scheduler over every device, the ideal a deployment is compared with.
//! - `per-node`: devices grouped in nodes, each with its own scheduler (what each
//!   executor runs), behind a router that does what every gateway replica does: rank the
//!   nodes' devices with [`kaas_scheduler::route`] from the backlog each node last
//!   reported plus what it sent there since, and spill over to the next node when one
//!   refuses. So a user simulates what they deploy.

use kaas_scheduler::route::{self, Candidate};
use kaas_scheduler::{Cluster, Device, DeviceId, Function, FunctionId, Nanos, Scheduler, to_ms};
use serde::{Deserialize, Serialize};

/// How the cluster is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// One scheduler over all devices.
    #[default]
    Pool,
    /// A scheduler per node behind a router.
    PerNode,
}

pub use kaas_scheduler::route::MAX_TRIES;

/// The global device indices of each node: one node for `pool`; for `per-node`, each
/// class's devices (added class by class, so contiguous) cut into nodes of `per_node[c]`
/// devices (all of the class when `None`).
pub fn layout(topology: Topology, cluster: &Cluster, per_node: &[Option<usize>]) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..cluster.devices.len()).collect();
    if topology == Topology::Pool {
        return vec![all];
    }
    let mut nodes = Vec::new();
    for c in 0..cluster.classes.len() {
        let of_class: Vec<usize> =
            all.iter().copied().filter(|&d| cluster.devices[d].class.0 as usize == c).collect();
        let size = per_node.get(c).copied().flatten().unwrap_or(of_class.len()).max(1);
        nodes.extend(of_class.chunks(size).map(<[usize]>::to_vec));
    }
    nodes
}

/// A node's own cluster: every class (so class ids and profiles line up), its devices.
pub fn node_cluster(cluster: &Cluster, devices: &[usize]) -> Cluster {
    Cluster {
        classes: cluster.classes.clone(),
        devices: devices
            .iter()
            .map(|&d| Device { class: cluster.devices[d].class, name: cluster.devices[d].name.clone() })
            .collect(),
    }
}

/// A function as a node's executor knows it: profiles of the classes the node has.
pub fn node_function(f: &Function, node: &Cluster) -> Function {
    let mut f = f.clone();
    for (c, r) in f.runtime.iter_mut().enumerate() {
        if !node.devices.iter().any(|d| d.class.0 as usize == c) {
            *r = None;
        }
    }
    f
}

/// What the router charged a request with, to take back when it is answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Charge {
    reports: u64,
    device: u32,
    run_ms: f64,
}

#[derive(Clone, Debug, Default)]
struct DeviceReport {
    backlog_ms: f64,
    running: u32,
    healthy: bool,
    residents: Vec<FunctionId>,
    charged: u32,
    charged_ms: f64,
}

#[derive(Clone, Debug, Default)]
struct NodeReport {
    devices: Vec<DeviceReport>,
    reports: u64,
    at: Option<Nanos>,
}

/// The router: what one gateway knows of each node, and the order it offers a request in.
pub struct Router {
    policy: String,
    interval: Nanos,
    nodes: Vec<NodeReport>,
}

impl Router {
    /// A router over `nodes` nodes that take a new report each `interval` (the executor
    /// publishes at most every 20 ms).
    pub fn new(policy: &str, interval: Nanos, nodes: usize) -> Self {
        Router { policy: policy.to_string(), interval, nodes: vec![NodeReport::default(); nodes] }
    }

    /// Takes node `n`'s report if the last one is at least an interval old. The report
    /// includes what was routed there before it, so charges start over.
    pub fn refresh(&mut self, n: usize, s: &Scheduler, now: Nanos) {
        let node = &mut self.nodes[n];
        if node.at.is_some_and(|at| now < at.saturating_add(self.interval)) {
            return;
        }
        let backlogs = s.backlogs_ms(now);
        node.devices = (0..s.cluster().devices.len())
            .map(|i| {
                let d = DeviceId(i as u32);
                let slots = s.cluster().class_of(d).slots;
                DeviceReport {
                    backlog_ms: backlogs[i],
                    running: slots - s.free_slots(d).min(slots),
                    healthy: s.is_healthy(d),
                    residents: s.residents(d),
                    charged: 0,
                    charged_ms: 0.0,
                }
            })
            .collect();
        node.reports += 1;
        node.at = Some(now);
    }

    /// Where a request of `f` (as in the global function table) with a relative
    /// deadline goes, best first: (node, device on it, predicted runtime ms). Several
    /// devices of a node may be listed; the caller offers each node once.
    pub fn order(
        &self,
        f: &Function,
        fid: FunctionId,
        deadline: Nanos,
        clusters: &[&Cluster],
    ) -> Vec<(usize, u32, f64)> {
        let mut places = Vec::new();
        let mut cands = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let cluster = clusters[n];
            for (i, d) in node.devices.iter().enumerate() {
                let class_id = cluster.devices[i].class;
                let Some(run) = f.runtime_on(class_id).filter(|_| d.healthy) else { continue };
                let class = &cluster.classes[class_id.0 as usize];
                let cold_ms = if d.residents.binary_search(&fid).is_ok() {
                    0.0
                } else {
                    to_ms(f.load_time[class_id.0 as usize])
                };
                let run_ms = to_ms(run);
                places.push((n, i as u32, run_ms));
                cands.push(Candidate {
                    wait_ms: route::wait_ms(d.backlog_ms, class.slots, d.running, d.charged, d.charged_ms),
                    cold_ms,
                    run_ms,
                    price_per_hour: class.price_per_hour,
                });
            }
        }
        route::rank(&self.policy, to_ms(deadline), &cands).into_iter().map(|i| places[i]).collect()
    }

    /// Charges a device with a request routed there.
    pub fn charge(&mut self, n: usize, device: u32, run_ms: f64) -> Charge {
        let node = &mut self.nodes[n];
        let d = &mut node.devices[device as usize];
        d.charged += 1;
        d.charged_ms += run_ms;
        Charge { reports: node.reports, device, run_ms }
    }

    /// Takes a charge back once its request is answered, unless a report came since.
    pub fn uncharge(&mut self, n: usize, c: Charge) {
        let node = &mut self.nodes[n];
        if node.reports != c.reports {
            return;
        }
        if let Some(d) = node.devices.get_mut(c.device as usize) {
            d.charged = d.charged.saturating_sub(1);
            d.charged_ms = (d.charged_ms - c.run_ms).max(0.0);
        }
    }
}
