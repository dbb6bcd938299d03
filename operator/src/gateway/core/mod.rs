//! The gateway actor. It owns a scheduler over every device of every node; requests
//! queue there under the active policy and go to a node when the model has a slot free.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_executor::proto;
use kaas_scheduler::{
    AcceleratorClass, Cluster, Completed, DeviceId, DeviceKind, Function, FunctionId, Nanos, Rejection,
    ReqId, Request, Scheduler, SchedulerConfig, ms,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::metrics::GatewayMetrics;
use super::node::{NodeClient, NodeFailure};
use super::{GatewayError, Invoked};

mod cluster_model;
mod handle;
mod nodes;
mod refuse;
use cluster_model::Measured;
pub use handle::Gateway;
use refuse::{check_inputs, rejection};

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Policy, admission, eviction (granularity is always per request at the gateway).
    pub scheduler: SchedulerConfig,
    /// Price per device-hour by device kind, for cost-aware policies.
    pub prices: BTreeMap<String, f64>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            scheduler: SchedulerConfig::new(kaas_scheduler::PolicyConfig::named("slo-aware")),
            prices: [("gpu".to_string(), 1.0), ("cpu".to_string(), 0.05)].into(),
        }
    }
}

type Reply = oneshot::Sender<Result<Invoked, GatewayError>>;

enum Msg {
    Invoke {
        key: String,
        inputs: BTreeMap<String, Vec<u8>>,
        deadline: Option<Duration>,
        reply: Reply,
    },
    Done {
        gid: u64,
        node: usize,
        result: Result<proto::ExecuteResponse, NodeFailure>,
    },
    PutFunction {
        def: proto::FunctionDef,
    },
    RemoveFunction {
        key: String,
    },
    AddNode {
        name: String,
        client: NodeClient,
    },
    RemoveNode {
        name: String,
    },
    NodeStatus {
        name: String,
        status: Option<proto::NodeStatus>,
    },
    SetScheduler {
        config: SchedulerConfig,
        reply: oneshot::Sender<Result<(), GatewayError>>,
    },
    /// A warm-up (scale from zero) finished on a node: `ok` says whether it loaded.
    Warmed {
        id: ReqId,
        generation: u64,
        ok: bool,
    },
}

struct NodeEntry {
    name: String,
    client: NodeClient,
    devices: Vec<proto::DeviceStatus>,
    up: bool,
    /// (function key, version) registered there.
    registered: HashSet<(String, String)>,
}

struct Pending {
    reply: Reply,
    key: String,
    inputs: BTreeMap<String, Vec<u8>>,
    arrival: Instant,
    deadline: Instant,
    /// Its handle in the current scheduler, while it is known there.
    req: Option<ReqId>,
    dispatched: bool,
    /// When it was last sent to a node, and the device kind it went to.
    sent: Option<(Instant, String)>,
    attempts: u32,
}

struct Actor {
    config: GatewayConfig,
    sched: Option<Scheduler>,
    generation: u64,
    /// (node index, device ID) of each scheduler device.
    slots: Vec<(usize, String)>,
    nodes: Vec<NodeEntry>,
    functions: BTreeMap<String, Arc<proto::FunctionDef>>,
    fids: HashMap<String, FunctionId>,
    /// Requests by gateway ID (scheduler handles are reused across rebuilds).
    pending: HashMap<u64, Pending>,
    /// Gateway ID of each request known to the current scheduler.
    by_req: HashMap<ReqId, u64>,
    next_gid: u64,
    /// Measured service time (dispatch to answer) per (function, device kind): EWMA of
    /// the mean and of the absolute deviation in ms, and the sample count. Once there are
    /// enough samples, mean + 2 deviations replaces the declared profile in the model, so
    /// admission predicts what actually happens, with a margin for its variance.
    measured: HashMap<(String, String), Measured>,
    epoch: Instant,
    tx: mpsc::UnboundedSender<Msg>,
    metrics: Arc<GatewayMetrics>,
    ready: watch::Sender<bool>,
}

