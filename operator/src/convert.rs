//! From a `KernelFunction` resource to the executor's wire definition: sources resolved,
//! profiles folded per device kind.

use std::collections::BTreeMap;

use base64::Engine;
use kaas_crds::{AcceleratorClass, BufferKind, CudaFormat, DeviceKind, KernelArg, KernelFunction, Source};
use kaas_executor::proto;
use kube::ResourceExt;

/// Why a function cannot be turned into an executor definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A source could not be resolved.
    #[error("{what}: {message}")]
    Source {
        /// Which module or buffer.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The resolved content does not fit the declaration.
    #[error("{0}")]
    Invalid(String),
}

impl ConvertError {
    /// A short reason for status conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ConvertError::Source { .. } => "SourceUnavailable",
            ConvertError::Invalid(_) => "InvalidSpec",
        }
    }
}

/// Bytes of module and buffer sources, resolved before conversion (conversion is pure).
pub trait Sources {
    /// The bytes behind `source`, for the function in `namespace`; `what` names the
    /// module or buffer for error messages.
    fn bytes(&self, namespace: &str, what: &str, source: &Source) -> Result<Vec<u8>, ConvertError>;
}

/// Resolves inline sources only (standalone mode has no ConfigMaps or Secrets).
pub struct InlineOnly;

fn inline(what: &str, source: &Source) -> Option<Result<Vec<u8>, ConvertError>> {
    if let Some(text) = &source.inline {
        return Some(Ok(text.as_bytes().to_vec()));
    }
    source.inline_base64.as_ref().map(|b64| {
        let compact: String = b64.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| ConvertError::Source {
            what: what.into(),
            message: format!("inlineBase64 is not base64: {e}"),
        })
    })
}

impl Sources for InlineOnly {
    fn bytes(&self, _namespace: &str, what: &str, source: &Source) -> Result<Vec<u8>, ConvertError> {
        inline(what, source).unwrap_or_else(|| {
            Err(ConvertError::Source {
                what: what.into(),
                message: "only inline and inlineBase64 sources are available without a cluster".into(),
            })
        })
    }
}

/// The label a Secret's owner sets (to `"true"`) to consent to its use as a module or
/// weights source. Without it the operator does not read the Secret's data: an author of
/// KernelFunctions who cannot read a Secret must not get it back through a kernel.
pub const MODULE_SOURCE_LABEL: &str = "kaas.dev/module-source";

/// ConfigMap and Secret keys fetched ahead of conversion, plus verified downloads.
#[derive(Default, Clone, Debug)]
pub struct Prefetched {
    /// `(namespace, configmap, key)` → bytes.
    pub config_maps: BTreeMap<(String, String, String), Vec<u8>>,
    /// `(namespace, secret, key)` → bytes.
    pub secrets: BTreeMap<(String, String, String), Vec<u8>>,
    /// `(namespace, secret)` of Secrets that exist but do not carry
    /// [`MODULE_SOURCE_LABEL`]`: "true"`: their data was not read.
    pub unconsented_secrets: std::collections::BTreeSet<(String, String)>,
    /// URL → bytes whose sha256 matched.
    pub downloads: BTreeMap<String, Vec<u8>>,
}

impl Sources for Prefetched {
    fn bytes(&self, namespace: &str, what: &str, source: &Source) -> Result<Vec<u8>, ConvertError> {
        if let Some(r) = inline(what, source) {
            return r;
        }
        let missing = |kind: &str, name: &str, key: &str| ConvertError::Source {
            what: what.into(),
            message: format!("{kind} {namespace}/{name} has no key {key:?} (or does not exist)"),
        };
        if let Some(r) = &source.config_map_ref {
            return self
                .config_maps
                .get(&(namespace.into(), r.name.clone(), r.key.clone()))
                .cloned()
                .ok_or_else(|| missing("ConfigMap", &r.name, &r.key));
        }
        if let Some(r) = &source.secret_ref {
            if self.unconsented_secrets.contains(&(namespace.to_string(), r.name.clone())) {
                return Err(ConvertError::Source {
                    what: what.into(),
                    message: format!(
                        "Secret {namespace}/{} is not labelled {MODULE_SOURCE_LABEL}=\"true\": its owner must label it to allow its use as a source",
                        r.name
                    ),
                });
            }
            return self
                .secrets
                .get(&(namespace.into(), r.name.clone(), r.key.clone()))
                .cloned()
                .ok_or_else(|| missing("Secret", &r.name, &r.key));
        }
        if let Some(h) = &source.https {
            return self.downloads.get(&h.url).cloned().ok_or_else(|| ConvertError::Source {
                what: what.into(),
                message: format!("{} has not been downloaded (or its sha256 did not match)", h.url),
            });
        }
        Err(ConvertError::Source { what: what.into(), message: "no source set".into() })
    }
}

