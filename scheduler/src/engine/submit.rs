//! Arrivals: admission at submit, and how admitted requests and warm-ups enter the
//! policy's queue.

use super::*;

impl Scheduler {
    /// Offers a request. Admitted requests are queued and will end in exactly one of a
    /// completed [`Dispatch`] chain, a [`Dropped`], a [`Lost`] or a [`cancel`](Self::cancel).
    pub fn submit(&mut self, now: Nanos, request: Request) -> Result<ReqId, Rejection> {
        self.settle();
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
        Ok(self.enter(now, request, false))
    }

    /// Queues an admitted request (or a warm-up) and returns its handle.
    pub(super) fn enter(&mut self, now: Nanos, request: Request, warmup: bool) -> ReqId {
        let fi = request.function.0 as usize;
        let hot = self.v.hot[fi];
        let work = if warmup {
            let classes = self.cluster.classes.len();
            (0..classes).map(|c| self.v.costs[fi * classes + c].load).min().unwrap_or(0)
        } else {
            hot.best
        };
        self.backlog += hot.best as f64;
        let index = self.free_ids.pop().unwrap_or_else(|| {
            self.requests.push(ReqState { generation: 0, phase: Phase::Free, request });
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
        let id = ReqId::new(index, state.generation);
        if warmup || self.is_warmup.len() > index as usize {
            if self.is_warmup.len() <= index as usize {
                self.is_warmup.resize(index as usize + 1, false);
            }
            self.is_warmup[index as usize] = warmup;
        }
        if let Some(t) = &mut self.track {
            t.queue(now, index as usize, request.function, hot.weight, work as i64, request.deadline);
        }
        let queued = Queued {
            id,
            function: request.function,
            arrival: request.arrival,
            deadline: request.deadline,
            priority: hot.priority,
            seq: self.seq,
        };
        let cx = cx!(self, now);
        let alone = self.waiting == 0 && self.has_continuation.is_empty();
        match alone.then(|| self.policy.place_alone(&cx, request.function)).flatten() {
            Some(device) => self.offered = Some((now, queued, device)),
            None => self.policy.enqueue(&cx, queued),
        }
        self.waiting += 1;
        id
    }

    /// Whether the request in `slot` is a warm-up.
    #[inline]
    pub(super) fn warmup_at(&self, slot: usize) -> bool {
        self.is_warmup.get(slot).copied().unwrap_or(false)
    }

    /// A request left the queue without running (cancelled or shed).
    pub(super) fn left_queue(&mut self, id: ReqId, f: FunctionId) {
        if let Some(t) = &mut self.track {
            t.unqueue(id.index(), f);
        }
        self.end_warmup(id, f);
    }

    /// Forgets `f`'s warm-up if `id` is it.
    pub(super) fn end_warmup(&mut self, id: ReqId, f: FunctionId) {
        if self.warmup_of.get(f.0 as usize).copied().flatten() == Some(id) {
            self.warmup_of[f.0 as usize] = None;
        }
    }
}
