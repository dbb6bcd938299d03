//! The pure stage of the KernelFunction reconciler on YAML fixtures: the examples'
//! functions and classes, and KaasNodes as device plugins publish them.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kaas_crds::{AcceleratorClass, KaasNode, KernelFunction};
use kaas_operator::controller::class_status;
use kaas_operator::controller::decide::{World, decide};
use kaas_operator::controller::sync::live_nodes;
use kaas_operator::convert::{ConvertError, InlineOnly, function_def};
use serde::de::DeserializeOwned;

fn docs<T: DeserializeOwned>(path: &str) -> Vec<T> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::with::singleton_map_recursive::deserialize(d).unwrap())
        .collect()
}

fn now() -> Timestamp {
    "2026-11-28T10:00:00Z".parse().unwrap()
}

fn world() -> World {
    World {
        classes: docs::<AcceleratorClass>("../examples/cluster/accelerator-classes.yaml"),
        nodes: docs::<KaasNode>("tests/fixtures/nodes.yaml"),
        functions: Vec::new(),
        now: now(),
        stale_after: Duration::from_secs(30),
    }
}

fn function(name: &str) -> KernelFunction {
    docs::<KernelFunction>(&format!("../examples/functions/{name}.yaml")).remove(0)
}

fn cond<'a>(kf: &'a kaas_crds::KernelFunctionStatus, kind: &str) -> (&'a str, &'a str, &'a str) {
    let c = kf.conditions.iter().find(|c| c.type_ == kind).unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn run(kf: &KernelFunction, w: &World) -> kaas_operator::controller::decide::Decision {
    decide(kf, w, function_def(kf, &InlineOnly, &w.classes))
}

#[test]
fn admitted_on_the_cheapest_class_meeting_the_slo_and_placed_on_live_devices() {
    let kf = function("saxpy");
    let d = run(&kf, &world());
    assert_eq!(d.class.as_deref(), Some("cpu-wasm"), "cpu-wasm is cheapest per invocation and meets 50 ms");
    assert!(d.def.is_some());
    assert_eq!(cond(&d.status, "Admitted").0, "True");
    assert_eq!(cond(&d.status, "Admitted").1, "CapacityReserved");
    // cpu-2's heartbeat is stale: only cpu-1, where saxpy is already resident.
    assert_eq!(d.status.placements.len(), 1);
    assert_eq!(d.status.placements[0].node, "cpu-1");
    assert!(d.status.placements[0].warm);
    assert_eq!(cond(&d.status, "Ready"), ("True", "Serving", "served from 1 device(s), warm on 1"));
    assert_eq!(cond(&d.status, "Degraded").0, "False");
}

#[test]
fn a_class_too_slow_for_the_deadline_is_skipped() {
    let mut kf = function("saxpy");
    kf.spec.profile.iter_mut().find(|p| p.accelerator_class == "cpu-wasm").unwrap().runtime_ms = 60.0;
    let d = run(&kf, &world());
    assert_eq!(d.class.as_deref(), Some("nvidia-t4"));
    assert_eq!(d.status.placements[0].device, "GPU-t4-1");
    assert!(!d.status.placements[0].warm, "not resident on the T4 yet: first call is cold");
}

#[test]
fn reservations_of_admitted_functions_count_against_capacity() {
    let mut w = world();
    // A hog admitted on cpu-wasm reserves 39000/s × 0.05 ms = 1.95 of the 2 slot-seconds/s.
    let mut hog = function("saxpy");
    hog.metadata.name = Some("hog".into());
    hog.spec.expected_rate = Some(39_000.0);
    let hd = run(&hog, &w);
    assert_eq!(hd.class.as_deref(), Some("cpu-wasm"));
    hog.status = Some(hd.status);
    w.functions.push(hog);

    let mut kf = function("saxpy");
    kf.spec.expected_rate = Some(2_000.0); // needs 0.1 more: does not fit on cpu-wasm
    let d = run(&kf, &w);
    assert_eq!(d.class.as_deref(), Some("nvidia-t4"), "{:?}", cond(&d.status, "Admitted"));
    assert!(cond(&d.status, "Admitted").2.contains("admitted on nvidia-t4"));

    kf.spec.expected_rate = Some(1_000_000.0);
    let d = run(&kf, &w);
    let (status, reason, message) = cond(&d.status, "Admitted");
    assert_eq!((status, reason), ("False", "InsufficientCapacity"));
    assert!(message.contains("cpu-wasm") && message.contains("nvidia-t4"), "{message}");
    assert!(d.def.is_none() && d.status.placements.is_empty());
    assert_eq!(cond(&d.status, "Ready").1, "NotAdmitted");
}

#[test]
fn more_load_than_one_device_carries_is_degraded() {
    let mut kf = function("saxpy");
    kf.spec.expected_rate = Some(40_000.0); // 2.0 slot-seconds/s: fits, but wants 2 devices at 80 %
    let d = run(&kf, &world());
    assert_eq!(cond(&d.status, "Admitted").0, "True");
    let (status, reason, message) = cond(&d.status, "Degraded");
    assert_eq!((status, reason), ("True", "TooFewDevices"));
    assert_eq!(message, "1 of the 2 devices it needs are live");
}

#[test]
fn stale_nodes_leave_placement() {
    let mut w = world();
    w.now = "2026-11-28T10:05:00Z".parse().unwrap();
    let d = run(&function("saxpy"), &w);
    let (status, reason, message) = cond(&d.status, "Admitted");
    assert_eq!((status, reason), ("False", "NoDevices"), "{message}");
    assert!(live_nodes(&w.nodes, w.now, w.stale_after).is_empty());
    let live = live_nodes(&world().nodes, now(), Duration::from_secs(30));
    assert_eq!(live.keys().collect::<Vec<_>>(), ["cpu-1", "gpu-1"]);
    assert_eq!(live["gpu-1"], "http://10.0.0.1:7070");
}

#[test]
fn a_missing_configmap_is_reported_with_its_name() {
    let kf = function("saxpy");
    let w = world();
    let err = ConvertError::Source {
        what: "module saxpy (wasm)".into(),
        message: "ConfigMap default/kernels has no key \"saxpy.wat\" (or does not exist)".into(),
    };
    let d = decide(&kf, &w, Err(err));
    let (status, reason, message) = cond(&d.status, "Admitted");
    assert_eq!((status, reason), ("False", "SourceUnavailable"));
    assert!(message.contains("ConfigMap default/kernels"), "{message}");
    assert_eq!(cond(&d.status, "Ready").0, "False");
}

/// Issue 18, point 2: a kernel whose args do not match its entry point is refused as
/// `Admitted=False, InvalidSpec`, naming the kernel and the argument (on a GPU it would be
/// an illegal-address fault in a context shared with other tenants).
#[test]
fn a_kernel_whose_args_do_not_match_its_entry_is_an_invalid_spec() {
    let mut kf = function("saxpy");
    // alpha as an integer: the WebAssembly entry takes an f32 there.
    let alpha = &mut kf.spec.kernels[0].args[3];
    alpha.f32 = None;
    alpha.u32 = Some(2);
    let d = run(&kf, &world());
    let (status, reason, message) = cond(&d.status, "Admitted");
    assert_eq!((status, reason), ("False", "InvalidSpec"), "{message}");
    assert!(message.contains("kernel 0 (saxpy)") && message.contains("argument 3 (u32 2)"), "{message}");
    assert!(d.def.is_none(), "nothing is sent to the executors");
    // The same with the argument missing.
    let mut kf = function("saxpy");
    kf.spec.kernels[0].args.pop();
    let d = run(&kf, &world());
    let (status, reason, message) = cond(&d.status, "Admitted");
    assert_eq!((status, reason), ("False", "InvalidSpec"), "{message}");
    assert!(message.contains("kernel 0 (saxpy)"), "{message}");
}

#[test]
fn transition_times_move_only_on_transitions() {
    let mut kf = function("saxpy");
    let mut w = world();
    let first = run(&kf, &w);
    kf.status = Some(first.status.clone());
    w.now = "2026-11-28T10:00:10Z".parse().unwrap();
    // Refresh the heartbeats so the nodes stay live at the later time.
    for n in &mut w.nodes {
        if n.metadata.name.as_deref() != Some("cpu-2") {
            n.status.as_mut().unwrap().heartbeat =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(w.now));
        }
    }
    let again = run(&kf, &w);
    assert_eq!(again.status, first.status, "a steady state writes nothing new");
    kf.spec.expected_rate = Some(1e9);
    let rejected = run(&kf, &w);
    let t = |s: &kaas_crds::KernelFunctionStatus, k: &str| {
        s.conditions.iter().find(|c| c.type_ == k).unwrap().last_transition_time.0
    };
    assert_eq!(t(&rejected.status, "Admitted"), w.now);
    assert_eq!(t(&first.status, "Admitted"), now());
}

