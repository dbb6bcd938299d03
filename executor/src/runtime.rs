//! The executor core: registered functions, the scheduler actor that owns the per-device
//! kernel queues, and the invocation lifecycle. Every accepted invocation ends in exactly
//! one answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_scheduler::{
    AcceleratorClass, Cluster, Completed, DeviceId, DeviceKind, Function, FunctionId, Nanos, ReqId, Request,
    Scheduler, SchedulerConfig,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::backend::{Backend, Invocation, Outputs};
use crate::error::ExecError;
use crate::memory::Owner;
use crate::metrics::ExecutorMetrics;
use crate::model::FunctionDef;
use crate::status::{DeviceSnapshot, NodeSnapshot};

/// A device-plugin share: a slice of one device with a weight and a memory quota.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    /// Share ID as handed to pods (`KAAS_SHARE_IDS`).
    pub id: String,
    /// Index of its device in the executor's device list.
    pub device: usize,
    /// Fair-share weight of kernels submitted with it.
    pub weight: u32,
    /// Memory quota in bytes (0 = none).
    pub memory_quota: u64,
}

/// How an executor runs.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Node name in status reports.
    pub node: String,
    /// Policy, admission, eviction and granularity of the per-device queues.
    pub scheduler: SchedulerConfig,
    /// Shares handed out by the device plugin.
    pub shares: Vec<Share>,
    /// How often device health is probed.
    pub health_interval: Duration,
}

/// A completed invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    /// Output buffers.
    pub outputs: Outputs,
    /// Whether it paid a cold start.
    pub cold_start: bool,
    /// Device it ran on.
    pub device: String,
    /// Time waiting for a device.
    pub queue: Duration,
    /// Time making the function resident.
    pub cold: Duration,
    /// Device time of its kernels.
    pub exec: Duration,
    /// End to end.
    pub total: Duration,
}

type Reply = oneshot::Sender<Result<Executed, ExecError>>;

enum Msg {
    Execute {
        key: String,
        inputs: Outputs,
        deadline: Option<Duration>,
        share: Option<String>,
        reply: Reply,
    },
    Done {
        id: ReqId,
        device: usize,
        result: Result<Step, ExecError>,
    },
    /// A warm-up (scale from zero) finished loading a function onto a device.
    Warmed {
        id: ReqId,
        result: Result<Duration, ExecError>,
    },
    Put {
        def: Arc<FunctionDef>,
        reply: oneshot::Sender<Result<Vec<String>, ExecError>>,
    },
    Preload {
        key: String,
        device: Option<String>,
        reply: oneshot::Sender<Result<Vec<String>, ExecError>>,
    },
    Evict {
        key: String,
        reply: oneshot::Sender<Result<Vec<String>, ExecError>>,
    },
    SetScheduler {
        config: SchedulerConfig,
        reply: oneshot::Sender<Result<(), ExecError>>,
    },
}

/// What a dispatched job brings back.
struct Step {
    invocation: Option<Box<dyn Invocation>>,
    outputs: Option<Outputs>,
    exec: Duration,
    cold: Option<Duration>,
}

struct Pending {
    reply: Reply,
    f: Arc<FunctionDef>,
    owner: Owner,
    inputs: Option<Outputs>,
    invocation: Option<Box<dyn Invocation>>,
    arrival: Instant,
    deadline: Instant,
    started: Option<Instant>,
    cold: Option<Duration>,
    exec: Duration,
    device: Option<usize>,
}

/// A handle to a running executor. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    tx: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<NodeSnapshot>,
    metrics: Arc<ExecutorMetrics>,
    devices: Arc<Vec<Arc<dyn Backend>>>,
}

