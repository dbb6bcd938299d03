//! One invocation: route, send, and on a refusal or a dead node try the next-best node
//! while the deadline allows. Every call ends in exactly one answer, and every dispatch
//! has a timer (deadline + [`DISPATCH_GRACE`]).

use super::refuse::{check_inputs, relative_deadline};
use super::*;

/// Why one try did not produce the answer.
enum Tried {
    /// The executor refused (admission, no capacity, out of memory): another may not.
    Refused(GatewayError),
    /// The node is gone.
    Down(String),
}

impl Gateway {
    /// Invokes `namespace/name`.
    pub async fn invoke(
        &self,
        key: &str,
        inputs: BTreeMap<String, Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Invoked, GatewayError> {
        let arrival = Instant::now();
        let mut rel = None;
        let result = self.route_and_run(key, inputs, deadline, arrival, &mut rel).await;
        let m = &self.inner.metrics;
        // Per-function series only for functions that exist: a request naming anything
        // must not mint a series.
        let key = if rel.is_some() { key } else { "" };
        match &result {
            Ok(i) => {
                let in_time = rel.is_some_and(|d| i.total <= d);
                m.answered(key, "ok", Some((i.total.as_secs_f64(), in_time, i.cold_start)));
                self.inner.stats.record(
                    key,
                    Some((i.total.as_secs_f64() * 1000.0, in_time, i.cold_start)),
                    false,
                );
            }
            Err(e) if key.is_empty() => m.outcome(e.reason()),
            Err(e) => {
                m.answered(key, e.reason(), None);
                self.inner.stats.record(key, None, matches!(e, GatewayError::Rejected { .. }));
            }
        }
        result
    }

    async fn route_and_run(
        &self,
        key: &str,
        inputs: BTreeMap<String, Bytes>,
        deadline: Option<Duration>,
        arrival: Instant,
        deadline_used: &mut Option<Duration>,
    ) -> Result<Invoked, GatewayError> {
        let def = self
            .state()
            .functions
            .get(key)
            .cloned()
            .ok_or_else(|| GatewayError::NotFound(format!("no function {key}")))?;
        check_inputs(&def, &inputs)?;
        let rel = relative_deadline(&def, deadline)?;
        // Held until the answer: a gateway at its ceiling refuses at once.
        let bytes = inputs.values().map(|v| v.len() as u64).sum();
        let _slot = self
            .inner
            .in_flight
            .admit(bytes)
            .map_err(|reason| GatewayError::Rejected { reason, retry_after_ms: 100 })?;
        *deadline_used = Some(rel);
        let due = arrival + rel;
        let inputs: HashMap<String, Bytes> = inputs.into_iter().collect();
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<GatewayError> = None;
        while tried.len() < MAX_TRIES {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or_else(|| {
                    GatewayError::DeadlineExceeded("the deadline passed before any node could take it".into())
                }));
            }
            let choice = self.state().route(&def, key, left.as_secs_f64() * 1000.0, &tried);
            let Some(choice) = choice else { break };
            // A retry is an attempt that follows another, not a failure with nowhere to go.
            if !tried.is_empty() {
                self.inner.metrics.retries.inc();
            }
            tried.push(choice.node.clone());
            let _in_flight = InFlight::new(&self.inner.metrics);
            let outcome = self.run_on(&def, &choice, inputs.clone(), due, arrival).await;
            self.state().uncharge(&choice);
            match outcome {
                Ok(invoked) => return Ok(invoked),
                Err(Ok(answer)) => return Err(answer),
                Err(Err(Tried::Refused(e))) => {
                    debug!(node = %choice.node, function = key, "refused: {e}");
                    last = Some(e);
                }
                Err(Err(Tried::Down(why))) => {
                    warn!(node = %choice.node, function = key, "node failed with a request in flight: {why}");
                    self.node_down(&choice.node, choice.incarnation);
                    last = Some(GatewayError::Unavailable(format!("the node running it failed: {why}")));
                }
            }
        }
        Err(last.unwrap_or_else(|| GatewayError::Unavailable(format!("no healthy executor can run {key}"))))
    }

    /// One try on one node: the outer `Err` is the request's answer, the inner one says
    /// whether another node may do better.
    async fn run_on(
        &self,
        def: &Arc<proto::FunctionDef>,
        choice: &Choice,
        inputs: HashMap<String, Bytes>,
        due: Instant,
        arrival: Instant,
    ) -> Result<Invoked, Result<GatewayError, Tried>> {
        if !choice.has_policy {
            self.push_policy(&choice.node, &choice.client).await;
        }
        let left = due.saturating_duration_since(Instant::now());
        let req = proto::ExecuteRequest {
            namespace: def.namespace.clone(),
            name: def.name.clone(),
            inputs,
            deadline_ms: (left.as_millis().min(u32::MAX as u128) as u32).max(1),
            share_id: String::new(),
            device: String::new(),
        };
        let call = async {
            if !choice.registered {
                self.register(def, choice).await?;
            }
            match choice.client.execute(req.clone()).await {
                // An executor that restarted no longer knows the function: register again once.
                Err(NodeFailure::Answer(GatewayError::NotFound(_))) => {
                    self.register(def, choice).await?;
                    choice.client.execute(req).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(left + DISPATCH_GRACE, call).await {
            Ok(r) => r,
            // Dropping the call cancels it at the executor (the stream is reset; a
            // request still queued there is dropped).
            Err(_) => {
                return Err(Ok(GatewayError::DeadlineExceeded(format!(
                    "node {} did not answer within the deadline + {} ms",
                    choice.node,
                    DISPATCH_GRACE.as_millis()
                ))));
            }
        };
        match result {
            Ok(r) => Ok(self.served(def, choice, r, arrival)),
            Err(NodeFailure::Down(why)) => Err(Err(Tried::Down(why))),
            Err(NodeFailure::Answer(e)) => match e {
                GatewayError::Rejected { .. } | GatewayError::Unavailable(_) => Err(Err(Tried::Refused(e))),
                other => Err(Ok(other)),
            },
        }
    }

    async fn register(&self, def: &Arc<proto::FunctionDef>, choice: &Choice) -> Result<(), NodeFailure> {
        choice.client.put_function((**def).clone()).await?;
        let key = format!("{}/{}", def.namespace, def.name);
        if let Some(n) =
            self.state().nodes.get_mut(&choice.node).filter(|n| n.incarnation == choice.incarnation)
        {
            n.registered.insert(key, def.version.clone());
        }
        Ok(())
    }

    fn served(
        &self,
        def: &proto::FunctionDef,
        choice: &Choice,
        r: proto::ExecuteResponse,
        arrival: Instant,
    ) -> Invoked {
        let t = r.timing.unwrap_or_default();
        let key = format!("{}/{}", def.namespace, def.name);
        {
            let mut st = self.state();
            let kind = st
                .nodes
                .get(&choice.node)
                .and_then(|n| n.devices.iter().find(|d| d.status.id == r.device))
                .map_or_else(|| choice.kind.clone(), |d| d.status.kind.clone());
            if t.exec_ms > 0.0 {
                st.learn(&key, &choice.node, &kind, t.exec_ms);
            }
        }
        let d = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let total = arrival.elapsed();
        Invoked {
            outputs: r.outputs.into_iter().collect(),
            cold_start: r.cold_start,
            device: format!("{}/{}", choice.node, r.device),
            queue: total.saturating_sub(d(t.total_ms)) + d(t.queue_ms),
            node_queue: d(t.queue_ms),
            cold: d(t.cold_start_ms),
            exec: d(t.exec_ms),
            total,
        }
    }
}

/// Counts a request in flight to an executor while it lives.
struct InFlight<'a>(&'a GatewayMetrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a GatewayMetrics) -> Self {
        m.in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

use super::candidates::Choice;
