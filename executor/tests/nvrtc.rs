//! Real CUDA compiles without a GPU (issue 18, point 1): every example's CUDA C module goes
//! through the executor's own compile path (cudarc's NVRTC, dynamically loaded, as the CUDA
//! backend runs it), its kernels' signatures are checked against the NVRTC output, and each
//! PTX is assembled by `ptxas` for sm_80 and sm_90.
//!
//! Needs `libnvrtc.so.12` on the library path and `ptxas` on `PATH` (or `KAAS_PTXAS`):
//! `.ci/install-tools` installs both from PyPI (`nvidia-cuda-nvrtc-cu12`,
//! `nvidia-cuda-nvcc-cu12`) and `.ci/run` puts them there and sets `KAAS_REQUIRE_NVRTC=1`:
//! then (or with `CI` set) a missing tool fails the test; elsewhere the test says it is
//! skipped and why.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use kaas_executor::signature;

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KAAS_PTXAS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("ptxas"))
        .find(|p| p.is_file())
}

/// The CUDA builds of every example function, as `(function, module, format, source)`.
fn example_sources() -> Vec<(String, String, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/functions");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        for m in doc["spec"]["modules"].as_sequence().unwrap() {
            let cuda = &m["cuda"];
            if cuda.is_null() {
                continue;
            }
            let format = cuda["format"].as_str().unwrap_or("cuda-c").to_string();
            let src = cuda["source"]["inline"].as_str().expect("examples carry inline sources").to_string();
            out.push((name.clone(), m["name"].as_str().unwrap().to_string(), format, src));
        }
    }
    out
}

#[test]
fn examples_compile_with_nvrtc() {
    let ci = std::env::var_os("KAAS_REQUIRE_NVRTC").is_some() || std::env::var_os("CI").is_some();
    let nvrtc = signature::nvrtc_present();
    let ptxas = ptxas();
    if !nvrtc || ptxas.is_none() {
        let why = format!(
            "NVRTC {} and ptxas {} (install nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12 from PyPI, \
             or run .ci/install-tools, and put libnvrtc.so.12 on LD_LIBRARY_PATH and ptxas on PATH)",
            if nvrtc { "found" } else { "NOT found" },
            if ptxas.is_some() { "found" } else { "NOT found" }
        );
        assert!(!ci, "CI must compile the examples for real: {why}");
        println!("SKIPPED examples_compile_with_nvrtc: {why}");
        return;
    }
    let ptxas = ptxas.unwrap();
    let sources = example_sources();
    assert!(sources.len() >= 3, "every example has a CUDA C build: {}", sources.len());
    let dir = tempfile::tempdir().unwrap();
    for (function, module, kind, src) in &sources {
        let ptx = match kind.as_str() {
            "cuda-c" => {
                signature::compile_cuda_c(module, src).unwrap_or_else(|e| panic!("{function}/{module}: {e}"))
            }
            "ptx" => src.clone(),
            other => {
                println!("{function}/{module}: a {other} build is not assembled here");
                continue;
            }
        };
        assert!(ptx.contains(".entry"), "{function}: NVRTC produced no kernel entry");
        let file = dir.path().join(format!("{function}-{module}.ptx"));
        std::fs::write(&file, &ptx).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let out = Command::new(&ptxas)
                .args([&format!("-arch={arch}"), "-o"])
                .arg(dir.path().join(format!("{function}-{module}-{arch}.cubin")))
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ptxas -arch={arch} {function}/{module}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!("{function}/{module} ({kind}): PTX ({} bytes) -> ptxas sm_80, sm_90: ok", ptx.len());
    }
    // The examples' kernels match the NVRTC output's signatures.
    for name in ["saxpy", "matmul", "dense-relu"] {
        signature::check(&def(example(name)), true).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // And a wrong one is caught on the compiled CUDA C too.
    let mut bad = example("saxpy");
    bad.modules[0].wasm = Vec::new();
    bad.kernels[0].args.pop();
    let e = signature::check(&def(bad), true).unwrap_err();
    assert!(e.to_string().contains("4 arguments given, the PTX entry takes 5"), "{e}");
}

/// A compile past its time limit fails the registration with a clear error (the real
/// compiler, a 1 ms limit); a file-system include never reaches the compiler; a
/// compile error's log is cut to a bounded size.
#[test]
fn nvrtc_compiles_are_bounded() {
    use kaas_executor::nvrtc;
    let ci = std::env::var_os("KAAS_REQUIRE_NVRTC").is_some() || std::env::var_os("CI").is_some();
    let e = nvrtc::compile_cuda_c("m", "#include \"/etc/hostname\"\n").unwrap_err().to_string();
    assert!(e.contains("is not allowed"), "{e}");
    if !signature::nvrtc_present() {
        assert!(!ci, "KAAS_REQUIRE_NVRTC/CI set but libnvrtc.so.12 is not loadable");
        println!("NOT RUN (the NVRTC part): libnvrtc.so.12 not found; .ci/install-tools provides it");
        return;
    }
    let src = "extern \"C\" __global__ void slow_to_build(float* x) { x[threadIdx.x] *= 2.0f; } // 1 ms";
    let e =
        nvrtc::compile_with_timeout("m", src, std::time::Duration::from_millis(1)).unwrap_err().to_string();
    assert!(e.contains("did not finish within 1 ms"), "{e}");
    // Thousands of errors: the message stays bounded.
    let broken: String = (0..2000).map(|i| format!("int f{i}() {{ return undefined_{i}; }}\n")).collect();
    let e = nvrtc::compile_cuda_c("m", &broken).unwrap_err().to_string();
    println!("a compile error of {} source bytes: {} bytes of error", broken.len(), e.len());
    assert!(e.len() < nvrtc::MAX_LOG_BYTES + 300 && e.contains("more bytes of compiler log"), "{}", e.len());
    // And the compiler still works for the next source.
    nvrtc::compile_cuda_c("m", "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }").unwrap();
}