impl Executor {
    /// Starts an executor over `devices` on the current tokio runtime.
    pub fn start(devices: Vec<Arc<dyn Backend>>, config: ExecutorConfig) -> Result<Self, ExecError> {
        if devices.is_empty() {
            return Err(ExecError::Unavailable("no devices".into()));
        }
        let mut cluster = Cluster::default();
        for d in &devices {
            let info = d.info();
            let kind = if info.kind == "gpu" { DeviceKind::Gpu } else { DeviceKind::Cpu };
            // One class per device: runtimes are looked up per device kind anyway.
            cluster.add_class(
                AcceleratorClass {
                    name: info.id.clone(),
                    kind,
                    speed: if kind == DeviceKind::Gpu { 1.0 } else { 0.05 },
                    memory_bytes: info.memory_bytes,
                    slots: info.slots,
                    price_per_hour: if kind == DeviceKind::Gpu { 1.0 } else { 0.05 },
                },
                1,
            );
        }
        let sched = Scheduler::new(cluster, config.scheduler.clone())
            .map_err(|e| ExecError::BadFunction(e.to_string()))?;
        let metrics = Arc::new(ExecutorMetrics::default());
        let devices = Arc::new(devices);
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = NodeSnapshot::new(&config.node, &devices);
        let (status_tx, status) = watch::channel(snapshot);
        let actor = Actor {
            sched,
            devices: devices.clone(),
            config,
            functions: HashMap::new(),
            defs: Vec::new(),
            ids: HashMap::new(),
            pending: HashMap::new(),
            epoch: Instant::now(),
            tx: tx.clone(),
            metrics: metrics.clone(),
            status: status_tx,
            invocations: 0,
            published: Instant::now() - Duration::from_secs(1),
            runtime_ewma: HashMap::new(),
        };
        let interval = actor.config.health_interval;
        tokio::spawn(actor.run(rx));
        tokio::spawn(probe_devices(devices.clone(), interval, tx.clone()));
        Ok(Executor { tx, status, metrics, devices })
    }

    async fn call<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, ExecError>>) -> Msg,
    ) -> Result<T, ExecError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).map_err(|_| ExecError::ShuttingDown)?;
        rx.await.map_err(|_| ExecError::ShuttingDown)?
    }

    /// Registers (or replaces) a function; returns the device kinds it can run on here.
    /// Kernel signatures are checked first (off the actor: CUDA C is compiled for it).
    pub async fn put_function(&self, def: FunctionDef) -> Result<Vec<String>, ExecError> {
        let def = Arc::new(def);
        let d = def.clone();
        tokio::task::spawn_blocking(move || crate::signature::check(&d, crate::signature::nvrtc_present()))
            .await
            .map_err(|_| ExecError::BadFunction("the signature check panicked".into()))??;
        self.call(|reply| Msg::Put { def, reply }).await
    }

    /// Runs an invocation of `namespace/name`.
    pub async fn execute(
        &self,
        key: &str,
        inputs: Outputs,
        deadline: Option<Duration>,
        share: Option<String>,
    ) -> Result<Executed, ExecError> {
        self.call(|reply| Msg::Execute { key: key.to_string(), inputs, deadline, share, reply }).await
    }

    /// Makes a function resident on one device (by ID) or on every device that can run it.
    pub async fn preload(&self, key: &str, device: Option<String>) -> Result<Vec<String>, ExecError> {
        self.call(|reply| Msg::Preload { key: key.to_string(), device, reply }).await
    }

    /// Evicts a function everywhere and forgets it.
    pub async fn evict(&self, key: &str) -> Result<Vec<String>, ExecError> {
        self.call(|reply| Msg::Evict { key: key.to_string(), reply }).await
    }

    /// Switches policy, admission, eviction or granularity live.
    pub async fn set_scheduler(&self, config: SchedulerConfig) -> Result<(), ExecError> {
        self.call(|reply| Msg::SetScheduler { config, reply }).await
    }

    /// The latest node status; changes are announced on [`watch`](Self::watch).
    pub fn status(&self) -> NodeSnapshot {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<NodeSnapshot> {
        self.status.clone()
    }

    /// Prometheus metrics of this executor.
    pub fn metrics(&self) -> &Arc<ExecutorMetrics> {
        &self.metrics
    }

    /// The devices.
    pub fn devices(&self) -> &[Arc<dyn Backend>] {
        &self.devices
    }
}

