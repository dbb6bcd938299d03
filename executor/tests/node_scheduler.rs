//! The executor as the authoritative node scheduler (issue 14): live policy changes that
//! keep queued work, final deadline admission with a retry-after, the status gateways
//! route by (backlog, class), a panicking backend that frees its slot, content-shared
//! constants, and the SetPolicy RPC.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kaas_executor::backend::Backend;
use kaas_executor::backend::fault::{Fault, FaultBackend};
use kaas_executor::proto::BufferKind::{Const, Input, Output};
use kaas_executor::{ExecError, Executor, ExecutorConfig};
use kaas_scheduler::{AdmissionMode, PolicyConfig, SchedulerConfig};

/// An executor over one fault-injectable CPU device.
fn faulty(slots: u32, policy: &str, classes: &[(&str, &str)]) -> (Executor, Arc<FaultBackend>) {
    let faults = Arc::new(FaultBackend::new(cpu(64 << 20, slots)));
    let ex = Executor::start(
        vec![faults.clone() as Arc<dyn Backend>],
        ExecutorConfig {
            node: "node".into(),
            scheduler: SchedulerConfig::new(PolicyConfig::named(policy)),
            shares: vec![],
            health_interval: Duration::from_millis(200),
            accelerator_classes: classes.iter().map(|(k, c)| (k.to_string(), c.to_string())).collect(),
        },
    )
    .unwrap();
    (ex, faults)
}

fn copy_fn(name: &str, runtime_ms: f64) -> kaas_executor::model::FunctionDef {
    let mut f = wat_function(
        name,
        TEST_KERNELS,
        &[("in", 4, Input), ("out", 4, Output)],
        &[("copy", 1, &["in", "out"])],
    );
    f.runtime_ms = [("cpu".to_string(), runtime_ms)].into();
    def(f)
}

