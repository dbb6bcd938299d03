//! Runtimes learned from measured executions: the executor's scheduler is the one that
//! admits, so it is the one whose model follows what kernels actually take.

use super::*;

/// Measured runtime of one function on one device kind.
pub(super) type Measured = kaas_scheduler::estimate::RuntimeEstimate;

impl Actor {
    /// Whether an invocation of `f` on `device` runs on this thread (see
    /// [`step::run_inline`](super::step::run_inline)): resident there, few kernels, small
    /// inputs, and a learned runtime there of at most the inline ceiling
    /// ([`Executor::set_inline_max`]).
    pub(super) fn runs_inline(&self, f: &FunctionDef, device: usize, inputs: &Outputs) -> bool {
        use super::step::{INLINE_MAX_INPUT_BYTES, INLINE_MAX_KERNELS};
        let max_ms = self.inline_max_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
        let backend = &self.devices[device];
        if max_ms <= 0.0
            || f.kernels.len() > INLINE_MAX_KERNELS
            || inputs.values().map(|v| v.len() as u64).sum::<u64>() > INLINE_MAX_INPUT_BYTES
        {
            return false;
        }
        let key = (f.key(), backend.info().kind);
        let cooled = |samples: u64| self.inline_cooldown.get(&key).is_none_or(|&until| samples >= until);
        self.runtime_ewma
            .get(&key)
            .is_some_and(|m| m.samples >= Measured::TRUSTED && m.predicted() <= max_ms && cooled(m.samples))
            && backend.is_resident(f)
    }

    /// Folds one measured execution into the model; every 16 samples (from the 8th) the
    /// scheduler's view of every registration of the function is refreshed.
    pub(super) fn learn(&mut self, key: String, kind: String, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let e = *self
            .runtime_ewma
            .entry((key.clone(), kind))
            .and_modify(|e| e.observe(ms))
            .or_insert_with(|| Measured::first(ms));
        if e.samples % 16 != Measured::TRUSTED {
            return;
        }
        let ids: Vec<(FunctionId, Arc<FunctionDef>, Option<String>)> = self
            .ids
            .iter()
            .filter(|((k, _), _)| *k == key)
            .map(|((_, share), fid)| (*fid, self.defs[fid.0 as usize].0.clone(), share.clone()))
            .collect();
        debug!(function = %key, mean_ms = e.mean, deviation_ms = e.deviation, "learned runtime");
        for (fid, def, share) in ids {
            let weight = self.share(&share).filter(|s| s.weight > 0).map_or(def.weight, |s| s.weight);
            let model = self.model(&def, weight);
            if let Err(e) = self.sched.update_function(fid, model) {
                warn!(function = %key, "updating the learned runtime: {e}");
            }
        }
    }
}
