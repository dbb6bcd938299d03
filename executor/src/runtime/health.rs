//! The actor's device health checks and the node status it publishes.

use super::*;

impl Actor {
    pub(super) fn check_health(&mut self) {
        for (i, d) in self.devices.clone().iter().enumerate() {
            let healthy = d.health().is_ok();
            let dev = DeviceId(i as u32);
            if healthy == self.sched.is_healthy(dev) {
                continue;
            }
            warn!(device = %d.info().id, healthy, "device health changed");
            for lost in self.sched.set_device_health(dev, healthy) {
                if let Some(p) = self.pending.remove(&lost.id) {
                    self.answer(p, Err(ExecError::Unavailable(format!("device {} failed", d.info().id))));
                }
            }
        }
    }

    /// Per device, the wait a request arriving now would see before it could start (ms):
    /// the remaining predicted time of what runs there, plus the device's slot-weighted
    /// share of queued work its kind can run, per slot; 0 with a slot free and nothing
    /// queued. This is what gateways route by.
    fn backlogs(&self) -> Vec<f64> {
        let n = self.devices.len();
        let info: Vec<_> = self.devices.iter().map(|d| d.info()).collect();
        let mut running = vec![0.0f64; n];
        let mut queued: HashMap<&str, f64> = HashMap::new();
        let now = Instant::now();
        for p in self.pending.values() {
            let est = |kind: &str| {
                self.runtime_ewma
                    .get(&(p.f.key(), kind.to_string()))
                    .map(|m| m.predicted())
                    .or(p.f.runtime_ms.get(kind).copied())
                    .unwrap_or(1.0)
            };
            match (p.device, p.started) {
                (Some(d), Some(at)) => {
                    let spent = now.duration_since(at).as_secs_f64() * 1000.0;
                    running[d] += (est(&info[d].kind) - spent).max(0.0);
                }
                _ => {
                    let kinds: Vec<&str> = {
                        let mut k: Vec<&str> = info
                            .iter()
                            .zip(self.devices.iter())
                            .filter(|(_, d)| d.can_run(&p.f))
                            .map(|(i, _)| i.kind.as_str())
                            .collect();
                        // Devices of a kind need not be adjacent.
                        k.sort_unstable();
                        k.dedup();
                        k
                    };
                    for k in &kinds {
                        *queued.entry(k).or_default() += est(k) / kinds.len() as f64;
                    }
                }
            }
        }
        let mut kind_slots: HashMap<&str, u32> = HashMap::new();
        for (i, d) in info.iter().enumerate() {
            if self.sched.is_healthy(DeviceId(i as u32)) {
                *kind_slots.entry(d.kind.as_str()).or_default() += d.slots.max(1);
            }
        }
        info.iter()
            .enumerate()
            .map(|(i, d)| {
                let slots = d.slots.max(1) as f64;
                let q = queued.get(d.kind.as_str()).copied().unwrap_or(0.0);
                if q == 0.0 && self.sched.free_slots(DeviceId(i as u32)) > 0 {
                    return 0.0;
                }
                let share = slots / kind_slots.get(d.kind.as_str()).copied().unwrap_or(1).max(1) as f64;
                // Quantised to 0.5 ms so that noise does not publish a status every time.
                (((running[i] + q * share) / slots) * 2.0).round() / 2.0
            })
            .collect()
    }

    pub(super) fn publish(&mut self) {
        self.published = Instant::now();
        let backlogs = self.backlogs();
        let devices: Vec<DeviceSnapshot> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let info = d.info();
                let dev = DeviceId(i as u32);
                let health = d.health();
                let free = d.free_memory();
                self.metrics.memory_in_use(&info.id, info.memory_bytes.saturating_sub(free));
                DeviceSnapshot {
                    running: info.slots - self.sched.free_slots(dev).min(info.slots),
                    healthy: health.is_ok() && self.sched.is_healthy(dev),
                    message: health.err().unwrap_or_default(),
                    free_memory_bytes: free,
                    queue_depth: 0,
                    backlog_ms: backlogs[i],
                    accelerator_class: self
                        .config
                        .accelerator_classes
                        .get(&info.kind)
                        .cloned()
                        .unwrap_or_default(),
                    resident: self
                        .sched
                        .residents(dev)
                        .into_iter()
                        .map(|f| self.defs[f.0 as usize].0.key())
                        .collect(),
                    info,
                }
            })
            .collect();
        let queued = self.sched.queued() as u32;
        self.status.send_if_modified(|s| {
            let mut next = s.clone();
            next.devices = devices;
            for d in &mut next.devices {
                d.queue_depth = queued;
            }
            next.invocations_total = self.invocations;
            if next.same_state(s) {
                return false;
            }
            next.sequence = s.sequence + 1;
            *s = next;
            true
        });
    }
}
