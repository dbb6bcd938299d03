//! Tenant isolation on the CPU device (issue 16, point 4): `Const` buffers are read-only
//! for kernels, linear memory is bounded, and the `isolation` setting decides whether
//! namespaces share const storage. The CUDA side (per-namespace contexts) is in the
//! gated `cuda` tests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kaas_executor::backend::wasm::WasmBackend;
use kaas_executor::backend::{Backend, Isolation};
use kaas_executor::error::ExecError;
use kaas_executor::proto::BufferKind::{Const, Input, Output};
use kaas_executor::{Executor, ExecutorConfig};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

/// `peek`: out = w[0]; then, if flag[0] != 0, w[0] = 0xdead (a kernel scribbling over
/// its weights). `grow`: out = memory.grow(pages[0]).
const KERNELS: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "peek") (param i32 i32 i32 i32 i32 i32) (param $w i32) (param $flag i32) (param $out i32)
    (i32.store (local.get $out) (i32.load (local.get $w)))
    (if (i32.load (local.get $flag))
      (then (i32.store (local.get $w) (i32.const 0xdead)))))
  (func (export "grow") (param i32 i32 i32 i32 i32 i32) (param $pages i32) (param $out i32)
    (i32.store (local.get $out) (memory.grow (i32.load (local.get $pages))))))
"#;

/// `NAMESPACE/f`: the `peek` kernel over a Const `w` of `weights` bytes (all 7s).
fn peek(namespace: &str, weights: u64) -> kaas_executor::proto::FunctionDef {
    let buffers = [("w", weights, Const), ("flag", 4, Input), ("out", 4, Output)];
    let mut f = wat_function("f", KERNELS, &buffers, &[("peek", 1, &["w", "flag", "out"])]);
    f.namespace = namespace.into();
    f
}

fn executor(device: Arc<dyn Backend>) -> Executor {
    Executor::start(
        vec![device],
        ExecutorConfig {
            node: "node".into(),
            scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
            shares: vec![],
            health_interval: Duration::from_millis(200),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap()
}

fn word(r: &kaas_executor::Executed) -> i32 {
    i32::from_le_bytes(r.outputs["out"][..4].try_into().unwrap())
}

/// A kernel that writes its Const buffer fails its invocation with a clear error, and
/// the next invocation (same function, same pooled instance otherwise) reads the
/// registered contents, not the scribble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_cannot_change_a_const_buffer_another_invocation_sees() {
    let ex = executor(cpu(64 << 20, 1));
    ex.put_function(def(peek("t", 4))).await.unwrap();
    let flag = |v: u32| inputs(&[("flag", v.to_le_bytes().to_vec())]);
    let registered = 0x0707_0707;
    let r = ex.execute("t/f", flag(0), None, None).await.unwrap();
    assert_eq!(word(&r), registered);
    for _ in 0..3 {
        let e = ex.execute("t/f", flag(1), None, None).await.unwrap_err();
        println!("scribbling kernel: {e}");
        assert!(
            matches!(&e, ExecError::KernelFault { entry, message }
                if entry == "peek" && message.contains("Const buffer \"w\"") && message.contains("read-only")),
            "{e:?}"
        );
        let r = ex.execute("t/f", flag(0), None, None).await.unwrap();
        assert_eq!(word(&r), registered, "an invocation saw another's write to a Const buffer");
    }
}

/// Linear memory is bounded by the buffers plus the margin: growth within it works,
/// beyond it `memory.grow` returns -1 (and the executor goes on serving); a module
/// declaring more initial memory than the margin fails to load, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_memory_stops_at_the_buffers_plus_the_margin() {
    let device = WasmBackend::new(256 << 20, 1, Duration::from_secs(2)).unwrap().with_memory_margin(1 << 20);
    let ex = executor(Arc::new(device));
    let f = wat_function(
        "grow",
        KERNELS,
        &[("pages", 4, Input), ("out", 4, Output)],
        &[("grow", 1, &["pages", "out"])],
    );
    ex.put_function(def(f)).await.unwrap();
    let pages = |n: u32| inputs(&[("pages", n.to_le_bytes().to_vec())]);
    // One initial page and the two buffers; the 1 MiB margin holds 16 pages in all.
    let r = ex.execute("t/grow", pages(8), None, None).await.unwrap();
    assert!(word(&r) >= 1, "growth within the margin works, got {}", word(&r));
    let r = ex.execute("t/grow", pages(1024), None, None).await.unwrap();
    assert_eq!(word(&r), -1, "64 MiB more than the margin allows");
    let r = ex.execute("t/grow", pages(4), None, None).await.unwrap();
    assert!(word(&r) >= 9, "still serving, memory intact: {}", word(&r));
    let r = ex.execute("t/grow", pages(16), None, None).await.unwrap();
    assert_eq!(word(&r), -1, "the limit holds across pooled invocations");

    let big = KERNELS.replace("(memory (export \"memory\") 1)", "(memory (export \"memory\") 64)");
    let f = wat_function(
        "big",
        &big,
        &[("pages", 4, Input), ("out", 4, Output)],
        &[("grow", 1, &["pages", "out"])],
    );
    ex.put_function(def(f)).await.unwrap();
    let e = ex.execute("t/big", pages(0), None, None).await.unwrap_err();
    println!("4 MiB of initial memory with a 1 MiB margin: {e}");
    assert!(
        e.to_string().contains("initial memory") && e.to_string().contains("--wasm-memory-margin-mib"),
        "{e}"
    );
}

