//! The CUDA backend, through cudarc with dynamic loading: the binary builds and runs on
//! machines without CUDA, and [`CudaBackend::discover`] reports "no CUDA driver" there.
//! Modules (PTX, cubin, or CUDA C compiled with NVRTC) are loaded once per device and
//! cached; invocations run on per-slot streams and are timed with CUDA events.
//!
//! This is the one module of kaas that calls `unsafe` code: loading the driver library
//! and launching kernels with raw arguments.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg, sys};
use cudarc::nvrtc::Ptx;

use super::{Backend, DeviceInfo, Invocation, Outputs};
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

/// Device memory through the CUDA driver.
pub struct CudaAllocator {
    stream: Arc<CudaStream>,
    capacity: u64,
    next: AtomicUsize,
    slices: Mutex<HashMap<DevPtr, CudaSlice<u8>>>,
}

impl CudaAllocator {
    fn slices(&self) -> std::sync::MutexGuard<'_, HashMap<DevPtr, CudaSlice<u8>>> {
        self.slices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DeviceAllocator for CudaAllocator {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn alloc(&self, bytes: u64) -> Result<DevPtr, ExecError> {
        // SAFETY: the memory is zeroed by MemoryManager before anyone reads it.
        let slice = unsafe { self.stream.alloc::<u8>(bytes as usize) }
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
        let mut view = dst.slice_mut(..data.len());
        self.stream.memcpy_htod(data, &mut view).map_err(driver)
    }

    fn read(&self, ptr: DevPtr, len: u64) -> Result<Vec<u8>, ExecError> {
        let slices = self.slices();
        let src = slices.get(&ptr).ok_or_else(|| driver(format!("bad pointer {ptr}")))?;
        let mut out = vec![0u8; len as usize];
        self.stream.memcpy_dtoh(&src.slice(..len as usize), &mut out).map_err(driver)?;
        Ok(out)
    }

    fn zero(&self, ptr: DevPtr, len: u64) -> Result<(), ExecError> {
        let mut slices = self.slices();
        let dst = slices.get_mut(&ptr).ok_or_else(|| driver(format!("bad pointer {ptr}")))?;
        let mut view = dst.slice_mut(..len as usize);
        self.stream.memset_zeros(&mut view).map_err(driver)
    }
}

struct Loaded {
    version: String,
    modules: Vec<Option<Arc<CudaModule>>>,
}

/// One GPU.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    next_stream: AtomicUsize,
    memory: Arc<MemoryManager<CudaAllocator>>,
    loaded: Mutex<HashMap<String, Loaded>>,
    info: DeviceInfo,
    kernel_timeout: Duration,
    failure: Mutex<Option<String>>,
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
            let streams =
                (0..slots.max(1)).map(|_| ctx.new_stream()).collect::<Result<Vec<_>, _>>().map_err(driver)?;
            let capacity = total.saturating_sub(reserve_bytes);
            let alloc = CudaAllocator {
                stream: ctx.default_stream(),
                capacity,
                next: AtomicUsize::new(0),
                slices: Mutex::new(HashMap::new()),
            };
            out.push(CudaBackend {
                info: DeviceInfo {
                    id: uuid,
                    kind: "gpu".into(),
                    model,
                    memory_bytes: capacity,
                    slots: slots.max(1),
                },
                ctx,
                streams,
                next_stream: AtomicUsize::new(0),
                memory: Arc::new(MemoryManager::new(alloc, ConstEviction::Lru)),
                loaded: Mutex::new(HashMap::new()),
                kernel_timeout,
                failure: Mutex::new(None),
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

    fn compile(&self, name: &str, format: CudaFormat, bytes: &[u8]) -> Result<Arc<CudaModule>, ExecError> {
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
        self.ctx.load_module(ptx).map_err(|e| load(format!("cuModuleLoadData: {e:?}")))
    }

    /// The device's memory manager.
    pub fn memory(&self) -> &Arc<MemoryManager<CudaAllocator>> {
        &self.memory
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
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.key())
            .is_some_and(|l| l.version == f.version)
    }

    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError> {
        if self.is_resident(f) {
            return Ok(());
        }
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
            let module = self.compile(&m.name, *format, bytes)?;
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
        self.memory.pin_consts(&owner, &consts)?;
        self.memory.unpin_consts(&consts.iter().map(|c| c.0).collect::<Vec<_>>());
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(f.key(), Loaded { version: f.version.clone(), modules });
        Ok(())
    }

    fn unload(&self, key: &str) {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.memory.forget_function(key);
    }

    fn begin(
        &self,
        f: &Arc<FunctionDef>,
        owner: Owner,
        inputs: Outputs,
    ) -> Result<Box<dyn Invocation>, ExecError> {
        let modules = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            let l = loaded.get(&f.key()).filter(|l| l.version == f.version).ok_or_else(|| {
                ExecError::Unavailable(format!("function {} is not resident on {}", f.key(), self.info.id))
            })?;
            l.modules.clone()
        };
        let consts: Vec<(&[u8; 32], &[u8])> =
            f.buffers.iter().filter_map(|b| b.content.as_ref().map(|(c, d)| (d, &c[..]))).collect();
        let const_ptrs = self.memory.pin_consts(&owner, &consts)?;
        let sizes: Vec<u64> =
            f.buffers.iter().filter(|b| b.kind != BufferKind::Const).map(|b| b.size).collect();
        let alloc = match self.memory.allocate(&owner, &sizes) {
            Ok(a) => a,
            Err(e) => {
                self.memory.unpin_consts(&consts.iter().map(|c| c.0).collect::<Vec<_>>());
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
            stream: self.streams[self.next_stream.fetch_add(1, Ordering::Relaxed) % self.streams.len()]
                .clone(),
            memory: self.memory.clone(),
            owner,
            alloc: Some(alloc),
            consts: consts.iter().map(|c| *c.0).collect(),
            timeout: self.kernel_timeout,
            ctx: self.ctx.clone(),
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
    ctx: Arc<CudaContext>,
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
        let start = self.ctx.new_event(timing).map_err(driver)?;
        let end = self.ctx.new_event(timing).map_err(driver)?;
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
        unsafe { builder.launch(cfg) }.map_err(|e| fault(format!("launch failed: {e:?}")))?;
        end.record(&self.stream).map_err(driver)?;
        drop(slices);
        self.stream.synchronize().map_err(|e| fault(format!("{e:?}")))?;
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
                out.insert(b.name.clone(), self.memory.allocator().read(p, b.size)?);
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
        self.memory.unpin_consts(&self.consts.iter().collect::<Vec<_>>());
    }
}
