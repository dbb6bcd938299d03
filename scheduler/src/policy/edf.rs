//! `edf`: earliest deadline first over one queue, preferring a warm device.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::balance::SCAN_LIMIT;
use super::{Cx, Pick, Policy, Queued, Rank};

/// A request ordered by its rank (rank includes the unique arrival sequence).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Ranked(pub Rank, pub Queued);

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0)
    }
}

/// A min-heap of requests by rank with the scan-past-the-head search EDF-like policies need.
#[derive(Default)]
pub(crate) struct RankHeap {
    heap: BinaryHeap<Reverse<Ranked>>,
    scratch: Vec<Reverse<Ranked>>,
}

impl RankHeap {
    pub(crate) fn push(&mut self, rank: Rank, req: Queued) {
        self.heap.push(Reverse(Ranked(rank, req)));
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The lowest-ranked request (cancelled ones included; prune first).
    pub(crate) fn top(&self) -> Option<&Queued> {
        self.heap.peek().map(|r| &r.0.1)
    }

    /// Drops cancelled requests from the top.
    pub(crate) fn prune(&mut self, cx: &Cx) {
        while self.heap.peek().is_some_and(|r| !cx.is_live(&r.0.1)) {
            self.heap.pop();
        }
    }

    /// The first of the lowest-ranked `limit` live requests for which `f` decides.
    pub(crate) fn find<T>(
        &mut self,
        cx: &Cx,
        limit: usize,
        mut f: impl FnMut(&Queued) -> Option<T>,
    ) -> Option<T> {
        self.prune(cx);
        let top = self.heap.peek()?.0.1;
        if let Some(t) = f(&top) {
            return Some(t);
        }
        let mut found = None;
        while self.scratch.len() < limit {
            let Some(item) = self.heap.pop() else { break };
            let live = cx.is_live(&item.0.1);
            let hit = if live { f(&item.0.1) } else { None };
            if live {
                self.scratch.push(item);
            }
            if hit.is_some() {
                found = hit;
                break;
            }
        }
        self.heap.extend(self.scratch.drain(..));
        found
    }

    /// Removes the request with `id`.
    pub(crate) fn remove(&mut self, id: crate::ReqId) {
        if self.heap.peek().is_some_and(|r| r.0.1.id == id) {
            self.heap.pop();
            return;
        }
        while let Some(item) = self.heap.pop() {
            if item.0.1.id == id {
                break;
            }
            self.scratch.push(item);
        }
        self.heap.extend(self.scratch.drain(..));
    }

    pub(crate) fn drain(&mut self) -> Vec<Queued> {
        self.heap.drain().map(|r| r.0.1).collect()
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

    fn commit(&mut self, _cx: &Cx, pick: &Pick) {
        self.heap.remove(pick.req().id);
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(req.priority, req.deadline, req.seq)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn work_conserving(&self) -> bool {
        true
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.heap.drain()
    }
}
