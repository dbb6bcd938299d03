//! Admitted work still to come, for deadline-ordered prediction.
//!
//! Under EDF (and `slo-aware`, which orders by deadline too) a request does not only wait
//! for the work queued ahead of it when it arrives: a request admitted after it with an
//! earlier absolute deadline runs first. A request of function g (relative deadline d_g)
//! arriving at t has deadline t + d_g, before a waiting request's D while t < D − d_g, and
//! it runs first if it arrives before that request starts. So between now and the start S
//! the work that cuts in is, per function g with a shorter deadline, its admitted work rate
//! times `min(S, D − d_g) − now`. Rates are exponentially decayed sums of the work each
//! admitted request brings (ns on its fastest class), over [`TAU`]: long enough to average
//! a Poisson stream of a few requests a second, short enough to follow a burst.
//!
//! Without this term a function with long deadlines is predicted to start once the work
//! queued now is done, starts later under load, and its misses raise the learned margin
//! (see [`crate::margin`]) for every function: short-deadline requests that would be
//! served are refused (issue 13: `edf` on the heavy-tailed workload at 3× served 0.730 of
//! requests in time without it, 0.919 with it).

use crate::model::Nanos;

/// Time constant of the decayed arrival rates, ns.
pub(crate) const TAU: f64 = 1e9;
/// The common time base moves forward once it is this many time constants old (the
/// scaled sums grow as e^(t/τ) from it).
const REBASE: f64 = 64.0;

/// Per function: admitted work over the recent past, and the relative deadline its
/// requests carry. Each function's decayed sum is kept scaled to one common time base, so
/// reading every rate costs one exponential, not one per function.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inflow {
    /// Σ work × e^((t − base)/τ) over admitted requests (work in ns on the fastest class).
    scaled: Vec<f64>,
    base: Nanos,
    /// Relative deadline of the function's last admitted request.
    window: Vec<Nanos>,
    /// Functions with anything admitted (so a prediction reads only those).
    active: Vec<u32>,
}

impl Inflow {
    /// A request of `f` bringing `work` ns with relative deadline `window` was admitted.
    pub(crate) fn admit(&mut self, f: usize, now: Nanos, work: f64, window: Nanos) {
        if f >= self.scaled.len() {
            self.scaled.resize(f + 1, 0.0);
            self.window.resize(f + 1, 0);
        }
        let mut age = (now as f64 - self.base as f64) / TAU;
        if age > REBASE {
            let k = (-age).exp();
            self.scaled.iter_mut().for_each(|s| *s *= k);
            self.base = now;
            age = 0.0;
        }
        if self.scaled[f] == 0.0 {
            self.active.push(f as u32);
        }
        self.scaled[f] += work * age.exp();
        self.window[f] = window;
    }

    /// Work (ns on each request's fastest class) expected to be admitted from `now` until
    /// `until` with an absolute deadline before `deadline`.
    pub(crate) fn cut_ins(&self, now: Nanos, until: Nanos, deadline: Nanos) -> f64 {
        if until <= now || self.active.is_empty() {
            return 0.0;
        }
        let per_ns = (-(now as f64 - self.base as f64) / TAU).exp() / TAU;
        let mut work = 0.0;
        for &f in &self.active {
            let f = f as usize;
            let end = until.min(deadline.saturating_sub(self.window[f]));
            if end > now {
                work += self.scaled[f] * (end - now) as f64;
            }
        }
        work * per_ns
    }

    /// Whether nothing has been admitted since the last [`clear`](Self::clear).
    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Forgets every rate (deadline admission was switched off).
    pub(crate) fn clear(&mut self) {
        self.scaled.iter_mut().for_each(|s| *s = 0.0);
        self.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn only_shorter_deadlines_arriving_before_the_start_cut_in() {
        let mut inflow = Inflow::default();
        // f0: 10 ms of work every 10 ms (a full slot), deadline 50 ms; f1: deadline 1 s.
        let mut now = 0;
        // 200 s: the common time base moves on three times.
        for _ in 0..20_000 {
            inflow.admit(0, now, 10.0 * MS as f64, 50 * MS);
            inflow.admit(1, now, 1.0 * MS as f64, 1_000 * MS);
            now += 10 * MS;
        }
        // A request with deadline now + 1 s starting 100 ms from now: f0's requests cut in
        // for the whole 100 ms (about 100 ms of work), f1's never (same deadline or later).
        let w = inflow.cut_ins(now, now + 100 * MS, now + 1_000 * MS);
        assert!((w / (100 * MS) as f64 - 1.0).abs() < 0.05, "{w}");
        // With deadline now + 80 ms, f0's arrivals have earlier deadlines only for 30 ms.
        let w = inflow.cut_ins(now, now + 100 * MS, now + 80 * MS);
        assert!((w / (30 * MS) as f64 - 1.0).abs() < 0.05, "{w}");
        // Starting now: nothing cuts in.
        assert_eq!(inflow.cut_ins(now, now, now + 1_000 * MS), 0.0);
        // Long after the stream stopped the rate has decayed away.
        let later = now + 60 * 1_000 * MS;
        assert!(inflow.cut_ins(later, later + 100 * MS, later + 1_000 * MS) < 1.0);
        inflow.clear();
        assert_eq!(inflow.cut_ins(now, now + 100 * MS, now + 1_000 * MS), 0.0);
    }
}
