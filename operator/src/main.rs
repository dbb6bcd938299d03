//! `kaas-operator`: the kaas control plane and invocation gateway.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kaas_executor::devices::BackendChoice;
use kaas_operator::cluster::RunOptions;
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
    /// Run in a cluster: the gateway on every replica, the controllers on the replica
    /// holding the leader-election Lease. Uses the in-cluster service account (or
    /// $KUBECONFIG).
    Run {
        /// HTTP address of the gateway.
        #[arg(long, env = "KAAS_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
        http_listen: SocketAddr,
        /// gRPC address of the gateway.
        #[arg(long, env = "KAAS_GRPC_LISTEN", default_value = "0.0.0.0:9090")]
        grpc_listen: SocketAddr,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "KAAS_METRICS_LISTEN", default_value = "0.0.0.0:9100")]
        metrics_listen: SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "KAAS_LEASE_NAMESPACE", default_value = "kaas-system")]
        lease_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, env = "KAAS_LEASE_NAME", default_value = "kaas-operator")]
        lease_name: String,
        /// This replica's identity in the Lease [default: $POD_NAME, else the hostname].
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// A node whose KaasNode heartbeat is older than this leaves placement and the
        /// gateway (for example 30s, 1m30s, 2m).
        #[arg(long, env = "KAAS_NODE_STALE_AFTER", default_value = "30s", value_parser = parse_duration)]
        node_stale_after: std::time::Duration,
        /// Drop the per-function gateway metrics (`kaas_gateway_function_*`, labelled by
        /// namespace and function), for clusters with very many functions.
        #[arg(long, env = "KAAS_NO_FUNCTION_METRICS")]
        no_function_metrics: bool,
        /// This replica's Pod UID (the chart sets it from the downward API): the ConfigMap
        /// carrying its per-function counts is owned by the Pod and deleted with it.
        #[arg(long, env = "POD_UID")]
        pod_uid: Option<String>,
        /// Who may invoke: `kubernetes` checks each caller's bearer token by TokenReview
        /// and its right (verb `invoke` on `kernelfunctions` in the function's namespace,
        /// as ClusterRole kaas-invoker grants) by SubjectAccessReview; `none` lets anyone
        /// who reaches the gateway invoke anything (mutually trusting tenants only).
        #[arg(long, env = "KAAS_AUTH", default_value = "kubernetes", value_parser = ["kubernetes", "none"])]
        auth: String,
        /// The largest invocation payload, in bytes: a gRPC request above it is answered
        /// RESOURCE_EXHAUSTED, an HTTP body above its base64 size 413, both before they are
        /// read into memory.
        #[arg(long, env = "KAAS_MAX_REQUEST_BYTES", default_value_t = kaas_operator::gateway::http::DEFAULT_MAX_REQUEST_BYTES)]
        max_request_bytes: usize,
        #[command(flatten)]
        executor_tls: ExecutorTlsArgs,
        /// The largest HTTPS source (module or Const buffer) fetched, in bytes; a larger one
        /// is refused as soon as its Content-Length or its body shows it, and the function
        /// is not admitted (SourceUnavailable).
        #[arg(long, env = "KAAS_MAX_DOWNLOAD_BYTES", default_value_t = kaas_operator::controller::sources::DEFAULT_MAX_DOWNLOAD_BYTES)]
        max_download_bytes: u64,
        /// Verified HTTPS downloads kept in memory for reuse, in bytes: a `(url, sha256)`
        /// is fetched once while it stays cached.
        #[arg(long, env = "KAAS_DOWNLOAD_CACHE_BYTES", default_value_t = kaas_operator::controller::sources::DEFAULT_DOWNLOAD_CACHE_BYTES)]
        download_cache_bytes: u64,
        /// Invocations this replica holds at most (routing, dispatched or retrying); past
        /// it one is answered 429 with Retry-After at once.
        #[arg(long, env = "KAAS_MAX_INFLIGHT_REQUESTS", default_value_t = kaas_executor::inflight::DEFAULT_GATEWAY_REQUESTS)]
        max_inflight_requests: usize,
        /// Input bytes of those invocations this replica holds at most.
        #[arg(long, env = "KAAS_MAX_INFLIGHT_BYTES", default_value_t = kaas_executor::inflight::DEFAULT_GATEWAY_BYTES)]
        max_inflight_bytes: u64,
    },
    /// Apply (server-side) the kaas CRDs this binary was built with, then exit: the
    /// chart's pre-install/pre-upgrade hook runs it, so `helm upgrade` upgrades the CRDs.
    ApplyCrds,
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
        /// Require a bearer token on every invocation: one `TOKEN NAMESPACE[,NAMESPACE...]`
        /// or `TOKEN *` per line. Without it standalone listens on loopback addresses only.
        #[arg(long, env = "KAAS_AUTH_TOKEN_FILE")]
        auth_token_file: Option<PathBuf>,
        /// The largest invocation payload, in bytes: a gRPC request above it is answered
        /// RESOURCE_EXHAUSTED, an HTTP body above its base64 size 413, both before they are
        /// read into memory.
        #[arg(long, env = "KAAS_MAX_REQUEST_BYTES", default_value_t = kaas_operator::gateway::http::DEFAULT_MAX_REQUEST_BYTES)]
        max_request_bytes: usize,
        /// Invocations the gateway holds at once (queued or running); past it a request is
        /// answered 429 at once.
        #[arg(long, env = "KAAS_MAX_INFLIGHT_REQUESTS", default_value_t = kaas_executor::inflight::DEFAULT_GATEWAY_REQUESTS)]
        max_inflight_requests: usize,
        /// Input bytes of the invocations the gateway holds at once; past it 429 at once.
        #[arg(long, env = "KAAS_MAX_INFLIGHT_BYTES", default_value_t = kaas_executor::inflight::DEFAULT_GATEWAY_BYTES)]
        max_inflight_bytes: u64,
    },
}

