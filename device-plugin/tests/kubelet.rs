//! The device plugin against a test kubelet over real unix sockets: registration after
//! serving, the v1beta1 calls, health both ways, kubelet and plugin restarts, a pod's
//! kernel through its share's own socket (bound to its namespace through a PodResources
//! stand-in), and an unreachable API server.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Flaky, TestKubelet, TestPodResources, daemon, eventually, plugin, pod_resources_socket};
use kaas_device_plugin::plugin::{ENV_SHARES, ENV_SOCKET};
use kaas_device_plugin::proto;
use kaas_executor::proto as ex;
use kaas_executor::service::connect_unix;
use tonic::Code;

const GPU_SOCK: &str = "kaas-gpu-share.sock";
const CPU_SOCK: &str = "kaas-cpu-share.sock";

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    let sockets = tmp.path().join("kaas");
    std::fs::create_dir_all(&dir).unwrap();
    (tmp, dir, sockets)
}

async fn next_list(s: &mut tonic::Streaming<proto::ListAndWatchResponse>) -> Vec<(String, String)> {
    let r = tokio::time::timeout(Duration::from_secs(3), s.message()).await.expect("no ListAndWatch update");
    r.unwrap().expect("stream ended").devices.into_iter().map(|d| (d.id, d.health)).collect()
}

