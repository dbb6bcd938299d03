//! `cfs-affinity`: per-function virtual time charged by weight, with a penalty for
//! devices where the function is not warm (KaaS affinity).

use super::flows::Flows;
use super::{Cx, Pick, Policy, Queued, Rank};
use crate::model::{DeviceId, FunctionId};

/// Each function is a flow with a virtual time; running an invocation on a device of
/// class `c` charges `runtime(c) / weight`. A flow that becomes backlogged again starts
/// at the smallest virtual time of the backlogged flows (never below its own), so idle
/// flows cannot hoard credit.
///
/// Decision: if the flow with the smallest virtual time is warm on a free device it runs
/// there. Otherwise the lowest-numbered free device that some flow can use takes the flow
/// minimising `vt + penalty`, where the penalty is zero on a warm device and
/// `affinityPenalty × runtime(c) / weight` (default 10 runs' worth) on a cold one.
pub struct CfsAffinity {
    flows: Flows,
    penalty: f64,
    /// Virtual time of the last dispatch: where a flow restarts when none is backlogged.
    clock: u64,
}

impl CfsAffinity {
    /// A policy with the given cold-device penalty (in runs of the function).
    pub fn new(penalty: f64) -> Self {
        CfsAffinity { flows: Flows::default(), penalty, clock: 0 }
    }

    fn charge(cx: &Cx, f: FunctionId, d: DeviceId) -> u64 {
        cx.runtime_on(f, cx.class_of(d)).unwrap_or(0) / cx.weight(f) as u64
    }

    fn choose(&mut self, cx: &Cx) -> Option<(FunctionId, DeviceId)> {
        let (_, first) = self.flows.ordered().next()?;
        if let Some(d) = cx.first_free_warm(first) {
            return Some((first, d));
        }
        for d in cx.free().iter() {
            let mut best: Option<(u64, FunctionId)> = None;
            for (vt, f) in self.flows.ordered() {
                if best.is_some_and(|(k, _)| k <= vt) {
                    break;
                }
                if !cx.runnable(f).contains(d) || !cx.fits(f, d) {
                    continue;
                }
                let key = if cx.is_warm(f, d) {
                    vt
                } else {
                    vt + (self.penalty * Self::charge(cx, f, d) as f64) as u64
                };
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, f));
                }
            }
            if let Some((_, f)) = best {
                return Some((f, d));
            }
        }
        None
    }
}

impl Policy for CfsAffinity {
    fn name(&self) -> &str {
        "cfs-affinity"
    }

    fn enqueue(&mut self, _cx: &Cx, req: Queued) {
        let floor = self.flows.min_tag().unwrap_or(self.clock);
        let flow = self.flows.flow(req.function);
        if flow.is_empty() {
            flow.tag = flow.tag.max(floor);
        }
        self.flows.push(req.function, req, req.seq);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        loop {
            // Cancelled heads are dropped as they are met; the search restarts after each.
            let (_, first) = self.flows.ordered().next()?;
            if self.flows.head(cx, first).is_none() {
                continue;
            }
            if cx.free().is_empty() {
                return None;
            }
            let (f, device) = self.choose(cx)?;
            let queued_head = self.flows.flows[f.0 as usize].front().map(|h| h.0);
            match self.flows.head(cx, f) {
                Some((req, _)) if Some(req) == queued_head => {
                    return Some(Pick::Run { req, device, flush: false });
                }
                _ => continue,
            }
        }
    }

    fn commit(&mut self, cx: &Cx, pick: &Pick) {
        let req = *pick.req();
        let f = req.function;
        self.flows.pop(f);
        if let Pick::Run { device, .. } = pick {
            let vt = self.flows.flows[f.0 as usize].tag;
            self.clock = self.clock.max(vt);
            self.flows.retag(f, vt + Self::charge(cx, f, *device));
        }
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        let vt = self.flows.flows.get(req.function.0 as usize).map_or(0, |f| f.tag);
        Rank::new(0, vt, req.seq)
    }

    fn len(&self) -> usize {
        self.flows.len
    }

    fn orders_by_deadline(&self) -> bool {
        false
    }

    fn admission_scope(&self, _cx: &Cx, _f: FunctionId) -> super::AdmissionScope {
        super::AdmissionScope::with(super::Ahead::FlowShare)
    }

    fn work_conserving(&self) -> bool {
        true
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.flows.drain()
    }
}
