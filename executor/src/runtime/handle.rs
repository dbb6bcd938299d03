//! The executor's handle: starts the actor and turns each call into a message to it.

use super::*;

/// A handle to a running executor. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    tx: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<NodeSnapshot>,
    metrics: Arc<ExecutorMetrics>,
    devices: Arc<Vec<Arc<dyn Backend>>>,
    in_flight: Arc<crate::inflight::InFlight>,
    /// See [`Executor::set_inline_max`].
    inline_max_us: Arc<std::sync::atomic::AtomicU64>,
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
        for d in &devices {
            d.set_isolation(config.scheduler.isolation);
        }
        let devices = Arc::new(devices);
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = NodeSnapshot::new(&config.node, &devices, &config.accelerator_classes);
        let (status_tx, status) = watch::channel(snapshot);
        metrics.admission_headroom.set(config.scheduler.deadline_headroom);
        let inline_max_us =
            Arc::new(std::sync::atomic::AtomicU64::new(super::step::DEFAULT_INLINE_MAX.as_micros() as u64));
        let actor = Actor {
            sched,
            infos: devices.iter().map(|d| d.info()).collect(),
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
            inline_max_us: inline_max_us.clone(),
            inline_cooldown: HashMap::new(),
        };
        let interval = actor.config.health_interval;
        tokio::spawn(actor.run(rx));
        tokio::spawn(probe_devices(devices.clone(), interval, tx.clone()));
        let in_flight = crate::inflight::InFlight::new(
            "executor",
            crate::inflight::DEFAULT_EXECUTOR_REQUESTS,
            crate::inflight::DEFAULT_EXECUTOR_BYTES,
        );
        Ok(Executor { tx, status, metrics, devices, in_flight, inline_max_us })
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
        // Refused before it is queued when the executor already holds its ceiling of
        // requests or input bytes; the place is freed when the answer is (or the caller
        // goes away).
        let bytes = inputs.values().map(|v| v.len() as u64).sum();
        let _slot = self.in_flight.admit(bytes).map_err(|reason| {
            self.metrics.rejected("queue_full");
            ExecError::Rejected { reason, retry_after_ms: 100 }
        })?;
        self.call(|reply| Msg::Execute { key: key.to_string(), inputs, deadline, share, reply }).await
    }

    /// Sets the ceilings of requests (queued or running) and of their input bytes this
    /// executor holds; past either, [`execute`](Self::execute) answers
    /// [`ExecError::Rejected`] at once.
    pub fn set_in_flight_limits(&self, max_requests: usize, max_bytes: u64) {
        self.in_flight.set(max_requests, max_bytes);
    }

    /// Invocations of functions whose learned runtime on a device is at most `max` run on
    /// the executor's scheduler thread, without the hand-offs to a blocking thread and back
    /// (~50 µs, against a microsecond kernel), each kernel stopped after 2 ms and then run
    /// again on a blocking thread (default 250 µs; zero: never).
    pub fn set_inline_max(&self, max: Duration) {
        self.inline_max_us.store(max.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Requests and input bytes this executor holds now.
    pub fn in_flight(&self) -> (usize, u64) {
        self.in_flight.now()
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

    /// Whether the actor still runs: false once it has ended (a panic in it, or every
    /// handle's shutdown), when every call answers [`ExecError::ShuttingDown`].
    pub fn alive(&self) -> bool {
        !self.tx.is_closed()
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
