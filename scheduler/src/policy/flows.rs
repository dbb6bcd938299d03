//! Per-function flows shared by the fair-queueing policies: a FIFO per function and the
//! set of backlogged flows ordered by a virtual-time tag.

use std::collections::{BTreeSet, VecDeque};

use super::{Cx, Queued};
use crate::model::FunctionId;

/// One function's waiting requests, oldest first, each with its tag.
#[derive(Default)]
pub(crate) struct Flow {
    /// The oldest request, kept apart from the rest: policies look at the heads of
    /// backlogged flows on every decision, and with deep queues (a thousand requests
    /// per flow under `exclusive`) a head inside the ring buffer missed the CPU caches
    /// each time.
    head: Option<(Queued, u64)>,
    rest: VecDeque<(Queued, u64)>,
    /// The tag the flow is ordered by while backlogged.
    pub(crate) tag: u64,
}

impl Flow {
    /// The oldest request and its tag.
    #[inline]
    pub(crate) fn front(&self) -> Option<&(Queued, u64)> {
        self.head.as_ref()
    }

    /// Whether nothing waits.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push_back(&mut self, entry: (Queued, u64)) {
        if self.head.is_none() {
            self.head = Some(entry);
        } else {
            self.rest.push_back(entry);
        }
    }

    fn pop_front(&mut self) -> Option<(Queued, u64)> {
        let head = self.head.take()?;
        self.head = self.rest.pop_front();
        Some(head)
    }
}

/// Flows indexed by function, and the backlogged ones ordered by `(tag, function)`.
#[derive(Default)]
pub(crate) struct Flows {
    pub(crate) flows: Vec<Flow>,
    pub(crate) backlogged: BTreeSet<(u64, u32)>,
    pub(crate) len: usize,
    /// Whether a flow is ordered by the tag of its head request (fair queueing start
    /// tags, arrival order) rather than by a tag the policy keeps per flow.
    pub(crate) tag_by_head: bool,
}

impl Flows {
    /// Flows ordered by the tag of their head request.
    pub(crate) fn by_head() -> Self {
        Flows { tag_by_head: true, ..Flows::default() }
    }

    pub(crate) fn flow(&mut self, f: FunctionId) -> &mut Flow {
        let i = f.0 as usize;
        if i >= self.flows.len() {
            self.flows.resize_with(i + 1, Flow::default);
        }
        &mut self.flows[i]
    }

    /// Smallest tag among backlogged flows.
    pub(crate) fn min_tag(&self) -> Option<u64> {
        self.backlogged.first().map(|&(t, _)| t)
    }

    /// Appends a request with its per-request tag; the caller has set the flow's tag
    /// if the flow was idle.
    pub(crate) fn push(&mut self, f: FunctionId, req: Queued, req_tag: u64) {
        let by_head = self.tag_by_head;
        let flow = self.flow(f);
        let was_idle = flow.is_empty();
        if was_idle && by_head {
            flow.tag = req_tag;
        }
        flow.push_back((req, req_tag));
        let tag = flow.tag;
        if was_idle {
            self.backlogged.insert((tag, f.0));
        }
        self.len += 1;
    }

    /// Drops cancelled requests at the head of `f`'s queue; returns the live head.
    pub(crate) fn head(&mut self, cx: &Cx, f: FunctionId) -> Option<(Queued, u64)> {
        let i = f.0 as usize;
        loop {
            let flow = &mut self.flows[i];
            let &(req, tag) = flow.front()?;
            if cx.is_live(&req) {
                return Some((req, tag));
            }
            self.pop(f);
        }
    }

    /// Removes the head of `f`, keeping the backlogged set in step. Returns it.
    pub(crate) fn pop(&mut self, f: FunctionId) -> Option<(Queued, u64)> {
        let flow = &mut self.flows[f.0 as usize];
        let head = flow.pop_front()?;
        self.len -= 1;
        match flow.front() {
            None => {
                let tag = flow.tag;
                self.backlogged.remove(&(tag, f.0));
            }
            Some(&(_, next)) if self.tag_by_head => self.retag(f, next),
            Some(_) => {}
        }
        Some(head)
    }

    /// Changes the tag of a flow, re-ordering it if backlogged.
    pub(crate) fn retag(&mut self, f: FunctionId, tag: u64) {
        let flow = &mut self.flows[f.0 as usize];
        if !flow.is_empty() {
            self.backlogged.remove(&(flow.tag, f.0));
            self.backlogged.insert((tag, f.0));
        }
        flow.tag = tag;
    }

    /// Backlogged flows in tag order, as `(tag, function)`.
    pub(crate) fn ordered(&self) -> impl Iterator<Item = (u64, FunctionId)> + '_ {
        self.backlogged.iter().map(|&(t, f)| (t, FunctionId(f)))
    }

    pub(crate) fn drain(&mut self) -> Vec<Queued> {
        self.backlogged.clear();
        self.len = 0;
        let mut out = Vec::with_capacity(self.len);
        for f in &mut self.flows {
            out.extend(f.head.take().into_iter().chain(f.rest.drain(..)).map(|(q, _)| q));
        }
        out
    }
}
