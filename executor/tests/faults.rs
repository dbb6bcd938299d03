//! Bad input and faulting kernels fail only their own invocation: a trapping kernel, an
//! endless kernel, a wrong buffer size, an out-of-memory request and a broken module,
//! while another tenant's invocations keep succeeding.

mod common;

use common::*;
use kaas_executor::ExecError;
use kaas_executor::proto::BufferKind::{Const, Input, Output};

#[tokio::test]
async fn faults_fail_only_their_invocation() {
    let ex = executor(64 << 20, 2, "edf", vec![]);
    let good = wat_function(
        "good",
        TEST_KERNELS,
        &[("in", 16, Input), ("out", 16, Output)],
        &[("copy", 4, &["in", "out"])],
    );
    ex.put_function(def(good)).await.unwrap();
    let trap = wat_function("trap", TEST_KERNELS, &[("b", 4, Output)], &[("trap", 1, &["b"])]);
    ex.put_function(def(trap)).await.unwrap();
    let forever = wat_function("forever", TEST_KERNELS, &[("b", 4, Output)], &[("forever", 1, &["b"])]);
    ex.put_function(def(forever)).await.unwrap();
    let huge = wat_function(
        "huge",
        TEST_KERNELS,
        &[("w", 128 << 20, Const), ("b", 4, Output)],
        &[("trap", 1, &["b"])],
    );
    ex.put_function(def(huge)).await.unwrap();
    // Not WebAssembly at all: refused at registration (the signature check parses it).
    let unparsable = wat_function(
        "unparsable",
        "(module (memory (export \"memory\") 1) (func (export \"copy\")",
        &[("b", 4, Output)],
        &[("copy", 1, &["b"])],
    );
    let e = ex.put_function(def(unparsable)).await.unwrap_err();
    assert!(matches!(&e, ExecError::BadFunction(m) if m.contains("not WebAssembly")), "{e}");
    // Valid, with the right signature, but it imports what no executor provides: it fails
    // when a device loads it, and only its own invocations.
    let mut broken = wat_function(
        "broken",
        "(module (import \"env\" \"f\" (func)) (memory (export \"memory\") 1) \
         (func (export \"copy\") (param i32 i32 i32 i32 i32 i32 i32)))",
        &[("b", 4, Output)],
        &[("copy", 1, &["b"])],
    );
    broken.version = "1".into();
    ex.put_function(def(broken)).await.unwrap();

    // The other tenant runs throughout.
    let tenant = {
        let ex = ex.clone();
        tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..40u8 {
                let data: Vec<u8> = (0..16).map(|j| i.wrapping_add(j)).collect();
                let r = ex.execute("t/good", inputs(&[("in", data.clone())]), None, None).await.unwrap();
                assert_eq!(r.outputs["out"][..], data);
                ok += 1;
            }
            ok
        })
    };

    let e = ex.execute("t/trap", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(&e, ExecError::KernelFault { message, .. } if message.contains("unreachable")), "{e}");

    let e = ex.execute("t/forever", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(e, ExecError::Timeout { limit_ms: 300, .. }), "{e}");

    let e = ex.execute("t/good", inputs(&[("in", vec![0; 15])]), None, None).await.unwrap_err();
    assert_eq!(e, ExecError::BadInput("input \"in\" has 15 bytes, the function declares 16".into()));
    let e = ex
        .execute("t/good", inputs(&[("in", vec![0; 16]), ("nope", vec![1])]), None, None)
        .await
        .unwrap_err();
    assert!(matches!(&e, ExecError::BadInput(m) if m.contains("no buffer named \"nope\"")), "{e}");
    let e = ex.execute("t/good", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(&e, ExecError::BadInput(m) if m.contains("missing input \"in\"")), "{e}");

    let e = ex.execute("t/huge", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(&e, ExecError::OutOfMemory(_) | ExecError::NoCapacity(_)), "{e}");

    let e = ex.execute("t/broken", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(&e, ExecError::ModuleLoad { module, .. } if module == "m"), "{e}");

    let e = ex.execute("t/missing", inputs(&[]), None, None).await.unwrap_err();
    assert_eq!(e, ExecError::UnknownFunction("t/missing".into()));

    assert_eq!(tenant.await.unwrap(), 40);
    // Still healthy: the faulting functions fail again, cleanly, and the good one works.
    let e = ex.execute("t/trap", inputs(&[]), None, None).await.unwrap_err();
    assert!(matches!(e, ExecError::KernelFault { .. }));
    assert!(ex.execute("t/good", inputs(&[("in", vec![9; 16])]), None, None).await.is_ok());
    let status = ex.status();
    assert!(status.devices[0].healthy);
}

#[tokio::test]
async fn memory_quota_is_an_error_not_a_crash() {
    let ex = executor(64 << 20, 1, "balance", vec![]);
    let mut f = wat_function(
        "q",
        TEST_KERNELS,
        &[("in", 4096, Input), ("out", 4096, Output)],
        &[("copy", 1, &["in", "out"])],
    );
    f.memory_quota_bytes = 4096;
    ex.put_function(def(f)).await.unwrap();
    let e = ex.execute("t/q", inputs(&[("in", vec![1; 4096])]), None, None).await.unwrap_err();
    assert!(matches!(&e, ExecError::OutOfMemory(m) if m.contains("quota of 4096")), "{e}");
}

