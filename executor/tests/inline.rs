//! Microsecond kernels run on the executor's scheduler thread, without the hand-offs to
//! a blocking thread and back (issue 15: they cost ~50 µs, fifty times such a kernel),
//! under a budget: a kernel learned fast that runs long is stopped at the budget, rerun on
//! a blocking thread with the full kernel time limit and answered right, other work is not
//! held up behind it, and it is not tried on the scheduler thread again before 16 runs
//! elsewhere were measured and its runs are short again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kaas_executor::proto::BufferKind;

/// `work` reads n from `in`, spins n iterations, writes n + 1 to `out`.
const WORK: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "work") (param i32 i32 i32 i32 i32 i32) (param $in i32) (param $out i32)
    (local $i i32) (local $n i32)
    (local.set $n (i32.load (local.get $in)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.store (local.get $out) (i32.add (local.get $n) (i32.const 1)))))
"#;

fn work(name: &str) -> kaas_executor::proto::FunctionDef {
    wat_function(
        name,
        WORK,
        &[("in", 4, BufferKind::Input), ("out", 4, BufferKind::Output)],
        &[("work", 1, &["in", "out"])],
    )
}

async fn run(ex: &kaas_executor::Executor, key: &str, n: u32) -> u32 {
    let out = ex.execute(key, inputs(&[("in", n.to_le_bytes().to_vec())]), None, None).await.unwrap();
    u32::from_le_bytes(out.outputs["out"][..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsecond_kernels_run_inline_and_one_that_overruns_is_rerun_off_the_scheduler() {
    let ex = executor(1 << 30, 2, "edf", vec![]);
    // A debug build on two shared cores takes ~0.1-0.5 ms a run of these kernels, near the
    // 250 µs default: a ceiling well above it keeps what runs inline from hinging on noise.
    ex.set_inline_max(Duration::from_micros(1_500));
    for name in ["slow-later", "fast"] {
        ex.put_function(def(work(name))).await.unwrap();
        ex.preload(&format!("t/{name}"), None).await.unwrap();
    }
    let m = ex.metrics().clone();
    // Learned fast (from the 8th run the estimate is trusted; the first runs, which
    // build instances, take longer and decay from the estimate), they run inline.
    for i in 0..60 {
        assert_eq!(run(&ex, "t/slow-later", 10 + i).await, 11 + i);
        assert_eq!(run(&ex, "t/fast", 10).await, 11);
    }
    let inline = m.inline_runs.get();
    println!("inline runs after 120 fast invocations: {inline}");
    assert!(inline >= 40, "microsecond kernels ran inline: {inline}");
    // A host stall can push one of these past the budget (a CI run did, twice): what
    // follows counts overruns from here.
    let overruns = m.inline_overruns.get();

    // Now a run of tens of milliseconds (the test kernel limit is 300 ms): stopped at
    // the budget, rerun on a blocking thread, answered right.
    let slow = {
        let ex = ex.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (run(&ex, "t/slow-later", 40_000_000).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Meanwhile the other function is served at once, not after the slow one.
    let before = m.inline_runs.get();
    assert_eq!(run(&ex, "t/fast", 7).await, 8);
    assert!(!slow.is_finished(), "the fast function waited for the slow one");
    assert_eq!(m.inline_runs.get(), before + 1, "the fast one still runs inline");
    let (out, took) = slow.await.unwrap();
    println!("the overrun answered in {took:?}");
    assert_eq!(out, 40_000_001, "the rerun's answer");
    assert_eq!(m.inline_overruns.get(), overruns + 1);

    // Its learned runtime now says it is not a microsecond kernel: the next run is not
    // tried inline; after a run of short ones it is again.
    let before = m.inline_runs.get();
    assert_eq!(run(&ex, "t/slow-later", 3).await, 4);
    assert_eq!(m.inline_runs.get(), before, "tried inline right after an overrun");
    let mut runs = 0;
    while m.inline_runs.get() == before && runs < 300 {
        assert_eq!(run(&ex, "t/slow-later", 3).await, 4);
        runs += 1;
    }
    println!("inline again after {runs} short runs");
    assert!(m.inline_runs.get() > before, "inline again once short again");
    assert!(runs >= 16, "tried inline again after {runs} runs, before 16 were measured elsewhere");
    assert_eq!(m.inline_overruns.get(), overruns + 1);
}

/// A function whose kernel never ends, after being learned fast, costs the scheduler
/// thread one budget: every later request goes to a blocking thread, where the kernel
/// time limit answers it, and other work goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_fast_kernel_that_starts_hanging_overruns_once() {
    let ex = executor(1 << 30, 2, "edf", vec![]);
    ex.set_inline_max(Duration::from_micros(1_500));
    ex.put_function(def(work("w"))).await.unwrap();
    ex.preload("t/w", None).await.unwrap();
    let m = ex.metrics().clone();
    let mut runs = 0;
    while m.inline_runs.get() == 0 && runs < 300 {
        assert_eq!(run(&ex, "t/w", 5).await, 6);
        runs += 1;
    }
    println!("inline after {runs} runs");
    assert!(m.inline_runs.get() > 0, "never inline");
    // Learning it fast may have cost overruns of its own on a stalled host (a CI run took
    // 41 runs: two stalls, each followed by 16 runs off the scheduler thread).
    let overruns = m.inline_overruns.get();
    // u32::MAX iterations: far past the 300 ms kernel limit.
    for _ in 0..3 {
        let e = ex.execute("t/w", inputs(&[("in", u32::MAX.to_le_bytes().to_vec())]), None, None).await;
        let e = e.expect_err("a kernel past its limit fails");
        assert!(e.to_string().contains("time limit") || e.to_string().contains("limit"), "{e}");
    }
    assert_eq!(m.inline_overruns.get(), overruns + 1, "one budget, then the blocking pool");
    assert_eq!(run(&ex, "t/w", 5).await, 6, "the slot is free and the function still works");
}

/// A ceiling of zero turns running on the scheduler thread off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ceiling_never_runs_inline() {
    let ex = executor(1 << 30, 2, "edf", vec![]);
    ex.set_inline_max(Duration::ZERO);
    ex.put_function(def(work("w"))).await.unwrap();
    ex.preload("t/w", None).await.unwrap();
    for _ in 0..40 {
        assert_eq!(run(&ex, "t/w", 5).await, 6);
    }
    assert_eq!(ex.metrics().inline_runs.get(), 0);
}
