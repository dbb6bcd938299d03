//! What a policy may read while deciding: the context [`Cx`] and the dense tables behind
//! it. Its own module so that the engine (which keeps these tables) and the policies
//! (which read them) both depend on it and not on each other.

use crate::cache::DeviceCache;
use crate::devset::DeviceSet;
use crate::model::{ClassId, Cluster, DeviceId, Function, FunctionId, Nanos};
use crate::policy::Queued;

/// No runtime on a class.
pub(crate) const NONE: Nanos = Nanos::MAX;

/// A function's numbers on the dispatch path, read without chasing the function's vectors.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Hot {
    /// Runtime on its fastest class (0 if it runs nowhere).
    pub(crate) best: Nanos,
    pub(crate) resident_bytes: u64,
    pub(crate) working_bytes: u64,
    pub(crate) kernels: u16,
    pub(crate) priority: i32,
    pub(crate) weight: u32,
}

/// A function's costs on one class.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ClassCost {
    /// Runtime of the whole graph as dispatched (kernels rounded one by one), or `NONE`.
    pub(crate) whole: Nanos,
    /// Its warm runtime as modelled, or `NONE`.
    pub(crate) runtime: Nanos,
    /// Its cold-start time.
    pub(crate) load: Nanos,
}

impl ClassCost {
    pub(crate) const NONE: ClassCost = ClassCost { whole: NONE, runtime: NONE, load: 0 };
}

/// The scheduler state a policy decision reads: one reference in [`Cx`] instead of a
/// dozen, since a context is built several times per request.
pub(crate) struct View {
    pub(crate) caches: Vec<DeviceCache>,
    pub(crate) free: DeviceSet,
    pub(crate) healthy: DeviceSet,
    pub(crate) class_sets: Vec<DeviceSet>,
    pub(crate) resident: Vec<DeviceSet>,
    pub(crate) runnable: Vec<DeviceSet>,
    pub(crate) busy_until: Vec<Nanos>,
    /// Per request slot: the generation of the request waiting there, 0 if none (what
    /// policies ask with `Cx::is_live`, kept apart so the question costs no large load).
    pub(crate) queued: Vec<u32>,
    /// Whether the policy's queue may hold a cancelled request. Until one is cancelled
    /// every queued entry is live (requests leave the queue only through the policy's own
    /// commit), so policies need not look liveness up.
    pub(crate) cancelled_waiting: bool,
    /// What every dispatch and completion reads of a function, without chasing the
    /// function's vectors.
    pub(crate) hot: Vec<Hot>,
    /// Per function and class (`function × classes + class`).
    pub(crate) costs: Vec<ClassCost>,
}

/// What a policy may ask about the cluster while deciding.
pub struct Cx<'a> {
    /// Current time.
    pub now: Nanos,
    /// Classes and devices.
    pub cluster: &'a Cluster,
    /// Function table, indexed by [`FunctionId`].
    pub functions: &'a [Function],
    /// The scheduler state behind the questions below.
    pub(crate) v: &'a View,
}

impl<'a> Cx<'a> {
    /// Whether a queued request is still waiting (not cancelled). Policies drop dead
    /// entries lazily when they meet them.
    #[inline]
    pub fn is_live(&self, req: &Queued) -> bool {
        let listed = || self.v.queued.get(req.id.index()).is_some_and(|&g| g == req.id.generation());
        debug_assert!(
            self.v.cancelled_waiting || listed(),
            "a queued entry of a request that is not waiting"
        );
        !self.v.cancelled_waiting || listed()
    }

    /// The function of `f`.
    #[inline]
    pub fn function(&self, f: FunctionId) -> &Function {
        &self.functions[f.0 as usize]
    }

    /// Class of a device.
    #[inline]
    pub fn class_of(&self, d: DeviceId) -> ClassId {
        self.cluster.devices[d.0 as usize].class
    }

    /// Devices with a free slot.
    pub fn free(&self) -> &DeviceSet {
        &self.v.free
    }

    /// Healthy devices.
    pub fn healthy(&self) -> &DeviceSet {
        &self.v.healthy
    }

    /// Devices a function can ever run on (its class has a build, its memory fits).
    pub fn runnable(&self, f: FunctionId) -> &DeviceSet {
        &self.v.runnable[f.0 as usize]
    }

    /// Devices where a function is resident.
    pub fn resident(&self, f: FunctionId) -> &DeviceSet {
        &self.v.resident[f.0 as usize]
    }

