//! An upper bound on how many requests any schedule can serve in time: the capacity
//! bound the admission grid holds the best policy with `deadline` admission to (issue
//! 13, point 3: at least 0.9 of it).
//!
//! Work is counted in time on the function's fastest class: a request served in time
//! needs its own runtime there (a trace's recorded duration, or the exponential draw),
//! and a slot of class `c` does at most `speed_c` of that per second, the most it does
//! for any function relative to that function's fastest class. Cut time into intervals
//! `[kL, (k+1)L)`: the requests that arrive and must finish inside one interval and are
//! served in time are served between the earliest of their arrivals and the latest of
//! their deadlines, so their work fits in the pool's `Σ slots_c × speed_c` times that
//! span, and there are at most as many of them as the interval's shortest such requests
//! that fit. Those counts, plus every request that no interval
//! contains (counted as served), bound every schedule; the bound is the least over a few
//! interval lengths and shifts of the grid (each is a bound). Requests whose own runtime misses the deadline on
//! every class are never counted. The bound knows every runtime in advance and never
//! pays a load, so no schedule reaches it; it binds where the pool's time runs out for
//! the requests with short deadlines (at overload, serving the short requests and
//! dropping the long ones is what maximises the count).

use kaas_scheduler::model::Nanos;

use crate::SimError;
use crate::rng::Rng;
use crate::scenario::{Generator, Scenario, Service};
use crate::workload;

/// The capacity bound of one workload.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Bound {
    /// Requests offered.
    pub requests: u64,
    /// Requests whose own runtime makes their deadline on some class.
    pub feasible: u64,
    /// At most this many can be served in time.
    pub servable: u64,
}

impl Bound {
    /// `servable / requests` (1 when nothing was offered).
    pub fn attainment(&self) -> f64 {
        if self.requests == 0 { 1.0 } else { self.servable as f64 / self.requests as f64 }
    }
}

/// The capacity bound of a scenario's open-loop workload at a load factor. Exponential
/// service times are drawn from a stream of their own, with the distribution the
/// simulation draws from. Closed-loop workloads depend on completions and have no bound
/// here.
pub fn capacity_bound(s: &Scenario, load_factor: f64) -> Result<Bound, SimError> {
    if s.workload.synthetic.as_ref().is_some_and(|g| g.generator == Generator::Closed) {
        return Err(SimError::Scenario("the capacity bound needs an open-loop workload".into()));
    }
    let cluster = s.cluster(None);
    let functions = s.functions();
    let classes = cluster.classes.len();
    // Per class, the most it does per second of a function's fastest-class time.
    let speed: Vec<f64> = (0..classes)
        .map(|c| {
            functions
                .iter()
                .filter_map(|f| Some(f.best_runtime()? as f64 / f.runtime.get(c).copied().flatten()? as f64))
                .fold(0.0, f64::max)
        })
        .collect();
    let rate: f64 = cluster
        .devices
        .iter()
        .map(|d| cluster.classes[d.class.0 as usize].slots as f64 * speed[d.class.0 as usize])
        .sum();
    let exponential: Vec<bool> = s.functions.iter().map(|f| f.service == Service::Exponential).collect();
    let mut rng = Rng::seed_from_u64(s.seed.wrapping_add(0xb0_0d));
    let mut requests = 0u64;
    // Each request that can make its deadline: arrival, relative deadline, work.
    let mut work: Vec<Work> = Vec::new();
    for a in workload::open(s, load_factor)? {
        let a = a?;
        requests += 1;
        let f = &functions[a.function as usize];
        let Some(best) = f.best_runtime() else { continue };
        let own = match a.duration {
            Some(d) => d,
            None if exponential[a.function as usize] => (rng.exp1() * best as f64) as Nanos,
            None => best,
        };
        if own <= f.deadline {
            work.push(Work { arrival: a.t, deadline: f.deadline, cost: own });
        }
    }
    let feasible = work.len() as u64;
    let shortest = work.iter().map(|w| w.deadline).min().unwrap_or(1).max(1);
    let span = work.iter().map(|w| w.arrival + w.deadline).max().unwrap_or(0) + 1;
    // Interval lengths from the shortest deadline up, each grid also shifted by quarters.
    let servable = (0..=10)
        .map(|k| shortest.saturating_mul(1 << k).min(span))
        .chain([span])
        .flat_map(|l| (0..4).map(move |q| (l, l / 4 * q)))
        .map(|(l, offset)| intervals(&work, l, offset, rate))
        .min()
        .unwrap_or(0);
    Ok(Bound { requests, feasible, servable })
}

/// A request that can make its deadline.
#[derive(Copy, Clone)]
struct Work {
    arrival: Nanos,
    deadline: Nanos,
    cost: Nanos,
}

/// The most requests of `work` served in time when time is cut into intervals `len`
/// long (the grid shifted back by `offset`), at `rate` fastest-class seconds per second
/// (see the module docs).
fn intervals(work: &[Work], len: Nanos, offset: Nanos, rate: f64) -> u64 {
    let len = len.max(1);
    // Per interval: the costs of the requests inside it, the earliest arrival and the
    // latest deadline among them (nothing inside is served outside those); the rest
    // count as served.
    let mut inside: std::collections::BTreeMap<Nanos, (Vec<Nanos>, Nanos, Nanos)> = Default::default();
    let mut served = 0u64;
    for w in work {
        let t = w.arrival + offset;
        let k = t / len;
        let due = w.arrival + w.deadline;
        if due + offset < (k + 1).saturating_mul(len) {
            let e = inside.entry(k).or_insert((Vec::new(), Nanos::MAX, 0));
            e.0.push(w.cost);
            e.1 = e.1.min(w.arrival);
            e.2 = e.2.max(due);
        } else {
            served += 1;
        }
    }
    for (costs, first, last) in inside.values_mut() {
        let capacity = (rate * last.saturating_sub(*first) as f64) as u128;
        costs.sort_unstable();
        let mut used = 0u128;
        served += costs
            .iter()
            .take_while(|&&c| {
                used += c as u128;
                used <= capacity
            })
            .count() as u64;
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        Scenario::from_yaml(yaml, std::path::Path::new(".")).unwrap()
    }

    /// One slot, 100 requests of 10 ms each per second for 10 s at 2x: the slot's time
    /// over the span (10 s of arrivals at most, plus the last deadline) holds about half.
    #[test]
    fn the_bound_is_what_the_slots_time_holds_shortest_first() {
        let s = scenario(
            "name: t\nseed: 1\ndurationS: 10\n\
             cluster: [{ name: gpu, kind: GPU, memoryBytes: 1073741824, relativeSpeed: 1.0, costPerHour: 1, slotsPerDevice: 1, count: 1 }]\n\
             functions: [{ name: f, slo: { deadlineMs: 100 }, expectedRate: 100, profile: [{ acceleratorClass: gpu, runtimeMs: 10, loadMs: 1 }] }]\n\
             workload: { synthetic: { generator: poisson } }\n",
        );
        let half = capacity_bound(&s, 2.0).unwrap();
        assert_eq!(half.feasible, half.requests);
        let share = half.attainment();
        assert!((0.45..0.55).contains(&share), "{half:?}");
        // Under capacity the bound is everything feasible.
        let all = capacity_bound(&s, 0.5).unwrap();
        assert_eq!(all.servable, all.requests, "{all:?}");
    }
}
