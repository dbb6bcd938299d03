//! The metrics every kaas report prints, with the names of DESIGN.md section 5:
//! `requests, admitted, rejected, completed, slo_met, slo_attainment,
//! admitted_slo_attainment, goodput_rps, cold_starts, cold_start_rate, wait_ms,
//! latency_ms` (each `mean, p50, p95, p99`), `fairness_jain, utilization, cost`.

use serde::{Deserialize, Serialize};

use crate::model::{FunctionId, MS, Nanos, SEC};
use crate::sketch::Histogram;

/// Mean and percentiles of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Distribution {
    fn of(mean: f64, h: &Histogram) -> Self {
        Distribution { mean, p50: h.quantile(0.5), p95: h.quantile(0.95), p99: h.quantile(0.99) }
    }
}

/// One report row: overall, or for one function.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requests offered.
    pub requests: u64,
    /// Requests admitted.
    pub admitted: u64,
    /// Requests rejected at arrival.
    pub rejected: u64,
    /// Requests that ran to completion.
    pub completed: u64,
    /// Requests completed by their deadline.
    pub slo_met: u64,
    /// `slo_met / requests` (a rejection counts as a miss).
    pub slo_attainment: f64,
    /// `slo_met / admitted`.
    pub admitted_slo_attainment: f64,
    /// Requests that met their deadline per second of the run.
    pub goodput_rps: f64,
    /// Requests whose first dispatch was a cold start.
    pub cold_starts: u64,
    /// `cold_starts` over requests that started.
    pub cold_start_rate: f64,
    /// Dispatch − arrival.
    pub wait_ms: Distribution,
    /// Completion − arrival.
    pub latency_ms: Distribution,
    /// Jain's index over functions of mean slowdown (latency / warm runtime on the fastest class).
    pub fairness_jain: f64,
    /// Busy slot-time over available slot-time.
    pub utilization: f64,
    /// Executed device-seconds × class price per second (a slot is 1/slots of a device).
    pub cost: f64,
    /// Admitted requests answered with an error without completing (shed, lost, failed).
    pub failed: u64,
}

/// Overall counters and sums.
#[derive(Clone, Debug, Default)]
struct Counts {
    requests: u64,
    admitted: u64,
    rejected: u64,
    started: u64,
    completed: u64,
    slo_met: u64,
    failed: u64,
    cold_starts: u64,
    busy_ns: u64,
    cost: f64,
    wait_sum: f64,
    latency_sum: f64,
}

impl Counts {
    fn report(
        &self,
        duration_s: f64,
        available: f64,
        wait_ms: Distribution,
        latency_ms: Distribution,
    ) -> Report {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Report {
            requests: self.requests,
            admitted: self.admitted,
            rejected: self.rejected,
            completed: self.completed,
            slo_met: self.slo_met,
            slo_attainment: ratio(self.slo_met, self.requests),
            admitted_slo_attainment: ratio(self.slo_met, self.admitted),
            goodput_rps: if duration_s > 0.0 { self.slo_met as f64 / duration_s } else { 0.0 },
            cold_starts: self.cold_starts,
            cold_start_rate: ratio(self.cold_starts, self.started),
            wait_ms,
            latency_ms,
            fairness_jain: 1.0,
            utilization: if available > 0.0 { self.busy_ns as f64 / SEC as f64 / available } else { 0.0 },
            cost: self.cost,
            failed: self.failed,
        }
    }

    fn mean_latency(&self) -> f64 {
        if self.completed == 0 { 0.0 } else { self.latency_sum / self.completed as f64 }
    }

    fn mean_wait(&self) -> f64 {
        if self.started == 0 { 0.0 } else { self.wait_sum / self.started as f64 }
    }
}

/// What every request updates of its function: one cache line. A simulation of
/// thousands of functions touches a random one per request, so this is kept to a line,
/// and the histograms are filled later in batches (see [`Metrics`]).
#[derive(Clone, Debug, Default)]
#[repr(C, align(64))]
struct FunctionHot {
    admitted: u64,
    started: u64,
    completed: u64,
    busy_ns: u64,
    cost: f64,
    wait_sum: f64,
    latency_sum: f64,
    /// Low 32 bits; each wrap is carried into [`FunctionRest`].
    slo_met: u32,
    /// Low 32 bits; each wrap is carried into [`FunctionRest`].
    cold_starts: u32,
}

