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

    /// Per device, the wait a request arriving now would see before it could start (ms),
    /// as the node's scheduler predicts it ([`Scheduler::backlogs_ms`], the same the
    /// simulator's `per-node` router reads): what gateways route by. Quantised to 0.5 ms
    /// so that noise does not publish a status every time.
    fn backlogs(&self) -> Vec<f64> {
        self.sched.backlogs_ms(self.now()).into_iter().map(|b| (b * 2.0).round() / 2.0).collect()
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
                let healthy = health.is_ok() && self.sched.is_healthy(dev);
                self.metrics.device(
                    &info.id,
                    info.memory_bytes.saturating_sub(free),
                    info.memory_bytes,
                    info.slots,
                    healthy,
                );
                DeviceSnapshot {
                    running: info.slots - self.sched.free_slots(dev).min(info.slots),
                    healthy,
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
        self.metrics.queued.set(queued as i64);
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
