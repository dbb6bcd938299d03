//! `mqfq-sticky`: multi-queue fair queueing with per-function flows, virtual start and
//! finish tags, throttling and sticky keep-alive (after MQFQ-Sticky, arXiv 2507.08954).

use super::flows::Flows;
use super::{Cx, Pick, Policy, Queued, Rank};
use crate::model::Nanos;

/// Each function is a flow. A request arriving at flow `f` gets the start tag
/// `S = max(F_f, V)` and moves the flow's finish tag to `F_f = S + runtime / weight`
/// (runtime on its fastest class); `V` is the smallest start tag among backlogged flows.
/// A flow whose head is more than `throttle` ahead of `V` is not dispatched (throttled).
/// Among the other flows, in start-tag order, the first with a free device that fits
/// runs, on a device where it is warm if one is free. After each run the function's state
/// is kept resident for `keep_alive` (sticky), so a flow that pauses briefly stays warm.
pub struct MqfqSticky {
    flows: Flows,
    finish: Vec<u64>,
    throttle: Nanos,
    keep_alive: Nanos,
    clock: u64,
}

impl MqfqSticky {
    /// A policy with the given throttle window and keep-alive, both in nanoseconds.
    pub fn new(throttle: Nanos, keep_alive: Nanos) -> Self {
        MqfqSticky { flows: Flows::by_head_tagged(), finish: Vec::new(), throttle, keep_alive, clock: 0 }
    }

    fn virtual_time(&self) -> u64 {
        self.flows.min_tag().unwrap_or(self.clock)
    }
}

impl Policy for MqfqSticky {
    fn name(&self) -> &str {
        "mqfq-sticky"
    }

    fn enqueue(&mut self, cx: &Cx, req: Queued) {
        let f = req.function;
        let i = f.0 as usize;
        if i >= self.finish.len() {
            self.finish.resize(i + 1, 0);
        }
        let start = self.finish[i].max(self.virtual_time());
        self.finish[i] = start + cx.best_runtime(f).unwrap_or(0) / cx.weight(f) as u64;
        self.flows.push(f, req, start);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        loop {
            if cx.free().is_empty() {
                return None;
            }
            let limit = self.virtual_time().saturating_add(self.throttle);
            let mut dead = None;
            let mut found = None;
            for (_, f) in self.flows.ordered().take_while(|&(tag, _)| tag <= limit) {
                let Some(&(req, _)) = self.flows.flows[f.0 as usize].front() else { continue };
                if !cx.is_live(&req) {
                    dead = Some(f);
                    break;
                }
                if let Some(device) = cx.best_free(f) {
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
        let Some((_, start)) = self.flows.pop(f) else { return };
        self.clock = self.clock.max(start);
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        let tag = self.flows.flows.get(req.function.0 as usize).map_or(0, |f| f.tag);
        Rank::new(0, tag, req.seq)
    }

    fn len(&self) -> usize {
        self.flows.len
    }

    fn orders_by_deadline(&self) -> bool {
        false
    }

    fn admission_scope(&self, _cx: &Cx, _f: crate::model::FunctionId) -> super::AdmissionScope {
        super::AdmissionScope::with(super::Ahead::FlowShare)
    }

    fn keep_alive(&self) -> Nanos {
        self.keep_alive
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.flows.drain()
    }
}
