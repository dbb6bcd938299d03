//! The WebAssembly backend: CPU builds of kernels run in wasmtime.
//!
//! # ABI
//!
//! A kernel module exports its linear memory as `memory` and one function per kernel
//! entry. The executor lays every buffer of the function out in that memory, after the
//! module's own initial pages, each at a 64-byte aligned offset, growing the memory as
//! needed; `Const` buffers are written once when the function becomes resident, `Temp`
//! and `Output` buffers are zeroed and `Input` buffers written before every invocation.
//! The entry is called once per block of the grid, x fastest, with
//! `(block_x, block_y, block_z, block_dim_x, block_dim_y, block_dim_z, args...)`, all
//! `i32` except the arguments: a buffer is its `i32` byte offset in memory, literals are
//! `i32` (i32, u32), `i64` (i64, u64), `f32` or `f64`. The entry returns nothing and loops
//! over the threads of its block itself. Modules import nothing. A trap fails the
//! invocation; a kernel running past the executor's kernel time limit is interrupted
//! (epoch deadline) and fails it too. Kernels of a function in different modules see the
//! same buffer contents: buffers are copied between module memories when the module changes.
//!
//! # Limits
//!
//! A module's linear memory may not exceed the function's buffers plus a margin
//! ([`DEFAULT_MEMORY_MARGIN`], the executor's `--wasm-memory-margin-mib`) that holds the
//! module's own initial memory (data, stack, heap) and any growth: a module declaring
//! more initial memory than the margin fails to load, and `memory.grow` beyond the limit
//! returns -1, as the specification allows. `Const` buffers are read-only: an invocation whose kernels changed one fails,
//! and its instances are dropped, so no other invocation ever sees the change. Compiled
//! modules are cached while a resident function uses them, and each function keeps at
//! most one pooled instance set per slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, ExternType, Func, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    Val, ValType,
};

use super::{Backend, DeviceInfo, Invocation, Isolation, Outputs};
use crate::error::ExecError;
use crate::memory::{Allocation, ConstEviction, HostAllocator, MemoryManager, Owner};
use crate::model::{Arg, BufferKind, FunctionDef, sha256};

const PAGE: u64 = 65_536;
const ALIGN: u64 = 64;
/// Epoch ticks per second: the resolution of the kernel time limit.
const TICKS_PER_SEC: u64 = 1000;
/// How far past its layout a module's linear memory may grow by default: room for a
/// kernel's own stack and heap (a Rust kernel's allocator, for example).
pub const DEFAULT_MEMORY_MARGIN: u64 = 16 << 20;
/// Table elements a module instance may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 16;

/// Compiles and runs WebAssembly kernels on the CPU device.
pub struct WasmBackend {
    engine: Engine,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    resident: Mutex<HashMap<String, Arc<Resident>>>,
    memory: Arc<MemoryManager<HostAllocator>>,
    kernel_timeout: Duration,
    info: DeviceInfo,
    stop: Arc<AtomicBool>,
    isolation: Mutex<Isolation>,
    memory_margin: u64,
}

/// A function resident on the CPU device: its compiled modules, its buffer layout and
/// pooled instances.
struct Resident {
    version: String,
    /// The isolation scope its consts are charged in.
    scope: String,
    modules: Vec<Option<Module>>,
    /// Digests of the module bytes, for the compiled-module cache.
    digests: Vec<[u8; 32]>,
    /// Each buffer's offset, the same in every module's memory.
    offsets: Vec<u64>,
    /// Bytes a memory may grow to: the layout plus the margin.
    memory_limit: u64,
    /// End of the layout.
    end: u64,
    pool: Mutex<Vec<InstanceSet>>,
}

/// One instance per module of the function, with every buffer laid out in each memory.
struct InstanceSet {
    store: Store<StoreLimits>,
    instances: Vec<Option<(Instance, Memory)>>,
}

