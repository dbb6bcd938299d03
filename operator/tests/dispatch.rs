//! Issue 14, point 5: every dispatched request is bounded. Through the gateway and an
//! executor over a fault-injection backend (one slot): a kernel that hangs is answered
//! 504 within its deadline + 1 s and cancelled; one that panics is answered 500 and frees
//! its slot; a slow one is answered; and after each, the next request on the same slot
//! is served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_executor::Executor;
use kaas_executor::backend::fault::{Fault, FaultBackend};
use kaas_executor::proto;
use kaas_operator::gateway::{Gateway, GatewayConfig, GatewayError, NodeClient};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};

mod common;
use common::{executor_over, function};

async fn setup() -> (Gateway, Arc<FaultBackend>, Executor) {
    let scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    let (ex, faults) = executor_over(64 << 20, &scheduler);
    let gw = Gateway::start(GatewayConfig { scheduler, ..GatewayConfig::default() }).unwrap();
    gw.add_node("n", NodeClient::Local(ex.clone()));
    assert!(gw.wait_ready(Duration::from_secs(20)).await, "the node comes up");
    for f in ["ok", "hang", "panic", "slow"] {
        gw.put_function(function(f));
    }
    faults.inject("t/hang", Fault::Hang(Duration::from_millis(1500)));
    faults.inject("t/panic", Fault::Panic);
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(300)));
    (gw, faults, ex)
}

