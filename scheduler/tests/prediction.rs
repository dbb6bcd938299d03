//! What deadline admission predicts against what then happens, on small deterministic
//! runs (every dispatch takes exactly its expected time).

mod common;

use common::*;
use kaas_scheduler::*;

/// Under deadline order a request waits for what is admitted after it with an earlier
/// deadline, not only for what is queued when it arrives. One slot, a stream of short
/// requests taking half of it (10 ms every 20 ms, 30 ms deadline, running for 5 s), then
/// 21 requests of a long-deadline function at once (10 ms each, 1 s deadline): the
/// shorts keep overtaking them, so the last one completes about 420 ms after arrival,
/// not 220, and the prediction must say so.
#[test]
fn deadline_order_counts_the_shorter_deadlines_still_to_come() {
    for policy in ["edf", "slo-aware"] {
        let mut cfg = SchedulerConfig::new(PolicyConfig::named(policy));
        cfg.admission = AdmissionMode::Deadline;
        let mut s = Scheduler::new(gpus(1, 1, 1 << 30), cfg).unwrap();
        let short = s.add_function(Function::uniform("short", 1, msec(10), 0, msec(30))).unwrap();
        let long = s.add_function(Function::uniform("long", 1, msec(10), 0, msec(1000))).unwrap();
        let at = msec(5005);
        let mut arrivals: Vec<(Nanos, FunctionId)> = (0..400).map(|i| (msec(20 * i), short)).collect();
        let split = arrivals.partition_point(|a| a.0 <= at);
        arrivals.splice(split..split, std::iter::repeat_n((at, long), 21));
        let long_index = split + 20;
        let mut predicted = None;
        let trace = run_checked(&mut s, &arrivals, &mut |s, now, _| {
            if now == at && predicted.is_none() {
                predicted = s.admitted_prediction();
            }
        });
        let rejected: Vec<&Ev> = trace.iter().filter(|e| matches!(e, Ev::Rejected { .. })).collect();
        assert!(rejected.is_empty(), "{policy}: at half load nothing is refused: {rejected:?}");
        let done = trace
            .iter()
            .find_map(|e| match e {
                Ev::Done { t, req } if *req == long_index => Some(*t),
                _ => None,
            })
            .expect("the long request completes");
        let predicted = predicted.expect("the long request was admitted at its arrival");
        let (actual_ms, predicted_ms) = ((done - at) / MS, predicted.saturating_sub(at) / MS);
        println!("{policy}: completed {actual_ms} ms after arrival, predicted {predicted_ms} ms");
        assert!(actual_ms >= 350, "{policy}: the shorts overtake the long requests ({actual_ms} ms)");
        assert!(
            actual_ms.abs_diff(predicted_ms) <= 50,
            "{policy}: predicted {predicted_ms} ms, completed {actual_ms} ms after arrival"
        );
    }
}
