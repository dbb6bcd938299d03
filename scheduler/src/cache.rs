//! Resident function state on one device: what is warm, what is pinned, what goes when
//! memory runs short. Sizes and load costs come from the function model; the cache only
//! does the accounting, the executor does the real allocations.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

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

/// The hot state of one function on one device, read and written by every acquire and
/// release: 16 bytes, four to a cache line. In a simulation of 100 devices and 1,000
/// functions these 100,000 records are the largest thing every dispatch touches, and
/// at 32 bytes (size and GDSF priority inline) they overflowed the CPU's L2 cache: the
/// simulator ran about 15 % slower. The size is an index into the cache's table of
/// distinct sizes; the priority lives with the cold state and is kept only once memory
/// has run short (see [`DeviceCache::priced`]).
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    last_use: Nanos,
    frequency: u32,
    /// 0: not resident; 1: resident, unpinned; n + 1: resident with n pins.
    state: u16,
    /// Index into [`DeviceCache::sizes`], or [`SIZE_COLD`]: the size is in `Cold::bytes`.
    size: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// Hashes a size for the size table: one multiplication (the default SipHash cost more
/// than the rest of a cold acquire under `exclusive`, which reloads on every dispatch).
#[derive(Default)]
struct SizeHasher(u64);

impl Hasher for SizeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x ^ (x >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Most pins one entry can hold (an acquire beyond it is refused): far above any
/// device's slot count.
const MAX_STATE: u16 = u16::MAX;
/// The entry's size is only in its cold record (the table of distinct sizes is full).
const SIZE_COLD: u16 = u16::MAX;

impl Entry {
    #[inline]
    fn live(&self) -> bool {
        self.state > 0
    }

    #[inline]
    fn pins(&self) -> u32 {
        u32::from(self.state.saturating_sub(1))
    }
}

/// Colder per-entry state: size, load cost, GDSF priority, keep-alive end, LRU links and
/// the GDSF record generation, touched when an entry is loaded or evicted, with
/// keep-alives, under LRU, or once memory has run short.
#[derive(Clone, Copy, Debug)]
struct Cold {
    bytes: u64,
    /// Load cost recorded when the entry was loaded (its GDSF cost while it stays).
    cost: f64,
    /// GDSF priority, current only while the cache is [`priced`](DeviceCache::priced).
    priority: f64,
    keep_until: Nanos,
    prev: u32,
    next: u32,
    /// Bumped whenever the entry's GDSF heap record goes stale.
    generation: u32,
    /// Position in the list of residents.
    member: u32,
}

impl Default for Cold {
    fn default() -> Self {
        Cold {
            bytes: 0,
            cost: 1.0,
            priority: 0.0,
            keep_until: 0,
            prev: NIL,
            next: NIL,
            generation: 0,
            member: NIL,
        }
    }
}

/// What acquiring a function on a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The function was not resident: the caller pays its load time.
    pub cold: bool,
}

/// GDSF heap record: priority bits, last use, function, generation.
type GdsfKey = (u64, u64, u32, u32);

