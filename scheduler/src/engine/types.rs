//! What the engine hands out (dispatches, completions, drops, losses) and the dense
//! tables a policy decision reads.

use crate::ReqId;
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
