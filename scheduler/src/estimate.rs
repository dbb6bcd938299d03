//! Runtimes learned from measurements, for the models that replace a declared profile
//! with what kernels actually take (the executor's scheduler, the gateway's routing).

/// An EWMA of a runtime's mean and of its absolute deviation, in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuntimeEstimate {
    /// Mean, ms.
    pub mean: f64,
    /// Mean absolute deviation, ms.
    pub deviation: f64,
    /// Samples folded in.
    pub samples: u64,
}

impl RuntimeEstimate {
    /// Samples before the estimate is trusted over a declared profile.
    pub const TRUSTED: u64 = 8;

    /// An estimate from its first sample.
    pub fn first(ms: f64) -> Self {
        RuntimeEstimate { mean: ms, deviation: 0.0, samples: 1 }
    }

    /// Folds one sample in (weight 0.1).
    pub fn observe(&mut self, ms: f64) {
        self.deviation = 0.9 * self.deviation + 0.1 * (ms - self.mean).abs();
        self.mean = 0.9 * self.mean + 0.1 * ms;
        self.samples += 1;
    }

    /// Whether there are enough samples to trust it.
    pub fn trusted(&self) -> bool {
        self.samples >= Self::TRUSTED
    }

    /// What a model should use: the mean plus two deviations (a margin for variance)
    /// once trusted, the mean so far before.
    pub fn predicted(&self) -> f64 {
        if self.trusted() { self.mean + 2.0 * self.deviation } else { self.mean }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_tracks_the_mean_and_keeps_a_margin_for_variance() {
        let mut e = RuntimeEstimate::first(10.0);
        assert_eq!(e.predicted(), 10.0);
        for i in 0..200 {
            e.observe(if i % 2 == 0 { 8.0 } else { 12.0 });
        }
        assert!(e.trusted());
        assert!((e.mean - 10.0).abs() < 0.5, "{e:?}");
        assert!(e.predicted() > 12.0 && e.predicted() < 15.0, "mean + 2 deviations: {e:?}");
    }
}
