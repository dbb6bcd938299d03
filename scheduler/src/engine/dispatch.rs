//! The dispatch loop: what starts next on which device and slot (the offered fast path,
//! the policy's pick, kernel continuations, warm-ups), and what a completion or a failure
//! frees.

use super::*;

impl Scheduler {
    fn best_continuation(&self) -> Option<(Rank, DeviceId)> {
        self.has_continuation
            .iter_common(&self.v.free)
            .filter_map(|d| self.continuations[d.0 as usize].peek().map(|Reverse((r, _))| (*r, d)))
            .min()
    }

    /// The next dispatch at `now`, or `None` when nothing more can start. Call until `None`
    /// after every submit, completion or health change.
    #[inline]
    pub fn next_dispatch(&mut self, now: Nanos) -> Option<Dispatch> {
        if let Some((at, req, device)) = self.offered.take() {
            if at != now {
                self.requeue(at, req);
            } else if let Some(d) = self.start(now, req, device, false, self.kernel_rank(now, &req)) {
                return Some(d);
            }
        }
        // Most calls find nothing waiting: answer them without setting up a decision.
        if self.has_continuation.is_empty() && self.waiting == 0 {
            return None;
        }
        self.decide(now)
    }

    /// Queues the offered request in the policy, as if it had been queued at submit
    /// (called first by everything that could change what the policy would pick).
    #[inline]
    pub(crate) fn settle(&mut self) {
        if let Some((at, req, _)) = self.offered.take() {
            self.requeue(at, req);
        }
    }

    /// Hands an offered request to the policy's queue, as submitted at `at`.
    fn requeue(&mut self, at: Nanos, req: Queued) {
        let cx = cx!(self, at);
        self.policy.enqueue(&cx, req);
    }

    /// The rank a request starting whole is recorded with: needed only when its later
    /// kernels will compete with other requests (kernel granularity).
    fn kernel_rank(&self, now: Nanos, req: &Queued) -> Option<Rank> {
        (self.config.granularity != Granularity::Request).then(|| {
            let cx = cx!(self, now);
            self.policy.rank(&cx, req)
        })
    }

    fn decide(&mut self, now: Nanos) -> Option<Dispatch> {
        if !self.pending_warmups.is_empty()
            && let Some(d) = self.start_warmup(now)
        {
            return Some(d);
        }
        loop {
            let cont = if self.has_continuation.is_empty() { None } else { self.best_continuation() };
            let (pick, rank) = {
                let cx = cx!(self, now);
                if self.waiting == 0 {
                    (None, None)
                } else {
                    match self.policy.peek(&cx) {
                        // The rank orders a request against kernels waiting on a device;
                        // with no continuations and whole-request dispatch nobody reads it.
                        Some(p) if cont.is_none() && self.config.granularity == Granularity::Request => {
                            (Some(p), None)
                        }
                        Some(p) => {
                            let r = self.policy.rank(&cx, p.req());
                            (Some(p), Some(r))
                        }
                        None => (None, None),
                    }
                }
            };
            if let Some((crank, device)) = cont
                && rank.is_none_or(|r| crank <= r)
            {
                return Some(self.start_continuation(now, device));
            }
            let pick = pick?;
            {
                let cx = cx!(self, now);
                self.policy.commit(&cx, &pick);
            }
            match pick {
                Pick::Drop { req } => {
                    self.backlog -= self.v.hot[req.function.0 as usize].best as f64;
                    self.left_queue(req.id, req.function);
                    self.release_id(req.id);
                    self.waiting -= 1;
                    if self.warmup_at(req.id.index()) {
                        continue;
                    }
                    self.dropped.push(Dropped {
                        id: req.id,
                        function: req.function,
                        arrival: req.arrival,
                        at: now,
                    });
                }
                Pick::Run { req, device, flush } => {
                    if let Some(d) = self.start(now, req, device, flush, rank) {
                        return Some(d);
                    }
                }
            }
        }
    }

    fn take_slot(&mut self, d: DeviceId) {
        if let Some(t) = &mut self.track {
            let di = d.0 as usize;
            t.on_device(di, self.cluster.devices[di].class.0 as usize, |c| c.free -= 1);
        }
        let slots = &mut self.free_slots[d.0 as usize];
        *slots -= 1;
        if *slots == 0 {
            self.v.free.remove(d);
        }
    }

