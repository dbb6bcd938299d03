//! What the engine hands out (dispatches, completions, drops, losses) and the dense
//! tables a policy decision reads.

use crate::ReqId;
use crate::cache::DeviceCache;
use crate::devset::DeviceSet;
use crate::model::{DeviceId, FunctionId, Nanos, Request};

/// Start `kernels` kernels of a request on a device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The request.
    pub id: ReqId,
    /// Its function.
    pub function: FunctionId,
    /// Where it runs.
    pub device: DeviceId,
    /// Index of the first kernel this dispatch runs.
    pub kernel: u16,
    /// How many kernels it runs (all of them at request granularity).
    pub kernels: u16,
    /// Whether completing it completes the request.
    pub last: bool,
    /// Whether the function had to be made resident first (a cold start).
    pub cold: bool,
    /// Expected cold-start time before the kernels run (0 when warm).
    pub load: Nanos,
    /// Expected warm run time of the kernels.
    pub expected: Nanos,
    /// When it was dispatched.
    pub start: Nanos,
    /// A warm-up, not a request: make the function resident on the device (it pays `load`
    /// and runs no kernel), then report it with [`complete`](crate::Scheduler::complete).
    /// Started by `deadline` admission for a function resident nowhere (scale from zero).
    pub warmup: bool,
    /// The request's arrival.
    pub arrival: Nanos,
    /// The request's absolute deadline.
    pub deadline: Nanos,
}

/// What completing a dispatch did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Completed {
    /// The request is done; its handle is no longer valid.
    Request,
    /// More kernels follow; the next is queued on the same device.
    Kernel,
    /// A warm-up finished: the function is resident on the device. Nobody is answered.
    Warmup,
}

/// A request answered with an error without running: it can no longer meet its deadline.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The request.
    pub id: ReqId,
    /// Its function.
    pub function: FunctionId,
    /// Its arrival.
    pub arrival: Nanos,
    /// When it was dropped.
    pub at: Nanos,
}

/// A request that was running or waiting on a device that failed. The scheduler has
/// forgotten it; the caller retries it (as a new submission) or answers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The old handle.
    pub id: ReqId,
    /// The request, to resubmit.
    pub request: Request,
}

/// An empty running cell: live requests have a generation of at least 1.
pub(crate) const NOBODY: ReqId = ReqId(0);

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
