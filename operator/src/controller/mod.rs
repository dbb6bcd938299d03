//! The controllers (kube-runtime), each a reconcile with I/O only at its ends:
//!
//! - `KernelFunction`: read the world from reflector stores and fetch referenced
//!   ConfigMaps/Secrets/downloads ([`sources`]), then the pure [`decide`] (validation,
//!   function-level admission, placement, conditions), then write: status by
//!   server-side apply, events, preloads on the placed devices. A finalizer evicts the
//!   function from every live executor before it goes.
//! - `AcceleratorClass`: healthy devices and nodes of the class on live nodes.
//! - `SchedulingPolicy`: validates the policy and reports the one the gateway runs.
//!
//! Each of those three emits an event for every condition transition
//! ([`decide::transitions`]) once its status is written.
//! - `KaasNode`: a Warning event when a node's heartbeat goes stale (the node leaves
//!   placement through [`decide::World::is_live`] and the gateway through [`sync`]).
//!
//! They run only on the leader ([`leader`]); every replica's gateway is fed by [`sync`].

pub mod decide;
pub mod leader;
pub mod sources;
pub mod stats;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kaas_crds::{
    AcceleratorClass, AcceleratorClassStatus, FIELD_MANAGER, FUNCTION_FINALIZER, KaasNode, KernelFunction,
    SchedulingPolicy, SchedulingPolicyStatus,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::convert::function_def;
use crate::policy::scheduler_config;
use decide::{Decision, World, decide};

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Evicting from an executor failed; the finalizer stays until it succeeds.
    #[error("evicting from {node}: {message}")]
    Evict {
        /// Node.
        node: String,
        /// Why.
        message: String,
    },
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Accelerator classes.
    pub classes: Store<AcceleratorClass>,
    /// Nodes.
    pub nodes: Store<KaasNode>,
    /// Functions.
    pub functions: Store<KernelFunction>,
    /// Heartbeat age that takes a node out of placement.
    pub stale_after: Duration,
    /// The SchedulingPolicy the gateway runs.
    pub policy_name: String,
    /// Period of re-evaluation (heartbeats age even without events).
    pub requeue: Duration,
    /// How executors are reached (preloads, evictions).
    pub connector: crate::gateway::Connector,
}

impl Context {
    /// A context; events are reported as `kaas-operator` from `instance`.
    pub fn new(
        client: Client,
        stores: (Store<AcceleratorClass>, Store<KaasNode>, Store<KernelFunction>),
        stale_after: Duration,
        policy_name: String,
        instance: Option<String>,
    ) -> Self {
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: "kaas-operator".into(), instance });
        Context {
            client,
            recorder,
            classes: stores.0,
            nodes: stores.1,
            functions: stores.2,
            stale_after,
            policy_name,
            requeue: Duration::from_secs(30),
            connector: crate::gateway::Connector::plaintext(),
        }
    }

    /// The world as the stores see it now.
    pub fn world(&self) -> World {
        fn owned<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
            v.into_iter().map(|a| (*a).clone()).collect()
        }
        World {
            classes: owned(self.classes.state()),
            nodes: owned(self.nodes.state()),
            functions: owned(self.functions.state()),
            now: Timestamp::now(),
            stale_after: self.stale_after,
        }
    }

    async fn event(&self, obj: &impl Resource<DynamicType = ()>, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// An event for every condition that changed status or reason from `old` to `new`
    /// (Warning when it went bad), its reason the condition's and its note saying which
    /// condition; `Admitted` True is reported with reason `Admitted`.
    async fn condition_events(
        &self,
        obj: &impl Resource<DynamicType = ()>,
        old: &[Condition],
        new: &[Condition],
    ) {
        for c in decide::transitions(old, new) {
            let reason =
                if c.type_ == "Admitted" && c.status == "True" { "Admitted" } else { c.reason.as_str() };
            let note = format!("{} is {}: {}", c.type_, c.status, c.message);
            self.event(obj, decide::is_bad(c), reason, note).await;
        }
    }
}

fn condition<'a>(
    s: &'a kaas_crds::KernelFunctionStatus,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == kind)
}

