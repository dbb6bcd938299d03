//! `deadline` admission: when a request would complete under the active policy's own
//! order, and scale from zero for functions resident nowhere.
//!
//! The prediction pours the work the policy runs first (see [`Ahead`]) into the slots of
//! the devices the request may use, in the order those slots free up, each slot draining
//! at its class's speed for this function (water-filling, the fluid limit of list
//! scheduling). The level where the work ahead is used up is when the request starts;
//! it then pays its load if it lands where it is not resident, and its runtime there.
//! Under deadline order the work ahead also grows with what will be admitted before the
//! request starts with an earlier deadline (see [`super::inflow`]).

use super::backlog::{Backlog, ClassSlots};
use super::*;
use crate::model::ClassId;
use crate::policy::{AdmissionScope, Ahead};

/// Busy slots read one by one per class before the rest are taken as one group at their
/// mean end.
const SLOT_SCAN: usize = 16;
/// A probe of a function refused for its own runtime is let through at most once per this
/// many of its predicted runtimes.
const PROBE_SPACING: u64 = 10;
/// The share of freeing slots on classes where a request would miss its deadline above
/// which it is predicted to land there (the 1 % that `admitted_slo_attainment` ≥ 0.99
/// leaves).
const MISS_SHARE: f64 = 0.01;
/// Rounds of the fixed point that adds the work cutting in under deadline order.
const CUT_IN_ROUNDS: usize = 6;

/// What admission predicts for a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// Predicted completion.
    pub completion: Nanos,
    /// Predicted start.
    pub start: Nanos,
    /// The load it pays first (0 when it lands warm).
    pub load: Nanos,
    /// The class it is predicted to run on.
    pub class: ClassId,
    /// Whether it must first claim a device (see [`AdmissionScope::claim`]).
    pub claim: bool,
}

/// The `SLOT_SCAN` soonest of a stream of slot ends, and the sum and count of all of them,
/// in one pass without storing the rest (a scope of hundreds of devices is read on every
/// arrival).
#[derive(Copy, Clone, Debug, Default)]
struct Soonest {
    at: [Nanos; SLOT_SCAN],
    /// How many of `at` are filled.
    n: usize,
    /// Index of the latest of `at` once it is full.
    latest: usize,
    sum: u128,
    count: u64,
}

impl Soonest {
    #[inline]
    fn push(&mut self, end: Nanos) {
        self.sum += end as u128;
        self.count += 1;
        if self.n < SLOT_SCAN {
            self.at[self.n] = end;
            self.n += 1;
            if self.n == SLOT_SCAN {
                self.latest = argmax(&self.at);
            }
        } else if end < self.at[self.latest] {
            self.at[self.latest] = end;
            self.latest = argmax(&self.at);
        }
    }
}

fn argmax(at: &[Nanos; SLOT_SCAN]) -> usize {
    let mut best = 0;
    for (i, &e) in at.iter().enumerate() {
        if e > at[best] {
            best = i;
        }
    }
    best
}

/// A group of slots that free up at the same time, draining `rate` work per ns each.
#[derive(Copy, Clone, Debug)]
pub(super) struct Slots {
    at: Nanos,
    count: u64,
    rate: f64,
    class: u16,
}

