//! Nodes: stable identities by name, one status follower each (cancelled when the node
//! is removed or replaced), and the view of each device that routing reads.

use super::*;

impl Gateway {
    /// Adds a node executor (or replaces the one of that name) and follows its status.
    pub fn add_node(&self, name: &str, client: NodeClient) {
        let mut st = self.state();
        st.next_incarnation += 1;
        let incarnation = st.next_incarnation;
        let gw = Arc::downgrade(&self.inner);
        let follower = tokio::spawn(follow_status(gw, name.to_string(), incarnation, client.clone()));
        // Dropping the entry it replaces aborts that one's follower.
        st.nodes.insert(
            name.to_string(),
            NodeEntry {
                incarnation,
                client,
                devices: Vec::new(),
                resident: HashSet::new(),
                up: false,
                registered: HashMap::new(),
                policy_sent: 0,
                reports: 0,
                follower: Some(follower.abort_handle()),
            },
        );
        drop(st);
        self.refresh_ready();
    }

    /// Removes a node; requests in flight there finish or fail over on their own.
    pub fn remove_node(&self, name: &str) {
        self.state().nodes.remove(name);
        self.refresh_ready();
    }

    /// Applies a status report (or `None`: the stream broke) from a node's follower.
    fn node_status(&self, name: &str, incarnation: u64, status: Option<proto::NodeStatus>) -> bool {
        let mut st = self.state();
        let Some(n) = st.nodes.get_mut(name).filter(|n| n.incarnation == incarnation) else {
            return false;
        };
        match status {
            None => {
                if n.up {
                    warn!(node = name, "node executor unreachable");
                    self.inner.metrics.node_failures.inc();
                }
                n.up = false;
                // A restarted executor has forgotten its functions and its policy.
                n.registered.clear();
                n.policy_sent = 0;
            }
            Some(s) => {
                if !n.up {
                    info!(node = name, devices = s.devices.len(), "node executor up");
                }
                n.up = true;
                n.resident = s
                    .resident
                    .iter()
                    .map(|r| (format!("{}/{}", r.namespace, r.name), r.device.clone()))
                    .collect();
                // The report includes what was routed there before it: charges start over.
                n.reports += 1;
                n.devices = s
                    .devices
                    .into_iter()
                    .map(|status| DeviceView { status, charged: 0, charged_ms: 0.0 })
                    .collect();
            }
        }
        drop(st);
        self.refresh_ready();
        true
    }

    /// Marks a node down after a call to it failed at the transport.
    pub(crate) fn node_down(&self, name: &str, incarnation: u64) {
        let mut st = self.state();
        if let Some(n) = st.nodes.get_mut(name).filter(|n| n.incarnation == incarnation && n.up) {
            n.up = false;
            n.registered.clear();
            n.policy_sent = 0;
            self.inner.metrics.node_failures.inc();
        }
        drop(st);
        self.refresh_ready();
    }

    fn refresh_ready(&self) {
        let healthy: usize = self
            .state()
            .nodes
            .values()
            .filter(|n| n.up)
            .map(|n| n.devices.iter().filter(|d| d.status.healthy).count())
            .sum();
        self.inner.metrics.healthy_devices.set(healthy as i64);
        self.inner.ready.send_if_modified(|r| {
            let changed = *r != (healthy > 0);
            *r = healthy > 0;
            changed
        });
    }

    /// Pushes the cluster's policy to a node that has not got the current version.
    pub(crate) async fn push_policy(&self, name: &str, client: &NodeClient) {
        let (config, version) = {
            let mut st = self.state();
            let v = st.policy_version;
            let config = st.config.scheduler.clone();
            match st.nodes.get_mut(name) {
                Some(n) if n.policy_sent != v => n.policy_sent = v,
                _ => return,
            }
            (config, v)
        };
        match client.set_policy(&config).await {
            Ok(()) => debug!(node = name, policy = %config.policy.name, "policy pushed"),
            Err(e) => {
                warn!(node = name, "pushing the scheduling policy: {e:?}");
                if let Some(n) = self.state().nodes.get_mut(name).filter(|n| n.policy_sent == version) {
                    n.policy_sent = 0;
                }
            }
        }
    }
}

/// Follows a node's status stream, applying every update and `None` when it breaks;
/// reconnects with backoff. Ends when the node is removed or replaced (it is also
/// aborted then).
async fn follow_status(gw: std::sync::Weak<Inner>, name: String, incarnation: u64, client: NodeClient) {
    let mut backoff = Duration::from_millis(100);
    // The follower does not keep the gateway alive.
    let report = |s: Option<proto::NodeStatus>| {
        gw.upgrade().is_some_and(|inner| Gateway { inner }.node_status(&name, incarnation, s))
    };
    let push = || async {
        if let Some(inner) = gw.upgrade() {
            Gateway { inner }.push_policy(&name, &client).await;
        }
    };
    loop {
        match &client {
            NodeClient::Local(ex) => {
                let mut rx = ex.watch();
                let mut first = true;
                loop {
                    let s = proto::NodeStatus::from(&*rx.borrow_and_update());
                    if !report(Some(s)) {
                        return;
                    }
                    if first {
                        first = false;
                        push().await;
                    }
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            }
            NodeClient::Remote(c) => {
                match c.clone().watch_status(proto::WatchStatusRequest { interval_ms: 20 }).await {
                    Ok(stream) => {
                        backoff = Duration::from_millis(100);
                        let mut stream = stream.into_inner();
                        let mut first = true;
                        while let Ok(Some(s)) = stream.message().await {
                            if !report(Some(s)) {
                                return;
                            }
                            if first {
                                first = false;
                                push().await;
                            }
                        }
                    }
                    Err(e) => debug!(node = %name, "status stream: {e}"),
                }
            }
        }
        if !report(None) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
