//! The metrics every kaas report prints, with the names of DESIGN.md section 5:
//! `requests, admitted, rejected, completed, slo_met, slo_attainment,
//! admitted_slo_attainment, goodput_rps, cold_starts, cold_start_rate, wait_ms,
//! latency_ms` (each `mean, p50, p95, p99`), `fairness_jain, utilization, cost`.

use serde::{Deserialize, Serialize};

use crate::model::{FunctionId, MS, Nanos, SEC};
use crate::sketch::{Histogram, Sketch};

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
    fn of(s: &Sketch) -> Self {
        Distribution { mean: s.mean(), p50: s.quantile(0.5), p95: s.quantile(0.95), p99: s.quantile(0.99) }
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

/// Counters and sums, overall and per function.
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
    busy: f64,
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
            utilization: if available > 0.0 { self.busy / available } else { 0.0 },
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

/// One function's accumulators: counters, and wait and latency histograms at 1 %
/// accuracy (the overall ones are 0.5 % sketches). Kept compact because a simulation
/// updates a random one of thousands with every request.
#[derive(Clone, Debug, Default)]
struct FunctionAcc {
    counts: Counts,
    wait: Histogram,
    latency: Histogram,
    warm_runtime: f64,
}

impl FunctionAcc {
    fn report(&self, duration_s: f64, available: f64) -> Report {
        let dist = |mean: f64, h: &Histogram| Distribution {
            mean,
            p50: h.quantile(0.5),
            p95: h.quantile(0.95),
            p99: h.quantile(0.99),
        };
        self.counts.report(
            duration_s,
            available,
            dist(self.counts.mean_wait(), &self.wait),
            dist(self.counts.mean_latency(), &self.latency),
        )
    }
}

/// Accumulates outcomes into [`Report`]s, overall and per function, in bounded memory.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    all: Counts,
    wait: Sketch,
    latency: Sketch,
    functions: Vec<FunctionAcc>,
    names: Vec<String>,
}

impl Metrics {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a function with its warm runtime on its fastest class (for slowdown).
    pub fn add_function(&mut self, name: &str, warm_runtime: Nanos) -> FunctionId {
        let warm_runtime = warm_runtime.max(1) as f64 / MS as f64;
        self.functions.push(FunctionAcc { warm_runtime, ..FunctionAcc::default() });
        self.names.push(name.to_string());
        FunctionId(self.functions.len() as u32 - 1)
    }

    fn both(&mut self, f: FunctionId) -> (&mut Counts, Option<&mut FunctionAcc>) {
        (&mut self.all, self.functions.get_mut(f.0 as usize))
    }

    /// A request was rejected at arrival.
    pub fn rejected(&mut self, f: FunctionId) {
        let (a, b) = self.both(f);
        for c in std::iter::once(a).chain(b.map(|b| &mut b.counts)) {
            c.requests += 1;
            c.rejected += 1;
        }
    }

    /// A request was admitted.
    pub fn admitted(&mut self, f: FunctionId) {
        let (a, b) = self.both(f);
        for c in std::iter::once(a).chain(b.map(|b| &mut b.counts)) {
            c.requests += 1;
            c.admitted += 1;
        }
    }

    /// A request's first kernel started after waiting `wait`.
    pub fn started(&mut self, f: FunctionId, wait: Nanos, cold: bool) {
        let w = wait as f64 / MS as f64;
        let ln = (w >= 1e-9).then(|| w.ln());
        self.wait.add_indexed(w, ln.map(|ln| self.wait.index_of_ln(ln)));
        let (a, mut b) = self.both(f);
        for c in std::iter::once(a).chain(b.as_deref_mut().map(|b| &mut b.counts)) {
            c.started += 1;
            c.cold_starts += cold as u64;
            c.wait_sum += w;
        }
        if let Some(b) = b {
            match ln {
                Some(ln) => b.wait.add_indexed(Histogram::index_of_ln(ln)),
                None => b.wait.add_zero(),
            }
        }
    }

    /// A device slot was busy for `busy` (load + run) on a class of the given price per
    /// device-hour and slot count.
    pub fn busy(&mut self, f: FunctionId, busy: Nanos, price_per_hour: f64, slots: u32) {
        let secs = busy as f64 / SEC as f64;
        let cost = secs * price_per_hour / 3600.0 / slots.max(1) as f64;
        let (a, b) = self.both(f);
        for c in std::iter::once(a).chain(b.map(|b| &mut b.counts)) {
            c.busy += secs;
            c.cost += cost;
        }
    }

    /// A request completed with end-to-end latency `latency`, by its deadline or not.
    pub fn completed(&mut self, f: FunctionId, latency: Nanos, met: bool) {
        let l = latency as f64 / MS as f64;
        let ln = (l >= 1e-9).then(|| l.ln());
        self.latency.add_indexed(l, ln.map(|ln| self.latency.index_of_ln(ln)));
        let (a, mut b) = self.both(f);
        for c in std::iter::once(a).chain(b.as_deref_mut().map(|b| &mut b.counts)) {
            c.completed += 1;
            c.slo_met += met as u64;
            c.latency_sum += l;
        }
        if let Some(b) = b {
            match ln {
                Some(ln) => b.latency.add_indexed(Histogram::index_of_ln(ln)),
                None => b.latency.add_zero(),
            }
        }
    }

    /// An admitted request was answered with an error (shed, lost, failed).
    pub fn failed(&mut self, f: FunctionId) {
        let (a, b) = self.both(f);
        for c in std::iter::once(a).chain(b.map(|b| &mut b.counts)) {
            c.failed += 1;
        }
    }

    /// Jain's fairness index over functions with completions, of mean slowdown.
    pub fn fairness(&self) -> f64 {
        let xs: Vec<f64> = self
            .functions
            .iter()
            .filter(|a| a.counts.completed > 0)
            .map(|a| a.counts.mean_latency() / a.warm_runtime)
            .collect();
        jain(&xs)
    }

    /// The overall report for a run of `duration` with `slot_seconds` of available slot-time.
    pub fn report(&self, duration: Nanos, slot_seconds: f64) -> Report {
        let mut r = self.all.report(
            duration as f64 / SEC as f64,
            slot_seconds,
            Distribution::of(&self.wait),
            Distribution::of(&self.latency),
        );
        r.fairness_jain = self.fairness();
        r
    }

    /// Overall end-to-end latency quantiles in milliseconds, for CDF plots.
    pub fn latency_quantiles(&self, qs: &[f64]) -> Vec<f64> {
        qs.iter().map(|&q| self.latency.quantile(q)).collect()
    }

    /// Per-function reports, by function name. Their wait and latency quantiles are
    /// within 1 % (the overall report's within 0.5 %).
    pub fn per_function(&self, duration: Nanos, slot_seconds: f64) -> Vec<(String, Report)> {
        self.names
            .iter()
            .zip(&self.functions)
            .map(|(n, a)| (n.clone(), a.report(duration as f64 / SEC as f64, slot_seconds)))
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
