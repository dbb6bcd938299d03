//! A streaming quantile sketch with bounded relative error (logarithmic buckets, as in
//! DDSketch): every quantile it returns is within `alpha` of a true sample value at that
//! rank, in relative terms, and memory grows with the logarithm of the value range, not
//! with the number of samples.

/// Relative accuracy of [`Sketch::new`]: 0.5 %, comfortably inside the 1 % required at p99.
pub const DEFAULT_ALPHA: f64 = 0.005;

/// `x.ceil() as i32` for the bucket range, without a call into libm (x86-64 without
/// SSE 4.1 has no rounding instruction, and this runs for every sample).
#[inline]
fn ceil(x: f64) -> i32 {
    let t = x as i32;
    if (t as f64) < x { t + 1 } else { t }
}

/// A quantile sketch over non-negative values.
#[derive(Clone, Debug)]
pub struct Sketch {
    inv_ln_gamma: f64,
    gamma: f64,
    offset: i32,
    counts: Vec<u64>,
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA)
    }
}

impl Sketch {
    /// A sketch with relative accuracy `alpha` (0 < alpha < 1).
    pub fn new(alpha: f64) -> Self {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Sketch {
            inv_ln_gamma: 1.0 / gamma.ln(),
            gamma,
            offset: 0,
            counts: Vec::new(),
            zeros: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds a sample. Values below 1e-9 count as zero.
    #[inline]
    pub fn add(&mut self, v: f64) {
        let i = self.index_of(v);
        self.add_indexed(v, i);
    }

    /// The bucket index of `v` (`None` for zero), to add the same value to several
    /// sketches of the same accuracy while computing the logarithm once.
    #[inline]
    pub fn index_of(&self, v: f64) -> Option<i32> {
        (v >= 1e-9).then(|| ceil(v.ln() * self.inv_ln_gamma))
    }

    /// The bucket index of a value whose natural logarithm is `ln_v` (the value is at
    /// least 1e-9), so sketches of different accuracies share one logarithm.
    #[inline]
    pub fn index_of_ln(&self, ln_v: f64) -> i32 {
        ceil(ln_v * self.inv_ln_gamma)
    }

    /// Adds `v` whose index [`index_of`](Self::index_of) computed.
    #[inline]
    pub fn add_indexed(&mut self, v: f64, index: Option<i32>) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        match index {
            None => self.zeros += 1,
            Some(i) => *self.bucket(i) += 1,
        }
    }

    /// The counter of bucket `i`, growing the bucket range to include it.
    #[inline]
    fn bucket(&mut self, i: i32) -> &mut u64 {
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(0);
        } else if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        } else if (i - self.offset) as usize >= self.counts.len() {
            self.counts.resize((i - self.offset) as usize + 1, 0);
        }
        &mut self.counts[(i - self.offset) as usize]
    }

    /// Adds every sample of another sketch with the same accuracy.
    pub fn merge(&mut self, other: &Sketch) {
        for (j, &c) in other.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            *self.bucket(other.offset + j as i32) += c;
        }
        self.zeros += other.zeros;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn value_of(&self, i: i32) -> f64 {
        2.0 * self.gamma.powi(i) / (self.gamma + 1.0)
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the samples (exact), 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum / self.count as f64 }
    }

    /// Largest sample (exact), 0 when empty.
    pub fn max(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.max }
    }

    /// The `q` quantile (0 ≤ q ≤ 1) by nearest rank, 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank <= self.zeros {
            return 0.0;
        }
        let mut seen = self.zeros;
        for (j, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.value_of(self.offset + j as i32).clamp(self.min.max(0.0), self.max);
            }
        }
        self.max
    }

    /// Buckets in use (for memory checks).
    pub fn buckets(&self) -> usize {
        self.counts.len()
    }
}

/// A compact companion of [`Sketch`] for per-key distributions: logarithmic buckets with
/// 16-bit counts (each overflow of 65,536 carried into a small side map) and no exact
/// statistics, so that thousands of them (one per function in a simulation) stay small
/// enough to live in the CPU's caches. Quantiles are within `alpha` of a true sample
/// value at that rank, in relative terms, like [`Sketch`]'s.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    offset: i32,
    counts: Vec<u16>,
    /// Bucket → samples carried out of its 16-bit counter.
    carried: std::collections::BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

/// Relative accuracy of the per-key [`Histogram`]s: 1 %.
pub const HISTOGRAM_ALPHA: f64 = 0.01;

/// `1 / ln(gamma)` for [`HISTOGRAM_ALPHA`].
fn histogram_inv_ln_gamma() -> f64 {
    1.0 / histogram_gamma().ln()
}

fn histogram_gamma() -> f64 {
    (1.0 + HISTOGRAM_ALPHA) / (1.0 - HISTOGRAM_ALPHA)
}

impl Histogram {
    /// The bucket index of a value whose natural logarithm is `ln_v`.
    #[inline]
    pub fn index_of_ln(ln_v: f64) -> i32 {
        // A constant after inlining: computed from HISTOGRAM_ALPHA.
        ceil(ln_v * histogram_inv_ln_gamma())
    }