impl WasmBackend {
    /// A backend for a CPU device of `memory_bytes` with `slots` concurrent kernels; a kernel
    /// running longer than `kernel_timeout` is stopped.
    pub fn new(memory_bytes: u64, slots: u32, kernel_timeout: Duration) -> Result<Self, ExecError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| ExecError::Unavailable(format!("wasmtime: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        // The epoch ticker: each tick is 1 ms of kernel time budget.
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kaas-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_micros(1_000_000 / TICKS_PER_SEC));
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| ExecError::Unavailable(format!("epoch thread: {e}")))?;
        }
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Ok(WasmBackend {
            engine,
            modules: Mutex::new(HashMap::new()),
            resident: Mutex::new(HashMap::new()),
            memory: Arc::new(MemoryManager::new(HostAllocator::new(memory_bytes), ConstEviction::Lru)),
            kernel_timeout,
            info: DeviceInfo { id: "cpu".into(), kind: "cpu".into(), model, memory_bytes, slots },
            stop,
            isolation: Mutex::new(Isolation::default()),
            memory_margin: DEFAULT_MEMORY_MARGIN,
        })
    }

    /// How far past its layout a module's linear memory may grow.
    pub fn with_memory_margin(mut self, bytes: u64) -> Self {
        self.memory_margin = bytes;
        self
    }

    fn isolation(&self) -> Isolation {
        *self.isolation.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scope(&self, f: &FunctionDef) -> String {
        self.isolation().scope(&f.namespace).to_string()
    }

    /// Forgets compiled modules no resident function uses any more.
    fn release_modules(&self, gone: &Resident) {
        let resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        for d in &gone.digests {
            if !resident.values().any(|r| r.digests.contains(d)) {
                modules.remove(d);
            }
        }
    }

    /// Compiles the function's modules and lays out its buffers.
    fn prepare(&self, f: &FunctionDef, scope: String) -> Result<Resident, ExecError> {
        let mut modules = vec![None; f.modules.len()];
        let mut digests = Vec::new();
        let mut base = 0u64;
        for k in &f.kernels {
            if modules[k.module].is_some() {
                continue;
            }
            let m = &f.modules[k.module];
            let bytes = m
                .wasm
                .as_ref()
                .ok_or_else(|| ExecError::NoCapacity(format!("module {:?} has no wasm build", m.name)))?;
            let (module, digest) = self.compile(&m.name, bytes)?;
            let Some(ExternType::Memory(mt)) = module.get_export("memory") else {
                return Err(ExecError::ModuleLoad {
                    module: m.name.clone(),
                    message: "`memory` is not a memory".into(),
                });
            };
            if mt.is_64() || mt.is_shared() {
                return Err(ExecError::ModuleLoad {
                    module: m.name.clone(),
                    message: "`memory` must be a 32-bit, unshared memory".into(),
                });
            }
            let initial = mt.minimum().saturating_mul(PAGE);
            if initial > self.memory_margin {
                return Err(ExecError::ModuleLoad {
                    module: m.name.clone(),
                    message: format!(
                        "declares {initial} bytes of initial memory, more than the {} a module may \
                         use beside its buffers (the executor's --wasm-memory-margin-mib)",
                        self.memory_margin
                    ),
                });
            }
            base = base.max(initial);
            digests.push(digest);
            modules[k.module] = Some(module);
        }
        // The same offsets in every module's memory, after the largest initial memory.
        let mut offsets = Vec::with_capacity(f.buffers.len());
        let mut end = base.next_multiple_of(ALIGN);
        for b in &f.buffers {
            offsets.push(end);
            end = end.saturating_add(b.size).next_multiple_of(ALIGN);
        }
        if end > 4 << 30 {
            return Err(ExecError::OutOfMemory(format!("{end} bytes of buffers exceed WebAssembly's 4 GiB")));
        }
        // The module's own memory (data, stack, heap) and any growth share the margin.
        let buffers: u64 = f.buffers.iter().map(|b| b.size).sum();
        let memory_limit =
            end.max(buffers.saturating_add(self.memory_margin)).next_multiple_of(PAGE).min(4 << 30);
        Ok(Resident {
            version: f.version.clone(),
            scope,
            modules,
            digests,
            offsets,
            memory_limit,
            end,
            pool: Mutex::new(Vec::new()),
        })
    }

    fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Module, [u8; 32]), ExecError> {
        let digest = sha256(bytes);
        if let Some(m) = self.modules.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            return Ok((m.clone(), digest));
        }
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| ExecError::ModuleLoad { module: name.to_string(), message: format!("{e:#}") })?;
        if module.imports().len() > 0 {
            return Err(ExecError::ModuleLoad {
                module: name.to_string(),
                message: "kernel modules must not import anything".into(),
            });
        }
        if module.get_export("memory").is_none() {
            return Err(ExecError::ModuleLoad {
                module: name.to_string(),
                message: "module exports no `memory`".into(),
            });
        }
        self.modules.lock().unwrap_or_else(|e| e.into_inner()).insert(digest, module.clone());
        Ok((module, digest))
    }

    fn resident(&self, key: &str) -> Option<Arc<Resident>> {
        self.resident.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn new_instance_set(&self, f: &FunctionDef, r: &Resident) -> Result<InstanceSet, ExecError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(r.memory_limit as usize)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(r.modules.len().max(1))
            .build();
        let mut store = Store::new(&self.engine, limits);
        store.limiter(|l| l);
        let mut instances = Vec::with_capacity(r.modules.len());
        for (i, m) in r.modules.iter().enumerate() {
            let Some(m) = m else {
                instances.push(None);
                continue;
            };
            store.set_epoch_deadline(self.ticks());
            let inst = Instance::new(&mut store, m, &[]).map_err(|e| ExecError::ModuleLoad {
                module: f.modules[i].name.clone(),
                message: format!("instantiation failed: {e:#}"),
            })?;
            let mem = inst.get_memory(&mut store, "memory").ok_or_else(|| ExecError::ModuleLoad {
                module: f.modules[i].name.clone(),
                message: "`memory` is not a memory".into(),
            })?;
            instances.push(Some((inst, mem)));
        }
        for (_, mem) in instances.iter().flatten() {
            let have = mem.data_size(&store) as u64;
            if r.end > have {
                mem.grow(&mut store, (r.end - have).div_ceil(PAGE)).map_err(|e| {
                    ExecError::OutOfMemory(format!("growing WebAssembly memory to {} bytes: {e}", r.end))
                })?;
            }
            for (b, &off) in f.buffers.iter().zip(&r.offsets) {
                if let Some((content, _)) = &b.content {
                    mem.data_mut(&mut store)[off as usize..off as usize + content.len()]
                        .copy_from_slice(content);
                }
            }
        }
        Ok(InstanceSet { store, instances })
    }

    fn ticks(&self) -> u64 {
        (self.kernel_timeout.as_millis() as u64 * TICKS_PER_SEC / 1000).max(1)
    }
}

