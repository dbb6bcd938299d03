//! Device memory owned by the executor: per-invocation buffers, content-addressed const
//! buffers shared across the functions of one isolation scope (a namespace, or everyone
//! under `shared` isolation), eviction under pressure, zeroing before reuse, and
//! per-function and per-share quotas. The logic runs against [`DeviceAllocator`], which
//! the CUDA backend implements over real device memory and [`HostAllocator`] implements
//! over host memory (the CPU device, and tests without a GPU).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::error::ExecError;

/// An opaque device allocation handle.
pub type DevPtr = u64;

/// Raw device memory. Allocations are not zeroed: like a GPU allocator, freed memory may
/// come back with its old contents, which is why [`MemoryManager`] zeroes on free.
pub trait DeviceAllocator: Send + Sync {
    /// Bytes of device memory the executor may use.
    fn capacity(&self) -> u64;
    /// Allocates `bytes` for isolation scope `scope` (the CUDA allocator allocates in that
    /// scope's context); fails with [`ExecError::OutOfMemory`] when the device is full.
    fn alloc(&self, scope: &str, bytes: u64) -> Result<DevPtr, ExecError>;
    /// Releases an allocation.
    fn free(&self, ptr: DevPtr);
    /// Copies `data` to the start of an allocation.
    fn write(&self, ptr: DevPtr, data: &[u8]) -> Result<(), ExecError>;
    /// Copies `len` bytes from the start of an allocation.
    fn read(&self, ptr: DevPtr, len: u64) -> Result<Vec<u8>, ExecError>;
    /// Zeroes the first `len` bytes of an allocation.
    fn zero(&self, ptr: DevPtr, len: u64) -> Result<(), ExecError>;
}

impl<A: DeviceAllocator + ?Sized> DeviceAllocator for Box<A> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn alloc(&self, scope: &str, bytes: u64) -> Result<DevPtr, ExecError> {
        (**self).alloc(scope, bytes)
    }
    fn free(&self, ptr: DevPtr) {
        (**self).free(ptr)
    }
    fn write(&self, ptr: DevPtr, data: &[u8]) -> Result<(), ExecError> {
        (**self).write(ptr, data)
    }
    fn read(&self, ptr: DevPtr, len: u64) -> Result<Vec<u8>, ExecError> {
        (**self).read(ptr, len)
    }
    fn zero(&self, ptr: DevPtr, len: u64) -> Result<(), ExecError> {
        (**self).zero(ptr, len)
    }
}

/// Host memory posing as a device: a capacity, and freed blocks reused (contents intact)
/// by later allocations of the same size.
pub struct HostAllocator {
    capacity: u64,
    state: Mutex<HostState>,
}

#[derive(Default)]
struct HostState {
    next: DevPtr,
    used: u64,
    live: HashMap<DevPtr, Vec<u8>>,
    freed: Vec<Vec<u8>>,
}

impl HostAllocator {
    /// A device of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        HostAllocator { capacity, state: Mutex::new(HostState { next: 1, ..HostState::default() }) }
    }
}

impl DeviceAllocator for HostAllocator {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn alloc(&self, _scope: &str, bytes: u64) -> Result<DevPtr, ExecError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.used + bytes > self.capacity {
            return Err(ExecError::OutOfMemory(format!(
                "device has {} of {} bytes free, {bytes} requested",
                self.capacity - s.used,
                self.capacity
            )));
        }
        // Reuse a freed block of the same size without clearing it, as device memory would.
        let block = match s.freed.iter().position(|b| b.len() as u64 == bytes) {
            Some(i) => s.freed.swap_remove(i),
            None => vec![0xA5; bytes as usize],
        };
        let ptr = s.next;
        s.next += 1;
        s.used += bytes;
        s.live.insert(ptr, block);
        Ok(ptr)
    }

    fn free(&self, ptr: DevPtr) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = s.live.remove(&ptr) {
            s.used -= b.len() as u64;
            if s.freed.len() < 64 {
                s.freed.push(b);
            }
        }
    }

    fn write(&self, ptr: DevPtr, data: &[u8]) -> Result<(), ExecError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let b = s
            .live
            .get_mut(&ptr)
            .ok_or_else(|| ExecError::Unavailable(format!("bad device pointer {ptr}")))?;
        if data.len() > b.len() {
            return Err(ExecError::BadInput(format!("{} bytes into a {}-byte buffer", data.len(), b.len())));
        }
        b[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, ptr: DevPtr, len: u64) -> Result<Vec<u8>, ExecError> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let b =
            s.live.get(&ptr).ok_or_else(|| ExecError::Unavailable(format!("bad device pointer {ptr}")))?;
        Ok(b[..(len as usize).min(b.len())].to_vec())
    }

    fn zero(&self, ptr: DevPtr, len: u64) -> Result<(), ExecError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let b = s
            .live
            .get_mut(&ptr)
            .ok_or_else(|| ExecError::Unavailable(format!("bad device pointer {ptr}")))?;
        let n = (len as usize).min(b.len());
        b[..n].fill(0);
        Ok(())
    }
}

