//! The CUDA backend, through cudarc with dynamic loading: the binary builds and runs on
//! machines without CUDA, and [`CudaBackend::discover`] reports "no CUDA driver" there.
//! Modules (PTX, cubin, or CUDA C compiled with NVRTC) are loaded once per device and
//! isolation scope and cached; invocations run on per-slot streams of their scope's
//! context ([`context`]) and are timed with CUDA events.
//!
//! This is the one module of kaas that calls `unsafe` code: loading the driver library
//! and launching kernels with raw arguments.
#![allow(unsafe_code)]

mod context;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig, PushKernelArg, sys};
use cudarc::nvrtc::Ptx;

pub use self::context::CudaAllocator;
use self::context::{Tenant, Tenants};
use super::{Backend, DeviceInfo, Invocation, Isolation, Outputs};
use crate::error::ExecError;
use crate::memory::{Allocation, ConstEviction, DevPtr, DeviceAllocator, MemoryManager, Owner};
use crate::model::{Arg, BufferKind, CudaFormat, FunctionDef};

/// Whether NVRTC can be loaded here (cudarc's dynamic loading panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: tries to open the library under its candidate names, nothing more.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn driver(e: impl std::fmt::Debug) -> ExecError {
    ExecError::Unavailable(format!("CUDA driver error: {e:?}"))
}

struct Loaded {
    version: String,
    /// The isolation scope it was loaded in, and that scope's context.
    scope: String,
    tenant: Arc<Tenant>,
    modules: Vec<Option<Arc<CudaModule>>>,
}

/// One GPU.
pub struct CudaBackend {
    /// The primary context: discovery and health probes only; tenants' kernels run in
    /// their scopes' contexts.
    ctx: Arc<CudaContext>,
    tenants: Arc<Tenants>,
    memory: Arc<MemoryManager<CudaAllocator>>,
    loaded: Mutex<HashMap<String, Loaded>>,
    info: DeviceInfo,
    kernel_timeout: Duration,
    failure: Mutex<Option<String>>,
    isolation: Mutex<Isolation>,
}