impl Drop for WasmBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Backend for WasmBackend {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn free_memory(&self) -> u64 {
        self.memory.free_bytes()
    }

    fn can_run(&self, f: &FunctionDef) -> bool {
        f.has_wasm()
    }

    fn is_resident(&self, f: &FunctionDef) -> bool {
        let isolation = self.isolation();
        self.resident(&f.key())
            .is_some_and(|r| r.version == f.version && r.scope == isolation.scope(&f.namespace))
    }

    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError> {
        if self.is_resident(f) {
            return Ok(());
        }
        let key = f.key();
        // Another version, or the same one in another isolation scope: its resident state
        // goes first (invocations still running keep their instances until they end).
        let old = self.resident.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        if let Some(old) = old {
            self.memory.forget_function(&key);
            self.release_modules(&old);
        }
        let scope = self.scope(f);
        let r = self.prepare(f, scope)?;
        let owner = Owner { function: key.clone(), function_quota: f.memory_quota, share: None };
        let consts: Vec<(&[u8; 32], &[u8])> =
            f.buffers.iter().filter_map(|b| b.content.as_ref().map(|(c, d)| (d, &c[..]))).collect();
        // Charged once per content and isolation scope.
        self.memory.pin_consts(&owner, &r.scope, &consts)?;
        self.memory.unpin_consts(&r.scope, &consts.iter().map(|c| c.0).collect::<Vec<_>>());
        // Instantiate once now so a broken module fails the load, not the first kernel.
        let set = match self.new_instance_set(f, &r) {
            Ok(set) => set,
            Err(e) => {
                self.memory.forget_function(&key);
                self.release_modules(&r);
                return Err(e);
            }
        };
        r.pool.lock().unwrap_or_else(|e| e.into_inner()).push(set);
        self.resident.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::new(r));
        Ok(())
    }

    fn unload(&self, key: &str) {
        let old = self.resident.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.memory.forget_function(key);
        if let Some(old) = old {
            self.release_modules(&old);
        }
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
        let r = self.resident(&f.key()).filter(|r| r.version == f.version).ok_or_else(|| {
            ExecError::Unavailable(format!("function {} is not resident on the cpu device", f.key()))
        })?;
        let alloc = self.memory.reserve(&owner, f.working_bytes())?;
        let pooled = r.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut set = match pooled {
            Some(s) => s,
            None => match self.new_instance_set(f, &r) {
                Ok(s) => s,
                Err(e) => {
                    self.memory.release(&owner, alloc);
                    return Err(e);
                }
            },
        };
        // Inputs into, outputs and temps zeroed in, the memory of the first kernel's module.
        let first = f.kernels[0].module;
        let (_, mem) = set.instances[first].expect("module of a kernel is instantiated");
        for (b, &off) in f.buffers.iter().zip(&r.offsets) {
            let range = off as usize..(off + b.size) as usize;
            match b.kind {
                BufferKind::Input => mem.data_mut(&mut set.store)[range].copy_from_slice(&inputs[&b.name]),
                BufferKind::Output | BufferKind::Temp => mem.data_mut(&mut set.store)[range].fill(0),
                BufferKind::Const => {}
            }
        }
        let pool_cap = self.info.slots.max(1) as usize;
        Ok(Box::new(WasmInvocation {
            ran: vec![None; f.modules.len()],
            f: f.clone(),
            resident: r,
            set: Some(set),
            current: first,
            pool_cap,
            checked: false,
            memory: self.memory.clone(),
            owner,
            alloc: Some(alloc),
            ticks: self.ticks(),
            timeout_ms: self.kernel_timeout.as_millis() as u64,
            failed: false,
        }))
    }
}