/// The resident-state cache of one device. Entries are dense tables indexed by function
/// ID (IDs are indices into the scheduler's function table), so a lookup is one load.
/// Unpinned entries sit in an LRU list (LRU) or a lazily cleaned priority heap (GDSF),
/// so hits, releases and victim choice cost O(1) or O(log n). The GDSF heap is built
/// the first time memory runs short: until a device has to evict, releasing costs no
/// heap work at all.
#[derive(Clone, Debug)]
// Laid out by hand, hot fields first: what a warm acquire and a release read sits in the
// first two cache lines (with 100 devices, a scattered layout cost a D1 miss per field).
// The struct is cache-line aligned, so in the scheduler's vector of caches the lines
// fall where this layout expects.
#[repr(C, align(64))]
pub struct DeviceCache {
    entries: Vec<Entry>,
    capacity: u64,
    resident_bytes: u64,
    pinned_bytes: u64,
    working_bytes: u64,
    eviction: Eviction,
    /// Whether the GDSF heap holds a record of every unpinned entry.
    heap_active: bool,
    /// Whether every acquire keeps the entry's GDSF priority current. Until memory first
    /// runs short under GDSF nothing reads priorities and the inflation `L` is 0, so each
    /// priority is `frequency × cost / size` of values the entry keeps: they are worked
    /// out when the heap is first built, and acquires skip the cold record until then.
    priced: bool,
    /// Distinct entry sizes (entries hold a 16-bit index), and where each one is.
    sizes: Vec<u64>,
    /// Latest keep-alive end of any entry: protection needs a scan only before it.
    max_keep_until: Nanos,
    inflation: f64,
    cold: Vec<Cold>,
    /// Resident functions, unordered: scans visit residents, not every function.
    members: Vec<u32>,
    lru_head: u32,
    lru_tail: u32,
    heap: BinaryHeap<Reverse<GdsfKey>>,
    size_index: HashMap<u64, u16, BuildHasherDefault<SizeHasher>>,
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
            cold: Vec::new(),
            members: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            heap: BinaryHeap::new(),
            heap_active: false,
            max_keep_until: 0,
            inflation: 0.0,
            eviction,
            sizes: Vec::new(),
            size_index: HashMap::default(),
            priced: false,
        }
    }

    /// Changes the eviction policy; entries keep their history.
    pub fn set_eviction(&mut self, eviction: Eviction) {
        let unpinned = self.unpinned_in_lru_order();
        self.eviction = eviction;
        self.lru_head = NIL;
        self.lru_tail = NIL;
        self.heap.clear();
        self.heap_active = false;
        for i in unpinned {
            self.park(i);
        }
    }

    fn unpinned_in_lru_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> =
            self.members.iter().copied().filter(|&i| self.entries[i as usize].state == 1).collect();
        order.sort_by_key(|&i| (self.entries[i as usize].last_use, i));
        order
    }

    #[inline]
    fn entry(&self, f: FunctionId) -> Option<&Entry> {
        self.entries.get(f.0 as usize).filter(|e| e.live())
    }

    fn gdsf_key(&self, i: u32) -> GdsfKey {
        let (e, c) = (&self.entries[i as usize], &self.cold[i as usize]);
        // Priorities are non-negative, so their bit patterns order like the values.
        (c.priority.max(0.0).to_bits(), e.last_use, i, c.generation)
    }

    /// Resident bytes of entry `i`.
    #[inline]
    fn bytes_of(&self, i: usize) -> u64 {
        match self.entries[i].size {
            SIZE_COLD => self.cold[i].bytes,
            s => self.sizes[s as usize],
        }
    }

    /// The size-table index for `bytes`, adding it if new.
    fn size_slot(&mut self, bytes: u64) -> u16 {
        if let Some(&s) = self.size_index.get(&bytes) {
            return s;
        }
        if self.sizes.len() >= SIZE_COLD as usize {
            return SIZE_COLD;
        }
        self.sizes.push(bytes);
        let s = (self.sizes.len() - 1) as u16;
        self.size_index.insert(bytes, s);
        s
    }

    /// GDSF priority of entry `i` after its latest acquire: `L + frequency × cost / size`.
    #[inline]
    fn priority_of(&self, i: usize) -> f64 {
        let c = &self.cold[i];
        self.inflation + self.entries[i].frequency as f64 * c.cost / c.bytes.max(1) as f64
    }

    /// Puts an unpinned entry where eviction will find it (nothing to do for GDSF until
    /// memory first runs short).
    #[inline]
    fn park(&mut self, i: u32) {
        if self.eviction == Eviction::Lru || self.heap_active {
            self.park_in_order(i);
        }
    }

    fn park_in_order(&mut self, i: u32) {
        match self.eviction {
            Eviction::Lru => {
                self.cold[i as usize].prev = self.lru_tail;
                self.cold[i as usize].next = NIL;
                if self.lru_tail != NIL {
                    self.cold[self.lru_tail as usize].next = i;
                } else {
                    self.lru_head = i;
                }
                self.lru_tail = i;
            }
            Eviction::Gdsf if self.heap_active => {
                let c = &mut self.cold[i as usize];
                c.generation = c.generation.wrapping_add(1);
                self.heap.push(Reverse(self.gdsf_key(i)));
                // Stale records pile up with every pin and release; rebuild when they dominate.
                if self.heap.len() > 2 * self.members.len() + 64 {
                    let (entries, cold) = (&self.entries, &self.cold);
                    self.heap.retain(|Reverse(k)| {
                        entries[k.2 as usize].state == 1 && cold[k.2 as usize].generation == k.3
                    });
                }
            }
            Eviction::Gdsf => {}
        }
    }

    /// Takes an entry out of the eviction order (it is being pinned or removed).
    #[inline]
    fn unpark(&mut self, i: u32) {
        if self.eviction == Eviction::Lru || self.heap_active {
            self.unpark_from_order(i);
        }
    }

    fn unpark_from_order(&mut self, i: u32) {
        match self.eviction {
            Eviction::Lru => {
                let Cold { prev, next, .. } = self.cold[i as usize];
                if prev != NIL {
                    self.cold[prev as usize].next = next;
                } else {
                    self.lru_head = next;
                }
                if next != NIL {
                    self.cold[next as usize].prev = prev;
                } else {
                    self.lru_tail = prev;
                }
            }
            // Heap records go stale with the generation.
            Eviction::Gdsf if self.heap_active => {
                let c = &mut self.cold[i as usize];
                c.generation = c.generation.wrapping_add(1);
            }
            Eviction::Gdsf => {}
        }
    }

    /// Builds the GDSF heap from every unpinned entry (memory ran short for the first time).
    fn activate_heap(&mut self) {
        if !self.priced {
            // `L` is still 0 and every entry's frequency, cost and size are those of its
            // latest acquire: its priority then, worked out now.
            debug_assert_eq!(self.inflation, 0.0);
            for k in 0..self.members.len() {
                let i = self.members[k] as usize;
                self.cold[i].priority = self.priority_of(i);
            }
            self.priced = true;
        }
        let records: Vec<Reverse<GdsfKey>> = (self.members.iter().copied())
            .filter(|&i| self.entries[i as usize].state == 1)
            .map(|i| Reverse(self.gdsf_key(i)))
            .collect();
        self.heap = BinaryHeap::from(records);
        self.heap_active = true;
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
        self.entry(f).is_some()
    }

    /// Functions resident now, in no particular order.
    pub fn residents(&self) -> impl Iterator<Item = FunctionId> + '_ {
        self.members.iter().map(|&i| FunctionId(i))
    }

    fn protected(&self, i: usize, now: Nanos) -> bool {
        self.entries[i].pins() > 0 || self.cold[i].keep_until > now
    }

    /// Whether an invocation of `f` (resident state `bytes`, buffers `working`) fits after
    /// evicting every unpinned entry whose keep-alive has passed.
    #[inline]
    pub fn fits(&self, f: FunctionId, bytes: u64, working: u64, now: Nanos) -> bool {
        // Fast path: enough free memory without evicting anything, resident or not.
        if self.used() + working + bytes <= self.capacity {
            return true;
        }
        self.fits_after_eviction(f, bytes, working, now)
    }

    #[cold]
    fn fits_after_eviction(&self, f: FunctionId, bytes: u64, working: u64, now: Nanos) -> bool {
        let own = self.entry(f).is_some().then_some(f.0 as usize);
        let need = working + if own.is_some() { 0 } else { bytes };
        if self.used() + need <= self.capacity {
            return true;
        }
        let protected = if self.max_keep_until > now {
            (self.members.iter().map(|&i| i as usize))
                .filter(|&i| self.protected(i, now))
                .map(|i| self.bytes_of(i))
                .sum()
        } else {
            self.pinned_bytes
        };
        // Our own entry stays; it is not evicted to make room for ourselves.
        let own_bytes = own.filter(|&i| !self.protected(i, now)).map_or(0, |i| self.bytes_of(i));
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
        let i = f.0 as usize;
        if !self.fits(f, bytes, working, now) || self.entries.get(i).is_some_and(|e| e.state == MAX_STATE) {
            return None;
        }
        if i >= self.entries.len() {
            self.entries.resize(i + 1, Entry::default());
            self.cold.resize(i + 1, Cold::default());
        }
        let warm = self.entries[i].live();
        let need = working + if warm { 0 } else { bytes };
        if self.used() + need > self.capacity {
            self.make_room(need, now, f, evicted);
        }
        if warm {
            if self.entries[i].state == 1 {
                self.unpark(f.0);
                self.pinned_bytes += self.bytes_of(i);
            }
            let e = &mut self.entries[i];
            e.state += 1;
            e.frequency = e.frequency.saturating_add(1);
            e.last_use = now;
            if self.priced {
                self.cold[i].priority = self.priority_of(i);
            }
        } else {
            let size = self.size_slot(bytes);
            self.entries[i] = Entry { last_use: now, frequency: 1, state: 2, size };
            // Every field but the generation, written without reading the record (under
            // `exclusive` it is cold in memory on every dispatch). The generation already
            // moved on when the entry was last removed, so no heap record matches it.
            let member = self.members.len() as u32;
            let c = &mut self.cold[i];
            c.bytes = bytes;
            c.cost = load_cost.max(1) as f64;
            c.priority = 0.0;
            c.keep_until = 0;
            c.prev = NIL;
            c.next = NIL;
            c.member = member;
            if self.priced {
                self.cold[i].priority = self.priority_of(i);
            }
            self.members.push(f.0);
            self.resident_bytes += bytes;
            self.pinned_bytes += bytes;
        }
        self.working_bytes += working;
        Some(Acquired { cold: !warm })
    }

    /// Forgets entry `i`; returns its bytes and priority (current when priced).
    fn remove(&mut self, i: u32) -> (u64, f64) {
        self.entries[i as usize] = Entry::default();
        let c = &mut self.cold[i as usize];
        c.generation = c.generation.wrapping_add(1);
        let (bytes, priority) = (c.bytes, c.priority);
        let member = std::mem::replace(&mut c.member, NIL) as usize;
        self.members.swap_remove(member);
        if let Some(&moved) = self.members.get(member) {
            self.cold[moved as usize].member = member as u32;
        }
        self.resident_bytes -= bytes;
        (bytes, priority)
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
                    let Reverse((_, _, i, generation)) = self.heap.pop()?;
                    if self.entries[i as usize].state != 1 || self.cold[i as usize].generation != generation {
                        continue; // stale record
                    }
                    self.unpark(i);
                    i
                }
            };
            if i == keep.0 || self.cold[i as usize].keep_until > now {
                skipped.push(i);
                continue;
            }
            return Some(i);
        }
    }

    /// Evicts unprotected entries, in eviction order, until `need` more bytes are free.
    #[cold]
    fn make_room(&mut self, need: u64, now: Nanos, keep: FunctionId, evicted: &mut Vec<FunctionId>) {
        if self.eviction == Eviction::Gdsf && !self.heap_active {
            self.activate_heap();
        }
        let mut skipped = Vec::new();
        while self.used() + need > self.capacity {
            let Some(i) = self.next_victim(now, keep, &mut skipped) else { break };
            let (_, priority) = self.remove(i);
            if self.eviction == Eviction::Gdsf {
                self.inflation = self.inflation.max(priority);
            }
            evicted.push(FunctionId(i));
        }
        for i in skipped {
            self.park(i);
        }
    }

    /// Unpins `f` after an invocation; `keep_until` protects it from eviction until then.
    pub fn release(&mut self, f: FunctionId, working: u64, now: Nanos, keep_until: Nanos) {
        self.working_bytes -= working;
        let i = f.0 as usize;
        let Some(e) = self.entries.get_mut(i).filter(|e| e.pins() > 0) else { return };
        e.state -= 1;
        e.last_use = now;
        let unpinned = e.state == 1;
        if keep_until > 0 {
            let c = &mut self.cold[i];
            c.keep_until = c.keep_until.max(keep_until);
            self.max_keep_until = self.max_keep_until.max(keep_until);
        }
        if unpinned {
            self.pinned_bytes -= self.bytes_of(i);
            self.park(f.0);
        }
    }

    /// Evicts `f` if it is resident and unpinned; returns whether it was evicted.
    pub fn evict(&mut self, f: FunctionId) -> bool {
        if self.entries.get(f.0 as usize).is_some_and(|e| e.state == 1) {
            self.unpark(f.0);
            self.remove(f.0);
            true
        } else {
            false
        }
    }

    /// Evicts every unpinned entry (a worker restart); appends them to `evicted`.
    pub fn flush(&mut self, evicted: &mut Vec<FunctionId>) {
        // Ordered in place in the caller's vector: a flush per dispatch (a dedicated
        // worker changing hands) allocates nothing.
        let from = evicted.len();
        let entries = &self.entries;
        evicted
            .extend(self.members.iter().filter(|&&i| entries[i as usize].state == 1).map(|&i| FunctionId(i)));
        evicted[from..].sort_by_key(|f| (entries[f.0 as usize].last_use, f.0));
        for g in &evicted[from..] {
            self.unpark(g.0);
            self.remove(g.0);
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
    fn sizes_past_the_size_table_and_pins_past_the_limit() {
        // More distinct sizes than the 16-bit size table holds: the rest live in the
        // cold records, and accounting stays exact.
        let n = SIZE_COLD as u64 + 10;
        let mut c = DeviceCache::new(u64::MAX / 2, Eviction::Gdsf);
        let mut ev = Vec::new();
        let mut total = 0;
        for i in 0..n {
            assert!(c.acquire(f(i as u32), 1000 + i, 0, 10, i, &mut ev).is_some());
            total += 1000 + i;
        }
        assert_eq!(c.used(), total);
        for i in (0..n).rev().step_by(7) {
            c.release(f(i as u32), 0, n + i, 0);
            assert!(c.evict(f(i as u32)));
            total -= 1000 + i;
        }
        assert_eq!(c.used(), total);
        assert_eq!(c.entries[n as usize - 3].size, SIZE_COLD);
        assert_eq!(c.bytes_of(n as usize - 3), 1000 + n - 3);
        // One entry takes at most 65,534 pins; the next acquire is refused, not wrapped.
        let mut c = DeviceCache::new(1000, Eviction::Lru);
        for t in 0..(MAX_STATE as u64 - 1) {
            assert!(c.acquire(f(0), 100, 0, 10, t, &mut ev).is_some());
        }
        assert_eq!(c.acquire(f(0), 100, 0, 10, 1 << 20, &mut ev), None);
        c.release(f(0), 0, 1 << 20, 0);
        assert!(c.acquire(f(0), 100, 0, 10, 1 << 20, &mut ev).is_some());
    }

    #[test]
    fn gdsf_priorities_worked_out_late_match_kept_ones() {
        // The same history on a cache that has run short before (priorities kept on
        // every acquire) and on a fresh one (worked out when memory first runs short)
        // evicts in the same order.
        let history = |c: &mut DeviceCache, ev: &mut Vec<FunctionId>| {
            for (t, (g, bytes, cost)) in
                [(0u32, 100u64, 5u64), (1, 50, 40), (2, 200, 7), (1, 50, 40), (3, 80, 9), (0, 100, 5)]
                    .into_iter()
                    .enumerate()
            {
                c.acquire(f(g), bytes, 0, cost, 10 + t as u64, ev);
                c.release(f(g), 0, 10 + t as u64, 0);
            }
        };
        let mut fresh = DeviceCache::new(430, Eviction::Gdsf);
        let mut primed = DeviceCache::new(430, Eviction::Gdsf);
        let mut ev = Vec::new();
        // Prime: force one eviction of a function not used again, so the cache is priced.
        primed.acquire(f(9), 430, 0, 1, 0, &mut ev);
        primed.release(f(9), 0, 0, 0);
        primed.acquire(f(8), 1, 0, 1, 1, &mut ev);
        primed.release(f(8), 0, 1, 0);
        assert_eq!(ev, vec![f(9)]);
        assert!(primed.priced && !fresh.priced);
        primed.evict(f(8));
        primed.inflation = 0.0;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        history(&mut fresh, &mut a);
        history(&mut primed, &mut b);
        fresh.acquire(f(4), 300, 0, 1, 100, &mut a);
        primed.acquire(f(4), 300, 0, 1, 100, &mut b);
        // The lowest `frequency × cost / size` go first: f2 (0.035), then f0 (0.1).
        assert_eq!(a, vec![f(2), f(0)]);
        assert_eq!(a, b);
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
