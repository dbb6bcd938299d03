//! `kaas-sim report`: loads × policies × admission modes on one scenario, run in parallel,
//! written as `report.md` with SVG plots and a table that answers the thesis's questions:
//! which policy minimises cold starts, wait and unfairness; what `deadline` admission buys
//! at overload; what falling back to CPU devices buys.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use kaas_scheduler::AdmissionMode;
use rayon::prelude::*;

use crate::SimError;
use crate::report;
use crate::scenario::Scenario;
use crate::simulate::{RunResult, simulate};
use crate::svg::{Series, line_chart};

/// One run of the report: the admission mode it ran with, and its result.
pub struct Row {
    /// `none` or `deadline`.
    pub admission: AdmissionMode,
    /// The run.
    pub result: RunResult,
}

/// The CPU fallback comparison: the best policy at the middle load, with and without the
/// scenario's CPU classes.
pub struct Fallback {
    /// Policy compared.
    pub policy: String,
    /// Load factor compared at.
    pub load: f64,
    /// With every class.
    pub with: RunResult,
    /// With the CPU classes' device counts set to 0.
    pub without: RunResult,
}

fn mode_name(m: AdmissionMode) -> &'static str {
    match m {
        AdmissionMode::None => "none",
        AdmissionMode::Deadline => "deadline",
        AdmissionMode::TokenBucket => "token-bucket",
    }
}

/// Runs every (admission, load, policy) cell on all cores, with a progress bar.
pub fn run(s: &Scenario, loads: &[f64], policies: &[String], progress: bool) -> Result<Vec<Row>, SimError> {
    let mut tasks = Vec::new();
    for mode in [AdmissionMode::None, AdmissionMode::Deadline] {
        for &load in loads {
            for p in policies {
                tasks.push((mode, load, p.clone()));
            }
        }
    }
    let bar = crate::sweep::progress_bar(tasks.len(), progress);
    let rows: Vec<Result<Row, SimError>> = tasks
        .par_iter()
        .map(|(mode, load, policy)| {
            let mut sc = s.clone();
            sc.admission = *mode;
            let r = simulate(&sc, policy, *load, None).map(|result| Row { admission: *mode, result });
            bar.inc(1);
            bar.set_message(format!("{policy} @ {load}, admission {}", mode_name(*mode)));
            r
        })
        .collect();
    bar.finish_and_clear();
    rows.into_iter().collect()
}

/// The CPU fallback comparison, or `None` when the scenario has no CPU class (or only CPUs).
pub fn cpu_fallback(s: &Scenario, rows: &[Row], loads: &[f64]) -> Result<Option<Fallback>, SimError> {
    let cpu: Vec<&str> = s.cluster.iter().filter(|c| c.kind == "CPU").map(|c| c.name.as_str()).collect();
    if cpu.is_empty() || cpu.len() == s.cluster.len() {
        return Ok(None);
    }
    let load = loads[loads.len() / 2];
    let Some(best) = rows
        .iter()
        .filter(|r| r.admission == AdmissionMode::None && r.result.load_factor == load)
        .max_by(|a, b| a.result.report.slo_attainment.total_cmp(&b.result.report.slo_attainment))
    else {
        return Ok(None);
    };
    let counts: BTreeMap<String, usize> =
        s.cluster.iter().map(|c| (c.name.clone(), if c.kind == "CPU" { 0 } else { c.count })).collect();
    let mut sc = s.clone();
    sc.admission = AdmissionMode::None;
    let without = simulate(&sc, &best.result.policy, load, Some(("no-cpu", &counts)))?;
    Ok(Some(Fallback { policy: best.result.policy.clone(), load, with: best.result.clone(), without }))
}

fn pick(rows: &[Row], mode: AdmissionMode, load: f64) -> impl Iterator<Item = &RunResult> {
    rows.iter().filter(move |r| r.admission == mode && r.result.load_factor == load).map(|r| &r.result)
}

/// The table of answers, in Markdown.
pub fn answers(rows: &[Row], loads: &[f64], fallback: Option<&Fallback>) -> String {
    let mid = loads[loads.len() / 2];
    let top = loads[loads.len() - 1];
    let none = AdmissionMode::None;
    let best = |key: &dyn Fn(&RunResult) -> f64, low: bool| -> String {
        let mut v: Vec<&RunResult> = pick(rows, none, mid).collect();
        v.sort_by(|a, b| if low { key(a).total_cmp(&key(b)) } else { key(b).total_cmp(&key(a)) });
        v.first().map_or("–".into(), |r| format!("`{}` ({:.4})", r.policy, key(r)))
    };
    let mut t = String::from("| question | answer |\n|---|---|\n");
    let _ = writeln!(
        t,
        "| fewest cold starts (cold-start rate, load {mid}) | {} |",
        best(&|r| r.report.cold_start_rate, true)
    );
    let _ =
        writeln!(t, "| least wait (mean wait ms, load {mid}) | {} |", best(&|r| r.report.wait_ms.mean, true));
    let _ = writeln!(
        t,
        "| fairest (Jain index over functions, load {mid}) | {} |",
        best(&|r| r.report.fairness_jain, false)
    );
    let _ = writeln!(
        t,
        "| most requests in time (slo_attainment, load {mid}) | {} |",
        best(&|r| r.report.slo_attainment, false)
    );
    let buys: Vec<String> = pick(rows, none, top)
        .filter_map(|n| {
            pick(rows, AdmissionMode::Deadline, top).find(|d| d.policy == n.policy).map(|d| {
                format!(
                    "`{}` {:.3} → {:.3} ({:.1} % rejected)",
                    n.policy,
                    n.report.slo_attainment,
                    d.report.slo_attainment,
                    100.0 * d.report.rejected as f64 / d.report.requests.max(1) as f64
                )
            })
        })
        .collect();
    let _ = writeln!(
        t,
        "| what `deadline` admission buys at load {top} (slo_attainment none → deadline) | {} |",
        buys.join("; ")
    );
    match fallback {
        Some(f) => {
            let _ = writeln!(
                t,
                "| what CPU fallback buys (`{}`, load {}, slo_attainment without → with CPU devices) | {:.4} → {:.4}; cost {:.2} → {:.2} |",
                f.policy,
                f.load,
                f.without.report.slo_attainment,
                f.with.report.slo_attainment,
                f.without.report.cost,
                f.with.report.cost
            );
        }
        None => {
            let _ = writeln!(
                t,
                "| what CPU fallback buys | n/a: the scenario has no CPU class next to its GPUs |"
            );
        }
    }
    t
}