async fn call(gw: &Gateway, f: &str, deadline_ms: u64) -> (Result<u32, GatewayError>, Duration) {
    let start = Instant::now();
    let inputs: BTreeMap<String, kaas_operator::gateway::Bytes> =
        [("in".to_string(), 41u32.to_le_bytes().to_vec().into())].into();
    let r = gw
        .invoke(&format!("t/{f}"), inputs, Some(Duration::from_millis(deadline_ms)))
        .await
        .map(|i| u32::from_le_bytes(i.outputs["out"][..4].try_into().unwrap()));
    (r, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_kernel_is_answered_504_in_time_and_the_slot_serves_again() {
    let (gw, _faults, _ex) = setup().await;
    assert_eq!(call(&gw, "ok", 5_000).await.0, Ok(42));
    let (r, took) = call(&gw, "hang", 200).await;
    println!("hang: {r:?} after {took:?}");
    assert!(matches!(r, Err(GatewayError::DeadlineExceeded(_))), "{r:?}");
    assert!(took <= Duration::from_millis(1200), "answered within the deadline + 1 s: {took:?}");
    // The slot is the hung kernel's until its limit stops it (1.5 s); then it serves.
    let (r, took) = call(&gw, "ok", 5_000).await;
    println!("next on the slot: {r:?} after {took:?}");
    assert_eq!(r, Ok(42), "the next request on the same slot is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_kernel_is_answered_500_and_frees_its_slot() {
    let (gw, _faults, ex) = setup().await;
    for _ in 0..3 {
        let (r, took) = call(&gw, "panic", 1_000).await;
        assert!(matches!(&r, Err(GatewayError::Failed(m)) if m.contains("panicked")), "{r:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        // One slot: served only if the panic freed it.
        let (r, took) = call(&gw, "ok", 1_000).await;
        assert_eq!(r, Ok(42), "after a panic the slot serves ({took:?})");
    }
    // Status is published every 20 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = ex.status();
    assert_eq!(status.devices[0].running, 0, "no slot leaked: {:?}", status.devices[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kernel_is_answered_and_a_hang_does_not_stop_other_functions_later() {
    let (gw, faults, _ex) = setup().await;
    let (r, took) = call(&gw, "slow", 2_000).await;
    assert_eq!(r, Ok(42));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // Slower than its deadline: answered by the executor's result or the gateway's
    // timer, within the deadline + 1 s either way.
    let (r, took) = call(&gw, "slow", 100).await;
    println!("slow past its deadline: {r:?} after {took:?}");
    assert!(took <= Duration::from_millis(1100), "{took:?}");
    // A fault cleared is a function that works again.
    faults.clear("t/hang");
    assert_eq!(call(&gw, "hang", 1_000).await.0, Ok(42));
    let m = gw.metrics().in_flight.get();
    assert_eq!(m, 0, "nothing left in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_caller_gave_up_is_dropped_from_the_executor_queue() {
    let (gw, faults, ex) = setup().await;
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(400)));
    let busy = {
        let gw = gw.clone();
        tokio::spawn(async move { call(&gw, "slow", 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the slow kernel on the one slot; its caller goes away after 50 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), call(&gw, "ok", 5_000)).await;
    assert!(gave_up.is_err(), "still queued when the caller left");
    assert_eq!(busy.await.unwrap().0, Ok(42));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let label = |o: &str| kaas_executor::metrics::OutcomeLabel { outcome: o.into() };
    let m = ex.metrics();
    assert_eq!(
        m.invocations.get_or_create(&label("cancelled")).get(),
        1,
        "the abandoned request was cancelled"
    );
    assert_eq!(m.invocations.get_or_create(&label("ok")).get(), 1, "and never ran: only the slow one did");
}

/// Spillback: the node routing ranks first refuses (here: the function's 2 MiB weights
/// do not fit its 1 MiB device), and the gateway sends the request to the next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_node_spills_the_request_over_to_the_next() {
    let scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    let (small, _) = executor_over(1 << 20, &scheduler);
    let (large, _) = executor_over(64 << 20, &scheduler);
    let gw = Gateway::start(GatewayConfig { scheduler, ..GatewayConfig::default() }).unwrap();
    // Equal predictions: the tie goes to the first node by name, the small one.
    gw.add_node("a-small", NodeClient::Local(small));
    gw.add_node("b-large", NodeClient::Local(large));
    assert!(gw.wait_ready(Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut f = function("heavy");
    f.buffers.push(proto::Buffer {
        name: "w".into(),
        size: 2 << 20,
        kind: proto::BufferKind::Const as i32,
        content: vec![1; 2 << 20],
    });
    gw.put_function(f);
    let inputs: BTreeMap<String, kaas_operator::gateway::Bytes> =
        [("in".to_string(), 1u32.to_le_bytes().to_vec().into())].into();
    let r = gw.invoke("t/heavy", inputs, Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(r.outputs["out"][..], 2u32.to_le_bytes().to_vec());
    assert!(r.device.starts_with("b-large/"), "served by the node that has room: {}", r.device);
    assert_eq!(gw.metrics().retries.get(), 1, "one spillback");
}

/// Refused everywhere: 429 with the executor's reason and a retry-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_everywhere_is_a_429_with_the_executors_reason() {
    let mut scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    scheduler.admission = kaas_scheduler::AdmissionMode::Deadline;
    let (ex, faults) = executor_over(64 << 20, &scheduler);
    let gw = Gateway::start(GatewayConfig { scheduler, ..GatewayConfig::default() }).unwrap();
    gw.add_node("only", NodeClient::Local(ex.clone()));
    assert!(gw.wait_ready(Duration::from_secs(20)).await);
    let mut slow = function("slow");
    slow.runtime_ms = [("cpu".to_string(), 400.0)].into();
    gw.put_function(slow);
    gw.put_function(function("ok"));
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(400)));
    // Warm both so that no load is predicted.
    assert_eq!(call(&gw, "ok", 5_000).await.0, Ok(42));
    assert_eq!(call(&gw, "slow", 5_000).await.0, Ok(42));
    let busy = {
        let gw = gw.clone();
        tokio::spawn(async move { call(&gw, "slow", 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (r, _) = call(&gw, "ok", 100).await;
    match &r {
        Err(GatewayError::Rejected { reason, retry_after_ms }) => {
            assert!(reason.contains("deadline"), "{reason}");
            assert!(*retry_after_ms >= 1);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(gw.metrics().retries.get(), 0, "one node: a refusal with nowhere else to go is no retry");
    assert_eq!(busy.await.unwrap().0, Ok(42));
}

/// A bug that kills the executor's actor (here: the backend panics when asked whether it
/// can run a function, which the actor asks when the function is registered) leaves no
/// request hanging — each is answered within its deadline + 1 s — and `/healthz` fails
/// naming the actor, so the kubelet restarts the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_executor_actor_fails_healthz_and_answers_every_request() {
    let (gw, faults, ex) = setup().await;
    let liveness = kaas_executor::liveness::Liveness::new();
    let actor = ex.clone();
    liveness.check("executor actor", move || actor.alive());
    let state = kaas_operator::gateway::http::HttpState {
        gateway: gw.clone(),
        registry: Arc::new(prometheus_client::registry::Registry::default()),
        liveness,
        max_request_bytes: kaas_operator::gateway::http::DEFAULT_MAX_REQUEST_BYTES,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, kaas_operator::gateway::http::router(state)).await });
    let healthz = || async move {
        let r = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(call(&gw, "ok", 2_000).await.0, Ok(42));
    assert_eq!(healthz().await, (200, "ok\n".to_string()));

    gw.put_function(function("broken"));
    faults.inject("t/broken", Fault::BrokenBackend);
    let (r, took) = call(&gw, "broken", 2_000).await;
    println!("the request that killed the actor: {r:?} after {took:?}");
    assert!(r.is_err(), "{r:?}");
    // Within its deadline + 1 s, as every accepted request (the panic hook printing a
    // backtrace takes about a second of this machine's time).
    assert!(took < Duration::from_millis(2_000 + 1_000), "answered in time: {took:?}");
    // The answer goes out while the actor's stack unwinds (its pending replies are
    // dropped first); the task ends a moment later.
    let dead_by = std::time::Instant::now() + Duration::from_secs(1);
    while ex.alive() && std::time::Instant::now() < dead_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!ex.alive(), "the actor is dead within a second of its last answer");
    let (r, took) = call(&gw, "ok", 2_000).await;
    println!("the next request: {r:?} after {took:?}");
    assert!(
        r.is_err() && took < Duration::from_millis(2_000 + 1_000),
        "answered in time with an error: {r:?} {took:?}"
    );
    let (code, body) = healthz().await;
    assert_eq!((code, body.as_str()), (503, "dead: executor actor\n"));
}

/// A gateway at its ceiling of held invocations answers 429 at once, without routing;
/// the one it holds is served, and then there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_at_its_ceiling_answers_429_at_once() {
    let scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    let (ex, faults) = executor_over(64 << 20, &scheduler);
    let gw =
        Gateway::start(GatewayConfig { scheduler, max_inflight_requests: 1, ..GatewayConfig::default() })
            .unwrap();
    gw.add_node("n", NodeClient::Local(ex.clone()));
    assert!(gw.wait_ready(Duration::from_secs(20)).await, "the node comes up");
    for f in ["ok", "slow"] {
        gw.put_function(function(f));
    }
    faults.inject("t/slow", Fault::Slow(Duration::from_millis(500)));
    let held = {
        let gw = gw.clone();
        tokio::spawn(async move { call(&gw, "slow", 5_000).await })
    };
    let start = Instant::now();
    while gw.in_flight().0 < 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "the slow request was never admitted");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (r, took) = call(&gw, "ok", 5_000).await;
    println!("at the ceiling: {r:?} after {took:?}");
    assert!(
        matches!(&r, Err(GatewayError::Rejected { reason, .. }) if reason.contains("gateway holds 1 requests")),
        "{r:?}"
    );
    assert!(took < Duration::from_millis(100), "refused at once: {took:?}");
    assert_eq!(held.await.unwrap().0, Ok(42));
    assert_eq!(call(&gw, "ok", 5_000).await.0, Ok(42));
    assert_eq!(gw.in_flight(), (0, 0));
}