impl Scheduler {
    /// Deadline admission of `request` (its function is known and can run somewhere).
    pub(super) fn admit_by_deadline(&mut self, now: Nanos, request: &Request) -> Result<(), Rejection> {
        let f = request.function;
        let Some(p) = self.predict(f, request.deadline, now) else {
            return Err(Rejection::NoCapacity);
        };
        let slack = (request.deadline.saturating_sub(request.arrival) as f64 * self.headroom) as Nanos;
        let latest = request.deadline.saturating_sub(slack);
        if p.completion <= latest {
            self.admitted_prediction = Some(p.completion);
            return Ok(());
        }
        // Would a warm run meet the deadline where the function is being loaded, or
        // could be? Then load it (scale from zero, or onto one more device, of the class
        // where a warm run makes the deadline), so that requests arriving once the load
        // is done are served warm, and tell this one when to come back.
        if let Some(ready_at) = self.warm_up_for(now, request, &p, latest) {
            return Err(Rejection::Warming { ready_at, retry_after: ready_at.saturating_sub(now) });
        }
        // Never shut a function out on its model alone: a request refused only for its own
        // predicted runtime (it would start now, warm, with nothing ahead, and still miss
        // the deadline itself, not only the headroom) is let through now and then, so that
        // what the function really takes keeps being measured. A
        // runtime learned from a few slow runs, or a stale profile, would otherwise refuse
        // every request for good: nothing refused is ever measured. Probes are spaced by
        // ten of their predicted runtimes (at least a second): at most a tenth of one slot.
        if p.start <= now
            && p.load == 0
            && p.completion > request.deadline
            && self.take_probe(f, now, p.completion.saturating_sub(p.start))
        {
            self.admitted_prediction = Some(p.completion);
            return Ok(());
        }
        Err(Rejection::DeadlineUnmeetable { predicted: p.completion, deadline: request.deadline })
    }

    /// Whether a probe of `f`, predicted to run `run`, may go now; if so the next may go
    /// ten runs (at least a second) later, and the request being admitted is marked one.
    fn take_probe(&mut self, f: FunctionId, now: Nanos, run: Nanos) -> bool {
        let fi = f.0 as usize;
        if now < self.probe_at[fi] {
            return false;
        }
        self.probe_at[fi] = now.saturating_add(run.saturating_mul(PROBE_SPACING).max(crate::model::SEC));
        self.admitted_probe = true;
        true
    }

    /// Compares an admitted request's completion with its prediction; the margin may
    /// move the headroom (see [`crate::margin`]).
    pub(super) fn learn_margin(&mut self, now: Nanos, slot: usize, r: &Request) {
        let Some(&p) = self.predicted.get(slot).filter(|&&p| p > 0) else { return };
        let from = |t: Nanos| t.saturating_sub(r.arrival) as f64;
        let deadline = from(r.deadline);
        if let Some(h) = self.margin.record(from(p), from(now), deadline, self.config.deadline_headroom) {
            self.headroom = h;
        }
    }

    /// The share of each deadline `deadline` admission keeps free now: the configured
    /// headroom, or more while admitted requests complete later than predicted.
    pub fn deadline_headroom(&self) -> f64 {
        self.headroom
    }

    /// Predicted completion of a request of `f` with absolute `deadline` arriving now,
    /// under the active policy: what `deadline` admission compares with the deadline.
    pub fn predict_completion(&self, f: FunctionId, deadline: Nanos, now: Nanos) -> Option<Nanos> {
        self.predict(f, deadline, now).map(|p| p.completion)
    }

    /// The whole prediction: start, load, class and completion. `None` when no healthy
    /// device can run `f`.
    pub fn predict(&self, f: FunctionId, deadline: Nanos, now: Nanos) -> Option<Prediction> {
        let mut groups = self.predict_groups.take();
        groups.clear();
        let p = self.predict_into(&mut groups, f, deadline, now, true);
        // Every test build checks that the shortcut for a slot free now (see `only_now`)
        // predicts what gathering every slot group does.
        #[cfg(debug_assertions)]
        {
            // And that the kept slot ends agree with the devices': on every prediction
            // in small clusters, on one in eight (by arrival) in large ones, where the
            // check costs as much as the rest of a test run.
            if let Some(t) = &self.track
                && (self.running.len() <= 64 || self.seq.is_multiple_of(8))
            {
                self.check_classes(t);
            }
            groups.clear();
            let full = self.predict_into(&mut groups, f, deadline, now, false);
            assert_eq!(p, full, "prediction with the free-now shortcut differs from the full one");
        }
        self.predict_groups.set(groups);
        p
    }

