//! Does admission pay? Each policy with `deadline` admission against the same policy with
//! `admission: none`, over loads, on a scenario: the comparison behind `kaas-sim report`
//! and the admission grid test.

use kaas_scheduler::{AdmissionMode, POLICY_NAMES};
use rayon::prelude::*;

use crate::SimError;
use crate::scenario::Scenario;
use crate::simulate::{RunResult, simulate};

/// One grid cell: a policy at a load, without and with deadline admission.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Load factor.
    pub load: f64,
    /// Policy name.
    pub policy: String,
    /// `admission: none`.
    pub none: RunResult,
    /// `admission: deadline`.
    pub deadline: RunResult,
}

impl Pair {
    /// Whether deadline admission served at least as many requests in time as none did
    /// (within `tolerance` of attainment) and kept its admitted requests in time (those
    /// that some schedule could serve in time: see
    /// [`RunResult::servable_admitted_slo_attainment`]).
    pub fn holds(&self, tolerance: f64, admitted_floor: f64) -> bool {
        self.deadline.report.slo_attainment + tolerance >= self.none.report.slo_attainment
            && (self.deadline.report.admitted == 0
                || self.deadline.servable_admitted_slo_attainment() >= admitted_floor)
    }
}

/// Runs every policy (or `policies`) at every load, without and with deadline admission, in parallel.
pub fn compare(s: &Scenario, loads: &[f64], policies: &[&str]) -> Result<Vec<Pair>, SimError> {
    let policies: Vec<&str> = if policies.is_empty() { POLICY_NAMES.to_vec() } else { policies.to_vec() };
    let mut none = s.clone();
    none.admission = AdmissionMode::None;
    let mut deadline = s.clone();
    deadline.admission = AdmissionMode::Deadline;
    let tasks: Vec<(f64, &str)> = loads.iter().flat_map(|&l| policies.iter().map(move |&p| (l, p))).collect();
    tasks
        .par_iter()
        .map(|&(load, policy)| {
            Ok(Pair {
                load,
                policy: policy.to_string(),
                none: simulate(&none, policy, load, None)?,
                deadline: simulate(&deadline, policy, load, None)?,
            })
        })
        .collect()
}

/// A Markdown table of the pairs: attainment without and with admission, admitted
/// attainment, rejection rate.
pub fn table(scenario: &str, pairs: &[Pair]) -> String {
    let mut out = String::from(
        "| scenario | load | policy | slo_attainment none | slo_attainment deadline | admitted_slo_attainment | of the servable | rejected |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in pairs {
        let d = &p.deadline.report;
        let rejected = if d.requests == 0 { 0.0 } else { d.rejected as f64 / d.requests as f64 };
        out += &format!(
            "| {scenario} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} % |\n",
            p.load,
            p.policy,
            p.none.report.slo_attainment,
            d.slo_attainment,
            d.admitted_slo_attainment,
            p.deadline.servable_admitted_slo_attainment(),
            rejected * 100.0
        );
    }
    out
}
