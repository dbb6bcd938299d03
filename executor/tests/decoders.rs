//! Issue 16, point 7: the executor's decoders of untrusted input never panic. Any bytes
//! as a `FunctionDef` or an `ExecuteRequest` from the wire, and any structured definition
//! (absurd sizes, dimensions, references), end in a value or a clear error.

use kaas_executor::model::FunctionDef;
use kaas_executor::proto;
use proptest::prelude::*;
use prost::Message;

fn buffer() -> impl Strategy<Value = proto::Buffer> {
    ("[a-c]{0,2}", any::<u64>(), -1i32..6, prop::collection::vec(any::<u8>(), 0..8))
        .prop_map(|(name, size, kind, content)| proto::Buffer { name, size, kind, content })
}

fn kernel() -> impl Strategy<Value = proto::Kernel> {
    let dims = prop::collection::vec(any::<u32>(), 0..5);
    let arg = prop_oneof![
        "[a-c]{0,2}".prop_map(proto::arg::Value::Buffer),
        any::<i32>().prop_map(proto::arg::Value::I32),
        any::<u64>().prop_map(proto::arg::Value::U64),
        any::<f64>().prop_map(proto::arg::Value::F64),
    ];
    (
        "[mn]{0,1}",
        "[a-z]{0,4}",
        dims.clone(),
        dims,
        any::<u32>(),
        prop::collection::vec(prop::option::of(arg), 0..4),
    )
        .prop_map(|(module, entry, grid, block, shared_mem_bytes, args)| proto::Kernel {
            module,
            entry,
            grid,
            block,
            shared_mem_bytes,
            args: args.into_iter().map(|value| proto::Arg { value }).collect(),
        })
}

fn module() -> impl Strategy<Value = proto::Module> {
    (
        "[mn]{0,1}",
        prop::collection::vec(any::<u8>(), 0..16),
        prop::option::of((-1i32..5, prop::collection::vec(any::<u8>(), 0..16))),
    )
        .prop_map(|(name, wasm, cuda)| proto::Module {
            name,
            wasm,
            cuda: cuda.map(|(format, source)| proto::CudaModule { format, source }),
        })
}

fn definition() -> impl Strategy<Value = proto::FunctionDef> {
    (
        "[a-z]{0,3}",
        "[a-z]{0,3}",
        prop::collection::vec(module(), 0..3),
        prop::collection::vec(buffer(), 0..4),
        prop::collection::vec(kernel(), 0..3),
        any::<u32>(),
        any::<f64>(),
        any::<u64>(),
    )
        .prop_map(|(namespace, name, modules, buffers, kernels, deadline_ms, runtime, quota)| {
            proto::FunctionDef {
                namespace,
                name,
                version: "1".into(),
                modules,
                buffers,
                kernels,
                deadline_ms,
                weight: 1,
                priority: 0,
                runtime_ms: [("cpu".to_string(), runtime)].into(),
                load_ms: Default::default(),
                memory_quota_bytes: quota,
                expected_rate: runtime,
                class_runtime_ms: Default::default(),
                class_load_ms: Default::default(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_decode_to_a_definition_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(def) = proto::FunctionDef::decode(bytes.as_slice()) {
            let _ = FunctionDef::try_from(def);
        }
        let _ = proto::ExecuteRequest::decode(bytes.as_slice());
        let _ = proto::PolicyUpdate::decode(bytes.as_slice())
            .map(|p| serde_json::from_str::<kaas_scheduler::SchedulerConfig>(&p.config_json));
    }

    #[test]
    fn any_definition_is_accepted_or_refused_with_a_reason(def in definition()) {
        match FunctionDef::try_from(def) {
            // What it accepts is consistent: every reference resolves, no buffer is empty.
            Ok(f) => {
                prop_assert!(f.buffers.iter().all(|b| b.size > 0));
                for k in &f.kernels {
                    prop_assert!(k.module < f.modules.len());
                    prop_assert!(k.grid.iter().chain(&k.block).all(|d| *d > 0));
                    for a in &k.args {
                        if let kaas_executor::model::Arg::Buffer(i) = a {
                            prop_assert!(*i < f.buffers.len());
                        }
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty(), "an error says why"),
        }
    }

    #[test]
    fn any_policy_text_is_a_config_or_an_error(text in "\\PC{0,200}") {
        let _ = serde_json::from_str::<kaas_scheduler::SchedulerConfig>(&text);
    }
}
