//! Properties that must hold for every policy, admission mode and granularity on random
//! clusters and workloads: nothing lost or served twice, capacity and memory respected,
//! work conservation where promised, deadline admission consistent, determinism.

mod common;

use std::collections::BTreeMap;

use common::*;
use kaas_scheduler::policy::{ParamValue, PartitionEntry};
use kaas_scheduler::*;
use proptest::prelude::*;

/// runtimes per class (ms), load (ms), resident MiB, deadline (ms), weight, kernels
type FunctionCase = (Vec<Option<u64>>, u64, u64, u64, u32, usize);

#[derive(Debug, Clone)]
struct Case {
    classes: Vec<(u32, u64, f64, usize)>, // slots, memory (MiB), price, devices
    functions: Vec<FunctionCase>,
    arrivals: Vec<(u64, usize)>,
    policy: usize,
    admission: usize,
    granularity: bool,
    eviction: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let classes = prop::collection::vec((1u32..=3, 1u64..=8, 0.1f64..5.0, 1usize..=3), 1..=3);
    classes.prop_flat_map(|classes| {
        let n = classes.len();
        let function = (
            prop::collection::vec(prop::option::weighted(0.8, 1u64..=20), n),
            0u64..=10,
            1u64..=4,
            5u64..=200,
            1u32..=3,
            1usize..=3,
        );
        (
            Just(classes),
            prop::collection::vec(function, 1..=5),
            prop::collection::vec((0u64..=300, 0usize..5), 1..=60),
            0usize..7,
            0usize..3,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(classes, functions, arrivals, policy, admission, granularity, eviction)| {
                Case { classes, functions, arrivals, policy, admission, granularity, eviction }
            })
    })
}