    /// [`predict`](Self::predict) with `groups` (empty) to collect the slot groups in;
    /// `shortcut`: whether the groups may be cut to those free now where that is exact.
    fn predict_into(
        &self,
        groups: &mut Vec<Slots>,
        f: FunctionId,
        deadline: Nanos,
        now: Nanos,
        shortcut: bool,
    ) -> Option<Prediction> {
        let fi = f.0 as usize;
        let hot = *self.v.hot.get(fi)?;
        if hot.best == 0 {
            return None;
        }
        let snapshot;
        let t = match &self.track {
            Some(t) => t,
            None => {
                snapshot = self.snapshot();
                &snapshot
            }
        };
        let cx = cx!(self, now);
        let scope = self.policy.admission_scope(&cx, f);
        let exact = self.policy.exact_scope();
        let mut ahead = ahead_work(t, &scope, f, hot.weight, deadline).max(0) as f64;
        if scope.ahead == Ahead::All {
            // Loads queued to claim devices run in the same order.
            ahead += self.claim_work as f64;
        }
        let classes = self.cluster.classes.len();
        let rate = |c: usize| {
            let r = self.v.costs[fi * classes + c].runtime;
            if r == NONE { 0.0 } else { hot.best as f64 / r as f64 }
        };
        // The slot groups the request may use, soonest first.
        let pinned = self.pinned.get(fi).copied().flatten().is_some();
        // With nothing ahead (and nothing to cut in) the request starts on the first slot
        // free now, if there is one: the level stays at `now`, and which classes have a
        // slot there is all that is read of the groups below, so the slots freeing later
        // are not gathered. Without a slot free now, every group is.
        let cut_ins =
            scope.ahead == Ahead::EarlierDeadline && t.deadline_order && exact && !self.inflow.is_empty();
        let only_now = shortcut && ahead == 0.0 && !cut_ins;
        // A scope that is one of the policy's zones reads the zone's slots as kept.
        let zone = scope.zone.filter(|&z| !pinned && (z as usize) < t.zones.order.len()).map(|z| z as usize);
        if let Some(z) = zone {
            #[cfg(debug_assertions)]
            self.check_zone(t, z, scope.devices.as_ref());
            let classes = self.cluster.classes.len();
            let slots = |z: usize| {
                t.zones.order[z].iter().map(move |&c| (c as usize, &t.zones.slots[z * classes + c as usize]))
            };
            self.tracked_groups(groups, slots(z), fi, now, only_now, &rate);
            if groups.is_empty() && only_now {
                self.tracked_groups(groups, slots(z), fi, now, false, &rate);
            }
        } else if scope.devices.is_some() || pinned {
            let set = scope.devices.as_ref().unwrap_or(&self.v.runnable[fi]);
            self.scoped_groups(groups, set, fi, now, only_now, &rate);
            if groups.is_empty() && only_now {
                self.scoped_groups(groups, set, fi, now, false, &rate);
            }
        } else {
            let slots = || t.classes.iter().enumerate();
            self.tracked_groups(groups, slots(), fi, now, only_now, &rate);
            if groups.is_empty() && only_now {
                self.tracked_groups(groups, slots(), fi, now, false, &rate);
            }
        }
        groups.sort_by_key(|g| g.at);
        let first_at = groups.first()?.at as f64;
        let (mut level, mut marginal) = fill(groups, ahead);
        // Under deadline order, what is admitted before the request starts with an
        // earlier deadline runs first too (see [`super::inflow`]): the start solves
        // L = fill(ahead + cut_ins(L)), piecewise linear in L. Step, and once two steps
        // are known jump to where the line through them meets L (exact within one
        // piece), so that a stream taking most of the slots still converges; if such
        // work arrives faster than the slots drain it, the last round stands.
        if cut_ins {
            let step = |l: f64| {
                let extra = self.inflow.cut_ins(now, l.max(first_at) as Nanos, deadline);
                fill(groups, ahead + extra)
            };
            let mut x = level;
            let mut last: Option<(f64, f64)> = None;
            for _ in 0..CUT_IN_ROUNDS {
                let (gx, m) = step(x);
                (level, marginal) = (gx, m);
                if (gx - x).abs() < 1_000.0 {
                    break;
                }
                let slope = last.map(|(xp, gp)| (gx - gp) / (x - xp)).filter(|s| s.is_finite());
                let next = match slope {
                    Some(s) if (0.0..0.98).contains(&s) => x + (gx - x) / (1.0 - s),
                    _ => gx,
                };
                last = Some((x, gx));
                x = next;
            }
        }
        let start = level.max(first_at) as Nanos;
        // The completion admission asks for (the deadline less its headroom), which picks
        // a class where more than one could serve the request.
        let latest = deadline.saturating_sub((deadline.saturating_sub(now) as f64 * self.headroom) as Nanos);
        let run_on = |c: usize| self.v.costs[fi * classes + c].runtime;
        let claim = scope.claim;
        let warm_in = |c: usize| {
            self.v.resident[fi].iter_common3(&self.v.class_sets[c], &self.v.healthy).next().is_some()
        };
        let load_on = |c: usize| self.v.costs[fi * classes + c].load;
        let finish = |c: usize, warm: bool| {
            let load = if warm { 0 } else { load_on(c) };
            Prediction { completion: start + load + run_on(c), start, load, class: ClassId(c as u16), claim }
        };
        // A class-aware policy runs the request where it finishes first: on each class,
        // as soon as the work ahead is done and a slot there frees (a slot where it is
        // warm, if it is resident in the class, else any slot, paying the load).
        if scope.class_aware && exact && scope.devices.is_none() {
            let res = &self.v.resident[fi];
            // With nothing ahead, the policy takes the cheapest class free now whose
            // completion meets the deadline (admission asks for its own margin), else
            // the one that finishes first; with work ahead, which classes will be free
            // when the request's turn comes is not known: the one that finishes first.
            let price = |c: usize| {
                let class = &self.cluster.classes[c];
                class.price_per_hour / class.slots.max(1) as f64
            };
            // Each class once: where it is warm soonest (a free warm device ends the scan;
            // the free set holds only healthy devices) and where any slot frees first.
            let mut candidates: Vec<Prediction> = Vec::with_capacity(2 * classes);
            for c in (0..classes)
                .filter(|&c| run_on(c) != NONE && self.v.runnable[fi].intersects(&self.v.class_sets[c]))
            {
                let set = &self.v.class_sets[c];
                let warm = if res.iter_common3(set, &self.v.free).next().is_some() {
                    Some(now)
                } else {
                    res.iter_common3(set, &self.v.healthy).map(|d| cx.available_at(d)).min()
                };
                let slots = &t.classes[c];
                let any = if slots.free > 0 { Some(now) } else { slots.first_end().map(|e| e.max(now)) };
                for (at, warm) in warm.map(|at| (at, true)).into_iter().chain(any.map(|at| (at, false))) {
                    let begin = at.max(start);
                    let load = if warm { 0 } else { load_on(c) };
                    candidates.push(Prediction {
                        completion: begin + load + run_on(c),
                        start: begin,
                        load,
                        class: ClassId(c as u16),
                        claim,
                    });
                }
            }
            let cost = |p: &Prediction| price(p.class.0 as usize) * (p.completion - p.start) as f64;
            let cheapest = candidates
                .iter()
                .filter(|p| p.start == now && p.completion <= latest)
                .min_by(|a, b| cost(a).total_cmp(&cost(b)).then(a.completion.cmp(&b.completion)));
            return cheapest.or_else(|| candidates.iter().min_by_key(|p| p.completion)).copied();
        }
        // Nothing ahead and a slot free now: the device the policy itself would pick.
        if start == now && ahead == 0.0 && exact {
            let device = match &scope.devices {
                None => self.policy.place_alone(&cx, f).or_else(|| cx.best_free(f)),
                Some(set) => {
                    let res = &self.v.resident[fi];
                    self.v.free.iter_common3(set, res).find(|&d| cx.fits(f, d)).or_else(|| {
                        self.v.free.iter_common3(set, &self.v.runnable[fi]).find(|&d| cx.fits(f, d))
                    })
                }
            };
            if let Some(d) = device {
                let c = self.cluster.devices[d.0 as usize].class.0 as usize;
                return Some(finish(c, self.v.resident[fi].contains(d)));
            }
        }
        let participating = |c: usize| groups.iter().any(|g| g.class as usize == c && (g.at as f64) <= level);
        let p = if scope.class_aware && exact {
            (0..classes)
                .filter(|&c| run_on(c) != NONE && participating(c))
                .map(|c| finish(c, warm_in(c)))
                .min_by_key(|p| p.completion)
        } else if exact {
            // Once its turn comes the request takes whichever of those slots frees next,
            // now and then one of a slow class. Each class frees slots in proportion to
            // its slots over its runtime; if the classes where the request would miss
            // its deadline (less the headroom) free more than `MISS_SHARE` of them, it is
            // predicted on the worst of those, else on the class the fill ended on.
            let (mut total, mut missing, mut worst) = (0.0f64, 0.0f64, None::<Prediction>);
            if start > now && classes > 1 {
                for c in (0..classes).filter(|&c| run_on(c) != NONE) {
                    let slots: u64 = groups
                        .iter()
                        .filter(|g| g.class as usize == c && (g.at as f64) <= level)
                        .map(|g| g.count)
                        .sum();
                    if slots == 0 {
                        continue;
                    }
                    let share = slots as f64 / run_on(c).max(1) as f64;
                    total += share;
                    let p = finish(c, warm_in(c));
                    if p.completion > latest {
                        missing += share;
                        worst = worst.filter(|w| w.completion >= p.completion).or(Some(p));
                    }
                }
            }
            match worst {
                Some(w) if missing > MISS_SHARE * total => Some(w),
                _ => Some(finish(marginal as usize, warm_in(marginal as usize))),
            }
        } else {
            // A policy kaas does not know may put the request on its slowest class.
            (0..classes)
                .filter(|&c| run_on(c) != NONE && participating(c))
                .map(|c| finish(c, warm_in(c)))
                .max_by_key(|p| p.completion)
        };
        p.or_else(|| Some(finish(marginal as usize, warm_in(marginal as usize))))
    }
}

