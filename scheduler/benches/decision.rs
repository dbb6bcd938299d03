//! The scheduler's decision path under load: 1,000 devices in three classes, 100
//! functions, 10,000 queued requests. One decision = `next_dispatch` after a slot frees;
//! each iteration also completes one request and submits one so the queue stays full.
//!
//! Besides criterion's timing, the bench samples every decision and prints p50/p99 per
//! policy, with the ratio to a baseline measured in the same run: the cheapest possible
//! decision (pop a FIFO and take the lowest free device from the same bit set). The
//! `POLICY+deadline` rows run the same with `deadline` admission on and time the submit
//! (admission's prediction over the 10k queued) together with the decision.
//!
//! Run: `cargo bench -p kaas-scheduler --bench decision`

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use kaas_scheduler::devset::DeviceSet;
use kaas_scheduler::policy::{ParamValue, PartitionEntry};
use kaas_scheduler::*;

const DEVICES: usize = 1000;
const FUNCTIONS: usize = 100;
const QUEUED: usize = 10_000;

struct Bench {
    s: Scheduler,
    now: Nanos,
    running: VecDeque<ReqId>,
    next_fn: usize,
    samples: Vec<u32>,
    /// With `deadline` admission: then the timed part is the submit (admission's
    /// prediction) and the decision together.
    admission: bool,
}

fn cluster() -> Cluster {
    let mut c = Cluster::default();
    for (name, speed, slots, count) in [("h100", 1.0, 4, 200), ("a10", 0.5, 2, 300), ("cpu", 0.05, 2, 500)] {
        c.add_class(
            AcceleratorClass {
                name: name.into(),
                kind: if name == "cpu" { DeviceKind::Cpu } else { DeviceKind::Gpu },
                speed,
                memory_bytes: 16 << 30,
                slots,
                price_per_hour: speed * 4.0,
            },
            count,
        );
    }
    assert_eq!(c.devices.len(), DEVICES);
    c
}

impl Bench {
    fn new(policy: &str, admission: bool) -> Self {
        let mut cfg = PolicyConfig::named(policy);
        if policy == "static" {
            let parts = (0..50).map(|i| PartitionEntry { function: format!("f{i}"), devices: 10 }).collect();
            cfg.params.insert("partitions".into(), ParamValue::Partitions(parts));
        }
        let mut config = SchedulerConfig::new(cfg);
        if admission {
            config.admission = kaas_scheduler::AdmissionMode::Deadline;
        }
        let mut s = Scheduler::new(cluster(), config).unwrap();
        for i in 0..FUNCTIONS {
            let base = MS + (i as u64 % 7) * MS;
            let mut f = Function::uniform(&format!("f{i}"), 3, base, 20 * MS, 3600 * SEC);
            f.runtime = vec![Some(base), Some(base * 2), Some(base * 20)];
            f.resident_bytes = 256 << 20;
            f.weight = 1 + (i % 3) as u32;
            s.add_function(f).unwrap();
        }
        let mut b = Bench { s, now: 0, running: VecDeque::new(), next_fn: 0, samples: Vec::new(), admission };
        // Fill every slot (2,400), then the queue.
        let mut submitted = 0;
        while submitted - b.running.len() < QUEUED {
            b.submit();
            submitted += 1;
            while let Some(d) = b.s.next_dispatch(b.now) {
                b.running.push_back(d.id);
            }
        }
        assert_eq!(b.s.queued(), QUEUED, "{policy}");
        b
    }

    fn submit(&mut self) {
        let f = FunctionId((self.next_fn % FUNCTIONS) as u32);
        self.next_fn = self.next_fn.wrapping_mul(31).wrapping_add(17) % 1_000_003;
        self.s
            .submit(self.now, Request { function: f, arrival: self.now, deadline: self.now + 3600 * SEC })
            .unwrap();
    }

    /// One cycle; returns the time of the decision alone.
    fn cycle(&mut self) -> Duration {
        self.now += 1_000;
        if let Some(id) = self.running.pop_front() {
            self.s.complete(self.now, id);
        }
        let t = if self.admission {
            let t = Instant::now();
            self.submit();
            t
        } else {
            self.submit();
            Instant::now()
        };
        let d = self.s.next_dispatch(self.now);
        let took = t.elapsed();
        if let Some(d) = d {
            self.running.push_back(d.id);
            // Drain anything else that became possible (kernel continuations, drops).
            while let Some(d) = self.s.next_dispatch(self.now) {
                self.running.push_back(d.id);
            }
        }
        self.samples.push(took.as_nanos() as u32);
        took
    }
}

/// The floor: a FIFO pop and the lowest free device of a bit set of the same size.
struct Baseline {
    queue: VecDeque<u32>,
    free: DeviceSet,
    busy: VecDeque<DeviceId>,
    samples: Vec<u32>,
}

impl Baseline {
    fn new() -> Self {
        let mut free = DeviceSet::new(DEVICES);
        let mut busy = VecDeque::new();
        for d in 0..DEVICES as u32 {
            if d % 10 == 0 {
                free.insert(DeviceId(d));
            } else {
                busy.push_back(DeviceId(d));
            }
        }
        Baseline { queue: (0..QUEUED as u32).collect(), free, busy, samples: Vec::new() }
    }

    fn cycle(&mut self) -> Duration {
        let d = self.busy.pop_front().unwrap();
        self.free.insert(d);
        self.queue.push_back(7);
        let t = Instant::now();
        let r = self.queue.pop_front();
        let dev = self.free.first();
        let took = t.elapsed();
        black_box((r, dev));
        if let Some(dev) = dev {
            self.free.remove(dev);
            self.busy.push_back(dev);
        }
        self.samples.push(took.as_nanos() as u32);
        took
    }
}

fn pct(samples: &mut [u32], q: f64) -> u32 {
    samples.sort_unstable();
    samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let mut base = Baseline::new();
    group.bench_function("baseline-fifo-bitset", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| base.cycle()).sum())
    });
    let mut rows = Vec::new();
    for policy in POLICY_NAMES {
        let mut bench = Bench::new(policy, false);
        group.bench_function(policy, |b| b.iter_custom(|iters| (0..iters).map(|_| bench.cycle()).sum()));
        rows.push((policy.to_string(), bench.samples));
    }
    // With deadline admission: the submit (its prediction) is timed with the decision.
    for policy in POLICY_NAMES {
        let name = format!("{policy}+deadline");
        let mut bench = Bench::new(policy, true);
        group.bench_function(&name, |b| b.iter_custom(|iters| (0..iters).map(|_| bench.cycle()).sum()));
        rows.push((name, bench.samples));
    }
    group.finish();
    let mut base_samples = base.samples;
    let base_p50 = pct(&mut base_samples, 0.5).max(1) as f64;
    println!("\nper-decision latency, 10k queued, 1k devices ({} baseline samples)", base_samples.len());
    println!("{:<24} {:>9} {:>9} {:>12} {:>10}", "policy", "p50 ns", "p99 ns", "p50/base", "p99≤10µs");
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>10}",
        "baseline",
        base_p50,
        pct(&mut base_samples, 0.99),
        "1.0",
        "-"
    );
    for (policy, mut samples) in rows {
        let p50 = pct(&mut samples, 0.5);
        let p99 = pct(&mut samples, 0.99);
        println!(
            "{:<24} {:>9} {:>9} {:>12.1} {:>10}",
            policy,
            p50,
            p99,
            p50 as f64 / base_p50,
            if p99 <= 10_000 { "yes" } else { "NO" }
        );
    }
}

criterion_group!(benches, decisions);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
