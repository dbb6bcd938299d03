//! Arrivals: admission at submit, and how admitted requests enter the policy's queue.

use super::*;

impl Scheduler {
    /// Offers a request. Admitted requests are queued and will end in exactly one of a
    /// completed [`Dispatch`] chain, a [`Dropped`], a [`Lost`] or a [`cancel`](Self::cancel).
    pub fn submit(&mut self, now: Nanos, request: Request) -> Result<ReqId, Rejection> {
        self.settle();
        self.admitted_prediction = None;
        self.admitted_probe = false;
        let fi = request.function.0 as usize;
        if fi >= self.v.hot.len() {
            return Err(Rejection::UnknownFunction);
        }
        if !self.v.runnable[fi].intersects(&self.v.healthy) {
            return Err(Rejection::NoCapacity);
        }
        {
            let cx = cx!(self, now);
            if let Some(why) = self.policy.refuse(&cx, request.function) {
                return Err(Rejection::Refused(why));
            }
        }
        match self.config.admission {
            AdmissionMode::None => {}
            AdmissionMode::Deadline => self.admit_by_deadline(now, &request)?,
            AdmissionMode::TokenBucket => {
                if let Some(rate) = self.functions[fi].reserved_rate {
                    self.tokens
                        .take(fi, rate, self.config.token_bucket_burst, now)
                        .map_err(|retry_after| Rejection::RateLimited { retry_after })?;
                }
            }
        }
        let id = self.enter(now, request);
        if let Some(p) = self.admitted_prediction {
            if self.predicted.len() <= id.index() {
                self.predicted.resize(id.index() + 1, 0);
            }
            self.predicted[id.index()] = p.max(1);
        }
        Ok(id)
    }

    /// The completion `deadline` admission predicted for the request the last
    /// [`submit`](Self::submit) admitted (`None` under other admission modes or when it
    /// was rejected): what a caller compares the actual completion with, without asking
    /// for the prediction a second time.
    pub fn admitted_prediction(&self) -> Option<Nanos> {
        self.admitted_prediction
    }

    /// Queues an admitted request in the policy and returns its handle.
    pub(super) fn enter(&mut self, now: Nanos, request: Request) -> ReqId {
        let hot = self.v.hot[request.function.0 as usize];
        let id = self.alloc(request, false);
        let index = id.index();
        if let Some(t) = &mut self.track {
            t.queue(now, index, request.function, hot.weight, hot.best as i64, request.deadline);
            if t.deadline_order {
                let window = request.deadline.saturating_sub(now);
                self.inflow.admit(request.function.0 as usize, now, hot.best as f64, window);
            }
        }
        self.requests[id.index()].probe = std::mem::take(&mut self.admitted_probe);
        let queued = self.queued_view(id);
        let cx = cx!(self, now);
        let alone = self.waiting == 0 && self.has_continuation.is_empty();
        match alone.then(|| self.policy.place_alone(&cx, request.function)).flatten() {
            Some(device) => self.offered = Some((now, queued, device)),
            None => self.policy.enqueue(&cx, queued),
        }
        self.waiting += 1;
        id
    }

    /// A fresh handle for `request`, in phase `Queued` (counted in `backlog`).
    pub(super) fn alloc(&mut self, request: Request, warmup: bool) -> ReqId {
        self.backlog += self.v.hot[request.function.0 as usize].best as f64;
        let index = self.free_ids.pop().unwrap_or_else(|| {
            self.requests.push(ReqState { generation: 0, phase: Phase::Free, request, probe: false });
            self.v.queued.push(0);
            (self.requests.len() - 1) as u32
        });
        self.seq += 1;
        let state = &mut self.requests[index as usize];
        // Generation 0 means "nothing waiting" in `queued`.
        state.generation = state.generation.wrapping_add(1).max(1);
        self.v.queued[index as usize] = state.generation;
        state.phase = Phase::Queued;
        state.request = request;
        state.probe = false;
        let id = ReqId::new(index, state.generation);
        if warmup || self.is_warmup.len() > index as usize {
            if self.is_warmup.len() <= index as usize {
                self.is_warmup.resize(index as usize + 1, false);
            }
            self.is_warmup[index as usize] = warmup;
        }
        id
    }

    /// What the policy sees of the request `id` (just allocated).
    pub(super) fn queued_view(&self, id: ReqId) -> Queued {
        let state = &self.requests[id.index()];
        let request = state.request;
        Queued {
            probe: state.probe,
            id,
            function: request.function,
            arrival: request.arrival,
            deadline: request.deadline,
            priority: self.v.hot[request.function.0 as usize].priority,
            seq: self.seq,
        }
    }

    /// A request left the queue without running (cancelled or shed).
    pub(super) fn left_queue(&mut self, id: ReqId, f: FunctionId) {
        if let Some(t) = &mut self.track
            && !self.is_warmup.get(id.index()).copied().unwrap_or(false)
        {
            t.unqueue(id.index(), f);
        }
        if !self.claims.is_empty() {
            self.unclaim(id);
        }
        self.end_warmup(id, f);
    }
}