async fn run(ex: &Executor, f: &str, deadline_ms: u64) -> Result<Vec<u8>, ExecError> {
    ex.execute(
        &format!("t/{f}"),
        inputs(&[("in", vec![1, 2, 3, 4])]),
        Some(Duration::from_millis(deadline_ms)),
        None,
    )
    .await
    .map(|e| e.outputs["out"].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_policy_change_keeps_queued_and_running_work() {
    let (ex, faults) = faulty(1, "edf", &[]);
    ex.put_function(copy_fn("slow", 100.0)).await.unwrap();
    ex.put_function(copy_fn("quick", 1.0)).await.unwrap();
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(150)));
    let mut tasks = Vec::new();
    for f in ["slow", "quick", "quick", "quick", "quick"] {
        let ex = ex.clone();
        tasks.push(tokio::spawn(async move { run(&ex, f, 5_000).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One running, four queued: switch policy, then admission and eviction, live.
    for policy in ["mqfq-sticky", "slo-aware"] {
        let mut cfg = SchedulerConfig::new(PolicyConfig::named(policy));
        cfg.eviction = kaas_scheduler::Eviction::Gdsf;
        ex.set_scheduler(cfg).await.unwrap();
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), vec![1, 2, 3, 4], "every queued request survives the switch");
    }
    // An unknown policy is refused and the running one stays.
    let bad = ex.set_scheduler(SchedulerConfig::new(PolicyConfig::named("fifo"))).await;
    assert!(matches!(&bad, Err(ExecError::BadFunction(m)) if m.contains("fifo")), "{bad:?}");
    assert_eq!(run(&ex, "quick", 1_000).await.unwrap(), vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_admission_is_final_here_and_says_when_to_retry() {
    let (ex, faults) = faulty(1, "edf", &[]);
    let mut cfg = SchedulerConfig::new(PolicyConfig::named("edf"));
    cfg.admission = AdmissionMode::Deadline;
    ex.set_scheduler(cfg).await.unwrap();
    ex.put_function(copy_fn("slow", 300.0)).await.unwrap();
    ex.put_function(copy_fn("quick", 1.0)).await.unwrap();
    ex.preload("t/slow", None).await.unwrap();
    ex.preload("t/quick", None).await.unwrap();
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(300)));
    let busy = {
        let ex = ex.clone();
        tokio::spawn(async move { run(&ex, "slow", 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The slot is taken for ~270 ms more: a 50 ms deadline cannot be met.
    let refused = run(&ex, "quick", 50).await;
    match &refused {
        Err(ExecError::Rejected { reason, retry_after_ms }) => {
            assert!(reason.contains("deadline"), "{reason}");
            assert!(*retry_after_ms >= 1, "{retry_after_ms}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A deadline that covers the wait is admitted and met.
    let start = Instant::now();
    assert_eq!(run(&ex, "quick", 2_000).await.unwrap(), vec![1, 2, 3, 4]);
    assert!(start.elapsed() < Duration::from_secs(2));
    busy.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_backlog_and_class_that_routing_reads() {
    let (ex, faults) = faulty(1, "edf", &[("cpu", "cpu-fast")]);
    ex.put_function(copy_fn("slow", 100.0)).await.unwrap();
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(200)));
    let idle = ex.status();
    assert_eq!(idle.devices[0].accelerator_class, "cpu-fast");
    assert_eq!(idle.devices[0].backlog_ms, 0.0, "idle: no wait");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let ex = ex.clone();
            tokio::spawn(async move { run(&ex, "slow", 5_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let busy = ex.status();
    let d = &busy.devices[0];
    println!("busy: running {}, backlog {} ms", d.running, d.backlog_ms);
    assert_eq!(d.running, 1);
    // One running (~100 ms predicted, some spent) and two queued at 100 ms each.
    assert!(d.backlog_ms >= 150.0 && d.backlog_ms <= 300.0, "backlog {} ms", d.backlog_ms);
    let proto = kaas_executor::proto::NodeStatus::from(&busy);
    assert_eq!(proto.devices[0].backlog_ms, d.backlog_ms);
    assert_eq!(proto.devices[0].accelerator_class, "cpu-fast");
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(ex.status().devices[0].backlog_ms, 0.0, "drained: no wait again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_backend_answers_a_fault_and_the_slot_serves_the_next_request() {
    let (ex, faults) = faulty(1, "edf", &[]);
    ex.put_function(copy_fn("boom", 1.0)).await.unwrap();
    ex.put_function(copy_fn("fine", 1.0)).await.unwrap();
    faults.inject("t/boom", Fault::Panic);
    for _ in 0..5 {
        let e = run(&ex, "boom", 1_000).await.unwrap_err();
        assert!(matches!(&e, ExecError::KernelFault { message, .. } if message.contains("panicked")), "{e}");
        assert_eq!(run(&ex, "fine", 1_000).await.unwrap(), vec![1, 2, 3, 4]);
    }
    faults.clear("t/boom");
    assert_eq!(run(&ex, "boom", 1_000).await.unwrap(), vec![1, 2, 3, 4], "cleared: it works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_constants_of_two_functions_are_resident_once() {
    let (ex, _faults) = faulty(2, "edf", &[]);
    let with_const = |name: &str| {
        let mut f = wat_function(
            name,
            TEST_KERNELS,
            &[("w", 1 << 20, Const), ("in", 4, Input), ("out", 4, Output)],
            &[("copy", 1, &["in", "out"])],
        );
        f.runtime_ms = [("cpu".to_string(), 1.0)].into();
        def(f)
    };
    let free0 = ex.devices()[0].free_memory();
    ex.put_function(with_const("a")).await.unwrap();
    ex.preload("t/a", None).await.unwrap();
    let free1 = ex.devices()[0].free_memory();
    ex.put_function(with_const("b")).await.unwrap();
    ex.preload("t/b", None).await.unwrap();
    let free2 = ex.devices()[0].free_memory();
    println!("free: {free0} -> {free1} -> {free2}");
    assert!(free0 - free1 >= 1 << 20, "the first copy of the weights is charged");
    assert!(free1 - free2 < 1 << 20, "the same bytes for a second function are not charged again");
    assert_eq!(run(&ex, "a", 1_000).await.unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(run(&ex, "b", 1_000).await.unwrap(), vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_policy_rpc_applies_a_policy_and_refuses_a_malformed_one() {
    use kaas_executor::proto::executor_server::Executor as _;
    let (ex, _faults) = faulty(1, "edf", &[]);
    let svc = kaas_executor::service::ExecutorService::new(ex.clone());
    let mut cfg = SchedulerConfig::new(PolicyConfig::named("mqfq-sticky").with("throttleMs", 5.0));
    cfg.admission = AdmissionMode::Deadline;
    let ack = svc
        .set_policy(tonic::Request::new(kaas_executor::proto::PolicyUpdate {
            config_json: serde_json::to_string(&cfg).unwrap(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.policy, "mqfq-sticky");
    let bad = svc
        .set_policy(tonic::Request::new(kaas_executor::proto::PolicyUpdate {
            config_json: "{not json".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let unknown = svc
        .set_policy(tonic::Request::new(kaas_executor::proto::PolicyUpdate {
            config_json: r#"{"policy":{"name":"nope"}}"#.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("nope"), "{}", unknown.message());
    // Still serving under the applied policy.
    ex.put_function(copy_fn("after", 1.0)).await.unwrap();
    assert_eq!(run(&ex, "after", 1_000).await.unwrap(), vec![1, 2, 3, 4]);
}

/// What the executor learns can shut a function out, unless deadline admission probes:
/// eight slow runs (150 ms each) teach the model 150 ms, more than a 100 ms deadline
/// allows, so every later request would be refused and never measured again, although
/// the function is fast once more. Probes (one per ten predicted runtimes, at least a
/// second) keep serving it: within 3.5 s at least two requests are served, the rest are
/// refused with the reason, and every served one is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_its_learned_runtime_would_shut_out_is_still_probed() {
    let (ex, faults) = faulty(1, "edf", &[]);
    let mut cfg = SchedulerConfig::new(PolicyConfig::named("edf"));
    cfg.admission = AdmissionMode::Deadline;
    ex.set_scheduler(cfg).await.unwrap();
    ex.put_function(copy_fn("spiky", 1.0)).await.unwrap();
    ex.preload("t/spiky", None).await.unwrap();
    faults.inject("t/spiky", Fault::Slow(Duration::from_millis(150)));
    for _ in 0..8 {
        assert_eq!(run(&ex, "spiky", 5_000).await.unwrap(), [1, 2, 3, 4]);
    }
    faults.clear("t/spiky");
    let (mut served, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_500) {
        match run(&ex, "spiky", 100).await {
            Ok(out) => {
                assert_eq!(out, [1, 2, 3, 4]);
                served += 1;
            }
            Err(ExecError::Rejected { reason, .. }) => {
                assert!(reason.contains("deadline"), "{reason}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("after the model learned 150 ms: {served} served (probes), {refused} refused");
    assert!(refused > 0, "the learned model should refuse most requests");
    assert!(served >= 2, "no probe got through: the function is shut out ({refused} refused)");
}
