//! What runs for one dispatch — on a blocking thread, or on the scheduler's for a
//! microsecond kernel — and the input map the API layers build.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Step;
use crate::backend::{Backend, Bytes, Invocation, Outputs};
use crate::error::ExecError;
use crate::memory::Owner;
use crate::metrics::ExecutorMetrics;
use crate::model::FunctionDef;

/// One dispatch on a blocking thread: make resident if needed, begin, run the kernels,
/// finish if last.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_step(
    backend: &dyn Backend,
    f: &Arc<FunctionDef>,
    owner: Owner,
    inputs: Option<Outputs>,
    invocation: Option<Box<dyn Invocation>>,
    kernels: std::ops::Range<usize>,
    last: bool,
    metrics: &ExecutorMetrics,
) -> Result<Step, ExecError> {
    let started = Instant::now();
    let mut cold = None;
    let mut inv = match invocation {
        Some(inv) => inv,
        None => {
            if backend.is_resident(f) {
                metrics.cache_hits.inc();
            } else {
                metrics.cache_misses.inc();
                metrics.cold_starts.inc();
                let start = Instant::now();
                backend.load(f)?;
                let took = start.elapsed();
                metrics.load_seconds.observe(took.as_secs_f64());
                cold = Some(took);
            }
            backend.begin(f, owner, inputs.unwrap_or_default())?
        }
    };
    let mut exec = Duration::ZERO;
    for k in kernels {
        exec += inv.run_kernel(k)?;
    }
    if last {
        let outputs = inv.finish()?;
        Ok(Step { invocation: None, outputs: Some(outputs), exec, cold, wall: started.elapsed() })
    } else {
        Ok(Step { invocation: Some(inv), outputs: None, exec, cold, wall: started.elapsed() })
    }
}

/// How long a kernel run on the scheduler thread may take before it is stopped and the
/// invocation rerun on a blocking thread (see [`run_inline`]).
pub(super) const INLINE_BUDGET: Duration = Duration::from_millis(2);
/// Functions whose learned runtime is at most this run on the scheduler thread, unless
/// the executor is told otherwise (`Executor::set_inline_max`).
pub const DEFAULT_INLINE_MAX: Duration = Duration::from_micros(250);
/// ... if their inputs are at most this many bytes (kept for a rerun) ...
pub(super) const INLINE_MAX_INPUT_BYTES: u64 = 64 << 10;
/// Runs measured off the scheduler thread before a function that overran its budget
/// there is tried there again.
pub(super) const INLINE_COOLDOWN_RUNS: u64 = 16;
/// ... and they have at most this many kernels (each may take up to the budget).
pub(super) const INLINE_MAX_KERNELS: usize = 4;

/// What [`run_inline`] did.
pub(super) enum Inline {
    /// Ran to an answer (or a fault).
    Ran(Result<Step, ExecError>),
    /// The backend cannot stop a kernel at a budget: run it on a blocking thread.
    Unsupported,
    /// A kernel exceeded the budget and was stopped: run it again on a blocking thread.
    Overran,
}

/// One whole invocation of a resident function on the calling thread (the scheduler's),
/// each kernel stopped after [`INLINE_BUDGET`]: a hand-off to a blocking thread and back
/// costs ~50 µs on this kind of machine, fifty times a microsecond kernel. A stopped run
/// leaves nothing behind (its invocation is dropped); a panic answers like a faulting
/// kernel.
pub(super) fn run_inline(
    backend: &dyn Backend,
    f: &Arc<FunctionDef>,
    owner: Owner,
    inputs: Outputs,
    metrics: &ExecutorMetrics,
) -> Inline {
    let started = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut inv = match backend.begin(f, owner, inputs) {
            Ok(inv) => inv,
            Err(e) => return Inline::Ran(Err(e)),
        };
        if !inv.set_time_budget(INLINE_BUDGET) {
            return Inline::Unsupported;
        }
        let mut exec = Duration::ZERO;
        for k in 0..f.kernels.len() {
            match inv.run_kernel(k) {
                Ok(t) => exec += t,
                Err(ExecError::Timeout { .. }) => {
                    metrics.inline_overruns.inc();
                    return Inline::Overran;
                }
                Err(e) => return Inline::Ran(Err(e)),
            }
        }
        metrics.cache_hits.inc();
        metrics.inline_runs.inc();
        Inline::Ran(inv.finish().map(|outputs| Step {
            invocation: None,
            outputs: Some(outputs),
            exec,
            cold: None,
            wall: started.elapsed(),
        }))
    }))
    .unwrap_or_else(|panic| Inline::Ran(Err(panicked(f, panic))))
}

/// What a panicking backend answers: a faulting kernel, with the panic's message.
pub(super) fn panicked(f: &FunctionDef, panic: Box<dyn std::any::Any + Send>) -> ExecError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    ExecError::KernelFault { entry: f.name.clone(), message: format!("the backend panicked: {message}") }
}

/// Inputs as the gRPC and HTTP layers hand them over.
pub fn inputs_from<B: Into<Bytes>>(map: impl IntoIterator<Item = (String, B)>) -> Outputs {
    map.into_iter().map(|(name, v)| (name, v.into())).collect::<BTreeMap<_, _>>()
}
