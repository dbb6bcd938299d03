//! Runtimes learned from measured executions: the executor's scheduler is the one that
//! admits, so it is the one whose model follows what kernels actually take.

use super::*;

/// Measured runtime of one function on one device kind.
pub(super) type Measured = kaas_scheduler::estimate::RuntimeEstimate;

/// Per function key, per device kind: looked up per request with borrowed keys.
pub(super) type ByKind<T> = HashMap<String, HashMap<String, T>>;

pub(super) fn get<'a, T>(m: &'a ByKind<T>, function: &str, kind: &str) -> Option<&'a T> {
    m.get(function)?.get(kind)
}

pub(super) fn put<T>(m: &mut ByKind<T>, function: &str, kind: &str, value: T) {
    m.entry(function.to_string()).or_default().insert(kind.to_string(), value);
}

impl Actor {
    /// Whether an invocation of `f` on `device` runs on this thread (see
    /// [`step::run_inline`](super::step::run_inline)): resident there, few kernels, small
    /// inputs, and a learned runtime there of at most the inline ceiling
    /// ([`Executor::set_inline_max`]).
    pub(super) fn runs_inline(
        &self,
        f: &FunctionDef,
        owner_key: &str,
        device: usize,
        inputs: &Outputs,
    ) -> bool {
        use super::step::{INLINE_MAX_INPUT_BYTES, INLINE_MAX_KERNELS};
        let max_ms = self.inline_max_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
        let backend = &self.devices[device];
        if max_ms <= 0.0
            || f.kernels.len() > INLINE_MAX_KERNELS
            || inputs.values().map(|v| v.len() as u64).sum::<u64>() > INLINE_MAX_INPUT_BYTES
        {
            return false;
        }
        let (key, kind) = (owner_key, self.infos[device].kind.as_str());
        let cooled =
            |samples: u64| get(&self.inline_cooldown, key, kind).is_none_or(|&until| samples >= until);
        get(&self.runtime_ewma, key, kind)
            .is_some_and(|m| m.samples >= Measured::TRUSTED && m.predicted() <= max_ms && cooled(m.samples))
            && backend.is_resident(f)
    }

    /// Folds one measured execution into the model; every 16 samples (from the 8th) the
    /// scheduler's view of every registration of the function is refreshed.
    pub(super) fn learn(&mut self, key: &str, device: usize, took: Duration) {
        let kind = self.infos[device].kind.as_str();
        let ms = took.as_secs_f64() * 1000.0;
        let e = match self.runtime_ewma.get_mut(key).and_then(|m| m.get_mut(kind)) {
            Some(e) => {
                e.observe(ms);
                *e
            }
            None => {
                let kind = kind.to_string();
                put(&mut self.runtime_ewma, key, &kind, Measured::first(ms));
                Measured::first(ms)
            }
        };
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
