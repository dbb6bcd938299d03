//! `slo-aware`: per request, the cheapest device class whose predicted completion meets
//! the deadline; requests that can no longer meet it are shed.

use super::edf::RankHeap;
use super::{Cx, Pick, Policy, Queued, Rank};
use crate::model::{ClassId, DeviceId, FunctionId, Nanos};

/// Requests in deadline order (higher priority first). For each, every class that can
/// run it offers its lowest free device (a warm one if any); the cheapest offer (price
/// per slot × device time, load included) whose predicted completion meets the deadline
/// wins. When no free device meets it but a busy device where the function is warm will
/// (once its running kernels finish), the request waits for that device (its function's
/// later requests wait with it for this decision) and the next of the 16 most urgent
/// requests is considered. Otherwise it runs on the free device that finishes it first.
/// A request that could not finish in time even on an idle warm device is dropped with
/// an error.
#[derive(Default)]
pub struct SloAware {
    heap: RankHeap,
}

/// How many of the most urgent requests one decision looks at: requests that choose to
/// wait for a cheaper busy device are passed over, up to this many.
const SCAN: usize = 16;

#[derive(Clone, Copy)]
struct Candidate {
    device: DeviceId,
    completion: Nanos,
    cost: f64,
}

/// Whether `req` misses its deadline even on an idle device where it is warm (a probe
/// never is: it runs to measure what the function really takes).
fn hopeless(cx: &Cx, req: &Queued) -> bool {
    !req.probe && cx.best_runtime(req.function).is_none_or(|r| cx.now + r > req.deadline)
}

fn price_per_slot(cx: &Cx, c: ClassId) -> f64 {
    let class = &cx.cluster.classes[c.0 as usize];
    class.price_per_hour / class.slots.max(1) as f64
}

/// `Some(pick)` to run or drop `req` now, `None` to leave it waiting.
fn decide(cx: &Cx, req: &Queued) -> Option<Pick> {
    if hopeless(cx, req) {
        return Some(Pick::Drop { req: *req });
    }
    let f = req.function;
    let mut meets: Option<Candidate> = None;
    let mut fastest: Option<Candidate> = None;
    for ci in 0..cx.cluster.classes.len() {
        let cid = ClassId(ci as u16);
        let Some(run) = cx.runtime_on(f, cid) else { continue };
        let Some((device, warm)) = cx.first_free_in_class(req.function, cid) else { continue };
        let busy = run + if warm { 0 } else { cx.load_time(f, cid) };
        let c = Candidate { device, completion: cx.now + busy, cost: price_per_slot(cx, cid) * busy as f64 };
        if c.completion <= req.deadline
            && meets.is_none_or(|m| (c.cost, c.completion) < (m.cost, m.completion))
        {
            meets = Some(c);
        }
        if fastest.is_none_or(|m| c.completion < m.completion) {
            fastest = Some(c);
        }
    }
    if meets.is_some() {
        return meets.map(|c| Pick::Run { req: *req, device: c.device, flush: false });
    }
    // No free device meets the deadline: wait if a busy device where the function is warm
    // will (one is enough), else run best-effort on the free device that finishes first.
    for ci in 0..cx.cluster.classes.len() {
        let cid = ClassId(ci as u16);
        let Some(run) = cx.runtime_on(f, cid) else { continue };
        let waits = cx.resident(req.function).iter_common(cx.class_devices(cid)).any(|d| {
            !cx.free().contains(d) && cx.healthy().contains(d) && cx.available_at(d) + run <= req.deadline
        });
        if waits {
            return None;
        }
    }
    meets.or(fastest).map(|c| Pick::Run { req: *req, device: c.device, flush: false })
}

impl Policy for SloAware {
    fn name(&self) -> &str {
        "slo-aware"
    }

    fn enqueue(&mut self, cx: &Cx, req: Queued) {
        self.heap.push(self.rank(cx, &req), req);
    }

    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        if cx.free().is_empty() {
            // Nothing can start; only shed the head if it is already hopeless.
            self.heap.prune(cx);
            let top = *self.heap.top()?;
            return hopeless(cx, &top).then_some(Pick::Drop { req: top });
        }
        let mut waiting: Vec<FunctionId> = Vec::new();
        self.heap.find(cx, SCAN, |req| {
            if waiting.contains(&req.function) {
                return None;
            }
            let pick = decide(cx, req);
            if pick.is_none() {
                waiting.push(req.function);
            }
            pick
        })
    }

    fn commit(&mut self, cx: &Cx, pick: &Pick) {
        self.heap.remove(self.rank(cx, pick.req()));
    }

    fn rank(&self, _cx: &Cx, req: &Queued) -> Rank {
        Rank::new(req.priority, req.deadline, req.seq)
    }

    fn admission_scope(&self, _cx: &Cx, _f: FunctionId) -> super::AdmissionScope {
        super::AdmissionScope {
            class_aware: true,
            ..super::AdmissionScope::with(super::Ahead::EarlierDeadline)
        }
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn drain(&mut self) -> Vec<Queued> {
        self.heap.drain()
    }
}