#[test]
fn class_status_counts_live_healthy_devices() {
    let w = world();
    let cpu = w.classes.iter().find(|c| c.metadata.name.as_deref() == Some("cpu-wasm")).unwrap();
    let s = class_status(cpu, &w);
    assert_eq!((s.devices, s.nodes), (1, 1), "cpu-2 is stale");
    assert_eq!(s.conditions[0].status, "True");
    let h100 = w.classes.iter().find(|c| c.metadata.name.as_deref() == Some("nvidia-h100")).unwrap();
    let s = class_status(h100, &w);
    assert_eq!((s.devices, s.conditions[0].reason.as_str()), (0, "NoHealthyDevice"));
}

/// Issue 14, point 7: a function's version covers what its sources resolved to and which
/// object it is, not only `metadata.generation`.
#[test]
fn the_version_changes_with_resolved_content_and_with_a_recreated_object() {
    use kaas_crds::{KeyRef, Source};
    use kaas_operator::convert::Prefetched;
    let w = world();
    let mut kf = function("dense-relu");
    kf.metadata.generation = Some(3);
    kf.metadata.uid = Some("0b6f1f6e-1111-4c3a-9d2e-000000000001".into());
    let bias = kf.spec.buffers.iter_mut().find(|b| b.name == "bias").unwrap();
    bias.source = Some(Source {
        config_map_ref: Some(KeyRef { name: "weights".into(), key: "bias".into() }),
        ..Default::default()
    });
    let ns = kf.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let with = |bytes: u8| {
        let mut p = Prefetched::default();
        p.config_maps.insert((ns.clone(), "weights".into(), "bias".into()), vec![bytes; 128]);
        p
    };
    let v = |kf: &KernelFunction, bytes: u8| function_def(kf, &with(bytes), &w.classes).unwrap().version;
    let first = v(&kf, 1);
    assert_eq!(first, v(&kf, 1), "the same content gives the same version (no reload on every reconcile)");
    assert_ne!(first, v(&kf, 2), "an edited ConfigMap changes the version at the same generation");
    assert!(first.starts_with("3-"), "the generation leads: {first}");
    let mut again = kf.clone();
    again.metadata.uid = Some("0b6f1f6e-2222-4c3a-9d2e-000000000002".into());
    again.metadata.generation = Some(3);
    assert_ne!(first, v(&again, 1), "a deleted and re-created function does not reuse the old one's version");
}

