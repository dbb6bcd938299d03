//! Streaming quantiles with bounded relative error (logarithmic buckets, as in DDSketch):
//! every quantile returned is within `alpha` of a true sample value at that rank, in
//! relative terms, and memory grows with the logarithm of the value range, not with the
//! number of samples.

/// `x.ceil() as i32` for the bucket range, without a call into libm (x86-64 without
/// SSE 4.1 has no rounding instruction, and this runs for every sample).
#[inline]
fn ceil(x: f64) -> i32 {
    let t = x as i32;
    if (t as f64) < x { t + 1 } else { t }
}

/// A streaming histogram: logarithmic buckets of relative width [`HISTOGRAM_ALPHA`] with
/// 16-bit counts (each overflow of 65,536 carried into a small side map), so that
/// thousands of them (one per function in a simulation) stay small enough to live in
/// the CPU's caches. Histograms of the same accuracy merge exactly.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    offset: i32,
    counts: Vec<u16>,
    /// Bucket → samples carried out of its 16-bit counter.
    carried: std::collections::BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

/// Relative accuracy of [`Histogram`] quantiles: 1 %, the bound required at p99.
pub const HISTOGRAM_ALPHA: f64 = 0.01;

/// `1 / ln(gamma)` for [`HISTOGRAM_ALPHA`].
fn histogram_inv_ln_gamma() -> f64 {
    1.0 / histogram_gamma().ln()
}

fn histogram_gamma() -> f64 {
    (1.0 + HISTOGRAM_ALPHA) / (1.0 - HISTOGRAM_ALPHA)
}

/// Bits of the mantissa that pick a table cell in [`fast_ln`].
const LN_TABLE_BITS: u32 = 8;
const LN_CELLS: usize = 1 << LN_TABLE_BITS;

/// `ln(1 + x)` for `0 <= x < 1` in a constant context: the series of `2 atanh(x / (2 + x))`,
/// summed until its terms vanish (to the last bit or so; the table entries below need
/// no more).
const fn ln_1p_const(x: f64) -> f64 {
    let s = x / (2.0 + x);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while term > 1e-300 && term / k > sum * 1e-18 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum
}

/// Per table cell `j`: the reciprocal of the cell's lower edge `1 + j / 256`, rounded,
/// and minus the logarithm of that rounded reciprocal, so that `ln m = ln(m × recip) -
/// ln recip` holds for the stored numbers themselves.
const LN_TABLE: [(f64, f64); LN_CELLS] = {
    let mut t = [(0.0, 0.0); LN_CELLS];
    let mut j = 0;
    while j < LN_CELLS {
        let recip = 1.0 / (1.0 + j as f64 / LN_CELLS as f64);
        // ln(1 / recip) = ln(1 + (1 / recip - 1)); 1 / recip is the edge to within an ulp.
        let edge = 1.0 / recip;
        t[j] = (recip, ln_1p_const(edge - 1.0));
        j += 1;
    }
    t
};

/// Natural logarithm of a positive, finite, normal `v` to within 1e-12 (absolute), for
/// bucket indices: `e ln 2 + ln m` with `m` in [1, 2), and `ln m` from a 256-cell table
/// and four terms of the series of `ln(1 + r)` for the remainder `r < 1 / 256`. Its
/// dependent chain is a few multiplications (the library `ln`, or a series in
/// `(m - 1) / (m + 1)`, starts with a division and runs ten operations deep, and each
/// histogram sample waited on it). A value within 1e-12 of a bucket boundary may land in
/// the neighbouring bucket, which moves a quantile by at most that much.
#[inline]
pub fn fast_ln(v: f64) -> f64 {
    let bits = v.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let j = ((bits >> (52 - LN_TABLE_BITS)) & (LN_CELLS as u64 - 1)) as usize;
    let m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    let (recip, ln_edge) = LN_TABLE[j];
    let r = m * recip - 1.0;
    let r2 = r * r;
    // ln(1 + r) = r - r²/2 + r³/3 - r⁴/4 (+ under 2e-13 for r < 1/256), grouped so the
    // chain stays short.
    let series = r + r2 * ((r * (1.0 / 3.0) - 0.5) - r2 * 0.25);
    e as f64 * std::f64::consts::LN_2 + (ln_edge + series)
}

impl Histogram {
    /// The bucket index of `v` (at least 1e-9).
    #[inline]
    pub fn index_of(v: f64) -> i32 {
        if v.is_normal() { Self::index_of_ln(fast_ln(v)) } else { Self::index_of_ln(v.ln()) }
    }

