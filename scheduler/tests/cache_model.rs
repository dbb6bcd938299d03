//! The device cache against a naive reference: every operation on random sequences gives
//! the same answers (fits, cold or warm, what is evicted and in which order, memory in
//! use, residents) as a model that keeps a plain list and scans it for every victim.
//! The cache keeps an LRU list and a lazily built GDSF heap; this pins their order down.

use kaas_scheduler::cache::{Acquired, DeviceCache};
use kaas_scheduler::{Eviction, FunctionId, Nanos};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct RefEntry {
    bytes: u64,
    pins: u32,
    last_use: Nanos,
    frequency: u64,
    /// Load cost given when it was loaded: its GDSF cost while it stays.
    cost: f64,
    priority: f64,
    keep_until: Nanos,
    /// Order in which it became unpinned (LRU order).
    parked: u64,
}

#[derive(Clone, Debug)]
struct Model {
    capacity: u64,
    working: u64,
    entries: Vec<Option<RefEntry>>,
    inflation: f64,
    eviction: Eviction,
    seq: u64,
}

impl Model {
    fn used(&self) -> u64 {
        self.working + self.entries.iter().flatten().map(|e| e.bytes).sum::<u64>()
    }

    fn fits(&self, f: usize, bytes: u64, working: u64, now: Nanos) -> bool {
        let own = self.entries[f].as_ref();
        let need = working + if own.is_some() { 0 } else { bytes };
        if self.used() + need <= self.capacity {
            return true;
        }
        let evictable: u64 = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .filter(|(i, e)| *i != f && e.pins == 0 && e.keep_until <= now)
            .map(|(_, e)| e.bytes)
            .sum();
        self.used() - evictable + need <= self.capacity
    }

    fn victim(&self, keep: usize, now: Nanos) -> Option<usize> {
        let candidates = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .filter(|(i, e)| *i != keep && e.pins == 0 && e.keep_until <= now);
        match self.eviction {
            Eviction::Lru => candidates.min_by_key(|(_, e)| e.parked).map(|(i, _)| i),
            Eviction::Gdsf => candidates
                .min_by_key(|(i, e)| (e.priority.max(0.0).to_bits(), e.last_use, *i))
                .map(|(i, _)| i),
        }
    }

    fn acquire(
        &mut self,
        f: usize,
        bytes: u64,
        working: u64,
        cost: Nanos,
        now: Nanos,
    ) -> Option<(bool, Vec<usize>)> {
        if !self.fits(f, bytes, working, now) {
            return None;
        }
        let warm = self.entries[f].is_some();
        let need = working + if warm { 0 } else { bytes };
        let mut evicted = Vec::new();
        // Entries skipped for their keep-alive go to the back of the LRU order.
        let skipped: Vec<usize> = if self.used() + need > self.capacity && self.eviction == Eviction::Lru {
            self.unpinned_by(|e| e.parked)
        } else {
            Vec::new()
        };
        let mut passed = Vec::new();
        while self.used() + need > self.capacity {
            let v = self.victim(f, now).expect("fits promised room");
            if self.eviction == Eviction::Lru {
                // Everything ahead of the victim in LRU order was skipped.
                for &i in &skipped {
                    if i == v {
                        break;
                    }
                    if self.entries[i].is_some() && !passed.contains(&i) {
                        passed.push(i);
                    }
                }
            }
            let e = self.entries[v].take().unwrap();
            if self.eviction == Eviction::Gdsf {
                self.inflation = self.inflation.max(e.priority);
            }
            evicted.push(v);
        }
        for i in passed {
            self.seq += 1;
            self.entries[i].as_mut().unwrap().parked = self.seq;
        }
        let cost = cost.max(1) as f64;
        let inflation = self.inflation;
        match self.entries[f].as_mut() {
            Some(e) => {
                e.pins += 1;
                e.frequency += 1;
                e.last_use = now;
                e.priority = inflation + e.frequency as f64 * e.cost / e.bytes.max(1) as f64;
            }
            None => {
                self.entries[f] = Some(RefEntry {
                    bytes,
                    pins: 1,
                    last_use: now,
                    frequency: 1,
                    cost,
                    priority: inflation + cost / bytes.max(1) as f64,
                    keep_until: 0,
                    parked: 0,
                })
            }
        }
        self.working += working;
        Some((!warm, evicted))
    }

    /// Unpinned entries by `key`, then index.
    fn unpinned_by(&self, key: impl Fn(&RefEntry) -> u64) -> Vec<usize> {
        let mut order: Vec<(u64, usize)> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().filter(|e| e.pins == 0).map(|e| (key(e), i)))
            .collect();
        order.sort();
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// Unpinned entries by last use, then index: the order of a flush and of re-parking.
    fn unpinned_by_last_use(&self) -> Vec<usize> {
        self.unpinned_by(|e| e.last_use)
    }

