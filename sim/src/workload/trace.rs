//! Trace files (DESIGN.md §6): the kaas CSV (`function,arrival_ms[,duration_ms]`), the
//! Azure Functions 2019 and 2021 datasets and the Azure LLM inference traces. All are read
//! with the `csv` crate: quoted fields (a function name with a comma), CRLF line ends and
//! blank lines are handled as CSV means them; `#` starts a comment line. Every bad row is
//! an error naming the file and line.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use kaas_scheduler::{MS, Nanos, SEC};

use super::{Arrival, Boxed, NameMap, scale};
use crate::SimError;
use crate::rng::Rng;
use crate::scenario::{Scenario, TraceFormat, TraceSpec};

/// A file's rows: (line number, trimmed fields), blank rows skipped.
type Rows = Box<dyn Iterator<Item = Result<(usize, csv::StringRecord), SimError>> + Send>;

fn rows(path: &Path) -> Result<Rows, SimError> {
    let file = File::open(path).map_err(|e| SimError::Io(path.to_path_buf(), e))?;
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(file);
    let path = path.to_path_buf();
    Ok(Box::new(reader.into_records().filter_map(move |r| match r {
        Ok(rec) => {
            let line = rec.position().map_or(0, |p| p.line() as usize);
            (!rec.iter().all(str::is_empty)).then_some(Ok((line, rec)))
        }
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Some(Err(match e.into_kind() {
                csv::ErrorKind::Io(io) => SimError::Io(path.clone(), io),
                other => row_error(&path, line, format!("{other:?}")),
            }))
        }
    })))
}

fn row_error(path: &Path, line: usize, msg: impl Into<String>) -> SimError {
    SimError::Trace { path: path.to_path_buf(), line, message: msg.into() }
}

