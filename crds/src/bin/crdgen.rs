//! Writes the CRDs of kaas to `charts/kaas/crds/`, checks that the files there are
//! current, or validates manifests against them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Deserialize;

/// Generate the kaas CustomResourceDefinitions from the Rust types, and validate manifests.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// What to do; `write` when left out.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write every CRD as YAML into a directory.
    Write {
        /// Directory to write the CRD YAML files into.
        #[arg(long, default_value = "charts/kaas/crds", env = "KAAS_CRD_DIR")]
        out: PathBuf,
    },
    /// Fail if the YAML in a directory differs from what the types generate.
    Check {
        /// Directory holding the committed CRD YAML.
        #[arg(long, default_value = "charts/kaas/crds", env = "KAAS_CRD_DIR")]
        dir: PathBuf,
    },
    /// Validate the kaas.dev objects in YAML files (`-` for stdin) against the CRD schemas,
    /// including their CEL rules. Objects of other groups are skipped.
    Validate {
        /// YAML files, multi-document allowed.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command.unwrap_or(Command::Write { out: "charts/kaas/crds".into() }) {
        Command::Write { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (file, crd) in kaas_crds::crds() {
                let path = out.join(file);
                std::fs::write(&path, kaas_crds::crd_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        Command::Check { dir } => {
            let mut stale = Vec::new();
            for (file, crd) in kaas_crds::crds() {
                let path = dir.join(file);
                if std::fs::read_to_string(&path).unwrap_or_default() != kaas_crds::crd_yaml(&crd)? {
                    stale.push(path.display().to_string());
                }
            }
            if !stale.is_empty() {
                bail!(
                    "CRD YAML is out of date, run `cargo run -p kaas-crds --bin crdgen`: {}",
                    stale.join(", ")
                );
            }
            println!("CRD YAML is current");
        }
        Command::Validate { files } => validate(&files)?,
    }
    Ok(())
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let crds: Vec<_> = kaas_crds::crds().into_iter().map(|(_, c)| c).collect();
    let (mut checked, mut failed) = (0, 0);
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value =
                serde_json::Value::deserialize(doc).with_context(|| format!("parsing {}", file.display()))?;
            let is_kaas =
                value.get("apiVersion").and_then(|v| v.as_str()).is_some_and(|v| v.starts_with("kaas.dev/"));
            if !is_kaas {
                continue;
            }
            checked += 1;
            let name = value.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("<unnamed>");
            match kaas_crds::validate::validate_object(&crds, &value) {
                Ok(()) => {
                    println!("ok   {}: {} {name}", file.display(), value["kind"].as_str().unwrap_or("?"))
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {}: {name}: {e}", file.display());
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {checked} kaas.dev objects are invalid");
    }
    println!("{checked} kaas.dev objects valid");
    Ok(())
}