fn build(c: &Case) -> (Scheduler, Vec<(Nanos, FunctionId)>) {
    let mut cluster = Cluster::default();
    for (i, &(slots, mib, price, count)) in c.classes.iter().enumerate() {
        cluster.add_class(
            AcceleratorClass {
                name: format!("c{i}"),
                kind: if i == 0 { DeviceKind::Gpu } else { DeviceKind::Cpu },
                speed: 1.0 / (i + 1) as f64,
                memory_bytes: mib << 20,
                slots,
                price_per_hour: price,
            },
            count,
        );
    }
    let name = POLICY_NAMES[c.policy];
    let mut policy = PolicyConfig::named(name);
    if name == "static" {
        policy.params.insert(
            "partitions".into(),
            ParamValue::Partitions(vec![PartitionEntry { function: "f0".into(), devices: 1 }]),
        );
    }
    let mut cfg = SchedulerConfig::new(policy);
    cfg.admission = [AdmissionMode::None, AdmissionMode::Deadline, AdmissionMode::TokenBucket][c.admission];
    cfg.granularity = if c.granularity { Granularity::Kernel } else { Granularity::Request };
    cfg.eviction = if c.eviction { Eviction::Lru } else { Eviction::Gdsf };
    let mut s = Scheduler::new(cluster, cfg).unwrap();
    let mut ids = Vec::new();
    for (i, (rts, load, mib, deadline, weight, kernels)) in c.functions.iter().enumerate() {
        let f = Function {
            name: format!("f{i}"),
            tenant: format!("t{}", i % 2),
            runtime: rts.iter().map(|r| r.map(msec)).collect(),
            load_time: vec![msec(*load); rts.len()],
            resident_bytes: mib << 20,
            working_bytes: 1 << 18,
            deadline: msec(*deadline),
            weight: *weight,
            priority: (i % 2) as i32,
            kernel_shares: vec![1.0 / *kernels as f64; *kernels],
            reserved_rate: Some(50.0),
        };
        ids.push(s.add_function(f).unwrap());
    }
    let mut arrivals: Vec<(Nanos, FunctionId)> =
        c.arrivals.iter().map(|&(t, f)| (msec(t), ids[f % ids.len()])).collect();
    arrivals.sort_by_key(|a| a.0);
    (s, arrivals)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_request_answered_once_and_limits_hold(c in case()) {
        let (mut s, arrivals) = build(&c);
        let n_dev = s.cluster().devices.len();
        let slots: Vec<u32> = (0..n_dev).map(|d| s.cluster().class_of(DeviceId(d as u32)).slots).collect();
        let mut violations = Vec::new();
        let trace = run_checked(&mut s, &arrivals, &mut |s, now, waiting| {
            for (d, &max) in slots.iter().enumerate() {
                let dev = DeviceId(d as u32);
                let (used, cap) = s.memory(dev);
                if used > cap {
                    violations.push(format!("t={now} device {d} memory {used} > {cap}"));
                }
                if s.free_slots(dev) > max {
                    violations.push(format!("t={now} device {d} free slots {} > {max}", s.free_slots(dev)));
                }
            }
            if s.work_conserving() {
                let queued: BTreeMap<ReqId, FunctionId> = s.waiting().into_iter().collect();
                for (id, _) in waiting {
                    let Some(&f) = queued.get(id) else { continue };
                    for d in 0..n_dev {
                        if s.feasible_now(f, DeviceId(d as u32), now) {
                            violations.push(format!("t={now} {} idles device {d} while {id:?} ({f:?}) waits", s.policy_name()));
                        }
                    }
                }
            }
        });
        prop_assert!(violations.is_empty(), "{:?}", &violations[..violations.len().min(5)]);
        let mut ends = vec![0u32; arrivals.len()];
        let mut started = vec![false; arrivals.len()];
        for e in &trace {
            match e {
                Ev::Done { req, .. } | Ev::Dropped { req, .. } | Ev::Rejected { req, .. } => ends[*req] += 1,
                Ev::Run { req, kernel, .. } => {
                    if *kernel == 0 {
                        prop_assert!(!started[*req], "request {} started twice", req);
                        started[*req] = true;
                    }
                }
                Ev::Warmup { .. } => {}
            }
        }
        let rejected: Vec<usize> = trace.iter().filter_map(|e| match e { Ev::Rejected { req, .. } => Some(*req), _ => None }).collect();
        for r in rejected {
            prop_assert!(!started[r], "rejected request {} ran", r);
        }
        for (i, n) in ends.iter().enumerate() {
            prop_assert_eq!(*n, 1, "request {} ended {} times ({})", i, n, s.policy_name());
        }
        prop_assert_eq!(s.queued(), 0);
    }

    #[test]
    fn deadline_admission_admits_only_predicted_hits(c in case()) {
        let mut c = c;
        c.admission = 1;
        let (mut s, arrivals) = build(&c);
        // Drive by hand: at each arrival compare the prediction with the decision.
        let mut now;
        let mut running: Vec<(Nanos, ReqId)> = Vec::new();
        // Per function: when a request predicted to miss was last let through (a probe).
        let mut probed: std::collections::HashMap<u32, Nanos> = Default::default();
        for &(t, f) in &arrivals {
            running.sort();
            while running.first().is_some_and(|r| r.0 <= t) {
                let (end, id) = running.remove(0);
                now = end;
                s.complete(now, id);
                while let Some(d) = s.next_dispatch(now) { running.push((now + d.load + d.expected, d.id)); }
                running.sort();
            }
            now = t;
            let deadline = t + s.functions()[f.0 as usize].deadline;
            let predicted = s.predict_completion(f, deadline, now).unwrap_or(Nanos::MAX);
            // Admission keeps at least the configured 10 % of the relative deadline as
            // headroom, more while its predictions have run late (the learned margin).
            let headroom = s.deadline_headroom();
            prop_assert!((0.1..=kaas_scheduler::margin::CEILING).contains(&headroom), "headroom {}", headroom);
            let slack = ((deadline - t) as f64 * headroom) as Nanos;
            match s.submit(now, Request { function: f, arrival: t, deadline }) {
                Ok(_) if predicted + slack <= deadline => {}
                // A probe: at most one per function per second.
                Ok(_) => {
                    let last = probed.insert(f.0, now);
                    prop_assert!(
                        last.is_none_or(|l| now >= l + kaas_scheduler::SEC),
                        "admitted with predicted {} > deadline {}, {:?} after the last probe", predicted, deadline, last.map(|l| now - l)
                    );
                }
                Err(Rejection::DeadlineUnmeetable { predicted: p, .. }) => {
                    prop_assert_eq!(p, predicted);
                    prop_assert!(p + slack > deadline);
                }
                Err(Rejection::Warming { .. }) => prop_assert!(predicted + slack > deadline),
                Err(_) => {}
            }
            while let Some(d) = s.next_dispatch(now) { running.push((now + d.load + d.expected, d.id)); }
            s.take_dropped();
        }
    }

    #[test]
    fn same_input_same_decisions(c in case()) {
        let (mut a, arrivals) = build(&c);
        let (mut b, _) = build(&c);
        prop_assert_eq!(run(&mut a, &arrivals), run(&mut b, &arrivals));
    }
}