/// The rest of a function's accumulators: rare counters and the histograms.
#[derive(Clone, Debug, Default)]
struct FunctionRest {
    rejected: u64,
    failed: u64,
    slo_met_carried: u64,
    cold_starts_carried: u64,
    /// Wait and latency at 1 % accuracy (zero waits are counted by `started` alone).
    wait: Histogram,
    latency: Histogram,
    warm_runtime: f64,
}

/// Counts one into a 32-bit counter whose wraps are carried into `carried`.
#[inline]
fn bump(low: &mut u32, carried: &mut u64) {
    *low = low.wrapping_add(1);
    if *low == 0 {
        *carried += 1 << 32;
    }
}

/// A histogram sample waiting to be applied: function and kind (`function << 1`, plus 1
/// for a latency rather than a wait), and the value in milliseconds. The bucket index is
/// worked out when the batch is applied: its logarithm is a long chain of dependent
/// floating-point operations, which stalled the request path when done per sample and
/// overlaps across samples in a batch.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    key: u64,
    value: f64,
}

/// Samples buffered before they are applied, grouped by function.
const PENDING_BATCH: usize = 1 << 16;

fn pending(f: FunctionId, latency: bool, value: f64) -> Pending {
    Pending { key: (f.0 as u64) << 1 | latency as u64, value }
}

/// Accumulates outcomes into [`Report`]s, overall and per function, in bounded memory.
///
/// Every wait and latency goes into one histogram, its function's (1 % relative
/// accuracy, as the overall quantiles need); the overall distributions are those
/// histograms merged when a report is made, so a request costs one bucket update.
///
/// Per-function histogram samples are buffered and applied in batches grouped by
/// function (a counting sort), so the histograms of thousands of functions are walked in
/// order rather than hit at random once per request.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    all: Counts,
    /// Samples of functions that were never declared (overall only).
    other_wait: Histogram,
    other_latency: Histogram,
    hot: Vec<FunctionHot>,
    rest: Vec<FunctionRest>,
    names: Vec<String>,
    pending: Vec<Pending>,
    scratch: Vec<Pending>,
}

impl Metrics {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a function with its warm runtime on its fastest class (for slowdown).
    pub fn add_function(&mut self, name: &str, warm_runtime: Nanos) -> FunctionId {
        let warm_runtime = warm_runtime.max(1) as f64 / MS as f64;
        self.hot.push(FunctionHot::default());
        self.rest.push(FunctionRest { warm_runtime, ..FunctionRest::default() });
        self.names.push(name.to_string());
        FunctionId(self.hot.len() as u32 - 1)
    }

    #[inline]
    fn known(&self, f: FunctionId) -> bool {
        (f.0 as usize) < self.hot.len()
    }

    #[inline]
    fn defer(&mut self, p: Pending) {
        self.pending.push(p);
        if self.pending.len() >= PENDING_BATCH {
            self.apply_pending();
        }
    }

