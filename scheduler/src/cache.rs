//! Resident function state on one device: what is warm, what is pinned, what goes when
//! memory runs short. Sizes and load costs come from the function model; the cache only
//! does the accounting, the executor does the real allocations.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::model::{FunctionId, Nanos};

/// How unpinned resident state is chosen for eviction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// Least recently used first.
    Lru,
    /// GreedyDual-Size-Frequency: lowest `L + frequency × load cost / size` first, where
    /// `L` rises to each evicted entry's priority (FaasCache, ASPLOS'21).
    #[default]
    Gdsf,
}

impl Eviction {
    /// Names accepted in configuration.
    pub const NAMES: [&'static str; 2] = ["lru", "gdsf"];

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Result<Self, crate::ConfigError> {
        match name {
            "lru" => Ok(Eviction::Lru),
            "gdsf" => Ok(Eviction::Gdsf),
            other => Err(crate::ConfigError::UnknownName {
                what: "cache eviction",
                name: other.to_string(),
                valid: Self::NAMES.join(", "),
            }),
        }
    }

    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Gdsf => "gdsf",
        }
    }
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Entry {
    function: FunctionId,
    bytes: u64,
    pins: u32,
    last_use: Nanos,
    frequency: u64,
    priority: f64,
    keep_until: Nanos,
    /// Neighbours in the LRU list of unpinned entries.
    prev: u32,
    next: u32,
    /// Bumped whenever the entry's GDSF heap record goes stale.
    generation: u32,
    live: bool,
}

/// What acquiring a function on a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The function was not resident: the caller pays its load time.
    pub cold: bool,
}

/// Function → slab slot, as a dense table indexed by function ID (IDs are indices into
/// the scheduler's function table). One array load per lookup: in the simulator every
/// dispatch looks a function up on a device whose data is cold, and a hash probe costs
/// two cache misses where this costs one.
#[derive(Clone, Debug, Default)]
struct IdMap {
    slots: Vec<u32>,
    len: usize,
}

impl IdMap {
    #[inline]
    fn get(&self, f: &FunctionId) -> Option<&u32> {
        self.slots.get(f.0 as usize).filter(|s| **s != NIL)
    }

    #[inline]
    fn contains_key(&self, f: &FunctionId) -> bool {
        self.get(f).is_some()
    }

    fn insert(&mut self, f: FunctionId, slot: u32) {
        let i = f.0 as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, NIL);
        }
        if self.slots[i] == NIL {
            self.len += 1;
        }
        self.slots[i] = slot;
    }

    fn remove(&mut self, f: &FunctionId) {
        if let Some(s) = self.slots.get_mut(f.0 as usize)
            && *s != NIL
        {
            *s = NIL;
            self.len -= 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn keys(&self) -> impl Iterator<Item = FunctionId> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| **s != NIL).map(|(i, _)| FunctionId(i as u32))
    }
}

/// GDSF heap record: priority bits, last use, function, slot, generation.
type GdsfKey = (u64, u64, u32, u32, u32);

/// The resident-state cache of one device. Entries live in a slab indexed by function;
/// unpinned entries sit in an LRU list (LRU) or a lazily cleaned priority heap (GDSF),
/// so hits, releases and victim choice cost O(1) or O(log n).
#[derive(Clone, Debug)]
pub struct DeviceCache {
    capacity: u64,
    resident_bytes: u64,
    pinned_bytes: u64,
    working_bytes: u64,
    entries: Vec<Entry>,
    vacant: Vec<u32>,
    index: IdMap,
    lru_head: u32,
    lru_tail: u32,
    heap: BinaryHeap<Reverse<GdsfKey>>,
    /// Latest keep-alive end of any entry: protection needs a scan only before it.
    max_keep_until: Nanos,
    inflation: f64,
    eviction: Eviction,
}

impl DeviceCache {
    /// An empty cache over `capacity` bytes.
    pub fn new(capacity: u64, eviction: Eviction) -> Self {
        DeviceCache {
            capacity,
            resident_bytes: 0,
            pinned_bytes: 0,
            working_bytes: 0,
            entries: Vec::new(),
            vacant: Vec::new(),
            index: IdMap::default(),
            lru_head: NIL,
            lru_tail: NIL,
            heap: BinaryHeap::new(),
            max_keep_until: 0,
            inflation: 0.0,
            eviction,
        }
    }