impl Scheduler {
    /// The slot groups of the devices of `set` that can run function `fi`: per class, in
    /// the order of its first device in the scope (among slots that free at the same time
    /// the lowest device's class comes first, as the policies' own picks go), its free
    /// slots, the `SLOT_SCAN` soonest busy ends one by one and the rest as one group at
    /// their mean end (a partition of hundreds of devices must not cost a sort of every
    /// slot on each arrival). With `only_now`, as [`Self::unscoped_groups`].
    fn scoped_groups(
        &self,
        groups: &mut Vec<Slots>,
        set: &DeviceSet,
        fi: usize,
        now: Nanos,
        only_now: bool,
        rate: &impl Fn(usize) -> f64,
    ) {
        let classes = self.cluster.classes.len();
        let runnable = &self.v.runnable[fi];
        let mut order: Vec<usize> = Vec::with_capacity(classes);
        // Per class: free slots, and whether a busy one is due by now (for `only_now`).
        let mut free = vec![(0u64, false); classes];
        let mut ends: Vec<Soonest> = if only_now { Vec::new() } else { vec![Soonest::default(); classes] };
        for d in set.iter_common3(runnable, &self.v.healthy) {
            let di = d.0 as usize;
            let c = self.cluster.devices[di].class.0 as usize;
            if !order.contains(&c) {
                order.push(c);
            }
            free[c].0 += self.free_slots[di] as u64;
            let cells = &self.running[self.running_base[di]..self.running_base[di + 1]];
            if only_now {
                free[c].1 = free[c].1 || cells.iter().any(|&(id, end)| id != NOBODY && end <= now);
                continue;
            }
            for &(id, end) in cells {
                if id != NOBODY {
                    ends[c].push(end.max(now));
                }
            }
        }
        for &c in &order {
            let r = rate(c);
            let (free, overdue) = free[c];
            if only_now {
                if free > 0 || overdue {
                    let count = free + overdue as u64;
                    groups.push(Slots { at: now, count, rate: r, class: c as u16 });
                }
                continue;
            }
            if free > 0 {
                groups.push(Slots { at: now, count: free, rate: r, class: c as u16 });
            }
            let soonest = &ends[c];
            let kept = &soonest.at[..soonest.n];
            let later = soonest.count - kept.len() as u64;
            if later > 0 {
                let sum = soonest.sum - kept.iter().map(|&e| e as u128).sum::<u128>();
                let at = (sum / later as u128) as Nanos;
                groups.push(Slots { at, count: later, rate: r, class: c as u16 });
            }
            groups.extend(kept.iter().map(|&at| Slots { at, count: 1, rate: r, class: c as u16 }));
        }
    }

