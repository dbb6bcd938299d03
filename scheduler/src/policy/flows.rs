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
    rest: VecDeque<Queued>,
    /// Tags of `rest`, in step with it, when the flows carry their own per-request tags
    /// (else a request's tag is its arrival sequence number and nothing is stored: the
    /// queues of a deep backlog are the simulator's largest memory).
    rest_tags: VecDeque<u64>,
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

    fn push_back(&mut self, entry: (Queued, u64), explicit_tags: bool) {
        if self.head.is_none() {
            self.head = Some(entry);
        } else {
            self.rest.push_back(entry.0);
            if explicit_tags {
                self.rest_tags.push_back(entry.1);
            }
        }
    }

    fn pop_front(&mut self, explicit_tags: bool) -> Option<(Queued, u64)> {
        let head = self.head.take()?;
        self.head = self.rest.pop_front().map(|q| {
            let tag = if explicit_tags { self.rest_tags.pop_front().unwrap_or(q.seq) } else { q.seq };
            (q, tag)
        });
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
    /// Whether requests carry tags of the policy's own; otherwise a request's tag is its
    /// arrival sequence number.
    explicit_tags: bool,
}

impl Flows {
    /// Flows ordered by their oldest request's arrival (its sequence number is its tag).
    pub(crate) fn by_head() -> Self {
        Flows { tag_by_head: true, ..Flows::default() }
    }

    /// Flows ordered by the tag of their head request, each request tagged by the policy.
    pub(crate) fn by_head_tagged() -> Self {
        Flows { tag_by_head: true, explicit_tags: true, ..Flows::default() }
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

    /// Appends a request with its per-request tag (its sequence number unless the flows
    /// were made with explicit tags); the caller has set the flow's tag if the flow was
    /// idle.
    pub(crate) fn push(&mut self, f: FunctionId, req: Queued, req_tag: u64) {
        debug_assert!(self.explicit_tags || req_tag == req.seq, "untagged flows take sequence numbers");
        let (by_head, explicit) = (self.tag_by_head, self.explicit_tags);
        let flow = self.flow(f);
        let was_idle = flow.is_empty();
        if was_idle && by_head {
            flow.tag = req_tag;
        }
        flow.push_back((req, req_tag), explicit);
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
        let explicit = self.explicit_tags;
        let flow = &mut self.flows[f.0 as usize];
        let head = flow.pop_front(explicit)?;
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
            f.rest_tags.clear();
            out.extend(f.head.take().map(|(q, _)| q).into_iter().chain(f.rest.drain(..)));
        }
        out
    }
}
