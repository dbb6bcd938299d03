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
    let mut broken = wat_function(
        "broken",
        "(module (memory (export \"memory\") 1) (func (export \"copy\")",
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
                assert_eq!(r.outputs["out"], data);
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
    f.buffers[0].size = 0;
    let e = FunctionDef::try_from(f).unwrap_err();
    assert!(e.to_string().contains("size 0"), "{e}");
}
