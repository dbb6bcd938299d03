//! Scale from zero under `exclusive`: a function with no worker of its own gets one
//! through the policy, not beside it.

mod common;

use common::*;
use kaas_scheduler::*;

/// One device, owned by `a` after its first request. `b`'s deadline (20 ms) cannot absorb
/// its load (30 ms), so its first request is refused while it warms; the load must claim
/// the device the way `exclusive` hands devices over (taking it from `a`), because a load
/// placed beside `a` leaves `b` without a worker: its next request would take the device,
/// flushed, and start cold past its deadline. Once warm, every request of `b` that is
/// admitted runs warm and in time.
#[test]
fn a_function_without_a_worker_claims_one_before_it_is_served() {
    let mut cfg = SchedulerConfig::new(PolicyConfig::named("exclusive"));
    cfg.admission = AdmissionMode::Deadline;
    let mut s = Scheduler::new(gpus(1, 1, 1 << 30), cfg).unwrap();
    let a = s.add_function(Function::uniform("a", 1, msec(2), msec(1), msec(100))).unwrap();
    let b = s.add_function(Function::uniform("b", 1, msec(2), msec(30), msec(20))).unwrap();
    let mut arrivals = vec![(0, a)];
    arrivals.extend((0..40).map(|i| (msec(10 + 5 * i), b)));
    let trace = run(&mut s, &arrivals);
    let warmups: Vec<&Ev> =
        trace.iter().filter(|e| matches!(e, Ev::Warmup { function, .. } if *function == b.0)).collect();
    assert_eq!(warmups.len(), 1, "one load of b: {trace:?}");
    let rejected = trace.iter().filter(|e| matches!(e, Ev::Rejected { .. })).count();
    assert!(
        trace.iter().any(|e| matches!(e, Ev::Rejected { req: 1, why, .. } if why.contains("warm"))),
        "b's first request is told it is warming: {trace:?}"
    );
    let b_runs: Vec<(u64, usize, u32, bool)> = runs(&trace).into_iter().filter(|r| r.1 >= 1).collect();
    assert!(b_runs.len() >= 30, "b is served once warm ({} of 40 runs, {rejected} refused)", b_runs.len());
    assert!(b_runs.iter().all(|r| !r.3), "b runs warm on its own worker: {b_runs:?}");
    for e in &trace {
        if let Ev::Done { t, req } = e {
            let (at, f) = arrivals[*req];
            let deadline = s.functions()[f.0 as usize].deadline;
            assert!(t - at <= deadline, "request {req} admitted and late: done {t} ns, arrived {at} ns");
        }
    }
    println!("b: {} runs, {rejected} refused while it warmed", b_runs.len());
}
