//! The routing model: where a request of a function could go, predicted from each
//! executor's last report, what this gateway sent since, and runtimes it measured.

use kaas_scheduler::route::{Candidate, rank, wait_ms};

use super::*;

/// A routing choice: a node and the device on it the prediction was for.
#[derive(Clone)]
pub(crate) struct Choice {
    pub(crate) node: String,
    pub(crate) incarnation: u64,
    pub(crate) client: NodeClient,
    pub(crate) kind: String,
    /// The device charged, the node's report count then, and the work charged (ms).
    pub(crate) charge: (usize, u64, f64),
    /// Whether the node has this version of the function.
    pub(crate) registered: bool,
    /// Whether the node has the current policy.
    pub(crate) has_policy: bool,
}

/// Whether a device kind has a build of every module of the function.
pub(crate) fn buildable(def: &proto::FunctionDef, kind: &str) -> bool {
    match kind {
        "gpu" => def.modules.iter().all(|m| m.cuda.is_some()),
        _ => def.modules.iter().all(|m| !m.wasm.is_empty()),
    }
}

impl State {
    /// The function's runtime on a node's device: measured here once there are enough
    /// samples; else its class's profile; else a profiled class of the same kind scaled
    /// by relative speeds; else the kind's profile.
    fn run_ms(&self, def: &proto::FunctionDef, key: &str, node: &str, device: &proto::DeviceStatus) -> f64 {
        let kind = &device.kind;
        if let Some(m) =
            self.measured.get(&(key.to_string(), node.to_string(), kind.clone())).filter(|m| m.trusted())
        {
            return m.predicted();
        }
        let class = &device.accelerator_class;
        if let Some(r) = def.class_runtime_ms.get(class) {
            return *r;
        }
        let classes = &self.config.classes;
        if let Some(c) = classes.get(class).filter(|c| c.relative_speed > 0.0) {
            let scaled = def
                .class_runtime_ms
                .iter()
                .filter_map(|(p, r)| {
                    let p = classes.get(p).filter(|p| p.kind == *kind && p.relative_speed > 0.0)?;
                    Some(r * p.relative_speed / c.relative_speed)
                })
                .min_by(f64::total_cmp);
            if let Some(r) = scaled {
                return r;
            }
        }
        def.runtime_ms.get(kind).copied().unwrap_or(1.0)
    }

    fn load_ms(&self, def: &proto::FunctionDef, device: &proto::DeviceStatus) -> f64 {
        def.class_load_ms
            .get(&device.accelerator_class)
            .or_else(|| def.load_ms.get(&device.kind))
            .copied()
            .unwrap_or(10.0)
    }

    fn price(&self, device: &proto::DeviceStatus) -> f64 {
        self.config
            .classes
            .get(&device.accelerator_class)
            .map(|c| c.price_per_hour)
            .or_else(|| self.config.prices.get(&device.kind).copied())
            .unwrap_or(1.0)
    }

    /// The best node for a request, not counting `tried`, charged with the request.
    pub(crate) fn route(
        &mut self,
        def: &proto::FunctionDef,
        key: &str,
        deadline_ms: f64,
        tried: &[String],
    ) -> Option<Choice> {
        let mut places: Vec<(String, usize)> = Vec::new();
        let mut cands: Vec<Candidate> = Vec::new();
        for (name, n) in self.nodes.iter().filter(|(name, n)| n.up && !tried.contains(name)) {
            for (i, d) in n.devices.iter().enumerate() {
                let s = &d.status;
                if !s.healthy || !buildable(def, &s.kind) {
                    continue;
                }
                let run_ms = self.run_ms(def, key, name, s);
                let wait_ms = wait_ms(s.backlog_ms, s.slots, s.running, d.charged, d.charged_ms);
                let cold_ms = if n.resident.contains(&(key.to_string(), s.id.clone())) {
                    0.0
                } else {
                    self.load_ms(def, s)
                };
                let price_per_hour = self.price(s);
                places.push((name.clone(), i));
                cands.push(Candidate { wait_ms, cold_ms, run_ms, price_per_hour });
            }
        }
        let best = *rank(&self.config.scheduler.policy.name, deadline_ms, &cands).first()?;
        let (name, i) = places.swap_remove(best);
        let run_ms = cands[best].run_ms;
        let version = self.policy_version;
        let n = self.nodes.get_mut(&name).expect("listed above");
        let d = &mut n.devices[i];
        d.charged += 1;
        d.charged_ms += run_ms;
        Some(Choice {
            charge: (i, n.reports, run_ms),
            kind: d.status.kind.clone(),
            incarnation: n.incarnation,
            client: n.client.clone(),
            registered: n.registered.get(key) == Some(&def.version),
            has_policy: n.policy_sent == version,
            node: name,
        })
    }

    /// Takes a request's charge back once it is answered, unless a report came since
    /// (which reset the charges): charges stand only for requests sent and not yet seen
    /// in a report, so a node whose status does not change still looks free.
    pub(crate) fn uncharge(&mut self, choice: &Choice) {
        let (i, reports, run_ms) = choice.charge;
        let Some(n) = self.nodes.get_mut(&choice.node) else { return };
        if n.incarnation != choice.incarnation || n.reports != reports {
            return;
        }
        if let Some(d) = n.devices.get_mut(i) {
            d.charged = d.charged.saturating_sub(1);
            d.charged_ms = (d.charged_ms - run_ms).max(0.0);
        }
    }

    /// Folds an executor-measured runtime into the routing model.
    pub(crate) fn learn(&mut self, key: &str, node: &str, kind: &str, exec_ms: f64) {
        self.measured
            .entry((key.to_string(), node.to_string(), kind.to_string()))
            .and_modify(|e| e.observe(exec_ms))
            .or_insert_with(|| Measured::first(exec_ms));
    }
}