#[tokio::test]
async fn registers_once_serving_and_answers_every_call() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let (gpu, _) = Flaky::device("GPU-test-0", "gpu");
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![gpu, cpu], None).await;

    let mut seen = BTreeMap::new();
    for _ in 0..2 {
        let s = kubelet.next(Duration::from_secs(3)).await;
        assert!(s.plugin_was_serving, "{} registered before its socket served", s.request.resource_name);
        assert_eq!(s.request.version, "v1beta1");
        let opts = s.request.options.unwrap();
        assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);
        seen.insert(s.request.resource_name.clone(), s.request.endpoint.clone());
    }
    assert_eq!(seen["kaas.dev/gpu-share"], GPU_SOCK);
    assert_eq!(seen["kaas.dev/cpu-share"], CPU_SOCK);
    eventually(Duration::from_secs(2), "readiness", || d.is_registered()).await;

    let mut gpu = plugin(&dir, GPU_SOCK).await;
    let opts = gpu.get_device_plugin_options(proto::Empty {}).await.unwrap().into_inner();
    assert!(opts.get_preferred_allocation_available);
    let mut stream = gpu.list_and_watch(proto::Empty {}).await.unwrap().into_inner();
    let list = next_list(&mut stream).await;
    let ids: Vec<&str> = list.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["GPU-test-0-s0", "GPU-test-0-s1", "GPU-test-0-s2", "GPU-test-0-s3"]);
    assert!(list.iter().all(|(_, h)| h == "Healthy"));
    let mut cpu = plugin(&dir, CPU_SOCK).await;
    let mut cpu_stream = cpu.list_and_watch(proto::Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut cpu_stream).await.len(), 3);

    // Preferred allocation keeps a must-include share's device and fills it first.
    let pref = gpu
        .get_preferred_allocation(proto::PreferredAllocationRequest {
            container_requests: vec![proto::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec![
                    "GPU-test-0-s3".into(),
                    "GPU-test-0-s1".into(),
                    "GPU-test-0-s2".into(),
                ],
                must_include_device_i_ds: vec!["GPU-test-0-s0".into()],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["GPU-test-0-s0", "GPU-test-0-s1"]);

    let alloc = gpu
        .allocate(proto::AllocateRequest {
            container_requests: vec![proto::ContainerAllocateRequest {
                devices_ids: vec!["GPU-test-0-s1".into(), "GPU-test-0-s2".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &alloc.container_responses[0];
    assert_eq!(c.envs[ENV_SOCKET], "/var/run/kaas/GPU-test-0-s1/executor.sock");
    assert_eq!(c.envs[ENV_SHARES], "GPU-test-0-s1,GPU-test-0-s2");
    // Each allocated share's own directory, and nothing else of the socket directory.
    let mounts: Vec<(&str, String)> =
        c.mounts.iter().map(|m| (m.container_path.as_str(), m.host_path.clone())).collect();
    let host = |id: &str| sockets.join("shares").join(id).display().to_string();
    assert_eq!(
        mounts,
        [
            ("/var/run/kaas/GPU-test-0-s1", host("GPU-test-0-s1")),
            ("/var/run/kaas/GPU-test-0-s2", host("GPU-test-0-s2"))
        ]
    );
    assert!(c.devices.is_empty(), "the executor owns the GPU; pods get no device nodes");

    // A share of another resource, or of nothing, is refused with its name.
    let bad = gpu
        .allocate(proto::AllocateRequest {
            container_requests: vec![proto::ContainerAllocateRequest { devices_ids: vec!["cpu-s0".into()] }],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("cpu-s0"), "{}", bad.message());
    cpu.pre_start_container(proto::PreStartContainerRequest { devices_ids: vec!["cpu-s0".into()] })
        .await
        .unwrap();

    // Metrics name what happened.
    let body = reqwest_get(d.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        body.contains("kaas_device_plugin_registrations_total{resource=\"kaas.dev/gpu-share\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("kaas_device_plugin_allocations_total{resource=\"kaas.dev/gpu-share\"} 1"),
        "{body}"
    );
    assert_eq!(reqwest_status(d.metrics_addr.unwrap(), "/readyz").await, 200);
    assert_eq!(reqwest_status(d.metrics_addr.unwrap(), "/healthz").await, 200, "every task runs");
    // Issue 17, point 2: every device-plugin metric the chart's Grafana dashboard and
    // PrometheusRule query is in this scrape (the node executor's families it also
    // serves are checked in standalone mode by kaas-e2e's dashboard test).
    let have = kaas_e2e::monitoring::exposed(&body);
    let wanted: Vec<String> = kaas_e2e::monitoring::monitored_metric_names()
        .into_iter()
        .filter(|n| n.starts_with("kaas_device_plugin_"))
        .collect();
    assert!(wanted.len() >= 2, "{wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported by the device plugin: {missing:?}\n{body}");

    assert!(sockets.join("shares/cpu-s2/executor.sock").exists());
    d.shutdown().await.unwrap();
    assert!(!dir.join(GPU_SOCK).exists() && !dir.join(CPU_SOCK).exists(), "sockets left behind");
    assert!(!sockets.join("executor.sock").exists());
    assert!(!sockets.join("shares/cpu-s2/executor.sock").exists(), "share socket left behind");
}

/// Plain HTTP/1.1 GET over TCP (no client library needed for two lines).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    (code, out)
}

async fn reqwest_get(addr: std::net::SocketAddr, path: &str) -> String {
    raw_get(addr, path).await.1
}

async fn reqwest_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    raw_get(addr, path).await.0
}

#[tokio::test]
async fn list_and_watch_reports_failures_and_recoveries() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let (gpu, gpu_ok) = Flaky::device("GPU-test-0", "gpu");
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![gpu, cpu], None).await;
    kubelet.next(Duration::from_secs(3)).await;
    let mut client = plugin(&dir, GPU_SOCK).await;
    let mut stream = client.list_and_watch(proto::Empty {}).await.unwrap().into_inner();
    assert!(next_list(&mut stream).await.iter().all(|(_, h)| h == "Healthy"));

    gpu_ok.store(false, std::sync::atomic::Ordering::Relaxed);
    let list = next_list(&mut stream).await;
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|(_, h)| h == "Unhealthy"), "{list:?}");
    assert_eq!(reqwest_status(d.metrics_addr.unwrap(), "/readyz").await, 200, "the CPU is still healthy");

    // Two-way: the device comes back and so do its shares.
    gpu_ok.store(true, std::sync::atomic::Ordering::Relaxed);
    let list = next_list(&mut stream).await;
    assert!(list.iter().all(|(_, h)| h == "Healthy"), "{list:?}");
    d.shutdown().await.unwrap();
    // Shutting down ends the stream instead of leaving the kubelet hanging on it.
    let end = tokio::time::timeout(Duration::from_secs(3), stream.message()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn a_restarted_kubelet_is_registered_with_again_within_a_second() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], None).await;
    let first = kubelet.next(Duration::from_secs(3)).await;
    assert_eq!(first.request.resource_name, "kaas.dev/cpu-share");

    kubelet.crash().await;
    assert!(!dir.join(CPU_SOCK).exists());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut kubelet = TestKubelet::start(&dir).await;
    let restarted = Instant::now();
    let again = kubelet.next(Duration::from_secs(1)).await;
    let took = restarted.elapsed();
    assert!(again.plugin_was_serving, "re-registered before serving again");
    assert_eq!(again.request.endpoint, CPU_SOCK);
    println!("re-registered {took:?} after the kubelet came back");
    assert!(took < Duration::from_secs(1));
    let mut client = plugin(&dir, CPU_SOCK).await;
    let mut stream = client.list_and_watch(proto::Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut stream).await.len(), 3);
    let body = reqwest_get(d.metrics_addr.unwrap(), "/metrics").await;
    assert!(body.contains("kaas_device_plugin_restarts_total{resource=\"kaas.dev/cpu-share\"} 1"), "{body}");
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_plugin_registers_again_with_the_same_ids() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], None).await;
    kubelet.next(Duration::from_secs(3)).await;
    let mut c = plugin(&dir, CPU_SOCK).await;
    let before = next_list(&mut c.list_and_watch(proto::Empty {}).await.unwrap().into_inner()).await;
    d.shutdown().await.unwrap();
    assert!(!dir.join(CPU_SOCK).exists(), "SIGTERM path must remove the socket");

    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], None).await;
    let again = kubelet.next(Duration::from_secs(3)).await;
    assert!(again.plugin_was_serving);
    let mut c = plugin(&dir, CPU_SOCK).await;
    let after = next_list(&mut c.list_and_watch(proto::Empty {}).await.unwrap().into_inner()).await;
    assert_eq!(before, after, "share IDs must survive a restart (the kubelet checkpoints them)");
    d.shutdown().await.unwrap();
}

