//! What `deadline` admission reads to predict a request's completion under the active
//! policy: queued work by function and by deadline, and when each class's busy slots end.
//! Kept only while deadline admission is on, so the other modes pay nothing for it.

use crate::model::{FunctionId, Nanos};

/// Queued work summed by deadline: a Fenwick tree over a ring of deadline buckets, so
/// "work queued with a deadline before D" costs a logarithm. Buckets whose deadline is
/// long past fold into `overdue` (such work runs ahead of every new arrival), which keeps
/// the ring from aliasing however long a request stays queued.
#[derive(Clone, Debug)]
pub(crate) struct DeadlineWork {
    /// log2 of the bucket width in nanoseconds.
    shift: u32,
    /// Lowest bucket the ring holds; anything queued below it is in `overdue`.
    base: u64,
    tree: Vec<i64>,
    cells: Vec<i64>,
    overdue: i64,
}

/// Buckets in the ring: 16 Ki × 8 bytes each for the tree and the cells.
const RING: usize = 1 << 14;

impl DeadlineWork {
    /// A ring whose buckets are wide enough that `horizon` (the longest relative deadline)
    /// spans a quarter of it.
    pub(crate) fn new(horizon: Nanos) -> Self {
        let width = (horizon.max(1) as u128 * 4 / RING as u128).max(1) as u64;
        let shift = 64 - width.saturating_sub(1).leading_zeros();
        DeadlineWork { shift, base: 0, tree: vec![0; RING + 1], cells: vec![0; RING], overdue: 0 }
    }

    /// Whether buckets are wide enough for relative deadlines up to `horizon`.
    pub(crate) fn covers(&self, horizon: Nanos) -> bool {
        (horizon >> self.shift) < (RING as u64) / 4
    }

    fn add_at(&mut self, pos: usize, v: i64) {
        self.cells[pos] += v;
        let mut i = pos + 1;
        while i <= RING {
            self.tree[i] += v;
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of cells `[0, pos]`.
    fn prefix(&self, pos: usize) -> i64 {
        let mut i = pos + 1;
        let mut s = 0;
        while i > 0 {
            s += self.tree[i];
            i &= i - 1;
        }
        s
    }

    /// The bucket a deadline is kept in (clamped into the ring).
    pub(crate) fn bucket(&self, deadline: Nanos) -> u64 {
        (deadline >> self.shift).min(self.base + RING as u64 - 1)
    }

    /// Moves the ring forward so that `now` sits in its first quarter.
    pub(crate) fn advance(&mut self, now: Nanos) {
        let b = now >> self.shift;
        let want = b.saturating_sub(RING as u64 / 4);
        if want <= self.base {
            return;
        }
        let moved = (want - self.base).min(RING as u64);
        for k in 0..moved {
            let pos = ((self.base + k) % RING as u64) as usize;
            let v = self.cells[pos];
            if v != 0 {
                self.add_at(pos, -v);
                self.overdue += v;
            }
        }
        self.base = want;
    }

    /// Adds (or with a negative `work`, removes) work kept in bucket `b`.
    pub(crate) fn add(&mut self, b: u64, work: i64) {
        if b < self.base {
            self.overdue += work;
        } else {
            self.add_at((b % RING as u64) as usize, work);
        }
    }

    /// Work queued with a deadline in a bucket at or before `deadline`'s.
    pub(crate) fn before(&self, deadline: Nanos) -> i64 {
        let b = deadline >> self.shift;
        if b < self.base {
            return self.overdue;
        }
        let b = b.min(self.base + RING as u64 - 1);
        let p0 = (self.base % RING as u64) as usize;
        let p1 = (b % RING as u64) as usize;
        let ring = if p0 <= p1 {
            self.prefix(p1) - if p0 == 0 { 0 } else { self.prefix(p0 - 1) }
        } else {
            self.prefix(RING - 1) - (self.prefix(p0 - 1) - self.prefix(p1))
        };
        self.overdue + ring
    }
}

/// Distinct busy-slot ends [`ClassSlots`] keeps in order at most (the rest are counted).
pub(crate) const LOW_KEEP: usize = 48;
/// Below this many distinct ends kept (with more busy slots than those) they are
/// gathered afresh from the devices: what a prediction reads of them one by one.
pub(crate) const LOW_MIN: usize = 16;

/// Busy slots of one class (or of a zone's devices of one class): their count and the sum
/// of their ends for the closed form, and the soonest ends in order. Only the lowest
/// [`LOW_KEEP`] distinct ends are kept, ascending with how many slots end at each; every
/// busy slot not among them ends strictly after the last kept. Slots start at any end but
/// mostly end among the soonest, so a start or an end costs a search of a few dozen
/// entries; when fewer than [`LOW_MIN`] remain kept, the engine gathers them again from
/// the devices' running cells ([`ClassSlots::refill`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassSlots {
    low: Vec<(Nanos, u32)>,
    /// Busy slots whose end is in `low`.
    in_low: u64,
    pub(crate) busy: u64,
    pub(crate) end_sum: u128,
    /// Free slots on healthy devices of the class.
    pub(crate) free: u64,
}

impl ClassSlots {
    pub(crate) fn start(&mut self, end: Nanos) {
        self.busy += 1;
        self.end_sum += end as u128;
        let unkept = self.busy - 1 > self.in_low;
        match self.low.last() {
            // After every kept end, with others after it: counted only.
            Some(&(last, _)) if end > last && (unkept || self.low.len() == LOW_KEEP) => return,
            None if unkept => return,
            _ => {}
        }
        match self.low.binary_search_by_key(&end, |&(e, _)| e) {
            Ok(i) => self.low[i].1 += 1,
            Err(i) => {
                self.low.insert(i, (end, 1));
                if self.low.len() > LOW_KEEP {
                    // The latest kept end joins the counted ones (all later than the rest).
                    let (_, n) = self.low.pop().unwrap_or_default();
                    self.in_low -= n as u64;
                }
            }
        }
        self.in_low += 1;
    }

