#![allow(dead_code)] // each test file uses a part
//! What the gateway tests share: a one-kernel WASM function and an in-process executor
//! over a fault-injection backend.

use std::sync::Arc;
use std::time::Duration;

use kaas_executor::backend::Backend;
use kaas_executor::backend::fault::FaultBackend;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::proto;
use kaas_executor::{Executor, ExecutorConfig};
use kaas_scheduler::SchedulerConfig;

const WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "inc") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (i32.store (local.get $out) (i32.add (i32.load (local.get $in)) (i32.const 1)))))"#;

/// `t/{name}`: adds one to a u32 (`in` → `out`), 1 ms expected, 5 s deadline.
pub fn function(name: &str) -> proto::FunctionDef {
    let buffer = |n: &str, kind: proto::BufferKind| proto::Buffer {
        name: n.into(),
        size: 4,
        kind: kind as i32,
        content: vec![],
    };
    proto::FunctionDef {
        namespace: "t".into(),
        name: name.into(),
        version: "1".into(),
        modules: vec![proto::Module { name: "m".into(), wasm: WAT.as_bytes().to_vec(), cuda: None }],
        buffers: vec![buffer("in", proto::BufferKind::Input), buffer("out", proto::BufferKind::Output)],
        kernels: vec![proto::Kernel {
            module: "m".into(),
            entry: "inc".into(),
            grid: vec![1, 1, 1],
            block: vec![1, 1, 1],
            shared_mem_bytes: 0,
            args: ["in", "out"]
                .iter()
                .map(|b| proto::Arg { value: Some(proto::arg::Value::Buffer(b.to_string())) })
                .collect(),
        }],
        deadline_ms: 5_000,
        weight: 1,
        priority: 0,
        runtime_ms: [("cpu".to_string(), 1.0)].into(),
        load_ms: Default::default(),
        memory_quota_bytes: 0,
        expected_rate: 0.0,
        class_runtime_ms: Default::default(),
        class_load_ms: Default::default(),
    }
}

/// An executor over one WASM device (one slot) of `memory` bytes behind a fault injector.
pub fn executor_over(memory: u64, scheduler: &SchedulerConfig) -> (Executor, Arc<FaultBackend>) {
    let wasm: Arc<dyn Backend> = Arc::new(WasmBackend::new(memory, 1, Duration::from_secs(10)).unwrap());
    let faults = Arc::new(FaultBackend::new(wasm));
    let ex = Executor::start(
        vec![faults.clone() as Arc<dyn Backend>],
        ExecutorConfig {
            node: "n".into(),
            scheduler: scheduler.clone(),
            shares: vec![],
            health_interval: Duration::from_millis(200),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap();
    (ex, faults)
}
