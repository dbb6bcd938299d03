//! `kaas-operator standalone`: the gateway and an in-process executor (WebAssembly on the
//! CPU; CUDA when a GPU is present) serving the functions of a directory of YAML, with
//! no Kubernetes. Also the embedded default for end-to-end tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kaas_crds::{AcceleratorClass, DeviceKind, KernelFunction, SchedulingPolicy};
use kaas_executor::devices::{BackendChoice, DeviceOptions, discover};
use kaas_executor::{Executor, ExecutorConfig};
use kube::ResourceExt;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tracing::{info, warn};

use crate::convert::{InlineOnly, function_def};
use crate::gateway::http::{HttpState, router};
use crate::gateway::{Gateway, GatewayConfig, NodeClient, grpc::GatewayService};
use crate::policy::scheduler_config;

/// The kaas resources found in a directory.
#[derive(Default, Debug)]
pub struct Resources {
    /// Kernel functions.
    pub functions: Vec<KernelFunction>,
    /// Accelerator classes.
    pub classes: Vec<AcceleratorClass>,
    /// The scheduling policy, if one was given.
    pub policy: Option<SchedulingPolicy>,
}

/// Reads every `*.yaml`/`*.yml` under `dir` (recursively). Documents of other API groups
/// are skipped; kaas.dev documents are validated against the CRD schemas (CEL included)
/// and an invalid one is an error naming the file and field, as is a document that is not
/// YAML at all.
pub fn load_dir(dir: &Path) -> anyhow::Result<Resources> {
    let crds: Vec<_> = kaas_crds::crds().into_iter().map(|(_, c)| c).collect();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut r = Resources::default();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            // A document that is not YAML is an error, not something to skip: it may be
            // the function the user meant to deploy.
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("{}: document {} is not valid YAML", file.display(), i + 1))?;
            let api = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
            if !api.starts_with("kaas.dev/") {
                continue;
            }
            kaas_crds::validate::validate_object(&crds, &value)
                .with_context(|| format!("{}", file.display()))?;
            match value["kind"].as_str() {
                Some("KernelFunction") => {
                    let mut kf: KernelFunction = serde_json::from_value(value)?;
                    if kf.namespace().is_none() {
                        kf.metadata.namespace = Some("default".into());
                    }
                    r.functions.push(kf);
                }
                Some("AcceleratorClass") => r.classes.push(serde_json::from_value(value)?),
                Some("SchedulingPolicy") => r.policy = Some(serde_json::from_value(value)?),
                _ => {}
            }
        }
    }
    Ok(r)
}

/// Options of standalone mode.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Directory of resources.
    pub functions: PathBuf,
    /// HTTP address.
    pub listen: SocketAddr,
    /// gRPC address.
    pub grpc_listen: SocketAddr,
    /// Remote executors (`http://host:port`) to use.
    pub executors: Vec<String>,
    /// Whether to run an executor in this process.
    pub local_executor: bool,
    /// Backends of the local executor.
    pub backend: BackendChoice,
    /// Kernel slots of the local CPU device (default: cores).
    pub cpu_slots: Option<u32>,
    /// Make every function resident at start.
    pub prewarm: bool,
    /// The largest invocation payload over gRPC and HTTP.
    pub max_request_bytes: usize,
    /// Bearer tokens and their namespaces; without, loopback addresses only.
    pub auth_token_file: Option<PathBuf>,
    /// The gateway's ceiling: invocations, and their input bytes, held at once.
    pub max_inflight: (usize, u64),
}

/// Kind → class name, for each kind exactly one AcceleratorClass declares.
fn single_class_per_kind(
    classes: &[kaas_crds::AcceleratorClass],
) -> std::collections::BTreeMap<String, String> {
    let mut by_kind: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in classes {
        let kind = if c.spec.kind == DeviceKind::Gpu { "gpu" } else { "cpu" };
        by_kind.entry(kind.into()).or_default().push(c.name_any());
    }
    by_kind.into_iter().filter(|(_, v)| v.len() == 1).map(|(k, mut v)| (k, v.remove(0))).collect()
}

