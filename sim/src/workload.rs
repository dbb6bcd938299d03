//! Arrival streams: traces read line by line and synthetic generators, all yielding
//! arrivals in time order without holding the whole workload in memory (the Azure
//! Functions 2021 format is ordered by end time, so its rows are sorted in memory; its
//! files are small excerpts).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use kaas_scheduler::{MS, Nanos, SEC};

use crate::SimError;
use crate::rng::Rng;
use crate::scenario::{FunctionMap, Generator, Scenario, SyntheticSpec, TraceFormat, TraceSpec};

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

fn open_file(path: &Path) -> Result<Lines<BufReader<File>>, SimError> {
    Ok(BufReader::new(File::open(path).map_err(|e| SimError::Io(path.to_path_buf(), e))?).lines())
}

fn row_error(path: &Path, line: usize, msg: impl Into<String>) -> SimError {
    SimError::Trace { path: path.to_path_buf(), line, message: msg.into() }
}

fn open_trace(s: &Scenario, t: &TraceSpec, lf: f64) -> Result<Boxed, SimError> {
    let path = s.resolve(&t.path);
    let names = NameMap::new(s, t.function_map);
    match t.format {
        TraceFormat::Csv => Ok(Box::new(CsvTrace {
            path: path.clone(),
            lines: open_file(&path)?,
            line: 0,
            names,
            lf,
            last: 0,
        })),
        TraceFormat::Azure2021 => azure2021(&path, &names, lf),
        TraceFormat::AzureLlm => {
            let name = t.function.clone().unwrap_or_else(|| s.functions[0].name.clone());
            let function = names
                .get(&name)
                .ok_or_else(|| SimError::Scenario(format!("trace.function names unknown function {name}")))?;
            Ok(Box::new(LlmTrace {
                path: path.clone(),
                lines: open_file(&path)?,
                line: 0,
                function,
                model: t.token_model.clone(),
                lf,
                origin: None,
                last: 0,
            }))
        }
        TraceFormat::Azure2019 => {
            let durations = t.durations.as_ref().map(|p| s.resolve(p));
            azure2019(&path, durations.as_deref(), &names, lf, s.seed)
        }
    }
}

struct CsvTrace {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    line: usize,
    names: NameMap,
    lf: f64,
    last: Nanos,
}

impl CsvTrace {
    fn parse(&mut self, text: &str) -> Result<Option<Arrival>, SimError> {
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() < 2 || fields.len() > 3 {
            return Err(row_error(
                &self.path,
                self.line,
                format!("expected function,arrival_ms[,duration_ms], got {text:?}"),
            ));
        }
        let Ok(arrival) = fields[1].parse::<f64>() else {
            if self.line == 1 {
                return Ok(None); // a header row
            }
            return Err(row_error(
                &self.path,
                self.line,
                format!("arrival_ms {:?} is not a number", fields[1]),
            ));
        };
        if arrival.is_nan() || arrival < 0.0 {
            return Err(row_error(&self.path, self.line, format!("negative arrival time {arrival}")));
        }
        let duration = match fields.get(2) {
            None | Some(&"") => None,
            Some(d) => match d.parse::<f64>() {
                Ok(v) if v >= 0.0 => Some((v * MS as f64) as Nanos),
                _ => {
                    return Err(row_error(
                        &self.path,
                        self.line,
                        format!("duration_ms {d:?} is not a non-negative number"),
                    ));
                }
            },
        };
        let function = self
            .names
            .get(fields[0])
            .ok_or_else(|| row_error(&self.path, self.line, format!("unknown function {:?}", fields[0])))?;
        let t = scale(arrival / 1000.0, self.lf);
        if t < self.last {
            return Err(row_error(&self.path, self.line, "arrivals must be in time order"));
        }
        self.last = t;
        Ok(Some(Arrival { t, function, duration }))
    }
}