    /// A busy slot ending at `end` ended (an end never started changes nothing). The kept
    /// ends may run [`short`](Self::short) of what a prediction reads.
    pub(crate) fn end(&mut self, end: Nanos) {
        if self.busy == 0 {
            return;
        }
        match self.low.binary_search_by_key(&end, |&(e, _)| e) {
            Ok(i) => {
                if self.low[i].1 > 1 {
                    self.low[i].1 -= 1;
                } else {
                    self.low.remove(i);
                }
                self.in_low -= 1;
            }
            // Not kept: it must be after the last kept one, among the counted.
            Err(i) if i == self.low.len() && self.busy > self.in_low => {}
            Err(_) => return,
        }
        self.busy -= 1;
        self.end_sum -= end as u128;
    }

    /// Whether the kept ends are too few for a prediction to read.
    pub(crate) fn short(&self) -> bool {
        self.low.len() < LOW_MIN && self.busy > self.in_low
    }

    /// Keeps the soonest of `ends` (every busy slot's end, in any order; sorted here).
    pub(crate) fn refill(&mut self, ends: &mut [Nanos]) {
        debug_assert_eq!(ends.len() as u64, self.busy, "a refill reads every busy slot");
        ends.sort_unstable();
        self.low.clear();
        self.in_low = 0;
        for &e in ends.iter() {
            let full = self.low.len() == LOW_KEEP;
            match self.low.last_mut() {
                Some((last, n)) if *last == e => *n += 1,
                _ if full => break,
                _ => self.low.push((e, 1)),
            }
            self.in_low += 1;
        }
    }

    /// The soonest busy-slot end.
    pub(crate) fn first_end(&self) -> Option<Nanos> {
        self.low.first().map(|&(e, _)| e)
    }

    /// The soonest distinct ends, ascending, with how many slots end at each.
    pub(crate) fn soonest(&self) -> &[(Nanos, u32)] {
        &self.low
    }

    /// Test builds: panics unless these kept slots agree with `fresh`, built from every
    /// busy slot by [`start`](Self::start): same counts and sum, and the kept ends the
    /// soonest of fresh's, enough of them.
    #[cfg(any(debug_assertions, test))]
    pub(crate) fn check(&self, fresh: &ClassSlots, what: &str) {
        assert_eq!(
            (self.free, self.busy, self.end_sum),
            (fresh.free, fresh.busy, fresh.end_sum),
            "{what}: kept slot counts differ from the devices'"
        );
        assert!(self.low.len() <= fresh.low.len(), "{what}: more ends kept than busy");
        assert_eq!(self.low[..], fresh.low[..self.low.len()], "{what}: kept ends are not the soonest");
        assert!(!self.short(), "{what}: kept ends ran short without a refill");
    }
}

/// Everything deadline admission keeps besides the engine's own state.
#[derive(Clone, Debug)]
pub(crate) struct Backlog {
    /// Queued work (ns on each request's fastest class) of all functions.
    pub(crate) all: i64,
    /// Queued work and queued requests per function.
    pub(crate) work: Vec<i64>,
    pub(crate) count: Vec<u32>,
    /// Sum of weights of functions with queued requests.
    pub(crate) backlogged_weight: u64,
    pub(crate) by_deadline: DeadlineWork,
    /// Whether `by_deadline` is kept: only for policies that may count work by deadline
    /// ([`crate::policy::Policy::orders_by_deadline`]).
    pub(crate) deadline_order: bool,
    /// Per request slot: the bucket its work was added to, and the work.
    pub(crate) slot: Vec<(u64, i64)>,
    /// Per function: the weight it was counted with while backlogged.
    pub(crate) weight: Vec<u32>,
    pub(crate) classes: Vec<ClassSlots>,
    /// The same per zone of the policy (see [`Zones`]).
    pub(crate) zones: Zones,
    /// Scratch for gathering slot ends afresh.
    pub(crate) scratch: Vec<Nanos>,
}

/// Busy and free slots per class within each of the policy's zones (fixed, disjoint
/// device sets, [`crate::policy::Policy::admission_zones`]), kept alongside the
/// per-class totals.
#[derive(Clone, Debug, Default)]
pub(crate) struct Zones {
    /// The zone of each device; `NO_ZONE` outside every zone. Empty without zones.
    pub(crate) of_device: Vec<u32>,
    /// Per zone and class (`zone × classes + class`).
    pub(crate) slots: Vec<ClassSlots>,
    /// Per zone, its classes in the order of their first device in the zone.
    pub(crate) order: Vec<Vec<u16>>,
}

pub(crate) const NO_ZONE: u32 = u32::MAX;

impl Zones {
    /// The tracker of device `di`'s zone, class `class` of `classes`.
    #[inline]
    fn of(&mut self, di: usize, class: usize, classes: usize) -> Option<&mut ClassSlots> {
        match self.of_device.get(di) {
            Some(&z) if z != NO_ZONE => Some(&mut self.slots[z as usize * classes + class]),
            _ => None,
        }
    }
}

impl Backlog {
    pub(crate) fn new(classes: usize, horizon: Nanos) -> Self {
        Backlog {
            all: 0,
            work: Vec::new(),
            count: Vec::new(),
            backlogged_weight: 0,
            by_deadline: DeadlineWork::new(horizon),
            deadline_order: true,
            slot: Vec::new(),
            weight: Vec::new(),
            classes: vec![ClassSlots::default(); classes],
            zones: Zones::default(),
            scratch: Vec::new(),
        }
    }

