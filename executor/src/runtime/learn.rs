//! Runtimes learned from measured executions: the executor's scheduler is the one that
//! admits, so it is the one whose model follows what kernels actually take.

use super::*;

/// Measured runtime of one function on one device kind: EWMA of the mean and of the
/// absolute deviation, in ms.
#[derive(Clone, Copy, Debug)]
pub(super) struct Measured {
    pub(super) mean: f64,
    pub(super) deviation: f64,
    pub(super) samples: u64,
}

/// Samples before the measurement replaces the declared profile.
const TRUSTED: u64 = 8;

impl Measured {
    /// What the model uses: the mean plus two deviations (a margin for variance), once
    /// there are enough samples; before that the mean so far.
    pub(super) fn predicted(&self) -> f64 {
        if self.samples >= TRUSTED { self.mean + 2.0 * self.deviation } else { self.mean }
    }
}

impl Actor {
    /// Folds one measured execution into the model; every 16 samples (from the 8th) the
    /// scheduler's view of every registration of the function is refreshed.
    pub(super) fn learn(&mut self, key: String, kind: String, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let e = self.runtime_ewma.entry((key.clone(), kind)).or_insert(Measured {
            mean: ms,
            deviation: 0.0,
            samples: 0,
        });
        if e.samples > 0 {
            e.deviation = 0.9 * e.deviation + 0.1 * (ms - e.mean).abs();
            e.mean = 0.9 * e.mean + 0.1 * ms;
        }
        e.samples += 1;
        if e.samples % 16 != TRUSTED {
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