/// Writes `report.md`, `report.csv` and the plots into `out`; returns the files written.
pub fn write(
    out: &Path,
    s: &Scenario,
    loads: &[f64],
    policies: &[String],
    rows: &[Row],
    fallback: Option<&Fallback>,
) -> Result<Vec<PathBuf>, SimError> {
    std::fs::create_dir_all(out).map_err(|e| SimError::Io(out.to_path_buf(), e))?;
    let mut files = Vec::new();
    let mut put = |name: &str, body: String| -> Result<(), SimError> {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| SimError::Io(p.clone(), e))?;
        files.push(p);
        Ok(())
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = true;
    for mode in [AdmissionMode::None, AdmissionMode::Deadline] {
        for r in rows.iter().filter(|r| r.admission == mode) {
            let cols = report::columns(&r.result);
            if std::mem::take(&mut header) {
                let _ = w.write_record(std::iter::once("admission").chain(cols.iter().map(|c| c.0)));
            }
            let _ = w.write_record(std::iter::once(mode_name(mode)).chain(cols.iter().map(|c| c.1.as_str())));
        }
    }
    let csv = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
    put("report.csv", csv)?;
    let series = |mode: AdmissionMode, f: &dyn Fn(&RunResult) -> f64| -> Vec<Series> {
        policies
            .iter()
            .map(|p| Series {
                label: p.clone(),
                points: rows
                    .iter()
                    .filter(|r| r.admission == mode && &r.result.policy == p)
                    .map(|r| (r.result.load_factor, f(&r.result)))
                    .collect(),
            })
            .collect()
    };
    type Metric<'a> = &'a dyn Fn(&RunResult) -> f64;
    let none = AdmissionMode::None;
    let deadline = AdmissionMode::Deadline;
    let plots: [(&str, &str, &str, AdmissionMode, Metric, bool); 8] = [
        (
            "slo-attainment-none.svg",
            "SLO attainment, no admission",
            "slo_attainment",
            none,
            &|r| r.report.slo_attainment,
            false,
        ),
        (
            "slo-attainment-deadline.svg",
            "SLO attainment, deadline admission (rejections count as misses)",
            "slo_attainment",
            deadline,
            &|r| r.report.slo_attainment,
            false,
        ),
        (
            "rejection-rate-deadline.svg",
            "rejection rate, deadline admission",
            "rejected / requests",
            deadline,
            &|r| r.report.rejected as f64 / r.report.requests.max(1) as f64,
            false,
        ),
        (
            "cold-start-rate.svg",
            "cold-start rate, no admission",
            "cold_start_rate",
            none,
            &|r| r.report.cold_start_rate,
            false,
        ),
        (
            "p99-latency-none.svg",
            "p99 latency, no admission",
            "latency_ms p99 (log)",
            none,
            &|r| r.report.latency_ms.p99.max(1e-3),
            true,
        ),
        (
            "p99-latency-deadline.svg",
            "p99 latency, deadline admission",
            "latency_ms p99 (log)",
            deadline,
            &|r| r.report.latency_ms.p99.max(1e-3),
            true,
        ),
        (
            "jain-fairness.svg",
            "Jain fairness over functions, no admission",
            "fairness_jain",
            none,
            &|r| r.report.fairness_jain,
            false,
        ),
        ("cost.svg", "cost, no admission", "cost ($)", none, &|r| r.report.cost, false),
    ];
    let mut md = format!(
        "# Policy report: {}\n\nLoads {:?} × policies {} × admission `none` and `deadline`; {} runs. \
         Reproduce: `kaas-sim report --scenario FILE --out DIR`.\n\n## Answers\n\n{}\n## Plots\n\n",
        s.name,
        loads,
        policies.join(", "),
        rows.len(),
        answers(rows, loads, fallback)
    );
    for (file, title, ylabel, mode, f, log) in plots {
        put(file, line_chart(title, "load factor", ylabel, &series(mode, f), log))?;
        let _ = writeln!(md, "![{title}]({file})\n");
    }
    md += "## Every run\n\n| admission | load | policy | slo_attainment | admitted in time | rejected | cold-start rate | wait ms mean | p99 ms | Jain | cost |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let m = &r.result.report;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {:.4} | {:.1} % | {:.4} | {:.2} | {:.2} | {:.4} | {:.2} |",
            mode_name(r.admission),
            r.result.load_factor,
            r.result.policy,
            m.slo_attainment,
            m.admitted_slo_attainment,
            100.0 * m.rejected as f64 / m.requests.max(1) as f64,
            m.cold_start_rate,
            m.wait_ms.mean,
            m.latency_ms.p99,
            m.fairness_jain,
            m.cost
        );
    }
    put("report.md", md)?;
    Ok(files)
}