struct Actor {
    sched: Scheduler,
    devices: Arc<Vec<Arc<dyn Backend>>>,
    config: ExecutorConfig,
    /// Registered functions by key.
    functions: HashMap<String, Arc<FunctionDef>>,
    /// Definition behind each scheduler function id.
    defs: Vec<(Arc<FunctionDef>, Option<String>)>,
    /// Scheduler function per (function key, share).
    ids: HashMap<(String, Option<String>), FunctionId>,
    pending: HashMap<ReqId, Pending>,
    epoch: Instant,
    tx: mpsc::UnboundedSender<Msg>,
    metrics: Arc<ExecutorMetrics>,
    status: watch::Sender<NodeSnapshot>,
    invocations: u64,
    /// When status was last published; it is rebuilt at most every 20 ms under load.
    published: Instant,
    /// Measured runtime per (function key, device kind), ms.
    runtime_ewma: HashMap<(String, String), f64>,
}

/// Probes every device on a blocking thread each `interval` (one probe per device in
/// flight at a time, so a hung device cannot pile up threads), until the executor goes.
async fn probe_devices(
    devices: Arc<Vec<Arc<dyn Backend>>>,
    interval: Duration,
    alive: mpsc::UnboundedSender<Msg>,
) {
    let busy: Vec<Arc<std::sync::atomic::AtomicBool>> = devices.iter().map(|_| Arc::default()).collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !alive.is_closed() {
        tick.tick().await;
        for (d, busy) in devices.iter().zip(&busy) {
            if busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
                continue;
            }
            let (d, busy) = (d.clone(), busy.clone());
            tokio::task::spawn_blocking(move || {
                d.probe();
                busy.store(false, std::sync::atomic::Ordering::Release);
            });
        }
    }
}

