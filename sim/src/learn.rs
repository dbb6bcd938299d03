//! Runtimes learned from what runs, as each live executor learns them
//! (`executor/src/runtime/learn.rs`), when a scenario asks for it (`learnRuntimes`): per
//! node, function and class, an EWMA of the measured runtime folded in at each completion,
//! and the node scheduler's model set to its mean plus two deviations on the 8th sample
//! and every 16th after. What a request really takes stays what the workload says (the
//! profile scaled by the trace, or drawn around it): learning changes what the scheduler
//! believes, never the service.

use kaas_scheduler::estimate::RuntimeEstimate;
use kaas_scheduler::{Function, FunctionId, Nanos, Scheduler};

/// Nanoseconds per millisecond.
const MS: f64 = 1e6;

/// One node's learning state.
struct NodeModel {
    /// The functions as its scheduler holds them now.
    models: Vec<Function>,
    /// Per function × class: the declared runtime, what service times are drawn around.
    profile: Vec<Option<Nanos>>,
    /// Per function × class: what has been measured.
    estimates: Vec<Option<RuntimeEstimate>>,
    /// Per scheduler slot: the sample its running dispatch gives at completion
    /// (function, class, whole-invocation runtime in ns), if any.
    pending: Vec<Option<(u32, u16, Nanos)>>,
}

/// Learning over every node of a simulation.
pub(crate) struct Learner {
    classes: usize,
    nodes: Vec<NodeModel>,
}

impl Learner {
    /// Starts from each node's declared functions (`models[n]`).
    pub(crate) fn new(classes: usize, models: Vec<Vec<Function>>) -> Learner {
        let nodes = models
            .into_iter()
            .map(|models| {
                let profile: Vec<Option<Nanos>> =
                    models.iter().flat_map(|f| f.runtime.iter().copied()).collect();
                NodeModel { estimates: vec![None; profile.len()], profile, models, pending: Vec::new() }
            })
            .collect();
        Learner { classes, nodes }
    }

    /// What a dispatch the node's scheduler expects to take `expected` really takes on
    /// average: `expected` rescaled from what the model believes to the profile.
    #[inline]
    pub(crate) fn truth(&self, n: usize, f: usize, class: usize, expected: Nanos) -> Nanos {
        let node = &self.nodes[n];
        match (node.models[f].runtime[class], node.profile[f * self.classes + class]) {
            (Some(believed), Some(real)) if believed != real && believed > 0 => {
                (expected as f64 * real as f64 / believed as f64) as Nanos
            }
            _ => expected,
        }
    }

    /// Kernel `kernel` of function `f` runs `run` ns on a device of `class` for the request
    /// in scheduler slot `slot`; it is measured when it completes.
    pub(crate) fn dispatched(
        &mut self,
        n: usize,
        slot: usize,
        f: usize,
        class: usize,
        kernel: u16,
        run: Nanos,
    ) {
        let node = &mut self.nodes[n];
        let share = node.models[f].kernel_shares.get(kernel as usize).copied().unwrap_or(1.0);
        if share <= 0.0 {
            return;
        }
        if slot >= node.pending.len() {
            node.pending.resize(slot + 1, None);
        }
        node.pending[slot] = Some((f as u32, class as u16, (run as f64 / share) as Nanos));
    }

    /// The dispatch in `slot` completed (`measured`: it ran; else its sample is dropped):
    /// folds its runtime in and, on the 8th sample and every 16th after, updates the node
    /// scheduler's model of the function.
    pub(crate) fn completed(&mut self, n: usize, slot: usize, s: &mut Scheduler, measured: bool) {
        let classes = self.classes;
        let node = &mut self.nodes[n];
        let Some((f, class, run)) = node.pending.get_mut(slot).and_then(Option::take) else { return };
        if !measured {
            return;
        }
        let (f, class) = (f as usize, class as usize);
        let ms = run as f64 / MS;
        let e = match &mut node.estimates[f * classes + class] {
            Some(e) => {
                e.observe(ms);
                e
            }
            empty => empty.insert(RuntimeEstimate::first(ms)),
        };
        if e.samples % 16 != RuntimeEstimate::TRUSTED {
            return;
        }
        let learned = ((e.predicted() * MS) as Nanos).max(1);
        let model = &mut node.models[f];
        if model.runtime[class].is_none_or(|r| r == learned) {
            return;
        }
        model.runtime[class] = Some(learned);
        // The model is one the scheduler accepted, with one runtime changed.
        let _ = s.update_function(FunctionId(f as u32), model.clone());
    }
}
