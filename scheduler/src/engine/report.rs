//! What a node scheduler reports to the routers in front of it: per device, the wait a
//! request arriving now would see before it could start. The executor publishes it in
//! its status stream, the simulator's `per-node` router reads it the same way.

use super::*;
use crate::model::MS;

impl Scheduler {
    /// Per device, in ms: the remaining predicted time of what runs there (the rest of
    /// the dispatched kernels and of requests waiting between kernels), plus the device's
    /// slot-weighted share of the queued work its class can run, all per slot. Queued
    /// work that several classes can run is split evenly over them. 0 on a device with a
    /// free slot while nothing waits for its class.
    pub fn backlogs_ms(&self, now: Nanos) -> Vec<f64> {
        let n = self.cluster.devices.len();
        let classes = self.cluster.classes.len();
        let mut running = vec![0f64; n];
        for (d, r) in running.iter_mut().enumerate() {
            for &(id, end) in &self.running[self.running_base[d]..self.running_base[d + 1]] {
                if id != NOBODY {
                    *r += end.saturating_sub(now) as f64;
                }
            }
        }
        let mut class_slots = vec![0u64; classes];
        for (i, dev) in self.cluster.devices.iter().enumerate() {
            if self.v.healthy.contains(DeviceId(i as u32)) {
                class_slots[dev.class.0 as usize] += self.cluster.classes[dev.class.0 as usize].slots as u64;
            }
        }
        let mut queued = vec![0f64; classes];
        let mut can = Vec::with_capacity(classes);
        for (i, r) in self.requests.iter().enumerate() {
            let f = &self.functions[r.request.function.0 as usize];
            let rest = |device: DeviceId, from: usize| -> f64 {
                let class = self.cluster.devices[device.0 as usize].class;
                (from..f.kernel_count()).filter_map(|k| f.kernel_runtime(class, k)).sum::<Nanos>() as f64
            };
            match r.phase {
                Phase::Free => {}
                Phase::Running { device, kernel, kernels } => {
                    running[device.0 as usize] += rest(device, (kernel + kernels) as usize);
                }
                Phase::Continuing { device, kernel } => {
                    running[device.0 as usize] += rest(device, kernel as usize);
                }
                Phase::Queued if self.warmup_at(i) => {}
                Phase::Queued => {
                    let costs = &self.v.costs[r.request.function.0 as usize * classes..][..classes];
                    can.clear();
                    can.extend((0..classes).filter(|&c| costs[c].whole != NONE && class_slots[c] > 0));
                    for &c in &can {
                        queued[c] += costs[c].whole as f64 / can.len() as f64;
                    }
                }
            }
        }
        (0..n)
            .map(|i| {
                let class = self.cluster.devices[i].class.0 as usize;
                let slots = self.cluster.classes[class].slots.max(1) as f64;
                let q = queued[class];
                if q == 0.0 && self.free_slots[i] > 0 {
                    return 0.0;
                }
                let share = slots / class_slots[class].max(1) as f64;
                (running[i] + q * share) / slots / MS as f64
            })
            .collect()
    }
}