/// Issue 17, point 4: which condition changes get an event — a new condition, a status
/// flip, a reason change under the same status — and not a message-only change; a
/// Warning for a condition gone bad (Degraded True, anything else False).
#[test]
fn every_condition_transition_and_only_those_get_an_event() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kaas_operator::controller::decide::{is_bad, transitions};
    let c = |t: &str, s: &str, r: &str, m: &str| Condition {
        type_: t.into(),
        status: s.into(),
        reason: r.into(),
        message: m.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    };
    let old = vec![c("Admitted", "True", "CapacityReserved", "a"), c("Ready", "True", "Serving", "on 2")];
    let new = vec![
        c("Admitted", "True", "CapacityReserved", "another message"),
        c("Ready", "False", "NoLiveNode", "none"),
        c("Degraded", "True", "TooFewDevices", "0 of 2"),
    ];
    let changed: Vec<&str> = transitions(&old, &new).iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(changed, ["Ready", "Degraded"]);
    let reason_only = vec![c("Ready", "True", "Serving", "x")];
    let now = vec![c("Ready", "True", "Warming", "x")];
    assert_eq!(transitions(&reason_only, &now).len(), 1, "a reason change is a transition");
    assert!(transitions(&new, &new).is_empty());
    assert!(is_bad(&new[1]) && is_bad(&new[2]) && !is_bad(&new[0]));
    assert!(!is_bad(&c("Degraded", "False", "AsPlanned", "")));
}
