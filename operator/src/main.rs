//! `kaas-operator`: the kaas control plane and invocation gateway.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kaas_executor::devices::BackendChoice;
use kaas_operator::standalone::{StandaloneOptions, run};

/// Kernel-as-a-Service for Kubernetes: controllers, gateway, standalone mode.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "KAAS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the functions in a directory of YAML with no Kubernetes: the gateway plus an
    /// in-process executor (WebAssembly on the CPU, CUDA when a GPU is present).
    Standalone {
        /// Directory of KernelFunction (and optionally AcceleratorClass, SchedulingPolicy)
        /// YAML, searched recursively; other documents are skipped.
        #[arg(long, env = "KAAS_FUNCTIONS", default_value = "examples")]
        functions: PathBuf,
        /// HTTP address of the gateway.
        #[arg(long, env = "KAAS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// gRPC address of the gateway.
        #[arg(long, env = "KAAS_GRPC_LISTEN", default_value = "127.0.0.1:9090")]
        grpc_listen: SocketAddr,
        /// A remote executor (`http://host:port`); repeatable.
        #[arg(long = "executor")]
        executors: Vec<String>,
        /// Do not run an executor in this process (use --executor ones only).
        #[arg(long)]
        no_local_executor: bool,
        /// Backends of the in-process executor.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Kernel slots of the in-process CPU device (default: cores).
        #[arg(long)]
        cpu_slots: Option<u32>,
        /// Do not make functions resident at start (first invocations pay a cold start).
        #[arg(long)]
        no_prewarm: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if cli.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match cli.command {
        Command::Standalone {
            functions,
            listen,
            grpc_listen,
            executors,
            no_local_executor,
            backend,
            cpu_slots,
            no_prewarm,
        } => {
            run(StandaloneOptions {
                functions,
                listen,
                grpc_listen,
                executors,
                local_executor: !no_local_executor,
                backend,
                cpu_slots,
                prewarm: !no_prewarm,
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
