//! The executor's view of a kernel function, checked once when it is registered.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::ExecError;
use crate::proto;

/// Form of a CUDA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaFormat {
    /// PTX text.
    Ptx,
    /// A cubin image.
    Cubin,
    /// CUDA C source, compiled with NVRTC.
    CudaC,
}

/// A code module with its builds.
#[derive(Clone, Debug)]
pub struct Module {
    /// Name kernels refer to.
    pub name: String,
    /// WebAssembly binary or text.
    pub wasm: Option<Arc<[u8]>>,
    /// CUDA build.
    pub cuda: Option<(CudaFormat, Arc<[u8]>)>,
}

/// Role of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Written by the caller.
    Input,
    /// Returned to the caller.
    Output,
    /// Scratch, zeroed per invocation.
    Temp,
    /// Resident constant data.
    Const,
}

/// A buffer of the graph.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Role.
    pub kind: BufferKind,
    /// Content and its sha256 for `Const` buffers.
    pub content: Option<(Arc<[u8]>, [u8; 32])>,
}

/// A kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// Index into [`FunctionDef::buffers`].
    Buffer(usize),
    /// 32-bit signed.
    I32(i32),
    /// 32-bit unsigned.
    U32(u32),
    /// 64-bit signed.
    I64(i64),
    /// 64-bit unsigned.
    U64(u64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
}

/// One kernel launch.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Index into [`FunctionDef::modules`].
    pub module: usize,
    /// Entry point.
    pub entry: String,
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Dynamic shared memory.
    pub shared_mem_bytes: u32,
    /// Arguments.
    pub args: Vec<Arg>,
}

/// The most bytes a function's buffers may total.
pub const MAX_BUFFER_BYTES: u64 = 1 << 40;
/// The most bytes one module build (WebAssembly binary, PTX, cubin or CUDA C) may have.
pub const MAX_MODULE_BYTES: usize = 256 << 20;
/// The most dynamic shared memory a kernel may ask for per block: 227 KiB, the largest
/// any current NVIDIA GPU grants (Hopper); the device's own limit is checked when the
/// kernel is launched.
pub const MAX_SHARED_MEM_BYTES: u32 = 227 << 10;

/// A registered function.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Version of the definition.
    pub version: String,
    /// Modules.
    pub modules: Vec<Module>,
    /// Buffers.
    pub buffers: Vec<Buffer>,
    /// Kernels in launch order.
    pub kernels: Vec<Kernel>,
    /// Relative deadline in ms.
    pub deadline_ms: u32,
    /// Fair-share weight.
    pub weight: u32,
    /// Priority.
    pub priority: i32,
    /// Expected runtime per device kind, ms.
    pub runtime_ms: BTreeMap<String, f64>,
    /// Expected cold start per device kind, ms.
    pub load_ms: BTreeMap<String, f64>,
    /// Expected runtime per AcceleratorClass, ms (wins over the kind's where known).
    pub class_runtime_ms: BTreeMap<String, f64>,
    /// Expected cold start per AcceleratorClass, ms.
    pub class_load_ms: BTreeMap<String, f64>,
    /// Memory quota in bytes (0 = none).
    pub memory_quota: u64,
}

impl FunctionDef {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether every kernel's module has a WebAssembly build.
    pub fn has_wasm(&self) -> bool {
        self.kernels.iter().all(|k| self.modules[k.module].wasm.is_some())
    }

    /// Whether every kernel's module has a CUDA build.
    pub fn has_cuda(&self) -> bool {
        self.kernels.iter().all(|k| self.modules[k.module].cuda.is_some())
    }

    /// Bytes of resident state: const buffers.
    pub fn const_bytes(&self) -> u64 {
        self.buffers.iter().filter(|b| b.kind == BufferKind::Const).map(|b| b.size).sum()
    }

    /// Bytes of one invocation's buffers (inputs, outputs, temps).
    pub fn working_bytes(&self) -> u64 {
        self.buffers.iter().filter(|b| b.kind != BufferKind::Const).map(|b| b.size).sum()
    }

    /// Checks an invocation's inputs: every input buffer present with its exact size, no
    /// unknown names.
    pub fn check_inputs(&self, inputs: &crate::backend::Outputs) -> Result<(), ExecError> {
        check_inputs(
            self.buffers.iter().map(|b| (b.name.as_str(), b.kind == BufferKind::Input, b.size)),
            inputs,
        )
        .map_err(ExecError::BadInput)
    }
}