pub(super) fn open_trace(s: &Scenario, t: &TraceSpec, lf: f64) -> Result<Boxed, SimError> {
    let path = s.resolve(&t.path);
    let names = NameMap::new(s, t.function_map);
    match t.format {
        TraceFormat::Csv => {
            Ok(Box::new(CsvTrace { path: path.clone(), rows: rows(&path)?, first: true, names, lf, last: 0 }))
        }
        TraceFormat::Azure2021 => azure2021(&path, &names, lf),
        TraceFormat::AzureLlm => {
            let name = t.function.clone().unwrap_or_else(|| s.functions[0].name.clone());
            let function = names
                .get(&name)
                .ok_or_else(|| SimError::Scenario(format!("trace.function names unknown function {name}")))?;
            Ok(Box::new(LlmTrace {
                path: path.clone(),
                rows: rows(&path)?,
                first: true,
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
    rows: Rows,
    /// No row read yet: a first row whose arrival is not a number is the header.
    first: bool,
    names: NameMap,
    lf: f64,
    last: Nanos,
}

impl CsvTrace {
    fn parse(&mut self, line: usize, fields: &csv::StringRecord) -> Result<Option<Arrival>, SimError> {
        let first = std::mem::replace(&mut self.first, false);
        if fields.len() < 2 || fields.len() > 3 {
            return Err(row_error(
                &self.path,
                line,
                format!("expected function,arrival_ms[,duration_ms], got {} fields", fields.len()),
            ));
        }
        let Ok(arrival) = fields[1].parse::<f64>() else {
            if first {
                return Ok(None); // a header row
            }
            return Err(row_error(&self.path, line, format!("arrival_ms {:?} is not a number", &fields[1])));
        };
        if arrival.is_nan() || arrival < 0.0 {
            return Err(row_error(&self.path, line, format!("negative arrival time {arrival}")));
        }
        let duration = match fields.get(2) {
            None | Some("") => None,
            Some(d) => match d.parse::<f64>() {
                Ok(v) if v >= 0.0 => Some((v * MS as f64) as Nanos),
                _ => {
                    return Err(row_error(
                        &self.path,
                        line,
                        format!("duration_ms {d:?} is not a non-negative number"),
                    ));
                }
            },
        };
        let function = self
            .names
            .get(&fields[0])
            .ok_or_else(|| row_error(&self.path, line, format!("unknown function {:?}", &fields[0])))?;
        let t = scale(arrival / 1000.0, self.lf);
        if t < self.last {
            return Err(row_error(&self.path, line, "arrivals must be in time order"));
        }
        self.last = t;
        Ok(Some(Arrival { t, function, duration }))
    }
}

impl Iterator for CsvTrace {
    type Item = Result<Arrival, SimError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (line, fields) = match self.rows.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            match self.parse(line, &fields) {
                Ok(Some(a)) => return Some(Ok(a)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn azure2021(path: &Path, names: &NameMap, lf: f64) -> Result<Boxed, SimError> {
    let mut out = Vec::new();
    for (i, row) in rows(path)?.enumerate() {
        let (line, f) = row?;
        if i == 0 {
            continue; // the header
        }
        if f.len() != 4 {
            return Err(row_error(path, line, "expected app,func,end_timestamp,duration"));
        }
        let (Ok(end), Ok(dur)) = (f[2].parse::<f64>(), f[3].parse::<f64>()) else {
            return Err(row_error(path, line, "end_timestamp and duration must be numbers"));
        };
        let start = end - dur;
        if start.is_nan() || start < 0.0 || dur < 0.0 {
            return Err(row_error(
                path,
                line,
                format!("negative time (arrival {start} s, duration {dur} s)"),
            ));
        }
        let function =
            names.get(&f[1]).ok_or_else(|| row_error(path, line, format!("unknown function {}", &f[1])))?;
        out.push(Arrival { t: scale(start, lf), function, duration: Some((dur * SEC as f64) as Nanos) });
    }
    out.sort_by_key(|a| (a.t, a.function));
    Ok(Box::new(out.into_iter().map(Ok)))
}

struct LlmTrace {
    path: PathBuf,
    rows: Rows,
    /// The header row is still to come.
    first: bool,
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
            let (line, f) = match self.rows.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if std::mem::replace(&mut self.first, false) {
                continue; // the header
            }
            let parsed = (f.len() == 3)
                .then(|| {
                    Some((parse_timestamp(&f[0])?, f[1].parse::<f64>().ok()?, f[2].parse::<f64>().ok()?))
                })
                .flatten()
                .filter(|(_, ctx, gen_tokens)| *ctx >= 0.0 && *gen_tokens >= 0.0);
            let Some((ts, ctx, gen_tokens)) = parsed else {
                return Some(Err(row_error(
                    &self.path,
                    line,
                    "expected TIMESTAMP,ContextTokens,GeneratedTokens (token counts non-negative)",
                )));
            };
            let origin = *self.origin.get_or_insert(ts);
            let t = scale(ts - origin, self.lf);
            if ts < origin || t < self.last {
                return Some(Err(row_error(&self.path, line, "timestamps must be in time order")));
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
        for (i, row) in rows(dpath)?.enumerate() {
            let (line, f) = row?;
            if i == 0 {
                continue; // the header
            }
            let vals: Option<Vec<f64>> =
                (7..14).map(|c| f.get(c).and_then(|x| x.parse::<f64>().ok()).filter(|v| *v >= 0.0)).collect();
            let Some(v) = vals else {
                return Err(row_error(
                    dpath,
                    line,
                    "expected 14 columns ending in percentile_Average_0..100 (non-negative)",
                ));
            };
            let pts = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0].into_iter().zip(v).collect();
            dist.insert(f[2].to_string(), Percentiles(pts));
        }
    }
    let mut functions: Vec<(u32, Vec<u32>, Option<Percentiles>)> = Vec::new();
    for (i, row) in rows(path)?.enumerate() {
        let (line, f) = row?;
        if i == 0 {
            continue; // the header
        }
        if f.len() < 5 {
            return Err(row_error(path, line, "expected HashOwner,HashApp,HashFunction,Trigger,1..1440"));
        }
        let counts: Result<Vec<u32>, _> = f.iter().skip(4).map(|x| x.parse::<u32>()).collect();
        let counts =
            counts.map_err(|_| row_error(path, line, "per-minute counts must be non-negative integers"))?;
        let function =
            names.get(&f[2]).ok_or_else(|| row_error(path, line, format!("unknown function {}", &f[2])))?;
        functions.push((function, counts, dist.get(&f[2]).cloned()));
    }
    let minutes = functions.iter().map(|r| r.1.len()).max().unwrap_or(0);
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
            for (function, counts, d) in &functions {
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
    for (i, row) in rows(&path)?.enumerate() {
        let (line, f) = row?;
        if i == 0 {
            continue; // the header
        }
        let mb = f.get(4).and_then(|v| v.parse::<f64>().ok()).filter(|mb| *mb >= 0.0);
        let (Some(mb), Some(name)) = (mb, f.get(2)) else {
            return Err(row_error(
                &path,
                line,
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
    fn percentiles_interpolate() {
        let p = Percentiles(vec![(0.0, 10.0), (50.0, 20.0), (100.0, 40.0)]);
        assert_eq!(p.sample(0.0), 10.0);
        assert_eq!(p.sample(0.25), 15.0);
        assert_eq!(p.sample(0.75), 30.0);
    }
}
