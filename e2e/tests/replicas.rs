//! Issue 14, point 4: gateway replicas cannot overbook an executor.
//!
//! One executor with one CPU slot, a ~10 ms kernel, a 120 ms deadline, `edf` with
//! `deadline` admission, offered twice its capacity. (The report used 5 ms and
//! 60 ms; in CI's debug build on two shared cores, 400 HTTP requests a second through
//! debug gateways stall the machine for more than the 15 ms of headroom a 60 ms deadline
//! keeps, and about 1.5 % of admitted requests came in late even through one gateway.) First through one gateway, then the
//! same load split over two gateway processes in front of the same executor. The
//! executor's scheduler is the one place requests queue and the one place admission
//! decides, so the split changes nothing: admitted requests keep their SLO (≥ 99 %) and
//! overall attainment stays ≥ 0.9 × the single gateway's. (Before the two-level design,
//! each gateway scheduled the device as if alone: 19 % in time against 39 %.)
//!
//! This host's speed jumps by up to 2.4× between runs, and with it what one slot can
//! serve at all (one CI run's "2×" load was served 28 % to 81 % in time from one run to
//! the next, whatever the gateways). So each run's requests in time are also counted
//! against what the slot could have served in that run — the 5 s of arrivals and the last
//! one's deadline over the mean slot time its served requests took (the executor's time
//! less its queue) — and the
//! two configurations are compared on that: overbooking (late answers, a slot busy with
//! work that misses) shows there as it does in raw attainment, the host's speed does not.

use std::collections::BTreeMap;
use std::time::Duration;

use kaas_e2e::binary;
use kaas_e2e::standalone::*;

