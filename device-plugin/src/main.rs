//! `kaas-device-plugin`: the node DaemonSet binary. Hosts the node's executor and
//! advertises its devices to the kubelet as `kaas.dev/gpu-share` and `kaas.dev/cpu-share`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kaas_device_plugin::daemon::{Daemon, DaemonConfig};
use kaas_device_plugin::plugin::SocketMount;
use kaas_executor::devices::{BackendChoice, DeviceOptions, discover};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use tracing::{error, info, warn};

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Kubelet device plugin (API v1beta1) for kaas: advertises shares of this node's GPUs
/// and CPU, hosts the node's executor, and publishes the node's KaasNode.
///
/// Needs Kubernetes 1.26 or newer. Every flag can also be set through its environment
/// variable.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The kubelet's device-plugin directory (holds kubelet.sock and the plugin sockets).
    #[arg(long, env = "KAAS_DEVICE_PLUGIN_DIR", default_value = "/var/lib/kubelet/device-plugins")]
    device_plugin_dir: PathBuf,
    /// Kubernetes node name (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Which backends to use: cuda needs a GPU, wasm runs everywhere, auto takes both.
    #[arg(long, env = "KAAS_BACKEND", value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// kaas.dev/gpu-share units advertised per GPU.
    #[arg(long, env = "KAAS_GPU_SHARES", default_value_t = 8)]
    gpu_shares: u32,
    /// kaas.dev/cpu-share units advertised for the CPU (WebAssembly) device.
    #[arg(long, env = "KAAS_CPU_SHARES", default_value_t = 4)]
    cpu_shares: u32,
    /// TCP address of the executor's gRPC API, dialled by the gateway.
    #[arg(long, env = "KAAS_EXECUTOR_LISTEN", default_value = "0.0.0.0:7070")]
    executor_listen: SocketAddr,
    /// Serve the executor's TCP API over mutual TLS with this certificate (PEM, issued for
    /// `kaas-executor`; with --executor-tls-key and --executor-tls-client-ca). Required
    /// unless --insecure-executor-api or --executor-listen is a loopback address.
    #[arg(long, env = "KAAS_EXECUTOR_TLS_CERT")]
    executor_tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "KAAS_EXECUTOR_TLS_KEY")]
    executor_tls_key: Option<PathBuf>,
    /// The CA a gateway's client certificate must chain to (PEM).
    #[arg(long, env = "KAAS_EXECUTOR_TLS_CLIENT_CA")]
    executor_tls_client_ca: Option<PathBuf>,
    /// Serve the executor's TCP API in plaintext: anyone who reaches the port can register,
    /// run and evict functions. Only where a NetworkPolicy (or nothing else on the
    /// network) keeps everyone but the gateways out.
    #[arg(long, env = "KAAS_INSECURE_EXECUTOR_API")]
    insecure_executor_api: bool,
    /// Endpoint published in the KaasNode [default: https://$POD_IP:<executor port>, or
    /// http:// with --insecure-executor-api].
    #[arg(long, env = "KAAS_EXECUTOR_ENDPOINT")]
    executor_endpoint: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "KAAS_METRICS_LISTEN", default_value = "0.0.0.0:9101")]
    metrics_listen: SocketAddr,
    /// Directory of the executor's unix sockets: `executor.sock`, the node API (owner-only,
    /// never mounted into pods), and `shares/<share id>/executor.sock`, one per share.
    #[arg(long, env = "KAAS_SOCKET_DIR", default_value = "/var/run/kaas")]
    socket_dir: PathBuf,
    /// The same directory on the host, for Allocate's mounts [default: --socket-dir].
    #[arg(long, env = "KAAS_HOST_SOCKET_DIR")]
    host_socket_dir: Option<PathBuf>,
    /// Where Allocate mounts each allocated share's directory inside pods: share S's socket
    /// is <dir>/S/executor.sock (KAAS_EXECUTOR_SOCKET names the first share's).
    #[arg(long, env = "KAAS_POD_SOCKET_DIR", default_value = "/var/run/kaas")]
    pod_socket_dir: PathBuf,
    /// The kubelet's PodResources API socket: a pod's calls on its share socket are bound to
    /// the namespace of the pod the kubelet says holds the share.
    #[arg(long, env = "KAAS_POD_RESOURCES_SOCKET", default_value = kaas_device_plugin::podresources::DEFAULT_SOCKET)]
    pod_resources_socket: PathBuf,
    /// Policy of the executor's per-device kernel queues.
    #[arg(long, env = "KAAS_POLICY", default_value = "edf")]
    policy: String,
    /// Memory of the CPU device in MiB.
    #[arg(long, env = "KAAS_CPU_MEMORY_MIB", default_value_t = 4096)]
    cpu_memory_mib: u64,
    /// Concurrent kernels per GPU.
    #[arg(long, env = "KAAS_GPU_SLOTS", default_value_t = 4)]
    gpu_slots: u32,
    /// Kernel time limit in milliseconds; a kernel running longer fails its invocation.
    #[arg(long, env = "KAAS_KERNEL_TIMEOUT_MS", default_value_t = 10_000)]
    kernel_timeout_ms: u64,
    /// GPU memory in MiB left to the driver and everything outside kaas's accounting,
    /// CUDA contexts included (one per namespace under `namespace` isolation).
    #[arg(long, env = "KAAS_GPU_RESERVE_MIB", default_value_t = 1024)]
    gpu_reserve_mib: u64,
    /// How far past its buffers a WebAssembly kernel module's linear memory may reach, in
    /// MiB: its own initial memory (data, stack, heap) and any `memory.grow`.
    #[arg(long, env = "KAAS_WASM_MEMORY_MARGIN_MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=4096))]
    wasm_memory_margin_mib: u64,
    /// Requests the executor holds at most (queued or running); past it, Execute is
    /// refused at once (a rejection: 429 at the gateway, which tries another node).
    #[arg(long, env = "KAAS_MAX_QUEUED_REQUESTS", default_value_t = kaas_executor::inflight::DEFAULT_EXECUTOR_REQUESTS)]
    max_queued_requests: usize,
    /// Input bytes of those requests the executor holds at most.
    #[arg(long, env = "KAAS_MAX_INFLIGHT_BYTES", default_value_t = kaas_executor::inflight::DEFAULT_EXECUTOR_BYTES)]
    max_inflight_bytes: u64,
    /// Seconds between KaasNode heartbeats.
    #[arg(long, env = "KAAS_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Do not publish a KaasNode (no Kubernetes API needed).
    #[arg(long, env = "KAAS_NO_KAASNODE")]
    no_kaasnode: bool,
    /// Log format.
    #[arg(long, env = "KAAS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let node_name = args.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(hostname);
    anyhow::ensure!(!node_name.is_empty(), "--node-name (or NODE_NAME) is required");
    let defaults = DeviceOptions::default();
    let devices = discover(&DeviceOptions {
        backend: args.backend,
        cpu_memory: args.cpu_memory_mib << 20,
        gpu_slots: args.gpu_slots,
        kernel_timeout: Duration::from_millis(args.kernel_timeout_ms),
        wasm_memory_margin: args.wasm_memory_margin_mib << 20,
        gpu_reserve: args.gpu_reserve_mib.saturating_mul(1 << 20),
        ..defaults
    })?;
    let scheduler = SchedulerConfig::new(PolicyConfig::named(&args.policy));
    let kube = if args.no_kaasnode {
        None
    } else {
        match kube::Client::try_default().await {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, "no Kubernetes API configuration: KaasNode will not be published");
                None
            }
        }
    };
    let tls = kaas_executor::tls::TlsFiles::from_flags(
        args.executor_tls_cert.clone(),
        args.executor_tls_key.clone(),
        args.executor_tls_client_ca.clone(),
        "--executor-tls-cert, --executor-tls-key, --executor-tls-client-ca",
    )
    .map_err(anyhow::Error::msg)?;
    let executor_tls = match (tls, args.insecure_executor_api) {
        (Some(files), false) => Some(files.server()?),
        (None, true) => {
            warn!(
                "--insecure-executor-api: the executor's TCP API is plaintext; anyone who reaches it can register, run and evict functions"
            );
            None
        }
        (Some(_), true) => anyhow::bail!("--insecure-executor-api contradicts the --executor-tls-* files"),
        // Only this machine can reach a loopback address.
        (None, false) if args.executor_listen.ip().is_loopback() => None,
        (None, false) => anyhow::bail!(
            "the executor's TCP API needs mutual TLS: give --executor-tls-cert, --executor-tls-key and \
             --executor-tls-client-ca (the chart does), or --insecure-executor-api to serve it in plaintext"
        ),
    };
    let scheme = if executor_tls.is_some() { "https" } else { "http" };
    let endpoint = args.executor_endpoint.clone().or_else(|| {
        std::env::var("POD_IP").ok().filter(|ip| !ip.is_empty()).map(|ip| {
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            format!("{scheme}://{host}:{}", args.executor_listen.port())
        })
    });
    let mut daemon = Daemon::start(
        devices,
        DaemonConfig {
            node_name,
            device_plugin_dir: args.device_plugin_dir.clone(),
            socket_dir: args.socket_dir.clone(),
            mount: SocketMount {
                host_dir: args.host_socket_dir.clone().unwrap_or_else(|| args.socket_dir.clone()),
                pod_dir: args.pod_socket_dir.clone(),
            },
            gpu_shares: args.gpu_shares,
            cpu_shares: args.cpu_shares,
            executor_listen: Some(args.executor_listen),
            executor_endpoint: endpoint,
            executor_tls,
            metrics_listen: Some(args.metrics_listen),
            scheduler,
            health_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(args.heartbeat_seconds.max(1)),
            kube,
            pod_resources_socket: args.pod_resources_socket.clone(),
        },
    )
    .await?;
    daemon.executor.set_in_flight_limits(args.max_queued_requests, args.max_inflight_bytes);
    // Printed for whoever started us (tests read the ports from here).
    println!(
        "kaas-device-plugin serving: executor {:?}, metrics {:?}",
        daemon.executor_addr, daemon.metrics_addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failure = tokio::select! {
        _ = tokio::signal::ctrl_c() => { info!("interrupted"); None }
        _ = term.recv() => { info!("SIGTERM"); None }
        why = daemon.failed() => { error!(error = %why, "a kubelet plugin stopped serving; exiting"); Some(why) }
    };
    if let Some(why) = failure {
        let _ = daemon.shutdown().await;
        anyhow::bail!("{why}");
    }
    if let Err(e) = daemon.shutdown().await {
        error!(error = %e, "shutdown");
        return Err(e);
    }
    info!("stopped; sockets removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Args::command().debug_assert();
    }
}
