//! The gateway's handle: starts the actor and turns each call into a message to it.

use super::*;

/// A handle to the gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    tx: mpsc::UnboundedSender<Msg>,
    metrics: Arc<GatewayMetrics>,
    ready: watch::Receiver<bool>,
}

impl Gateway {
    /// Starts a gateway with no nodes and no functions.
    pub fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        let metrics = Arc::new(GatewayMetrics::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let mut actor = Actor {
            config,
            sched: None,
            generation: 0,
            slots: Vec::new(),
            nodes: Vec::new(),
            functions: BTreeMap::new(),
            fids: HashMap::new(),
            pending: HashMap::new(),
            by_req: HashMap::new(),
            next_gid: 0,
            measured: HashMap::new(),
            epoch: Instant::now(),
            tx: tx.clone(),
            metrics: metrics.clone(),
            ready: ready_tx,
        };
        actor.rebuild()?;
        tokio::spawn(actor.run(rx));
        Ok(Gateway { tx, metrics, ready })
    }

    fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    /// Invokes `namespace/name`.
    pub async fn invoke(
        &self,
        key: &str,
        inputs: BTreeMap<String, Vec<u8>>,
        deadline: Option<Duration>,
    ) -> Result<Invoked, GatewayError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Invoke { key: key.to_string(), inputs, deadline, reply });
        rx.await.map_err(|_| GatewayError::Unavailable("gateway shutting down".into()))?
    }

    /// Registers or updates a function (it is pushed to nodes when first needed there).
    pub fn put_function(&self, def: proto::FunctionDef) {
        self.send(Msg::PutFunction { def });
    }

    /// Removes a function and evicts it from every node.
    pub fn remove_function(&self, key: &str) {
        self.send(Msg::RemoveFunction { key: key.to_string() });
    }

    /// Adds a node executor and follows its status stream.
    pub fn add_node(&self, name: &str, client: NodeClient) {
        self.send(Msg::AddNode { name: name.to_string(), client });
    }

    /// Removes a node (its in-flight requests are retried elsewhere when they fail).
    pub fn remove_node(&self, name: &str) {
        self.send(Msg::RemoveNode { name: name.to_string() });
    }

    /// Switches policy, admission or eviction live.
    pub async fn set_scheduler(&self, config: SchedulerConfig) -> Result<(), GatewayError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::SetScheduler { config, reply });
        rx.await.map_err(|_| GatewayError::Unavailable("gateway shutting down".into()))?
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    /// Whether at least one healthy device is known.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until at least one healthy device is known, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }
}
