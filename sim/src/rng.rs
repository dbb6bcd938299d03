//! The simulator's random numbers: xoshiro256++ (Blackman and Vigna), seeded through
//! SplitMix64, and exponential variates by the ziggurat method (Marsaglia and Tsang,
//! 2000: 256 layers of equal area), which needs a logarithm only in the tail and the
//! wedges, about one draw in fifty. Fixed here rather than taken from a library's "standard" generator,
//! whose algorithm may change between releases, because a scenario and seed must give
//! the same output byte for byte on every build; and it is several times cheaper per
//! draw than a cryptographic generator, which matters at millions of draws per second.

use std::sync::OnceLock;

/// A xoshiro256++ generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    zig: &'static Ziggurat,
}

/// Layer edges `x[i]` (decreasing, `x[1] = R`, `x[256] = 0`, `x[0]` the base layer's
/// pseudo-width `V / e^-R`) and the density there, `f[i] = e^-x[i]`.
#[derive(Debug)]
struct Ziggurat {
    x: [f64; 257],
    f: [f64; 257],
}

/// Start of the tail for 256 layers.
const ZIG_R: f64 = 7.697_117_470_131_05;
/// Area of each layer.
const ZIG_V: f64 = 0.003_949_659_822_581_557;

fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut x = [0.0; 257];
        x[0] = ZIG_V / (-ZIG_R).exp();
        x[1] = ZIG_R;
        for i in 1..256 {
            // The next edge up: the layer between x[i + 1] and x[i] has area V.
            x[i + 1] = -(ZIG_V / x[i] + (-x[i]).exp()).ln();
        }
        x[256] = 0.0;
        let f = x.map(|v| (-v).exp());
        Ziggurat { x, f }
    })
}

impl Rng {
    /// A generator whose state is expanded from `seed` by SplitMix64 (never all zero).
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()], zig: ziggurat() }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with 53 random bits.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponentially distributed with mean 1.
    #[inline(always)]
    pub fn exp1(&mut self) -> f64 {
        let bits = self.next_u64();
        // The low byte picks the layer, the top 53 bits the position in it.
        let i = (bits & 0xff) as usize;
        let z = self.zig;
        let x = (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * z.x[i];
        if x < z.x[i + 1] {
            return x; // inside the rectangle under the curve: 98 % of draws end here
        }
        self.exp1_edge(i, x)
    }

    /// The rest of a draw that fell outside its layer's rectangle.
    #[cold]
    fn exp1_edge(&mut self, i: usize, x: f64) -> f64 {
        if i == 0 {
            // The tail beyond R is R plus an exponential (memorylessness).
            return ZIG_R - (1.0 - self.f64()).ln();
        }
        // The wedge between the rectangle and the curve.
        let z = self.zig;
        if z.f[i] + self.f64() * (z.f[i + 1] - z.f[i]) < (-x).exp() { x } else { self.exp1() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // xoshiro256++ from state {1, 2, 3, 4}: the first outputs of the reference C code.
        let mut r = Rng { s: [1, 2, 3, 4], zig: ziggurat() };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, vec![41943041, 58720359, 3588806011781223, 3591011842654386]);
    }

    #[test]
    fn uniform_and_exponential_moments() {
        let mut r = Rng::seed_from_u64(7);
        let n = 200_000;
        let (mut sum, mut sq, mut e) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let u = r.f64();
            assert!((0.0..1.0).contains(&u));
            sum += u;
            sq += u * u;
            e += r.exp1();
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        assert!((sq / n as f64 - mean * mean - 1.0 / 12.0).abs() < 0.002);
        assert!((e / n as f64 - 1.0).abs() < 0.01);
        // The distribution, not only its mean: P(X ≤ q) at several quantiles, the tail included.
        let mut r = Rng::seed_from_u64(11);
        let n = 2_000_000;
        let draws: Vec<f64> = (0..n).map(|_| r.exp1()).collect();
        assert!(draws.iter().all(|&x| x >= 0.0 && x.is_finite()));
        for q in [0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 7.0, 7.7, 9.0] {
            let want = 1.0 - f64::exp(-q);
            let got = draws.iter().filter(|&&x| x <= q).count() as f64 / n as f64;
            // Binomial standard error, 5 sigma.
            let tol = 5.0 * (want * (1.0 - want) / n as f64).sqrt() + 1e-6;
            assert!((got - want).abs() <= tol, "P(X <= {q}) = {got}, want {want} ± {tol}");
        }
        let var = draws.iter().map(|x| (x - 1.0) * (x - 1.0)).sum::<f64>() / n as f64;
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        // The tables close: the top layer's edge is (numerically) zero.
        let z = ziggurat();
        assert!(z.x[255] > 0.0 && z.x[255] < 0.3 && z.x[0] > ZIG_R);
        // Different seeds, different streams; the same seed, the same stream.
        assert_ne!(Rng::seed_from_u64(1).next_u64(), Rng::seed_from_u64(2).next_u64());
        assert_eq!(Rng::seed_from_u64(3).next_u64(), Rng::seed_from_u64(3).next_u64());
    }
}