    /// Samples that are not zero.
    pub fn nonzero(&self) -> u64 {
        self.count - self.zeros
    }

    /// Sets the number of zero samples (for a caller that counts them itself).
    pub fn set_zeros(&mut self, zeros: u64) {
        self.count = self.count - self.zeros + zeros;
        self.zeros = zeros;
    }

    /// Adds a zero sample.
    #[inline]
    pub fn add_zero(&mut self) {
        self.zeros += 1;
        self.count += 1;
    }

    /// Adds a sample in bucket `i` (from [`index_of_ln`](Self::index_of_ln)).
    #[inline]
    pub fn add_indexed(&mut self, i: i32) {
        self.count += 1;
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(0);
        } else if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        } else if (i - self.offset) as usize >= self.counts.len() {
            self.counts.resize((i - self.offset) as usize + 1, 0);
        }
        let c = &mut self.counts[(i - self.offset) as usize];
        match c.checked_add(1) {
            Some(n) => *c = n,
            None => {
                *c = 0;
                *self.carried.entry(i).or_default() += 1 << 16;
            }
        }
    }

    /// Adds a sample.
    pub fn add(&mut self, v: f64) {
        if v >= 1e-9 { self.add_indexed(Self::index_of_ln(v.ln())) } else { self.add_zero() }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0 ≤ q ≤ 1) by nearest rank, 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank <= self.zeros {
            return 0.0;
        }
        let mut seen = self.zeros;
        let mut bucket = None;
        for (j, &c) in self.counts.iter().enumerate() {
            let i = self.offset + j as i32;
            let c = c as u64 + self.carried.get(&i).copied().unwrap_or(0);
            if c == 0 {
                continue;
            }
            seen += c;
            bucket = Some(i);
            if seen >= rank {
                break;
            }
        }
        let gamma = histogram_gamma();
        bucket.map_or(0.0, |i| 2.0 * gamma.powi(i) / (gamma + 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_relative_error_on_heavy_tail() {
        let mut s = Sketch::default();
        let mut values = Vec::new();
        // A deterministic heavy-tailed sequence (Pareto-like) spanning six decades.
        let mut x = 0.123456789f64;
        for _ in 0..200_000 {
            x = (x * 9301.0 + 0.49297).fract();
            let v = 0.01 / (1.0 - x).powf(0.9);
            values.push(v);
            s.add(v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1];
            let got = s.quantile(q);
            assert!((got - exact).abs() / exact <= 0.01, "q={q}: {got} vs {exact}");
        }
        assert_eq!(s.count(), 200_000);
        assert!(s.buckets() < 3_000, "{} buckets", s.buckets());
    }

    #[test]
    fn memory_is_bounded_by_range_not_count() {
        let mut s = Sketch::default();
        for i in 0..1_000_000u64 {
            s.add(1.0 + (i % 1000) as f64);
        }
        // 1..1000 is three decades: ln(1000)/ln(1.01) ≈ 694 buckets.
        assert!(s.buckets() <= 700, "{}", s.buckets());
    }

    #[test]
    fn histogram_quantiles_within_one_percent() {
        let mut h = Histogram::default();
        let mut values = Vec::new();
        let mut x = 0.987654321f64;
        for i in 0..100_000 {
            x = (x * 9301.0 + 0.49297).fract();
            let v = if i % 10 == 0 { 0.0 } else { 0.05 / (1.0 - x).powf(0.7) };
            values.push(v);
            h.add(v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.05, 0.5, 0.9, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1];
            let got = h.quantile(q);
            if exact == 0.0 {
                assert_eq!(got, 0.0, "q={q}");
            } else {
                assert!((got - exact).abs() / exact <= HISTOGRAM_ALPHA, "q={q}: {got} vs {exact}");
            }
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(Histogram::default().quantile(0.5), 0.0);
        // Counts past 16 bits carry over: 200,000 samples in one bucket, 100,000 in another.
        let mut h = Histogram::default();
        for _ in 0..200_000 {
            h.add(1.0);
        }
        for _ in 0..100_000 {
            h.add(10.0);
        }
        assert!((h.quantile(0.66) - 1.0).abs() <= 0.01, "{}", h.quantile(0.66));
        assert!((h.quantile(0.67) - 10.0).abs() <= 0.1, "{}", h.quantile(0.67));
    }

    #[test]
    fn ceil_matches_std() {
        for x in [-3.0, -2.5, -0.5, -0.0, 0.0, 0.25, 1.0, 2.5, 1e6 + 0.5, -1e6 - 0.5] {
            assert_eq!(ceil(x), x.ceil() as i32, "{x}");
        }
    }

    #[test]
    fn zeros_and_merge() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for _ in 0..90 {
            a.add(0.0);
        }
        for _ in 0..10 {
            b.add(100.0);
        }
        a.merge(&b);
        assert_eq!(a.quantile(0.5), 0.0);
        assert!((a.quantile(0.99) - 100.0).abs() <= 1.0);
        assert_eq!(a.count(), 100);
        assert!((a.mean() - 10.0).abs() < 1e-9);
    }
}