#[test]
fn a_device_failure_returns_its_requests_and_keeps_the_rest() {
    let mut s =
        Scheduler::new(gpus(2, 1, 1 << 30), SchedulerConfig::new(PolicyConfig::named("balance"))).unwrap();
    let f = s.add_function(Function::uniform("f", 1, msec(10), 0, msec(100))).unwrap();
    let ids: Vec<ReqId> = (0..3)
        .map(|_| s.submit(0, Request { function: f, arrival: 0, deadline: msec(100) }).unwrap())
        .collect();
    let d0 = s.next_dispatch(0).unwrap();
    let d1 = s.next_dispatch(0).unwrap();
    assert!(s.next_dispatch(0).is_none());
    let lost = s.set_device_health(d0.device, false);
    assert_eq!(lost.iter().map(|l| l.id).collect::<Vec<_>>(), vec![d0.id]);
    // The lost request's handle is dead; the third request waits for device 1.
    assert_eq!(s.complete(msec(1), d0.id), None);
    assert!(s.next_dispatch(msec(1)).is_none());
    assert_eq!(s.complete(msec(10), d1.id), Some(Completed::Request));
    let d2 = s.next_dispatch(msec(10)).unwrap();
    assert_eq!((d2.id, d2.device), (ids[2], d1.device));
    // The device comes back and serves again.
    s.set_device_health(d0.device, true);
    let again = s.submit(msec(11), Request { function: f, arrival: msec(11), deadline: msec(200) }).unwrap();
    assert_eq!(s.next_dispatch(msec(11)).map(|d| (d.id, d.device)), Some((again, d0.device)));
}

#[test]
fn live_policy_switch_keeps_waiting_requests_in_order() {
    let mut s =
        Scheduler::new(gpus(1, 1, 1 << 30), SchedulerConfig::new(PolicyConfig::named("edf"))).unwrap();
    let f = s.add_function(Function::uniform("f", 1, msec(10), 0, msec(100))).unwrap();
    let ids: Vec<ReqId> = (0..4)
        .map(|i| {
            s.submit(msec(i), Request { function: f, arrival: msec(i), deadline: msec(100 - i * 10) })
                .unwrap()
        })
        .collect();
    let first = s.next_dispatch(msec(3)).unwrap();
    assert_eq!(first.id, ids[3]); // EDF: the latest arrival has the earliest deadline
    s.set_policy(msec(4), PolicyConfig::named("balance")).unwrap();
    assert_eq!(s.policy_name(), "balance");
    s.complete(msec(13), first.id);
    let order: Vec<ReqId> = (0..3)
        .map(|i| {
            let d = s.next_dispatch(msec(13 + i * 10)).unwrap();
            s.complete(msec(23 + i * 10), d.id);
            d.id
        })
        .collect();
    assert_eq!(order, ids[..3].to_vec()); // FIFO from now on
}