/// Lower-case hex sha256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn bad(msg: String) -> ExecError {
    ExecError::BadFunction(msg)
}

impl TryFrom<proto::FunctionDef> for FunctionDef {
    type Error = ExecError;

    fn try_from(p: proto::FunctionDef) -> Result<Self, ExecError> {
        if p.namespace.is_empty() || p.name.is_empty() {
            return Err(bad("namespace and name are required".into()));
        }
        let mut modules = Vec::new();
        for m in p.modules {
            if modules.iter().any(|x: &Module| x.name == m.name) {
                return Err(bad(format!("duplicate module {:?}", m.name)));
            }
            let cuda = match m.cuda {
                None => None,
                Some(c) => {
                    let format = match proto::CudaFormat::try_from(c.format) {
                        Ok(proto::CudaFormat::Ptx) => CudaFormat::Ptx,
                        Ok(proto::CudaFormat::Cubin) => CudaFormat::Cubin,
                        Ok(proto::CudaFormat::CudaC) => CudaFormat::CudaC,
                        _ => return Err(bad(format!("module {:?}: CUDA format unspecified", m.name))),
                    };
                    Some((format, Arc::<[u8]>::from(c.source)))
                }
            };
            let too_big = |what: &str, n: usize| {
                bad(format!(
                    "module {:?}: its {what} build has {n} bytes, more than the {MAX_MODULE_BYTES} (256 MiB) a module may have",
                    m.name
                ))
            };
            if m.wasm.len() > MAX_MODULE_BYTES {
                return Err(too_big("wasm", m.wasm.len()));
            }
            if let Some((_, src)) = &cuda
                && src.len() > MAX_MODULE_BYTES
            {
                return Err(too_big("cuda", src.len()));
            }
            let wasm = (!m.wasm.is_empty()).then(|| Arc::from(m.wasm));
            if wasm.is_none() && cuda.is_none() {
                return Err(bad(format!("module {:?} has neither a wasm nor a cuda build", m.name)));
            }
            modules.push(Module { name: m.name, wasm, cuda });
        }
        let mut buffers: Vec<Buffer> = Vec::new();
        for b in p.buffers {
            if buffers.iter().any(|x| x.name == b.name) {
                return Err(bad(format!("duplicate buffer {:?}", b.name)));
            }
            if b.size == 0 {
                return Err(bad(format!("buffer {:?} has size 0", b.name)));
            }
            let kind = match proto::BufferKind::try_from(b.kind) {
                Ok(proto::BufferKind::Input) => BufferKind::Input,
                Ok(proto::BufferKind::Output) => BufferKind::Output,
                Ok(proto::BufferKind::Temp) => BufferKind::Temp,
                Ok(proto::BufferKind::Const) => BufferKind::Const,
                _ => return Err(bad(format!("buffer {:?}: kind unspecified", b.name))),
            };
            let content = if kind == BufferKind::Const {
                if b.content.len() as u64 != b.size {
                    return Err(bad(format!(
                        "const buffer {:?} has {} bytes of content, declares {}",
                        b.name,
                        b.content.len(),
                        b.size
                    )));
                }
                let digest = sha256(&b.content);
                Some((Arc::from(b.content), digest))
            } else {
                None
            };
            buffers.push(Buffer { name: b.name, size: b.size, kind, content });
        }
        // Every size sum downstream (working set, layouts, quotas) stays far from overflow.
        let total =
            buffers.iter().try_fold(0u64, |t, b| t.checked_add(b.size).filter(|&t| t <= MAX_BUFFER_BYTES));
        if total.is_none() {
            return Err(bad(format!(
                "buffers total more than {MAX_BUFFER_BYTES} bytes (1 TiB), more than any device holds"
            )));
        }
        let mut kernels = Vec::new();
        for (i, k) in p.kernels.into_iter().enumerate() {
            let module = modules
                .iter()
                .position(|m| m.name == k.module)
                .ok_or_else(|| bad(format!("kernel {i} names unknown module {:?}", k.module)))?;
            let dims = |v: &[u32], what: &str| -> Result<[u32; 3], ExecError> {
                match v {
                    [x, y, z] if *x > 0 && *y > 0 && *z > 0 => Ok([*x, *y, *z]),
                    _ => Err(bad(format!("kernel {i}: {what} needs three positive dimensions, got {v:?}"))),
                }
            };
            let grid = dims(&k.grid, "grid")?;
            let block = dims(&k.block, "block")?;
            if block[0] > 1024 || block[1] > 1024 || block[2] > 64 || block.iter().product::<u32>() > 1024 {
                return Err(bad(format!("kernel {i}: block {block:?} exceeds CUDA limits")));
            }
            if grid[0] > i32::MAX as u32 || grid[1] > 65_535 || grid[2] > 65_535 {
                return Err(bad(format!(
                    "kernel {i}: grid {grid:?} exceeds CUDA limits (x < 2^31, y and z at most 65535)"
                )));
            }
            if k.shared_mem_bytes > MAX_SHARED_MEM_BYTES {
                return Err(bad(format!(
                    "kernel {i}: {} bytes of dynamic shared memory per block, more than any GPU grants ({MAX_SHARED_MEM_BYTES})",
                    k.shared_mem_bytes
                )));
            }
            let mut args = Vec::new();
            for a in k.args {
                use proto::arg::Value;
                args.push(match a.value {
                    Some(Value::Buffer(name)) => {
                        Arg::Buffer(buffers.iter().position(|b| b.name == name).ok_or_else(|| {
                            bad(format!("kernel {i} argument names unknown buffer {name:?}"))
                        })?)
                    }
                    Some(Value::I32(v)) => Arg::I32(v),
                    Some(Value::U32(v)) => Arg::U32(v),
                    Some(Value::I64(v)) => Arg::I64(v),
                    Some(Value::U64(v)) => Arg::U64(v),
                    Some(Value::F32(v)) => Arg::F32(v),
                    Some(Value::F64(v)) => Arg::F64(v),
                    None => return Err(bad(format!("kernel {i} has an empty argument"))),
                });
            }
            kernels.push(Kernel {
                module,
                entry: k.entry,
                grid,
                block,
                shared_mem_bytes: k.shared_mem_bytes,
                args,
            });
        }
        if kernels.is_empty() {
            return Err(bad("a function needs at least one kernel".into()));
        }
        Ok(FunctionDef {
            namespace: p.namespace,
            name: p.name,
            version: p.version,
            modules,
            buffers,
            kernels,
            deadline_ms: if p.deadline_ms == 0 { 1000 } else { p.deadline_ms },
            weight: p.weight.max(1),
            priority: p.priority,
            runtime_ms: p.runtime_ms.into_iter().collect(),
            load_ms: p.load_ms.into_iter().collect(),
            class_runtime_ms: p.class_runtime_ms.into_iter().collect(),
            class_load_ms: p.class_load_ms.into_iter().collect(),
            memory_quota: p.memory_quota_bytes,
        })
    }
}