    /// Whether `f` is resident on `d`.
    #[inline]
    pub fn is_warm(&self, f: FunctionId, d: DeviceId) -> bool {
        self.v.resident[f.0 as usize].contains(d)
    }

    /// Whether an invocation of `f` fits on `d` now (evicting unpinned state if needed).
    #[inline]
    pub fn fits(&self, f: FunctionId, d: DeviceId) -> bool {
        let h = &self.v.hot[f.0 as usize];
        self.v.caches[d.0 as usize].fits(f, h.resident_bytes, h.working_bytes, self.now)
    }

    /// Warm runtime of `f` on its fastest class (`None` if it runs nowhere).
    #[inline]
    pub fn best_runtime(&self, f: FunctionId) -> Option<Nanos> {
        // The dense table writes 0 for "runs nowhere"; only then ask the function itself.
        let best = self.v.hot[f.0 as usize].best;
        if best > 0 { Some(best) } else { self.function(f).best_runtime() }
    }

    /// Warm runtime of `f` on class `c` (`None` if it has no build there).
    #[inline]
    pub fn runtime_on(&self, f: FunctionId, c: ClassId) -> Option<Nanos> {
        let r = self.cost(f, c).runtime;
        (r != NONE).then_some(r)
    }

    /// Cold-start time of `f` on class `c`.
    #[inline]
    pub fn load_time(&self, f: FunctionId, c: ClassId) -> Nanos {
        self.cost(f, c).load
    }

    /// Scheduling weight of `f` (at least 1).
    #[inline]
    pub fn weight(&self, f: FunctionId) -> u32 {
        self.v.hot[f.0 as usize].weight.max(1)
    }

    #[inline]
    fn cost(&self, f: FunctionId, c: ClassId) -> &ClassCost {
        &self.v.costs[f.0 as usize * self.cluster.classes.len() + c.0 as usize]
    }

    /// Lowest free device where `f` is warm and fits.
    #[inline]
    pub fn first_free_warm(&self, f: FunctionId) -> Option<DeviceId> {
        let res = &self.v.resident[f.0 as usize];
        if res.is_empty() {
            return None;
        }
        self.v.free.iter_common(res).find(|&d| self.fits(f, d))
    }

    /// Lowest free device that can run `f` and where it fits.
    #[inline]
    pub fn first_free_fitting(&self, f: FunctionId) -> Option<DeviceId> {
        self.v.free.iter_common(&self.v.runnable[f.0 as usize]).find(|&d| self.fits(f, d))
    }

    /// A free warm device if there is one, else the lowest free fitting device.
    #[inline]
    pub fn best_free(&self, f: FunctionId) -> Option<DeviceId> {
        self.first_free_warm(f).or_else(|| self.first_free_fitting(f))
    }

    /// Devices of a class.
    pub fn class_devices(&self, c: ClassId) -> &DeviceSet {
        &self.v.class_sets[c.0 as usize]
    }

    /// Lowest free device of class `c` where `f` fits, preferring one where it is warm;
    /// the flag says whether it is warm.
    pub fn first_free_in_class(&self, f: FunctionId, c: ClassId) -> Option<(DeviceId, bool)> {
        let class = &self.v.class_sets[c.0 as usize];
        let res = &self.v.resident[f.0 as usize];
        if !res.is_empty()
            && let Some(d) = self.v.free.iter_common3(class, res).find(|&d| self.fits(f, d))
        {
            return Some((d, true));
        }
        let run = &self.v.runnable[f.0 as usize];
        self.v.free.iter_common3(class, run).find(|&d| self.fits(f, d)).map(|d| (d, false))
    }

    /// Expected time until `d` has a free slot (now if it has one).
    pub fn available_at(&self, d: DeviceId) -> Nanos {
        if self.v.free.contains(d) { self.now } else { self.v.busy_until[d.0 as usize].max(self.now) }
    }

    /// Expected completion of `f` started on `d` as soon as `d` has a slot: wait, load
    /// time if cold, warm runtime. `None` if `f` cannot run on `d`'s class.
    pub fn predicted_completion(&self, f: FunctionId, d: DeviceId) -> Option<Nanos> {
        let class = self.class_of(d);
        let run = self.runtime_on(f, class)?;
        let load = if self.is_warm(f, d) { 0 } else { self.load_time(f, class) };
        Some(self.available_at(d) + load + run)
    }
}
