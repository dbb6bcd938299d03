//! Helpers for executor tests: example functions from examples/functions, small WAT
//! kernels, and an in-process executor over the WebAssembly backend.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kaas_executor::backend::Backend;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto;
use kaas_executor::{Executor, ExecutorConfig, Share};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

/// A CPU device of `memory` bytes with `slots` slots and a 300 ms kernel limit.
pub fn cpu(memory: u64, slots: u32) -> Arc<dyn Backend> {
    Arc::new(WasmBackend::new(memory, slots, Duration::from_millis(300)).unwrap())
}

/// An executor over one CPU device with the given policy and shares.
pub fn executor(memory: u64, slots: u32, policy: &str, shares: Vec<Share>) -> Executor {
    Executor::start(
        vec![cpu(memory, slots)],
        ExecutorConfig {
            node: "test-node".into(),
            scheduler: SchedulerConfig::new(PolicyConfig::named(policy)),
            shares,
            health_interval: Duration::from_millis(200),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap()
}

/// Reads an example KernelFunction into the executor's wire form (inline sources only).
pub fn example(name: &str) -> proto::FunctionDef {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/functions").join(format!("{name}.yaml"));
    manifest(&path, None)
}

/// A KernelFunction manifest as the operator sends it, with `wasm` standing in for every
/// module's WebAssembly build when given (what resolving a ConfigMap reference yields).
pub fn manifest(path: &Path, wasm: Option<&[u8]>) -> proto::FunctionDef {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &doc["spec"];
    let text = |v: &serde_yaml_ng::Value| v["inline"].as_str().unwrap().as_bytes().to_vec();
    let modules = spec["modules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| proto::Module {
            name: m["name"].as_str().unwrap().into(),
            wasm: wasm.map_or_else(|| text(&m["wasm"]), <[u8]>::to_vec),
            cuda: Some(proto::CudaModule {
                format: proto::CudaFormat::CudaC as i32,
                source: text(&m["cuda"]["source"]),
            }),
        })
        .collect();
    let buffers = spec["buffers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|b| {
            let kind = match b["kind"].as_str().unwrap() {
                "Input" => proto::BufferKind::Input,
                "Output" => proto::BufferKind::Output,
                "Temp" => proto::BufferKind::Temp,
                _ => proto::BufferKind::Const,
            };
            let content = b["source"]["inlineBase64"]
                .as_str()
                .map(|s| base64_decode(&s.split_whitespace().collect::<String>()))
                .unwrap_or_default();
            proto::Buffer {
                name: b["name"].as_str().unwrap().into(),
                size: b["size"].as_u64().unwrap(),
                kind: kind as i32,
                content,
            }
        })
        .collect();
    let kernels = spec["kernels"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            let dims = |v: &serde_yaml_ng::Value| {
                v.as_sequence().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
            };
            let args = k["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| {
                    use proto::arg::Value;
                    let v = if let Some(b) = a["buffer"].as_str() {
                        Value::Buffer(b.into())
                    } else if let Some(v) = a["u32"].as_u64() {
                        Value::U32(v as u32)
                    } else if let Some(v) = a["f32"].as_f64() {
                        Value::F32(v as f32)
                    } else {
                        panic!("unsupported argument {a:?}")
                    };
                    proto::Arg { value: Some(v) }
                })
                .collect();
            proto::Kernel {
                module: k["module"].as_str().unwrap().into(),
                entry: k["entry"].as_str().unwrap().into(),
                grid: dims(&k["grid"]),
                block: dims(&k["block"]),
                shared_mem_bytes: 0,
                args,
            }
        })
        .collect();
    proto::FunctionDef {
        namespace: doc["metadata"]["namespace"].as_str().unwrap_or("default").into(),
        name: doc["metadata"]["name"].as_str().unwrap().into(),
        version: "1".into(),
        modules,
        buffers,
        kernels,
        deadline_ms: spec["slo"]["deadlineMs"].as_u64().unwrap() as u32 * 100,
        weight: 1,
        priority: 0,
        runtime_ms: Default::default(),
        load_ms: Default::default(),
        memory_quota_bytes: 0,
        expected_rate: 0.0,
        class_runtime_ms: Default::default(),
        class_load_ms: Default::default(),
    }
}

/// Standard base64 decoding (test helper; the product uses the base64 crate).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= table(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// f32 little-endian bytes.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Parses f32 little-endian bytes.
pub fn from_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A one-module function of WAT kernels: `kernels` are (entry, grid x, args as buffer
/// names), buffers are (name, size, kind).
pub fn wat_function(
    name: &str,
    wat: &str,
    buffers: &[(&str, u64, proto::BufferKind)],
    kernels: &[(&str, u32, &[&str])],
) -> proto::FunctionDef {
    proto::FunctionDef {
        namespace: "t".into(),
        name: name.into(),
        version: "1".into(),
        modules: vec![proto::Module { name: "m".into(), wasm: wat.as_bytes().to_vec(), cuda: None }],
        buffers: buffers
            .iter()
            .map(|(n, s, k)| proto::Buffer {
                name: n.to_string(),
                size: *s,
                kind: *k as i32,
                content: if *k == proto::BufferKind::Const { vec![7u8; *s as usize] } else { vec![] },
            })
            .collect(),
        kernels: kernels
            .iter()
            .map(|(entry, grid, args)| proto::Kernel {
                module: "m".into(),
                entry: entry.to_string(),
                grid: vec![*grid, 1, 1],
                block: vec![1, 1, 1],
                shared_mem_bytes: 0,
                args: args
                    .iter()
                    .map(|a| proto::Arg { value: Some(proto::arg::Value::Buffer(a.to_string())) })
                    .collect(),
            })
            .collect(),
        deadline_ms: 10_000,
        weight: 1,
        priority: 0,
        runtime_ms: Default::default(),
        load_ms: Default::default(),
        memory_quota_bytes: 0,
        expected_rate: 0.0,
        class_runtime_ms: Default::default(),
        class_load_ms: Default::default(),
    }
}

/// The WAT of a module whose `copy` kernel copies 4 bytes per block from `in` to `out`,
/// `spin` burns `n` iterations per block, `trap` hits `unreachable`, `forever` never ends.
pub const TEST_KERNELS: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "copy") (param $bx i32) (param i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (i32.store (i32.add (local.get $out) (i32.shl (local.get $bx) (i32.const 2)))
      (i32.load (i32.add (local.get $in) (i32.shl (local.get $bx) (i32.const 2))))))
  (func (export "spin") (param i32 i32 i32 i32 i32 i32) (param $buf i32)
    (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const 20000000)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))
  (func (export "trap") (param i32 i32 i32 i32 i32 i32) (param i32)
    unreachable)
  (func (export "forever") (param i32 i32 i32 i32 i32 i32) (param i32)
    (loop $l (br $l))))
"#;

/// Inputs map.
pub fn inputs(pairs: &[(&str, Vec<u8>)]) -> kaas_executor::backend::Outputs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect()
}

/// Converts a wire definition.
pub fn def(p: proto::FunctionDef) -> FunctionDef {
    FunctionDef::try_from(p).unwrap()
}