#[test]
fn cancelled_requests_are_never_dispatched() {
    let mut s =
        Scheduler::new(gpus(1, 1, 1 << 30), SchedulerConfig::new(PolicyConfig::named("cfs-affinity")))
            .unwrap();
    let f = s.add_function(Function::uniform("f", 1, msec(10), 0, msec(100))).unwrap();
    let a = s.submit(0, Request { function: f, arrival: 0, deadline: msec(100) }).unwrap();
    let b = s.submit(0, Request { function: f, arrival: 0, deadline: msec(100) }).unwrap();
    let c = s.submit(0, Request { function: f, arrival: 0, deadline: msec(100) }).unwrap();
    assert_eq!(s.next_dispatch(0).unwrap().id, a);
    assert!(s.cancel(b));
    assert!(!s.cancel(b));
    assert!(!s.cancel(a), "running requests cannot be cancelled");
    s.complete(msec(10), a);
    assert_eq!(s.next_dispatch(msec(10)).unwrap().id, c);
}

#[test]
fn updating_a_running_function_keeps_memory_accounting_exact() {
    // A function's working size changes while an invocation holds the old one: the
    // invocation gives back what it took, in whole-request and kernel granularity.
    for granularity in [Granularity::Request, Granularity::Kernel] {
        let mut config = SchedulerConfig::new(PolicyConfig::named("balance"));
        config.granularity = granularity;
        let mut s = Scheduler::new(gpus(1, 2, 1 << 30), config).unwrap();
        let mut small = Function::uniform("f", 1, msec(10), 0, msec(100));
        small.kernel_shares = vec![0.5, 0.5];
        small.resident_bytes = 1000;
        small.working_bytes = 100;
        let f = s.add_function(small.clone()).unwrap();
        let d = DeviceId(0);
        s.submit(0, Request { function: f, arrival: 0, deadline: msec(100) }).unwrap();
        let first = s.next_dispatch(0).unwrap();
        assert_eq!(s.memory(d).0, 1100);
        let mut big = small.clone();
        big.working_bytes = 5000;
        s.update_function(f, big).unwrap();
        // A second invocation takes the new size alongside the first's old one.
        s.submit(1, Request { function: f, arrival: 1, deadline: msec(100) }).unwrap();
        let second = s.next_dispatch(1).unwrap();
        assert_eq!(s.memory(d).0, 1000 + 100 + 5000);
        // Run both to the end (kernel by kernel where that is the granularity).
        let mut live = vec![first, second];
        let mut now = 2;
        while let Some(dispatch) = live.pop() {
            now += 10;
            if s.complete(now, dispatch.id) == Some(Completed::Kernel) {
                live.push(s.next_dispatch(now).expect("next kernel"));
            }
        }
        assert_eq!(s.memory(d).0, 1000, "{granularity:?}: only the resident state stays");
    }
}