impl Actor {
    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_health = Instant::now();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = tick.tick() => {
                    self.expire();
                    if last_health.elapsed() >= self.config.health_interval {
                        last_health = Instant::now();
                        self.check_health();
                    }
                }
            }
            self.dispatch();
            if self.published.elapsed() >= Duration::from_millis(20) {
                self.publish();
            }
        }
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(ExecError::ShuttingDown));
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Put { def, reply } => {
                let _ = reply.send(self.put(def));
            }
            Msg::Execute { key, inputs, deadline, share, reply } => {
                self.submit(key, inputs, deadline, share, reply)
            }
            Msg::Done { id, device, result } => self.done(id, device, result),
            Msg::Warmed { id, result } => self.warmed(id, result),
            Msg::Preload { key, device, reply } => {
                let r = self.preload(&key, device.as_deref());
                self.publish();
                let _ = reply.send(r);
            }
            Msg::Evict { key, reply } => {
                let r = self.evict(&key);
                self.publish();
                let _ = reply.send(r);
            }
            Msg::SetScheduler { config, reply } => {
                let now = self.now();
                let r = self
                    .sched
                    .set_policy(now, config.policy.clone())
                    .map_err(|e| ExecError::BadFunction(e.to_string()));
                self.sched.set_admission(config.admission, config.token_bucket_burst);
                self.sched.set_eviction(config.eviction);
                self.sched.set_granularity(config.granularity);
                let _ = reply.send(r);
            }
        }
    }

    fn model(&self, f: &FunctionDef, weight: u32) -> Function {
        let kinds: Vec<String> = self.devices.iter().map(|d| d.info().kind).collect();
        let runtime = self
            .devices
            .iter()
            .zip(&kinds)
            .map(|(d, kind)| {
                d.can_run(f).then(|| {
                    let ms = self
                        .runtime_ewma
                        .get(&(f.key(), kind.clone()))
                        .or(f.runtime_ms.get(kind))
                        .copied()
                        .unwrap_or(1.0);
                    kaas_scheduler::ms(ms)
                })
            })
            .collect();
        let load_time =
            kinds.iter().map(|k| kaas_scheduler::ms(f.load_ms.get(k).copied().unwrap_or(10.0))).collect();
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

    fn put(&mut self, def: Arc<FunctionDef>) -> Result<Vec<String>, ExecError> {
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
    fn share(&self, id: &Option<String>) -> Option<Share> {
        let id = id.as_ref()?;
        if let Some(dev) = id.strip_prefix('@') {
            let device = self.devices.iter().position(|d| d.info().id == dev)?;
            return Some(Share { id: id.clone(), device, weight: 0, memory_quota: 0 });
        }
        self.config.shares.iter().find(|s| &s.id == id).cloned()
    }

    fn function_id(
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

    fn submit(
        &mut self,
        key: String,
        inputs: Outputs,
        deadline: Option<Duration>,
        share: Option<String>,
        reply: Reply,
    ) {
        let result = (|| -> Result<(ReqId, Pending), ExecError> {
            let def =
                self.functions.get(&key).cloned().ok_or_else(|| ExecError::UnknownFunction(key.clone()))?;
            def.check_inputs(&inputs)?;
            let fid = self.function_id(&def, &share)?;
            let now = self.now();
            let rel = deadline.unwrap_or(Duration::from_millis(def.deadline_ms as u64));
            let req = Request { function: fid, arrival: now, deadline: now + rel.as_nanos() as Nanos };
            let id = self.sched.submit(now, req).map_err(|r| match r {
                kaas_scheduler::Rejection::NoCapacity => {
                    ExecError::NoCapacity(format!("no healthy device can run {key}"))
                }
                other => ExecError::Rejected(other.to_string()),
            })?;
            let owner = Owner {
                function: def.key(),
                function_quota: def.memory_quota,
                share: self.share(&share).filter(|s| !s.id.starts_with('@')).map(|s| (s.id, s.memory_quota)),
            };
            let arrival = Instant::now();
            Ok((
                id,
                Pending {
                    reply: oneshot::channel().0,
                    f: def,
                    owner,
                    inputs: Some(inputs),
                    invocation: None,
                    arrival,
                    deadline: arrival + rel,
                    started: None,
                    cold: None,
                    exec: Duration::ZERO,
                    device: None,
                },
            ))
        })();
        match result {
            Ok((id, mut p)) => {
                p.reply = reply;
                self.pending.insert(id, p);
            }
            Err(e) => {
                self.metrics.outcome(e.category());
                let _ = reply.send(Err(e));
            }
        }
    }

    fn dispatch(&mut self) {
        let now = self.now();
        while let Some(d) = self.sched.next_dispatch(now) {
            if d.warmup {
                self.warm_up(d.id, d.function, d.device.0 as usize);
                continue;
            }
            let Some(p) = self.pending.get_mut(&d.id) else {
                warn!(?d, "dispatch for an unknown request");
                self.sched.fail(now, d.id);
                continue;
            };
            let device = d.device.0 as usize;
            let backend = self.devices[device].clone();
            if p.started.is_none() {
                p.started = Some(Instant::now());
                self.metrics.queue_seconds.observe(p.arrival.elapsed().as_secs_f64());
            }
            p.device = Some(device);
            let f = p.f.clone();
            let owner = p.owner.clone();
            let inputs = p.inputs.take();
            let invocation = p.invocation.take();
            let kernels = d.kernel as usize..(d.kernel + d.kernels) as usize;
            let last = d.last;
            let tx = self.tx.clone();
            let id = d.id;
            let metrics = self.metrics.clone();
            tokio::task::spawn_blocking(move || {
                let result = run_step(&*backend, &f, owner, inputs, invocation, kernels, last, &metrics);
                let _ = tx.send(Msg::Done { id, device, result });
            });
        }
        for dr in self.sched.take_dropped() {
            if let Some(p) = self.pending.remove(&dr.id) {
                self.answer(p, Err(ExecError::DeadlineExceeded { waited_ms: 0.0 }));
            }
        }
        for (f, d) in self.sched.take_evictions() {
            let (def, _) = &self.defs[f.0 as usize];
            self.metrics.evictions.inc();
            debug!(function = %def.key(), device = d.0, "evicting");
            self.devices[d.0 as usize].unload(&def.key());
        }
    }

    /// Loads a function for a warm-up dispatch off the actor; the result comes back as
    /// [`Msg::Warmed`].
    fn warm_up(&mut self, id: ReqId, f: FunctionId, device: usize) {
        let def = self.defs[f.0 as usize].0.clone();
        let backend = self.devices[device].clone();
        let tx = self.tx.clone();
        debug!(function = %def.key(), device, "warming up");
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.load(&def)))
                .unwrap_or_else(|_| Err(ExecError::Unavailable("the load panicked".into())))
                .map(|()| start.elapsed());
            let _ = tx.send(Msg::Warmed { id, result });
        });
    }

    fn warmed(&mut self, id: ReqId, result: Result<Duration, ExecError>) {
        let now = self.now();
        match result {
            Ok(took) => {
                self.metrics.load_seconds.observe(took.as_secs_f64());
                self.sched.complete(now, id);
            }
            Err(e) => {
                warn!("warm-up failed: {e}");
                self.sched.fail(now, id);
            }
        }
    }

    fn answer(&mut self, p: Pending, result: Result<Executed, ExecError>) {
        self.invocations += 1;
        match &result {
            Ok(e) => {
                self.metrics.outcome("ok");
                self.metrics.exec_seconds.observe(e.exec.as_secs_f64());
            }
            Err(e) => self.metrics.outcome(e.category()),
        }
        let _ = p.reply.send(result);
    }

    fn done(&mut self, id: ReqId, device: usize, result: Result<Step, ExecError>) {
        let now = self.now();
        let Some(mut p) = self.pending.remove(&id) else {
            // The device was declared lost meanwhile and the request answered or retried.
            return;
        };
        match result {
            Err(e) => {
                self.sched.fail(now, id);
                self.answer(p, Err(e));
            }
            Ok(step) => {
                if let Some(c) = step.cold {
                    p.cold = Some(p.cold.unwrap_or_default() + c);
                }
                p.exec += step.exec;
                let kind = self.devices[device].info().kind;
                let ms = step.exec.as_secs_f64() * 1000.0;
                let e = self.runtime_ewma.entry((p.f.key(), kind)).or_insert(ms);
                *e = 0.8 * *e + 0.2 * ms;
                match self.sched.complete(now, id) {
                    Some(Completed::Request) => {
                        let outputs = step.outputs.unwrap_or_default();
                        let started = p.started.unwrap_or(p.arrival);
                        let executed = Executed {
                            outputs,
                            cold_start: p.cold.is_some(),
                            device: self.devices[device].info().id,
                            queue: started - p.arrival,
                            cold: p.cold.unwrap_or_default(),
                            exec: p.exec,
                            total: p.arrival.elapsed(),
                        };
                        self.answer(p, Ok(executed));
                    }
                    Some(Completed::Kernel) => {
                        p.invocation = step.invocation;
                        self.pending.insert(id, p);
                    }
                    Some(Completed::Warmup) => unreachable!("a request's dispatch is never a warm-up"),
                    None => {
                        self.answer(p, Err(ExecError::Unavailable("request lost by the scheduler".into())))
                    }
                }
            }
        }
    }

    /// Answers queued requests whose deadline passed before they started.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.started.is_none() && now > p.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if self.sched.cancel(id)
                && let Some(p) = self.pending.remove(&id)
            {
                let waited = p.arrival.elapsed().as_secs_f64() * 1000.0;
                self.answer(p, Err(ExecError::DeadlineExceeded { waited_ms: waited }));
            }
        }
    }

    fn check_health(&mut self) {
        for (i, d) in self.devices.clone().iter().enumerate() {
            let healthy = d.health().is_ok();
            let dev = DeviceId(i as u32);
            if healthy == self.sched.is_healthy(dev) {
                continue;
            }
            warn!(device = %d.info().id, healthy, "device health changed");
            for lost in self.sched.set_device_health(dev, healthy) {
                if let Some(p) = self.pending.remove(&lost.id) {
                    self.answer(p, Err(ExecError::Unavailable(format!("device {} failed", d.info().id))));
                }
            }
        }
    }

    fn preload(&mut self, key: &str, device: Option<&str>) -> Result<Vec<String>, ExecError> {
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

    fn evict(&mut self, key: &str) -> Result<Vec<String>, ExecError> {
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

    fn publish(&mut self) {
        self.published = Instant::now();
        let devices: Vec<DeviceSnapshot> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let info = d.info();
                let dev = DeviceId(i as u32);
                let health = d.health();
                let free = d.free_memory();
                self.metrics.memory_in_use(&info.id, info.memory_bytes.saturating_sub(free));
                DeviceSnapshot {
                    running: info.slots - self.sched.free_slots(dev).min(info.slots),
                    healthy: health.is_ok() && self.sched.is_healthy(dev),
                    message: health.err().unwrap_or_default(),
                    free_memory_bytes: free,
                    queue_depth: 0,
                    resident: self
                        .sched
                        .residents(dev)
                        .into_iter()
                        .map(|f| self.defs[f.0 as usize].0.key())
                        .collect(),
                    info,
                }
            })
            .collect();
        let queued = self.sched.queued() as u32;
        self.status.send_if_modified(|s| {
            let mut next = s.clone();
            next.devices = devices;
            for d in &mut next.devices {
                d.queue_depth = queued;
            }
            next.invocations_total = self.invocations;
            if next.same_state(s) {
                return false;
            }
            next.sequence = s.sequence + 1;
            *s = next;
            true
        });
    }
}

