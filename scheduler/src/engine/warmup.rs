//! Scale from zero. When `deadline` admission finds that a request would make its
//! deadline only if its function were warm on some class, it starts a warm-up: a
//! dispatch that loads the function and runs no kernel. Warm-ups are the platform's
//! own work, placed by the engine rather than the policy: on a device of the class
//! where a warm run makes the deadline soonest (its load plus its runtime), where the
//! function is not resident yet, as soon as such a device has a free slot. The requests
//! that arrive meanwhile are told when it will be warm.
//!
//! One warm-up per function is the one requests are told about. While it loads, a
//! request that would queue for the function while some device that could hold it has
//! a free slot and the memory to spare starts one more there: what a cold start on the
//! idle device would do without admission, so that scaling out is not one load at a
//! time. A busy cluster has no such device, so this never displaces queued work or
//! evicts anything.

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

/// How a warm-up's class is chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Target {
    /// Where a warm run could first complete: a device frees, the load, a run.
    Soonest,
    /// Where a warm run from when a device frees is shortest, ignoring the load.
    Fastest,
    /// Only devices with a free slot now and the memory to load without evicting
    /// anything; the class the function runs fastest on (the capacity it adds).
    Idle,
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
        p: &Prediction,
        latest: Nanos,
    ) -> Option<Nanos> {
        let f = request.function;
        let fi = f.0 as usize;
        if p.claim {
            return self.claim_for(now, request, p, latest);
        }
        let classes = self.cluster.classes.len();
        let start = p.start;
        // The policy's scope is asked only when it matters (a first warm-up to place, or
        // an idle device to spread onto): not on every rejection of a busy pool.
        let replicate = (self.warmup_of[fi].is_none() || !self.v.free.is_empty()) && self.replicates(now, f);
        // Where devices belong to one function, the first load claims a worker for good:
        // the class it runs fastest on. Elsewhere, the class where it can first run.
        let target = if replicate { Target::Soonest } else { Target::Fastest };
        let ready = if let Some(w) = self.warmup_of[fi] {
            let run = self.v.costs[fi * classes + w.class.0 as usize].runtime;
            (start.saturating_add(run) <= latest).then_some(w.ready.max(now))
        } else if let Some((class, ready)) = self.warm_target(f, start, latest, now, target) {
            let id = self.queue_warmup(now, request, class, false);
            self.warmup_of[fi] = Some(WarmUp { id, class, ready });
            Some(ready)
        } else {
            None
        };
        if replicate {
            self.spread(now, request, latest);
        }
        ready
    }

    /// For a function that must claim a device before it runs (see
    /// [`crate::policy::AdmissionScope::claim`]): when it will be warm, if a warm run
    /// from the predicted start makes `latest`. The first such miss queues a warm-up in
    /// the policy's own order, so that it takes a device as the function's requests
    /// would (a worker of its own, flushed and loaded), expected warm at the predicted
    /// start plus the load; the requests arriving meanwhile are told that time.
    fn claim_for(&mut self, now: Nanos, request: &Request, p: &Prediction, latest: Nanos) -> Option<Nanos> {
        let f = request.function;
        let fi = f.0 as usize;
        let cost = self.v.costs[fi * self.cluster.classes.len() + p.class.0 as usize];
        if cost.runtime == NONE || p.start.saturating_add(cost.runtime) > latest {
            return None;
        }
        if let Some(w) = self.warmup_of[fi] {
            return Some(w.ready.max(now));
        }
        let warm = Request { function: f, arrival: now, deadline: request.deadline };
        let id = self.alloc(warm, true);
        let queued = self.queued_view(id);
        {
            let cx = cx!(self, now);
            self.policy.enqueue(&cx, queued);
        }
        self.waiting += 1;
        self.claims.push((id, cost.load));
        self.claim_work += cost.load;
        let ready = p.start.saturating_add(p.load);
        self.warmup_of[fi] = Some(WarmUp { id, class: p.class, ready });
        Some(ready)
    }

    /// A claim warm-up left the policy's queue (started or dropped): no longer ahead.
    pub(super) fn unclaim(&mut self, id: ReqId) {
        if let Some(i) = self.claims.iter().position(|&(c, _)| c == id) {
            self.claim_work -= self.claims.swap_remove(i).1;
        }
    }

    /// Whether the policy lets the engine load `f` onto any idle device: not where it
    /// keeps `f` to some devices (a partition, owned workers, a pin).
    fn replicates(&self, now: Nanos, f: FunctionId) -> bool {
        if self.pinned.get(f.0 as usize).copied().flatten().is_some() {
            return false;
        }
        let cx = cx!(self, now);
        let scope = self.policy.admission_scope(&cx, f);
        scope.replicate && scope.devices.is_none()
    }

    /// Queues a warm-up of the request's function onto `class` (with `spare`, only onto
    /// a device with room for it without evicting anything).
    fn queue_warmup(&mut self, now: Nanos, request: &Request, class: ClassId, spare: bool) -> ReqId {
        let warm = Request { function: request.function, arrival: now, deadline: request.deadline };
        let id = self.alloc(warm, true);
        self.pending_warmups.push((id, class, spare));
        self.waiting += 1;
        id
    }

    /// One more warm-up of the request's function, on a device with a free slot and room
    /// to spare (nothing evicted), of the class it runs fastest on, unless one is already
    /// waiting to start. Called only where [`Self::replicates`].
    fn spread(&mut self, now: Nanos, request: &Request, latest: Nanos) {
        let f = request.function;
        if self.pending_warmups.iter().any(|&(id, ..)| self.requests[id.index()].request.function == f) {
            return;
        }
        // A warm run from now must make the deadline there.
        if let Some((class, _)) = self.warm_target(f, now, latest, now, Target::Idle) {
            self.queue_warmup(now, request, class, true);
        }
    }

    /// The class to load `f` onto (see [`Target`]), among those where a warm run from
    /// `start` makes `latest` and with a healthy device that can take `f` and does not
    /// hold it yet; and when `f` would be warm there.
    fn warm_target(
        &self,
        f: FunctionId,
        start: Nanos,
        latest: Nanos,
        now: Nanos,
        target: Target,
    ) -> Option<(ClassId, Nanos)> {
        let idle = target == Target::Idle;
        let fi = f.0 as usize;
        let classes = self.cluster.classes.len();
        let hot = self.v.hot[fi];
        let mut best: Option<(Nanos, ClassId, Nanos)> = None;
        for c in 0..classes {
            let cost = self.v.costs[fi * classes + c];
            if cost.runtime == NONE || start.saturating_add(cost.runtime) > latest {
                continue;
            }
            // Idle: devices with a free slot (the free set holds only healthy ones) and
            // room without evicting, read from the free set so that a busy cluster costs
            // nothing here.
            let avail =
                if idle {
                    self.v.class_sets[c]
                        .iter_common3(&self.v.runnable[fi], &self.v.free)
                        .filter(|&d| self.v.healthy.contains(d) && !self.v.resident[fi].contains(d))
                        .any(|d| {
                            let cache = &self.v.caches[d.0 as usize];
                            cache.used() + hot.resident_bytes + hot.working_bytes <= cache.capacity()
                        })
                        .then_some(now)
                } else {
                    self.v.class_sets[c]
                        .iter_common3(&self.v.runnable[fi], &self.v.healthy)
                        .filter(|&d| !self.v.resident[fi].contains(d))
                        .filter(|&d| {
                            self.v.caches[d.0 as usize].fits(f, hot.resident_bytes, hot.working_bytes, now)
                        })
                        .map(|d| {
                            if self.v.free.contains(d) {
                                now
                            } else {
                                self.v.busy_until[d.0 as usize].max(now)
                            }
                        })
                        .min()
                };
            let Some(avail) = avail else { continue };
            let done = match target {
                Target::Soonest => start.max(avail.saturating_add(cost.load)).saturating_add(cost.runtime),
                Target::Fastest => start.max(avail).saturating_add(cost.runtime),
                Target::Idle => cost.runtime,
            };
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
            let (id, class, spare) = self.pending_warmups[i];
            let r = &self.requests[id.index()];
            if r.generation != id.generation() || r.phase != Phase::Queued || !self.warmup_at(id.index()) {
                self.pending_warmups.swap_remove(i);
                continue;
            }
            let f = r.request.function;
            let fi = f.0 as usize;
            let hot = self.v.hot[fi];
            let mut anywhere = false;
            let mut target = None;
            for d in self.v.class_sets[class.0 as usize].iter_common3(&self.v.runnable[fi], &self.v.healthy) {
                if self.v.resident[fi].contains(d) {
                    continue;
                }
                anywhere = true;
                let cache = &self.v.caches[d.0 as usize];
                let room = if spare {
                    cache.used() + hot.resident_bytes + hot.working_bytes <= cache.capacity()
                } else {
                    cache.fits(f, hot.resident_bytes, hot.working_bytes, now)
                };
                if self.v.free.contains(d) && room {
                    target = Some(d);
                    break;
                }
            }
            if let Some(d) = target {
                self.pending_warmups.swap_remove(i);
                let q = self.queued_view(id);
                if let Some(dispatch) = self.start(now, q, d, false, None) {
                    if let Some(w) = self.warmup_of[fi].as_mut().filter(|w| w.id == id) {
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
