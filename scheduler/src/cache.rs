//! Resident function state on one device: what is warm, what is pinned, what goes when
//! memory runs short. Sizes and load costs come from the function model; the cache only
//! does the accounting, the executor does the real allocations.

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

#[derive(Clone, Debug)]
struct Entry {
    function: FunctionId,
    bytes: u64,
    pins: u32,
    last_use: Nanos,
    frequency: u64,
    priority: f64,
    keep_until: Nanos,
}

/// What acquiring a function on a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The function was not resident: the caller pays its load time.
    pub cold: bool,
}

/// The resident-state cache of one device.
#[derive(Clone, Debug)]
pub struct DeviceCache {
    capacity: u64,
    resident_bytes: u64,
    pinned_bytes: u64,
    working_bytes: u64,
    entries: Vec<Entry>,
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
            inflation: 0.0,
            eviction,
        }
    }

    /// Changes the eviction policy; entries keep their history.
    pub fn set_eviction(&mut self, eviction: Eviction) {
        self.eviction = eviction;
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
        self.entries.iter().any(|e| e.function == f)
    }

    /// Functions resident now.
    pub fn residents(&self) -> impl Iterator<Item = FunctionId> + '_ {
        self.entries.iter().map(|e| e.function)
    }

    fn protected_bytes(&self, now: Nanos) -> u64 {
        self.entries.iter().filter(|e| e.pins > 0 || e.keep_until > now).map(|e| e.bytes).sum()
    }

    /// Whether an invocation of `f` (resident state `bytes`, buffers `working`) fits after
    /// evicting every unpinned entry whose keep-alive has passed.
    #[inline]
    pub fn fits(&self, f: FunctionId, bytes: u64, working: u64, now: Nanos) -> bool {
        let resident = self.contains(f);
        let need = working + if resident { 0 } else { bytes };
        // Fast path: enough free memory without evicting anything.
        if self.used() + need <= self.capacity {
            return true;
        }
        let protected = if self.entries.iter().any(|e| e.keep_until > now) {
            self.protected_bytes(now)
        } else {
            self.pinned_bytes
        };
        let own = if resident
            && !self.entries.iter().any(|e| e.function == f && (e.pins > 0 || e.keep_until > now))
        {
            // Our own entry stays; it is not evicted to make room for ourselves.
            bytes
        } else {
            0
        };
        protected + own + self.working_bytes + need <= self.capacity
    }

    /// Pins `f` for one invocation, making it resident (evicting others) if needed.
    /// Evicted functions are appended to `evicted`. Returns `None` if it cannot fit;
    /// check [`fits`](Self::fits) first.
    pub fn acquire(
        &mut self,
        f: FunctionId,
        bytes: u64,
        working: u64,
        load_cost: Nanos,
        now: Nanos,
        evicted: &mut Vec<FunctionId>,
    ) -> Option<Acquired> {
        // Checked first so a request that cannot fit evicts nothing.
        if !self.fits(f, bytes, working, now) {
            return None;
        }
        if self.contains(f) {
            if self.used() + working > self.capacity && !self.make_room(working, now, Some(f), evicted) {
                return None;
            }
            // Looked up after make_room: eviction reorders entries.
            let i = self.entries.iter().position(|e| e.function == f)?;
            let inflation = self.inflation;
            let e = &mut self.entries[i];
            if e.pins == 0 {
                self.pinned_bytes += e.bytes;
            }
            e.pins += 1;
            e.frequency += 1;
            e.last_use = now;
            e.priority = inflation + e.frequency as f64 * load_cost.max(1) as f64 / e.bytes.max(1) as f64;
            self.working_bytes += working;
            return Some(Acquired { cold: false });
        }
        if self.used() + bytes + working > self.capacity
            && !self.make_room(bytes + working, now, None, evicted)
        {
            return None;
        }
        self.entries.push(Entry {
            function: f,
            bytes,
            pins: 1,
            last_use: now,
            frequency: 1,
            priority: self.inflation + load_cost.max(1) as f64 / bytes.max(1) as f64,
            keep_until: 0,
        });
        self.resident_bytes += bytes;
        self.pinned_bytes += bytes;
        self.working_bytes += working;
        Some(Acquired { cold: true })
    }

    /// Evicts unprotected entries until `need` more bytes are free.
    fn make_room(
        &mut self,
        need: u64,
        now: Nanos,
        keep: Option<FunctionId>,
        evicted: &mut Vec<FunctionId>,
    ) -> bool {
        while self.used() + need > self.capacity {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.pins == 0 && e.keep_until <= now && Some(e.function) != keep)
                .min_by(|(_, a), (_, b)| match self.eviction {
                    Eviction::Lru => a.last_use.cmp(&b.last_use).then(a.function.cmp(&b.function)),
                    Eviction::Gdsf => a
                        .priority
                        .total_cmp(&b.priority)
                        .then(a.last_use.cmp(&b.last_use))
                        .then(a.function.cmp(&b.function)),
                })
                .map(|(i, _)| i);
            let Some(i) = victim else { return false };
            let e = self.entries.swap_remove(i);
            if self.eviction == Eviction::Gdsf {
                self.inflation = self.inflation.max(e.priority);
            }
            self.resident_bytes -= e.bytes;
            evicted.push(e.function);
        }
        true
    }

    /// Unpins `f` after an invocation; `keep_until` protects it from eviction until then.
    pub fn release(&mut self, f: FunctionId, working: u64, now: Nanos, keep_until: Nanos) {
        self.working_bytes -= working;
        if let Some(e) = self.entries.iter_mut().find(|e| e.function == f) {
            e.pins -= 1;
            e.last_use = now;
            e.keep_until = e.keep_until.max(keep_until);
            if e.pins == 0 {
                self.pinned_bytes -= e.bytes;
            }
        }
    }

    /// The earliest keep-alive expiry after `now`, if any entry is protected only by one.
    pub fn next_expiry(&self, now: Nanos) -> Option<Nanos> {
        self.entries.iter().filter(|e| e.pins == 0 && e.keep_until > now).map(|e| e.keep_until).min()
    }

    /// Evicts `f` if it is resident and unpinned; returns whether it was evicted.
    pub fn evict(&mut self, f: FunctionId) -> bool {
        match self.entries.iter().position(|e| e.function == f && e.pins == 0) {
            Some(i) => {
                let e = self.entries.swap_remove(i);
                self.resident_bytes -= e.bytes;
                true
            }
            None => false,
        }
    }

    /// Evicts every unpinned entry (a worker restart); appends them to `evicted`.
    pub fn flush(&mut self, evicted: &mut Vec<FunctionId>) {
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].pins == 0 {
                let e = self.entries.swap_remove(i);
                self.resident_bytes -= e.bytes;
                evicted.push(e.function);
            } else {
                i += 1;
            }
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