#[test]
fn invalid_definitions_are_rejected_with_reasons() {
    use kaas_executor::model::FunctionDef;
    let mut f = wat_function("x", TEST_KERNELS, &[("in", 4, Input)], &[("copy", 1, &["in", "nope"])]);
    let e = FunctionDef::try_from(f.clone()).unwrap_err();
    assert!(e.to_string().contains("unknown buffer \"nope\""), "{e}");
    f.kernels[0].args.clear();
    f.kernels[0].block = vec![2048, 1, 1];
    let e = FunctionDef::try_from(f.clone()).unwrap_err();
    assert!(e.to_string().contains("exceeds CUDA limits"), "{e}");
    f.kernels[0].block = vec![1, 1, 1];
    f.kernels[0].grid = vec![1, 65_536, 1];
    let e = FunctionDef::try_from(f.clone()).unwrap_err();
    assert!(e.to_string().contains("grid [1, 65536, 1] exceeds CUDA limits"), "{e}");
    f.kernels[0].grid = vec![u32::MAX, 1, 1];
    assert!(FunctionDef::try_from(f.clone()).is_err());
    f.kernels[0].grid = vec![1, 1, 1];
    f.kernels[0].shared_mem_bytes = 1 << 20;
    let e = FunctionDef::try_from(f.clone()).unwrap_err();
    assert!(e.to_string().contains("1048576 bytes of dynamic shared memory"), "{e}");
    f.kernels[0].shared_mem_bytes = 48 << 10;
    FunctionDef::try_from(f.clone()).unwrap();
    let mut big = f.clone();
    big.modules[0].wasm = vec![0; kaas_executor::model::MAX_MODULE_BYTES + 1];
    let e = FunctionDef::try_from(big).unwrap_err();
    assert!(e.to_string().contains("more than the 268435456 (256 MiB) a module may have"), "{e}");
    // Sizes whose sum would overflow (or exceed any device) are refused, not wrapped.
    let mut huge = f.clone();
    huge.buffers[0].size = u64::MAX;
    huge.buffers.push(kaas_executor::proto::Buffer {
        name: "t".into(),
        size: u64::MAX,
        kind: kaas_executor::proto::BufferKind::Temp as i32,
        content: vec![],
    });
    let e = FunctionDef::try_from(huge).unwrap_err();
    assert!(e.to_string().contains("buffers total more than"), "{e}");
    f.buffers[0].size = 0;
    let e = FunctionDef::try_from(f).unwrap_err();
    assert!(e.to_string().contains("size 0"), "{e}");
}

/// A device whose probe reads a switch the test flips, like a GPU that is lost and
/// comes back; `health()` only reports what the last probe found.
struct Probed {
    inner: std::sync::Arc<dyn kaas_executor::backend::Backend>,
    device_ok: std::sync::Arc<std::sync::atomic::AtomicBool>,
    last_probe: std::sync::Mutex<Result<(), String>>,
    probes: std::sync::atomic::AtomicU32,
}

impl kaas_executor::backend::Backend for Probed {
    fn info(&self) -> kaas_executor::backend::DeviceInfo {
        self.inner.info()
    }
    fn free_memory(&self) -> u64 {
        self.inner.free_memory()
    }
    fn can_run(&self, f: &kaas_executor::model::FunctionDef) -> bool {
        self.inner.can_run(f)
    }
    fn is_resident(&self, f: &kaas_executor::model::FunctionDef) -> bool {
        self.inner.is_resident(f)
    }
    fn load(&self, f: &std::sync::Arc<kaas_executor::model::FunctionDef>) -> Result<(), ExecError> {
        self.inner.load(f)
    }
    fn unload(&self, key: &str) {
        self.inner.unload(key)
    }
    fn set_isolation(&self, isolation: kaas_executor::backend::Isolation) {
        self.inner.set_isolation(isolation)
    }
    fn begin(
        &self,
        f: &std::sync::Arc<kaas_executor::model::FunctionDef>,
        owner: kaas_executor::memory::Owner,
        inputs: kaas_executor::backend::Outputs,
    ) -> Result<Box<dyn kaas_executor::backend::Invocation>, ExecError> {
        self.inner.begin(f, owner, inputs)
    }
    fn probe(&self) {
        self.probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = self.device_ok.load(std::sync::atomic::Ordering::Relaxed);
        *self.last_probe.lock().unwrap() = if ok { Ok(()) } else { Err("device lost".into()) };
    }
    fn health(&self) -> Result<(), String> {
        self.last_probe.lock().unwrap().clone()
    }
}

#[tokio::test]
// Regression: the CUDA probe existed but nothing called it, so a lost GPU never changed
// health and the device plugin kept advertising it Healthy.
async fn probes_mark_a_lost_device_unhealthy_and_a_recovered_one_healthy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;
    let device_ok = Arc::new(AtomicBool::new(true));
    let probed = Arc::new(Probed {
        inner: cpu(16 << 20, 1),
        device_ok: device_ok.clone(),
        last_probe: std::sync::Mutex::new(Ok(())),
        probes: AtomicU32::new(0),
    });
    let ex = kaas_executor::Executor::start(
        vec![probed.clone()],
        kaas_executor::ExecutorConfig {
            node: "n".into(),
            scheduler: kaas_scheduler::SchedulerConfig::new(kaas_scheduler::PolicyConfig::named("edf")),
            shares: vec![],
            health_interval: Duration::from_millis(30),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap();
    let healthy = |want: bool| {
        let mut rx = ex.watch();
        async move {
            tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|s| s.devices[0].healthy == want))
                .await
                .unwrap_or_else(|_| panic!("device never became healthy={want}"))
                .unwrap()
                .devices[0]
                .message
                .clone()
        }
    };
    device_ok.store(false, Ordering::Relaxed);
    assert_eq!(healthy(false).await, "device lost");
    device_ok.store(true, Ordering::Relaxed);
    healthy(true).await;
    assert!(probed.probes.load(Ordering::Relaxed) >= 2);
}
