//! What the scheduler can be asked without changing it: its functions and
//! configuration, device state, waiting requests and completion predictions.

use super::*;

impl Scheduler {
    /// The function table.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The active configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Name of the active policy.
    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    /// Whether the active policy is work-conserving.
    pub fn work_conserving(&self) -> bool {
        self.policy.work_conserving()
    }

    /// Requests waiting in the policy's queue (not yet started).
    pub fn queued(&self) -> usize {
        debug_assert_eq!(self.waiting, self.requests.iter().filter(|r| r.phase == Phase::Queued).count());
        self.waiting
    }

    /// Free slots of a device.
    pub fn free_slots(&self, d: DeviceId) -> u32 {
        self.free_slots[d.0 as usize]
    }

    /// Memory in use on a device and its capacity, in bytes.
    pub fn memory(&self, d: DeviceId) -> (u64, u64) {
        let c = &self.v.caches[d.0 as usize];
        (c.used(), c.capacity())
    }

    /// Whether a device is healthy.
    pub fn is_healthy(&self, d: DeviceId) -> bool {
        self.v.healthy.contains(d)
    }

    /// Whether `f` is resident on `d`.
    pub fn is_resident(&self, f: FunctionId, d: DeviceId) -> bool {
        self.v.resident[f.0 as usize].contains(d)
    }

    /// Functions resident on a device, in ID order.
    pub fn residents(&self, d: DeviceId) -> Vec<FunctionId> {
        let mut r: Vec<FunctionId> = self.v.caches[d.0 as usize].residents().collect();
        r.sort_unstable();
        r
    }

    /// Whether an invocation of `f` could start on `d` right now (free slot, healthy,
    /// can run there, fits in memory after evicting unprotected state).
    pub fn feasible_now(&self, f: FunctionId, d: DeviceId, now: Nanos) -> bool {
        let func = &self.functions[f.0 as usize];
        self.v.free.contains(d)
            && self.v.runnable[f.0 as usize].contains(d)
            && self.v.caches[d.0 as usize].fits(f, func.resident_bytes, func.working_bytes, now)
    }

    /// Functions of the requests waiting in the queue (not yet started), with their handles.
    pub fn waiting(&self) -> Vec<(ReqId, FunctionId)> {
        self.requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.phase == Phase::Queued)
            .map(|(i, r)| (ReqId::new(i as u32, r.generation), r.request.function))
            .collect()
    }
}
