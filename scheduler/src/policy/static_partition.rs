//! `static`: a fixed partition of devices per function, from policy parameters.

use super::flows::Flows;
use super::{Cx, PartitionEntry, Pick, Policy, Queued, Rank};
use crate::devset::DeviceSet;
use crate::model::FunctionId;

/// Partitions are laid out in the order the parameters list them: the first function
/// gets the lowest-numbered `devices` devices, the next the following ones, and so on.
/// Functions without a partition share the devices left over. Within its devices a
/// function runs in arrival order, on a warm device when one is free; functions are
/// served in the order of their oldest waiting request. A function whose share is empty
/// is refused at arrival.
pub struct StaticPartition {
    partitions: Vec<PartitionEntry>,
    flows: Flows,
    /// Device sets of the partitions, then the shared pool last.
    sets: Vec<DeviceSet>,
    /// Index into `sets` of each function, resolved at its first request.
    share_of_function: Vec<u32>,
}

impl StaticPartition {
    /// A policy with the given partitions.
    pub fn new(partitions: Vec<PartitionEntry>) -> Self {
        StaticPartition {
            partitions,
            flows: Flows::by_head(),
            sets: Vec::new(),
            share_of_function: Vec::new(),
        }
    }

    fn layout(&mut self, cx: &Cx) {
        if self.sets.is_empty() {
            self.sets = (0..=self.partitions.len()).map(|share| self.share_set(cx, share)).collect();
        }
    }

    fn resolve(&mut self, cx: &Cx, f: FunctionId) {
        let i = f.0 as usize;
        if i >= self.share_of_function.len() {
            self.share_of_function.resize(i + 1, u32::MAX);
        }
        if self.share_of_function[i] == u32::MAX {
            self.share_of_function[i] = self.share_of(cx, f) as u32;
        }
    }

    /// The device range `[lo, hi)` of share `share` (a partition's index, or the number
    /// of partitions for the devices left over), as [`layout`](Self::layout) lays it out.
    fn share_range(&self, cx: &Cx, share: usize) -> (u32, u32) {
        let n = cx.cluster.devices.len() as u32;
        let lo: u32 = self.partitions.iter().take(share).map(|p| p.devices).sum();
        let hi = match self.partitions.get(share) {
            Some(p) => lo + p.devices,
            None => n,
        };
        (lo.min(n), hi.min(n))
    }

    /// The devices of share `share` (see [`share_range`](Self::share_range)).
    fn share_set(&self, cx: &Cx, share: usize) -> DeviceSet {
        let (lo, hi) = self.share_range(cx, share);
        let mut set = DeviceSet::new(cx.cluster.devices.len());
        for d in lo..hi {
            set.insert(crate::model::DeviceId(d));
        }
        set
    }

    /// The share of `f`: its partition's index, or the number of partitions.
    fn share_of(&self, cx: &Cx, f: FunctionId) -> usize {
        let name = &cx.function(f).name;
        self.partitions.iter().position(|p| &p.function == name).unwrap_or(self.partitions.len())
    }

    /// The device range `[lo, hi)` of `f`'s share.
    fn range(&self, cx: &Cx, f: FunctionId) -> (u32, u32) {
        self.share_range(cx, self.share_of(cx, f))
    }
}

impl Policy for StaticPartition {
    fn name(&self) -> &str {
        "static"
    }

    fn enqueue(&mut self, cx: &Cx, req: Queued) {
        self.layout(cx);
        self.resolve(cx, req.function);
        self.flows.push(req.function, req, req.seq);
    }

    fn refuse(&self, cx: &Cx, f: FunctionId) -> Option<String> {
        let name = &cx.function(f).name;
        let n = cx.cluster.devices.len() as u32;
        let (lo, hi) = self.range(cx, f);
        let usable = (lo..hi).any(|d| cx.runnable(f).contains(crate::model::DeviceId(d)));
        (!usable).then(|| {
            format!(
                "function {name} has no usable device in the static partition ({} partitions over {n} devices; \
                 functions without one share the devices left over)",
                self.partitions.len()
            )
        })
    }

    fn orders_by_deadline(&self) -> bool {
        false
    }

    fn admission_scope(&self, cx: &Cx, f: FunctionId) -> super::AdmissionScope {
        // The share's set as laid out at the first request (admission runs before it
        // and for every arrival: a copy of the set, not a scan of names and devices).
        let resolved = self.share_of_function.get(f.0 as usize).copied().filter(|&s| s != u32::MAX);
        let (set, share) = match resolved.and_then(|s| self.sets.get(s as usize).map(|set| (s, set))) {
            Some((share, set)) => (set.clone(), share as usize),
            None => {
                let share = self.share_of(cx, f);
                (self.share_set(cx, share), share)
            }
        };
        // A function with a partition of its own waits only for its own requests; the
        // functions sharing the leftover devices are counted all together.
        let ahead = if share < self.partitions.len() { super::Ahead::Flow } else { super::Ahead::All };
        super::AdmissionScope {
            devices: Some(set),
            zone: Some(share as u32),
            ..super::AdmissionScope::with(ahead)
        }
    }

    fn admission_zones(&self, cx: &Cx) -> Vec<DeviceSet> {
        // The shares as `layout` lays them out (`sets` may not be laid out yet).
        (0..=self.partitions.len()).map(|share| self.share_set(cx, share)).collect()
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        self.layout(cx);
        loop {
            if cx.free().is_empty() {
                return None;
            }
            let mut dead = None;
            let mut found = None;
            for (_, f) in self.flows.ordered() {
                let share_index = self.share_of_function[f.0 as usize];
                if !self.sets[share_index as usize].intersects(cx.free()) {
                    continue;
                }
                let Some(&(req, _)) = self.flows.flows[f.0 as usize].front() else { continue };
                if !cx.is_live(&req) {
                    dead = Some(f);
                    break;
                }
                let share = &self.sets[share_index as usize];
                let warm = cx.free().iter_common(share).find(|&d| cx.is_warm(f, d) && cx.fits(f, d));
                let any =
                    || cx.free().iter_common(share).find(|&d| cx.runnable(f).contains(d) && cx.fits(f, d));
                if let Some(device) = warm.or_else(any) {
                    found = Some(Pick::Run { req, device, flush: false });
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

    fn commit(&mut self, _cx: &Cx, pick: &Pick) {
        let f = pick.req().function;
        self.flows.pop(f);
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(0, req.arrival, req.seq)
    }

    fn len(&self) -> usize {
        self.flows.len
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.flows.drain()
    }
}
