//! The function table: adding a function, replacing its model, pinning it to a device,
//! without losing what is queued or running.

use super::*;

impl Scheduler {
    /// Adds a function; returns its id.
    pub fn add_function(&mut self, f: Function) -> Result<FunctionId, ConfigError> {
        self.settle();
        let id = FunctionId(self.functions.len() as u32);
        self.functions.push(f);
        self.v.resident.push(DeviceSet::new(self.cluster.devices.len()));
        self.v.runnable.push(DeviceSet::new(self.cluster.devices.len()));
        self.v.hot.push(Hot::default());
        self.warmup_of.push(None);
        self.probe_at.push(0);
        self.v.costs.extend(std::iter::repeat_n(ClassCost::NONE, self.cluster.classes.len()));
        if let Err(e) = self.update_function(id, self.functions[id.0 as usize].clone()) {
            self.functions.pop();
            self.v.resident.pop();
            self.v.runnable.pop();
            self.v.hot.pop();
            self.warmup_of.pop();
            self.probe_at.pop();
            self.v.costs.truncate(self.v.costs.len() - self.cluster.classes.len());
            return Err(e);
        }
        Ok(id)
    }

    /// Replaces a function's model (a new profile, say). Queued requests keep their deadlines.
    pub fn update_function(&mut self, id: FunctionId, f: Function) -> Result<(), ConfigError> {
        self.settle();
        let classes = self.cluster.classes.len();
        if f.runtime.len() != classes || f.load_time.len() != classes {
            return Err(ConfigError::Model(format!(
                "function {} gives {} runtimes and {} load times for {classes} classes",
                f.name,
                f.runtime.len(),
                f.load_time.len()
            )));
        }
        if f.weight == 0 || f.kernel_shares.iter().any(|s| s.is_nan() || *s < 0.0) {
            return Err(ConfigError::Model(format!(
                "function {} needs weight ≥ 1 and kernel shares ≥ 0",
                f.name
            )));
        }
        let mut runnable = DeviceSet::new(self.cluster.devices.len());
        let pinned = self.pinned.get(id.0 as usize).copied().flatten();
        for (i, dev) in self.cluster.devices.iter().enumerate() {
            let class = &self.cluster.classes[dev.class.0 as usize];
            if f.runtime_on(dev.class).is_some()
                && f.resident_bytes + f.working_bytes <= class.memory_bytes
                && pinned.is_none_or(|p| p.0 as usize == i)
            {
                runnable.insert(DeviceId(i as u32));
            }
        }
        self.v.runnable[id.0 as usize] = runnable;
        let i = id.0 as usize;
        self.v.hot[i] = Hot {
            best: f.best_runtime().unwrap_or(0),
            resident_bytes: f.resident_bytes,
            working_bytes: f.working_bytes,
            kernels: f.kernel_count() as u16,
            priority: f.priority,
            weight: f.weight,
        };
        for c in 0..classes {
            let class = crate::model::ClassId(c as u16);
            let whole = (0..f.kernel_count()).map(|k| f.kernel_runtime(class, k)).sum::<Option<Nanos>>();
            self.v.costs[i * classes + c] = ClassCost {
                whole: whole.unwrap_or(NONE),
                runtime: f.runtime_on(class).unwrap_or(NONE),
                load: f.load_time[c],
            };
        }
        let horizon = f.deadline;
        self.functions[i] = f;
        if self.track.as_ref().is_some_and(|t| !t.by_deadline.covers(horizon)) {
            self.retrack();
        }
        Ok(())
    }

    /// Restricts a function to one device (a device-plugin share), or lifts the restriction.
    pub fn pin_function(&mut self, id: FunctionId, device: Option<DeviceId>) -> Result<(), ConfigError> {
        self.settle();
        let i = id.0 as usize;
        if self.pinned.len() <= i {
            self.pinned.resize(i + 1, None);
        }
        self.pinned[i] = device;
        let f = self.functions[i].clone();
        self.update_function(id, f)
    }
}
