//! Issue 14, point 3: the live path runs what the simulator evaluates.
//!
//! One workload — Poisson arrivals of two functions, a short one (~10 ms, 60 ms
//! deadline) and a long one (~30 ms, 300 ms deadline), at 0.7× and 2× the capacity — is
//! replayed through standalone mode (one gateway, two executor processes of one slot
//! each) and through `kaas-sim` with the matching `topology: per-node` scenario: two
//! nodes, the same arrivals as a CSV trace, each request with the service time it had
//! live, each function's profile as declared to the executors, learned as the executors
//! learn (`learnRuntimes`). The executors' learned runtimes and admission margins carry
//! over from the warm-up and every cell before, so each cell is simulated as the end of
//! the whole session: every request the executors saw, in order. For `slo-aware` and `mqfq-sticky`
//! with `deadline` admission, SLO attainment (rejections count as misses) agrees within
//! 5 points and the mean wait within 25 %, or 1 ms where that is more, of what the
//! simulation gives with its measured inputs or with any of them moved within the
//! precision of its measurement (see [`VARIANTS`]) (live: the wait in
//! the executors' queues, as they measured it; see [`WAIT_FLOOR_MS`]). The simulation replays the arrivals as they were sent (a loaded
//! client sends a few ms late now and then), and takes the way from the gateway to an
//! executor and back out of each deadline as the live path does (`hopMs`: half the median
//! time the replay's answers spent outside the executors).
//!
//! The kernels spin ~1 ms and ~3 ms and the executors stretch them tenfold by sleeping
//! (`--emulate-slowdown 10`): a slot is held as long as a 10 or 30 ms kernel holds it, and
//! what the executors serve does not depend on how many processes compete for this
//! machine's two cores.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use kaas_e2e::binary;
use kaas_e2e::standalone::*;
use kaas_sim::rng::Rng;
use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::{RunResult, simulate};

const SLOWDOWN: f64 = 10.0;
/// How long the test waits after a replay's last answer before the next arrivals: longer
/// than any deadline, so that the simulated queues drain too.
const QUIET: Duration = Duration::from_millis(500);
/// The least disagreement in mean wait that counts: live waits run ~0.5-1 ms above
/// simulated whatever their size (the gateway's routing and the hops' jitter on two cores
/// shared by five processes; an executor starts a request on a free slot in ~0.01 ms), so
/// a 2 ms wait, which slo-aware at 0.7x sometimes has, cannot be held to 25 % (a CI run:
/// 3.29 live, 2.63 simulated, and 4.11 / 2.96, 1.96 / 1.47 in its replays).
const WAIT_FLOOR_MS: f64 = 1.0;
/// How the simulation's inputs are varied within what the live measurements can resolve.
#[derive(Clone, Copy)]
struct Variant {
    /// Factor on the measured hop.
    hop: f64,
    /// Shift of every service time, in units of the slot time the answers do not split.
    shift: f64,
}

/// The simulation as measured first, then with each input moved by what its measurement
/// cannot tell apart: every service time by the part of it the answers do not attribute
/// (the gateway's figure less the kernels' time: buffers and instances, which hold the
/// slot, and the way back, which does not), and the hops by half (a median standing for
/// a long-tailed spread). Where the simulated outcome swings with these, as deadline
/// admission on the edge of its deadlines does (a run at 2x: a 0.35 ms shift of every
/// service time moved mqfq-sticky's simulated attainment from 0.41 to 0.50), live and
/// simulated are compared against the whole swing; elsewhere it is a point or two wide.
const VARIANTS: [Variant; 5] = [
    Variant { hop: 1.0, shift: 0.0 },
    Variant { hop: 1.0, shift: -1.0 },
    Variant { hop: 1.0, shift: 1.0 },
    Variant { hop: 0.5, shift: 0.0 },
    Variant { hop: 1.5, shift: 0.0 },
];
/// The least shift of service times the variants use.
const MIN_UNSPLIT_MS: f64 = 0.1;
/// The widest swing of simulated attainment across [`VARIANTS`] that still makes a
/// comparison (the widest seen: 10 points, mqfq-sticky at 0.7x with two CPU hogs); a
/// wider one fails the cell rather than letting any live figure pass.
const MAX_BAND: f64 = 0.2;
/// How often a cell that disagrees is replayed with fresh arrivals.
const MAX_REPLAYS: u64 = 2;
/// Share of each deadline deadline admission keeps in reserve, live and simulated.
const HEADROOM: f64 = 0.25;