mod scale_from_zero {
    use super::*;
    use kaas_scheduler::AdmissionMode;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Issue 13, point 2: functions resident nowhere whose loads take longer than
        /// their deadlines are loaded anyway (a warm-up), and each is served once its
        /// load completes, under every built-in policy.
        #[test]
        fn every_cold_function_is_served_once_loaded(
            devices in 1usize..4,
            funcs in prop::collection::vec((1u64..10, 50u64..500, 20u64..200), 1..4),
            gaps in prop::collection::vec(1u64..40, 40..120),
            policy in prop::sample::select(vec!["balance", "edf", "slo-aware", "mqfq-sticky", "cfs-affinity", "exclusive"]),
        ) {
            let mut config = SchedulerConfig::new(PolicyConfig::named(policy));
            config.admission = AdmissionMode::Deadline;
            // Exclusive workers with more tenants than devices take turns by design (each
            // steal flushes the last owner: the KaaS collapse), so give each its own.
            let devices = if policy == "exclusive" { devices.max(funcs.len()) } else { devices };
            let mut s = Scheduler::new(gpus(devices, 2, 1 << 34), config).unwrap();
            let ids: Vec<FunctionId> = funcs
                .iter()
                .enumerate()
                .map(|(i, &(run, load, deadline))| {
                    let deadline = deadline.max(run * 3);
                    s.add_function(Function::uniform(&format!("f{i}"), 1, msec(run), msec(load), msec(deadline))).unwrap()
                })
                .collect();
            let mut t = 0;
            let mut arrivals = Vec::new();
            for (k, g) in gaps.iter().enumerate() {
                t += msec(*g);
                arrivals.push((t, ids[k % ids.len()]));
            }
            // Then a quiet second, and every function again.
            t += msec(1000) + msec(funcs.iter().map(|f| f.1).max().unwrap());
            for (k, &f) in ids.iter().enumerate() {
                arrivals.push((t + msec(k as u64 * 50), f));
            }
            let last = arrivals.len() - ids.len();
            let trace = run(&mut s, &arrivals);
            let mut served = vec![false; ids.len()];
            for e in &trace {
                if let Ev::Done { req, .. } = e
                    && *req >= last
                {
                    served[*req - last] = true;
                }
            }
            prop_assert!(served.iter().all(|&x| x), "{policy}: served after loading {:?}", served);
            // A load longer than the deadline cannot ride on a request: it needs a warm-up.
            let warmups = trace.iter().filter(|e| matches!(e, Ev::Warmup { .. })).count();
            if funcs.iter().any(|&(run, load, deadline)| load > deadline.max(run * 3)) {
                prop_assert!(warmups >= 1, "no warm-up started");
            }
        }
    }

    /// The first request of a cold function is told to retry when it will be warm.
    #[test]
    fn a_cold_request_is_rejected_as_warming_with_the_time_until_warm() {
        let mut config = SchedulerConfig::new(PolicyConfig::named("edf"));
        config.admission = AdmissionMode::Deadline;
        let mut s = Scheduler::new(gpus(1, 1, 1 << 30), config).unwrap();
        let f = s.add_function(Function::uniform("f", 1, msec(5), msec(300), msec(50))).unwrap();
        let err = s.submit(0, Request { function: f, arrival: 0, deadline: msec(50) }).unwrap_err();
        assert!(matches!(err, Rejection::Warming { retry_after, .. } if retry_after == msec(300)), "{err:?}");
        assert!(err.to_string().contains("warming"), "{err}");
        let d = s.next_dispatch(0).expect("the warm-up starts");
        assert!(d.warmup && d.cold && d.load == msec(300) && d.expected == 0, "{d:?}");
        // While loading, a request whose deadline covers the rest of the load is admitted.
        let id =
            s.submit(msec(280), Request { function: f, arrival: msec(280), deadline: msec(330) }).unwrap();
        assert_eq!(s.complete(msec(300), d.id), Some(Completed::Warmup));
        let next = s.next_dispatch(msec(300)).unwrap();
        assert_eq!((next.id, next.cold), (id, false));
    }

    /// Warm where a warm run is too slow: a function loaded on a CPU device, whose
    /// deadline only a GPU run makes, is loaded onto the GPU (the warm-up goes to the
    /// class where a warm run meets the deadline, not where the load is shortest), and
    /// once it is warm there its requests are admitted and run there, for every policy.
    #[test]
    fn a_warm_up_goes_to_the_class_whose_warm_run_meets_the_deadline() {
        for policy in ["balance", "edf", "slo-aware", "mqfq-sticky", "cfs-affinity"] {
            let mut cluster = gpus(1, 1, 1 << 34);
            cluster.add_class(
                kaas_scheduler::model::AcceleratorClass {
                    name: "cpu".into(),
                    kind: kaas_scheduler::model::DeviceKind::Cpu,
                    speed: 0.1,
                    memory_bytes: 1 << 34,
                    slots: 1,
                    price_per_hour: 0.1,
                },
                1,
            );
            let mut config = SchedulerConfig::new(PolicyConfig::named(policy));
            config.admission = AdmissionMode::Deadline;
            let mut s = Scheduler::new(cluster, config).unwrap();
            let mut f = Function::uniform("f", 2, msec(4), msec(500), msec(20));
            f.runtime = vec![Some(msec(4)), Some(msec(40))];
            f.load_time = vec![msec(500), msec(60)];
            let f = s.add_function(f).unwrap();
            let (gpu, cpu) = (kaas_scheduler::model::DeviceId(0), kaas_scheduler::model::DeviceId(1));
            assert!(s.preload(0, f, cpu));
            let err = s.submit(0, Request { function: f, arrival: 0, deadline: msec(20) }).unwrap_err();
            assert!(
                matches!(err, Rejection::Warming { retry_after, .. } if retry_after == msec(500)),
                "{policy}: {err:?}"
            );
            let d = s.next_dispatch(0).expect("the warm-up starts");
            assert!(d.warmup && d.device == gpu && d.load == msec(500), "{policy}: {d:?}");
            assert_eq!(s.complete(msec(500), d.id), Some(Completed::Warmup));
            let id = s
                .submit(msec(600), Request { function: f, arrival: msec(600), deadline: msec(620) })
                .unwrap();
            let run = s.next_dispatch(msec(600)).expect("served warm");
            assert_eq!((run.id, run.device, run.cold), (id, gpu, false), "{policy}");
        }
    }

    /// Scaling out from zero is not one load at a time: while a function's warm-up is
    /// loading, each request rejected for it loads it onto one more idle device that has
    /// the memory to spare (what cold starts on idle devices would do without admission),
    /// never onto a device that would have to evict another function's state; and not at
    /// all under `exclusive`, whose devices belong to one function each.
    #[test]
    fn scaling_out_loads_onto_idle_devices_with_memory_to_spare() {
        for policy in ["balance", "edf", "slo-aware", "mqfq-sticky", "cfs-affinity", "exclusive"] {
            let mut config = SchedulerConfig::new(PolicyConfig::named(policy));
            config.admission = AdmissionMode::Deadline;
            // Four 1 GiB devices; the last holds another function's 768 MiB.
            let mut s = Scheduler::new(gpus(4, 1, 1 << 30), config).unwrap();
            let mut big = Function::uniform("big", 1, msec(5), msec(10), msec(1000));
            big.resident_bytes = 768 << 20;
            let big = s.add_function(big).unwrap();
            assert!(s.preload(0, big, kaas_scheduler::model::DeviceId(3)));
            let mut f = Function::uniform("f", 1, msec(5), msec(300), msec(50));
            f.resident_bytes = 512 << 20;
            let f = s.add_function(f).unwrap();
            let mut loads = Vec::new();
            for k in 0..4 {
                let t = msec(k);
                let err =
                    s.submit(t, Request { function: f, arrival: t, deadline: t + msec(50) }).unwrap_err();
                // The first is told when it will be warm; the later ones may be told they
                // miss (`slo-aware` predicts them behind the load on the warming device).
                let told = matches!(err, Rejection::Warming { .. })
                    || (k > 0 && matches!(err, Rejection::DeadlineUnmeetable { .. }));
                assert!(told, "{policy}: {err:?}");
                while let Some(d) = s.next_dispatch(t) {
                    assert!(d.warmup && d.cold, "{policy}: {d:?}");
                    loads.push(d.device.0);
                }
            }
            loads.sort_unstable();
            if policy == "exclusive" {
                assert_eq!(loads.len(), 1, "{policy}: one load, no replicas: {loads:?}");
            } else {
                assert_eq!(loads, [0, 1, 2], "{policy}: every idle device with room, not the full one");
            }
        }
    }
}