/// How the operator reaches the executors `KaasNode`s announce.
#[derive(clap::Args, Debug)]
struct ExecutorTlsArgs {
    /// Client certificate (PEM) for mutual TLS to executors, signed by the CA executors
    /// trust (the chart generates it); with --executor-tls-key and --executor-tls-ca.
    /// Required unless --insecure-executor-api.
    #[arg(long, env = "KAAS_EXECUTOR_TLS_CERT")]
    executor_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "KAAS_EXECUTOR_TLS_KEY")]
    executor_tls_key: Option<PathBuf>,
    /// The CA executors' certificates (issued for `kaas-executor`) must chain to (PEM).
    #[arg(long, env = "KAAS_EXECUTOR_TLS_CA")]
    executor_tls_ca: Option<PathBuf>,
    /// Talk to executors in plaintext (executors run with --insecure-executor-api).
    #[arg(long, env = "KAAS_INSECURE_EXECUTOR_API")]
    insecure_executor_api: bool,
}

impl ExecutorTlsArgs {
    fn connector(self) -> anyhow::Result<kaas_operator::gateway::Connector> {
        let files = kaas_executor::tls::TlsFiles::from_flags(
            self.executor_tls_cert,
            self.executor_tls_key,
            self.executor_tls_ca,
            "--executor-tls-cert, --executor-tls-key, --executor-tls-ca",
        )
        .map_err(anyhow::Error::msg)?;
        match (files, self.insecure_executor_api) {
            (Some(f), false) => Ok(kaas_operator::gateway::Connector::tls(f.client()?)),
            (None, true) => {
                tracing::warn!("--insecure-executor-api: executors are reached in plaintext");
                Ok(kaas_operator::gateway::Connector::plaintext())
            }
            (Some(_), true) => {
                anyhow::bail!("--insecure-executor-api contradicts the --executor-tls-* files")
            }
            (None, false) => anyhow::bail!(
                "executors are reached over mutual TLS: give --executor-tls-cert, --executor-tls-key and \
                 --executor-tls-ca (the chart does), or --insecure-executor-api"
            ),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = kaas_executor::logs::filter();
    if cli.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match cli.command {
        Command::Run {
            http_listen,
            grpc_listen,
            metrics_listen,
            lease_namespace,
            lease_name,
            identity,
            node_stale_after,
            no_function_metrics,
            pod_uid,
            auth,
            max_request_bytes,
            executor_tls,
            max_download_bytes,
            download_cache_bytes,
            max_inflight_requests,
            max_inflight_bytes,
        } => {
            let executor_connector = executor_tls.connector()?;
            kaas_operator::controller::sources::configure_downloads(
                max_download_bytes,
                download_cache_bytes,
            )?;
            let identity = identity.filter(|i| !i.is_empty()).unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            });
            anyhow::ensure!(!identity.is_empty(), "--identity (or POD_NAME) is required");
            kaas_operator::cluster::run(RunOptions {
                http_listen,
                grpc_listen,
                metrics_listen,
                lease_namespace,
                lease_name,
                identity,
                node_stale_after,
                function_metrics: !no_function_metrics,
                pod_uid: pod_uid.filter(|u| !u.is_empty()),
                kubernetes_auth: auth == "kubernetes",
                max_request_bytes,
                executor_connector,
                max_inflight: (max_inflight_requests, max_inflight_bytes),
            })
            .await
        }
        Command::ApplyCrds => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!("no Kubernetes API configuration (in-cluster or kubeconfig): {e}")
            })?;
            let names = kaas_operator::crds::apply(&client).await?;
            println!("applied {} CRDs: {}", names.len(), names.join(", "));
            Ok(())
        }
        Command::Standalone {
            functions,
            listen,
            grpc_listen,
            executors,
            no_local_executor,
            backend,
            cpu_slots,
            no_prewarm,
            auth_token_file,
            max_request_bytes,
            max_inflight_requests,
            max_inflight_bytes,
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
                auth_token_file,
                max_request_bytes,
                max_inflight: (max_inflight_requests, max_inflight_bytes),
            })
            .await
        }
    }
}

/// Parses a duration as `humantime` does (`500ms`, `30s`, `1m30s`, `2h`), or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 500ms, 30s or 1m30s: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_duration("45"), Ok(Duration::from_secs(45)));
        // What the hand-written parser refused.
        assert_eq!(super::parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(super::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        let e = super::parse_duration("3 fortnights").unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
    }
}