fn copy_function() -> ex::FunctionDef {
    let wat = r#"(module (memory (export "memory") 1)
      (func (export "copy") (param $bx i32) (param i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
        (i32.store (i32.add (local.get $out) (i32.shl (local.get $bx) (i32.const 2)))
          (i32.load (i32.add (local.get $in) (i32.shl (local.get $bx) (i32.const 2)))))))"#;
    let buf = |name: &str, kind: ex::BufferKind| ex::Buffer {
        name: name.into(),
        size: 16,
        kind: kind as i32,
        content: vec![],
    };
    ex::FunctionDef {
        namespace: "team-a".into(),
        name: "copy".into(),
        version: "1".into(),
        modules: vec![ex::Module { name: "m".into(), wasm: wat.as_bytes().to_vec(), cuda: None }],
        buffers: vec![buf("in", ex::BufferKind::Input), buf("out", ex::BufferKind::Output)],
        kernels: vec![ex::Kernel {
            module: "m".into(),
            entry: "copy".into(),
            grid: vec![4, 1, 1],
            block: vec![1, 1, 1],
            shared_mem_bytes: 0,
            args: ["in", "out"]
                .iter()
                .map(|a| ex::Arg { value: Some(ex::arg::Value::Buffer(a.to_string())) })
                .collect(),
        }],
        deadline_ms: 5_000,
        weight: 1,
        ..Default::default()
    }
}

/// `team-a/scratch`: the copy kernel with 30 MiB of scratch, more than a third of the
/// stand-in's 64 MiB (one share's quota) and less than the whole device.
fn scratch_function() -> ex::FunctionDef {
    let mut f = copy_function();
    f.name = "scratch".into();
    f.buffers.push(ex::Buffer {
        name: "scratch".into(),
        size: 30 << 20,
        kind: ex::BufferKind::Temp as i32,
        content: vec![],
    });
    f
}

/// Where a container's socket for its first share is on the host, through its mounts.
fn socket_on_host(c: &proto::ContainerAllocateResponse) -> std::path::PathBuf {
    let in_pod = std::path::Path::new(&c.envs[ENV_SOCKET]);
    let m =
        c.mounts.iter().find(|m| in_pod.starts_with(&m.container_path)).expect("socket outside every mount");
    std::path::Path::new(&m.host_path).join(in_pod.strip_prefix(&m.container_path).unwrap())
}

async fn allocate_cpu(dir: &std::path::Path, ids: &[&str]) -> proto::ContainerAllocateResponse {
    let ids = ids.iter().map(|s| s.to_string()).collect();
    let mut alloc = plugin(dir, CPU_SOCK)
        .await
        .allocate(proto::AllocateRequest {
            container_requests: vec![proto::ContainerAllocateRequest { devices_ids: ids }],
        })
        .await
        .unwrap()
        .into_inner();
    alloc.container_responses.remove(0)
}