/// The device kind (`gpu`, `cpu`) of an accelerator class name, if the class is known.
fn kind_of(classes: &[AcceleratorClass], name: &str) -> Option<&'static str> {
    classes.iter().find(|c| c.name_any() == name).map(|c| match c.spec.kind {
        DeviceKind::Gpu => "gpu",
        DeviceKind::Cpu => "cpu",
    })
}

/// Runtime per class: as profiled, and for each class not profiled, a profiled class of
/// the same kind scaled by their `relativeSpeed` (the fastest such estimate).
fn class_runtimes(
    profile: &[kaas_crds::ProfileEntry],
    classes: &[AcceleratorClass],
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> =
        profile.iter().map(|p| (p.accelerator_class.clone(), p.runtime_ms)).collect();
    for c in classes {
        let name = c.name_any();
        if out.contains_key(&name) || c.spec.relative_speed <= 0.0 {
            continue;
        }
        let scaled = profile
            .iter()
            .filter_map(|p| {
                let pc = classes.iter().find(|x| x.name_any() == p.accelerator_class)?;
                (pc.spec.kind == c.spec.kind && pc.spec.relative_speed > 0.0)
                    .then(|| p.runtime_ms * pc.spec.relative_speed / c.spec.relative_speed)
            })
            .min_by(f64::total_cmp);
        if let Some(r) = scaled {
            out.insert(name, r);
        }
    }
    out
}

/// The executor definition of a function. `version` changes with the resource.
pub fn function_def(
    kf: &KernelFunction,
    sources: &dyn Sources,
    classes: &[AcceleratorClass],
) -> Result<proto::FunctionDef, ConvertError> {
    let ns = kf.namespace().unwrap_or_else(|| "default".into());
    let spec = &kf.spec;
    let mut modules = Vec::new();
    for m in &spec.modules {
        let wasm = match &m.wasm {
            Some(src) => sources.bytes(&ns, &format!("module {} (wasm)", m.name), src)?,
            None => Vec::new(),
        };
        let cuda = match &m.cuda {
            Some(c) => Some(proto::CudaModule {
                format: match c.format {
                    CudaFormat::Ptx => proto::CudaFormat::Ptx,
                    CudaFormat::Cubin => proto::CudaFormat::Cubin,
                    CudaFormat::CudaC => proto::CudaFormat::CudaC,
                } as i32,
                source: sources.bytes(&ns, &format!("module {} (cuda)", m.name), &c.source)?,
            }),
            None => None,
        };
        modules.push(proto::Module { name: m.name.clone(), wasm, cuda });
    }
    let mut buffers = Vec::new();
    for b in &spec.buffers {
        let content = match (&b.kind, &b.source) {
            (BufferKind::Const, Some(src)) => {
                let bytes = sources.bytes(&ns, &format!("buffer {}", b.name), src)?;
                if bytes.len() as u64 != b.size {
                    return Err(ConvertError::Invalid(format!(
                        "const buffer {} declares {} bytes, its source has {}",
                        b.name,
                        b.size,
                        bytes.len()
                    )));
                }
                bytes
            }
            _ => Vec::new(),
        };
        let kind = match b.kind {
            BufferKind::Input => proto::BufferKind::Input,
            BufferKind::Output => proto::BufferKind::Output,
            BufferKind::Temp => proto::BufferKind::Temp,
            BufferKind::Const => proto::BufferKind::Const,
        };
        buffers.push(proto::Buffer { name: b.name.clone(), size: b.size, kind: kind as i32, content });
    }
    let kernels = spec
        .kernels
        .iter()
        .map(|k| proto::Kernel {
            module: k.module.clone(),
            entry: k.entry.clone(),
            grid: k.grid.to_vec(),
            block: k.block.to_vec(),
            shared_mem_bytes: k.shared_mem_bytes,
            args: k.args.iter().map(arg).collect(),
        })
        .collect();
    let mut runtime_ms = BTreeMap::new();
    let mut load_ms = BTreeMap::new();
    // Per class as profiled (nodes that report their class use these), and per kind the
    // fastest profiled class (for nodes that do not).
    let class_runtime_ms = class_runtimes(&spec.profile, classes);
    let class_load_ms =
        spec.profile.iter().filter_map(|p| Some((p.accelerator_class.clone(), p.load_ms?))).collect();
    for p in &spec.profile {
        let Some(kind) = kind_of(classes, &p.accelerator_class) else { continue };
        let r = runtime_ms.entry(kind.to_string()).or_insert(p.runtime_ms);
        *r = f64::min(*r, p.runtime_ms);
        if let Some(l) = p.load_ms {
            let e = load_ms.entry(kind.to_string()).or_insert(l);
            *e = f64::min(*e, l);
        }
    }
    let def = proto::FunctionDef {
        namespace: ns,
        name: kf.name_any(),
        // Filled below, from what the definition resolved to.
        version: String::new(),
        modules,
        buffers,
        kernels,
        deadline_ms: spec.slo.deadline_ms,
        weight: spec.slo.weight,
        priority: spec.slo.priority,
        runtime_ms: runtime_ms.into_iter().collect(),
        load_ms: load_ms.into_iter().collect(),
        memory_quota_bytes: 0,
        expected_rate: spec.expected_rate.unwrap_or(0.0),
        class_runtime_ms: class_runtime_ms.into_iter().collect(),
        class_load_ms,
    };
    let mut def = def;
    def.version = version(kf, &def);
    check_signatures(&def)?;
    Ok(def)
}

