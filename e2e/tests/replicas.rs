//! Issue 14, point 4: gateway replicas cannot overbook an executor.
//!
//! One executor with one CPU slot, a ~5 ms kernel, a 60 ms deadline, `edf` with
//! `deadline` admission, offered twice its capacity. First through one gateway, then the
//! same load split over two gateway processes in front of the same executor. The
//! executor's scheduler is the one place requests queue and the one place admission
//! decides, so the split changes nothing: admitted requests keep their SLO (≥ 99 %) and
//! overall attainment stays ≥ 0.9 × the single gateway's. (Before the two-level design,
//! each gateway scheduled the device as if alone: 19 % in time against 39 %.)

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
    let (_exec, e) = start_executor(&exec_bin, "node-shared");
    let dir = tempfile::tempdir().unwrap();
    let ms_per_million = calibrate(&op_bin, dir.path(), std::slice::from_ref(&e)).await;
    println!("calibration: {ms_per_million:.3} ms per million iterations");
    let iterations = ((5.0 / ms_per_million) * 1e6) as u64;
    let classes = [Class { name: "tight", iterations, runtime_ms: 5.0 * 1.3, deadline_ms: 60 }];
    write_functions(dir.path(), &classes, "edf", "deadline");
    // One slot, ~5 ms per request: capacity ≈ 200 requests/s.
    let capacity = 1000.0 / 5.0;

    let mut runs = Vec::new();
    for gateways in [1usize, 2] {
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
        let in_time = (admitted_att * admitted as f64) / total as f64;
        println!(
            "{gateways} gateway(s): statuses {st:?}; {admitted} of {total} admitted; \
             {:.2} % of admitted and {:.2} % of all in time",
            admitted_att * 100.0,
            in_time * 100.0
        );
        runs.push((admitted_att, in_time));
    }
    let (one_admitted, one_all) = runs[0];
    let (two_admitted, two_all) = runs[1];
    assert!(one_admitted >= 0.99, "one gateway: {:.4} of admitted in time", one_admitted);
    assert!(two_admitted >= 0.99, "two gateways: {:.4} of admitted in time", two_admitted);
    assert!(
        two_all >= 0.9 * one_all,
        "two gateways serve {:.3} in time, one serves {:.3}: replicas lose more than a tenth",
        two_all,
        one_all
    );
    assert!(one_all > 0.3, "at 2x overload about half can be served in time; served {one_all:.3}");
}
