//! Output formats for simulation results: an aligned table, JSON and CSV, each with the
//! metric names of DESIGN.md section 5 plus `sim_wall_s` and `events_per_s`.

use std::fmt::Write;

use crate::simulate::RunResult;

/// Output format of `kaas-sim run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// A JSON array of rows.
    Json,
    /// CSV with a header row.
    Csv,
}

/// The flat columns of one result row, in report order.
pub fn columns(r: &RunResult) -> Vec<(&'static str, String)> {
    let m = &r.report;
    let f = |v: f64| format!("{v:.6}");
    let mut c = vec![
        ("scenario", r.scenario.clone()),
        ("variant", r.variant.clone()),
        ("load_factor", format!("{}", r.load_factor)),
        ("policy", r.policy.clone()),
        ("requests", m.requests.to_string()),
        ("admitted", m.admitted.to_string()),
        ("rejected", m.rejected.to_string()),
        ("completed", m.completed.to_string()),
        ("slo_met", m.slo_met.to_string()),
        ("slo_attainment", f(m.slo_attainment)),
        ("admitted_slo_attainment", f(m.admitted_slo_attainment)),
        ("goodput_rps", f(m.goodput_rps)),
        ("cold_starts", m.cold_starts.to_string()),
        ("cold_start_rate", f(m.cold_start_rate)),
    ];
    for (name, d) in [("wait_ms", &m.wait_ms), ("latency_ms", &m.latency_ms)] {
        let keys: [(&'static str, f64); 4] = match name {
            "wait_ms" => [
                ("wait_ms_mean", d.mean),
                ("wait_ms_p50", d.p50),
                ("wait_ms_p95", d.p95),
                ("wait_ms_p99", d.p99),
            ],
            _ => [
                ("latency_ms_mean", d.mean),
                ("latency_ms_p50", d.p50),
                ("latency_ms_p95", d.p95),
                ("latency_ms_p99", d.p99),
            ],
        };
        c.extend(keys.iter().map(|(k, v)| (*k, f(*v))));
    }
    c.extend([
        ("fairness_jain", f(m.fairness_jain)),
        ("utilization", f(m.utilization)),
        ("cost", f(m.cost)),
        ("failed", m.failed.to_string()),
        ("sim_wall_s", f(r.sim_wall_s)),
        ("events_per_s", format!("{:.0}", r.events_per_s)),
    ]);
    c
}

/// CSV with a header row (RFC 4180: a field with a comma, quote or line break is quoted).
pub fn csv(rows: &[RunResult]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    if let Some(first) = rows.first() {
        let _ = w.write_record(columns(first).iter().map(|c| c.0));
    }
    for r in rows {
        let _ = w.write_record(columns(r).iter().map(|c| c.1.as_str()));
    }
    finish(w)
}

/// One row per (result, function): what `--out` writes to `per-function.csv`.
pub fn per_function_csv(rows: &[RunResult]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "policy",
        "function",
        "requests",
        "rejected",
        "completed",
        "slo_met",
        "slo_attainment",
        "cold_starts",
        "latency_ms_p50",
        "latency_ms_p99",
    ]);
    for r in rows {
        for (name, m) in &r.per_function {
            let _ = w.write_record([
                r.policy.clone(),
                name.clone(),
                m.requests.to_string(),
                m.rejected.to_string(),
                m.completed.to_string(),
                m.slo_met.to_string(),
                format!("{:.6}", m.slo_attainment),
                m.cold_starts.to_string(),
                format!("{:.6}", m.latency_ms.p50),
                format!("{:.6}", m.latency_ms.p99),
            ]);
        }
    }
    finish(w)
}

/// The text of an in-memory writer (writes to a `Vec` cannot fail; CSV output is UTF-8).
fn finish(w: csv::Writer<Vec<u8>>) -> String {
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// A JSON array; `wait_ms` and `latency_ms` are objects with `mean, p50, p95, p99`.
pub fn json(rows: &[RunResult]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// An aligned table with the most telling columns, one row per result.
pub fn table(rows: &[RunResult]) -> String {
    let header = [
        "policy",
        "load",
        "requests",
        "rejected",
        "slo_attainment",
        "admitted_slo",
        "goodput_rps",
        "cold_start_rate",
        "wait_p99_ms",
        "latency_p50_ms",
        "latency_p99_ms",
        "fairness_jain",
        "utilization",
        "cost",
        "events_per_s",
    ];
    let data: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.report;
            vec![
                r.policy.clone(),
                format!("{}", r.load_factor),
                m.requests.to_string(),
                m.rejected.to_string(),
                format!("{:.4}", m.slo_attainment),
                format!("{:.4}", m.admitted_slo_attainment),
                format!("{:.2}", m.goodput_rps),
                format!("{:.4}", m.cold_start_rate),
                format!("{:.2}", m.wait_ms.p99),
                format!("{:.2}", m.latency_ms.p50),
                format!("{:.2}", m.latency_ms.p99),
                format!("{:.3}", m.fairness_jain),
                format!("{:.3}", m.utilization),
                format!("{:.4}", m.cost),
                format!("{:.2e}", r.events_per_s),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| data.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            let _ = if i == 0 {
                write!(out, "{c:<w$}", w = widths[i])
            } else {
                write!(out, "  {c:>w$}", w = widths[i])
            };
        }
        out.push('\n');
    };
    line(&header, &mut out);
    for r in &data {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>(), &mut out);
    }
    out
}