struct WasmInvocation {
    f: Arc<FunctionDef>,
    resident: Arc<Resident>,
    set: Option<InstanceSet>,
    current: usize,
    memory: Arc<MemoryManager<HostAllocator>>,
    owner: Owner,
    alloc: Option<Allocation>,
    ticks: u64,
    timeout_ms: u64,
    failed: bool,
    /// The last kernel that ran in each module's memory.
    ran: Vec<Option<usize>>,
    /// Instance sets the function keeps pooled at most.
    pool_cap: usize,
    /// Whether the `Const` buffers were checked after the last kernel.
    checked: bool,
}

/// The ABI's parameter types (checked at registration too, by `crate::signature`).
fn expected_params(args: &[Arg]) -> Vec<ValType> {
    crate::signature::wasm_abi(args)
        .into_iter()
        .map(|t| match t {
            wasmparser::ValType::I64 => ValType::I64,
            wasmparser::ValType::F32 => ValType::F32,
            wasmparser::ValType::F64 => ValType::F64,
            _ => ValType::I32,
        })
        .collect()
}

impl WasmInvocation {
    /// The first `Const` buffer a kernel changed, with the kernel that last ran in that
    /// memory: the invocation fails, and its instances are never reused.
    fn changed_const(&self) -> Option<(String, String)> {
        let set = self.set.as_ref()?;
        for (m, last) in self.ran.iter().enumerate() {
            let (Some(k), Some((_, mem))) = (last, set.instances[m]) else { continue };
            let data = mem.data(&set.store);
            for (b, &off) in self.f.buffers.iter().zip(&self.resident.offsets) {
                if let Some((content, _)) = &b.content
                    && data[off as usize..off as usize + content.len()] != content[..]
                {
                    return Some((b.name.clone(), self.f.kernels[*k].entry.clone()));
                }
            }
        }
        None
    }

    /// Copies the invocation's buffers from the current module's memory into `to`'s.
    fn switch_module(&mut self, to: usize) {
        let set = self.set.as_mut().expect("instance set present");
        let (_, from_mem) = set.instances[self.current].expect("instantiated");
        let (_, to_mem) = set.instances[to].expect("instantiated");
        for (b, &off) in self.f.buffers.iter().zip(&self.resident.offsets) {
            if b.kind == BufferKind::Const {
                continue;
            }
            let range = off as usize..(off + b.size) as usize;
            let bytes = from_mem.data(&set.store)[range.clone()].to_vec();
            to_mem.data_mut(&mut set.store)[range].copy_from_slice(&bytes);
        }
        self.current = to;
    }
}