impl Iterator for CsvTrace {
    type Item = Result<Arrival, SimError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(t) => t,
                Err(e) => return Some(Err(SimError::Io(self.path.clone(), e))),
            };
            self.line += 1;
            if text.trim().is_empty() || text.starts_with('#') {
                continue;
            }
            match self.parse(&text) {
                Ok(Some(a)) => return Some(Ok(a)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn azure2021(path: &Path, names: &NameMap, lf: f64) -> Result<Boxed, SimError> {
    let mut rows = Vec::new();
    for (i, line) in open_file(path)?.enumerate() {
        let line = line.map_err(|e| SimError::Io(path.to_path_buf(), e))?;
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 4 {
            return Err(row_error(path, i + 1, "expected app,func,end_timestamp,duration"));
        }
        let (Ok(end), Ok(dur)) = (f[2].trim().parse::<f64>(), f[3].trim().parse::<f64>()) else {
            return Err(row_error(path, i + 1, "end_timestamp and duration must be numbers"));
        };
        let start = end - dur;
        if start < 0.0 || dur < 0.0 {
            return Err(row_error(
                path,
                i + 1,
                format!("negative time (arrival {start} s, duration {dur} s)"),
            ));
        }
        let function = names
            .get(f[1].trim())
            .ok_or_else(|| row_error(path, i + 1, format!("unknown function {}", f[1])))?;
        rows.push(Arrival { t: scale(start, lf), function, duration: Some((dur * SEC as f64) as Nanos) });
    }
    rows.sort_by_key(|a| (a.t, a.function));
    Ok(Box::new(rows.into_iter().map(Ok)))
}

struct LlmTrace {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    line: usize,
    function: u32,
    model: crate::scenario::TokenModel,
    lf: f64,
    origin: Option<f64>,
    last: Nanos,
}

/// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS[.fraction]`.
fn parse_timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi, sec) =
        (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

impl Iterator for LlmTrace {
    type Item = Result<Arrival, SimError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(t) => t,
                Err(e) => return Some(Err(SimError::Io(self.path.clone(), e))),
            };
            self.line += 1;
            if self.line == 1 || text.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = text.split(',').collect();
            let parsed = (f.len() == 3)
                .then(|| {
                    Some((
                        parse_timestamp(f[0])?,
                        f[1].trim().parse::<f64>().ok()?,
                        f[2].trim().parse::<f64>().ok()?,
                    ))
                })
                .flatten();
            let Some((ts, ctx, gen_tokens)) = parsed else {
                return Some(Err(row_error(
                    &self.path,
                    self.line,
                    "expected TIMESTAMP,ContextTokens,GeneratedTokens",
                )));
            };
            let origin = *self.origin.get_or_insert(ts);
            let t = scale(ts - origin, self.lf);
            if ts < origin || t < self.last {
                return Some(Err(row_error(&self.path, self.line, "timestamps must be in time order")));
            }
            self.last = t;
            let m = &self.model;
            let run_ms = m.base_ms + m.per_context_token_ms * ctx + m.per_generated_token_ms * gen_tokens;
            return Some(Ok(Arrival {
                t,
                function: self.function,
                duration: Some((run_ms * MS as f64) as Nanos),
            }));
        }
    }
}

/// Piecewise-linear inverse CDF through the Azure 2019 duration percentiles.
#[derive(Clone)]
struct Percentiles(Vec<(f64, f64)>);

impl Percentiles {
    fn sample(&self, u: f64) -> f64 {
        let p = u * 100.0;
        for w in self.0.windows(2) {
            let ((p0, v0), (p1, v1)) = (w[0], w[1]);
            if p <= p1 {
                return if p1 > p0 { v0 + (v1 - v0) * (p - p0) / (p1 - p0) } else { v1 };
            }
        }
        self.0.last().map_or(0.0, |x| x.1)
    }
}