impl CudaBackend {
    /// Every GPU on this machine, each with `slots` streams and `reserve_bytes` of its
    /// memory left to the driver. `Err` explains why there are none ("no CUDA driver").
    pub fn discover(
        slots: u32,
        reserve_bytes: u64,
        kernel_timeout: Duration,
    ) -> Result<Vec<CudaBackend>, ExecError> {
        // SAFETY: only probes whether the driver library can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(ExecError::Unavailable("no CUDA driver (libcuda.so not found)".into()));
        }
        let count = CudaContext::device_count().map_err(driver)?;
        let mut out = Vec::new();
        for ordinal in 0..count as usize {
            let ctx = CudaContext::new(ordinal).map_err(driver)?;
            let model = ctx.name().map_err(driver)?;
            let total = ctx.total_mem().map_err(driver)? as u64;
            let uuid = ctx
                .uuid()
                .map(|u| format!("GPU-{}", hex::encode(u.bytes.map(|b| b as u8))))
                .unwrap_or_else(|_| format!("gpu-{ordinal}"));
            let capacity = total.saturating_sub(reserve_bytes);
            let tenants = Arc::new(Tenants::new(ordinal, slots));
            let alloc = CudaAllocator::new(tenants.clone(), capacity);
            out.push(CudaBackend {
                info: DeviceInfo {
                    id: uuid,
                    kind: "gpu".into(),
                    model,
                    memory_bytes: capacity,
                    slots: slots.max(1),
                },
                ctx,
                tenants,
                memory: Arc::new(MemoryManager::new(alloc, ConstEviction::Lru)),
                loaded: Mutex::new(HashMap::new()),
                kernel_timeout,
                failure: Mutex::new(None),
                isolation: Mutex::new(Isolation::default()),
            });
        }
        if out.is_empty() {
            return Err(ExecError::Unavailable("CUDA driver present but no GPU found".into()));
        }
        Ok(out)
    }

    fn fail(&self, why: String) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn compile(
        &self,
        ctx: &Arc<CudaContext>,
        name: &str,
        format: CudaFormat,
        bytes: &[u8],
    ) -> Result<Arc<CudaModule>, ExecError> {
        let load = |message: String| ExecError::ModuleLoad { module: name.to_string(), message };
        let ptx = match format {
            CudaFormat::Ptx => Ptx::from_src(
                String::from_utf8(bytes.to_vec()).map_err(|e| load(format!("PTX is not UTF-8: {e}")))?,
            ),
            CudaFormat::Cubin => Ptx::from_binary(bytes.to_vec()),
            CudaFormat::CudaC => {
                let src =
                    std::str::from_utf8(bytes).map_err(|e| load(format!("CUDA C is not UTF-8: {e}")))?;
                Ptx::from_src(crate::signature::compile_cuda_c(name, src)?)
            }
        };
        ctx.load_module(ptx).map_err(|e| load(format!("cuModuleLoadData: {e:?}")))
    }

    /// The device's memory manager.
    pub fn memory(&self) -> &Arc<MemoryManager<CudaAllocator>> {
        &self.memory
    }

    /// The memory-manager scope of `scope`'s current context, created on first use (for
    /// tests and tools that allocate through [`memory`](Self::memory) directly).
    pub fn scope_key(&self, scope: &str) -> Result<String, ExecError> {
        Ok(self.tenants.get(scope)?.key.clone())
    }

    /// CUDA contexts this device holds for isolation scopes.
    pub fn contexts(&self) -> usize {
        self.tenants.len()
    }

    fn isolation(&self) -> Isolation {
        *self.isolation.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scope(&self, f: &FunctionDef) -> String {
        self.isolation().scope(&f.namespace).to_string()
    }

    /// Loads the function's modules into `tenant`'s context and uploads its consts there.
    fn load_into(&self, f: &FunctionDef, tenant: &Tenant) -> Result<Vec<Option<Arc<CudaModule>>>, ExecError> {
        let mut modules = vec![None; f.modules.len()];
        for k in &f.kernels {
            if modules[k.module].is_some() {
                continue;
            }
            let m = &f.modules[k.module];
            let (format, bytes) = m
                .cuda
                .as_ref()
                .ok_or_else(|| ExecError::NoCapacity(format!("module {:?} has no cuda build", m.name)))?;
            let module = self.compile(&tenant.ctx, &m.name, *format, bytes)?;
            // Resolve every entry now so a missing symbol fails the load, not a kernel.
            module.load_function(&k.entry).map_err(|e| ExecError::ModuleLoad {
                module: m.name.clone(),
                message: format!("no kernel {:?}: {e:?}", k.entry),
            })?;
            modules[k.module] = Some(module);
        }
        let owner = Owner { function: f.key(), function_quota: f.memory_quota, share: None };
        let consts: Vec<(&[u8; 32], &[u8])> =
            f.buffers.iter().filter_map(|b| b.content.as_ref().map(|(c, d)| (d, &c[..]))).collect();
        // Stored once per content within the scope's context.
        self.memory.pin_consts(&owner, &tenant.key, &consts)?;
        self.memory.unpin_consts(&tenant.key, &consts.iter().map(|c| c.0).collect::<Vec<_>>());
        Ok(modules)
    }

    /// Drops a loaded function; a context left with no function is released (its
    /// unpinned consts freed, the context destroyed once running invocations end).
    fn drop_loaded(&self, key: &str, loaded: &mut HashMap<String, Loaded>) {
        let Some(old) = loaded.remove(key) else {
            self.memory.forget_function(key);
            return;
        };
        self.memory.forget_function(key);
        if !loaded.values().any(|l| l.tenant.key == old.tenant.key) {
            self.memory.drop_scope(&old.tenant.key);
            self.tenants.forget(&old.scope, &old.tenant.key);
        }
    }

    /// Replaces a context a kernel broke: every function loaded in it is dropped (each
    /// loads again, in a fresh context, on its next invocation); other scopes go on.
    fn replace_broken(&self, scope: &str, broken: &Arc<Tenant>, loaded: &mut HashMap<String, Loaded>) {
        tracing::warn!(device = %self.info.id, scope, "a kernel failed in this scope's CUDA context; replacing it");
        self.tenants.retire(scope, broken);
        let keys: Vec<String> =
            loaded.iter().filter(|(_, l)| l.tenant.key == broken.key).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.drop_loaded(&k, loaded);
        }
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn free_memory(&self) -> u64 {
        self.memory.free_bytes()
    }

    fn can_run(&self, f: &FunctionDef) -> bool {
        f.has_cuda()
    }

    fn is_resident(&self, f: &FunctionDef) -> bool {
        let isolation = self.isolation();
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&f.key()).is_some_and(|l| {
            l.version == f.version && l.scope == isolation.scope(&f.namespace) && !l.tenant.is_broken()
        })
    }

    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError> {
        if self.is_resident(f) {
            return Ok(());
        }
        let key = f.key();
        let scope = self.scope(f);
        {
            // Another version, another scope, or a broken context: its state goes first.
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = loaded.get(&key) {
                let (old_scope, old_tenant) = (old.scope.clone(), old.tenant.clone());
                if old_tenant.is_broken() {
                    self.replace_broken(&old_scope, &old_tenant, &mut loaded);
                } else {
                    self.drop_loaded(&key, &mut loaded);
                }
            }
        }
        let tenant = self.tenants.get(&scope)?;
        let loaded = self.load_into(f, &tenant);
        let mut map = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(modules) => {
                map.insert(key, Loaded { version: f.version.clone(), scope, tenant, modules });
                Ok(())
            }
            Err(e) => {
                // A context created for this load and left with no function is released.
                self.memory.forget_function(&key);
                if !map.values().any(|l| l.tenant.key == tenant.key) {
                    self.memory.drop_scope(&tenant.key);
                    self.tenants.forget(&scope, &tenant.key);
                }
                Err(e)
            }
        }
    }

    fn unload(&self, key: &str) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        self.drop_loaded(key, &mut loaded);
    }

    fn set_isolation(&self, isolation: Isolation) {
        *self.isolation.lock().unwrap_or_else(|e| e.into_inner()) = isolation;
    }

    fn begin(
        &self,
        f: &Arc<FunctionDef>,
        owner: Owner,
        inputs: Outputs,
    ) -> Result<Box<dyn Invocation>, ExecError> {
        // In the scope it was loaded in: an isolation switch reloads it on the next load.
        let (modules, tenant) = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            let l = loaded.get(&f.key()).filter(|l| l.version == f.version).ok_or_else(|| {
                ExecError::Unavailable(format!("function {} is not resident on {}", f.key(), self.info.id))
            })?;
            (l.modules.clone(), l.tenant.clone())
        };
        let scope = tenant.key.clone();
        let consts: Vec<(&[u8; 32], &[u8])> =
            f.buffers.iter().filter_map(|b| b.content.as_ref().map(|(c, d)| (d, &c[..]))).collect();
        let const_ptrs = self.memory.pin_consts(&owner, &scope, &consts)?;
        let sizes: Vec<u64> =
            f.buffers.iter().filter(|b| b.kind != BufferKind::Const).map(|b| b.size).collect();
        let alloc = match self.memory.allocate(&owner, &scope, &sizes) {
            Ok(a) => a,
            Err(e) => {
                self.memory.unpin_consts(&scope, &consts.iter().map(|c| c.0).collect::<Vec<_>>());
                return Err(e);
            }
        };
        // Buffer index → device pointer.
        let (mut ci, mut ai) = (0, 0);
        let mut ptrs = Vec::with_capacity(f.buffers.len());
        for b in &f.buffers {
            if b.kind == BufferKind::Const {
                ptrs.push(const_ptrs[ci]);
                ci += 1;
            } else {
                ptrs.push(alloc.buffers[ai].0);
                ai += 1;
            }
        }
        let inv = CudaInvocation {
            f: f.clone(),
            modules,
            ptrs,
            stream: tenant.stream(),
            memory: self.memory.clone(),
            owner,
            alloc: Some(alloc),
            consts: consts.iter().map(|c| *c.0).collect(),
            timeout: self.kernel_timeout,
            tenant,
        };
        for (b, &p) in f.buffers.iter().zip(&inv.ptrs) {
            if b.kind == BufferKind::Input {
                self.memory.allocator().write(p, &inputs[&b.name])?;
            }
        }
        Ok(Box::new(inv))
    }

    /// A context synchronisation: a failure (device lost, ECC error, a sticky fault)
    /// marks the device unhealthy; a later success marks it healthy again.
    fn probe(&self) {
        match self.ctx.synchronize() {
            Ok(()) => *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None,
            Err(e) => self.fail(format!("{e:?}")),
        }
    }

    fn health(&self) -> Result<(), String> {
        match self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

struct CudaInvocation {
    f: Arc<FunctionDef>,
    modules: Vec<Option<Arc<CudaModule>>>,
    ptrs: Vec<DevPtr>,
    stream: Arc<CudaStream>,
    memory: Arc<MemoryManager<CudaAllocator>>,
    owner: Owner,
    alloc: Option<Allocation>,
    consts: Vec<[u8; 32]>,
    timeout: Duration,
    tenant: Arc<Tenant>,
}

impl Invocation for CudaInvocation {
    fn run_kernel(&mut self, k: usize) -> Result<Duration, ExecError> {
        let kernel = &self.f.kernels[k];
        let fault = |message: String| ExecError::KernelFault { entry: kernel.entry.clone(), message };
        let module = self.modules[kernel.module].as_ref().ok_or_else(|| fault("module not loaded".into()))?;
        let func = module.load_function(&kernel.entry).map_err(|e| fault(format!("{e:?}")))?;
        let cfg = LaunchConfig {
            grid_dim: (kernel.grid[0], kernel.grid[1], kernel.grid[2]),
            block_dim: (kernel.block[0], kernel.block[1], kernel.block[2]),
            shared_mem_bytes: kernel.shared_mem_bytes,
        };
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.tenant.ctx.new_event(timing).map_err(driver)?;
        let end = self.tenant.ctx.new_event(timing).map_err(driver)?;
        let slices = self.memory.allocator().slices();
        // Literal arguments live here until the launch has copied them.
        let literals: Vec<Arg> = kernel.args.clone();
        let mut builder = self.stream.launch_builder(&func);
        for a in &literals {
            match a {
                Arg::Buffer(i) => {
                    let s = slices
                        .get(&self.ptrs[*i])
                        .ok_or_else(|| fault(format!("buffer {i} has no device memory")))?;
                    builder.arg(s);
                }
                Arg::I32(v) => {
                    builder.arg(v);
                }
                Arg::U32(v) => {
                    builder.arg(v);
                }
                Arg::I64(v) => {
                    builder.arg(v);
                }
                Arg::U64(v) => {
                    builder.arg(v);
                }
                Arg::F32(v) => {
                    builder.arg(v);
                }
                Arg::F64(v) => {
                    builder.arg(v);
                }
            }
        }
        start.record(&self.stream).map_err(driver)?;
        // SAFETY: the argument list matches the kernel's declared parameters: registration
        // checked `args` against the PTX `.entry` (crate::signature) for PTX and CUDA C
        // builds (buffers as 64-bit device pointers, literals by value and size); a cubin
        // is not checked, and a mismatch there is reported as a launch or memory fault.
        // A failed launch or synchronisation may leave the context unusable (faults such
        // as an illegal address are sticky): it is replaced before its scope loads again.
        unsafe { builder.launch(cfg) }.map_err(|e| {
            self.tenant.mark_broken();
            fault(format!("launch failed: {e:?}"))
        })?;
        end.record(&self.stream).map_err(driver)?;
        drop(slices);
        self.stream.synchronize().map_err(|e| {
            self.tenant.mark_broken();
            fault(format!("{e:?}"))
        })?;
        let ms = start.elapsed_ms(&end).map_err(driver)?;
        let took = Duration::from_secs_f64(ms as f64 / 1000.0);
        if took > self.timeout {
            return Err(ExecError::Timeout {
                entry: kernel.entry.clone(),
                limit_ms: self.timeout.as_millis() as u64,
            });
        }
        Ok(took)
    }

    fn finish(self: Box<Self>) -> Result<Outputs, ExecError> {
        let mut out = Outputs::new();
        for (b, &p) in self.f.buffers.iter().zip(&self.ptrs) {
            if b.kind == BufferKind::Output {
                out.insert(b.name.clone(), self.memory.allocator().read(p, b.size)?.into());
            }
        }
        Ok(out)
    }
}

impl Drop for CudaInvocation {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        if let Some(a) = self.alloc.take() {
            self.memory.release(&self.owner, a);
        }
        self.memory.unpin_consts(&self.tenant.key, &self.consts.iter().collect::<Vec<_>>());
    }
}
