//! `exclusive`: devices dedicated per function (KaaS exclusive workers).

use super::flows::Flows;
use super::{Cx, Pick, Policy, Queued, Rank};
use crate::devset::DeviceSet;
use crate::model::{DeviceId, FunctionId};

/// Every device belongs to at most one function, like a dedicated worker process. A
/// function runs only on its own devices; when they are all busy it may take a free
/// device nobody owns. A function with no device takes one from the largest holder that
/// has a free device it can use; that device's resident state is flushed (the worker is
/// replaced), so the next run there is cold. Requests of one function run in arrival
/// order; functions are served in the order of their oldest waiting request.
pub struct Exclusive {
    flows: Flows,
    owner: Vec<Option<FunctionId>>,
    owned: Vec<DeviceSet>,
    /// Devices nobody owns yet.
    unowned: DeviceSet,
}

impl Default for Exclusive {
    fn default() -> Self {
        Exclusive {
            flows: Flows::by_head(),
            owner: Vec::new(),
            owned: Vec::new(),
            unowned: DeviceSet::new(0),
        }
    }
}

impl Exclusive {
    fn owned(&self, f: FunctionId) -> Option<&DeviceSet> {
        self.owned.get(f.0 as usize)
    }

    fn count(&self, f: FunctionId) -> usize {
        self.owned(f).map_or(0, DeviceSet::len)
    }

    /// Device for `f` now, and whether it changes hands from another function.
    fn device_for(&self, cx: &Cx, f: FunctionId) -> Option<(DeviceId, bool)> {
        if let Some(own) = self.owned(f).filter(|o| !o.is_empty())
            && let Some(d) = cx.free().iter_common(own).find(|&d| cx.fits(f, d))
        {
            return Some((d, false));
        }
        // A free device nobody owns (`unowned` is exactly the devices without an owner;
        // once every device has had a function it stays empty).
        if !self.unowned.is_empty()
            && let Some(d) = cx.free().iter_common3(cx.runnable(f), &self.unowned).find(|&d| cx.fits(f, d))
        {
            return Some((d, false));
        }
        let candidates = || cx.free().iter_common(cx.runnable(f)).filter(|&d| cx.fits(f, d));
        if self.count(f) > 0 {
            return None;
        }
        // Steal from the largest holder; ties go to the lowest device.
        candidates()
            .filter_map(|d| self.owner[d.0 as usize].map(|g| (self.count(g), d)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, d)| (d, true))
    }
}

impl Policy for Exclusive {
    fn name(&self) -> &str {
        "exclusive"
    }

    fn enqueue(&mut self, _cx: &Cx, req: Queued) {
        self.flows.push(req.function, req, req.seq);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        let n = cx.cluster.devices.len();
        if self.owner.len() < n {
            self.owner.resize(n, None);
            self.unowned = DeviceSet::new(n);
            for d in 0..n {
                self.unowned.insert(DeviceId(d as u32));
            }
        }
        loop {
            if cx.free().is_empty() {
                return None;
            }
            let unowned_free = !self.unowned.is_empty() && self.unowned.intersects(cx.free());
            let mut dead = None;
            let mut found = None;
            for (_, f) in self.flows.ordered() {
                // A flow that owns devices, none of them free, can only use an unowned one.
                if !unowned_free && self.owned(f).is_some_and(|o| !o.is_empty() && !o.intersects(cx.free())) {
                    continue;
                }
                let Some(&(req, _)) = self.flows.flows[f.0 as usize].front() else { continue };
                if !cx.is_live(&req) {
                    dead = Some(f);
                    break;
                }
                if let Some((device, flush)) = self.device_for(cx, f) {
                    found = Some(Pick::Run { req, device, flush });
                    break;
                }
            }
            match dead {
                Some(f) => {
                    self.flows.head(cx, f);
                }
                None => return found,
            }
        }
    }

    fn commit(&mut self, cx: &Cx, pick: &Pick) {
        let f = pick.req().function;
        self.flows.pop(f);
        if let Pick::Run { device, .. } = *pick {
            let n = cx.cluster.devices.len();
            if self.owned.len() <= f.0 as usize {
                self.owned.resize_with(f.0 as usize + 1, || DeviceSet::new(n));
            }
            if let Some(old) = self.owner[device.0 as usize]
                && old != f
            {
                self.owned[old.0 as usize].remove(device);
            }
            self.owner[device.0 as usize] = Some(f);
            self.unowned.remove(device);
            self.owned[f.0 as usize].insert(device);
        }
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(0, req.arrival, req.seq)
    }

    fn orders_by_deadline(&self) -> bool {
        false
    }

    fn admission_scope(&self, cx: &Cx, f: FunctionId) -> super::AdmissionScope {
        // A function with workers runs on them (or on a free unowned device). One without
        // takes a free device that never had an owner if there is one (its own flow
        // ahead), else the first device that frees for it, in the order of the oldest
        // waiting requests (everything queued ahead). Either way a load its requests need
        // first is queued here, in this policy's order, so that it claims a worker as they
        // would: a load the engine placed on a device this policy gives to others would
        // leave the function without one (heavy-tailed at 3x: 0.05 -> 0.25 of requests in
        // time; hetero-cold at 2x: 0.76 -> 0.87).
        match self.owned(f).filter(|o| !o.is_empty()) {
            Some(own) => {
                let mut devices = own.clone();
                if !self.unowned.is_empty() {
                    for d in self.unowned.iter() {
                        devices.insert(d);
                    }
                }
                super::AdmissionScope {
                    devices: Some(devices),
                    replicate: false,
                    ..super::AdmissionScope::with(super::Ahead::Flow)
                }
            }
            // While a device that never had an owner is free, it takes that one, warm where
            // the function is resident.
            None if self.owner.len() < cx.cluster.devices.len() || self.unowned.intersects(cx.free()) => {
                super::AdmissionScope {
                    replicate: false,
                    claim: true,
                    ..super::AdmissionScope::with(super::Ahead::Flow)
                }
            }
            None => super::AdmissionScope {
                replicate: false,
                claim: true,
                ..super::AdmissionScope::with(super::Ahead::All)
            },
        }
    }

    fn len(&self) -> usize {
        self.flows.len
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.flows.drain()
    }
}