fn statuses(outcomes: &[Outcome]) -> BTreeMap<u16, usize> {
    outcomes.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o.status).or_default() += 1;
        m
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_in_front_of_one_executor_do_not_overbook_it() {
    let exec_bin = binary("kaas-executor", "kaas-executor").unwrap();
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    // The kernel spins ~1 ms and the executor stretches it to ~10 ms (sleeping the rest,
    // --emulate-slowdown): the slot is held as long as a 10 ms kernel would hold it, but
    // what the executor can serve no longer depends on how many processes compete for
    // this machine's two cores, which is not what this test is about.
    let (_exec, e) = start_executor_with(&exec_bin, "node-shared", &["--emulate-slowdown", "10"]);
    let dir = tempfile::tempdir().unwrap();
    // One slot, ~10 ms per request: capacity ≈ 100 requests/s.
    let capacity = 1000.0 / 10.0;

    // In the order 1, 2, 2, 1, 2, 1, 1, 2 (so that a drift of the machine's speed over
    // the run, which changes what is servable at all, falls on both alike, and each
    // configuration gets 20 s of load: one 5 s run's share served varies by ±10 % here
    // with the learned runtime's deviation), summed per configuration:
    // (in time, admitted, total).
    // (in time, admitted, total, servable)
    let mut sums = [(0usize, 0usize, 0usize, 0.0f64); 3];
    for gateways in [1usize, 2, 2, 1, 2, 1, 1, 2] {
        // Calibrated before every run: this host's speed drifts by up to twofold within
        // a test (one CI run calibrated once served 26 % in time, its "2×" load far above
        // 2× by the end), and the kernel's slot time follows the CPU time it spins.
        let ms_per_million = calibrate(&op_bin, dir.path(), std::slice::from_ref(&e)).await / 10.0;
        println!("calibration: {ms_per_million:.3} ms per million iterations (before the slowdown)");
        let iterations = ((1.0 / ms_per_million) * 1e6) as u64;
        let classes = [Class { name: "tight", iterations, runtime_ms: 10.0 * 1.3, deadline_ms: 120 }];
        // 35 % of each deadline in reserve: two gateways, the load generator and the
        // executor share two cores here; with the 25 % the other suites keep, 1.5 % of the
        // admitted requests of a run came in 1-12 ms past 120 ms, through one gateway as
        // through two (the machine stalling, not the replicas).
        write_functions_with(dir.path(), &classes, "edf", "deadline", None, 0.35);
        let procs: Vec<_> =
            (0..gateways).map(|_| start_gateway(&op_bin, dir.path(), std::slice::from_ref(&e))).collect();
        let addrs: Vec<String> = procs.iter().map(|(_, a)| a.clone()).collect();
        // Half a second at half the capacity: the executor learns what the kernel takes
        // on this loaded machine.
        let warmup = load_over(&addrs, &classes, 0.5 * capacity, 1.0, None).await;
        let outcomes = load_over(&addrs, &classes, 2.0 * capacity, 5.0, None).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut answered = 0;
        for a in &addrs {
            answered += answered_total(a).await;
        }
        assert_eq!(answered, (warmup.len() + outcomes.len()) as u64, "every request answered exactly once");
        assert!(outcomes.iter().filter(|o| o.status == 200).all(|o| o.correct), "a wrong output");
        let st = statuses(&outcomes);
        assert!(st.keys().all(|s| [200, 429, 504].contains(s)), "only served, rejected or late: {st:?}");
        let (admitted_att, admitted, total) = attainment(&outcomes, &classes);
        let met = (admitted_att * admitted as f64).round() as usize;
        let mut late: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.status == 200 && o.server_ms > classes[0].deadline_ms as f64)
            .map(|o| o.server_ms)
            .collect();
        late.sort_by(f64::total_cmp);
        let served: Vec<f64> =
            outcomes.iter().filter(|o| o.status == 200).map(|o| o.server_ms - o.queue_ms).collect();
        let slot_ms = served.iter().sum::<f64>() / served.len().max(1) as f64;
        // Arrivals for 5 s, the last answered by its deadline.
        let servable = (5000.0 + classes[0].deadline_ms as f64) / slot_ms.max(0.01);
        println!(
            "{gateways} gateway(s): statuses {st:?}; {admitted} of {total} admitted; \
             {:.2} % of admitted and {:.2} % of all in time; slot time {slot_ms:.2} ms, so \
             {servable:.0} servable, {:.2} % of them served in time; late successes (ms) {late:.0?}",
            admitted_att * 100.0,
            met as f64 / total as f64 * 100.0,
            met as f64 / servable * 100.0
        );
        let s = &mut sums[gateways];
        *s = (s.0 + met, s.1 + admitted, s.2 + total, s.3 + servable);
    }
    let ratio = |(met, admitted, total, servable): (usize, usize, usize, f64)| {
        (met as f64 / admitted.max(1) as f64, met as f64 / total.max(1) as f64, met as f64 / servable)
    };
    let (one_admitted, one_all, one_of_servable) = ratio(sums[1]);
    let (two_admitted, two_all, two_of_servable) = ratio(sums[2]);
    println!(
        "over all runs: one gateway {:.2} % of admitted, {:.2} % of all, {:.2} % of the servable in time; \
         two gateways {:.2} % of admitted, {:.2} % of all, {:.2} % of the servable",
        one_admitted * 100.0,
        one_all * 100.0,
        one_of_servable * 100.0,
        two_admitted * 100.0,
        two_all * 100.0,
        two_of_servable * 100.0
    );
    assert!(one_admitted >= 0.99, "one gateway: {:.4} of admitted in time", one_admitted);
    assert!(two_admitted >= 0.99, "two gateways: {:.4} of admitted in time", two_admitted);
    assert!(
        two_of_servable >= 0.9 * one_of_servable,
        "two gateways serve {two_of_servable:.3} of what the slot could serve in time, one serves \
         {one_of_servable:.3}: replicas lose more than a tenth"
    );
    assert!(
        one_of_servable > 0.7,
        "at 2x overload one gateway keeps the slot busy with work that makes its deadline; \
         served {one_of_servable:.3} of the servable"
    );
}
