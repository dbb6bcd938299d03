//! Arrival streams: traces read row by row ([`trace`]) and synthetic generators, all yielding
//! arrivals in time order without holding the whole workload in memory (the Azure
//! Functions 2021 format is ordered by end time, so its rows are sorted in memory; its
//! files are small excerpts).

mod trace;

use std::collections::BTreeMap;

use kaas_scheduler::{Nanos, SEC};

use trace::open_trace;
pub use trace::with_trace_memory;

use crate::SimError;
use crate::rng::Rng;
use crate::scenario::{FunctionMap, Generator, Scenario, SyntheticSpec};

/// One arrival.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    /// Arrival time.
    pub t: Nanos,
    /// Index of the scenario function.
    pub function: u32,
    /// Service time on the reference (fastest) class, when the trace says.
    pub duration: Option<Nanos>,
}

/// A stream of arrivals in time order from a trace reader.
type Boxed = Box<dyn Iterator<Item = Result<Arrival, SimError>> + Send>;

/// A scenario's arrivals in time order, cut at its duration and request limit. The
/// synthetic generators are called directly (they run once per simulated request, so
/// they are worth inlining); trace readers sit behind a box.
pub struct Arrivals {
    source: Source,
    limit: Option<Nanos>,
    max: Option<u64>,
    n: u64,
    done: bool,
}

enum Source {
    Synthetic(Box<Synthetic>),
    Trace(Boxed),
}

impl Arrivals {
    /// The next arrival, or the error that ends the stream: the simulation loop's form of
    /// `next`, returning a small value (a `Result` carrying a `SimError` by value is
    /// copied through memory on every call). Always inlined: returned through memory, the
    /// arrival was written field by field and read back whole, a store-forwarding stall
    /// that was a sixth of the event loop's time.
    #[inline(always)]
    pub fn pull(&mut self) -> Result<Option<Arrival>, Box<SimError>> {
        if self.done {
            return Ok(None);
        }
        let a = match &mut self.source {
            Source::Synthetic(g) => g.next_buffered(),
            Source::Trace(t) => match t.next() {
                None => return Ok(None),
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    self.n += 1;
                    if self.max.is_some_and(|m| self.n > m) {
                        self.done = true;
                        return Ok(None);
                    }
                    return Err(Box::new(e));
                }
            },
        };
        self.n += 1;
        if self.limit.is_none_or(|l| a.t <= l) && self.max.is_none_or(|m| self.n <= m) {
            Ok(Some(a))
        } else {
            self.done = true;
            Ok(None)
        }
    }
}

impl Iterator for Arrivals {
    type Item = Result<Arrival, SimError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pull().map_err(|e| *e).transpose()
    }
}

/// Maps trace function names to scenario function indices.
#[derive(Clone)]
pub struct NameMap {
    names: BTreeMap<String, u32>,
    mode: FunctionMap,
    count: u32,
}

impl NameMap {
    /// A map over the scenario's functions.
    pub fn new(s: &Scenario, mode: FunctionMap) -> Self {
        let names = s.functions.iter().enumerate().map(|(i, f)| (f.name.clone(), i as u32)).collect();
        NameMap { names, mode, count: s.functions.len() as u32 }
    }

    /// The function a trace name maps to.
    pub fn get(&self, name: &str) -> Option<u32> {
        match self.mode {
            FunctionMap::Exact => self.names.get(name).copied(),
            FunctionMap::Hash => Some(
                self.names.get(name).copied().unwrap_or_else(|| (fnv1a(name) % self.count as u64) as u32),
            ),
        }
    }
}

/// FNV-1a, a stable hash for name mapping (the std hasher is not stable across releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Opens the workload of a scenario at a load factor.
pub fn open(s: &Scenario, load_factor: f64) -> Result<Arrivals, SimError> {
    let limit = s.duration_s.map(|d| (d * SEC as f64) as Nanos);
    let max = s.max_requests;
    let source = match (&s.workload.trace, &s.workload.synthetic) {
        (Some(t), _) => Source::Trace(open_trace(s, t, load_factor)?),
        (None, Some(g)) if g.generator == Generator::Closed => {
            // Closed-loop clients are driven by completions inside the simulation.
            Source::Trace(Box::new(std::iter::empty()))
        }
        (None, Some(g)) => Source::Synthetic(Box::new(Synthetic::new(s, g, load_factor)?)),
        (None, None) => {
            return Err(SimError::Scenario("workload needs a trace or a synthetic generator".into()));
        }
    };
    Ok(Arrivals { source, limit, max, n: 0, done: false })
}

fn scale(t_secs: f64, load_factor: f64) -> Nanos {
    (t_secs / load_factor * SEC as f64).round() as Nanos
}

/// Walker's alias table: picks an index with probability proportional to its weight in
/// O(1), from one 64-bit draw (the high half picks a column by multiply-and-shift, the
/// low half decides between the column and its alias). Each entry holds its threshold
/// and alias together, so a pick touches one cache line.
struct Alias {
    /// (threshold out of 2^32, alias).
    table: Vec<(u64, u32)>,
}

