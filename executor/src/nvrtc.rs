//! CUDA C from tenants, compiled to PTX with NVRTC inside the executor's process, bounded:
//!
//! - **No file-system includes.** Every `#include` must name a header NVRTC itself
//!   supplies ([`ALLOWED_HEADERS`]); anything else (a path, a macro, `/etc/...`) is refused
//!   before the compiler runs, so a source cannot read the node's files into its log.
//! - **A time limit** ([`COMPILE_TIMEOUT`]): the compile runs on its own thread; past the
//!   limit the registration fails, and at most [`MAX_RUNNING`] compiles (finished or
//!   abandoned) run at once, so a source that never finishes compiling cannot pile up
//!   threads.
//! - **Off the executor's actor**: callers run it on blocking threads (registration's
//!   signature check, a device's load).
//! - **Logs truncated** to [`MAX_LOG_BYTES`] in the error.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::ExecError;

/// Headers a kernel may include: NVRTC's built-in ones.
pub const ALLOWED_HEADERS: [&str; 3] = ["cuda_fp16.h", "cuda_bf16.h", "cuda_fp8.h"];
/// How long one compile may take.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Compiles running at once, abandoned ones included.
pub const MAX_RUNNING: usize = 4;
/// How much of the compiler's log an error carries.
pub const MAX_LOG_BYTES: usize = 4096;
/// How many compiled sources are kept.
const PTX_CACHE: usize = 32;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Source with comments removed and line continuations joined, as the preprocessor sees
/// directives (string literals are kept).
fn directives(src: &str) -> Vec<String> {
    let joined = src.replace("\\\r\n", "").replace("\\\n", "");
    let mut out = String::with_capacity(joined.len());
    let mut chars = joined.chars().peekable();
    let mut in_str: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q || c == '\n' {
                in_str = None;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            ('"' | '\'', _) => {
                in_str = Some(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('#'))
        .map(|l| l[1..].trim_start().to_string())
        .collect()
}

/// Refuses an `#include` of anything but [`ALLOWED_HEADERS`] (and `#pragma` forms that
/// could pull files in).
pub fn check_includes(module: &str, src: &str) -> Result<(), ExecError> {
    let refuse = |what: String| ExecError::ModuleLoad {
        module: module.to_string(),
        message: format!(
            "{what}: CUDA C may include only the headers NVRTC supplies ({})",
            ALLOWED_HEADERS.join(", ")
        ),
    };
    for d in directives(src) {
        let Some(rest) = d.strip_prefix("include").or_else(|| d.strip_prefix("import")) else { continue };
        let target = rest.trim();
        let name = target
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .or_else(|| target.strip_prefix('"').and_then(|t| t.strip_suffix('"')));
        match name {
            Some(n) if ALLOWED_HEADERS.contains(&n) => {}
            _ => return Err(refuse(format!("#include {target} is not allowed"))),
        }
    }
    Ok(())
}

fn truncate(log: String) -> String {
    if log.len() <= MAX_LOG_BYTES {
        return log;
    }
    let mut end = MAX_LOG_BYTES;
    while !log.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes of compiler log)", &log[..end], log.len() - end)
}

/// Compiles CUDA C to PTX with NVRTC, as the CUDA backend does (no FMA contraction, so
/// results match the WebAssembly builds bit for bit), within the bounds above. Needs
/// `libnvrtc` on the library path (see [`crate::signature::nvrtc_present`]). The PTX of
/// the last few sources is kept, so a function checked at registration is not compiled
/// again when a device loads it.
pub fn compile_cuda_c(module: &str, src: &str) -> Result<String, ExecError> {
    compile_with_timeout(module, src, COMPILE_TIMEOUT)
}

/// [`compile_cuda_c`] with another time limit.
pub fn compile_with_timeout(module: &str, src: &str, timeout: Duration) -> Result<String, ExecError> {
    static CACHE: Mutex<Vec<([u8; 32], String)>> = Mutex::new(Vec::new());
    let digest = crate::model::sha256(src.as_bytes());
    if let Some((_, ptx)) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(d, _)| *d == digest)
    {
        return Ok(ptx.clone());
    }
    check_includes(module, src)?;
    let err = |message: String| ExecError::ModuleLoad { module: module.to_string(), message };
    if RUNNING.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        return Err(err(format!(
            "NVRTC is busy: {MAX_RUNNING} compiles are running (one may be stuck past its {} s limit); retry later",
            COMPILE_TIMEOUT.as_secs()
        )));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let source = src.to_string();
    let spawned = std::thread::Builder::new().name("kaas-nvrtc".into()).spawn(move || {
        let opts = cudarc::nvrtc::CompileOptions { fmad: Some(false), ..Default::default() };
        let r = cudarc::nvrtc::compile_ptx_with_opts(source, opts).map(|ptx| ptx.to_src());
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        return Err(err(format!("starting the compiler thread: {e}")));
    }
    let ptx = match rx.recv_timeout(timeout) {
        Ok(Ok(ptx)) => ptx,
        Ok(Err(e)) => return Err(err(truncate(format!("NVRTC: {e:?}")))),
        Err(_) => return Err(err(format!("NVRTC did not finish within {} ms", timeout.as_millis()))),
    };
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= PTX_CACHE {
        cache.remove(0);
    }
    cache.push((digest, ptx.clone()));
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_of_anything_but_nvrtc_headers_are_refused() {
        let ok = "#include <cuda_fp16.h>\n#include \"cuda_bf16.h\"\nextern \"C\" __global__ void k() {}";
        check_includes("m", ok).unwrap();
        for bad in [
            "#include \"/etc/passwd\"",
            "#include </var/run/secrets/kubernetes.io/serviceaccount/token>",
            "  #  include <stdio.h>",
            "#define F \"/etc/shadow\"\n#include F",
            "#inc\\\nlude \"/etc/hostname\"",
            "/* hidden */ #include \"x.h\"",
            "#import \"x.h\"",
        ] {
            let e = check_includes("m", bad).unwrap_err().to_string();
            assert!(e.contains("is not allowed") && e.contains("cuda_fp16.h"), "{bad}: {e}");
        }
        // Inside comments and strings an include is just text.
        check_includes(
            "m",
            "// #include \"/etc/passwd\"\n/* #include <x> */\nconst char* s = \"#include <x>\";",
        )
        .unwrap();
    }

    #[test]
    fn long_logs_are_cut() {
        let log = "é".repeat(10_000);
        let t = truncate(log);
        assert!(t.len() < MAX_LOG_BYTES + 100 && t.contains("more bytes of compiler log"), "{}", t.len());
    }
}