fn call(namespace: &str, name: &str, share: &str) -> ex::ExecuteRequest {
    ex::ExecuteRequest {
        namespace: namespace.into(),
        name: name.into(),
        inputs: [("in".to_string(), (1..=16).collect::<Vec<u8>>().into())].into(),
        share_id: share.into(),
        ..Default::default()
    }
}

fn assert_denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, needle: &str) {
    let e = r.expect_err("allowed on a share socket");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(needle), "{needle:?} not in {:?}", e.message());
}

#[tokio::test]
async fn a_pod_may_only_execute_its_namespaces_functions_through_its_share_socket() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let mut pods = TestPodResources::start(&pod_resources_socket(&sockets)).await;
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], None).await;
    kubelet.next(Duration::from_secs(3)).await;

    // The operator registers functions of two namespaces through the node API, whose
    // socket only its owner may open.
    let node_socket = sockets.join("executor.sock");
    assert_eq!(std::fs::metadata(&node_socket).unwrap().permissions().mode() & 0o777, 0o600);
    let mut node = connect_unix(&node_socket).await.unwrap();
    node.put_function(copy_function()).await.unwrap();
    let mut theirs = copy_function();
    theirs.namespace = "team-b".into();
    node.put_function(theirs).await.unwrap();
    assert!(node.execute(call("team-b", "copy", "")).await.unwrap().into_inner().cold_start);
    node.put_function(scratch_function()).await.unwrap();

    // team-a's pod is allocated cpu-s1: its container sees that share's directory only.
    let c = allocate_cpu(&dir, &["cpu-s1"]).await;
    pods.allocate("team-a", "worker", "kaas.dev/cpu-share", &["cpu-s1"]);
    let share = c.envs[ENV_SHARES].clone();
    assert_eq!(share, "cpu-s1");
    let on_host = socket_on_host(&c);
    let visible: Vec<_> = std::fs::read_dir(on_host.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(visible, ["executor.sock"], "the mount shows exactly the share's socket");
    assert_eq!(std::fs::metadata(&on_host).unwrap().permissions().mode() & 0o777, 0o666);

    let mut pod = connect_unix(&on_host).await.unwrap();
    let out = pod.execute(call("team-a", "copy", &share)).await.unwrap().into_inner();
    assert_eq!(out.outputs["out"], (1..=16).collect::<Vec<u8>>());
    // Under the share's quota (a third of the 64 MiB device), not the device's.
    let e = pod.execute(call("team-a", "scratch", &share)).await.unwrap_err();
    assert!(e.message().contains("share cpu-s1") && e.message().contains("quota"), "{e:?}");

    // Everything else is refused, with the reason.
    assert_denied(pod.execute(call("team-b", "copy", &share)).await, "namespace \"team-a\"");
    assert_denied(pod.execute(call("team-b", "no-such-function", &share)).await, "another namespace");
    assert_denied(pod.execute(call("team-a", "copy", "")).await, "share_id is required");
    assert_denied(pod.execute(call("team-a", "copy", "cpu-s0")).await, "serves share \"cpu-s1\" only");
    let mut pinned = call("team-a", "copy", &share);
    pinned.device = "cpu".into();
    assert_denied(pod.execute(pinned).await, "pinning a device");
    let mut hijack = copy_function();
    hijack.namespace = "team-b".into();
    hijack.version = "2".into();
    assert_denied(pod.put_function(hijack).await, "PutFunction is not allowed");
    assert_denied(
        pod.evict(ex::FunctionRef { namespace: "team-b".into(), name: "copy".into() }).await,
        "Evict",
    );
    assert_denied(
        pod.preload(ex::PreloadRequest {
            function: Some(ex::FunctionRef { namespace: "team-a".into(), name: "copy".into() }),
            device: String::new(),
        })
        .await,
        "Preload",
    );
    assert_denied(pod.set_policy(ex::PolicyUpdate { config_json: "{}".into() }).await, "SetPolicy");
    assert_denied(pod.watch_status(ex::WatchStatusRequest { interval_ms: 100 }).await, "WatchStatus");
    // Nothing of team-b's was touched: its function is still version 1 and resident.
    let b = node.execute(call("team-b", "copy", "")).await.unwrap().into_inner();
    assert_eq!(b.outputs["out"], (1..=16).collect::<Vec<u8>>());
    assert!(!b.cold_start, "team-b's function was evicted or replaced");

    // A share no pod holds serves nothing, whoever reaches its socket.
    let mut idle = connect_unix(&sockets.join("shares/cpu-s2/executor.sock")).await.unwrap();
    assert_denied(idle.execute(call("team-a", "copy", "cpu-s2")).await, "not allocated to any pod");

    // The share moves to team-b's pod: a new connection is bound to team-b.
    pods.remove("team-a", "worker");
    pods.allocate("team-b", "other", "kaas.dev/cpu-share", &["cpu-s1"]);
    let mut next = connect_unix(&on_host).await.unwrap();
    next.execute(call("team-b", "copy", "cpu-s1")).await.unwrap();
    assert_denied(next.execute(call("team-a", "copy", "cpu-s1")).await, "namespace \"team-b\"");
    // One List per connection, not per call.
    let asked = pods.calls.load(std::sync::atomic::Ordering::Relaxed);
    next.execute(call("team-b", "copy", "cpu-s1")).await.unwrap();
    assert_eq!(pods.calls.load(std::sync::atomic::Ordering::Relaxed), asked);

    // Without the kubelet's answer nothing is allowed: UNAVAILABLE, naming the socket.
    pods.stop();
    pods.allocate("team-a", "late", "kaas.dev/cpu-share", &["cpu-s0"]);
    let mut late = connect_unix(&sockets.join("shares/cpu-s0/executor.sock")).await.unwrap();
    let e = late.execute(call("team-a", "copy", "cpu-s0")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("PodResources") && e.message().contains("kubelet.sock"), "{}", e.message());
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_api_server_does_not_stop_the_node() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    // Nothing listens on port 9 of loopback: every API call fails at once.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], Some(client)).await;
    kubelet.next(Duration::from_secs(3)).await;
    eventually(Duration::from_secs(5), "two failed KaasNode publications", || {
        d.metrics.publish_errors.get() >= 2
    })
    .await;
    // Still serving the kubelet and pods.
    let mut c = plugin(&dir, CPU_SOCK).await;
    assert_eq!(next_list(&mut c.list_and_watch(proto::Empty {}).await.unwrap().into_inner()).await.len(), 3);
    let mut exec = connect_unix(&sockets.join("executor.sock")).await.unwrap();
    exec.put_function(copy_function()).await.unwrap();
    assert_eq!(d.metrics.publishes.get(), 0);
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_share_carries_its_memory_quota_to_the_executor() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    // 64 MiB device in 3 shares: each may use a third.
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let d = daemon(&dir, &sockets, vec![cpu], None).await;
    kubelet.next(Duration::from_secs(3)).await;
    let mut exec = connect_unix(&sockets.join("executor.sock")).await.unwrap();
    exec.put_function(scratch_function()).await.unwrap();
    let call = |share: &str| ex::ExecuteRequest {
        namespace: "team-a".into(),
        name: "scratch".into(),
        inputs: [("in".to_string(), vec![7u8; 16].into())].into(),
        share_id: share.into(),
        ..Default::default()
    };
    // The whole device has room for 30 MiB of scratch...
    exec.execute(call("")).await.unwrap();
    // ...a share's 21 MiB does not.
    let err = exec.execute(call("cpu-s0")).await.unwrap_err();
    assert!(err.message().contains("share cpu-s0") && err.message().contains("quota"), "{err:?}");
    d.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_plugin_that_cannot_serve_again_is_reported_not_hidden() {
    let (_tmp, dir, sockets) = dirs();
    let mut kubelet = TestKubelet::start(&dir).await;
    let (cpu, _) = Flaky::device("cpu", "cpu");
    let mut d = daemon(&dir, &sockets, vec![cpu], None).await;
    kubelet.next(Duration::from_secs(3)).await;
    // The directory disappears (a broken mount): serving again is impossible.
    kubelet.crash().await;
    std::fs::remove_dir_all(&dir).unwrap();
    let why = tokio::time::timeout(Duration::from_secs(3), d.failed()).await.expect("failure not reported");
    assert!(why.contains("cannot listen on") && why.contains("kaas-cpu-share.sock"), "{why}");
    assert!(d.shutdown().await.is_err(), "shutdown reports the failed plugin too");
}
