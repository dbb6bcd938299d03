//! Helpers for the end-to-end suites: finding (or building) the kaas binaries, starting
//! processes and reading the addresses they print.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

pub mod monitoring;
pub mod standalone;

/// The directory cargo puts this profile's binaries in.
fn bin_dir() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// Path to a workspace binary, building it first if this test run did not.
pub fn binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        let profile_release = bin_dir().ends_with("release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", package, "--bin", name]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() || !path.exists() {
            bail!("could not build {name} ({status})");
        }
    }
    Ok(path)
}

/// A child process killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Lines it printed on stdout after the one we waited for.
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd`, waits for a stdout line containing `marker` and returns it.
    pub fn start(mut cmd: Command, marker: &str) -> anyhow::Result<(Proc, String)> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return Ok((Proc { child, lines: rx }, line)),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    bail!("{cmd:?} did not print {marker:?} within 60 s");
                }
            }
        }
    }

    /// Kills it hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `host:port` after `prefix` in a line.
pub fn addr_after(line: &str, prefix: &str) -> Option<String> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    Some(rest.split(|c: char| c.is_whitespace() || c == ',' || c == ';').next()?.to_string())
}
