//! Kernel signatures, checked when a function is registered: each kernel's `args` against
//! the parameters its entry point declares. On a GPU, launching a kernel with arguments
//! of the wrong number or size reads garbage as pointers: an illegal-address fault that
//! poisons the CUDA context for every tenant on the device. A WebAssembly entry whose type
//! does not match fails every invocation. Both are refused up front, with the kernel and
//! the argument named.
//!
//! CUDA: the `.entry` parameter list of the module's PTX (a PTX module as given, or the
//! NVRTC output of a CUDA C module when NVRTC is present; a cubin is not checked). A
//! buffer is a 64-bit pointer; an `i32`/`u32` literal a 4-byte integer, `i64`/`u64` an
//! 8-byte one, `f32`/`f64` a float of that size. WebAssembly: the exported function's type
//! against the ABI (six `i32` block coordinates, then one value per argument).

use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, ValType, Validator};

use crate::error::ExecError;
use crate::model::{Arg, CudaFormat, FunctionDef};

/// One parameter of a PTX `.entry`: its type (without the dot) and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParam {
    /// `u64`, `f32`, `b8`, ...
    pub ty: String,
    /// Size in bytes (an array parameter `name[N]` counts N elements).
    pub bytes: u32,
}

pub use crate::nvrtc::compile_cuda_c;

/// Whether NVRTC can be loaded here (cudarc's dynamic loading would panic otherwise).
pub fn nvrtc_present() -> bool {
    crate::backend::cuda::nvrtc_present()
}

fn size_of(ty: &str) -> Option<u32> {
    Some(match ty {
        "b8" | "u8" | "s8" | "pred" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        _ => return None,
    })
}

/// The parameters of the `.entry` named `entry` in a PTX text; an error if there is none.
pub fn ptx_entry_params(ptx: &str, entry: &str) -> Result<Vec<PtxParam>, String> {
    let text: String = ptx.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut rest = text.as_str();
    while let Some(at) = rest.find(".entry") {
        rest = &rest[at + ".entry".len()..];
        let trimmed = rest.trim_start();
        let name: String =
            trimmed.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$').collect();
        if name != entry {
            continue;
        }
        let after = &trimmed[name.len()..];
        let open = after.find('(');
        let body = after.find('{');
        let list = match (open, body) {
            (Some(o), b) if b.is_none_or(|b| o < b) => {
                let close = after[o..]
                    .find(')')
                    .ok_or_else(|| format!("entry {entry}: unterminated parameter list"))?;
                &after[o + 1..o + close]
            }
            _ => "",
        };
        return list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| parse_param(entry, p))
            .collect();
    }
    Err(format!("the PTX has no .entry {entry:?}"))
}

fn parse_param(entry: &str, p: &str) -> Result<PtxParam, String> {
    let mut tokens = p.split_whitespace().peekable();
    if tokens.next() != Some(".param") {
        return Err(format!("entry {entry}: parameter {p:?} is not a .param"));
    }
    let mut ty = None;
    let mut name = "";
    while let Some(t) = tokens.next() {
        match t {
            ".align" => {
                tokens.next();
            }
            ".ptr" | ".global" | ".const" | ".local" | ".shared" => {}
            t if t.starts_with('.') => {
                if ty.is_none() && size_of(&t[1..]).is_some() {
                    ty = Some(t[1..].to_string());
                }
            }
            t => name = t,
        }
    }
    let ty = ty.ok_or_else(|| format!("entry {entry}: parameter {p:?} has no type"))?;
    let count = match (name.find('['), name.find(']')) {
        (Some(a), Some(b)) if a < b => {
            name[a + 1..b].parse::<u32>().map_err(|_| format!("entry {entry}: bad array size in {p:?}"))?
        }
        _ => 1,
    };
    let bytes = size_of(&ty).unwrap_or(0) * count;
    Ok(PtxParam { ty, bytes })
}

fn describe(a: &Arg, def: &FunctionDef) -> String {
    match a {
        Arg::Buffer(i) => format!("buffer {:?}", def.buffers.get(*i).map_or("?", |b| b.name.as_str())),
        Arg::I32(v) => format!("i32 {v}"),
        Arg::U32(v) => format!("u32 {v}"),
        Arg::I64(v) => format!("i64 {v}"),
        Arg::U64(v) => format!("u64 {v}"),
        Arg::F32(v) => format!("f32 {v}"),
        Arg::F64(v) => format!("f64 {v}"),
    }
}

/// Whether a kernel argument can be passed as this PTX parameter.
fn ptx_accepts(a: &Arg, p: &PtxParam) -> Result<(), &'static str> {
    let int = |n: u32| matches!(p.ty.as_str(), "u32" | "s32" | "b32" | "u64" | "s64" | "b64") && p.bytes == n;
    let ok = match a {
        Arg::Buffer(_) => int(8),
        Arg::I32(_) | Arg::U32(_) => int(4),
        Arg::I64(_) | Arg::U64(_) => int(8),
        Arg::F32(_) => matches!(p.ty.as_str(), "f32" | "b32") && p.bytes == 4,
        Arg::F64(_) => matches!(p.ty.as_str(), "f64" | "b64") && p.bytes == 8,
    };
    if ok {
        return Ok(());
    }
    Err(match a {
        Arg::Buffer(_) => "a 64-bit pointer",
        Arg::I32(_) | Arg::U32(_) => "a 4-byte integer",
        Arg::I64(_) | Arg::U64(_) => "an 8-byte integer",
        Arg::F32(_) => "a 4-byte float",
        Arg::F64(_) => "an 8-byte float",
    })
}