impl Actor {
    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = tick.tick() => self.expire(),
            }
            self.dispatch();
        }
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(GatewayError::Unavailable("gateway shutting down".into())));
        }
    }

    fn sched(&mut self) -> &mut Scheduler {
        self.sched.as_mut().expect("scheduler built at start")
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Invoke { key, inputs, deadline, reply } => self.invoke(key, inputs, deadline, reply),
            Msg::Done { gid, node, result } => self.done(gid, node, result),
            Msg::Warmed { id, generation, ok } => {
                let now = self.now();
                // A scheduler rebuilt meanwhile no longer knows the warm-up.
                if generation == self.generation
                    && let Some(sched) = self.sched.as_mut()
                {
                    if ok {
                        sched.complete(now, id);
                    } else {
                        sched.fail(now, id);
                    }
                }
            }
            Msg::PutFunction { def } => {
                let key = format!("{}/{}", def.namespace, def.name);
                info!(function = %key, version = %def.version, "function registered with the gateway");
                self.functions.insert(key, Arc::new(def));
                if let Err(e) = self.rebuild() {
                    warn!("rebuilding the scheduler: {e}");
                }
            }
            Msg::RemoveFunction { key } => {
                if self.functions.remove(&key).is_some() {
                    let (ns, name) = key.split_once('/').unwrap_or(("", &key));
                    for n in &mut self.nodes {
                        n.registered.retain(|(k, _)| k != &key);
                        let client = n.client.clone();
                        let (ns, name) = (ns.to_string(), name.to_string());
                        tokio::spawn(async move {
                            if let Err(e) = client.evict(&ns, &name).await {
                                warn!("evicting {ns}/{name}: {e:?}");
                            }
                        });
                    }
                    let _ = self.rebuild();
                }
            }
            Msg::AddNode { name, client } => {
                self.nodes.retain(|n| n.name != name);
                self.nodes.push(NodeEntry {
                    name: name.clone(),
                    client: client.clone(),
                    devices: Vec::new(),
                    up: false,
                    registered: HashSet::new(),
                });
                tokio::spawn(follow_status(name, client, self.tx.clone()));
            }
            Msg::RemoveNode { name } => {
                if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
                    n.up = false;
                }
                self.nodes.retain(|n| n.name != name);
                let _ = self.rebuild();
            }
            Msg::NodeStatus { name, status } => self.node_status(&name, status),
            Msg::SetScheduler { config, reply } => {
                let now = self.now();
                let sched = self.sched();
                let r = sched
                    .set_policy(now, config.policy.clone())
                    .map_err(|e| GatewayError::BadInput(e.to_string()));
                sched.set_admission(config.admission, config.token_bucket_burst);
                sched.set_eviction(config.eviction);
                if r.is_ok() {
                    info!(policy = %config.policy.name, admission = config.admission.name(), "scheduling policy switched");
                    self.config.scheduler = config;
                }
                let _ = reply.send(r);
            }
        }
    }

    fn invoke(
        &mut self,
        key: String,
        inputs: BTreeMap<String, Vec<u8>>,
        deadline: Option<Duration>,
        reply: Reply,
    ) {
        let Some(def) = self.functions.get(&key).cloned() else {
            self.metrics.outcome("not_found");
            let _ = reply.send(Err(GatewayError::NotFound(format!("no function {key}"))));
            return;
        };
        if let Err(e) = check_inputs(&def, &inputs) {
            self.metrics.outcome(e.reason());
            let _ = reply.send(Err(e));
            return;
        }
        if self.slots.is_empty() {
            self.metrics.outcome("unavailable");
            let _ = reply.send(Err(GatewayError::Unavailable("no executor is connected".into())));
            return;
        }
        let rel = deadline.unwrap_or(Duration::from_millis(def.deadline_ms as u64));
        let now = Instant::now();
        let p = Pending {
            reply,
            key,
            inputs,
            arrival: now,
            deadline: now + rel,
            req: None,
            dispatched: false,
            sent: None,
            attempts: 0,
        };
        self.next_gid += 1;
        let gid = self.next_gid;
        self.resubmit(gid, p, self.now());
    }

    fn dispatch(&mut self) {
        let now = self.now();
        let Some(sched) = self.sched.as_mut() else { return };
        let mut starts = Vec::new();
        while let Some(d) = sched.next_dispatch(now) {
            starts.push(d);
        }
        let dropped = sched.take_dropped();
        self.metrics.queued.set(sched.queued() as i64);
        for dr in dropped {
            if let Some(p) = self.by_req.remove(&dr.id).and_then(|gid| self.pending.remove(&gid)) {
                self.answer(
                    p,
                    Err(GatewayError::DeadlineExceeded("the deadline can no longer be met".into())),
                );
            }
        }
        for d in starts {
            let (ni, device) = self.slots[d.device.0 as usize].clone();
            if d.warmup {
                self.warm_up(d.id, d.function, ni, device);
                continue;
            }
            let Some(&gid) = self.by_req.get(&d.id) else {
                self.sched().fail(now, d.id);
                continue;
            };
            let p = self.pending.get_mut(&gid).expect("indexed requests are pending");
            p.dispatched = true;
            p.attempts += 1;
            let kind =
                self.nodes[ni].devices.iter().find(|x| x.id == device).map_or("cpu", |x| x.kind.as_str());
            p.sent = Some((Instant::now(), kind.to_string()));
            let def = self.functions.get(&p.key).cloned();
            let Some(def) = def else { continue };
            let node = &mut self.nodes[ni];
            let needs_put = !node.registered.contains(&(p.key.clone(), def.version.clone()));
            if needs_put {
                node.registered.insert((p.key.clone(), def.version.clone()));
            }
            let left = p.deadline.saturating_duration_since(Instant::now());
            let req = proto::ExecuteRequest {
                namespace: def.namespace.clone(),
                name: def.name.clone(),
                inputs: p.inputs.clone().into_iter().collect(),
                deadline_ms: (left.as_millis() as u32).max(1),
                share_id: String::new(),
                device,
            };
            let client = node.client.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let mut result = Err(NodeFailure::Down("not sent".into()));
                for attempt in 0..2 {
                    if (needs_put || attempt == 1)
                        && let Err(e) = client.put_function((*def).clone()).await
                    {
                        result = Err(e);
                        break;
                    }
                    result = client.execute(req.clone()).await;
                    // An executor that restarted no longer knows the function: register again once.
                    match &result {
                        Err(NodeFailure::Answer(GatewayError::NotFound(_))) if attempt == 0 => continue,
                        _ => break,
                    }
                }
                let _ = tx.send(Msg::Done { gid, node: ni, result });
            });
        }
    }

    /// Makes a function resident on a node's device for a warm-up dispatch (scale from
    /// zero); the outcome comes back as [`Msg::Warmed`].
    fn warm_up(&mut self, id: ReqId, f: FunctionId, node: usize, device: String) {
        let now = self.now();
        let Some(key) = self.fids.iter().find(|(_, v)| **v == f).map(|(k, _)| k.clone()) else {
            self.sched().fail(now, id);
            return;
        };
        let Some(def) = self.functions.get(&key).cloned() else {
            self.sched().fail(now, id);
            return;
        };
        let n = &mut self.nodes[node];
        let needs_put = n.registered.insert((key.clone(), def.version.clone()));
        let client = n.client.clone();
        let tx = self.tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let put = if needs_put { client.put_function((*def).clone()).await.map(|_| ()) } else { Ok(()) };
            let ok = match put {
                Ok(()) => client.preload(&def.namespace, &def.name, &device).await.is_ok(),
                Err(_) => false,
            };
            let _ = tx.send(Msg::Warmed { id, generation, ok });
        });
    }

    fn done(&mut self, gid: u64, node: usize, result: Result<proto::ExecuteResponse, NodeFailure>) {
        let now = self.now();
        let Some(p) = self.pending.remove(&gid) else { return };
        // Known to the current scheduler, or started before a rebuild.
        let current = p.req.inspect(|id| {
            self.by_req.remove(id);
        });
        match result {
            Ok(r) => {
                if let Some((at, kind)) = &p.sent {
                    self.learn(&p.key, kind, at.elapsed());
                }
                if let Some(id) = current
                    && self.sched().complete(now, id) != Some(Completed::Request)
                {
                    debug!(?id, "completion of a request the scheduler no longer tracks");
                }
                let t = r.timing.unwrap_or_default();
                let d = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
                let total = p.arrival.elapsed();
                let node_name = self.nodes.get(node).map_or("?", |n| n.name.as_str());
                let invoked = Invoked {
                    outputs: r.outputs.into_iter().collect(),
                    cold_start: r.cold_start,
                    device: format!("{node_name}/{}", r.device),
                    queue: total.saturating_sub(d(t.total_ms)) + d(t.queue_ms),
                    cold: d(t.cold_start_ms),
                    exec: d(t.exec_ms),
                    total,
                };
                self.answer(p, Ok(invoked));
            }
            Err(NodeFailure::Answer(e)) => {
                if let Some(id) = current {
                    self.sched().fail(now, id);
                }
                self.answer(p, Err(e));
            }
            Err(NodeFailure::Down(why)) => {
                warn!(node, "node failed with a request in flight: {why}");
                if let Some(id) = current {
                    self.sched().fail(now, id);
                }
                self.metrics.node_failures.inc();
                if let Some(n) = self.nodes.get_mut(node)
                    && n.up
                {
                    n.up = false;
                    n.registered.clear();
                    let _ = self.rebuild();
                }
                if Instant::now() < p.deadline && p.attempts < 4 && !self.slots.is_empty() {
                    self.metrics.retries.inc();
                    self.resubmit(gid, p, now);
                } else {
                    self.answer(
                        p,
                        Err(GatewayError::Unavailable(format!("the node running it failed: {why}"))),
                    );
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.dispatched && now > p.deadline)
            .map(|(gid, _)| *gid)
            .collect();
        for gid in late {
            let Some(p) = self.pending.remove(&gid) else { continue };
            if let Some(id) = p.req {
                self.by_req.remove(&id);
                self.sched().cancel(id);
            }
            let waited = p.arrival.elapsed().as_secs_f64() * 1000.0;
            self.answer(
                p,
                Err(GatewayError::DeadlineExceeded(format!(
                    "deadline passed after {waited:.1} ms in the queue"
                ))),
            );
        }
    }

    fn answer(&mut self, p: Pending, result: Result<Invoked, GatewayError>) {
        match &result {
            Ok(i) => {
                self.metrics.outcome("ok");
                self.metrics.latency_seconds.observe(i.total.as_secs_f64());
            }
            Err(e) => self.metrics.outcome(e.reason()),
        }
        let _ = p.reply.send(result);
    }
}

/// Follows a node's status stream, reporting every update and `None` when it breaks;
/// reconnects with backoff.
async fn follow_status(name: String, client: NodeClient, tx: mpsc::UnboundedSender<Msg>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if tx.is_closed() {
            return;
        }
        match &client {
            NodeClient::Local(ex) => {
                let mut rx = ex.watch();
                loop {
                    let s = proto::NodeStatus::from(&*rx.borrow_and_update());
                    if tx.send(Msg::NodeStatus { name: name.clone(), status: Some(s) }).is_err() {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            }
            NodeClient::Remote(c) => {
                match c.clone().watch_status(proto::WatchStatusRequest { interval_ms: 50 }).await {
                    Ok(stream) => {
                        backoff = Duration::from_millis(100);
                        let mut stream = stream.into_inner();
                        while let Ok(Some(s)) = stream.message().await {
                            if tx.send(Msg::NodeStatus { name: name.clone(), status: Some(s) }).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => debug!(node = %name, "status stream: {e}"),
                }
            }
        }
        if tx.send(Msg::NodeStatus { name: name.clone(), status: None }).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
