//! `edf`: earliest deadline first over one queue, preferring a warm device.

use std::collections::BTreeMap;

use super::balance::SCAN_LIMIT;
use super::{Cx, Pick, Policy, Queued, Rank};
use crate::model::{DeviceId, FunctionId};

/// Requests ordered by rank (rank includes the unique arrival sequence), with the
/// in-order scan past the head that EDF-like policies need.
#[derive(Default)]
pub(crate) struct RankHeap {
    queue: BTreeMap<Rank, Queued>,
}

impl RankHeap {
    pub(crate) fn push(&mut self, rank: Rank, req: Queued) {
        self.queue.insert(rank, req);
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The lowest-ranked request (cancelled ones included; prune first).
    pub(crate) fn top(&self) -> Option<&Queued> {
        self.queue.first_key_value().map(|(_, q)| q)
    }

    /// Drops cancelled requests from the top.
    pub(crate) fn prune(&mut self, cx: &Cx) {
        while self.queue.first_key_value().is_some_and(|(_, q)| !cx.is_live(q)) {
            self.queue.pop_first();
        }
    }

    /// The first of the lowest-ranked `limit` live requests for which `f` decides.
    /// Cancelled requests met on the way are dropped.
    pub(crate) fn find<T>(
        &mut self,
        cx: &Cx,
        limit: usize,
        mut f: impl FnMut(&Queued) -> Option<T>,
    ) -> Option<T> {
        self.prune(cx);
        let mut dead = Vec::new();
        let mut found = None;
        for (rank, q) in self.queue.iter().take(limit) {
            if !cx.is_live(q) {
                dead.push(*rank);
                continue;
            }
            if let Some(t) = f(q) {
                found = Some(t);
                break;
            }
        }
        for r in dead {
            self.queue.remove(&r);
        }
        found
    }

    /// Removes the request of rank `rank`.
    pub(crate) fn remove(&mut self, rank: Rank) {
        self.queue.remove(&rank);
    }

    pub(crate) fn drain(&mut self) -> Vec<Queued> {
        std::mem::take(&mut self.queue).into_values().collect()
    }
}

/// Earliest deadline first (higher priority first, then earlier deadline). The chosen
/// request runs on a free device where it is warm if there is one, else on the
/// lowest-numbered free device that can take it.
#[derive(Default)]
pub struct Edf {
    heap: RankHeap,
}

impl Policy for Edf {
    fn name(&self) -> &str {
        "edf"
    }

    fn enqueue(&mut self, cx: &Cx, req: Queued) {
        self.heap.push(self.rank(cx, &req), req);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        if cx.free().is_empty() {
            self.heap.prune(cx);
            return None;
        }
        self.heap.find(cx, SCAN_LIMIT, |req| {
            cx.best_free(req.function).map(|device| Pick::Run { req: *req, device, flush: false })
        })
    }

    fn place_alone(&self, cx: &Cx, f: FunctionId) -> Option<DeviceId> {
        cx.best_free(f)
    }

    fn commit(&mut self, cx: &Cx, pick: &Pick) {
        self.heap.remove(self.rank(cx, pick.req()));
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(req.priority, req.deadline, req.seq)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn admission_scope(&self, _cx: &Cx, _f: FunctionId) -> super::AdmissionScope {
        super::AdmissionScope::with(super::Ahead::EarlierDeadline)
    }

    fn work_conserving(&self) -> bool {
        true
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.heap.drain()
    }
}
