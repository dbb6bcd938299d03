//! The executor core: registered functions, the scheduler actor that owns the per-device
//! kernel queues, and the invocation lifecycle. Every accepted invocation ends in exactly
//! one answer.

use std::collections::HashMap;
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

mod functions;
mod handle;
mod health;
mod learn;
mod step;
pub use handle::Executor;
use step::run_step;
pub use step::{DEFAULT_INLINE_MAX, inputs_from};

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
    /// The `AcceleratorClass` this node's devices of each kind (`gpu`, `cpu`) belong to,
    /// reported in status so that routing can use the class's profile, speed and price;
    /// a kind not listed is reported without a class.
    pub accelerator_classes: std::collections::BTreeMap<String, String>,
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
    /// Wall time of the whole step on its blocking thread (begin, kernels, finish).
    wall: Duration,
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
    /// Time its steps held a slot as the scheduler saw it, from each dispatch to its
    /// completion being handled (cold starts excluded): what the model learns.
    busy: Duration,
    /// When its current step was dispatched.
    step_at: Option<Instant>,
    device: Option<usize>,
}

struct Actor {
    /// See [`Executor::set_inline_max`].
    inline_max_us: Arc<std::sync::atomic::AtomicU64>,
    /// Per (function, device kind) that overran its budget on this thread: the sample
    /// count of its learned runtime before which it is not tried here again.
    inline_cooldown: learn::ByKind<u64>,
    sched: Scheduler,
    devices: Arc<Vec<Arc<dyn Backend>>>,
    /// Each device's [`Backend::info`], which does not change: read per request without
    /// cloning its strings.
    infos: Vec<crate::backend::DeviceInfo>,
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
    /// Measured runtime per (function key, device kind).
    runtime_ewma: learn::ByKind<learn::Measured>,
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
                let _ = reply.send(self.set_scheduler(config));
            }
        }
    }

    /// Applies a scheduling policy live. What did not change is left alone: gateways push
    /// the policy on every (re)connect, and a policy switch resets its fair-share state.
    fn set_scheduler(&mut self, config: SchedulerConfig) -> Result<(), ExecError> {
        let now = self.now();
        let current = self.sched.config().clone();
        if config.policy != current.policy {
            self.sched
                .set_policy(now, config.policy.clone())
                .map_err(|e| ExecError::BadFunction(e.to_string()))?;
            info!(policy = %config.policy.name, "scheduling policy switched");
        }
        if config.admission != current.admission || config.token_bucket_burst != current.token_bucket_burst {
            self.sched.set_admission(config.admission, config.token_bucket_burst);
        }
        // The configured headroom, the floor of the one the scheduler learns.
        if config.deadline_headroom != current.deadline_headroom {
            self.sched
                .set_deadline_headroom(config.deadline_headroom)
                .map_err(|e| ExecError::BadFunction(e.to_string()))?;
            self.metrics.admission_headroom.set(config.deadline_headroom);
        }
        if config.eviction != current.eviction {
            self.sched.set_eviction(config.eviction);
        }
        if config.granularity != current.granularity {
            self.sched.set_granularity(config.granularity);
        }
        if config.isolation != current.isolation {
            for d in self.devices.iter() {
                d.set_isolation(config.isolation);
            }
            self.sched.set_isolation(config.isolation);
            info!(isolation = ?config.isolation, "tenant isolation switched; functions reload in their new scope on their next invocation");
        }
        Ok(())
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
            let id = self.sched.submit(now, req).inspect_err(|r| self.metrics.rejected(r.category()));
            let id = id.map_err(|r| match r {
                kaas_scheduler::Rejection::NoCapacity => {
                    ExecError::NoCapacity(format!("no healthy device can run {key}"))
                }
                other => {
                    let retry_after_ms = match &other {
                        kaas_scheduler::Rejection::Warming { retry_after, .. }
                        | kaas_scheduler::Rejection::RateLimited { retry_after } => retry_after / 1_000_000,
                        _ => 100,
                    }
                    .max(1);
                    ExecError::Rejected { reason: other.to_string(), retry_after_ms }
                }
            })?;
            let owner = Owner {
                function: key,
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
                    busy: Duration::ZERO,
                    step_at: None,
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
            p.step_at = Some(Instant::now());
            let f = p.f.clone();
            let owner = p.owner.clone();
            let inputs = p.inputs.take();
            let invocation = p.invocation.take();
            let kernels = d.kernel as usize..(d.kernel + d.kernels) as usize;
            let last = d.last;
            // A microsecond kernel runs here, under a budget, rather than paying the
            // hand-offs to a blocking thread and back; one that overruns it runs again there.
            if invocation.is_none()
                && kernels.start == 0
                && last
                && let Some(inputs) = inputs.as_ref()
                && self.runs_inline(&f, &owner.function, device, inputs)
            {
                match step::run_inline(&*backend, &f, owner.clone(), inputs.clone(), &self.metrics) {
                    step::Inline::Ran(result) => {
                        self.done(d.id, device, result);
                        continue;
                    }
                    // It took at least the budget: learned so, and not tried here again
                    // before 16 runs elsewhere have been measured (a function that now
                    // hangs, whose runs are never measured, costs this thread one budget).
                    step::Inline::Overran => {
                        let kind = self.infos[device].kind.clone();
                        self.learn(&owner.function, device, step::INLINE_BUDGET);
                        let measured =
                            learn::get(&self.runtime_ewma, &owner.function, &kind).map_or(0, |m| m.samples);
                        learn::put(
                            &mut self.inline_cooldown,
                            &owner.function,
                            &kind,
                            measured + step::INLINE_COOLDOWN_RUNS,
                        );
                    }
                    step::Inline::Unsupported => {}
                }
            }
            let tx = self.tx.clone();
            let id = d.id;
            let metrics = self.metrics.clone();
            tokio::task::spawn_blocking(move || {
                // A panicking backend answers like a faulting kernel and frees the slot.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_step(&*backend, &f, owner, inputs, invocation, kernels, last, &metrics)
                }))
                .unwrap_or_else(|panic| Err(step::panicked(&f, panic)));
                let _ = tx.send(Msg::Done { id, device, result });
            });
        }
        for dr in self.sched.take_dropped() {
            if let Some(p) = self.pending.remove(&dr.id) {
                debug!(
                    function = %p.f.key(),
                    left_ms = p.deadline.saturating_duration_since(Instant::now()).as_secs_f64() * 1000.0,
                    "dropped: the policy judged it can no longer meet its deadline"
                );
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
                // The slot is the scheduler's until the completion is handled here, which
                // on a loaded host comes well after the kernel ended: the next request
                // starts no sooner, so the model learns that, not the step's own wall time.
                let held = p.step_at.take().map_or(step.wall, |t| t.elapsed()).max(step.wall);
                p.busy += held.saturating_sub(step.cold.unwrap_or_default());
                self.metrics.busy(&self.infos[device].id, step.wall.as_secs_f64());
                match self.sched.complete(now, id) {
                    Some(Completed::Request) => {
                        // The slot time, not only the kernels': buffers, instances and
                        // output copies take a slot too, and admission must count them.
                        self.learn(&p.owner.function, device, p.busy.max(p.exec));
                        let h = self.sched.deadline_headroom();
                        if h != self.metrics.admission_headroom.get() {
                            debug!(headroom = h, "deadline admission's margin follows its prediction errors");
                            self.metrics.admission_headroom.set(h);
                        }
                        let outputs = step.outputs.unwrap_or_default();
                        let started = p.started.unwrap_or(p.arrival);
                        let executed = Executed {
                            outputs,
                            cold_start: p.cold.is_some(),
                            device: self.infos[device].id.clone(),
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

    /// Answers queued requests whose deadline passed before they started, and drops
    /// queued requests whose caller has gone (a gateway's dispatch timer fired, a client
    /// hung up): they would only take a slot from work someone still waits for.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<(ReqId, bool)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.started.is_none() && (now > p.deadline || p.reply.is_closed()))
            .map(|(id, p)| (*id, p.reply.is_closed()))
            .collect();
        for (id, gone) in late {
            if self.sched.cancel(id)
                && let Some(p) = self.pending.remove(&id)
            {
                if gone {
                    self.metrics.outcome("cancelled");
                    continue;
                }
                let waited = p.arrival.elapsed().as_secs_f64() * 1000.0;
                self.answer(p, Err(ExecError::DeadlineExceeded { waited_ms: waited }));
            }
        }
    }
}
