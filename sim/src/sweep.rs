//! `kaas-sim sweep`: a grid of load factors × policies × cluster variants, run in
//! parallel, written as CSV and SVG plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::SimError;
use crate::report;
use crate::scenario::Scenario;
use crate::simulate::{CDF_QUANTILES, RunResult, simulate};
use crate::svg::{Series, bar_chart, line_chart};

/// A sweep grid.
pub struct Grid {
    /// Load factors, in increasing order.
    pub loads: Vec<f64>,
    /// Policies.
    pub policies: Vec<String>,
    /// Cluster variants: a name and device counts per class (`None` = the scenario's).
    pub variants: Vec<(String, Option<BTreeMap<String, usize>>)>,
}

/// Runs the grid on all cores. Results come back in grid order, whatever the threads did.
pub fn run(s: &Scenario, grid: &Grid, progress: bool) -> Result<Vec<RunResult>, SimError> {
    let mut tasks = Vec::new();
    for (vi, v) in grid.variants.iter().enumerate() {
        for &load in &grid.loads {
            for p in &grid.policies {
                tasks.push((vi, v, load, p));
            }
        }
    }
    let bar = progress_bar(tasks.len(), progress);
    let results: Vec<Result<RunResult, SimError>> = tasks
        .par_iter()
        .map(|(_, v, load, policy)| {
            let variant = v.1.as_ref().map(|c| (v.0.as_str(), c));
            let r = simulate(s, policy, *load, variant).map(|mut r| {
                r.variant = v.0.clone();
                r
            });
            bar.inc(1);
            bar.set_message(format!("{} @ {load}", policy));
            r
        })
        .collect();
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// A progress bar over `runs` simulation runs (hidden unless `show`).
pub fn progress_bar(runs: usize, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(runs as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Writes `sweep.csv` and the plots into `out`; returns the files written.
pub fn write(out: &Path, grid: &Grid, results: &[RunResult]) -> Result<Vec<PathBuf>, SimError> {
    std::fs::create_dir_all(out).map_err(|e| SimError::Io(out.to_path_buf(), e))?;
    let mut files = Vec::new();
    let mut put = |name: String, body: String| -> Result<(), SimError> {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| SimError::Io(p.clone(), e))?;
        files.push(p);
        Ok(())
    };
    put("sweep.csv".into(), report::csv(results))?;
    let mid = grid.loads[grid.loads.len() / 2];
    for (variant, _) in &grid.variants {
        let suffix = if grid.variants.len() > 1 { format!("-{variant}") } else { String::new() };
        let rows: Vec<&RunResult> = results.iter().filter(|r| &r.variant == variant).collect();
        let series = |f: &dyn Fn(&RunResult) -> f64| -> Vec<Series> {
            grid.policies
                .iter()
                .map(|p| Series {
                    label: p.clone(),
                    points: rows.iter().filter(|r| &r.policy == p).map(|r| (r.load_factor, f(r))).collect(),
                })
                .collect()
        };
        put(
            format!("slo-attainment-vs-load{suffix}.svg"),
            line_chart(
                &format!("SLO attainment ({variant})"),
                "load factor",
                "slo_attainment",
                &series(&|r| r.report.slo_attainment),
                false,
            ),
        )?;
        put(
            format!("p99-latency-vs-load{suffix}.svg"),
            line_chart(
                &format!("p99 latency ({variant})"),
                "load factor",
                "latency_ms p99 (log)",
                &series(&|r| r.report.latency_ms.p99),
                true,
            ),
        )?;
        let cdf: Vec<Series> = grid
            .policies
            .iter()
            .filter_map(|p| rows.iter().find(|r| &r.policy == p && r.load_factor == mid))
            .map(|r| Series {
                label: r.policy.clone(),
                points: r.latency_cdf.iter().zip(CDF_QUANTILES).map(|(&l, q)| (l, q)).collect(),
            })
            .collect();
        put(
            format!("latency-cdf{suffix}.svg"),
            line_chart(
                &format!("latency CDF at load {mid} ({variant})"),
                "latency_ms",
                "fraction of requests",
                &cdf,
                false,
            ),
        )?;
        let bars: Vec<(String, f64)> = grid
            .policies
            .iter()
            .filter_map(|p| rows.iter().find(|r| &r.policy == p && r.load_factor == mid))
            .map(|r| (r.policy.clone(), r.report.cold_start_rate))
            .collect();
        put(
            format!("cold-start-rate{suffix}.svg"),
            bar_chart(&format!("cold-start rate at load {mid} ({variant})"), "cold_start_rate", &bars),
        )?;
    }
    Ok(files)
}