/// Runs standalone mode until SIGINT or SIGTERM.
pub async fn run(opts: StandaloneOptions) -> anyhow::Result<()> {
    let tokens = match &opts.auth_token_file {
        Some(path) => Some(crate::gateway::auth::TokenFile::load(path)?),
        None => {
            for addr in [opts.listen, opts.grpc_listen] {
                if !addr.ip().is_loopback() {
                    bail!(
                        "standalone without --auth-token-file lets anyone who reaches it invoke every function: \
                         listen on a loopback address (127.0.0.1, ::1) or give --auth-token-file (not {addr})"
                    );
                }
            }
            None
        }
    };
    let res = load_dir(&opts.functions)?;
    if res.functions.is_empty() {
        bail!("no KernelFunction found under {}", opts.functions.display());
    }
    let mut config = GatewayConfig::default();
    if let Some(p) = &res.policy {
        config.scheduler = scheduler_config(&p.spec)?;
    }
    for class in &res.classes {
        let kind = if class.spec.kind == DeviceKind::Gpu { "gpu" } else { "cpu" };
        config.prices.insert(kind.into(), class.spec.cost_per_hour);
    }
    config.classes = crate::controller::sync::class_model(&res.classes);
    (config.max_inflight_requests, config.max_inflight_bytes) = opts.max_inflight;
    let gateway = Gateway::start(config.clone())?;
    if let Some(tokens) = tokens {
        info!(tokens = tokens.len(), "invocations need a bearer token from the token file");
        gateway.require_auth(Arc::new(tokens));
    }
    let mut registry = Registry::default();
    gateway.metrics().register(&mut registry);
    let mut local = None;
    if opts.local_executor {
        let defaults = DeviceOptions::default();
        let devices = discover(&DeviceOptions {
            backend: opts.backend,
            cpu_slots: opts.cpu_slots.unwrap_or(defaults.cpu_slots),
            kernel_timeout: Duration::from_secs(10),
            ..defaults
        })?;
        let executor = Executor::start(
            devices,
            ExecutorConfig {
                node: "local".into(),
                // The gateway pushes the cluster's policy on connect; start with it too.
                scheduler: config.scheduler.clone(),
                shares: Vec::new(),
                health_interval: Duration::from_secs(1),
                // With one AcceleratorClass of a kind, this node's devices of that kind are it.
                accelerator_classes: single_class_per_kind(&res.classes),
            },
        )?;
        executor.metrics().register(&mut registry);
        gateway.add_node("local", NodeClient::Local(executor.clone()));
        local = Some(executor);
    }
    for (i, url) in opts.executors.iter().enumerate() {
        gateway.add_node(&format!("executor-{i}"), NodeClient::remote(url)?);
    }
    if !gateway.wait_ready(Duration::from_secs(10)).await {
        warn!("no executor device is healthy yet; requests get 503 until one is");
    }
    let mut defs = Vec::new();
    for kf in &res.functions {
        let def = function_def(kf, &InlineOnly, &res.classes)
            .with_context(|| format!("function {}", kf.name_any()))?;
        gateway.put_function(def.clone());
        defs.push(def);
    }
    if opts.prewarm
        && let Some(ex) = &local
    {
        for def in &defs {
            let key = format!("{}/{}", def.namespace, def.name);
            ex.put_function(kaas_executor::model::FunctionDef::try_from(def.clone())?).await?;
            match ex.preload(&key, None).await {
                Ok(devices) => info!(function = %key, ?devices, "resident"),
                Err(e) => warn!(function = %key, "preload failed: {e}"),
            }
        }
    }
    let liveness = kaas_executor::liveness::Liveness::new();
    if let Some(ex) = &local {
        let ex = ex.clone();
        liveness.check("executor actor", move || ex.alive());
    }
    let state = HttpState {
        gateway: gateway.clone(),
        registry: Arc::new(registry),
        liveness: liveness.clone(),
        max_request_bytes: opts.max_request_bytes,
    };
    let http = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let grpc = tokio::net::TcpListener::bind(opts.grpc_listen)
        .await
        .with_context(|| format!("binding {}", opts.grpc_listen))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    print_banner(http_addr, grpc_addr, &res, &defs, local.as_ref());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_task = {
        let mut rx = stop_rx.clone();
        liveness.spawn("HTTP server", async move {
            axum::serve(http, router(state))
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    };
    let grpc_task = {
        let mut rx = stop_rx.clone();
        liveness.spawn(
            "gRPC server",
            kaas_executor::service::grpc_server()
                .layer(tower::util::MapResponseLayer::new(
                    kaas_executor::service::oversize_is_resource_exhausted,
                ))
                .add_service(GatewayService::server(gateway.clone(), opts.max_request_bytes))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    async move {
                        let _ = rx.changed().await;
                    },
                ),
        )
    };
    crate::shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = http_task.await;
        let _ = grpc_task.await;
    })
    .await;
    Ok(())
}

fn print_banner(
    http: SocketAddr,
    grpc: SocketAddr,
    res: &Resources,
    defs: &[kaas_executor::proto::FunctionDef],
    local: Option<&Executor>,
) {
    let devices = local
        .map(|e| e.devices().iter().map(|d| d.info().id).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "remote executors".into());
    let policy = res.policy.as_ref().map_or("slo-aware (default)".to_string(), |p| {
        let name = serde_json::to_value(p.spec.policy)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let admission = serde_json::to_value(p.spec.admission)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        format!("{name}, admission {admission}")
    });
    println!("kaas standalone: HTTP on http://{http}, gRPC on {grpc}; devices: {devices}; policy: {policy}");
    println!("functions:");
    for d in defs {
        let ins: Vec<String> = d
            .buffers
            .iter()
            .filter(|b| b.kind == kaas_executor::proto::BufferKind::Input as i32)
            .map(|b| format!("{} ({} bytes)", b.name, b.size))
            .collect();
        let outs: Vec<&str> = d
            .buffers
            .iter()
            .filter(|b| b.kind == kaas_executor::proto::BufferKind::Output as i32)
            .map(|b| b.name.as_str())
            .collect();
        println!("  {}/{}: inputs {} -> outputs {}", d.namespace, d.name, ins.join(", "), outs.join(", "));
    }
    if let Some(d) = defs.first() {
        let example: Vec<String> = d
            .buffers
            .iter()
            .filter(|b| b.kind == kaas_executor::proto::BufferKind::Input as i32)
            .map(|b| format!("\"{}\": \"<base64 of {} bytes>\"", b.name, b.size))
            .collect();
        println!("invoke:");
        println!(
            "  curl -s -X POST http://{http}/v1/namespaces/{}/functions/{}:invoke -H 'content-type: application/json' -d '{{\"inputs\": {{{}}}}}'",
            d.namespace,
            d.name,
            example.join(", ")
        );
        println!("metrics: curl -s http://{http}/metrics");
    }
}
