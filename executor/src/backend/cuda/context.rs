//! CUDA contexts per isolation scope, and device memory allocated in them.
//!
//! Under `namespace` isolation each namespace's functions live in their own context on
//! the device: CUDA gives every context its own address space, so a pointer from one
//! namespace's kernel means nothing in another's. Under `shared` isolation everyone is in
//! the one context of the empty scope. Tenant contexts are never the device's primary
//! context, which only probes health, so a context a kernel broke (an illegal address is
//! sticky) is replaced without touching anyone else's.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};

use super::driver;
use crate::error::ExecError;
use crate::memory::{DevPtr, DeviceAllocator};

/// One scope's context on the device, with a stream per slot.
pub(super) struct Tenant {
    /// Unique for the life of the backend: the scope and a generation, so memory of a
    /// replaced context is never mistaken for the new one's.
    pub key: String,
    pub ctx: Arc<CudaContext>,
    /// Copies and allocations.
    copy: Arc<CudaStream>,
    streams: Vec<Arc<CudaStream>>,
    next_stream: AtomicUsize,
    /// A kernel failed in this context: it may be unusable (sticky errors), so it is
    /// replaced before its scope loads again.
    broken: AtomicBool,
}

impl Tenant {
    /// The next slot's stream.
    pub fn stream(&self) -> Arc<CudaStream> {
        self.streams[self.next_stream.fetch_add(1, Ordering::Relaxed) % self.streams.len()].clone()
    }

    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Map {
    /// The current tenant of each scope.
    by_scope: HashMap<String, Arc<Tenant>>,
    /// Every tenant that may still own memory, by key.
    by_key: HashMap<String, Arc<Tenant>>,
}

/// The contexts of one device.
pub(super) struct Tenants {
    ordinal: usize,
    slots: u32,
    generation: AtomicU64,
    map: Mutex<Map>,
}

impl Tenants {
    pub fn new(ordinal: usize, slots: u32) -> Self {
        Tenants { ordinal, slots: slots.max(1), generation: AtomicU64::new(0), map: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scope's current context, created on first use.
    pub fn get(&self, scope: &str) -> Result<Arc<Tenant>, ExecError> {
        if let Some(t) = self.lock().by_scope.get(scope) {
            return Ok(t.clone());
        }
        // Created outside the lock: a context takes milliseconds and device memory.
        let ctx = CudaContext::new_non_primary(self.ordinal, 0).map_err(|e| {
            ExecError::OutOfMemory(format!("creating a CUDA context for scope {scope:?}: {e:?}"))
        })?;
        let streams =
            (0..self.slots).map(|_| ctx.new_stream()).collect::<Result<Vec<_>, _>>().map_err(driver)?;
        let key = format!("{scope}#{}", self.generation.fetch_add(1, Ordering::Relaxed));
        let t = Arc::new(Tenant {
            key: key.clone(),
            copy: ctx.default_stream(),
            ctx,
            streams,
            next_stream: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        });
        let mut m = self.lock();
        // Another thread may have created one meanwhile: keep the first.
        if let Some(t) = m.by_scope.get(scope) {
            return Ok(t.clone());
        }
        m.by_scope.insert(scope.to_string(), t.clone());
        m.by_key.insert(key, t.clone());
        Ok(t)
    }

    /// The tenant that owns memory of `key`.
    fn by_key(&self, key: &str) -> Option<Arc<Tenant>> {
        self.lock().by_key.get(key).cloned()
    }

    /// Stops handing out `t` for its scope (the next [`get`](Self::get) creates a fresh
    /// context); its memory stays valid until [`forget`](Self::forget).
    pub fn retire(&self, scope: &str, t: &Tenant) {
        let mut m = self.lock();
        if m.by_scope.get(scope).is_some_and(|cur| cur.key == t.key) {
            m.by_scope.remove(scope);
        }
    }

    /// Drops the tenant of `key`: its context is destroyed once nothing refers to it.
    pub fn forget(&self, scope: &str, key: &str) {
        let mut m = self.lock();
        m.by_key.remove(key);
        if m.by_scope.get(scope).is_some_and(|cur| cur.key == key) {
            m.by_scope.remove(scope);
        }
    }

    /// Number of contexts that may still own memory.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }
}

/// Device memory through the CUDA driver, each allocation in the context of the scope
/// key it was asked for.
pub struct CudaAllocator {
    tenants: Arc<Tenants>,
    capacity: u64,
    next: AtomicUsize,
    slices: Mutex<HashMap<DevPtr, CudaSlice<u8>>>,
}

impl CudaAllocator {
    pub(super) fn new(tenants: Arc<Tenants>, capacity: u64) -> Self {
        CudaAllocator { tenants, capacity, next: AtomicUsize::new(0), slices: Mutex::new(HashMap::new()) }
    }

    pub(super) fn slices(&self) -> std::sync::MutexGuard<'_, HashMap<DevPtr, CudaSlice<u8>>> {
        self.slices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DeviceAllocator for CudaAllocator {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn alloc(&self, scope: &str, bytes: u64) -> Result<DevPtr, ExecError> {
        let t = self
            .tenants
            .by_key(scope)
            .ok_or_else(|| ExecError::Unavailable(format!("no CUDA context for scope {scope:?}")))?;
        // SAFETY: the memory is zeroed by MemoryManager before anyone reads it.
        let slice = unsafe { t.copy.alloc::<u8>(bytes as usize) }
            .map_err(|e| ExecError::OutOfMemory(format!("cuMemAlloc of {bytes} bytes failed: {e:?}")))?;
        let ptr = self.next.fetch_add(1, Ordering::Relaxed) as DevPtr + 1;
        self.slices().insert(ptr, slice);
        Ok(ptr)
    }

    fn free(&self, ptr: DevPtr) {
        self.slices().remove(&ptr);
    }

    fn write(&self, ptr: DevPtr, data: &[u8]) -> Result<(), ExecError> {
        let mut slices = self.slices();
        let dst = slices.get_mut(&ptr).ok_or_else(|| driver(format!("bad pointer {ptr}")))?;
        let stream = dst.stream().clone();
        let mut view = dst.slice_mut(..data.len());
        stream.memcpy_htod(data, &mut view).map_err(driver)
    }

    fn read(&self, ptr: DevPtr, len: u64) -> Result<Vec<u8>, ExecError> {
        let slices = self.slices();
        let src = slices.get(&ptr).ok_or_else(|| driver(format!("bad pointer {ptr}")))?;
        let mut out = vec![0u8; len as usize];
        src.stream().memcpy_dtoh(&src.slice(..len as usize), &mut out).map_err(driver)?;
        Ok(out)
    }

    fn zero(&self, ptr: DevPtr, len: u64) -> Result<(), ExecError> {
        let mut slices = self.slices();
        let dst = slices.get_mut(&ptr).ok_or_else(|| driver(format!("bad pointer {ptr}")))?;
        let stream = dst.stream().clone();
        let mut view = dst.slice_mut(..len as usize);
        stream.memset_zeros(&mut view).map_err(driver)
    }
}
