//! Eviction under memory pressure, as the executor runs it (issue 14, point 8): its memory
//! manager is the one residency truth and follows the configured `cacheEviction`. One
//! device with room for two functions' weights, three functions: the third's first
//! invocation evicts one of the others, `lru` the least recently used, `gdsf` the least
//! frequently used (same size, same load cost); every answer stays correct and the
//! evicted function is loaded again, cold, when next invoked.

mod common;

use std::time::Duration;

use common::*;
use kaas_executor::proto::BufferKind::{Const, Input, Output};
use kaas_executor::{Executor, ExecutorConfig};
use kaas_scheduler::{Eviction, PolicyConfig, SchedulerConfig};

const WEIGHTS: u64 = 24 << 20;

fn executor_with(eviction: Eviction) -> Executor {
    let mut scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    scheduler.eviction = eviction;
    Executor::start(
        vec![cpu(64 << 20, 1)],
        ExecutorConfig {
            node: "node".into(),
            scheduler,
            shares: vec![],
            health_interval: Duration::from_millis(200),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap()
}

/// A function with 24 MiB of weights of its own (distinct bytes: nothing is shared).
fn weighted(name: &str, byte: u8) -> kaas_executor::model::FunctionDef {
    let mut f = wat_function(
        name,
        TEST_KERNELS,
        &[("w", WEIGHTS, Const), ("in", 4, Input), ("out", 4, Output)],
        &[("copy", 1, &["in", "out"])],
    );
    f.buffers[0].content = vec![byte; WEIGHTS as usize];
    f.runtime_ms = [("cpu".to_string(), 1.0)].into();
    f.load_ms = [("cpu".to_string(), 5.0)].into();
    def(f)
}

/// Invokes `f`; whether it paid a cold start. The output must be right.
async fn cold(ex: &Executor, f: &str, seq: u8) -> bool {
    let input = vec![seq, 2, 3, 4];
    let e = ex
        .execute(&format!("t/{f}"), inputs(&[("in", input.clone())]), Some(Duration::from_secs(5)), None)
        .await
        .unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(e.outputs["out"][..], input, "{f}: output");
    e.cold_start
}

/// The resident functions once the status shows `want`, or after a second what it shows:
/// the executor publishes its status at most every 20 ms, so right after an answer it may
/// not show that answer's load yet.
async fn resident(ex: &Executor, want: &[&str]) -> Vec<String> {
    let end = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut r = ex.status().devices[0].resident.clone();
        r.sort();
        if r == want || tokio::time::Instant::now() >= end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// a is used five times, then b once (so b is the most recent, a the most frequent);
/// then c needs room.
async fn pressure(ex: &Executor) {
    for name in ["a", "b", "c"] {
        ex.put_function(weighted(name, name.as_bytes()[0])).await.unwrap();
    }
    assert!(cold(ex, "a", 0).await, "a's first invocation loads it");
    for i in 1..5 {
        assert!(!cold(ex, "a", i).await, "a stays resident");
    }
    assert!(cold(ex, "b", 5).await, "b's first invocation loads it");
    assert_eq!(resident(ex, &["t/a", "t/b"]).await, ["t/a", "t/b"], "two functions fit");
    let free = ex.devices()[0].free_memory();
    assert!(free < WEIGHTS, "no room for a third: {free} bytes free");
    assert!(cold(ex, "c", 6).await, "c's first invocation loads it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_evicts_the_least_recently_used_function() {
    let ex = executor_with(Eviction::Lru);
    pressure(&ex).await;
    assert_eq!(resident(&ex, &["t/b", "t/c"]).await, ["t/b", "t/c"], "a, used longest ago, was evicted");
    assert!(!cold(&ex, "b", 7).await, "b stayed resident");
    assert!(cold(&ex, "a", 8).await, "a is loaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdsf_evicts_the_least_frequently_used_function() {
    let ex = executor_with(Eviction::Gdsf);
    pressure(&ex).await;
    assert_eq!(resident(&ex, &["t/a", "t/c"]).await, ["t/a", "t/c"], "b, used once, was evicted");
    assert!(!cold(&ex, "a", 7).await, "a stayed resident");
    assert!(cold(&ex, "b", 8).await, "b is loaded again");
}