/// Reconciles one `KernelFunction` (behind its finalizer).
pub async fn reconcile_function(kf: Arc<KernelFunction>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = kf.namespace().unwrap_or_else(|| "default".into());
    let span = info_span!("reconcile", kind = "KernelFunction", namespace = %ns, name = %kf.name_any());
    let api: Api<KernelFunction> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FUNCTION_FINALIZER, kf, |event| async {
        match event {
            Finalizer::Apply(kf) => apply_function(&kf, &ctx).await,
            Finalizer::Cleanup(kf) => cleanup_function(&kf, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The status fields the reconciler owns: conditions, observed generation, placements.
/// The traffic figures belong to [`stats`] (another field manager): applying copies of
/// them here would race its writes.
fn decided_fields(status: &kaas_crds::KernelFunctionStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["latencyMs", "sloAttainment", "invocations", "coldStarts", "rejections"] {
            m.remove(k);
        }
    }
    v
}

async fn apply_function(kf: &KernelFunction, ctx: &Context) -> Result<Action, Error> {
    // Input I/O.
    let fetched = sources::prefetch(&ctx.client, kf).await?;
    let world = ctx.world();
    // Pure middle.
    let def = function_def(kf, &fetched, &world.classes);
    let Decision { def, status, class } = decide(kf, &world, def);
    // Output I/O.
    let old = kf.status.clone().unwrap_or_default();
    if status != old {
        let api: Api<KernelFunction> =
            Api::namespaced(ctx.client.clone(), &kf.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": KernelFunction::api_version(&()),
            "kind": KernelFunction::kind(&()),
            "status": decided_fields(&status),
        });
        api.patch_status(&kf.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    if let Some(now) = condition(&status, "Admitted")
        && condition(&old, "Admitted").is_none_or(|c| (&c.status, &c.reason) != (&now.status, &now.reason))
    {
        info!(admitted = now.status == "True", class = ?class, reason = %now.reason, "admission decided");
    }
    ctx.condition_events(kf, &old.conditions, &status.conditions).await;
    if let Some(def) = def {
        preload(&ctx.connector, kf, &world, &status, def);
    }
    Ok(Action::requeue(ctx.requeue))
}

/// Makes the function resident where it is placed but not yet warm. In the background:
/// a cold start can take seconds and the status already says where it goes.
fn preload(
    connector: &crate::gateway::Connector,
    kf: &KernelFunction,
    world: &World,
    status: &kaas_crds::KernelFunctionStatus,
    def: kaas_executor::proto::FunctionDef,
) {
    for p in status.placements.iter().filter(|p| !p.warm) {
        let Some(node) = world.nodes.iter().find(|n| n.name_any() == p.node) else { continue };
        let Ok(client) = connector.remote(&node.spec.executor_endpoint) else { continue };
        let (def, device, node_name) = (def.clone(), p.device.clone(), p.node.clone());
        let (ns, name) = (kf.namespace().unwrap_or_default(), kf.name_any());
        tokio::spawn(async move {
            let r = async {
                client.put_function(def).await?;
                client.preload(&ns, &name, &device).await
            };
            match tokio::time::timeout(Duration::from_secs(60), r).await {
                Ok(Ok(())) => {
                    info!(function = %format!("{ns}/{name}"), node = %node_name, %device, "preloaded")
                }
                Ok(Err(e)) => {
                    warn!(function = %format!("{ns}/{name}"), node = %node_name, error = ?e, "preload failed")
                }
                Err(_) => warn!(function = %format!("{ns}/{name}"), node = %node_name, "preload timed out"),
            }
        });
    }
}

async fn cleanup_function(kf: &KernelFunction, ctx: &Context) -> Result<Action, Error> {
    let world = ctx.world();
    let (ns, name) = (kf.namespace().unwrap_or_default(), kf.name_any());
    let mut evicted = Vec::new();
    for node in world.nodes.iter().filter(|n| world.is_live(n)) {
        let client = ctx
            .connector
            .remote(&node.spec.executor_endpoint)
            .map_err(|e| Error::Evict { node: node.name_any(), message: e.to_string() })?;
        match tokio::time::timeout(Duration::from_secs(10), client.evict(&ns, &name)).await {
            Ok(Ok(())) => evicted.push(node.name_any()),
            Ok(Err(e)) => return Err(Error::Evict { node: node.name_any(), message: format!("{e:?}") }),
            Err(_) => return Err(Error::Evict { node: node.name_any(), message: "timed out".into() }),
        }
    }
    info!(nodes = ?evicted, "evicted before deletion");
    ctx.event(kf, false, "Evicted", format!("resident state evicted from {} live node(s)", evicted.len()))
        .await;
    Ok(Action::await_change())
}

/// Reconciles an `AcceleratorClass`: its healthy devices and nodes.
pub async fn reconcile_class(class: Arc<AcceleratorClass>, ctx: Arc<Context>) -> Result<Action, Error> {
    let world = ctx.world();
    let status = class_status(&class, &world);
    let old = class.status.clone().unwrap_or_default();
    if class.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": AcceleratorClass::api_version(&()),
            "kind": AcceleratorClass::kind(&()),
            "status": status,
        });
        Api::<AcceleratorClass>::all(ctx.client.clone())
            .patch_status(
                &class.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        ctx.condition_events(&*class, &old.conditions, &status.conditions).await;
    }
    Ok(Action::requeue(ctx.requeue))
}

/// Status of a class in a world (pure).
pub fn class_status(class: &AcceleratorClass, world: &World) -> AcceleratorClassStatus {
    let devices = world.devices_of(&class.name_any());
    let nodes: std::collections::BTreeSet<&String> = devices.iter().map(|d| &d.0).collect();
    let ready = !devices.is_empty();
    let old = class.status.clone().unwrap_or_default();
    AcceleratorClassStatus {
        devices: devices.len() as u32,
        nodes: nodes.len() as u32,
        conditions: vec![decide::transition(
            &old.conditions,
            "Ready",
            ready,
            if ready { "DevicesAvailable" } else { "NoHealthyDevice" }.into(),
            format!("{} healthy device(s) on {} live node(s)", devices.len(), nodes.len()),
            class.metadata.generation,
            world.now,
        )],
    }
}

/// Reconciles a `SchedulingPolicy`: a bad one gets a Warning event; the active one (by
/// name) reports its policy as running once valid.
pub async fn reconcile_policy(p: Arc<SchedulingPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let valid = scheduler_config(&p.spec);
    let active = p.name_any() == ctx.policy_name;
    let name = serde_json::to_value(p.spec.policy).ok().and_then(|v| v.as_str().map(String::from));
    let old = p.status.clone().unwrap_or_default();
    let (applied, reason, message) = match (&valid, active) {
        (Err(e), _) => (false, "InvalidPolicy", format!("{e}; the gateways keep the previous policy")),
        (Ok(_), false) => {
            (false, "NotDefault", format!("only SchedulingPolicy {:?} is applied", ctx.policy_name))
        }
        (Ok(_), true) => (true, "Applied", format!("the gateways run {}", name.clone().unwrap_or_default())),
    };
    let status = SchedulingPolicyStatus {
        observed_generation: p.metadata.generation,
        active_policy: if active && valid.is_ok() {
            name
        } else {
            old.active_policy.clone().filter(|_| active)
        },
        conditions: vec![decide::transition(
            &old.conditions,
            "Applied",
            applied,
            reason.into(),
            message,
            p.metadata.generation,
            Timestamp::now(),
        )],
    };
    // The condition's time changes only on a transition, so equal statuses compare equal.
    if p.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": SchedulingPolicy::api_version(&()),
            "kind": SchedulingPolicy::kind(&()),
            "status": status,
        });
        Api::<SchedulingPolicy>::all(ctx.client.clone())
            .patch_status(&p.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        ctx.condition_events(&*p, &old.conditions, &status.conditions).await;
    }
    Ok(Action::await_change())
}

