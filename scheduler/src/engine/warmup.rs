//! Scale from zero. When `deadline` admission finds that a request would make its
//! deadline only if its function were warm on some class, it starts a warm-up: a
//! dispatch that loads the function and runs no kernel. Warm-ups are the platform's
//! own work, placed by the engine rather than the policy: on a device of the class
//! where a warm run makes the deadline, where the function is not resident yet, as
//! soon as such a device has a free slot. One warm-up per function is in flight at a
//! time; the requests that arrive meanwhile are told when it will be warm.

use super::*;
use crate::model::ClassId;

/// A function's warm-up in flight: its handle, the class it loads onto and when the
/// function is expected to be warm there.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct WarmUp {
    pub id: ReqId,
    pub class: ClassId,
    pub ready: Nanos,
}

impl Scheduler {
    /// Whether the request in `slot` is a warm-up.
    #[inline]
    pub(super) fn warmup_at(&self, slot: usize) -> bool {
        self.is_warmup.get(slot).copied().unwrap_or(false)
    }

    /// Forgets `f`'s warm-up if `id` is it.
    pub(super) fn end_warmup(&mut self, id: ReqId, f: FunctionId) {
        if self.warmup_of.get(f.0 as usize).copied().flatten().is_some_and(|w| w.id == id) {
            self.warmup_of[f.0 as usize] = None;
        }
    }

    /// For a request that misses `latest` as things stand but whose work ahead would be
    /// done by `start`: when its function will be warm where a warm run from `start`
    /// makes `latest`, starting that warm-up unless one is in flight. `None` when no
    /// load would help (the request misses on queueing alone).
    pub(super) fn warm_up_for(
        &mut self,
        now: Nanos,
        request: &Request,
        start: Nanos,
        latest: Nanos,
    ) -> Option<Nanos> {
        let f = request.function;
        let fi = f.0 as usize;
        let classes = self.cluster.classes.len();
        if let Some(w) = self.warmup_of[fi] {
            let run = self.v.costs[fi * classes + w.class.0 as usize].runtime;
            return (start.saturating_add(run) <= latest).then_some(w.ready.max(now));
        }
        let (class, ready) = self.warm_target(f, start, latest, now)?;
        let warm = Request { function: f, arrival: now, deadline: request.deadline };
        let id = self.alloc(warm, true);
        self.warmup_of[fi] = Some(WarmUp { id, class, ready });
        self.pending_warmups.push(id);
        self.waiting += 1;
        Some(ready)
    }

    /// The class where a warm run of `f` starting no earlier than `start` finishes
    /// soonest and by `latest`, among those with a healthy device that can take `f` and
    /// does not hold it yet; and when `f` would be warm there.
    fn warm_target(
        &self,
        f: FunctionId,
        start: Nanos,
        latest: Nanos,
        now: Nanos,
    ) -> Option<(ClassId, Nanos)> {
        let fi = f.0 as usize;
        let classes = self.cluster.classes.len();
        let hot = self.v.hot[fi];
        let mut best: Option<(Nanos, ClassId, Nanos)> = None;
        for c in 0..classes {
            let cost = self.v.costs[fi * classes + c];
            if cost.runtime == NONE || start.saturating_add(cost.runtime) > latest {
                continue;
            }
            let avail = self.v.class_sets[c]
                .iter_common3(&self.v.runnable[fi], &self.v.healthy)
                .filter(|&d| !self.v.resident[fi].contains(d))
                .filter(|&d| self.v.caches[d.0 as usize].fits(f, hot.resident_bytes, hot.working_bytes, now))
                .map(|d| if self.v.free.contains(d) { now } else { self.v.busy_until[d.0 as usize].max(now) })
                .min();
            let Some(avail) = avail else { continue };
            let done = start.max(avail).saturating_add(cost.runtime);
            if best.is_none_or(|(b, ..)| done < b) {
                best = Some((done, ClassId(c as u16), avail.saturating_add(cost.load)));
            }
        }
        best.map(|(_, class, ready)| (class, ready))
    }

    /// Starts the first pending warm-up whose class has a free device that does not hold
    /// its function yet; forgets those whose class has no such device left at all.
    pub(super) fn start_warmup(&mut self, now: Nanos) -> Option<Dispatch> {
        let mut i = 0;
        while i < self.pending_warmups.len() {
            let id = self.pending_warmups[i];
            let f = self.requests[id.index()].request.function;
            let fi = f.0 as usize;
            let Some(w) = self.warmup_of[fi].filter(|w| w.id == id) else {
                self.pending_warmups.swap_remove(i);
                continue;
            };
            let hot = self.v.hot[fi];
            let mut anywhere = false;
            let mut target = None;
            for d in self.v.class_sets[w.class.0 as usize].iter_common3(&self.v.runnable[fi], &self.v.healthy)
            {
                if self.v.resident[fi].contains(d) {
                    continue;
                }
                anywhere = true;
                if self.v.free.contains(d)
                    && self.v.caches[d.0 as usize].fits(f, hot.resident_bytes, hot.working_bytes, now)
                {
                    target = Some(d);
                    break;
                }
            }
            if let Some(d) = target {
                self.pending_warmups.swap_remove(i);
                let q = self.queued_view(id);
                if let Some(dispatch) = self.start(now, q, d, false, None) {
                    if let Some(w) = &mut self.warmup_of[fi] {
                        w.ready = now + dispatch.load;
                    }
                    return Some(dispatch);
                }
                // Did not fit after all: forget this warm-up.
                self.drop_warmup(id, f);
                continue;
            }
            if !anywhere {
                self.pending_warmups.swap_remove(i);
                self.drop_warmup(id, f);
                continue;
            }
            i += 1;
        }
        None
    }

    /// Forgets a warm-up that never started: the next miss may start another.
    fn drop_warmup(&mut self, id: ReqId, f: FunctionId) {
        self.end_warmup(id, f);
        self.backlog -= self.v.hot[f.0 as usize].best as f64;
        self.release_id(id);
        self.waiting -= 1;
    }
}
