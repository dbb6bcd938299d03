//! What `deadline` admission keeps besides the engine's own state ([`Backlog`]): built
//! from scratch when admission or the policy changes, its kept slot ends refilled from the
//! running cells when too few are left, and, in test builds, checked against the devices.

use super::backlog::{Backlog, ClassSlots, NO_ZONE, Zones};
use super::*;

impl Scheduler {
    /// (Re)builds what deadline admission reads from the current state, or drops it when
    /// admission is not `deadline`.
    pub(crate) fn retrack(&mut self) {
        if self.config.admission != AdmissionMode::Deadline {
            self.track = None;
            self.inflow.clear();
            return;
        }
        let t = self.snapshot();
        if !t.deadline_order {
            self.inflow.clear();
        }
        self.track = Some(t);
    }

    /// The policy's zones (see [`Zones`]), empty: none where the policy has none, or
    /// where its sets overlap or name devices the cluster does not have.
    fn zones(&self) -> Zones {
        let cx = cx!(self, 0);
        let sets = self.policy.admission_zones(&cx);
        let (n, classes) = (self.cluster.devices.len(), self.cluster.classes.len());
        if sets.is_empty() {
            return Zones::default();
        }
        let mut zones = Zones {
            of_device: vec![NO_ZONE; n],
            slots: vec![ClassSlots::default(); sets.len() * classes],
            order: vec![Vec::new(); sets.len()],
        };
        for (z, set) in sets.iter().enumerate() {
            for d in set.iter() {
                let di = d.0 as usize;
                if di >= n || zones.of_device[di] != NO_ZONE {
                    return Zones::default();
                }
                zones.of_device[di] = z as u32;
                let c = self.cluster.devices[di].class.0;
                if !zones.order[z].contains(&c) {
                    zones.order[z].push(c);
                }
            }
        }
        zones
    }

    /// Every class's slots over the devices `keep` selects, read afresh from the running
    /// cells (test builds check what is kept against it).
    #[cfg(debug_assertions)]
    fn fresh_slots(&self, keep: impl Fn(usize) -> bool) -> Vec<ClassSlots> {
        let mut fresh = vec![ClassSlots::default(); self.cluster.classes.len()];
        for (i, dev) in self.cluster.devices.iter().enumerate().filter(|&(i, _)| keep(i)) {
            self.add_device_slots(i, &mut fresh[dev.class.0 as usize]);
        }
        fresh
    }

    /// Adds device `di`'s free slots (when it is healthy) and busy slots to `c`.
    fn add_device_slots(&self, di: usize, c: &mut ClassSlots) {
        if self.v.healthy.contains(DeviceId(di as u32)) {
            c.free += self.free_slots[di] as u64;
        }
        for &(id, end) in &self.running[self.running_base[di]..self.running_base[di + 1]] {
            if id != NOBODY {
                c.start(end);
            }
        }
    }

    /// Checks zone `z`'s kept slots against its devices read afresh, and that `scope` is
    /// the zone's set (test builds).
    #[cfg(debug_assertions)]
    pub(super) fn check_zone(&self, t: &Backlog, z: usize, scope: Option<&crate::devset::DeviceSet>) {
        if let Some(scope) = scope {
            for i in 0..self.cluster.devices.len() {
                let (in_zone, in_scope) =
                    (t.zones.of_device[i] as usize == z, scope.contains(DeviceId(i as u32)));
                assert_eq!(in_zone, in_scope, "device {i}: in zone {z} {in_zone}, in scope {in_scope}");
            }
        }
        let classes = self.cluster.classes.len();
        for (c, fresh) in self.fresh_slots(|i| t.zones.of_device[i] as usize == z).iter().enumerate() {
            t.zones.slots[z * classes + c].check(fresh, &format!("zone {z} class {c}"));
        }
    }

    /// Checks every class's kept slots against its devices read afresh (test builds).
    #[cfg(debug_assertions)]
    pub(super) fn check_classes(&self, t: &Backlog) {
        for (c, fresh) in self.fresh_slots(|_| true).iter().enumerate() {
            t.classes[c].check(fresh, &format!("class {c}"));
        }
    }

    /// Gathers the busy-slot ends of device `di`'s class, and of its zone's devices of
    /// that class, afresh from the running cells where too few are kept (see
    /// [`ClassSlots`]).
    pub(super) fn refill_slots(&mut self, di: usize) {
        let Some(t) = &mut self.track else { return };
        let class = self.cluster.devices[di].class.0 as usize;
        let classes = self.cluster.classes.len();
        let zone = t.zones.of_device.get(di).copied().filter(|&z| z != NO_ZONE);
        let mut scratch = std::mem::take(&mut t.scratch);
        let gather = |in_zone: Option<u32>, of_device: &[u32], scratch: &mut Vec<Nanos>| {
            scratch.clear();
            for d in self.v.class_sets[class].iter() {
                let d = d.0 as usize;
                if in_zone.is_some_and(|z| of_device[d] != z) {
                    continue;
                }
                let cells = &self.running[self.running_base[d]..self.running_base[d + 1]];
                scratch.extend(cells.iter().filter(|c| c.0 != NOBODY).map(|c| c.1));
            }
        };
        if t.classes[class].short() {
            gather(None, &t.zones.of_device, &mut scratch);
            t.classes[class].refill(&mut scratch);
        }
        if let Some(z) = zone
            && t.zones.slots[z as usize * classes + class].short()
        {
            gather(Some(z), &t.zones.of_device, &mut scratch);
            t.zones.slots[z as usize * classes + class].refill(&mut scratch);
        }
        t.scratch = scratch;
    }

    /// What deadline admission would keep, computed from scratch.
    pub(super) fn snapshot(&self) -> Backlog {
        let horizon = self.functions.iter().map(|f| f.deadline).max().unwrap_or(0);
        let mut t = Backlog::new(self.cluster.classes.len(), horizon.max(crate::model::SEC));
        t.zones = self.zones();
        t.deadline_order = self.policy.orders_by_deadline();
        for (i, dev) in self.cluster.devices.iter().enumerate() {
            t.on_device(i, dev.class.0 as usize, |c| self.add_device_slots(i, c));
        }
        let mut now = 0;
        for (i, r) in self.requests.iter().enumerate() {
            // Warm-ups wait outside the policy and hold no queued work until they run.
            if r.phase == Phase::Queued && !self.warmup_at(i) {
                now = now.max(r.request.arrival);
                let hot = self.v.hot[r.request.function.0 as usize];
                t.queue(0, i, r.request.function, hot.weight, hot.best as i64, r.request.deadline);
            }
        }
        t.by_deadline.advance(now);
        t
    }
}