/// Reconciles a `KaasNode`: warns once its heartbeat is stale; checks again when it
/// would go stale.
pub async fn reconcile_node(n: Arc<KaasNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    let world = World { now: Timestamp::now(), stale_after: ctx.stale_after, ..Default::default() };
    if !world.is_live(&n) {
        ctx.event(
            &*n,
            true,
            "HeartbeatStale",
            format!("no heartbeat for over {:?}: out of placement and of the gateway", ctx.stale_after),
        )
        .await;
        return Ok(Action::requeue(ctx.requeue));
    }
    Ok(Action::requeue(ctx.stale_after + Duration::from_secs(1)))
}

fn error_policy<K>(_: Arc<K>, e: &Error, _: Arc<Context>) -> Action {
    warn!(error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs every controller until the future is dropped (when leadership is lost).
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let every =
        |d: Duration| tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(d)).map(|_| ());
    let functions = Controller::new(Api::<KernelFunction>::all(client.clone()), watcher::Config::default())
        // Nodes age and classes change without touching the function: look again regularly.
        .reconcile_all_on(every(Duration::from_secs(10)))
        .run(reconcile_function, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                debug!(error = %e, "KernelFunction reconcile");
            }
        });
    let classes = Controller::new(Api::<AcceleratorClass>::all(client.clone()), watcher::Config::default())
        .reconcile_all_on(every(Duration::from_secs(10)))
        .run(reconcile_class, error_policy, ctx.clone())
        .for_each(|_| async {});
    let policies = Controller::new(Api::<SchedulingPolicy>::all(client.clone()), watcher::Config::default())
        .run(reconcile_policy, error_policy, ctx.clone())
        .for_each(|_| async {});
    let nodes = Controller::new(Api::<KaasNode>::all(client), watcher::Config::default())
        .run(reconcile_node, error_policy, ctx)
        .for_each(|_| async {});
    info!("controllers running");
    tokio::join!(functions, classes, policies, nodes);
}