/// How unpinned const buffers are chosen for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConstEviction {
    /// Least recently used.
    #[default]
    Lru,
    /// Lowest `uses / size` first (GreedyDual-Size-Frequency with upload cost ∝ size).
    Gdsf,
}

struct ConstEntry {
    ptr: DevPtr,
    size: u64,
    pins: u32,
    users: BTreeSet<String>,
    last_use: u64,
    uses: u64,
}

#[derive(Default)]
struct State {
    /// Const buffers by isolation scope, then content digest: identical bytes are stored
    /// once per scope, never shared across scopes.
    consts: HashMap<String, HashMap<[u8; 32], ConstEntry>>,
    /// Bytes charged per function: its invocation buffers and each const it uses.
    by_function: HashMap<String, u64>,
    /// Bytes of invocation buffers per share.
    by_share: HashMap<String, u64>,
    /// Bytes reserved without allocation (WebAssembly instance memory).
    reserved: u64,
    /// Bytes allocated from the device.
    allocated: u64,
    tick: u64,
}

/// An invocation's memory owner: the function, and the share it came through.
#[derive(Clone, Debug, Default)]
pub struct Owner {
    /// `namespace/name`.
    pub function: String,
    /// Function quota in bytes (0 = none).
    pub function_quota: u64,
    /// Device-plugin share ID and its quota in bytes.
    pub share: Option<(String, u64)>,
}

/// Buffers allocated for one invocation; give them back with [`MemoryManager::release`].
#[derive(Debug, Default)]
pub struct Allocation {
    /// Pointers and sizes, in the order requested.
    pub buffers: Vec<(DevPtr, u64)>,
    reserved: u64,
}

/// Memory of one device. Thread-safe.
pub struct MemoryManager<A: DeviceAllocator> {
    alloc: A,
    eviction: ConstEviction,
    state: Mutex<State>,
}

impl<A: DeviceAllocator> MemoryManager<A> {
    /// A manager over `alloc`.
    pub fn new(alloc: A, eviction: ConstEviction) -> Self {
        MemoryManager { alloc, eviction, state: Mutex::new(State::default()) }
    }

    /// The allocator (for backends that read and write buffers).
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes in use (allocations and reservations).
    pub fn used(&self) -> u64 {
        let s = self.lock();
        s.allocated + s.reserved
    }

    /// Bytes free on the device.
    pub fn free_bytes(&self) -> u64 {
        self.alloc.capacity().saturating_sub(self.used())
    }

    /// Number of const buffers resident (each stored once per scope however many
    /// functions of the scope use it).
    pub fn const_count(&self) -> usize {
        self.lock().consts.values().map(HashMap::len).sum()
    }

    /// Bytes charged to a function.
    pub fn function_bytes(&self, function: &str) -> u64 {
        self.lock().by_function.get(function).copied().unwrap_or(0)
    }

    fn check_quota(s: &State, owner: &Owner, extra: u64, share_extra: u64) -> Result<(), ExecError> {
        if owner.function_quota > 0 {
            let used = s.by_function.get(&owner.function).copied().unwrap_or(0);
            if used + extra > owner.function_quota {
                return Err(ExecError::OutOfMemory(format!(
                    "function {} would use {} bytes, over its quota of {}",
                    owner.function,
                    used + extra,
                    owner.function_quota
                )));
            }
        }
        if let Some((share, quota)) = &owner.share {
            let used = s.by_share.get(share).copied().unwrap_or(0);
            if *quota > 0 && used + share_extra > *quota {
                return Err(ExecError::OutOfMemory(format!(
                    "share {share} would use {} bytes, over its quota of {quota}",
                    used + share_extra
                )));
            }
        }
        Ok(())
    }

