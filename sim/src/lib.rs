//! `kaas-sim`: a discrete-event simulator over the kaas scheduling core.
//!
//! It runs the same [`kaas_scheduler`] code the gateway runs against a simulated cluster
//! and a real or synthetic workload, so a platform team can compare policies, admission
//! and cluster shapes on its own traces before deploying. Same scenario and seed, same
//! output.

pub mod admission;
pub mod bound;
pub mod heap;
mod learn;
pub mod policy_report;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod simulate;
pub mod svg;
pub mod sweep;
pub mod topology;
pub mod workload;

use std::path::PathBuf;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// The scenario is malformed or inconsistent.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A trace row is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The scheduler refused the configuration.
    #[error(transparent)]
    Config(#[from] kaas_scheduler::ConfigError),
}