    /// The slot groups of every class that can run function `fi` from slots kept per
    /// class (`slots`: each class's, or a zone's): free slots, the `SLOT_SCAN` soonest
    /// busy ends of each class one by one and the rest as one group at their mean end.
    /// With `only_now`, just one group per class that has a slot free now (or overdue):
    /// where the level stays at `now`, which classes are there is all that is read of them.
    fn tracked_groups<'a>(
        &self,
        groups: &mut Vec<Slots>,
        slots: impl Iterator<Item = (usize, &'a ClassSlots)>,
        fi: usize,
        now: Nanos,
        only_now: bool,
        rate: &impl Fn(usize) -> f64,
    ) {
        for (c, slots) in slots {
            let r = rate(c);
            if r == 0.0 || !self.v.runnable[fi].intersects(&self.v.class_sets[c]) {
                continue;
            }
            if only_now {
                // Ends are sorted: the first says whether any is due by now.
                let overdue = slots.first_end().is_some_and(|e| e <= now);
                if slots.free > 0 || overdue {
                    let count = slots.free + overdue as u64;
                    groups.push(Slots { at: now, count, rate: r, class: c as u16 });
                }
                continue;
            }
            if slots.free > 0 {
                groups.push(Slots { at: now, count: slots.free, rate: r, class: c as u16 });
            }
            let mut taken = 0u64;
            let mut sum = 0u128;
            for &(end, n) in slots.soonest().iter().take(SLOT_SCAN) {
                groups.push(Slots { at: end.max(now), count: n as u64, rate: r, class: c as u16 });
                taken += n as u64;
                sum += end as u128 * n as u128;
            }
            if taken < slots.busy {
                // The busy slots beyond those as one group at their mean end.
                let count = slots.busy - taken;
                let at = ((slots.end_sum - sum) / count as u128) as Nanos;
                groups.push(Slots { at: at.max(now), count, rate: r, class: c as u16 });
            }
        }
    }
}

