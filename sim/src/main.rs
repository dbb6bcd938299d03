//! `kaas-sim`: compare kaas scheduling policies on real and synthetic workloads.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kaas_scheduler::POLICY_NAMES;
use kaas_sim::policy_report;
use kaas_sim::report::{self, Format};
use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::simulate;
use kaas_sim::sweep::{self, Grid};

/// Simulate kaas scheduling policies on a scenario: a cluster, functions and a workload.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one policy (or all) on a scenario and print every metric.
    Run {
        /// Scenario YAML file (see examples/scenarios/).
        #[arg(long, short)]
        scenario: PathBuf,
        /// Policy name, or `all` for every policy. Defaults to the scenario's policy.
        #[arg(long, short)]
        policy: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        format: Format,
        /// Also write results.csv, results.json and per-function.csv into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the scenario's load factor.
        #[arg(long)]
        load_factor: Option<f64>,
        /// Print 0 for sim_wall_s and events_per_s, so repeated runs are byte-identical.
        #[arg(long)]
        no_timing: bool,
    },
    /// Run a grid of load factors × policies × cluster variants in parallel; write CSV and SVG
    /// plots (default grid: the scenario's `sweep` section, else loads 0.5–2 and every policy).
    Sweep {
        #[command(flatten)]
        grid: GridArgs,
        /// Output directory for sweep.csv and the plots.
        #[arg(long, default_value = "sweep-out")]
        out: PathBuf,
    },
    /// Every policy with and without deadline admission over a range of loads: writes
    /// report.md (the answers: fewest cold starts, least wait, fairest, what admission
    /// buys at overload, what CPU fallback buys), report.csv and SVG plots (default loads:
    /// the scenario's sweep loads, else 0.5,1,1.5,2,3; default policies: all).
    Report {
        #[command(flatten)]
        grid: GridArgs,
        /// Output directory.
        #[arg(long, default_value = "report-out")]
        out: PathBuf,
    },
    /// List the policy names.
    Policies,
}

/// The grid flags `sweep` and `report` share.
#[derive(clap::Args, Debug)]
struct GridArgs {
    /// Scenario YAML file (see examples/scenarios/); its `sweep` section gives the default grid.
    #[arg(long, short)]
    scenario: PathBuf,
    /// Load factors, comma separated.
    #[arg(long, value_delimiter = ',')]
    load_factors: Vec<f64>,
    /// Policies, comma separated.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long, env = "KAAS_SIM_THREADS")]
    threads: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl GridArgs {
    /// Loads the scenario and sizes the thread pool.
    fn start(&self) -> anyhow::Result<Scenario> {
        let s = Scenario::load(&self.scenario)?;
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
        }
        Ok(s)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaas-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policies_for(arg: Option<&str>, scenario: &Scenario) -> Vec<String> {
    match arg {
        Some("all") => POLICY_NAMES.iter().map(|s| s.to_string()).collect(),
        Some(p) => vec![p.to_string()],
        None => vec![scenario.policy.name.clone()],
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Policies => {
            for p in POLICY_NAMES {
                println!("{p}");
            }
        }
        Command::Run { scenario, policy, format, out, load_factor, no_timing } => {
            let s = Scenario::load(&scenario)?;
            let load = load_factor.unwrap_or(s.workload.load_factor);
            let mut rows = policies_for(policy.as_deref(), &s)
                .iter()
                .map(|p| simulate(&s, p, load, None))
                .collect::<Result<Vec<_>, _>>()?;
            if no_timing {
                for r in &mut rows {
                    r.sim_wall_s = 0.0;
                    r.events_per_s = 0.0;
                }
            }
            print!(
                "{}",
                match format {
                    Format::Table => report::table(&rows),
                    Format::Json => report::json(&rows) + "\n",
                    Format::Csv => report::csv(&rows),
                }
            );
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("results.csv"), report::csv(&rows))?;
                std::fs::write(dir.join("results.json"), report::json(&rows))?;
                let per = report::per_function_csv(&rows);
                std::fs::write(dir.join("per-function.csv"), per)?;
                eprintln!("wrote {}/results.csv, results.json, per-function.csv", dir.display());
            }
        }
        Command::Report { grid, out } => {
            let s = grid.start()?;
            let GridArgs { load_factors, policies, quiet, .. } = grid;
            let mut loads = if load_factors.is_empty() {
                s.sweep
                    .as_ref()
                    .map(|g| g.load_factors.clone())
                    .unwrap_or_else(|| vec![0.5, 1.0, 1.5, 2.0, 3.0])
            } else {
                load_factors
            };
            loads.sort_by(f64::total_cmp);
            loads.dedup();
            if loads.is_empty() {
                anyhow::bail!("no load factors");
            }
            let policies = if policies.is_empty() {
                POLICY_NAMES.iter().map(|s| s.to_string()).collect()
            } else {
                policies
            };
            let rows = policy_report::run(&s, &loads, &policies, !quiet)?;
            let fallback = policy_report::cpu_fallback(&s, &rows, &loads)?;
            let files = policy_report::write(&out, &s, &loads, &policies, &rows, fallback.as_ref())?;
            print!("{}", policy_report::answers(&rows, &loads, fallback.as_ref()));
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
        Command::Sweep { grid, out } => {
            let s = grid.start()?;
            let GridArgs { load_factors, policies, quiet, .. } = grid;
            let spec = s.sweep.clone();
            let mut loads = if load_factors.is_empty() {
                spec.as_ref()
                    .map(|g| g.load_factors.clone())
                    .unwrap_or_else(|| vec![0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
            } else {
                load_factors
            };
            loads.sort_by(f64::total_cmp);
            let policies = if !policies.is_empty() {
                policies
            } else {
                spec.as_ref()
                    .map(|g| g.policies.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| POLICY_NAMES.iter().map(|s| s.to_string()).collect())
            };
            let mut variants: Vec<(String, Option<_>)> = vec![("base".into(), None)];
            if let Some(g) = &spec {
                variants.extend(g.clusters.iter().map(|c| (c.name.clone(), Some(c.counts.clone()))));
            }
            let grid = Grid { loads, policies, variants };
            let results = sweep::run(&s, &grid, !quiet)?;
            let files = sweep::write(&out, &grid, &results)?;
            print!("{}", report::table(&results));
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
