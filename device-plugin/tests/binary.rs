//! The `kaas-device-plugin` binary against a kubelet written in Python grpcio with
//! hand-encoded messages (an independent check of the wire format), then SIGTERM.
//!
//! Python with grpcio comes from `.ci/install-tools` (PyPI), which this test runs when
//! `KAAS_PYTHON` is not set. `KAAS_SKIP_PYTHON=1` skips it, and says so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("KAAS_PYTHON") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join(".ci/install-tools"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run .ci/install-tools (installs grpcio from PyPI)");
    assert!(out.status.success(), ".ci/install-tools failed; set KAAS_PYTHON to a python with grpcio");
    let bin = String::from_utf8(out.stdout).unwrap();
    Path::new(bin.trim()).join("../venv/bin/python")
}

/// Kills the child if the test fails before it is waited for.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_grpcio_kubelet_checks_the_wire_and_sigterm_cleans_up() {
    if std::env::var("KAAS_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        // Straight to stderr, past the test harness's capture, so the skip is visible.
        use std::io::Write;
        let _ = std::io::stderr().write_all(b"SKIPPED: python grpcio wire check (KAAS_SKIP_PYTHON=1)\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    let sockets = tmp.path().join("kaas");
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire_check.py");
    let mut kubelet = Reap(
        Command::new(python())
            .arg(&script)
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the python kubelet"),
    );
    let mut lines = BufReader::new(kubelet.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");

    let mut plugin = Reap(
        Command::new(env!("CARGO_BIN_EXE_kaas-device-plugin"))
            .args(["--backend", "wasm", "--cpu-shares", "3", "--no-kaasnode"])
            .args(["--executor-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--device-plugin-dir")
            .arg(&dir)
            .arg("--socket-dir")
            .arg(&sockets)
            .args(["--node-name", "wire-test"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let summary = lines.next().expect("python kubelet printed nothing").unwrap();
    let status = kubelet.0.wait().unwrap();
    println!("python kubelet: {summary}");
    assert!(status.success(), "python kubelet failed: {summary}");
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["registration"]["endpoint"], "kaas-cpu-share.sock");
    assert_eq!(v["devices"], serde_json::json!(["cpu-s0", "cpu-s1", "cpu-s2"]));
    assert_eq!(v["envs"]["KAAS_EXECUTOR_SOCKET"], "/var/run/kaas/cpu-s0/executor.sock");
    assert_eq!(v["mount"]["containerPath"], "/var/run/kaas/cpu-s0");
    assert_eq!(v["mount"]["hostPath"], sockets.join("shares/cpu-s0").display().to_string());
    assert!(sockets.join("shares/cpu-s0/executor.sock").exists());

    // SIGTERM: clean exit, sockets removed.
    assert!(dir.join("kaas-cpu-share.sock").exists());
    let pid = plugin.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = plugin.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    assert!(!dir.join("kaas-cpu-share.sock").exists(), "plugin socket left behind");
    assert!(!sockets.join("executor.sock").exists(), "executor socket left behind");
    assert!(!sockets.join("shares/cpu-s0/executor.sock").exists(), "share socket left behind");
}
