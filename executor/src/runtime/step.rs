//! What runs on a blocking thread for one dispatch, and the input map the API layers build.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Step;
use crate::backend::{Backend, Invocation, Outputs};
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

/// Inputs as the gRPC and HTTP layers hand them over.
pub fn inputs_from(map: impl IntoIterator<Item = (String, Vec<u8>)>) -> Outputs {
    map.into_iter().collect::<BTreeMap<_, _>>()
}
