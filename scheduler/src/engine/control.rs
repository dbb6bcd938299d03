//! Live control of a running scheduler: device health, preloads and evictions, and
//! policy, admission, granularity and eviction changes without losing queued work.

use super::*;

impl Scheduler {
    /// Marks a device healthy or not. Taking a device out loses everything on it: its
    /// resident state, and the requests running or waiting for a next kernel there,
    /// which are returned for the caller to retry or answer.
    pub fn set_device_health(&mut self, d: DeviceId, healthy: bool) -> Vec<Lost> {
        self.settle();
        let di = d.0 as usize;
        if healthy {
            if self.v.healthy.insert(d) {
                self.capacity += self.slot_capacity(d);
                if self.free_slots[di] > 0 {
                    self.v.free.insert(d);
                }
                if let Some(t) = &mut self.track {
                    let free = self.free_slots[di] as u64;
                    t.on_device(di, self.cluster.devices[di].class.0 as usize, |c| c.free += free);
                }
            }
            return Vec::new();
        }
        if !self.v.healthy.remove(d) {
            return Vec::new();
        }
        if let Some(t) = &mut self.track {
            let free = self.free_slots[di] as u64;
            let cells = &self.running[self.running_base[di]..self.running_base[di + 1]];
            t.on_device(di, self.cluster.devices[di].class.0 as usize, |c| {
                c.free -= free;
                for &(id, end) in cells {
                    if id != NOBODY {
                        c.end(end);
                    }
                }
            });
            self.refill_slots(di);
        }
        self.capacity -= self.slot_capacity(d);
        self.v.free.remove(d);
        let mut lost = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            let kernel = match r.phase {
                Phase::Running { device, kernel, .. } | Phase::Continuing { device, kernel }
                    if device == d =>
                {
                    kernel
                }
                _ => continue,
            };
            let func = &self.functions[r.request.function.0 as usize];
            self.backlog -= remaining_share(func, kernel) * func.best_runtime().unwrap_or(0) as f64;
            lost.push(Lost { id: ReqId::new(i as u32, r.generation), request: r.request });
        }
        for l in &lost {
            self.end_warmup(l.id, l.request.function);
            self.release_id(l.id);
        }
        // A lost warm-up is nobody's request: the next arrival starts another.
        lost.retain(|l| !self.warmup_at(l.id.index()));
        self.cells(di).fill((NOBODY, 0));
        self.continuations[di].clear();
        self.has_continuation.remove(d);
        self.free_slots[di] = self.cluster.class_of(d).slots;
        let class = self.cluster.class_of(d);
        self.v.caches[di] = DeviceCache::new(class.memory_bytes, self.config.eviction);
        for r in &mut self.v.resident {
            r.remove(d);
        }
        lost
    }

    /// Makes `f` resident on `d` without running it (the executor's preload), evicting
    /// unprotected state if needed. Returns whether it is resident now.
    pub fn preload(&mut self, now: Nanos, f: FunctionId, d: DeviceId) -> bool {
        self.settle();
        let (fi, di) = (f.0 as usize, d.0 as usize);
        if !self.v.runnable[fi].contains(d) || !self.v.healthy.contains(d) {
            return false;
        }
        let func = &self.functions[fi];
        let load = func.load_time[self.cluster.devices[di].class.0 as usize];
        self.evicted.clear();
        let ok = self.v.caches[di].acquire(f, func.resident_bytes, 0, load, now, &mut self.evicted).is_some();
        for g in self.evicted.drain(..) {
            self.v.resident[g.0 as usize].remove(d);
            if self.record_evictions {
                self.evictions.push((g, d));
            }
        }
        if ok {
            self.v.caches[di].release(f, 0, now, 0);
            self.v.resident[fi].insert(d);
        }
        ok
    }

    /// Evicts a function's resident state from every device where it is not running
    /// (a deleted function). Returns the devices it left.
    pub fn evict_function(&mut self, f: FunctionId) -> Vec<DeviceId> {
        self.settle();
        let devices: Vec<DeviceId> = self.v.resident[f.0 as usize].iter().collect();
        let mut left = Vec::new();
        for d in devices {
            if self.v.caches[d.0 as usize].evict(f) {
                self.v.resident[f.0 as usize].remove(d);
                left.push(d);
            }
        }
        left
    }

    /// Switches the policy live; waiting requests move to the new one in arrival order.
    pub fn set_policy(&mut self, now: Nanos, config: PolicyConfig) -> Result<(), ConfigError> {
        self.settle();
        let mut next = self.registry.build(&config)?;
        let mut waiting = self.policy.drain();
        waiting.sort_by_key(|q| q.seq);
        let cx = cx!(self, now);
        for q in waiting.into_iter().filter(|q| cx.is_live(q)) {
            next.enqueue(&cx, q);
        }
        self.policy = next;
        // The new queue holds live requests only.
        self.v.cancelled_waiting = false;
        self.config.policy = config;
        // Admission's state holds the old policy's zones.
        if self.track.is_some() {
            self.retrack();
        }
        Ok(())
    }

    /// Changes admission control live.
    pub fn set_admission(&mut self, mode: AdmissionMode, burst: f64) {
        self.settle();
        self.config.admission = mode;
        self.config.token_bucket_burst = burst.max(1.0);
        self.retrack();
    }

    /// Changes the share of each deadline `deadline` admission keeps free (at least), for
    /// requests admitted from now on; what the margin learned is forgotten.
    pub fn set_deadline_headroom(&mut self, headroom: f64) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&headroom) {
            return Err(ConfigError::Model(format!("deadline headroom must be in [0, 1), got {headroom}")));
        }
        self.config.deadline_headroom = headroom;
        self.headroom = headroom;
        self.margin.reset();
        Ok(())
    }

    /// Changes granularity for dispatches from now on (requests mid-graph keep going).
    pub fn set_granularity(&mut self, granularity: Granularity) {
        self.settle();
        self.config.granularity = granularity;
    }

    /// Records the tenant isolation setting (executors apply it to devices; scheduling
    /// does not depend on it).
    pub fn set_isolation(&mut self, isolation: crate::Isolation) {
        self.config.isolation = isolation;
    }

    /// Changes cache eviction live.
    pub fn set_eviction(&mut self, eviction: Eviction) {
        self.settle();
        self.config.eviction = eviction;
        for c in &mut self.v.caches {
            c.set_eviction(eviction);
        }
    }
}
