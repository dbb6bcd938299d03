//! Routing: the first level of two-level scheduling. A router (the gateway, or the
//! simulator's `per-node` topology) does not queue; it picks which node scheduler a
//! request goes to, from what each node last reported (its policy's predicted backlog,
//! residency) and what the router itself sent since. The node's scheduler is
//! authoritative: it queues under the policy and makes the final admission decision;
//! when it refuses, the router tries the next candidate in the order returned here.

/// One place a request could go: a node's device (or group of alike devices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Predicted wait before the request could start there, ms (the node's report plus
    /// what was routed there since).
    pub wait_ms: f64,
    /// Time to make the function resident there first; 0 when it is.
    pub cold_ms: f64,
    /// The function's runtime on that device class, ms.
    pub run_ms: f64,
    /// Price of the device class per hour (cost-aware policies prefer cheaper classes
    /// that still meet the deadline).
    pub price_per_hour: f64,
}

impl Candidate {
    /// Predicted completion, ms from now.
    pub fn completion_ms(&self) -> f64 {
        self.wait_ms + self.cold_ms + self.run_ms
    }
}

/// The wait a router predicts on a device: what the node last reported (its
/// [`backlogs_ms`](crate::Scheduler::backlogs_ms)) plus the work the router sent there
/// since, spread over the device's slots; 0 while a slot is free for every request sent
/// since and nothing was waiting at the report.
pub fn wait_ms(reported_backlog_ms: f64, slots: u32, running: u32, charged: u32, charged_ms: f64) -> f64 {
    let slots = slots.max(1);
    if reported_backlog_ms <= 0.0 && slots.saturating_sub(running) > charged {
        return 0.0;
    }
    reported_backlog_ms + charged_ms / slots as f64
}

/// At most this many nodes are offered one request (the first choice and the spillbacks
/// after refusals or failures): by the gateway, and by the simulator's `per-node` router.
pub const MAX_TRIES: usize = 3;

/// Share of the deadline a cost-preferring choice keeps free for what the prediction
/// cannot see (the same margin `deadline` admission keeps by default).
pub const ROUTE_HEADROOM: f64 = 0.1;

/// Whether the policy trades speed for price when the deadline allows: `slo-aware` sends
/// loose-deadline work to the cheapest class that still meets it.
pub fn prefers_cost(policy: &str) -> bool {
    policy == "slo-aware"
}

/// Candidates in the order the policy would try them, best first.
///
/// - `slo-aware`: those predicted to meet the deadline (with [`ROUTE_HEADROOM`]),
///   cheapest first, then the rest by predicted completion; so a tight deadline goes to a
///   fast class and a loose one to a cheap class.
/// - every other policy: by predicted completion (soonest first). A warm candidate wins
///   ties, and a cold start counts in the completion, so affinity falls out of the
///   prediction rather than being a special case.
pub fn rank(policy: &str, deadline_ms: f64, candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    let budget = deadline_ms * (1.0 - ROUTE_HEADROOM);
    let soonest = |a: &Candidate, b: &Candidate| {
        a.completion_ms().total_cmp(&b.completion_ms()).then(a.cold_ms.total_cmp(&b.cold_ms))
    };
    if prefers_cost(policy) {
        order.sort_by(|&i, &j| {
            let (a, b) = (&candidates[i], &candidates[j]);
            let (ma, mb) = (a.completion_ms() <= budget, b.completion_ms() <= budget);
            mb.cmp(&ma).then_with(|| {
                if ma && mb {
                    a.price_per_hour.total_cmp(&b.price_per_hour).then(soonest(a, b))
                } else {
                    soonest(a, b)
                }
            })
        });
    } else {
        order.sort_by(|&i, &j| soonest(&candidates[i], &candidates[j]));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(wait_ms: f64, cold_ms: f64, run_ms: f64, price_per_hour: f64) -> Candidate {
        Candidate { wait_ms, cold_ms, run_ms, price_per_hour }
    }

    #[test]
    fn slo_aware_sends_loose_deadlines_to_the_cheap_class_and_tight_ones_to_the_fast() {
        let fast = c(0.0, 0.0, 5.0, 3.0);
        let slow = c(0.0, 0.0, 40.0, 0.5);
        assert_eq!(rank("slo-aware", 200.0, &[fast, slow])[0], 1, "a loose deadline goes cheap");
        assert_eq!(rank("slo-aware", 20.0, &[fast, slow])[0], 0, "a tight deadline goes fast");
        // Neither meets it: the sooner one.
        assert_eq!(rank("slo-aware", 2.0, &[slow, fast])[0], 1);
    }

    #[test]
    fn other_policies_take_the_soonest_completion_counting_cold_starts_and_backlog() {
        let warm_busy = c(30.0, 0.0, 5.0, 1.0);
        let cold_idle = c(0.0, 50.0, 5.0, 1.0);
        let warm_idle = c(0.0, 0.0, 5.0, 1.0);
        assert_eq!(rank("edf", 100.0, &[warm_busy, cold_idle, warm_idle]), vec![2, 0, 1]);
        // Equal completion: the warm one first.
        let a = c(10.0, 0.0, 5.0, 1.0);
        let b = c(0.0, 10.0, 5.0, 1.0);
        assert_eq!(rank("mqfq-sticky", 100.0, &[b, a])[0], 1);
        assert!(rank("fifo", 1.0, &[]).is_empty());
    }
}