impl Alias {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        let table = prob
            .iter()
            .zip(alias)
            .map(|(&p, a)| ((p.clamp(0.0, 1.0) * 4294967296.0).round() as u64, a))
            .collect();
        Alias { table }
    }

    #[inline]
    fn pick(&self, rng: &mut Rng) -> u32 {
        let bits = rng.next_u64();
        let i = (((bits >> 32) * self.table.len() as u64) >> 32) as usize;
        let (threshold, alias) = self.table[i];
        if bits & 0xffff_ffff < threshold { i as u32 } else { alias }
    }
}

/// Per-function rates of a synthetic workload (requests per second, before the load factor).
pub fn synthetic_rates(s: &Scenario, g: &SyntheticSpec) -> Result<Vec<f64>, SimError> {
    for name in g.rates.keys() {
        if !s.functions.iter().any(|f| &f.name == name) {
            return Err(SimError::Scenario(format!("synthetic.rates names unknown function {name}")));
        }
    }
    let rates: Vec<f64> = s
        .functions
        .iter()
        .map(|f| g.rates.get(&f.name).copied().or(f.expected_rate).unwrap_or(0.0))
        .collect();
    if rates.iter().any(|r| *r < 0.0 || !r.is_finite()) {
        return Err(SimError::Scenario("synthetic rates must be non-negative".into()));
    }
    Ok(rates)
}

fn exp(rng: &mut Rng, rate: f64) -> f64 {
    rng.exp1() / rate
}

/// Arrivals a synthetic generator draws at a time.
const SYNTHETIC_BATCH: usize = 64;

/// A synthetic arrival generator: Poisson, MMPP or diurnal arrivals over all functions,
/// each arrival's function drawn in proportion to its rate.
struct Synthetic {
    /// Arrivals drawn ahead, in order: drawing a batch at once keeps the generator's
    /// tables in the CPU cache while a simulation's queues sweep through memory.
    ahead: Vec<Arrival>,
    next: usize,
    alias: Alias,
    rng: Rng,
    t: f64,
    total: f64,
    generator: Generator,
    burst_factor: f64,
    normal: f64,
    burst: f64,
    period: f64,
    amplitude: f64,
    in_burst: bool,
    state_end: f64,
}

impl Synthetic {
    fn new(s: &Scenario, g: &SyntheticSpec, lf: f64) -> Result<Self, SimError> {
        let rates = synthetic_rates(s, g)?;
        let total: f64 = rates.iter().sum::<f64>() * lf;
        if total <= 0.0 {
            return Err(SimError::Scenario(
                "synthetic workload has a total rate of 0: set rates or expectedRate".into(),
            ));
        }
        if s.duration_s.is_none() && s.max_requests.is_none() {
            return Err(SimError::Scenario("a synthetic workload needs durationS or maxRequests".into()));
        }
        let mut rng = Rng::seed_from_u64(s.seed);
        let state_end = exp(&mut rng, 1.0 / g.mean_normal_s);
        Ok(Synthetic {
            ahead: Vec::with_capacity(SYNTHETIC_BATCH),
            next: 0,
            alias: Alias::new(&rates),
            rng,
            t: 0.0,
            total,
            generator: g.generator,
            burst_factor: g.burst_factor,
            normal: g.mean_normal_s,
            burst: g.mean_burst_s,
            period: g.period_s,
            amplitude: g.amplitude.clamp(0.0, 1.0),
            in_burst: false,
            state_end,
        })
    }

    #[inline(always)]
    fn next_buffered(&mut self) -> Arrival {
        if self.next == self.ahead.len() {
            self.refill();
        }
        self.next += 1;
        self.ahead[self.next - 1]
    }

    #[inline(never)]
    fn refill(&mut self) {
        self.ahead.clear();
        for _ in 0..SYNTHETIC_BATCH {
            let a = self.next_arrival();
            self.ahead.push(a);
        }
        self.next = 0;
    }

    #[inline]
    fn next_arrival(&mut self) -> Arrival {
        let rng = &mut self.rng;
        match self.generator {
            Generator::Poisson | Generator::Closed => self.t += exp(rng, self.total),
            Generator::Mmpp => loop {
                let rate = if self.in_burst { self.total * self.burst_factor } else { self.total };
                let next = self.t + exp(rng, rate);
                if next <= self.state_end {
                    self.t = next;
                    break;
                }
                // Memoryless: restart the draw at the state change.
                self.t = self.state_end;
                self.in_burst = !self.in_burst;
                self.state_end =
                    self.t + exp(rng, 1.0 / if self.in_burst { self.burst } else { self.normal });
            },
            Generator::Diurnal => loop {
                let amp = self.amplitude;
                self.t += exp(rng, self.total * (1.0 + amp));
                let phase = 2.0 * std::f64::consts::PI * self.t / self.period;
                let accept = (1.0 + amp * phase.sin()) / (1.0 + amp);
                if rng.f64() < accept {
                    break;
                }
            },
        }
        let function = self.alias.pick(rng);
        Arrival { t: (self.t * SEC as f64) as Nanos, function, duration: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_matches_weights() {
        let alias = Alias::new(&[1.0, 3.0, 0.0, 6.0]);
        let mut rng = Rng::seed_from_u64(1);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            counts[alias.pick(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        for (i, w) in [0.1, 0.3, 0.0, 0.6].iter().enumerate() {
            assert!((counts[i] as f64 / 100_000.0 - w).abs() < 0.01, "{counts:?}");
        }
    }
}