    /// Applies `change` to the slots of device `di` (of class `class`): its class's and
    /// its zone's.
    #[inline]
    pub(crate) fn on_device(&mut self, di: usize, class: usize, mut change: impl FnMut(&mut ClassSlots)) {
        let classes = self.classes.len();
        change(&mut self.classes[class]);
        if let Some(z) = self.zones.of(di, class, classes) {
            change(z);
        }
    }

    /// A request of `f` with `work`, weight `weight`, in slot `slot` joined the queue.
    pub(crate) fn queue(
        &mut self,
        now: Nanos,
        slot: usize,
        f: FunctionId,
        weight: u32,
        work: i64,
        deadline: Nanos,
    ) {
        let i = f.0 as usize;
        if i >= self.work.len() {
            self.work.resize(i + 1, 0);
            self.count.resize(i + 1, 0);
            self.weight.resize(i + 1, 0);
        }
        if self.count[i] == 0 {
            self.backlogged_weight += weight as u64;
            self.weight[i] = weight;
        }
        self.count[i] += 1;
        self.work[i] += work;
        self.all += work;
        let b = if self.deadline_order {
            self.by_deadline.advance(now);
            let b = self.by_deadline.bucket(deadline);
            self.by_deadline.add(b, work);
            b
        } else {
            0
        };
        if slot >= self.slot.len() {
            self.slot.resize(slot + 1, (0, 0));
        }
        self.slot[slot] = (b, work);
    }

    /// The request in `slot` left the queue (started, cancelled or dropped).
    pub(crate) fn unqueue(&mut self, slot: usize, f: FunctionId) {
        let i = f.0 as usize;
        if self.count.get(i).is_none_or(|&c| c == 0) {
            return;
        }
        let (b, work) = self.slot[slot];
        self.count[i] -= 1;
        if self.count[i] == 0 {
            self.backlogged_weight -= self.weight[i] as u64;
        }
        self.work[i] -= work;
        self.all -= work;
        if self.deadline_order {
            self.by_deadline.add(b, -work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Slots start and end in any order, hundreds busy at once: the kept soonest ends
        /// are always those of every busy slot, refilled from all of them when short.
        #[test]
        fn kept_ends_are_the_soonest_of_every_busy_slot(
            ops in prop::collection::vec((0u8..5, 0u64..2000, 0usize..1000), 1..3000)
        ) {
            let mut kept = ClassSlots::default();
            let mut all: Vec<Nanos> = Vec::new();
            for (op, end, pick) in ops {
                // More starts than ends, hundreds of slots busy by the end; half the ends
                // the soonest (as slots mostly end), half any.
                if op < 3 || all.is_empty() {
                    kept.start(end);
                    all.push(end);
                } else {
                    let at = if op == 3 { pick % all.len() } else { (0..all.len()).min_by_key(|&i| all[i]).unwrap() };
                    let e = all.swap_remove(at);
                    kept.end(e);
                    if kept.short() {
                        let mut every = all.clone();
                        kept.refill(&mut every);
                    }
                }
                let mut fresh = ClassSlots::default();
                for &e in &all {
                    fresh.start(e);
                }
                kept.check(&fresh, "slots");
                prop_assert_eq!(kept.first_end(), all.iter().min().copied());
            }
        }
    }

    #[test]
    fn an_end_never_started_changes_nothing() {
        let mut kept = ClassSlots::default();
        for e in [10, 20, 30] {
            kept.start(e);
        }
        kept.end(15);
        assert_eq!((kept.busy, kept.end_sum, kept.first_end()), (3, 60, Some(10)));
        assert_eq!(kept.soonest(), &[(10, 1), (20, 1), (30, 1)]);
    }
}