/// Deadline admission never shuts a function out on its model alone (a runtime learned
/// from a few slow runs, or a stale profile): a request refused only for its own predicted
/// runtime — it would start now, warm, with nothing ahead — is let through once per ten
/// predicted runtimes (at least a second), so the function keeps being measured, and once
/// the model is fast again every request is admitted.
#[test]
fn a_function_refused_for_its_own_runtime_is_probed_and_recovers() {
    // `static` needs partitions naming the functions; the rest run as configured.
    for policy in kaas_scheduler::POLICY_NAMES.into_iter().filter(|p| *p != "static") {
        let mut config = SchedulerConfig::new(PolicyConfig::named(policy));
        config.admission = AdmissionMode::Deadline;
        let mut s = Scheduler::new(gpus(1, 1, 1 << 30), config).unwrap();
        // Believed to take 150 ms; the deadline is 100 ms.
        let slow = Function::uniform("f", 1, msec(150), msec(10), msec(100));
        let f = s.add_function(slow.clone()).unwrap();
        assert!(s.preload(0, f, kaas_scheduler::model::DeviceId(0)));
        let mut admitted = Vec::new();
        // A request every 50 ms for 4 s; each admitted one runs 1 ms (the model is wrong).
        for k in 0..80u64 {
            let t = msec(50 * k);
            if let Ok(id) = s.submit(t, Request { function: f, arrival: t, deadline: t + msec(100) }) {
                admitted.push(t / msec(1));
                let d =
                    s.next_dispatch(t).unwrap_or_else(|| panic!("{policy}: the probe at {t} did not start"));
                assert_eq!(d.id, id);
                assert_eq!(s.complete(t + msec(1), id), Some(Completed::Request));
            }
        }
        // 10 × 150 ms apart: at 0, 1.5 s and 3 s.
        assert_eq!(admitted, [0, 1500, 3000], "{policy}");
        // What the probes measured reaches the model: every request is admitted again.
        let mut fast = slow.clone();
        fast.runtime = vec![Some(msec(1))];
        s.update_function(f, fast).unwrap();
        for k in 80..90u64 {
            let t = msec(50 * k);
            let id = s
                .submit(t, Request { function: f, arrival: t, deadline: t + msec(100) })
                .unwrap_or_else(|e| panic!("{policy}: {e:?}"));
            s.next_dispatch(t).unwrap();
            s.complete(t + msec(1), id);
        }
    }
}

