//! `balance`: one FIFO queue, any free device (KaaS balance).

use std::collections::VecDeque;

use super::{Cx, Pick, Policy, Queued, Rank, remove_id};
use crate::model::{DeviceId, FunctionId};

/// How far past a head that fits no free device the queue is searched, so one request
/// that only fits busy devices does not idle the rest of the cluster.
pub(crate) const SCAN_LIMIT: usize = 256;

/// One FIFO queue; the oldest request that fits a free device runs on the lowest-numbered
/// free device that can take it. Warmth plays no part in the choice.
#[derive(Default)]
pub struct Balance {
    queue: VecDeque<Queued>,
}

impl Balance {
    fn find(&self, cx: &Cx) -> Option<Pick> {
        // A plain loop: the iterator-adapter form copies the pick through a misaligned
        // temporary on every call, which showed up in simulator profiles.
        for req in self.queue.iter().take(SCAN_LIMIT) {
            if !cx.is_live(req) {
                continue;
            }
            if let Some(device) = cx.first_free_fitting(req.function) {
                return Some(Pick::Run { req: *req, device, flush: false });
            }
        }
        None
    }
}

impl Policy for Balance {
    fn name(&self) -> &str {
        "balance"
    }

    fn enqueue(&mut self, _cx: &Cx, req: Queued) {
        self.queue.push_back(req);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        while self.queue.front().is_some_and(|r| !cx.is_live(r)) {
            self.queue.pop_front();
        }
        if cx.free().is_empty() {
            return None;
        }
        self.find(cx)
    }

    fn place_alone(&self, cx: &Cx, f: FunctionId) -> Option<DeviceId> {
        cx.first_free_fitting(f)
    }

    fn commit(&mut self, _cx: &Cx, pick: &Pick) {
        remove_id(&mut self.queue, pick.req().id);
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(0, req.arrival, req.seq)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn orders_by_deadline(&self) -> bool {
        false
    }

    fn admission_scope(&self, _cx: &Cx, _f: FunctionId) -> super::AdmissionScope {
        super::AdmissionScope::with(super::Ahead::All)
    }

    fn work_conserving(&self) -> bool {
        true
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.queue.drain(..).collect()
    }
}