    /// Applies buffered histogram samples, grouped by function.
    fn apply_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.hot.len();
        let mut starts = vec![0usize; n + 1];
        for p in &self.pending {
            starts[(p.key >> 1) as usize + 1] += 1;
        }
        for i in 1..=n {
            starts[i] += starts[i - 1];
        }
        self.scratch.clear();
        self.scratch.resize(self.pending.len(), Pending::default());
        for &p in &self.pending {
            let f = (p.key >> 1) as usize;
            self.scratch[starts[f]] = p;
            starts[f] += 1;
        }
        self.pending.clear();
        for p in &self.scratch {
            let rest = &mut self.rest[(p.key >> 1) as usize];
            let h = if p.key & 1 != 0 { &mut rest.latency } else { &mut rest.wait };
            h.add(p.value);
        }
    }

    /// A request was rejected at arrival.
    pub fn rejected(&mut self, f: FunctionId) {
        self.all.requests += 1;
        self.all.rejected += 1;
        if let Some(r) = self.rest.get_mut(f.0 as usize) {
            r.rejected += 1;
        }
    }

    /// A request was admitted.
    #[inline]
    pub fn admitted(&mut self, f: FunctionId) {
        self.all.requests += 1;
        self.all.admitted += 1;
        if let Some(h) = self.hot.get_mut(f.0 as usize) {
            h.admitted += 1;
        }
    }

    /// A request's first kernel started after waiting `wait`.
    pub fn started(&mut self, f: FunctionId, wait: Nanos, cold: bool) {
        let w = wait as f64 / MS as f64;
        self.all.started += 1;
        self.all.cold_starts += cold as u64;
        self.all.wait_sum += w;
        if !self.known(f) {
            self.other_wait.add(w);
            return;
        }
        let i = f.0 as usize;
        let h = &mut self.hot[i];
        h.started += 1;
        h.wait_sum += w;
        if cold {
            bump(&mut h.cold_starts, &mut self.rest[i].cold_starts_carried);
        }
        // Zero waits, the common case, are not recorded: they are `started` less the
        // histogram's samples.
        if w >= 1e-9 {
            self.defer(pending(f, false, w));
        }
    }

    /// A device slot was busy for `busy` (load + run) on a class of the given price per
    /// device-hour and slot count.
    #[inline]
    pub fn busy(&mut self, f: FunctionId, busy: Nanos, price_per_hour: f64, slots: u32) {
        let cost = busy as f64 * (price_per_hour / slots.max(1) as f64) * (1.0 / (3600.0 * SEC as f64));
        self.all.busy_ns += busy;
        self.all.cost += cost;
        if let Some(h) = self.hot.get_mut(f.0 as usize) {
            h.busy_ns += busy;
            h.cost += cost;
        }
    }

    /// A request completed with end-to-end latency `latency`, by its deadline or not.
    pub fn completed(&mut self, f: FunctionId, latency: Nanos, met: bool) {
        let l = latency as f64 / MS as f64;
        self.all.completed += 1;
        self.all.slo_met += met as u64;
        self.all.latency_sum += l;
        if !self.known(f) {
            self.other_latency.add(l);
            return;
        }
        let i = f.0 as usize;
        let h = &mut self.hot[i];
        h.completed += 1;
        h.latency_sum += l;
        if met {
            bump(&mut h.slo_met, &mut self.rest[i].slo_met_carried);
        }
        self.defer(pending(f, true, l));
    }

    /// An admitted request was answered with an error (shed, lost, failed).
    pub fn failed(&mut self, f: FunctionId) {
        self.all.failed += 1;
        if let Some(r) = self.rest.get_mut(f.0 as usize) {
            r.failed += 1;
        }
    }

    fn function_counts(&self, i: usize) -> Counts {
        let (h, r) = (&self.hot[i], &self.rest[i]);
        Counts {
            requests: h.admitted + r.rejected,
            admitted: h.admitted,
            rejected: r.rejected,
            started: h.started,
            completed: h.completed,
            slo_met: h.slo_met as u64 + r.slo_met_carried,
            failed: r.failed,
            cold_starts: h.cold_starts as u64 + r.cold_starts_carried,
            busy_ns: h.busy_ns,
            cost: h.cost,
            wait_sum: h.wait_sum,
            latency_sum: h.latency_sum,
        }
    }

    /// Jain's fairness index over functions with completions, of mean slowdown.
    pub fn fairness(&self) -> f64 {
        let xs: Vec<f64> = (0..self.hot.len())
            .filter(|&i| self.hot[i].completed > 0)
            .map(|i| self.function_counts(i).mean_latency() / self.rest[i].warm_runtime)
            .collect();
        jain(&xs)
    }

    /// Applies buffered samples and completes the per-function wait histograms with
    /// their zeros.
    fn settle(&mut self) {
        self.apply_pending();
        for (h, r) in self.hot.iter().zip(&mut self.rest) {
            r.wait.set_zeros(h.started - r.wait.nonzero());
        }
    }

    /// Overall wait and latency histograms: every function's merged.
    fn overall(&mut self) -> (Histogram, Histogram) {
        self.settle();
        let (mut wait, mut latency) = (self.other_wait.clone(), self.other_latency.clone());
        for r in &self.rest {
            wait.merge(&r.wait);
            latency.merge(&r.latency);
        }
        (wait, latency)
    }

    /// The overall report for a run of `duration` with `slot_seconds` of available
    /// slot-time. Quantiles are within 1 %; means are exact.
    pub fn report(&mut self, duration: Nanos, slot_seconds: f64) -> Report {
        let (wait, latency) = self.overall();
        let mut r = self.all.report(
            duration as f64 / SEC as f64,
            slot_seconds,
            Distribution::of(self.all.mean_wait(), &wait),
            Distribution::of(self.all.mean_latency(), &latency),
        );
        r.fairness_jain = self.fairness();
        r
    }

    /// Overall end-to-end latency quantiles in milliseconds, for CDF plots.
    pub fn latency_quantiles(&mut self, qs: &[f64]) -> Vec<f64> {
        let (_, latency) = self.overall();
        qs.iter().map(|&q| latency.quantile(q)).collect()
    }

    /// Per-function reports, by function name; quantiles within 1 %.
    pub fn per_function(&mut self, duration: Nanos, slot_seconds: f64) -> Vec<(String, Report)> {
        self.settle();
        let dist = Distribution::of;
        (0..self.hot.len())
            .map(|i| {
                let c = self.function_counts(i);
                let r = &self.rest[i];
                let report = c.report(
                    duration as f64 / SEC as f64,
                    slot_seconds,
                    dist(c.mean_wait(), &r.wait),
                    dist(c.mean_latency(), &r.latency),
                );
                (self.names[i].clone(), report)
            })
            .collect()
    }
}

