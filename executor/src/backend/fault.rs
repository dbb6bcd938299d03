//! A fault-injection backend: wraps a real one and makes chosen functions' kernels panic,
//! hang (until a time limit stops them, as the real backends' limits do) or run slowly.
//! For tests of what the executor and gateway promise when kernels misbehave: every
//! request answered within its deadline plus a grace, the slot freed, the next request on
//! it served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;

use super::{Backend, DeviceInfo, Invocation, Outputs};
use crate::error::ExecError;
use crate::memory::Owner;
use crate::model::FunctionDef;

/// What a function's kernels do instead of (or before) running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// The kernel panics inside the backend.
    Panic,
    /// The kernel does not return for this long, then fails as a time limit would.
    Hang(Duration),
    /// The kernel takes this much longer, then runs normally.
    Slow(Duration),
    /// Not the kernel but the backend's bookkeeping is broken: asking whether the device
    /// can run the function panics, on whatever thread asks (the executor's actor, when the
    /// function is registered). What `/healthz` must notice.
    BrokenBackend,
}

/// A backend whose kernels fail as told, per function key (`namespace/name`).
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    plan: Arc<Mutex<HashMap<String, Fault>>>,
    /// Every kernel takes this many times as long (1 = as the device runs it).
    slowdown: Arc<Mutex<f64>>,
}

impl FaultBackend {
    /// Wraps `inner`; no faults until [`inject`](Self::inject).
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultBackend { inner, plan: Arc::default(), slowdown: Arc::new(Mutex::new(1.0)) }
    }

    /// Makes every kernel hold its slot `factor` (≥ 1) times the CPU time it used, sleeping
    /// the difference: a slower device class emulated on this one. CPU time, not wall
    /// time: a device's speed does not depend on how busy the host is, and a kernel
    /// preempted on a loaded machine would otherwise be stretched `factor` times over.
    pub fn slow_down(&self, factor: f64) {
        *self.slowdown.lock().unwrap_or_else(|p| p.into_inner()) = factor.max(1.0);
    }

    /// Makes `key`'s kernels misbehave from now on.
    pub fn inject(&self, key: &str, fault: Fault) {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), fault);
    }

    /// Stops injecting faults into `key`.
    pub fn clear(&self, key: &str) {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

impl Backend for FaultBackend {
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn free_memory(&self) -> u64 {
        self.inner.free_memory()
    }
    fn can_run(&self, f: &FunctionDef) -> bool {
        if self.plan.lock().unwrap_or_else(|p| p.into_inner()).get(&f.key()) == Some(&Fault::BrokenBackend) {
            panic!("injected backend bug checking {}", f.key());
        }
        self.inner.can_run(f)
    }
    fn is_resident(&self, f: &FunctionDef) -> bool {
        self.inner.is_resident(f)
    }
    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError> {
        self.inner.load(f)
    }
    fn unload(&self, key: &str) {
        self.inner.unload(key)
    }
    fn set_isolation(&self, isolation: super::Isolation) {
        self.inner.set_isolation(isolation)
    }
    fn begin(
        &self,
        f: &Arc<FunctionDef>,
        owner: Owner,
        inputs: Outputs,
    ) -> Result<Box<dyn Invocation>, ExecError> {
        let fault = self.plan.lock().unwrap_or_else(|p| p.into_inner()).get(&f.key()).copied();
        let inner = self.inner.begin(f, owner, inputs)?;
        let entries = f.kernels.iter().map(|k| k.entry.clone()).collect();
        let slowdown = *self.slowdown.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Box::new(Faulty { inner, fault, entries, slowdown }))
    }
    fn health(&self) -> Result<(), String> {
        self.inner.health()
    }
    fn probe(&self) {
        self.inner.probe()
    }
}

struct Faulty {
    inner: Box<dyn Invocation>,
    fault: Option<Fault>,
    entries: Vec<String>,
    slowdown: f64,
}

impl Invocation for Faulty {
    fn run_kernel(&mut self, k: usize) -> Result<Duration, ExecError> {
        match self.fault {
            Some(Fault::Panic) => panic!("injected fault in kernel {}", self.entries[k]),
            Some(Fault::Hang(d)) => {
                std::thread::sleep(d);
                Err(ExecError::Timeout { entry: self.entries[k].clone(), limit_ms: d.as_millis() as u64 })
            }
            Some(Fault::Slow(d)) => {
                std::thread::sleep(d);
                self.inner.run_kernel(k).map(|t| t + d)
            }
            None | Some(Fault::BrokenBackend) if self.slowdown > 1.0 => {
                let (cpu, wall) = (ThreadTime::now(), Instant::now());
                let t = self.inner.run_kernel(k)?;
                let target = cpu.elapsed().mul_f64(self.slowdown);
                if let Some(extra) = target.checked_sub(wall.elapsed()) {
                    std::thread::sleep(extra);
                }
                Ok(t.max(target))
            }
            None | Some(Fault::BrokenBackend) => self.inner.run_kernel(k),
        }
    }
    fn finish(self: Box<Self>) -> Result<Outputs, ExecError> {
        self.inner.finish()
    }
}