    /// Allocates with eviction of unpinned consts when the device is full.
    fn alloc_evicting(&self, s: &mut State, scope: &str, bytes: u64) -> Result<DevPtr, ExecError> {
        while s.reserved + s.allocated + bytes > self.alloc.capacity() {
            if !self.evict_one(s) {
                return Err(ExecError::OutOfMemory(format!(
                    "{bytes} bytes requested, {} of {} free and nothing left to evict",
                    self.alloc.capacity().saturating_sub(s.reserved + s.allocated),
                    self.alloc.capacity()
                )));
            }
        }
        loop {
            match self.alloc.alloc(scope, bytes) {
                Ok(p) => {
                    s.allocated += bytes;
                    return Ok(p);
                }
                Err(e) => {
                    if !self.evict_one(s) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Evicts the best unpinned const; returns whether one was evicted.
    fn evict_one(&self, s: &mut State) -> bool {
        let victim = s
            .consts
            .iter()
            .flat_map(|(scope, m)| m.iter().map(move |(k, c)| (scope, k, c)))
            .filter(|(_, _, c)| c.pins == 0)
            .min_by(|a, b| match self.eviction {
                ConstEviction::Lru => a.2.last_use.cmp(&b.2.last_use),
                ConstEviction::Gdsf => (a.2.uses as f64 / a.2.size as f64)
                    .total_cmp(&(b.2.uses as f64 / b.2.size as f64))
                    .then(a.2.last_use.cmp(&b.2.last_use)),
            })
            .map(|(scope, k, _)| (scope.clone(), *k));
        let Some((scope, k)) = victim else { return false };
        let c = Self::remove_const(s, &scope, &k).expect("victim exists");
        for u in &c.users {
            if let Some(b) = s.by_function.get_mut(u) {
                *b = b.saturating_sub(c.size);
            }
        }
        self.zero_and_free(s, c.ptr, c.size);
        true
    }

    fn zero_and_free(&self, s: &mut State, ptr: DevPtr, size: u64) {
        // Zeroed before the allocator can hand the memory to anyone else.
        let _ = self.alloc.zero(ptr, size);
        self.alloc.free(ptr);
        s.allocated -= size;
    }

    fn remove_const(s: &mut State, scope: &str, digest: &[u8; 32]) -> Option<ConstEntry> {
        let m = s.consts.get_mut(scope)?;
        let c = m.remove(digest);
        if m.is_empty() {
            s.consts.remove(scope);
        }
        c
    }

    /// Makes const buffers resident for `owner` in isolation scope `scope` and pins them.
    /// Identical bytes are stored once per scope and shared by every function of the scope
    /// that uses them. Returns their pointers.
    pub fn pin_consts(
        &self,
        owner: &Owner,
        scope: &str,
        consts: &[(&[u8; 32], &[u8])],
    ) -> Result<Vec<DevPtr>, ExecError> {
        let mut s = self.lock();
        let new_for_owner: u64 = consts
            .iter()
            .filter(|(d, _)| {
                s.consts.get(scope).and_then(|m| m.get(*d)).is_none_or(|c| !c.users.contains(&owner.function))
            })
            .map(|(_, b)| b.len() as u64)
            .sum();
        Self::check_quota(&s, owner, new_for_owner, 0)?;
        let mut ptrs = Vec::with_capacity(consts.len());
        let mut pinned: Vec<[u8; 32]> = Vec::new();
        for (digest, bytes) in consts {
            s.tick += 1;
            let tick = s.tick;
            if s.consts.get(scope).is_none_or(|m| !m.contains_key(*digest)) {
                let written =
                    self.alloc_evicting(&mut s, scope, bytes.len() as u64).and_then(|ptr| {
                        match self.alloc.write(ptr, bytes) {
                            Ok(()) => Ok(ptr),
                            Err(e) => {
                                self.zero_and_free(&mut s, ptr, bytes.len() as u64);
                                Err(e)
                            }
                        }
                    });
                let ptr = match written {
                    Ok(p) => p,
                    Err(e) => {
                        for d in &pinned {
                            if let Some(c) = s.consts.get_mut(scope).and_then(|m| m.get_mut(d)) {
                                c.pins -= 1;
                            }
                        }
                        return Err(e);
                    }
                };
                s.consts.entry(scope.to_string()).or_default().insert(
                    **digest,
                    ConstEntry {
                        ptr,
                        size: bytes.len() as u64,
                        pins: 0,
                        users: BTreeSet::new(),
                        last_use: 0,
                        uses: 0,
                    },
                );
            }
            let c = s.consts.get_mut(scope).and_then(|m| m.get_mut(*digest)).expect("inserted");
            c.pins += 1;
            c.uses += 1;
            c.last_use = tick;
            let size = c.size;
            let ptr = c.ptr;
            if c.users.insert(owner.function.clone()) {
                *s.by_function.entry(owner.function.clone()).or_default() += size;
            }
            pinned.push(**digest);
            ptrs.push(ptr);
        }
        Ok(ptrs)
    }

    /// Unpins consts of `scope` pinned by [`pin_consts`](Self::pin_consts); they stay
    /// resident until evicted.
    pub fn unpin_consts(&self, scope: &str, digests: &[&[u8; 32]]) {
        let mut s = self.lock();
        let Some(m) = s.consts.get_mut(scope) else { return };
        for d in digests {
            if let Some(c) = m.get_mut(*d) {
                c.pins = c.pins.saturating_sub(1);
            }
        }
    }

    /// Allocates an invocation's buffers of the given sizes for `owner` in isolation scope
    /// `scope`, within its quotas.
    pub fn allocate(&self, owner: &Owner, scope: &str, sizes: &[u64]) -> Result<Allocation, ExecError> {
        let total: u64 = sizes.iter().sum();
        let mut s = self.lock();
        Self::check_quota(&s, owner, total, total)?;
        let mut buffers = Vec::with_capacity(sizes.len());
        for &size in sizes {
            match self.alloc_evicting(&mut s, scope, size) {
                Ok(p) => {
                    // Every buffer starts zeroed, whatever the allocator hands back.
                    self.alloc.zero(p, size)?;
                    buffers.push((p, size));
                }
                Err(e) => {
                    for (p, sz) in buffers {
                        self.zero_and_free(&mut s, p, sz);
                    }
                    return Err(e);
                }
            }
        }
        *s.by_function.entry(owner.function.clone()).or_default() += total;
        if let Some((share, _)) = &owner.share {
            *s.by_share.entry(share.clone()).or_default() += total;
        }
        Ok(Allocation { buffers, reserved: 0 })
    }

    /// Charges `bytes` to `owner` without allocating (memory a backend holds itself, like a
    /// WebAssembly instance's linear memory), within quotas and device capacity.
    pub fn reserve(&self, owner: &Owner, bytes: u64) -> Result<Allocation, ExecError> {
        let mut s = self.lock();
        Self::check_quota(&s, owner, bytes, bytes)?;
        while s.reserved + s.allocated + bytes > self.alloc.capacity() {
            if !self.evict_one(&mut s) {
                return Err(ExecError::OutOfMemory(format!(
                    "{bytes} bytes requested, {} of {} free",
                    self.alloc.capacity().saturating_sub(s.reserved + s.allocated),
                    self.alloc.capacity()
                )));
            }
        }
        s.reserved += bytes;
        *s.by_function.entry(owner.function.clone()).or_default() += bytes;
        if let Some((share, _)) = &owner.share {
            *s.by_share.entry(share.clone()).or_default() += bytes;
        }
        Ok(Allocation { buffers: Vec::new(), reserved: bytes })
    }

    /// Zeroes and frees an invocation's buffers and returns its charges.
    pub fn release(&self, owner: &Owner, a: Allocation) {
        let mut s = self.lock();
        let total: u64 = a.buffers.iter().map(|b| b.1).sum::<u64>() + a.reserved;
        for (p, size) in a.buffers {
            self.zero_and_free(&mut s, p, size);
        }
        s.reserved -= a.reserved;
        if let Some(b) = s.by_function.get_mut(&owner.function) {
            *b = b.saturating_sub(total);
        }
        if let Some((share, _)) = &owner.share
            && let Some(b) = s.by_share.get_mut(share)
        {
            *b = b.saturating_sub(total);
        }
    }

    /// Drops a function from every const it uses, in every scope, and its charge for
    /// them; consts nobody uses are zeroed and freed. Charges of invocations still running
    /// stay until they are released.
    pub fn forget_function(&self, function: &str) {
        let mut s = self.lock();
        let mut gone = Vec::new();
        let mut uncharged = 0u64;
        for (scope, m) in s.consts.iter_mut() {
            for (k, c) in m.iter_mut() {
                if c.users.remove(function) {
                    uncharged += c.size;
                    if c.users.is_empty() && c.pins == 0 {
                        gone.push((scope.clone(), *k));
                    }
                }
            }
        }
        for (scope, k) in gone {
            if let Some(c) = Self::remove_const(&mut s, &scope, &k) {
                self.zero_and_free(&mut s, c.ptr, c.size);
            }
        }
        if let Some(b) = s.by_function.get_mut(function) {
            *b = b.saturating_sub(uncharged);
            if *b == 0 {
                s.by_function.remove(function);
            }
        }
    }

    /// Drops every const of `scope` nobody has pinned, whoever uses it (a scope whose
    /// device context is being torn down). Returns how many were freed.
    pub fn drop_scope(&self, scope: &str) -> usize {
        let mut s = self.lock();
        let Some(m) = s.consts.get(scope) else { return 0 };
        let free: Vec<[u8; 32]> = m.iter().filter(|(_, c)| c.pins == 0).map(|(k, _)| *k).collect();
        for k in &free {
            let c = Self::remove_const(&mut s, scope, k).expect("listed");
            for u in &c.users {
                if let Some(b) = s.by_function.get_mut(u) {
                    *b = b.saturating_sub(c.size);
                }
            }
            self.zero_and_free(&mut s, c.ptr, c.size);
        }
        free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sha256;

    fn owner(f: &str) -> Owner {
        Owner { function: f.into(), function_quota: 0, share: None }
    }

    #[test]
    fn identical_consts_are_stored_once_and_shared() {
        let m = MemoryManager::new(HostAllocator::new(1 << 20), ConstEviction::Lru);
        let weights = vec![3u8; 1000];
        let d = sha256(&weights);
        let a = m.pin_consts(&owner("ns/a"), "ns", &[(&d, &weights)]).unwrap();
        let b = m.pin_consts(&owner("ns/b"), "ns", &[(&d, &weights)]).unwrap();
        assert_eq!(a, b, "same bytes, same device buffer");
        assert_eq!(m.const_count(), 1);
        assert_eq!(m.used(), 1000);
        assert_eq!(m.allocator().read(a[0], 1000).unwrap(), weights);
        // Each user is charged for what it uses.
        assert_eq!(m.function_bytes("ns/a"), 1000);
        assert_eq!(m.function_bytes("ns/b"), 1000);
        m.unpin_consts("ns", &[&d, &d]);
        m.forget_function("ns/a");
        assert_eq!(m.const_count(), 1, "b still uses it");
        m.forget_function("ns/b");
        assert_eq!(m.const_count(), 0);
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn consts_are_never_shared_across_scopes() {
        let m = MemoryManager::new(HostAllocator::new(1 << 20), ConstEviction::Lru);
        let weights = vec![7u8; 1000];
        let d = sha256(&weights);
        let a = m.pin_consts(&owner("team-a/f"), "team-a", &[(&d, &weights)]).unwrap();
        let b = m.pin_consts(&owner("team-b/f"), "team-b", &[(&d, &weights)]).unwrap();
        assert_ne!(a, b, "the same bytes in two namespaces are two buffers");
        assert_eq!((m.const_count(), m.used()), (2, 2000));
        // Team b's writes (a kernel's, through its own pointer) leave team a's copy alone.
        m.allocator().write(b[0], &[0xff; 1000]).unwrap();
        assert_eq!(m.allocator().read(a[0], 1000).unwrap(), weights);
        // The shared scope is one more scope: dedup within it, not with team-a's.
        let s1 = m.pin_consts(&owner("team-a/g"), "", &[(&d, &weights)]).unwrap();
        let s2 = m.pin_consts(&owner("team-c/g"), "", &[(&d, &weights)]).unwrap();
        assert_eq!(s1, s2);
        assert_ne!(s1, a);
        m.unpin_consts("team-a", &[&d]);
        m.unpin_consts("team-b", &[&d]);
        m.unpin_consts("", &[&d, &d]);
        // Dropping a scope frees its unpinned consts and their charges, nobody else's.
        assert_eq!(m.drop_scope("team-b"), 1);
        assert_eq!(m.function_bytes("team-b/f"), 0);
        assert_eq!(m.function_bytes("team-a/f"), 1000);
        assert_eq!((m.const_count(), m.used()), (2, 2000));
    }

    #[test]
    fn forgetting_a_function_keeps_the_charges_of_its_running_invocations() {
        let m = MemoryManager::new(HostAllocator::new(1 << 20), ConstEviction::Lru);
        let w = vec![1u8; 100];
        let d = sha256(&w);
        m.pin_consts(&owner("a/f"), "a", &[(&d, &w)]).unwrap();
        m.unpin_consts("a", &[&d]);
        let inv = m.allocate(&owner("a/f"), "a", &[400]).unwrap();
        m.forget_function("a/f");
        assert_eq!(m.function_bytes("a/f"), 400, "the running invocation is still charged");
        m.release(&owner("a/f"), inv);
        assert_eq!((m.function_bytes("a/f"), m.used()), (0, 0));
    }

    #[test]
    fn freed_memory_is_zeroed_before_another_tenant_gets_it() {
        let m = MemoryManager::new(HostAllocator::new(1 << 20), ConstEviction::Lru);
        let a = m.allocate(&owner("tenant-a/f"), "tenant-a", &[4096]).unwrap();
        let ptr = a.buffers[0].0;
        m.allocator().write(ptr, &[0x5e; 4096]).unwrap();
        m.release(&owner("tenant-a/f"), a);
        // The host allocator hands freed blocks back as they are, like device memory.
        let b = m.allocate(&owner("tenant-b/g"), "tenant-b", &[4096]).unwrap();
        let seen = m.allocator().read(b.buffers[0].0, 4096).unwrap();
        assert!(seen.iter().all(|&x| x == 0), "tenant b saw tenant a's bytes");
        // Straight from the allocator, memory is not zeroed: the manager is what zeroes.
        let raw = m.allocator().alloc("tenant-b", 4096).unwrap();
        assert!(m.allocator().read(raw, 4096).unwrap().iter().any(|&x| x != 0));
    }

    #[test]
    fn unpinned_consts_are_evicted_under_pressure_pinned_never() {
        for eviction in [ConstEviction::Lru, ConstEviction::Gdsf] {
            let m = MemoryManager::new(HostAllocator::new(3000), eviction);
            let (w1, w2, w3) = (vec![1u8; 1000], vec![2u8; 1000], vec![3u8; 1000]);
            let (d1, d2, d3) = (sha256(&w1), sha256(&w2), sha256(&w3));
            m.pin_consts(&owner("a/1"), "a", &[(&d1, &w1)]).unwrap();
            m.pin_consts(&owner("a/2"), "a", &[(&d2, &w2)]).unwrap();
            m.unpin_consts("a", &[&d1]);
            m.pin_consts(&owner("a/3"), "a", &[(&d3, &w3)]).unwrap();
            // Full: 1 is unpinned, 2 and 3 pinned. A 1000-byte invocation evicts 1.
            let inv = m.allocate(&owner("a/4"), "a", &[1000]).unwrap();
            assert_eq!(m.const_count(), 2, "{eviction:?}");
            // Nothing left to evict: the next request fails cleanly.
            let e = m.allocate(&owner("a/5"), "a", &[1000]).unwrap_err();
            assert!(matches!(e, ExecError::OutOfMemory(_)), "{e}");
            m.release(&owner("a/4"), inv);
            assert_eq!(m.used(), 2000);
        }
    }

    #[test]
    fn function_and_share_quotas() {
        let m = MemoryManager::new(HostAllocator::new(1 << 20), ConstEviction::Lru);
        let f = Owner { function: "a/f".into(), function_quota: 2048, share: None };
        let a = m.allocate(&f, "a", &[1024, 1024]).unwrap();
        let e = m.allocate(&f, "a", &[1]).unwrap_err();
        assert!(e.to_string().contains("over its quota of 2048"), "{e}");
        m.release(&f, a);
        assert!(m.allocate(&f, "a", &[2048]).is_ok());

        let s1 =
            Owner { function: "b/g".into(), function_quota: 0, share: Some(("gpu-0-share-1".into(), 1000)) };
        let s2 =
            Owner { function: "b/g".into(), function_quota: 0, share: Some(("gpu-0-share-2".into(), 1000)) };
        let x = m.allocate(&s1, "b", &[800]).unwrap();
        let e = m.allocate(&s1, "b", &[300]).unwrap_err();
        assert!(e.to_string().contains("share gpu-0-share-1"), "{e}");
        // Another share of the same function has its own quota.
        assert!(m.allocate(&s2, "b", &[900]).is_ok());
        m.release(&s1, x);
        assert!(m.allocate(&s1, "b", &[900]).is_ok());
        // Reservations count against quotas too.
        let e = m.reserve(&s1, 200).unwrap_err();
        assert!(matches!(e, ExecError::OutOfMemory(_)));
    }
}