/// Jain's fairness index: `(Σx)² / (n Σx²)`; 1 for an empty or all-zero set.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || sq == 0.0 { 1.0 } else { sum * sum / (xs.len() as f64 * sq) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_and_ratios() {
        let mut m = Metrics::new();
        let a = m.add_function("a", MS);
        let b = m.add_function("b", MS);
        m.rejected(a);
        m.admitted(a);
        m.started(a, 2 * MS, true);
        m.busy(a, 10 * MS, 3600.0, 1);
        m.completed(a, 4 * MS, true);
        m.admitted(b);
        m.started(b, 0, false);
        m.busy(b, 10 * MS, 3600.0, 2);
        m.completed(b, 12 * MS, false);
        let r = m.report(SEC, 2.0);
        assert_eq!((r.requests, r.admitted, r.rejected, r.completed, r.slo_met), (3, 2, 1, 2, 1));
        assert!((r.slo_attainment - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.admitted_slo_attainment - 0.5).abs() < 1e-12);
        assert_eq!(r.cold_starts, 1);
        assert!((r.cold_start_rate - 0.5).abs() < 1e-12);
        assert!((r.goodput_rps - 1.0).abs() < 1e-12);
        assert!((r.utilization - 0.02 / 2.0).abs() < 1e-12);
        // 10 ms at 1 $/s on a whole device + 10 ms on half a device.
        assert!((r.cost - 0.015).abs() < 1e-12);
        // Slowdowns 4 and 12: (16)² / (2 × 160) = 0.8.
        assert!((r.fairness_jain - 0.8).abs() < 1e-12);
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "requests",
            "admitted",
            "rejected",
            "completed",
            "slo_met",
            "slo_attainment",
            "admitted_slo_attainment",
            "goodput_rps",
            "cold_starts",
            "cold_start_rate",
            "wait_ms",
            "latency_ms",
            "fairness_jain",
            "utilization",
            "cost",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in ["mean", "p50", "p95", "p99"] {
            assert!(json["latency_ms"].get(key).is_some() && json["wait_ms"].get(key).is_some());
        }
        let per = m.per_function(SEC, 2.0);
        assert_eq!(per[1].0, "b");
        assert_eq!(per[1].1.slo_met, 0);
    }

    #[test]
    fn jain_bounds() {
        assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }
}
