//! Bounded queues (issue 16, point 5): an executor holds at most its ceiling of requests
//! and of their input bytes. Past either an invocation is refused at once (a rejection the
//! gateway answers 429, or spills to another node); what was admitted is served, and once
//! it is answered there is room again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kaas_executor::error::ExecError;
use kaas_executor::proto::BufferKind::{Input, Output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_ceilings_an_executor_refuses_at_once_and_serves_what_it_admitted() {
    // One slot; `forever` holds it until the 300 ms kernel limit stops it.
    let ex = executor(64 << 20, 1, "edf", vec![]);
    for (name, kernel) in [("hold", "forever"), ("copy", "copy")] {
        let args: &[&str] = if kernel == "copy" { &["in", "out"] } else { &["in"] };
        let f =
            wat_function(name, TEST_KERNELS, &[("in", 4, Input), ("out", 4, Output)], &[(kernel, 1, args)]);
        ex.put_function(def(f)).await.unwrap();
    }
    let input = || inputs(&[("in", 7u32.to_le_bytes().to_vec())]);
    for (max_requests, max_bytes, what) in [(2, u64::MAX, "holds 2 requests"), (100, 8, "ceiling of 8")] {
        ex.set_in_flight_limits(max_requests, max_bytes);
        let held: Vec<_> = (0..2)
            .map(|_| {
                let ex = ex.clone();
                tokio::spawn(async move {
                    ex.execute("t/hold", input(), Some(Duration::from_secs(5)), None).await
                })
            })
            .collect();
        let start = Instant::now();
        while ex.in_flight().0 < 2 {
            assert!(start.elapsed() < Duration::from_secs(5), "the two requests were never admitted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let refused = Instant::now();
        let e = ex.execute("t/copy", input(), None, None).await.unwrap_err();
        println!("third request: {e} (in {:?})", refused.elapsed());
        assert!(
            matches!(&e, ExecError::Rejected { reason, retry_after_ms } if reason.contains(what) && *retry_after_ms > 0),
            "{e:?}"
        );
        assert!(refused.elapsed() < Duration::from_millis(100), "refused at once, not queued");
        // The admitted two are answered (their kernels hit the time limit), then there is room.
        for h in held {
            let r = h.await.unwrap();
            assert!(matches!(r, Err(ExecError::Timeout { .. })), "{r:?}");
        }
        assert_eq!(ex.in_flight(), (0, 0));
        let r = ex.execute("t/copy", input(), None, None).await.unwrap();
        assert_eq!(r.outputs["out"][..], 7u32.to_le_bytes());
    }
}