fn azure2019(
    path: &Path,
    durations: Option<&Path>,
    names: &NameMap,
    lf: f64,
    seed: u64,
) -> Result<Boxed, SimError> {
    let mut dist: BTreeMap<String, Percentiles> = BTreeMap::new();
    if let Some(dpath) = durations {
        for (i, line) in open_file(dpath)?.enumerate() {
            let line = line.map_err(|e| SimError::Io(dpath.to_path_buf(), e))?;
            if i == 0 || line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            let vals: Option<Vec<f64>> =
                f.get(7..14).and_then(|v| v.iter().map(|x| x.trim().parse().ok()).collect());
            let Some(v) = vals else {
                return Err(row_error(
                    dpath,
                    i + 1,
                    "expected 14 columns ending in percentile_Average_0..100",
                ));
            };
            let pts = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0].into_iter().zip(v).collect();
            dist.insert(f[2].to_string(), Percentiles(pts));
        }
    }
    let mut rows: Vec<(u32, Vec<u32>, Option<Percentiles>)> = Vec::new();
    for (i, line) in open_file(path)?.enumerate() {
        let line = line.map_err(|e| SimError::Io(path.to_path_buf(), e))?;
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 5 {
            return Err(row_error(path, i + 1, "expected HashOwner,HashApp,HashFunction,Trigger,1..1440"));
        }
        let counts: Result<Vec<u32>, _> = f[4..].iter().map(|x| x.trim().parse::<u32>()).collect();
        let counts =
            counts.map_err(|_| row_error(path, i + 1, "per-minute counts must be non-negative integers"))?;
        let function =
            names.get(f[2]).ok_or_else(|| row_error(path, i + 1, format!("unknown function {}", f[2])))?;
        rows.push((function, counts, dist.get(f[2]).cloned()));
    }
    let minutes = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut rng = Rng::seed_from_u64(seed);
    let mut minute = 0usize;
    let mut batch: std::vec::IntoIter<Arrival> = Vec::new().into_iter();
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(a) = batch.next() {
                return Some(Ok(a));
            }
            if minute >= minutes {
                return None;
            }
            let mut next = Vec::new();
            for (function, counts, d) in &rows {
                for _ in 0..counts.get(minute).copied().unwrap_or(0) {
                    let secs = minute as f64 * 60.0 + rng.f64() * 60.0;
                    let duration = d.as_ref().map(|p| (p.sample(rng.f64()) * MS as f64) as Nanos);
                    next.push(Arrival { t: scale(secs, lf), function: *function, duration });
                }
            }
            next.sort_by_key(|a| (a.t, a.function));
            batch = next.into_iter();
            minute += 1;
        }
    })))
}

/// Applies the Azure 2019 memory file, if the scenario names one: a mapped function's
/// resident state is at least the trace's average allocated memory.
pub fn with_trace_memory(
    s: &Scenario,
    mut functions: Vec<kaas_scheduler::Function>,
) -> Result<Vec<kaas_scheduler::Function>, SimError> {
    let Some(t) = &s.workload.trace else { return Ok(functions) };
    let (TraceFormat::Azure2019, Some(mem)) = (t.format, &t.memory) else { return Ok(functions) };
    let path = s.resolve(mem);
    let names = NameMap::new(s, t.function_map);
    for (i, line) in open_file(&path)?.enumerate() {
        let line = line.map_err(|e| SimError::Io(path.clone(), e))?;
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let mb = f.get(4).and_then(|v| v.trim().parse::<f64>().ok());
        let (Some(mb), Some(name)) = (mb, f.get(2)) else {
            return Err(row_error(
                &path,
                i + 1,
                "expected HashOwner,HashApp,HashFunction,SampleCount,AverageAllocatedMb,...",
            ));
        };
        if let Some(fi) = names.get(name) {
            let bytes = (mb * (1u64 << 20) as f64) as u64;
            let func = &mut functions[fi as usize];
            func.resident_bytes = func.resident_bytes.max(bytes);
        }
    }
    Ok(functions)
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
    fn timestamps_parse_to_seconds() {
        let a = parse_timestamp("2023-11-16 18:17:03.9799600").unwrap();
        let b = parse_timestamp("2023-11-16 18:17:04.0319600").unwrap();
        assert!((b - a - 0.052).abs() < 1e-6);
        assert_eq!(parse_timestamp("1970-01-02 00:00:00").unwrap(), 86_400.0);
        assert!(parse_timestamp("yesterday").is_none());
    }

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

    #[test]
    fn percentiles_interpolate() {
        let p = Percentiles(vec![(0.0, 10.0), (50.0, 20.0), (100.0, 40.0)]);
        assert_eq!(p.sample(0.0), 10.0);
        assert_eq!(p.sample(0.25), 15.0);
        assert_eq!(p.sample(0.75), 30.0);
    }
}
