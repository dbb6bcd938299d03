//! The actor's function registry: registration (with the scheduler's model of each
//! function), share lookup, and residency changes asked for from outside (preload, evict).

use super::*;

impl Actor {
    pub(super) fn model(&self, f: &FunctionDef, weight: u32) -> Function {
        let kinds: Vec<String> = self.devices.iter().map(|d| d.info().kind).collect();
        let runtime = self
            .devices
            .iter()
            .zip(&kinds)
            .map(|(d, kind)| {
                d.can_run(f).then(|| {
                    // Measured here, else the profile of this node's class, else the kind's.
                    let class = self.config.accelerator_classes.get(kind);
                    let ms = super::learn::get(&self.runtime_ewma, &f.key(), kind)
                        .map(|m| m.predicted())
                        .or_else(|| class.and_then(|c| f.class_runtime_ms.get(c)).copied())
                        .or(f.runtime_ms.get(kind).copied())
                        .unwrap_or(1.0);
                    kaas_scheduler::ms(ms)
                })
            })
            .collect();
        let load_time = kinds
            .iter()
            .map(|k| {
                let class = self.config.accelerator_classes.get(k);
                let ms =
                    class.and_then(|c| f.class_load_ms.get(c)).or(f.load_ms.get(k)).copied().unwrap_or(10.0);
                kaas_scheduler::ms(ms)
            })
            .collect();
        let module_bytes: u64 = f
            .modules
            .iter()
            .map(|m| m.wasm.as_ref().map_or(0, |w| w.len()) + m.cuda.as_ref().map_or(0, |c| c.1.len()))
            .sum::<usize>() as u64;
        Function {
            name: f.key(),
            tenant: f.namespace.clone(),
            runtime,
            load_time,
            resident_bytes: f.const_bytes() + module_bytes,
            working_bytes: f.working_bytes(),
            deadline: kaas_scheduler::ms(f.deadline_ms as f64),
            weight,
            priority: f.priority,
            kernel_shares: vec![1.0 / f.kernels.len() as f64; f.kernels.len()],
            reserved_rate: None,
        }
    }

    pub(super) fn put(&mut self, def: Arc<FunctionDef>) -> Result<Vec<String>, ExecError> {
        let kinds: Vec<String> =
            self.devices.iter().filter(|d| d.can_run(&def)).map(|d| d.info().kind).collect();
        if kinds.is_empty() {
            return Err(ExecError::NoCapacity(format!(
                "{} has no build for any device here ({})",
                def.key(),
                self.devices.iter().map(|d| d.info().kind).collect::<Vec<_>>().join(", ")
            )));
        }
        let key = def.key();
        if let Some(old) = self.functions.get(&key)
            && old.version != def.version
        {
            for d in self.devices.iter() {
                d.unload(&key);
            }
        }
        self.functions.insert(key.clone(), def.clone());
        // Refresh every scheduler function of this key (one per share used).
        let ids: Vec<(Option<String>, FunctionId)> =
            self.ids.iter().filter(|((k, _), _)| *k == key).map(|((_, s), id)| (s.clone(), *id)).collect();
        for (share, id) in ids {
            let weight = self.share(&share).filter(|s| s.weight > 0).map_or(def.weight, |s| s.weight);
            let m = self.model(&def, weight);
            self.sched.update_function(id, m).map_err(|e| ExecError::BadFunction(e.to_string()))?;
            self.defs[id.0 as usize].0 = def.clone();
        }
        info!(function = %key, version = %def.version, ?kinds, "function registered");
        let mut kinds = kinds;
        kinds.dedup();
        Ok(kinds)
    }

    /// The share an ID names. `@<device id>` is the implicit share of a whole device,
    /// used by a gateway that has already chosen the device.
    pub(super) fn share(&self, id: &Option<String>) -> Option<Share> {
        let id = id.as_ref()?;
        if let Some(dev) = id.strip_prefix('@') {
            let device = self.devices.iter().position(|d| d.info().id == dev)?;
            return Some(Share { id: id.clone(), device, weight: 0, memory_quota: 0 });
        }
        self.config.shares.iter().find(|s| &s.id == id).cloned()
    }

    pub(super) fn function_id(
        &mut self,
        def: &Arc<FunctionDef>,
        share: &Option<String>,
    ) -> Result<FunctionId, ExecError> {
        if let Some(id) = self.ids.get(&(def.key(), share.clone())) {
            return Ok(*id);
        }
        let s = match share {
            Some(id) => Some(
                self.share(share)
                    .ok_or_else(|| ExecError::BadInput(format!("unknown share or device {id:?}")))?,
            ),
            None => None,
        };
        let model = self.model(def, s.as_ref().filter(|s| s.weight > 0).map_or(def.weight, |s| s.weight));
        let fid = self.sched.add_function(model).map_err(|e| ExecError::BadFunction(e.to_string()))?;
        if let Some(s) = &s {
            self.sched
                .pin_function(fid, Some(DeviceId(s.device as u32)))
                .map_err(|e| ExecError::BadFunction(e.to_string()))?;
        }
        self.ids.insert((def.key(), share.clone()), fid);
        self.defs.push((def.clone(), share.clone()));
        Ok(fid)
    }

    pub(super) fn preload(&mut self, key: &str, device: Option<&str>) -> Result<Vec<String>, ExecError> {
        let def = self.functions.get(key).cloned().ok_or_else(|| ExecError::UnknownFunction(key.into()))?;
        let fid = self.function_id(&def, &None)?;
        let mut done = Vec::new();
        let mut last_err = None;
        for (i, d) in self.devices.iter().enumerate() {
            let info = d.info();
            if device.is_some_and(|want| want != info.id) || !d.can_run(&def) {
                continue;
            }
            let start = Instant::now();
            match d.load(&def) {
                Ok(()) => {
                    self.metrics.load_seconds.observe(start.elapsed().as_secs_f64());
                    self.sched.preload(self.now(), fid, DeviceId(i as u32));
                    done.push(info.id);
                }
                Err(e) => last_err = Some(e),
            }
        }
        match (done.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            (true, None) => {
                Err(ExecError::NoCapacity(format!("no device {} can run {key}", device.unwrap_or("here"))))
            }
            _ => Ok(done),
        }
    }

    pub(super) fn evict(&mut self, key: &str) -> Result<Vec<String>, ExecError> {
        if self.functions.remove(key).is_none() {
            return Err(ExecError::UnknownFunction(key.into()));
        }
        let mut left = Vec::new();
        for ((k, _), id) in self.ids.iter() {
            if k == key {
                for d in self.sched.evict_function(*id) {
                    left.push(self.devices[d.0 as usize].info().id);
                }
            }
        }
        for d in self.devices.iter() {
            d.unload(key);
        }
        left.sort();
        left.dedup();
        Ok(left)
    }
}