    /// Changes the eviction policy; entries keep their history.
    pub fn set_eviction(&mut self, eviction: Eviction) {
        let unpinned: Vec<u32> = self.unpinned_in_lru_order().collect();
        self.eviction = eviction;
        self.lru_head = NIL;
        self.lru_tail = NIL;
        self.heap.clear();
        for i in unpinned {
            self.park(i);
        }
    }

    fn unpinned_in_lru_order(&self) -> impl Iterator<Item = u32> + '_ {
        let mut order: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&i| self.entries[i as usize].live && self.entries[i as usize].pins == 0)
            .collect();
        order.sort_by_key(|&i| (self.entries[i as usize].last_use, self.entries[i as usize].function));
        order.into_iter()
    }

    /// Puts an unpinned entry where eviction will find it.
    fn park(&mut self, i: u32) {
        let e = &mut self.entries[i as usize];
        match self.eviction {
            Eviction::Lru => {
                e.prev = self.lru_tail;
                e.next = NIL;
                if self.lru_tail != NIL {
                    self.entries[self.lru_tail as usize].next = i;
                } else {
                    self.lru_head = i;
                }
                self.lru_tail = i;
            }
            Eviction::Gdsf => {
                e.generation = e.generation.wrapping_add(1);
                // Priorities are non-negative, so their bit patterns order like the values.
                let key = (e.priority.max(0.0).to_bits(), e.last_use, e.function.0, i, e.generation);
                self.heap.push(Reverse(key));
                // Stale records pile up with every pin and release; rebuild when they dominate.
                if self.heap.len() > 2 * self.index.len() + 64 {
                    let entries = &self.entries;
                    self.heap.retain(|Reverse(k)| {
                        let e = &entries[k.3 as usize];
                        e.live && e.pins == 0 && e.generation == k.4
                    });
                }
            }
        }
    }

    /// Takes an entry out of the eviction order (it is being pinned or removed).
    fn unpark(&mut self, i: u32) {
        match self.eviction {
            Eviction::Lru => {
                let (prev, next) = (self.entries[i as usize].prev, self.entries[i as usize].next);
                if prev != NIL {
                    self.entries[prev as usize].next = next;
                } else {
                    self.lru_head = next;
                }
                if next != NIL {
                    self.entries[next as usize].prev = prev;
                } else {
                    self.lru_tail = prev;
                }
            }
            // Heap records go stale with the generation.
            Eviction::Gdsf => {
                let e = &mut self.entries[i as usize];
                e.generation = e.generation.wrapping_add(1);
            }
        }
    }

    /// Bytes in use: resident state plus running invocations' buffers.
    pub fn used(&self) -> u64 {
        self.resident_bytes + self.working_bytes
    }

    /// Device memory managed by this cache.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `f` is resident.
    #[inline]
    pub fn contains(&self, f: FunctionId) -> bool {
        self.index.contains_key(&f)
    }

    /// Functions resident now.
    pub fn residents(&self) -> impl Iterator<Item = FunctionId> + '_ {
        self.index.keys()
    }

    fn protected(e: &Entry, now: Nanos) -> bool {
        e.pins > 0 || e.keep_until > now
    }

    /// Whether an invocation of `f` (resident state `bytes`, buffers `working`) fits after
    /// evicting every unpinned entry whose keep-alive has passed.
    #[inline]
    pub fn fits(&self, f: FunctionId, bytes: u64, working: u64, now: Nanos) -> bool {
        // Fast path: enough free memory without evicting anything, resident or not.
        if self.used() + working + bytes <= self.capacity {
            return true;
        }
        let own = self.index.get(&f).map(|&i| &self.entries[i as usize]);
        let need = working + if own.is_some() { 0 } else { bytes };
        if self.used() + need <= self.capacity {
            return true;
        }
        let protected = if self.max_keep_until > now {
            self.entries.iter().filter(|e| e.live && Self::protected(e, now)).map(|e| e.bytes).sum()
        } else {
            self.pinned_bytes
        };
        // Our own entry stays; it is not evicted to make room for ourselves.
        let own_bytes = own.filter(|e| !Self::protected(e, now)).map_or(0, |e| e.bytes);
        protected + own_bytes + self.working_bytes + need <= self.capacity
    }

    /// Pins `f` for one invocation, making it resident (evicting others) if needed.
    /// Evicted functions are appended to `evicted`. Returns `None`, evicting nothing, if
    /// it cannot fit.
    pub fn acquire(
        &mut self,
        f: FunctionId,
        bytes: u64,
        working: u64,
        load_cost: Nanos,
        now: Nanos,
        evicted: &mut Vec<FunctionId>,
    ) -> Option<Acquired> {
        if !self.fits(f, bytes, working, now) {
            return None;
        }
        let slot = self.index.get(&f).copied();
        let need = working + if slot.is_some() { 0 } else { bytes };
        if self.used() + need > self.capacity {
            self.make_room(need, now, f, evicted);
        }
        let inflation = self.inflation;
        let cost = load_cost.max(1) as f64;
        let cold = match slot {
            Some(i) => {
                if self.entries[i as usize].pins == 0 {
                    self.unpark(i);
                    self.pinned_bytes += self.entries[i as usize].bytes;
                }
                let e = &mut self.entries[i as usize];
                e.pins += 1;
                e.frequency += 1;
                e.last_use = now;
                e.priority = inflation + e.frequency as f64 * cost / e.bytes.max(1) as f64;
                false
            }
            None => {
                let e = Entry {
                    function: f,
                    bytes,
                    pins: 1,
                    last_use: now,
                    frequency: 1,
                    priority: inflation + cost / bytes.max(1) as f64,
                    keep_until: 0,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    live: true,
                };
                let i = match self.vacant.pop() {
                    Some(i) => {
                        let generation = self.entries[i as usize].generation;
                        self.entries[i as usize] = Entry { generation: generation.wrapping_add(1), ..e };
                        i
                    }
                    None => {
                        self.entries.push(e);
                        self.entries.len() as u32 - 1
                    }
                };
                self.index.insert(f, i);
                self.resident_bytes += bytes;
                self.pinned_bytes += bytes;
                true
            }
        };
        self.working_bytes += working;
        Some(Acquired { cold })
    }

    fn remove(&mut self, i: u32) -> Entry {
        let e = self.entries[i as usize].clone();
        self.entries[i as usize].live = false;
        self.entries[i as usize].generation = e.generation.wrapping_add(1);
        self.index.remove(&e.function);
        self.vacant.push(i);
        self.resident_bytes -= e.bytes;
        e
    }

    /// The next entry eviction would take, skipping `keep` and kept-alive entries.
    fn next_victim(&mut self, now: Nanos, keep: FunctionId, skipped: &mut Vec<u32>) -> Option<u32> {
        loop {
            let i = match self.eviction {
                Eviction::Lru => {
                    let i = self.lru_head;
                    if i == NIL {
                        return None;
                    }
                    self.unpark(i);
                    i
                }
                Eviction::Gdsf => {
                    let Reverse((_, _, _, i, generation)) = self.heap.pop()?;
                    let e = &self.entries[i as usize];
                    if !e.live || e.pins > 0 || e.generation != generation {
                        continue; // stale record
                    }
                    self.unpark(i);
                    i
                }
            };
            let e = &self.entries[i as usize];
            if e.function == keep || e.keep_until > now {
                skipped.push(i);
                continue;
            }
            return Some(i);
        }
    }

    /// Evicts unprotected entries, in eviction order, until `need` more bytes are free.
    fn make_room(&mut self, need: u64, now: Nanos, keep: FunctionId, evicted: &mut Vec<FunctionId>) {
        let mut skipped = Vec::new();
        while self.used() + need > self.capacity {
            let Some(i) = self.next_victim(now, keep, &mut skipped) else { break };
            let e = self.remove(i);
            if self.eviction == Eviction::Gdsf {
                self.inflation = self.inflation.max(e.priority);
            }
            evicted.push(e.function);
        }
        for i in skipped {
            self.park(i);
        }
    }

    /// Unpins `f` after an invocation; `keep_until` protects it from eviction until then.
    pub fn release(&mut self, f: FunctionId, working: u64, now: Nanos, keep_until: Nanos) {
        self.working_bytes -= working;
        let Some(&i) = self.index.get(&f) else { return };
        let e = &mut self.entries[i as usize];
        e.pins -= 1;
        e.last_use = now;
        e.keep_until = e.keep_until.max(keep_until);
        self.max_keep_until = self.max_keep_until.max(keep_until);
        if e.pins == 0 {
            self.pinned_bytes -= e.bytes;
            self.park(i);
        }
    }

    /// Evicts `f` if it is resident and unpinned; returns whether it was evicted.
    pub fn evict(&mut self, f: FunctionId) -> bool {
        match self.index.get(&f).copied() {
            Some(i) if self.entries[i as usize].pins == 0 => {
                self.unpark(i);
                self.remove(i);
                true
            }
            _ => false,
        }
    }

    /// Evicts every unpinned entry (a worker restart); appends them to `evicted`.
    pub fn flush(&mut self, evicted: &mut Vec<FunctionId>) {
        let unpinned: Vec<u32> = self.unpinned_in_lru_order().collect();
        for i in unpinned {
            self.unpark(i);
            evicted.push(self.remove(i).function);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(i: u32) -> FunctionId {
        FunctionId(i)
    }

    #[test]
    fn lru_evicts_least_recently_used_and_never_pinned() {
        let mut c = DeviceCache::new(300, Eviction::Lru);
        let mut ev = Vec::new();
        assert_eq!(c.acquire(f(0), 100, 0, 10, 1, &mut ev), Some(Acquired { cold: true }));
        assert_eq!(c.acquire(f(1), 100, 0, 10, 2, &mut ev), Some(Acquired { cold: true }));
        assert_eq!(c.acquire(f(2), 100, 0, 10, 3, &mut ev), Some(Acquired { cold: true }));
        c.release(f(0), 0, 4, 0);
        c.release(f(2), 0, 5, 0);
        // f1 is pinned; f0 was used before f2, so it goes.
        assert!(c.fits(f(3), 100, 0, 6));
        assert_eq!(c.acquire(f(3), 100, 0, 10, 6, &mut ev), Some(Acquired { cold: true }));
        assert_eq!(ev, vec![f(0)]);
        // Everything pinned but f2: a 200-byte function cannot fit.
        assert!(!c.fits(f(4), 200, 0, 7));
        assert_eq!(c.acquire(f(4), 200, 0, 10, 7, &mut ev), None);
        assert!(c.contains(f(1)) && c.contains(f(2)) && c.contains(f(3)));
        // Warm hit.
        assert_eq!(c.acquire(f(2), 100, 0, 10, 8, &mut ev), Some(Acquired { cold: false }));
    }

    #[test]
    fn gdsf_keeps_expensive_small_frequent_state() {
        let mut c = DeviceCache::new(300, Eviction::Gdsf);
        let mut ev = Vec::new();
        // f0: cheap to load; f1: expensive to load and used often.
        c.acquire(f(0), 100, 0, 1, 1, &mut ev);
        c.release(f(0), 0, 1, 0);
        for t in 2..6 {
            c.acquire(f(1), 100, 0, 1000, t, &mut ev);
            c.release(f(1), 0, t, 0);
        }
        c.acquire(f(2), 100, 0, 500, 7, &mut ev);
        c.release(f(2), 0, 7, 0);
        // Touch f0 so it is the most recently used: LRU would now evict f1 (last used at 5),
        // GDSF still evicts f0, whose priority (frequency x load cost / size) is lowest.
        c.acquire(f(0), 100, 0, 1, 8, &mut ev);
        c.release(f(0), 0, 8, 0);
        c.acquire(f(3), 100, 0, 50, 9, &mut ev);
        assert_eq!(ev, vec![f(0)]);
    }

    #[test]
    fn keep_alive_protects_until_it_expires_and_working_memory_counts() {
        let mut c = DeviceCache::new(200, Eviction::Lru);
        let mut ev = Vec::new();
        c.acquire(f(0), 100, 50, 10, 0, &mut ev);
        assert_eq!(c.used(), 150);
        c.release(f(0), 50, 1, 100);
        assert_eq!(c.used(), 100);
        assert!(!c.fits(f(1), 150, 0, 50));
        assert!(c.fits(f(1), 150, 0, 100));
        assert_eq!(c.acquire(f(1), 150, 0, 10, 100, &mut ev), Some(Acquired { cold: true }));
        assert_eq!(ev, vec![f(0)]);
    }
}