    /// The running cells of device `d`.
    #[inline]
    pub(super) fn cells(&mut self, d: usize) -> &mut [(ReqId, Nanos)] {
        &mut self.running[self.running_base[d]..self.running_base[d + 1]]
    }

    fn note_running(&mut self, d: DeviceId, id: ReqId, end: Nanos) {
        let di = d.0 as usize;
        let cells = self.cells(di);
        let idle = cells.iter().all(|c| c.0 == NOBODY);
        if let Some(c) = cells.iter_mut().find(|c| c.0 == NOBODY) {
            *c = (id, end);
        }
        let busy = &mut self.v.busy_until[di];
        *busy = if idle { end } else { (*busy).min(end) };
        if let Some(t) = &mut self.track {
            t.on_device(di, self.cluster.devices[di].class.0 as usize, |c| c.start(end));
        }
    }

    pub(super) fn start(
        &mut self,
        now: Nanos,
        req: Queued,
        device: DeviceId,
        flush: bool,
        rank: Option<Rank>,
    ) -> Option<Dispatch> {
        let fi = req.function.0 as usize;
        let di = device.0 as usize;
        let class = self.cluster.devices[di].class;
        let classes = self.cluster.classes.len();
        self.evicted.clear();
        if flush {
            self.v.caches[di].flush(&mut self.evicted);
        }
        let hot = self.v.hot[fi];
        let ClassCost { whole, load: load_time, .. } = self.v.costs[fi * classes + class.0 as usize];
        let acquired = self.v.caches[di].acquire(
            req.function,
            hot.resident_bytes,
            hot.working_bytes,
            load_time,
            now,
            &mut self.evicted,
        );
        for g in self.evicted.drain(..) {
            self.v.resident[g.0 as usize].remove(device);
            if self.record_evictions {
                self.evictions.push((g, device));
            }
        }
        let Some(acquired) = acquired else {
            // The policy offered a device the function does not fit on: put the request
            // back rather than lose it.
            debug_assert!(
                false,
                "policy {} picked a device where the function does not fit",
                self.policy.name()
            );
            if !self.warmup_at(req.id.index()) {
                let cx = cx!(self, now);
                self.policy.enqueue(&cx, req);
            }
            return None;
        };
        if acquired.cold {
            self.v.resident[fi].insert(device);
        }
        let slot = req.id.index();
        if slot >= self.held.len() {
            self.held.resize(slot + 1, 0);
        }
        self.held[slot] = hot.working_bytes;
        let n = hot.kernels;
        let warmup = self.warmup_at(slot);
        let (kernels, expected) = match self.config.granularity {
            _ if warmup => (n, 0),
            Granularity::Request => (n, if whole == NONE { 0 } else { whole }),
            Granularity::Kernel => (1, self.functions[fi].kernel_runtime(class, 0).unwrap_or(0)),
        };
        if let Some(t) = &mut self.track
            && !warmup
        {
            t.unqueue(slot, req.function);
        }
        self.take_slot(device);
        self.waiting -= 1;
        let load = if acquired.cold { load_time } else { 0 };
        if warmup {
            if let Some(w) = self.warmup_of[fi].as_mut().filter(|w| w.id == req.id) {
                w.ready = now + load;
            }
            self.unclaim(req.id);
        }
        self.v.queued[req.id.index()] = 0;
        let state = &mut self.requests[req.id.index()];
        state.phase = Phase::Running { device, kernel: 0, kernels };
        if let Some(rank) = rank {
            let i = req.id.index();
            if i >= self.ranks.len() {
                self.ranks.resize(i + 1, Rank::new(0, 0, 0));
            }
            self.ranks[i] = rank;
        }
        self.note_running(device, req.id, now + load + expected);
        Some(Dispatch {
            id: req.id,
            function: req.function,
            device,
            kernel: 0,
            kernels,
            last: kernels == n,
            cold: acquired.cold,
            load,
            expected,
            start: now,
            warmup,
            arrival: req.arrival,
            deadline: req.deadline,
        })
    }

