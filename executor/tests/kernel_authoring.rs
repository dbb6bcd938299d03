//! The kernel-authoring guide's example (docs/kernel-authoring.md): a saxpy kernel written
//! in Rust (`docs/kernels/saxpy-rs`), compiled here for `wasm32-unknown-unknown` by
//! cargo, runs on the WebAssembly backend from its KernelFunction manifest and computes
//! the right answer. Needs the `wasm32-unknown-unknown` target (`rustup target add
//! wasm32-unknown-unknown`; `.ci/run` installs it and sets KAAS_REQUIRE_WASM_TARGET=1, so
//! CI fails rather than skips); elsewhere without it the test prints SKIPPED and why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const TARGET: &str = "wasm32-unknown-unknown";

/// Whether the standard library for the wasm32 target is installed.
fn target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else { return false };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot).join("lib/rustlib").join(TARGET).join("lib").is_dir()
}

/// Builds the example crate and returns its module's bytes.
fn build(krate: &Path, target_dir: &Path) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", TARGET, "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        // Flags meant for the host test build must not reach the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build of {} for {TARGET} failed", krate.display());
    std::fs::read(target_dir.join(TARGET).join("release/saxpy_rs.wasm")).unwrap()
}

#[tokio::test]
async fn a_rust_kernel_built_for_wasm32_runs_from_its_manifest() {
    if !target_installed() {
        assert!(
            std::env::var_os("KAAS_REQUIRE_WASM_TARGET").is_none(),
            "KAAS_REQUIRE_WASM_TARGET is set but the {TARGET} target is not installed"
        );
        println!("SKIPPED: the {TARGET} target is not installed (rustup target add {TARGET})");
        return;
    }
    let krate: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kernels/saxpy-rs");
    let target_dir = tempfile::tempdir().unwrap();
    let wasm = build(&krate, target_dir.path());
    assert_eq!(&wasm[..4], b"\0asm", "a WebAssembly binary");
    println!("built {} bytes of WebAssembly from Rust", wasm.len());

    let ex = executor(1 << 30, 2, "edf", vec![]);
    ex.put_function(def(manifest(&krate.join("kernelfunction.yaml"), Some(&wasm)))).await.unwrap();
    let x: Vec<f32> = (0..1024).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..1024).map(|i| 7.0 - i as f32).collect();
    let r = ex
        .execute("default/saxpy-rs", inputs(&[("x", f32s(&x)), ("y", f32s(&y))]), None, None)
        .await
        .unwrap();
    let out = from_f32s(&r.outputs["out"]);
    assert_eq!(out.len(), 1024);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(*o, 2.0 * x[i] + y[i], "out[{i}]");
    }
}
