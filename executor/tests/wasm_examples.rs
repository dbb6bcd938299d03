//! The example functions run for real on the WebAssembly backend and compute the right
//! answers (the CUDA builds are checked against the same numbers in tests/cuda.rs).
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;

#[tokio::test]
async fn saxpy_matmul_and_dense_relu_compute_correct_results() {
    let ex = executor(1 << 30, 2, "edf", vec![]);
    for name in ["saxpy", "matmul", "dense-relu"] {
        ex.put_function(def(example(name))).await.unwrap();
    }

    let x: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..1024).map(|i| 1000.0 - i as f32).collect();
    let r =
        ex.execute("default/saxpy", inputs(&[("x", f32s(&x)), ("y", f32s(&y))]), None, None).await.unwrap();
    let out = from_f32s(&r.outputs["out"]);
    assert_eq!(out.len(), 1024);
    for i in 0..1024 {
        assert_eq!(out[i], 2.0 * x[i] + y[i], "saxpy[{i}]");
    }
    assert!(r.cold_start, "the first invocation loads the module");
    let again =
        ex.execute("default/saxpy", inputs(&[("x", f32s(&x)), ("y", f32s(&y))]), None, None).await.unwrap();
    assert!(!again.cold_start, "the second finds it resident");
    assert_eq!(again.outputs, r.outputs);

    let n = 64;
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
    let r =
        ex.execute("default/matmul", inputs(&[("a", f32s(&a)), ("b", f32s(&b))]), None, None).await.unwrap();
    let c = from_f32s(&r.outputs["c"]);
    for row in 0..n {
        for col in 0..n {
            let want: f32 = (0..n).map(|k| a[row * n + k] * b[k * n + col]).sum();
            assert_eq!(c[row * n + col], want, "c[{row}][{col}]");
        }
    }

    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 4.0).collect();
    let r = ex.execute("default/dense-relu", inputs(&[("x", f32s(&x))]), None, None).await.unwrap();
    let y = from_f32s(&r.outputs["y"]);
    for row in 0..32 {
        let h: f32 = (0..32).map(|k| (((row * 7 + k * 3) % 11) as f32 - 5.0) / 8.0 * x[k]).sum();
        let want = (h + ((row % 5) as f32 - 2.0) / 4.0).max(0.0);
        assert_eq!(y[row], want, "y[{row}]");
    }
    assert!(ex.metrics().cache_hits.get() >= 1);
}