/// Checks inputs against declared buffers `(name, is input, size)`: every input buffer
/// present with its exact size, no unknown names. Shared by the executor and by the
/// gateway, which checks before a request is queued.
pub fn check_inputs<'a>(
    buffers: impl IntoIterator<Item = (&'a str, bool, u64)>,
    inputs: &BTreeMap<String, impl AsRef<[u8]>>,
) -> Result<(), String> {
    let buffers: Vec<(&str, bool, u64)> = buffers.into_iter().collect();
    let input_names = || buffers.iter().filter(|b| b.1).map(|b| b.0).collect::<Vec<_>>().join(", ");
    for name in inputs.keys() {
        match buffers.iter().find(|b| b.0 == name) {
            None => return Err(format!("no buffer named {name:?} (inputs: {})", input_names())),
            Some(b) if !b.1 => return Err(format!("buffer {name:?} is not an Input")),
            Some(_) => {}
        }
    }
    for &(name, _, size) in buffers.iter().filter(|b| b.1) {
        match inputs.get(name) {
            None => return Err(format!("missing input {name:?} ({size} bytes)")),
            Some(v) if v.as_ref().len() as u64 != size => {
                let n = v.as_ref().len();
                return Err(format!("input {name:?} has {n} bytes, the function declares {size}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
