//! Kernel granularity: a short high-priority function is not stuck behind a long graph
//! of another tenant on the same device.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kaas_executor::proto::BufferKind::Output;
use kaas_scheduler::Granularity;

async fn short_finishes_before_long(granularity: Granularity) -> (Duration, Duration) {
    let ex = executor(1 << 30, 1, "edf", vec![]);
    let mut cfg = kaas_scheduler::SchedulerConfig::new(kaas_scheduler::PolicyConfig::named("edf"));
    cfg.granularity = granularity;
    ex.set_scheduler(cfg).await.unwrap();
    // Four kernels of ~20 ms each (20 M loop iterations) for tenant "long"...
    let spin: (&str, u32, &[&str]) = ("spin", 1, &["b"]);
    let long = wat_function("long", TEST_KERNELS, &[("b", 4, Output)], &[spin; 4]);
    ex.put_function(def(long)).await.unwrap();
    // ...and one short kernel of a high-priority tenant.
    let mut short = wat_function("short", TEST_KERNELS, &[("b", 4, Output)], &[("trap", 1, &["b"])]);
    short.kernels[0].entry = "copy".into();
    short.buffers = vec![
        kaas_executor::proto::Buffer { name: "in".into(), size: 4, kind: 1, content: vec![] },
        kaas_executor::proto::Buffer { name: "b".into(), size: 4, kind: 2, content: vec![] },
    ];
    short.kernels[0].args = ["in", "b"]
        .iter()
        .map(|a| kaas_executor::proto::Arg {
            value: Some(kaas_executor::proto::arg::Value::Buffer(a.to_string())),
        })
        .collect();
    short.priority = 10;
    ex.put_function(def(short)).await.unwrap();
    // Warm both so load times do not blur the comparison.
    ex.preload("t/long", None).await.unwrap();
    ex.preload("t/short", None).await.unwrap();

    let start = Instant::now();
    let long_task = {
        let ex = ex.clone();
        tokio::spawn(
            async move { ex.execute("t/long", inputs(&[]), None, None).await.map(|_| start.elapsed()) },
        )
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let short_done = ex.execute("t/short", inputs(&[("in", vec![1, 2, 3, 4])]), None, None).await.unwrap();
    assert_eq!(short_done.outputs["b"][..], vec![1, 2, 3, 4]);
    let short_at = start.elapsed();
    let long_at = long_task.await.unwrap().unwrap();
    (short_at, long_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_high_priority_kernel_passes_a_long_graph_at_kernel_boundaries() {
    let (short, long) = short_finishes_before_long(Granularity::Kernel).await;
    println!("kernel granularity: short done at {short:?}, long at {long:?}");
    assert!(short < long, "short {short:?} should finish before the long graph {long:?}");
    // It waited for at most the running kernel, not for the whole graph.
    assert!(short < long.mul_f64(0.75), "short {short:?} vs long {long:?}");

    let (short, long) = short_finishes_before_long(Granularity::Request).await;
    println!("request granularity: short done at {short:?}, long at {long:?}");
    assert!(short >= long.mul_f64(0.9), "request granularity holds the device for the whole graph");
}