/// Water-fills `ahead` work into the slot groups (sorted by when they free): the level
/// where the work is used up, and the class of the last group it reached.
fn fill(groups: &[Slots], ahead: f64) -> (f64, u16) {
    // Find L with sum(rate × (L − at)) = ahead over the groups below L.
    let (mut lambda, mut weighted) = (0.0f64, 0.0f64);
    let mut level = groups[0].at as f64;
    let mut marginal = groups[0].class;
    for (i, g) in groups.iter().enumerate() {
        lambda += g.rate * g.count as f64;
        weighted += g.rate * g.count as f64 * g.at as f64;
        marginal = g.class;
        level = (ahead + weighted) / lambda;
        if groups.get(i + 1).is_none_or(|n| level <= n.at as f64) {
            break;
        }
    }
    (level, marginal)
}

/// The queued work (ns on each request's fastest class) that runs before a new request.
fn ahead_work(t: &Backlog, scope: &AdmissionScope, f: FunctionId, weight: u32, deadline: Nanos) -> i64 {
    let own = t.work.get(f.0 as usize).copied().unwrap_or(0);
    match scope.ahead {
        Ahead::All => t.all,
        Ahead::EarlierDeadline if t.deadline_order => t.by_deadline.before(deadline),
        // A policy that said it never counts by deadline: everything queued.
        Ahead::EarlierDeadline => {
            debug_assert!(false, "a scope counts work by deadline under a policy that said it never does");
            t.all
        }
        Ahead::Flow => own,
        Ahead::FlowShare => {
            let backlogged = t.count.get(f.0 as usize).is_some_and(|&c| c > 0);
            let total = t.backlogged_weight + if backlogged { 0 } else { weight as u64 };
            let scaled = (own as f64 + 1.0) * total as f64 / weight.max(1) as f64;
            (scaled as i64).min(t.all)
        }
    }
}
