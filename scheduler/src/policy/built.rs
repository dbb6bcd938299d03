//! A built policy: the design's policies held by value, so the scheduler's calls into
//! them are direct calls the optimiser can inline rather than calls through a vtable;
//! policies registered by users stay behind a box.

use super::{
    Balance, CfsAffinity, Cx, Edf, Exclusive, MqfqSticky, Pick, Policy, Queued, Rank, SloAware,
    StaticPartition,
};
use crate::model::{DeviceId, FunctionId, Nanos};

/// What [`Registry::build`](super::Registry::build) returns; it is itself a [`Policy`].
pub enum BuiltPolicy {
    /// `balance`.
    Balance(Balance),
    /// `exclusive`.
    Exclusive(Exclusive),
    /// `static`.
    Static(StaticPartition),
    /// `cfs-affinity`.
    CfsAffinity(CfsAffinity),
    /// `edf`.
    Edf(Edf),
    /// `slo-aware`.
    SloAware(SloAware),
    /// `mqfq-sticky`.
    MqfqSticky(MqfqSticky),
    /// Anything registered with [`Registry::register`](super::Registry::register).
    Custom(Box<dyn Policy>),
}

/// Calls the same method on whichever policy is inside.
macro_rules! each {
    ($self:expr, $p:ident => $call:expr) => {
        match $self {
            BuiltPolicy::Balance($p) => $call,
            BuiltPolicy::Exclusive($p) => $call,
            BuiltPolicy::Static($p) => $call,
            BuiltPolicy::CfsAffinity($p) => $call,
            BuiltPolicy::Edf($p) => $call,
            BuiltPolicy::SloAware($p) => $call,
            BuiltPolicy::MqfqSticky($p) => $call,
            BuiltPolicy::Custom($p) => $call,
        }
    };
}

impl Policy for BuiltPolicy {
    fn name(&self) -> &str {
        each!(self, p => p.name())
    }

    #[inline]
    fn enqueue(&mut self, cx: &Cx, req: Queued) {
        each!(self, p => p.enqueue(cx, req))
    }

    #[inline]
    fn peek(&mut self, cx: &Cx) -> Option<Pick> {
        each!(self, p => p.peek(cx))
    }

    #[inline]
    fn commit(&mut self, cx: &Cx, pick: &Pick) {
        each!(self, p => p.commit(cx, pick))
    }

    fn rank(&self, cx: &Cx, req: &Queued) -> Rank {
        each!(self, p => p.rank(cx, req))
    }

    #[inline]
    fn len(&self) -> usize {
        each!(self, p => p.len())
    }

    #[inline]
    fn is_empty(&self) -> bool {
        each!(self, p => p.is_empty())
    }

    #[inline]
    fn place_alone(&self, cx: &Cx, f: FunctionId) -> Option<DeviceId> {
        each!(self, p => p.place_alone(cx, f))
    }

    fn admission_scope(&self, cx: &Cx, f: FunctionId) -> super::AdmissionScope {
        each!(self, p => p.admission_scope(cx, f))
    }

    fn admission_zones(&self, cx: &Cx) -> Vec<crate::devset::DeviceSet> {
        each!(self, p => p.admission_zones(cx))
    }

    fn orders_by_deadline(&self) -> bool {
        each!(self, p => p.orders_by_deadline())
    }

    fn exact_scope(&self) -> bool {
        !matches!(self, BuiltPolicy::Custom(_))
    }

    #[inline]
    fn refuse(&self, cx: &Cx, f: FunctionId) -> Option<String> {
        each!(self, p => p.refuse(cx, f))
    }

    #[inline]
    fn keep_alive(&self) -> Nanos {
        each!(self, p => p.keep_alive())
    }

    fn work_conserving(&self) -> bool {
        each!(self, p => p.work_conserving())
    }

    fn drain(&mut self) -> Vec<Queued> {
        each!(self, p => p.drain())
    }
}
