//! Deadline admission's margin, learned from the scheduler's own prediction errors.
//!
//! Admission admits a request when its predicted completion is at most
//! `arrival + (1 − headroom) × deadline`. The configured headroom is a floor: where
//! predictions run late (a policy whose order differs from the prediction's, service
//! times that vary, a shared machine's stalls the runtime model cannot see), the headroom
//! rises to the 99th percentile of how late, relative to the deadline, admitted requests
//! completed compared with their prediction over the last [`WINDOW`] completions (one
//! that made its deadline counts as on time); when predictions hold, it falls back to the
//! floor. The core learns it, so the executor and the simulator admit
//! alike.

use std::collections::VecDeque;

/// Completions the margin looks back over.
pub const WINDOW: usize = 256;
/// The margin is recomputed every this many completions.
const EVERY: u64 = 32;
/// Never keep more than this share of a deadline in reserve.
pub const CEILING: f64 = 0.6;

/// Recent relative prediction errors (positive: completed later than predicted).
#[derive(Debug, Default)]
pub(crate) struct Margin {
    errors: VecDeque<f64>,
    seen: u64,
    /// Scratch for selecting the percentile (kept, not allocated per recompute).
    scratch: Vec<f64>,
}

impl Margin {
    /// Records one admitted request's completion against its prediction (both from
    /// arrival, in any one unit) and its relative deadline; returns a new headroom when it
    /// is time to recompute (`floor` is the configured one).
    ///
    /// A completion that made its deadline counts as no error however far it came after
    /// its prediction: a policy may use slack on purpose (`slo-aware` sends work to a
    /// cheaper, slower class that still makes the deadline), and that is no reason to
    /// admit less. Only misses raise the margin.
    pub(crate) fn record(&mut self, predicted: f64, actual: f64, deadline: f64, floor: f64) -> Option<f64> {
        if deadline <= 0.0 {
            return None;
        }
        if self.errors.len() == WINDOW {
            self.errors.pop_front();
        }
        let within = actual <= deadline;
        self.errors.push_back(if within { 0.0 } else { (actual - predicted) / deadline });
        self.seen += 1;
        if !self.seen.is_multiple_of(EVERY) || self.errors.len() < EVERY as usize {
            return None;
        }
        let n = self.errors.len();
        let at = ((n as f64 * 0.99) as usize).min(n - 1);
        // Most errors are 0 (in time): with fewer misses than ranks above `at`, the
        // percentile is at most 0, which the floor (≥ 0) clamps alike; else select it
        // (no full sort).
        let late = self.errors.iter().filter(|&&e| e > 0.0).count();
        let p99 = if late < n - at {
            0.0
        } else {
            self.scratch.clear();
            self.scratch.extend(self.errors.iter().copied());
            *self.scratch.select_nth_unstable_by(at, f64::total_cmp).1
        };
        Some(p99.clamp(floor, CEILING.max(floor)))
    }

    /// Forgets what was learned (the policy or its headroom changed).
    pub(crate) fn reset(&mut self) {
        self.errors.clear();
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_follows_late_predictions_and_returns_to_the_floor() {
        let mut m = Margin::default();
        let mut last = None;
        // Predictions 30 % of the deadline early, completing past the deadline.
        for _ in 0..64 {
            last = m.record(75.0, 105.0, 100.0, 0.1).or(last);
        }
        assert!((last.unwrap() - 0.3).abs() < 1e-9, "{last:?}");
        // As late against the prediction, but in time: slack used on purpose.
        let mut m2 = Margin::default();
        let mut within = None;
        for _ in 0..64 {
            within = m2.record(50.0, 80.0, 100.0, 0.1).or(within);
        }
        assert_eq!(within, Some(0.1));
        // Predictions that hold bring it back to the configured floor.
        for _ in 0..WINDOW {
            last = m.record(50.0, 45.0, 100.0, 0.1).or(last);
        }
        assert_eq!(last, Some(0.1));
        // Never above the ceiling.
        for _ in 0..WINDOW {
            last = m.record(0.0, 500.0, 100.0, 0.1).or(last);
        }
        assert_eq!(last, Some(CEILING));
    }
}
