//! The gateway's model of the cluster: each function as the scheduler sees it (runtimes
//! per class, learned from measured executions), and the scheduler rebuilt over the nodes
//! and devices it knows.

use super::*;

/// Runtimes measured for one function on one device kind.
#[derive(Clone, Copy, Debug)]
pub(super) struct Measured {
    pub(super) mean: f64,
    pub(super) deviation: f64,
    pub(super) samples: u64,
}

impl Actor {
    /// The scheduler's function model for a definition.
    pub(super) fn model(&self, def: &proto::FunctionDef) -> Function {
        let runtime = self
            .slots
            .iter()
            .map(|(n, dev)| {
                let d = self.nodes[*n].devices.iter().find(|d| &d.id == dev)?;
                let buildable = match d.kind.as_str() {
                    "gpu" => def.modules.iter().all(|m| m.cuda.is_some()),
                    _ => def.modules.iter().all(|m| !m.wasm.is_empty()),
                };
                let key = (format!("{}/{}", def.namespace, def.name), d.kind.clone());
                let declared = def.runtime_ms.get(&d.kind).copied().unwrap_or(1.0);
                let runtime = self
                    .measured
                    .get(&key)
                    .filter(|m| m.samples >= 8)
                    .map_or(declared, |m| m.mean + 2.0 * m.deviation);
                buildable.then(|| ms(runtime))
            })
            .collect();
        let load_time = self
            .slots
            .iter()
            .map(|(n, dev)| {
                let kind =
                    self.nodes[*n].devices.iter().find(|d| &d.id == dev).map_or("cpu", |d| d.kind.as_str());
                ms(def.load_ms.get(kind).copied().unwrap_or(10.0))
            })
            .collect();
        let consts: u64 =
            def.buffers.iter().filter(|b| b.kind == proto::BufferKind::Const as i32).map(|b| b.size).sum();
        let working: u64 =
            def.buffers.iter().filter(|b| b.kind != proto::BufferKind::Const as i32).map(|b| b.size).sum();
        Function {
            name: format!("{}/{}", def.namespace, def.name),
            tenant: def.namespace.clone(),
            runtime,
            load_time,
            resident_bytes: consts,
            working_bytes: working,
            deadline: ms(def.deadline_ms as f64),
            weight: def.weight.max(1),
            priority: def.priority,
            kernel_shares: vec![1.0],
            reserved_rate: (def.expected_rate > 0.0).then_some(def.expected_rate),
        }
    }

    /// Rebuilds the scheduler over the current healthy devices. Queued requests move to
    /// the new one; requests in flight finish against the old generation.
    pub(super) fn rebuild(&mut self) -> Result<(), GatewayError> {
        let mut cluster = Cluster::default();
        self.slots.clear();
        for (ni, n) in self.nodes.iter().enumerate() {
            if !n.up {
                continue;
            }
            for d in n.devices.iter().filter(|d| d.healthy) {
                let kind = if d.kind == "gpu" { DeviceKind::Gpu } else { DeviceKind::Cpu };
                cluster.add_class(
                    AcceleratorClass {
                        name: format!("{}/{}", n.name, d.id),
                        kind,
                        speed: if kind == DeviceKind::Gpu { 1.0 } else { 0.05 },
                        memory_bytes: d.memory_bytes.max(1),
                        slots: d.slots.max(1),
                        price_per_hour: self.config.prices.get(&d.kind).copied().unwrap_or(1.0),
                    },
                    1,
                );
                self.slots.push((ni, d.id.clone()));
            }
        }
        let mut config = self.config.scheduler.clone();
        config.granularity = kaas_scheduler::Granularity::Request;
        let mut sched = Scheduler::new(cluster, config).map_err(|e| GatewayError::BadInput(e.to_string()))?;
        self.fids.clear();
        let defs: Vec<Arc<proto::FunctionDef>> = self.functions.values().cloned().collect();
        for def in defs {
            let id =
                sched.add_function(self.model(&def)).map_err(|e| GatewayError::BadInput(e.to_string()))?;
            self.fids.insert(format!("{}/{}", def.namespace, def.name), id);
        }
        self.generation += 1;
        self.sched = Some(sched);
        // Requests in flight finish without the new scheduler knowing them; queued ones
        // move to it.
        self.by_req.clear();
        for p in self.pending.values_mut() {
            p.req = None;
        }
        let now = self.now();
        let queued: Vec<u64> =
            self.pending.iter().filter(|(_, p)| !p.dispatched).map(|(gid, _)| *gid).collect();
        for gid in queued {
            let p = self.pending.remove(&gid).expect("listed");
            self.resubmit(gid, p, now);
        }
        let healthy = self.slots.len();
        self.metrics.healthy_devices.set(healthy as i64);
        self.ready.send_replace(healthy > 0);
        debug!(devices = healthy, generation = self.generation, "scheduler rebuilt");
        Ok(())
    }

    /// Folds a measured service time into the function's model (EWMA), refreshing the
    /// scheduler's view every 16 samples.
    pub(super) fn learn(&mut self, key: &str, kind: &str, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let e = self.measured.entry((key.to_string(), kind.to_string())).or_insert(Measured {
            mean: ms,
            deviation: 0.0,
            samples: 0,
        });
        if e.samples > 0 {
            e.deviation = 0.9 * e.deviation + 0.1 * (ms - e.mean).abs();
            e.mean = 0.9 * e.mean + 0.1 * ms;
        }
        e.samples += 1;
        if e.samples % 16 == 8
            && let (Some(def), Some(&fid)) = (self.functions.get(key).cloned(), self.fids.get(key))
        {
            let model = self.model(&def);
            if let Err(e) = self.sched().update_function(fid, model) {
                warn!(function = key, "updating the model: {e}");
            }
        }
    }
}
