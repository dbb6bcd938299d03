//! What `deadline` admission reads to predict a request's completion under the active
//! policy: queued work by function and by deadline, and when each class's busy slots end.
//! Kept only while deadline admission is on, so the other modes pay nothing for it.

use std::collections::BTreeMap;

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

/// Busy slots of one class: when each ends, and their count and sum for the closed form.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassSlots {
    pub(crate) ends: BTreeMap<Nanos, u32>,
    pub(crate) busy: u64,
    pub(crate) end_sum: u128,
    /// Free slots on healthy devices of the class.
    pub(crate) free: u64,
}

impl ClassSlots {
    pub(crate) fn start(&mut self, end: Nanos) {
        *self.ends.entry(end).or_insert(0) += 1;
        self.busy += 1;
        self.end_sum += end as u128;
    }

    pub(crate) fn end(&mut self, end: Nanos) {
        // One walk of the tree: the entry is decremented or removed where it was found.
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.ends.entry(end) {
            if *e.get() > 1 {
                *e.get_mut() -= 1;
            } else {
                e.remove();
            }
            self.busy -= 1;
            self.end_sum -= end as u128;
        }
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