    fn start_continuation(&mut self, now: Nanos, device: DeviceId) -> Dispatch {
        let di = device.0 as usize;
        let Reverse((_, id)) = self.continuations[di].pop().expect("continuation present");
        if self.continuations[di].is_empty() {
            self.has_continuation.remove(device);
        }
        let state = self.requests[id.index()];
        let Phase::Continuing { kernel, .. } = state.phase else {
            unreachable!("continuation in wrong phase")
        };
        let func = &self.functions[state.request.function.0 as usize];
        let class = self.cluster.devices[di].class;
        let expected = func.kernel_runtime(class, kernel as usize).unwrap_or(0);
        let last = kernel as usize + 1 == func.kernel_count();
        self.requests[id.index()].phase = Phase::Running { device, kernel, kernels: 1 };
        self.take_slot(device);
        self.note_running(device, id, now + expected);
        Dispatch {
            id,
            function: state.request.function,
            device,
            kernel,
            kernels: 1,
            last,
            cold: false,
            load: 0,
            expected,
            start: now,
            warmup: false,
            arrival: state.request.arrival,
            deadline: state.request.deadline,
        }
    }

    fn free_slot(&mut self, d: DeviceId, id: ReqId) {
        let di = d.0 as usize;
        self.free_slots[di] += 1;
        let healthy = self.v.healthy.contains(d);
        if healthy {
            self.v.free.insert(d);
        }
        let class = self.cluster.devices[di].class.0 as usize;
        if healthy && let Some(t) = &mut self.track {
            t.on_device(di, class, |c| c.free += 1);
        }
        let cells = self.cells(di);
        if let Some(c) = cells.iter_mut().find(|c| c.0 == id) {
            let end = std::mem::replace(c, (NOBODY, 0)).1;
            if let Some(t) = &mut self.track {
                t.on_device(di, class, |c| c.end(end));
                self.refill_slots(di);
            }
            // The earliest end changes only when it is the one leaving.
            if end <= self.v.busy_until[di] {
                let cells = self.cells(di);
                self.v.busy_until[di] =
                    cells.iter().filter(|c| c.0 != NOBODY).map(|c| c.1).min().unwrap_or(0);
            }
        }
    }

    /// Reports that a dispatch finished (successfully or not: a failed kernel is reported
    /// with [`fail`](Self::fail) instead).
    pub fn complete(&mut self, now: Nanos, id: ReqId) -> Option<Completed> {
        self.settle();
        let state = *self.state(id)?;
        let Phase::Running { device, kernel, kernels } = state.phase else { return None };
        self.free_slot(device, id);
        let fi = state.request.function.0 as usize;
        let hot = self.v.hot[fi];
        let n = hot.kernels as usize;
        let share = if n <= 1 {
            1.0
        } else {
            let func = &self.functions[fi];
            remaining_share(func, kernel) - remaining_share(func, kernel + kernels)
        };
        self.backlog -= share * hot.best as f64;
        let next = (kernel + kernels) as usize;
        if next >= n || self.warmup_at(id.index()) {
            let warmup = self.warmup_at(id.index());
            if warmup {
                self.end_warmup(id, state.request.function);
            }
            let keep = self.policy.keep_alive();
            let keep_until = if keep > 0 { now + keep } else { 0 };
            if keep > 0 {
                self.keep_alive_ends.push(Reverse(keep_until));
            }
            let held = self.held[id.index()];
            self.v.caches[device.0 as usize].release(state.request.function, held, now, keep_until);
            self.learn_margin(now, id.index(), &state.request);
            self.release_id(id);
            return Some(if warmup { Completed::Warmup } else { Completed::Request });
        }
        self.requests[id.index()].phase = Phase::Continuing { device, kernel: next as u16 };
        let rank = self.ranks.get(id.index()).copied().unwrap_or(Rank::new(0, 0, 0));
        self.continuations[device.0 as usize].push(Reverse((rank, id)));
        self.has_continuation.insert(device);
        Some(Completed::Kernel)
    }

    /// Reports that a running request failed (its kernel faulted, its executor answered
    /// an error). The request is forgotten; the caller answers it.
    pub fn fail(&mut self, now: Nanos, id: ReqId) -> Option<Request> {
        self.settle();
        let state = *self.state(id)?;
        let Phase::Running { device, kernel, .. } = state.phase else { return None };
        self.free_slot(device, id);
        let func = &self.functions[state.request.function.0 as usize];
        self.backlog -= remaining_share(func, kernel) * func.best_runtime().unwrap_or(0) as f64;
        let held = self.held[id.index()];
        self.v.caches[device.0 as usize].release(state.request.function, held, now, 0);
        self.end_warmup(id, state.request.function);
        self.release_id(id);
        Some(state.request)
    }
}
