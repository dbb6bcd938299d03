//! The GPU figures of DESIGN.md §11, on a machine with an NVIDIA GPU (run by
//! `scripts/test-cuda.sh`; without `KAAS_TEST_CUDA=1` it says it needs a GPU and exits 0,
//! with it and no GPU it fails):
//!
//! - warm invocation overhead: an executor invocation of a trivial CUDA kernel (copy 4
//!   bytes) against a raw cudarc launch + synchronize of the same kernel on the same GPU,
//!   measured in the same run (target: ≤ 20 µs above the raw launch at p50);
//! - cold start of a resident-capable function (its module plus a 100 MB const buffer):
//!   registration to first answer (target: ≤ 50 ms).
//!
//! Prints `PASS`/`FAIL` per figure. Run: `KAAS_TEST_CUDA=1 cargo bench -p kaas-executor --bench cuda`
// The baseline launches a kernel with raw arguments, as the CUDA backend does.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use kaas_executor::backend::Backend;
use kaas_executor::backend::cuda::CudaBackend;
use kaas_executor::model::FunctionDef;
use kaas_executor::proto;
use kaas_executor::{Executor, ExecutorConfig};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

const SRC: &str = r#"extern "C" __global__ void copy(const unsigned int* in, unsigned int* out) {
    if (threadIdx.x == 0) out[0] = in[0];
}"#;

const ITERS: usize = 2_000;

fn function(name: &str, const_bytes: usize) -> proto::FunctionDef {
    let buf = |n: &str, k: proto::BufferKind, size: u64, content: Vec<u8>| proto::Buffer {
        name: n.into(),
        size,
        kind: k as i32,
        content,
    };
    let mut buffers = vec![
        buf("in", proto::BufferKind::Input, 4, vec![]),
        buf("out", proto::BufferKind::Output, 4, vec![]),
    ];
    if const_bytes > 0 {
        buffers.push(buf("w", proto::BufferKind::Const, const_bytes as u64, vec![3u8; const_bytes]));
    }
    proto::FunctionDef {
        namespace: "bench".into(),
        name: name.into(),
        version: "1".into(),
        modules: vec![proto::Module {
            name: "m".into(),
            wasm: vec![],
            cuda: Some(proto::CudaModule {
                format: proto::CudaFormat::CudaC as i32,
                source: SRC.as_bytes().to_vec(),
            }),
        }],
        buffers,
        kernels: vec![proto::Kernel {
            module: "m".into(),
            entry: "copy".into(),
            grid: vec![1, 1, 1],
            block: vec![32, 1, 1],
            shared_mem_bytes: 0,
            args: ["in", "out"]
                .iter()
                .map(|a| proto::Arg { value: Some(proto::arg::Value::Buffer(a.to_string())) })
                .collect(),
        }],
        deadline_ms: 60_000,
        weight: 1,
        ..Default::default()
    }
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// p50 of a raw launch + synchronize of the same kernel through cudarc.
fn raw_launch_p50() -> anyhow::Result<Duration> {
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let ptx = cudarc::nvrtc::compile_ptx(SRC)?;
    let module = ctx.load_module(ptx)?;
    let f = module.load_function("copy")?;
    let input = stream.clone_htod(&[7u32])?;
    let mut output = stream.alloc_zeros::<u32>(1)?;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
    let mut samples = Vec::with_capacity(ITERS);
    for i in 0..ITERS + 200 {
        let t = Instant::now();
        stream.memcpy_htod(&[i as u32], &mut output)?;
        let mut b = stream.launch_builder(&f);
        b.arg(&input).arg(&mut output);
        // SAFETY: two device pointers, as the kernel declares.
        unsafe { b.launch(cfg) }?;
        let _ = stream.clone_dtoh(&output)?;
        stream.synchronize()?;
        if i >= 200 {
            samples.push(t.elapsed());
        }
    }
    Ok(p50(samples))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var("KAAS_TEST_CUDA").as_deref() != Ok("1") {
        println!(
            "cuda bench: needs a GPU; run scripts/test-cuda.sh (sets KAAS_TEST_CUDA=1). Nothing measured."
        );
        return Ok(());
    }
    let gpu = CudaBackend::discover(2, 256 << 20, Duration::from_secs(10))?.remove(0);
    println!("GPU: {} ({})", gpu.info().model, gpu.info().id);
    let raw = raw_launch_p50()?;
    let config = ExecutorConfig {
        node: "bench".into(),
        scheduler: SchedulerConfig::new(PolicyConfig::named("edf")),
        shares: vec![],
        health_interval: Duration::from_secs(5),
        accelerator_classes: Default::default(),
    };
    let ex = Executor::start(vec![Arc::new(gpu) as Arc<dyn Backend>], config)?;
    ex.put_function(FunctionDef::try_from(function("copy", 0))?).await?;
    let inputs: kaas_executor::backend::Outputs =
        [("in".to_string(), 7u32.to_le_bytes().to_vec().into())].into();
    let mut samples = Vec::with_capacity(ITERS);
    for i in 0..ITERS + 200 {
        let t = Instant::now();
        let r = ex.execute("bench/copy", inputs.clone(), None, None).await?;
        if i >= 200 {
            samples.push(t.elapsed());
        }
        assert_eq!(r.outputs["out"][..], 7u32.to_le_bytes());
    }
    let warm = p50(samples);
    let over = warm.saturating_sub(raw);
    println!(
        "warm invocation p50 {warm:?} vs raw cudarc launch p50 {raw:?}: overhead {over:?} (x{:.2}) — {} (target <= 20 µs)",
        warm.as_secs_f64() / raw.as_secs_f64().max(1e-9),
        if over <= Duration::from_micros(20) { "PASS" } else { "FAIL" }
    );
    // Cold start: a function with a 100 MB const, registered and invoked once.
    let t = Instant::now();
    ex.put_function(FunctionDef::try_from(function("weights", 100 << 20))?).await?;
    let r = ex.execute("bench/weights", inputs.clone(), None, None).await?;
    let cold = t.elapsed();
    println!(
        "cold start with a 100 MB const: {cold:?} (load {:?}, cold={}) — {} (target <= 50 ms)",
        r.cold,
        r.cold_start,
        if cold <= Duration::from_millis(50) { "PASS" } else { "FAIL" }
    );
    Ok(())
}