/// Poisson arrivals at `rate`/s for `secs`, each of function 0 or 1 with equal chance.
fn poisson(rate: f64, secs: f64, seed: u64) -> Vec<(f64, usize)> {
    let mut rng = Rng::seed_from_u64(seed);
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        t += rng.exp1() / rate;
        if t >= secs {
            return out;
        }
        out.push((t, (rng.next_u64() & 1) as usize));
    }
}

/// How long a served request held its slot, from the answer's timings: the gateway's
/// total less the wait it reported (the executor's queue and the hops to it).
fn service_ms(o: &Outcome) -> f64 {
    (o.server_ms - o.queue_ms).max(0.01)
}

/// The matching simulation: two nodes of one CPU device with one slot, the functions as
/// declared to the executors, resident on both nodes, learning runtimes as the executors
/// do, and the same trace: every request the executors saw so far, at the time it was
/// sent, each with the service time it had live (one not served live takes one measured
/// in the warm-up before it).
fn scenario(
    dir: &Path,
    classes: &[Class],
    policy: &str,
    trace: &[(f64, usize, f64)],
    hop_ms: f64,
) -> Scenario {
    let mut csv = String::from("function,arrival_ms,duration_ms\n");
    for &(t, f, d) in trace {
        writeln!(csv, "{},{:.3},{d:.3}", classes[f].name, t * 1000.0).unwrap();
    }
    std::fs::write(dir.join("trace.csv"), csv).unwrap();
    let mut y = format!(
        "name: live-vs-sim\nseed: 1\ntopology: per-node\nreportIntervalMs: 20\nhopMs: {hop_ms:.3}\n\
         cluster: [{{ name: cpu, kind: CPU, memoryBytes: 1073741824, slotsPerDevice: 1, count: 2, devicesPerNode: 1 }}]\n\
         policy: {{ name: {policy} }}\nadmission: deadline\ndeadlineHeadroom: {HEADROOM}\ngranularity: request\n\
         learnRuntimes: true\n\
         workload: {{ trace: {{ format: csv, path: trace.csv }} }}\nfunctions:\n"
    );
    for c in classes {
        writeln!(
            y,
            "  - {{ name: {}, slo: {{ deadlineMs: {} }}, profile: [{{ acceleratorClass: cpu, runtimeMs: {:.3}, loadMs: 5 }}], prewarm: 2 }}",
            c.name, c.deadline_ms, c.runtime_ms
        )
        .unwrap();
    }
    let path = dir.join("scenario.yaml");
    std::fs::write(&path, y).unwrap();
    Scenario::load(&path).unwrap()
}

/// What one cell of a simulation of the whole session did: the difference between the
/// simulation up to the end of the cell and the one up to its start (the queues drain
/// between cells, so the prefix plays out alike in both).
struct Cell {
    attainment: f64,
    wait_ms: f64,
    /// Per function: rejected, late.
    per_function: Vec<(u64, u64)>,
}