    /// The bucket index of a value whose natural logarithm is `ln_v`.
    #[inline]
    pub fn index_of_ln(ln_v: f64) -> i32 {
        // A constant after inlining: computed from HISTOGRAM_ALPHA.
        ceil(ln_v * histogram_inv_ln_gamma())
    }

    /// Adds every sample of another histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (j, &c) in other.counts.iter().enumerate() {
            let i = other.offset + j as i32;
            let n = c as u64 + other.carried.get(&i).copied().unwrap_or(0);
            if n > 0 {
                self.add_count(i, n);
            }
        }
        self.zeros += other.zeros;
        self.count += other.zeros;
    }

    /// Adds `n` samples in bucket `i`.
    fn add_count(&mut self, i: i32, n: u64) {
        self.add_indexed(i);
        let rest = n - 1;
        if rest > 0 {
            let c = &mut self.counts[(i - self.offset) as usize];
            let total = *c as u64 + rest;
            *c = (total & 0xffff) as u16;
            if total >> 16 > 0 {
                *self.carried.entry(i).or_default() += (total >> 16) << 16;
            }
            self.count += rest;
        }
    }

    /// Buckets spanned (for memory checks).
    pub fn buckets(&self) -> usize {
        self.counts.len()
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
        // Below the offset wraps to a huge index and misses, like past the end.
        if let Some(c) = self.counts.get_mut(i.wrapping_sub(self.offset) as u32 as usize)
            && let Some(n) = c.checked_add(1)
        {
            *c = n;
            return;
        }
        self.add_slow(i);
    }

    /// A sample outside the buckets so far, or one that carries over 16 bits.
    #[cold]
    fn add_slow(&mut self, i: i32) {
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
        if v >= 1e-9 { self.add_indexed(Self::index_of(v)) } else { self.add_zero() }
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
        let mut s = Histogram::default();
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
            assert!((got - exact).abs() / exact <= HISTOGRAM_ALPHA, "q={q}: {got} vs {exact}");
        }
        assert_eq!(s.count(), 200_000);
        assert!(s.buckets() < 1_500, "{} buckets", s.buckets());
    }

    #[test]
    fn memory_is_bounded_by_range_not_count() {
        let mut s = Histogram::default();
        for i in 0..1_000_000u64 {
            s.add(1.0 + (i % 1000) as f64);
        }
        // 1..1000 is three decades: ln(1000)/ln(1.0202) ≈ 346 buckets.
        assert!(s.buckets() <= 350, "{}", s.buckets());
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
        // Merging gives the histogram of all samples, carried counts included.
        let mut parts = [Histogram::default(), Histogram::default()];
        let mut whole = Histogram::default();
        for k in 0..300_000u32 {
            let v = if k % 7 == 0 { 0.0 } else { 1.0 + (k % 50) as f64 * 0.37 };
            parts[(k % 3 == 0) as usize].add(v);
            whole.add(v);
        }
        let mut merged = parts[0].clone();
        merged.merge(&parts[1]);
        assert_eq!(merged.count(), whole.count());
        for q in [0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(merged.quantile(q), whole.quantile(q), "q={q}");
        }
        assert!((h.quantile(0.67) - 10.0).abs() <= 0.1, "{}", h.quantile(0.67));
    }

    #[test]
    fn fast_ln_is_close_to_ln() {
        let mut x = 0.577f64;
        for _ in 0..200_000 {
            x = (x * 9301.0 + 0.49297).fract();
            let v = 10f64.powf(-9.0 + 24.0 * x);
            assert!((fast_ln(v) - v.ln()).abs() < 1e-12, "{v}: {} vs {}", fast_ln(v), v.ln());
        }
        for v in [1e-9, 0.75, 1.0, 1.4999999, 1.5, 2.0, 3.0, 1e15] {
            assert!((fast_ln(v) - v.ln()).abs() < 1e-12, "{v}");
        }
    }

    #[test]
    fn ceil_matches_std() {
        for x in [-3.0, -2.5, -0.5, -0.0, 0.0, 0.25, 1.0, 2.5, 1e6 + 0.5, -1e6 - 0.5] {
            assert_eq!(ceil(x), x.ceil() as i32, "{x}");
        }
    }

    #[test]
    fn zeros_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
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
        assert_eq!(a.nonzero(), 10);
    }
}
