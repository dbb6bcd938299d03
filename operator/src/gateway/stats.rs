//! Per-function counts for `KernelFunction.status`: what this gateway replica answered
//! since it started, in a form that sums across replicas (counters, and a latency
//! histogram with fixed log-spaced buckets). Each replica publishes its [`Snapshot`];
//! the leader merges them ([`merge`]) and writes [`FunctionFigures`] to each function's
//! status (`controller::stats`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Buckets per doubling of latency: a percentile read from the histogram is within
/// 2^(1/8) − 1 ≈ 9 % of the true value.
const PER_OCTAVE: f64 = 8.0;
/// The first bucket's upper bound, ms (latencies below it share it).
const FLOOR_MS: f64 = 0.01;
/// Buckets (FLOOR_MS · 2^(BUCKETS/8) ≈ 4 months: the last one holds anything longer).
const BUCKETS: u16 = 320;

/// The bucket of a latency in ms.
fn bucket(ms: f64) -> u16 {
    if ms.is_nan() || ms <= FLOOR_MS {
        return 0;
    }
    ((ms / FLOOR_MS).log2() * PER_OCTAVE).ceil().min(f64::from(BUCKETS - 1)) as u16
}

/// The upper bound of a bucket, ms.
fn upper_ms(b: u16) -> f64 {
    FLOOR_MS * (f64::from(b) / PER_OCTAVE).exp2()
}

/// What one replica answered for one function (valid requests only: a malformed body or
/// wrong buffer size is the caller's error, not the function's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCounts {
    /// Answered requests: served, rejected, failed or past their deadline.
    pub answered: u64,
    /// Served.
    pub served: u64,
    /// Served within the deadline.
    pub in_time: u64,
    /// Served after a cold start.
    pub cold_starts: u64,
    /// Turned away by admission control (429).
    pub rejected: u64,
    /// Served latency: bucket → count (only non-empty buckets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency: BTreeMap<u16, u64>,
}

impl FunctionCounts {
    /// Adds another replica's counts.
    pub fn add(&mut self, o: &FunctionCounts) {
        self.answered += o.answered;
        self.served += o.served;
        self.in_time += o.in_time;
        self.cold_starts += o.cold_starts;
        self.rejected += o.rejected;
        for (b, n) in &o.latency {
            *self.latency.entry((*b).min(BUCKETS - 1)).or_default() += n;
        }
    }

    /// The latency (ms) at quantile `q` of served requests: the upper bound of the bucket
    /// holding it. `None` before anything was served.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.values().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &self.latency {
            seen += n;
            if seen >= rank {
                return Some(upper_ms(*b));
            }
        }
        self.latency.keys().next_back().map(|b| upper_ms(*b))
    }

    /// The figures a function's status shows.
    pub fn figures(&self) -> FunctionFigures {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        FunctionFigures {
            invocations: self.answered,
            slo_attainment: (self.answered > 0).then(|| round(self.in_time as f64 / self.answered as f64)),
            p50_ms: self.quantile_ms(0.50).map(round),
            p95_ms: self.quantile_ms(0.95).map(round),
            p99_ms: self.quantile_ms(0.99).map(round),
            cold_starts: self.cold_starts,
            rejections: self.rejected,
        }
    }
}

/// What `KernelFunction.status` shows of a function's traffic, over every replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionFigures {
    /// Answered requests.
    pub invocations: u64,
    /// Fraction answered within the deadline (rejections and failures count as misses).
    pub slo_attainment: Option<f64>,
    /// Served latency percentiles, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Served after a cold start.
    pub cold_starts: u64,
    /// Rejected by admission control.
    pub rejections: u64,
}

/// One replica's counts, as it publishes them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The replica (its Lease identity).
    pub replica: String,
    /// By function key (`namespace/name`).
    pub functions: BTreeMap<String, FunctionCounts>,
}

/// Sums replicas' snapshots per function.
pub fn merge<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> BTreeMap<String, FunctionCounts> {
    let mut out: BTreeMap<String, FunctionCounts> = BTreeMap::new();
    for s in snapshots {
        for (k, c) in &s.functions {
            out.entry(k.clone()).or_default().add(c);
        }
    }
    out
}