/// Submits three requests of `f` at `at`, starting each one admitted at once; returns
/// how many were admitted and their ids.
fn burst_of_three(s: &mut Scheduler, f: FunctionId, at: Nanos) -> (usize, Vec<ReqId>) {
    let mut running = Vec::new();
    for _ in 0..3 {
        if s.submit(at, Request { function: f, arrival: at, deadline: at + msec(15) }).is_ok() {
            running.push(s.next_dispatch(at).expect("an admitted request starts on a free slot").id);
        }
    }
    (running.len(), running)
}

#[test]
fn static_admission_follows_a_live_repartition() {
    // `static` with deadline admission predicts from the slots its partitions hold, kept
    // as work starts and ends (test builds check them against the devices on every
    // prediction): a new layout must be what the next arrival is judged on.
    let partitions = |n: u32| {
        let mut p = PolicyConfig::named("static");
        let parts = vec![PartitionEntry { function: "f0".into(), devices: n }];
        p.params.insert("partitions".into(), ParamValue::Partitions(parts));
        p
    };
    let mut cfg = SchedulerConfig::new(partitions(1));
    cfg.admission = AdmissionMode::Deadline;
    let mut s = Scheduler::new(gpus(4, 1, 1 << 30), cfg).unwrap();
    let f0 = s.add_function(Function::uniform("f0", 1, msec(10), 0, msec(15))).unwrap();
    let f1 = s.add_function(Function::uniform("f1", 1, msec(10), 0, msec(15))).unwrap();
    for d in 0..4 {
        s.preload(0, f0, DeviceId(d));
        s.preload(0, f1, DeviceId(d));
    }
    for (at, f0_devices, f0_admitted, f1_admitted) in
        [(0, 1, 1, 3), (msec(100), 3, 3, 1), (msec(200), 2, 2, 2)]
    {
        if at > 0 {
            s.set_policy(at, partitions(f0_devices)).unwrap();
        }
        // f0 runs on its own devices (a second request on one device would finish at
        // 20 ms, past its 15 ms deadline); f1 shares the rest.
        let (n0, r0) = burst_of_three(&mut s, f0, at);
        let (n1, r1) = burst_of_three(&mut s, f1, at);
        assert_eq!((n0, n1), (f0_admitted, f1_admitted), "with {f0_devices} of 4 devices for f0");
        for id in r0.into_iter().chain(r1) {
            assert!(s.complete(at + msec(10), id).is_some());
        }
    }
    assert!(s.is_quiet(), "everything admitted ran");
}