impl Invocation for WasmInvocation {
    fn run_kernel(&mut self, k: usize) -> Result<Duration, ExecError> {
        let f = self.f.clone();
        let kernel = &f.kernels[k];
        if kernel.module != self.current {
            self.switch_module(kernel.module);
        }
        let set = self.set.as_mut().expect("instance set present");
        let (inst, _) = set.instances[kernel.module].expect("instantiated");
        let fault = |message: String| ExecError::KernelFault { entry: kernel.entry.clone(), message };
        let func: Func = inst.get_func(&mut set.store, &kernel.entry).ok_or_else(|| {
            fault(format!(
                "module {:?} exports no function {:?}",
                f.modules[kernel.module].name, kernel.entry
            ))
        })?;
        let want = expected_params(&kernel.args);
        let ty = func.ty(&set.store);
        let have: Vec<ValType> = ty.params().collect();
        let same = have.len() == want.len() && have.iter().zip(&want).all(|(a, b)| ValType::eq(a, b));
        if !same || ty.results().len() != 0 {
            self.failed = true;
            return Err(fault(format!("signature {ty:?} does not match the ABI's {want:?} -> ()")));
        }
        let mut params: Vec<Val> = vec![Val::I32(0); 3];
        params.extend(kernel.block.iter().map(|&d| Val::I32(d as i32)));
        let offsets = &self.resident.offsets;
        params.extend(kernel.args.iter().map(|a| match *a {
            Arg::Buffer(i) => Val::I32(offsets[i] as i32),
            Arg::I32(v) => Val::I32(v),
            Arg::U32(v) => Val::I32(v as i32),
            Arg::I64(v) => Val::I64(v),
            Arg::U64(v) => Val::I64(v as i64),
            Arg::F32(v) => Val::F32(v.to_bits()),
            Arg::F64(v) => Val::F64(v.to_bits()),
        }));
        self.ran[kernel.module] = Some(k);
        self.checked = false;
        let start = Instant::now();
        set.store.set_epoch_deadline(self.ticks);
        for bz in 0..kernel.grid[2] {
            for by in 0..kernel.grid[1] {
                for bx in 0..kernel.grid[0] {
                    params[0] = Val::I32(bx as i32);
                    params[1] = Val::I32(by as i32);
                    params[2] = Val::I32(bz as i32);
                    if let Err(e) = func.call(&mut set.store, &params, &mut []) {
                        self.failed = true;
                        return Err(match e.downcast_ref::<Trap>() {
                            Some(Trap::Interrupt) => {
                                ExecError::Timeout { entry: kernel.entry.clone(), limit_ms: self.timeout_ms }
                            }
                            Some(t) => fault(format!("trap: {t}")),
                            None => fault(format!("{e:#}")),
                        });
                    }
                }
            }
        }
        Ok(start.elapsed())
    }

    fn set_time_budget(&mut self, budget: Duration) -> bool {
        // Ticks come every millisecond: a deadline of n ticks stops a kernel after n - 1 to
        // n ms. Modules import nothing, so a stopped kernel changed only this invocation's
        // instances, which a failed invocation never returns to the pool.
        let ticks = (budget.as_millis() as u64 * TICKS_PER_SEC / 1000).max(2);
        if ticks >= self.ticks {
            return false;
        }
        self.ticks = ticks;
        true
    }

    fn finish(mut self: Box<Self>) -> Result<Outputs, ExecError> {
        if let Some((buffer, entry)) = self.changed_const() {
            self.failed = true;
            return Err(ExecError::KernelFault {
                entry,
                message: format!(
                    "wrote to Const buffer {buffer:?}, which is read-only (every invocation sees \
                     the registered contents; use a Temp buffer for scratch)"
                ),
            });
        }
        self.checked = true;
        let set = self.set.as_mut().expect("instance set present");
        let (_, mem) = set.instances[self.current].expect("instantiated");
        let mut out = Outputs::new();
        for (b, &off) in self.f.buffers.iter().zip(&self.resident.offsets) {
            if b.kind == BufferKind::Output {
                out.insert(
                    b.name.clone(),
                    mem.data(&set.store)[off as usize..(off + b.size) as usize].to_vec().into(),
                );
            }
        }
        Ok(out)
    }
}

impl Drop for WasmInvocation {
    fn drop(&mut self) {
        if let Some(alloc) = self.alloc.take() {
            self.memory.release(&self.owner, alloc);
        }
        // A set whose kernel trapped or timed out may hold a half-written state, and one
        // whose kernels changed a Const buffer would show the change to the next
        // invocation: both are dropped, not pooled. Healthy sets go back for the next
        // invocation (an invocation dropped before `finish` is checked here).
        if self.failed || (!self.checked && self.changed_const().is_some()) {
            return;
        }
        if let Some(set) = self.set.take() {
            let mut pool = self.resident.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < self.pool_cap {
                pool.push(set);
            }
        }
    }
}