/// This replica's counts, updated on every answer.
#[derive(Default)]
pub struct Stats {
    by_function: Mutex<HashMap<String, FunctionCounts>>,
}

impl Stats {
    /// Records an answer to a valid request of `key`: `served` is `(latency ms, in time,
    /// cold)`; `rejected` whether admission turned it away.
    pub fn record(&self, key: &str, served: Option<(f64, bool, bool)>, rejected: bool) {
        let mut m = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
        let c = match m.get_mut(key) {
            Some(c) => c,
            None => m.entry(key.to_string()).or_default(),
        };
        c.answered += 1;
        c.rejected += u64::from(rejected);
        if let Some((ms, in_time, cold)) = served {
            c.served += 1;
            c.in_time += u64::from(in_time);
            c.cold_starts += u64::from(cold);
            *c.latency.entry(bucket(ms)).or_default() += 1;
        }
    }

    /// Drops a removed function's counts.
    pub fn forget(&self, key: &str) {
        self.by_function.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// At most `limit` functions' counts, the most answered first (a published snapshot
    /// must fit a ConfigMap).
    pub fn snapshot(&self, replica: &str, limit: usize) -> Snapshot {
        let m = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&String, &FunctionCounts)> = m.iter().collect();
        if all.len() > limit {
            all.sort_by(|a, b| b.1.answered.cmp(&a.1.answered).then(a.0.cmp(b.0)));
            all.truncate(limit);
        }
        Snapshot {
            replica: replica.to_string(),
            functions: all.into_iter().map(|(k, c)| (k.clone(), c.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_the_histogram_are_within_a_bucket() {
        let s = Stats::default();
        // 1..=1000 ms, one each.
        for ms in 1..=1000 {
            s.record("a/f", Some((f64::from(ms), ms <= 900, ms == 1)), false);
        }
        let c = &s.snapshot("r", 10).functions["a/f"];
        for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = c.quantile_ms(q).unwrap();
            assert!(got >= want && got <= want * 1.095, "p{q}: {got} vs {want}");
        }
        let f = c.figures();
        assert_eq!((f.invocations, f.cold_starts, f.rejections), (1000, 1, 0));
        assert_eq!(f.slo_attainment, Some(0.9));
    }

    #[test]
    fn replicas_sum_and_rejections_count_as_misses() {
        let (a, b) = (Stats::default(), Stats::default());
        for _ in 0..30 {
            a.record("n/f", Some((2.0, true, false)), false);
        }
        for _ in 0..10 {
            b.record("n/f", None, true);
        }
        b.record("n/g", Some((1e12, false, true)), false);
        let merged = merge(&[a.snapshot("a", 10), b.snapshot("b", 10)]);
        let f = merged["n/f"].figures();
        assert_eq!((f.invocations, f.rejections), (40, 10));
        assert_eq!(f.slo_attainment, Some(0.75), "10 rejections of 40 are misses");
        let p50 = f.p50_ms.unwrap();
        assert!((2.0..2.2).contains(&p50), "{p50}");
        let g = merged["n/g"].figures();
        assert!(g.p99_ms.unwrap() > 1e9, "an absurd latency lands in the last bucket");
        assert_eq!(merged["n/g"].latency.keys().copied().collect::<Vec<_>>(), vec![BUCKETS - 1]);
    }

    #[test]
    fn a_snapshot_keeps_the_busiest_functions_within_its_limit() {
        let s = Stats::default();
        for (i, n) in [("x/a", 5), ("x/b", 50), ("x/c", 1)] {
            for _ in 0..n {
                s.record(i, None, false);
            }
        }
        let snap = s.snapshot("r", 2);
        assert_eq!(snap.functions.keys().collect::<Vec<_>>(), vec!["x/a", "x/b"]);
        s.forget("x/b");
        assert!(!s.snapshot("r", 10).functions.contains_key("x/b"));
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);
    }
}