/// Two namespaces registering the same weights: under `namespace` isolation each is
/// stored (and charged) once per namespace, under `shared` once for both. Switching
/// makes the functions non-resident; they load again in their new scope.
#[test]
fn isolation_decides_whether_namespaces_share_const_storage() {
    const W: u64 = 4 << 20;
    let device = WasmBackend::new(64 << 20, 1, Duration::from_secs(2)).unwrap();
    let function = |ns: &str| Arc::new(def(peek(ns, W)));
    let (a, b) = (function("team-a"), function("team-b"));
    let capacity = device.free_memory();
    for f in [&a, &b] {
        device.load(f).unwrap();
    }
    assert_eq!(capacity - device.free_memory(), 2 * W, "namespace isolation: one copy per namespace");

    device.set_isolation(Isolation::Shared);
    assert!(!device.is_resident(&a) && !device.is_resident(&b), "resident in the old scope only");
    for f in [&a, &b] {
        device.load(f).unwrap();
        assert!(device.is_resident(f));
    }
    assert_eq!(capacity - device.free_memory(), W, "shared isolation: one copy for both");

    device.set_isolation(Isolation::Namespace);
    for f in [&a, &b] {
        device.load(f).unwrap();
    }
    assert_eq!(capacity - device.free_memory(), 2 * W);
    for f in [&a, &b] {
        device.unload(&f.key());
    }
    assert_eq!(device.free_memory(), capacity, "nothing left charged after unloading");
}

/// The setting reaches executors the way gateways send it, in SetPolicy's JSON; a name
/// that is not a mode is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_policy_rpc_carries_the_isolation_setting() {
    use kaas_executor::proto::executor_server::Executor as _;
    const W: u64 = 2 << 20;
    let ex = executor(cpu(64 << 20, 1));
    let svc = kaas_executor::service::ExecutorService::new(ex.clone());
    let set = |json: String| {
        let svc = &svc;
        async move {
            svc.set_policy(tonic::Request::new(kaas_executor::proto::PolicyUpdate { config_json: json }))
                .await
        }
    };
    let bad = set(r#"{"policy":{"name":"edf"},"isolation":"none"}"#.into()).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let mut config = SchedulerConfig::new(PolicyConfig::named("edf"));
    config.isolation = Isolation::Shared;
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""isolation":"shared""#), "{json}");
    set(json).await.unwrap();
    let free = ex.devices()[0].free_memory();
    for ns in ["team-a", "team-b"] {
        ex.put_function(def(peek(ns, W))).await.unwrap();
        ex.preload(&format!("{ns}/f"), None).await.unwrap();
    }
    assert_eq!(free - ex.devices()[0].free_memory(), W, "shared: the two namespaces' weights stored once");
    let r = ex.execute("team-b/f", inputs(&[("flag", vec![0; 4])]), None, None).await.unwrap();
    assert_eq!(word(&r), 0x0707_0707);
}