/// A function's version: the resource's generation (any spec edit), its UID (a deleted
/// and re-created function never matches what executors still hold of the old one), and
/// a hash of what its sources resolved to (an edited ConfigMap or Secret changes the
/// version although the resource did not). Deterministic: maps are left out of the hash
/// (their encoding order is not fixed) and covered by the generation.
fn version(kf: &KernelFunction, def: &proto::FunctionDef) -> String {
    use prost::Message;
    let mut h = Fnv::default();
    for m in &def.modules {
        h.write(&m.encode_to_vec());
    }
    for b in &def.buffers {
        h.write(&b.encode_to_vec());
    }
    for k in &def.kernels {
        h.write(&k.encode_to_vec());
    }
    h.write(kf.metadata.uid.as_deref().unwrap_or_default().as_bytes());
    let generation = kf.metadata.generation.map_or_else(|| version_of(kf), |g| g.to_string());
    format!("{generation}-{:016x}", h.0)
}

/// FNV-1a, 64 bits: a version tag, not a security boundary (sources with a digest are
/// checked against it when fetched).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Refuses kernels whose `args` do not match their entry points (a PTX module's `.entry`
/// parameters, a WebAssembly export's type, and CUDA C's NVRTC output where NVRTC is
/// installed): on a GPU such a launch is an illegal-address fault that poisons the
/// device's context for every tenant.
fn check_signatures(def: &proto::FunctionDef) -> Result<(), ConvertError> {
    let parsed = kaas_executor::model::FunctionDef::try_from(def.clone())
        .map_err(|e| ConvertError::Invalid(e.to_string()))?;
    kaas_executor::signature::check(&parsed, kaas_executor::signature::nvrtc_present())
        .map_err(|e| ConvertError::Invalid(e.to_string()))
}

/// A content version for resources without a generation (standalone files).
fn version_of(kf: &KernelFunction) -> String {
    let json = serde_json::to_vec(&kf.spec).unwrap_or_default();
    let h = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

fn arg(a: &KernelArg) -> proto::Arg {
    use proto::arg::Value;
    let value = if let Some(b) = &a.buffer {
        Value::Buffer(b.clone())
    } else if let Some(v) = a.i32 {
        Value::I32(v)
    } else if let Some(v) = a.u32 {
        Value::U32(v)
    } else if let Some(v) = a.i64 {
        Value::I64(v)
    } else if let Some(v) = a.u64 {
        Value::U64(v)
    } else if let Some(v) = a.f32 {
        Value::F32(v)
    } else {
        Value::F64(a.f64.unwrap_or_default())
    };
    proto::Arg { value: Some(value) }
}