/// Checks kernel `k`'s arguments against the PTX parameters of its entry.
pub fn check_ptx_kernel(def: &FunctionDef, k: usize, params: &[PtxParam]) -> Result<(), ExecError> {
    let kernel = &def.kernels[k];
    let bad = |m: String| ExecError::BadFunction(format!("kernel {k} ({}): {m}", kernel.entry));
    if params.len() != kernel.args.len() {
        return Err(bad(format!(
            "{} arguments given, the PTX entry takes {} parameters",
            kernel.args.len(),
            params.len()
        )));
    }
    for (j, (a, p)) in kernel.args.iter().zip(params).enumerate() {
        if let Err(want) = ptx_accepts(a, p) {
            return Err(bad(format!(
                "argument {j} ({}) needs {want}, the PTX parameter {j} is .{} ({} bytes)",
                describe(a, def),
                p.ty,
                p.bytes
            )));
        }
    }
    Ok(())
}

/// The WebAssembly parameter types the ABI calls a kernel with.
pub fn wasm_abi(args: &[Arg]) -> Vec<ValType> {
    let mut v = vec![ValType::I32; 6];
    v.extend(args.iter().map(|a| match a {
        Arg::Buffer(_) | Arg::I32(_) | Arg::U32(_) => ValType::I32,
        Arg::I64(_) | Arg::U64(_) => ValType::I64,
        Arg::F32(_) => ValType::F32,
        Arg::F64(_) => ValType::F64,
    }));
    v
}

/// The parameter and result types of the function a WebAssembly module (binary or text)
/// exports as `entry`.
pub fn wasm_export_type(bytes: &[u8], entry: &str) -> Result<(Vec<ValType>, usize), String> {
    let binary = wat::parse_bytes(bytes).map_err(|e| format!("not WebAssembly: {e}"))?;
    let types = Validator::new().validate_all(&binary).map_err(|e| format!("invalid WebAssembly: {e}"))?;
    let mut index = None;
    for payload in Parser::new(0).parse_all(&binary) {
        if let Payload::ExportSection(exports) = payload.map_err(|e| e.to_string())? {
            for e in exports {
                let e = e.map_err(|e| e.to_string())?;
                if e.name == entry && e.kind == ExternalKind::Func {
                    index = Some(e.index);
                }
            }
        }
    }
    let index = index.ok_or_else(|| format!("exports no function {entry:?}"))?;
    let id = types.as_ref().core_function_at(index);
    match &types[id].composite_type.inner {
        CompositeInnerType::Func(f) => Ok((f.params().to_vec(), f.results().len())),
        _ => Err(format!("export {entry:?} is not a function")),
    }
}

/// Checks every kernel of `def` against its entry's declared parameters, on every build
/// that can be checked here. CUDA C is compiled only when NVRTC is present (`check_cuda_c`
/// and [`nvrtc_present`]); a node without it cannot load CUDA C either.
pub fn check(def: &FunctionDef, check_cuda_c: bool) -> Result<(), ExecError> {
    let mut ptx: Vec<Option<String>> = vec![None; def.modules.len()];
    for (k, kernel) in def.kernels.iter().enumerate() {
        let m = &def.modules[kernel.module];
        if let Some(wasm) = &m.wasm {
            let bad = |why: String| ExecError::BadFunction(format!("kernel {k} ({}): {why}", kernel.entry));
            let (have, results) = wasm_export_type(wasm, &kernel.entry)
                .map_err(|e| bad(format!("WebAssembly module {:?} {e}", m.name)))?;
            let want = wasm_abi(&kernel.args);
            if have != want || results != 0 {
                let at = have.iter().zip(&want).position(|(a, b)| a != b);
                let which = match at {
                    Some(j) if j >= 6 => format!(
                        "; argument {} ({}) is passed as {:?}, the entry takes {:?}",
                        j - 6,
                        describe(&kernel.args[j - 6], def),
                        want[j],
                        have[j]
                    ),
                    _ => String::new(),
                };
                return Err(bad(format!(
                    "WebAssembly entry takes {have:?} -> {results} results, the ABI calls it with {want:?} -> (){which}"
                )));
            }
        }
        let Some((format, bytes)) = &m.cuda else { continue };
        if ptx[kernel.module].is_none() {
            ptx[kernel.module] = match format {
                CudaFormat::Ptx => Some(String::from_utf8_lossy(bytes).into_owned()),
                CudaFormat::CudaC if check_cuda_c => {
                    let src = std::str::from_utf8(bytes).map_err(|e| ExecError::ModuleLoad {
                        module: m.name.clone(),
                        message: format!("CUDA C is not UTF-8: {e}"),
                    })?;
                    Some(compile_cuda_c(&m.name, src)?)
                }
                _ => None,
            };
        }
        if let Some(text) = &ptx[kernel.module] {
            let params = ptx_entry_params(text, &kernel.entry).map_err(|e| {
                ExecError::BadFunction(format!("kernel {k} ({}): module {:?}: {e}", kernel.entry, m.name))
            })?;
            check_ptx_kernel(def, k, &params)?;
        }
    }
    Ok(())
}