/// One dispatch on a blocking thread: make resident if needed, begin, run the kernels,
/// finish if last.
#[allow(clippy::too_many_arguments)]
fn run_step(
    backend: &dyn Backend,
    f: &Arc<FunctionDef>,
    owner: Owner,
    inputs: Option<Outputs>,
    invocation: Option<Box<dyn Invocation>>,
    kernels: std::ops::Range<usize>,
    last: bool,
    metrics: &ExecutorMetrics,
) -> Result<Step, ExecError> {
    let mut cold = None;
    let mut inv = match invocation {
        Some(inv) => inv,
        None => {
            if backend.is_resident(f) {
                metrics.cache_hits.inc();
            } else {
                metrics.cache_misses.inc();
                metrics.cold_starts.inc();
                let start = Instant::now();
                backend.load(f)?;
                let took = start.elapsed();
                metrics.load_seconds.observe(took.as_secs_f64());
                cold = Some(took);
            }
            backend.begin(f, owner, inputs.unwrap_or_default())?
        }
    };
    let mut exec = Duration::ZERO;
    for k in kernels {
        exec += inv.run_kernel(k)?;
    }
    if last {
        let outputs = inv.finish()?;
        Ok(Step { invocation: None, outputs: Some(outputs), exec, cold })
    } else {
        Ok(Step { invocation: Some(inv), outputs: None, exec, cold })
    }
}

/// Inputs as the gRPC and HTTP layers hand them over.
pub fn inputs_from(map: impl IntoIterator<Item = (String, Vec<u8>)>) -> Outputs {
    map.into_iter().collect::<BTreeMap<_, _>>()
}
