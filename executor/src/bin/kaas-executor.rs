//! `kaas-executor`: a node executor on its own, serving the executor gRPC API on TCP and
//! optionally a unix socket. In a cluster the device plugin hosts the executor instead;
//! this binary is for standalone multi-process setups and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kaas_executor::devices::{BackendChoice, DeviceOptions, discover};
use kaas_executor::{Executor, ExecutorConfig, service};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

/// Run kernel functions on this machine's GPUs (CUDA) and CPU (WebAssembly).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TCP address of the gRPC API.
    #[arg(long, env = "KAAS_EXECUTOR_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Also serve on this unix socket.
    #[arg(long, env = "KAAS_EXECUTOR_SOCKET")]
    unix: Option<PathBuf>,
    /// Node name in status reports.
    #[arg(long, env = "NODE_NAME", default_value = "local")]
    node_name: String,
    /// Backends to use.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Memory of the CPU device in MiB.
    #[arg(long, default_value_t = 4096)]
    cpu_memory_mib: u64,
    /// Concurrent kernels on the CPU device (default: the number of cores).
    #[arg(long)]
    cpu_slots: Option<u32>,
    /// Concurrent kernels per GPU.
    #[arg(long, default_value_t = 4)]
    gpu_slots: u32,
    /// Kernel time limit in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    kernel_timeout_ms: u64,
    /// GPU memory in MiB left to the driver and everything outside kaas's accounting,
    /// CUDA contexts included (one per namespace under `namespace` isolation).
    #[arg(long, default_value_t = 1024)]
    gpu_reserve_mib: u64,
    /// How far past its buffers a WebAssembly kernel module's linear memory may reach, in
    /// MiB: its own initial memory (data, stack, heap) and any `memory.grow`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=4096))]
    wasm_memory_margin_mib: u64,
    /// Policy of the per-device queues until a gateway pushes the cluster's.
    #[arg(long, default_value = "edf")]
    policy: String,
    /// The AcceleratorClass of this node's devices of a kind, as `KIND=CLASS` (for
    /// example `gpu=h100`); repeatable. Reported in status so that gateways route by the
    /// class's profile, speed and price.
    #[arg(long = "accelerator-class", value_name = "KIND=CLASS", value_parser = kind_class)]
    accelerator_classes: Vec<(String, String)>,
    /// Serve the TCP API over mutual TLS with this certificate (PEM; with --tls-key and
    /// --tls-client-ca). Without the three the TCP API is plaintext: keep it on a loopback
    /// or otherwise unreachable address.
    #[arg(long, env = "KAAS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "KAAS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA a client's certificate must chain to (PEM): the gateways'.
    #[arg(long, env = "KAAS_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Requests the executor holds at most (queued or running); past it, Execute is
    /// refused at once (a rejection: 429 at the gateway, which tries another node).
    #[arg(long, default_value_t = kaas_executor::inflight::DEFAULT_EXECUTOR_REQUESTS)]
    max_queued_requests: usize,
    /// Input bytes of those requests the executor holds at most.
    #[arg(long, default_value_t = kaas_executor::inflight::DEFAULT_EXECUTOR_BYTES)]
    max_inflight_bytes: u64,
    /// Testing: make every kernel hold its slot FACTOR times the CPU time it used (the
    /// executor sleeps the difference after each kernel), to emulate a slower device
    /// class on one machine whose speed does not depend on the host's load.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    emulate_slowdown: f64,
    /// Invocations of functions whose learned runtime is at most this many µs run on the
    /// scheduler thread, skipping the ~50 µs hand-off to a blocking thread and back; each
    /// kernel there is stopped after 2 ms and run again on a blocking thread (WebAssembly
    /// only). 0: never.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = kaas_executor::runtime::DEFAULT_INLINE_MAX.as_micros() as u64)]
    inline_max_us: u64,
}

fn kind_class(s: &str) -> Result<(String, String), String> {
    let (kind, class) = s.split_once('=').ok_or_else(|| format!("expected KIND=CLASS, got {s:?}"))?;
    if kind != "gpu" && kind != "cpu" {
        return Err(format!("kind must be gpu or cpu, got {kind:?}"));
    }
    if class.is_empty() {
        return Err("the class name is empty".into());
    }
    Ok((kind.to_string(), class.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries the one "listening on" line that starters read.
    kaas_executor::logs::init_stderr();
    let args = Args::parse();
    let devices = discover(&DeviceOptions {
        backend: args.backend,
        cpu_memory: args.cpu_memory_mib << 20,
        cpu_slots: args.cpu_slots.unwrap_or(DeviceOptions::default().cpu_slots),
        gpu_slots: args.gpu_slots,
        kernel_timeout: Duration::from_millis(args.kernel_timeout_ms),
        wasm_memory_margin: args.wasm_memory_margin_mib << 20,
        gpu_reserve: args.gpu_reserve_mib.saturating_mul(1 << 20),
    })?;
    if !(1.0..=1000.0).contains(&args.emulate_slowdown) {
        anyhow::bail!("--emulate-slowdown must be between 1 and 1000, got {}", args.emulate_slowdown);
    }
    let devices = if args.emulate_slowdown > 1.0 {
        devices
            .into_iter()
            .map(|d| {
                let slowed = kaas_executor::backend::fault::FaultBackend::new(d);
                slowed.slow_down(args.emulate_slowdown);
                std::sync::Arc::new(slowed) as std::sync::Arc<dyn kaas_executor::backend::Backend>
            })
            .collect()
    } else {
        devices
    };
    let executor = Executor::start(
        devices,
        ExecutorConfig {
            node: args.node_name,
            scheduler: SchedulerConfig::new(PolicyConfig::named(&args.policy)),
            shares: Vec::new(),
            health_interval: Duration::from_secs(1),
            accelerator_classes: args.accelerator_classes.into_iter().collect(),
        },
    )?;
    executor.set_in_flight_limits(args.max_queued_requests, args.max_inflight_bytes);
    if args.inline_max_us > 2_000 {
        anyhow::bail!(
            "--inline-max-us must be below the 2 ms budget of a kernel run inline, got {}",
            args.inline_max_us
        );
    }
    executor.set_inline_max(Duration::from_micros(args.inline_max_us));
    let listener = service::bind(args.listen).await?;
    // Printed for whoever started us (tests read the port from here).
    let tls = kaas_executor::tls::TlsFiles::from_flags(
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_client_ca.clone(),
        "--tls-cert, --tls-key, --tls-client-ca",
    )
    .map_err(anyhow::Error::msg)?
    .map(|f| f.server())
    .transpose()?;
    if tls.is_none() && !listener.local_addr()?.ip().is_loopback() {
        tracing::warn!(
            "the TCP API is plaintext on a non-loopback address: anyone who reaches it can register, run \
             and evict functions (give --tls-cert, --tls-key and --tls-client-ca)"
        );
    }
    println!("kaas-executor listening on {}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match args.unix {
        Some(path) => {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let unix = tokio::spawn({
                let executor = executor.clone();
                let mut rx = rx.clone();
                async move {
                    service::serve_unix(executor, &path, async move {
                        let _ = rx.changed().await;
                    })
                    .await
                }
            });
            let mut rx2 = rx;
            let tcp = service::serve_tcp(executor, listener, tls, async move {
                let _ = rx2.changed().await;
            });
            tokio::select! {
                r = tcp => r?,
                _ = shutdown => { let _ = tx.send(true); }
            }
            unix.await??;
        }
        None => service::serve_tcp(executor, listener, tls, shutdown).await?,
    }
    Ok(())
}