impl Cell {
    fn between(before: &RunResult, after: &RunResult, requests: usize) -> Cell {
        let (b, a) = (&before.report, &after.report);
        let (started_a, started_b) = ((a.completed + a.failed) as f64, (b.completed + b.failed) as f64);
        let waited = started_a - started_b;
        let wait_ms = if waited > 0.0 {
            (a.wait_ms.mean * started_a - b.wait_ms.mean * started_b) / waited
        } else {
            0.0
        };
        let per_function = (0..after.per_function.len())
            .map(|f| {
                let (b, a) = (&before.per_function[f].1, &after.per_function[f].1);
                (a.rejected - b.rejected, (a.completed - a.slo_met) - (b.completed - b.slo_met))
            })
            .collect();
        Cell { attainment: (a.slo_met - b.slo_met) as f64 / requests.max(1) as f64, wait_ms, per_function }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// (SLO attainment over all requests, the mean wait of the served ones in an executor's
/// queue in ms).
fn live_figures(outcomes: &[Outcome], classes: &[Class]) -> (f64, f64) {
    let met = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.server_ms <= classes[o.function].deadline_ms as f64)
        .count();
    let served: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let wait = served.iter().map(|o| o.node_queue_ms).sum::<f64>() / served.len().max(1) as f64;
    (met as f64 / outcomes.len().max(1) as f64, wait)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_agrees_with_the_per_node_simulation() {
    let exec_bin = binary("kaas-executor", "kaas-executor").unwrap();
    let op_bin = binary("kaas-operator", "kaas-operator").unwrap();
    let slow = SLOWDOWN.to_string();
    let (_a, a) = start_executor_with(&exec_bin, "node-a", &["--emulate-slowdown", &slow]);
    let (_b, b) = start_executor_with(&exec_bin, "node-b", &["--emulate-slowdown", &slow]);
    let dir = tempfile::tempdir().unwrap();
    let ms_per_million = calibrate(&op_bin, dir.path(), std::slice::from_ref(&a)).await / SLOWDOWN;
    println!("calibration: {ms_per_million:.3} ms per million iterations (before the slowdown)");
    let iterations = |ms: f64| ((ms / SLOWDOWN / ms_per_million) * 1e6) as u64;
    let classes = [
        Class { name: "short", iterations: iterations(10.0), runtime_ms: 13.0, deadline_ms: 60 },
        Class { name: "long", iterations: iterations(30.0), runtime_ms: 39.0, deadline_ms: 300 },
    ];
    let mut table = String::from(
        "policy       load  live attainment  sim attainment  sim band %  live wait ms  sim wait ms  hop ms\n",
    );
    let mut failures = Vec::new();
    // Every request the executors served or refused, in order: their learned runtimes
    // and admission margins carry over from one cell, and one gateway, to the next, so
    // each cell is simulated as the end of the whole session (see `Cell`).
    let epoch = Instant::now();
    let mut history: Vec<(f64, usize, f64)> = Vec::new();
    let record = |history: &mut Vec<(f64, usize, f64)>, outcomes: &[Outcome], samples: &[Vec<f64>]| {
        for (i, o) in outcomes.iter().enumerate() {
            let f = o.function;
            let d = if o.status == 200 { service_ms(o) } else { samples[f][i % samples[f].len()] };
            history.push(((o.sent - epoch).as_secs_f64(), f, d));
        }
    };
    for (p, policy) in ["slo-aware", "mqfq-sticky"].into_iter().enumerate() {
        write_functions_with(dir.path(), &classes, policy, "deadline", None, HEADROOM);
        let (_gw, addr) = start_gateway(&op_bin, dir.path(), &[a.clone(), b.clone()]);
        // Warm-up at a third of the capacity: both functions become resident on both
        // nodes, the executors learn what the kernels take, and so do we.
        let warm = load(&addr, &classes, 30.0, 3.0, None).await;
        let samples: Vec<Vec<f64>> = (0..classes.len())
            .map(|f| warm.iter().filter(|o| o.function == f && o.status == 200).map(service_ms).collect())
            .collect();
        assert!(samples.iter().all(|s| s.len() >= 20), "warm-up requests served");
        record(&mut history, &warm, &samples);
        // The queues drain before the next arrivals.
        tokio::time::sleep(QUIET).await;
        let means: Vec<f64> = samples.iter().map(|s| s.iter().sum::<f64>() / s.len() as f64).collect();
        // Two slots; half the requests of each function.
        let capacity = 2.0 / ((means[0] + means[1]) / 2.0 / 1000.0);
        println!("{policy}: mean service times {means:.2?} ms, capacity {capacity:.1} requests/s");
        // A cell that disagrees is replayed with fresh arrivals, at most twice, and only
        // the last replay counts: this shared two-core machine's speed drifts by ±20 %
        // between runs and up to twofold within one (a run in four saw a 5-point gap at
        // 2×, which the next replay did not). Every replay is printed.
        let cells = [(0.7, 15.0), (2.0, 10.0)];
        let mut attempts: Vec<(usize, u64)> = (0..cells.len()).map(|l| (l, 0)).collect();
        while let Some((l, attempt)) = attempts.first().copied() {
            attempts.remove(0);
            let (factor, secs) = cells[l];
            let trace = poisson(factor * capacity, secs, 100 + (p * 2 + l) as u64 + 10 * attempt);
            let before = answered_total(&addr).await;
            let outcomes = replay(std::slice::from_ref(&addr), &classes, &trace, None).await;
            tokio::time::sleep(QUIET).await;
            assert_eq!(answered_total(&addr).await - before, outcomes.len() as u64, "each answered once");
            assert!(outcomes.iter().filter(|o| o.status == 200).all(|o| o.correct), "a wrong output");
            assert!(
                outcomes
                    .iter()
                    .filter(|o| o.status == 200)
                    .all(|o| o.node_queue_ms >= 0.0 && o.node_queue_ms <= o.queue_ms + 1e-6),
                "the wait at the executor is part of the wait the gateway reports"
            );
            assert!(
                outcomes.iter().all(|o| [200, 429, 504].contains(&o.status)),
                "only served, rejected or late"
            );
            let (live_att, live_wait) = live_figures(&outcomes, &classes);
            // The way from the gateway to an executor and back, which the simulation takes
            // out of each deadline (`hopMs`, each way): half the median of what this
            // replay's answers spent outside the executors.
            let hop_ms =
                median(outcomes.iter().filter(|o| o.status == 200).map(|o| o.queue_ms - o.node_queue_ms))
                    / 2.0;
            let before = history.clone();
            record(&mut history, &outcomes, &samples);
            let served = outcomes.iter().filter(|o| o.status == 200);
            let unsplit = (served.clone().map(|o| service_ms(o) - o.exec_ms).sum::<f64>()
                / served.count().max(1) as f64)
                .max(MIN_UNSPLIT_MS);
            let run = |h: &[(f64, usize, f64)], v: Variant| {
                let mut h: Vec<_> =
                    h.iter().map(|&(t, f, d)| (t, f, (d + v.shift * unsplit).max(0.01))).collect();
                h.sort_by(|a, b| a.0.total_cmp(&b.0));
                let s = scenario(dir.path(), &classes, policy, &h, hop_ms * v.hop);
                simulate(&s, policy, 1.0, None).unwrap()
            };
            let cells: Vec<Cell> = VARIANTS
                .iter()
                .map(|&v| Cell::between(&run(&before, v), &run(&history, v), outcomes.len()))
                .collect();
            let sim = &cells[0];
            let (sim_att, sim_wait) = (sim.attainment, sim.wait_ms);
            let band = |x: fn(&Cell) -> f64| {
                cells
                    .iter()
                    .map(x)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
            };
            let (att_lo, att_hi) = band(|c| c.attainment);
            let (wait_lo, wait_hi) = band(|c| c.wait_ms);
            writeln!(
                table,
                "{policy:<12} {factor:>4}  {:>15.2} % {:>13.2} % {:>5.1}-{:<5.1} {live_wait:>13.2} {sim_wait:>12.2} {hop_ms:>7.2}{}",
                live_att * 100.0,
                sim_att * 100.0,
                att_lo * 100.0,
                att_hi * 100.0,
                if attempt > 0 { "  (replayed)" } else { "" }
            )
            .unwrap();
            println!(
                "{policy} at {factor}x: {} requests; live {live_att:.4} / {live_wait:.2} ms, sim {sim_att:.4} / {sim_wait:.2} ms \
                 (inputs within their precision: {att_lo:.4}-{att_hi:.4} / {wait_lo:.2}-{wait_hi:.2} ms; \
                 slot time the answers do not split {unsplit:.2} ms)",
                trace.len()
            );
            for (f, c) in classes.iter().enumerate() {
                let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.function == f).collect();
                let count = |st: u16| mine.iter().filter(|o| o.status == st).count();
                let late =
                    mine.iter().filter(|o| o.status == 200 && o.server_ms > c.deadline_ms as f64).count();
                let (rejected, sim_late) = sim.per_function[f];
                println!(
                    "  {}: live {} requests, {} rejected, {} late, {} timed out; sim {rejected} rejected, {sim_late} late",
                    c.name,
                    mine.len(),
                    count(429),
                    late,
                    count(504),
                );
            }
            let mut wrong = Vec::new();
            if att_hi - att_lo > MAX_BAND {
                wrong.push(format!(
                    "{policy} {factor}x: the simulation swings {att_lo:.4}-{att_hi:.4} within its inputs' precision"
                ));
            }
            let outside = |x: f64, lo: f64, hi: f64| (lo - x).max(x - hi).max(0.0);
            if outside(live_att, att_lo, att_hi) > 0.05 {
                wrong.push(format!(
                    "{policy} {factor}x: attainment live {live_att:.4} vs sim {sim_att:.4} ({att_lo:.4}-{att_hi:.4})"
                ));
            }
            let near = if live_wait < wait_lo { wait_lo } else { wait_hi };
            if outside(live_wait, wait_lo, wait_hi) > (0.25 * near).max(WAIT_FLOOR_MS) {
                wrong.push(format!(
                    "{policy} {factor}x: mean wait live {live_wait:.2} vs sim {sim_wait:.2} ms ({wait_lo:.2}-{wait_hi:.2})"
                ));
            }
            if !wrong.is_empty() && attempt < MAX_REPLAYS {
                println!("DISAGREE, replaying once more with fresh arrivals: {wrong:?}");
                attempts.insert(0, (l, attempt + 1));
            } else {
                failures.extend(wrong);
            }
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "live and simulated disagree: {failures:#?}");
}