    fn release(&mut self, f: usize, working: u64, now: Nanos, keep_until: Nanos) {
        self.working -= working;
        self.seq += 1;
        let seq = self.seq;
        let e = self.entries[f].as_mut().unwrap();
        e.pins -= 1;
        e.last_use = now;
        e.keep_until = e.keep_until.max(keep_until);
        if e.pins == 0 {
            e.parked = seq;
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire { f: usize, bytes: u64, working: u64, cost: Nanos },
    Release { pick: usize, keep: Nanos },
    Evict { f: usize },
    Flush,
    Switch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..10, 50u64..=400, 0u64..=100, 1u64..=1000)
            .prop_map(|(f, bytes, working, cost)| Op::Acquire { f, bytes, working, cost }),
        6 => (0usize..64, prop_oneof![3 => Just(0u64), 1 => 1u64..=20]).prop_map(|(pick, keep)| Op::Release { pick, keep }),
        1 => (0usize..10).prop_map(|f| Op::Evict { f }),
        1 => Just(Op::Flush),
        1 => Just(Op::Switch),
    ]
}

fn run(ops: Vec<Op>, gdsf: bool) -> Result<(), TestCaseError> {
    let eviction = if gdsf { Eviction::Gdsf } else { Eviction::Lru };
    let mut cache = DeviceCache::new(1000, eviction);
    let mut model =
        Model { capacity: 1000, working: 0, entries: vec![None; 10], inflation: 0.0, eviction, seq: 0 };
    // Invocations holding a pin: (function, working bytes).
    let mut held: Vec<(usize, u64)> = Vec::new();
    for (t, op) in ops.into_iter().enumerate() {
        let now = t as Nanos;
        match op {
            Op::Acquire { f, bytes, working, cost } => {
                // A resident function keeps its size, as the engine guarantees.
                let bytes = model.entries[f].as_ref().map_or(bytes, |e| e.bytes);
                prop_assert_eq!(
                    cache.fits(FunctionId(f as u32), bytes, working, now),
                    model.fits(f, bytes, working, now)
                );
                let mut evicted = Vec::new();
                let got = cache.acquire(FunctionId(f as u32), bytes, working, cost, now, &mut evicted);
                let want = model.acquire(f, bytes, working, cost, now);
                match want {
                    None => prop_assert_eq!(got, None),
                    Some((cold, victims)) => {
                        prop_assert_eq!(got, Some(Acquired { cold }));
                        let evicted: Vec<usize> = evicted.iter().map(|g| g.0 as usize).collect();
                        prop_assert_eq!(evicted, victims, "eviction order at t={}", t);
                        held.push((f, working));
                    }
                }
            }
            Op::Release { pick, keep } => {
                if held.is_empty() {
                    continue;
                }
                let (f, working) = held.swap_remove(pick % held.len());
                let keep_until = if keep > 0 { now + keep } else { 0 };
                cache.release(FunctionId(f as u32), working, now, keep_until);
                model.release(f, working, now, keep_until);
            }
            Op::Evict { f } => {
                let want = model.entries[f].as_ref().is_some_and(|e| e.pins == 0);
                prop_assert_eq!(cache.evict(FunctionId(f as u32)), want);
                if want {
                    model.entries[f] = None;
                }
            }
            Op::Flush => {
                let mut evicted = Vec::new();
                cache.flush(&mut evicted);
                let want = model.unpinned_by_last_use();
                for &i in &want {
                    model.entries[i] = None;
                }
                prop_assert_eq!(evicted.iter().map(|g| g.0 as usize).collect::<Vec<_>>(), want);
            }
            Op::Switch => {
                // Switching re-parks unpinned entries by last use.
                let next = if model.eviction == Eviction::Lru { Eviction::Gdsf } else { Eviction::Lru };
                cache.set_eviction(next);
                for i in model.unpinned_by_last_use() {
                    model.seq += 1;
                    model.entries[i].as_mut().unwrap().parked = model.seq;
                }
                model.eviction = next;
            }
        }
        prop_assert_eq!(cache.used(), model.used());
        let mut residents: Vec<usize> = cache.residents().map(|f| f.0 as usize).collect();
        residents.sort_unstable();
        let want: Vec<usize> = (0..10).filter(|&i| model.entries[i].is_some()).collect();
        prop_assert_eq!(residents, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn gdsf_cache_matches_the_reference(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, true)?;
    }

    #[test]
    fn lru_cache_matches_the_reference(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, false)?;
    }
}
