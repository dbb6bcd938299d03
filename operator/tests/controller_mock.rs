//! Controller I/O against a scripted mock API server (tower-test): each request the
//! reconciler makes is checked (method, path, field manager, patch type, body) and
//! answered; a missing or unexpected request fails the test.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kaas_crds::{AcceleratorClass, FUNCTION_FINALIZER, KaasNode, KernelFunction, KeyRef, Source};
use kaas_operator::controller::{Context, reconcile_function};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

mod mock;
use mock::{condition, next, ok};

fn docs<T: DeserializeOwned>(path: &str) -> Vec<T> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::with::singleton_map_recursive::deserialize(d).unwrap())
        .collect()
}

fn store_of<K>(items: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    for k in items {
        writer.apply_watcher_event(&watcher::Event::Apply(k));
    }
    reader
}

/// A context over the mock, with the example classes and fixture nodes (heartbeats now).
fn context(client: Client, live_nodes: bool) -> Arc<Context> {
    let classes = docs::<AcceleratorClass>("../examples/cluster/accelerator-classes.yaml");
    let mut nodes = docs::<KaasNode>("tests/fixtures/nodes.yaml");
    for n in &mut nodes {
        n.status.as_mut().unwrap().heartbeat = Some(Time(Timestamp::now()));
    }
    if !live_nodes {
        nodes.clear();
    }
    Arc::new(Context::new(
        client,
        (store_of(classes), store_of(nodes), store_of(Vec::new())),
        Duration::from_secs(30),
        "default".into(),
        Some("operator-0".into()),
    ))
}

fn saxpy() -> KernelFunction {
    let mut kf: KernelFunction = docs("../examples/functions/saxpy.yaml").remove(0);
    kf.metadata.uid = Some("uid-1".into());
    kf.metadata.resource_version = Some("100".into());
    kf.metadata.generation = Some(1);
    kf
}

/// Saxpy whose WebAssembly comes from ConfigMap `kernels`, key `saxpy.wat`; returns the text.
fn from_configmap(kf: &mut KernelFunction) -> String {
    let m = &mut kf.spec.modules[0];
    let text = m.wasm.as_ref().unwrap().inline.clone().unwrap();
    m.wasm = Some(Source {
        config_map_ref: Some(KeyRef { name: "kernels".into(), key: "saxpy.wat".into() }),
        ..Default::default()
    });
    text
}

fn not_found(what: &str) -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
        "message": format!("{what} not found"), "code": 404});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

fn query(req: &Request<()>) -> String {
    req.uri().query().unwrap_or_default().to_string()
}

async fn reconcile(kf: KernelFunction, ctx: Arc<Context>) -> Action {
    tokio::time::timeout(Duration::from_secs(10), reconcile_function(Arc::new(kf), ctx))
        .await
        .expect("reconcile hung")
        .expect("reconcile failed")
}

#[tokio::test]
async fn a_new_function_first_gets_the_finalizer() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"), true);
    let kf = saxpy();
    let server = tokio::spawn(async move {
        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), "/apis/kaas.dev/v1alpha1/namespaces/default/kernelfunctions/saxpy");
        assert_eq!(req.headers()["content-type"], "application/json-patch+json");
        // Test-then-add: never clobbers a finalizer someone else added meanwhile.
        assert_eq!(body[0]["op"], "test");
        assert_eq!(
            body[1],
            json!({"op": "add", "path": "/metadata/finalizers", "value": [FUNCTION_FINALIZER]})
        );
        let mut with = saxpy();
        with.metadata.finalizers = Some(vec![FUNCTION_FINALIZER.into()]);
        send.send_response(ok(&serde_json::to_value(&with).unwrap()));
    });
    assert_eq!(reconcile(kf, ctx).await, Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn an_admitted_function_gets_its_status_by_server_side_apply_and_an_event() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"), true);
    let mut kf = saxpy();
    kf.metadata.finalizers = Some(vec![FUNCTION_FINALIZER.into()]);
    let wat = from_configmap(&mut kf);
    let echo = kf.clone();
    let server = tokio::spawn(async move {
        let (req, _, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/default/configmaps/kernels",
            "only its own namespace"
        );
        send.send_response(ok(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kernels", "namespace": "default"}, "data": {"saxpy.wat": wat}})));

        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/kaas.dev/v1alpha1/namespaces/default/kernelfunctions/saxpy/status"
        );
        assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
        let q = query(&req);
        assert!(q.contains("fieldManager=kaas.dev%2Foperator") && q.contains("force=true"), "{q}");
        assert_eq!(body["apiVersion"], "kaas.dev/v1alpha1");
        assert_eq!(body["kind"], "KernelFunction");
        assert!(body.get("spec").is_none(), "a status patch must not own spec fields");
        let admitted = condition(&body["status"], "Admitted");
        assert_eq!(admitted["status"], "True", "{admitted}");
        assert_eq!(body["status"]["placements"][0]["node"], "cpu-1");
        assert_eq!(body["status"]["observedGeneration"], 1);
        for figure in ["invocations", "sloAttainment", "latencyMs", "coldStarts", "rejections"] {
            assert!(body["status"].get(figure).is_none(), "{figure} belongs to the stats writer: {body}");
        }
        let mut v = serde_json::to_value(&echo).unwrap();
        v["status"] = body["status"].clone();
        send.send_response(ok(&v));

        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/apis/events.k8s.io/v1/namespaces/default/events");
        assert_eq!(body["reason"], "Admitted");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["regarding"]["name"], "saxpy");
        assert_eq!(body["reportingController"], "kaas-operator");
        send.send_response(ok(&body));
        // Issue 17, point 4: every condition that appeared or changed gets its event,
        // Ready and Degraded too, in order, each saying which condition it is.
        for (reason, kind, note) in
            [("Serving", "Normal", "Ready is True: "), ("AsPlanned", "Normal", "Degraded is False: ")]
        {
            let (req, body, send) = next(&mut handle).await;
            assert_eq!(req.uri().path(), "/apis/events.k8s.io/v1/namespaces/default/events");
            assert_eq!(
                (body["reason"].as_str(), body["type"].as_str()),
                (Some(reason), Some(kind)),
                "{body}"
            );
            assert!(body["note"].as_str().unwrap().starts_with(note), "{body}");
            send.send_response(ok(&body));
        }
    });
    assert_eq!(reconcile(kf, ctx).await, Action::requeue(Duration::from_secs(30)));
    server.await.unwrap();
}

#[tokio::test]
async fn a_missing_configmap_is_not_admitted_and_says_which() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"), true);
    let mut kf = saxpy();
    kf.metadata.finalizers = Some(vec![FUNCTION_FINALIZER.into()]);
    from_configmap(&mut kf);
    let echo = kf.clone();
    let server = tokio::spawn(async move {
        let (req, _, send) = next(&mut handle).await;
        assert_eq!(req.uri().path(), "/api/v1/namespaces/default/configmaps/kernels");
        send.send_response(not_found("configmaps \"kernels\""));

        let (req, body, send) = next(&mut handle).await;
        assert!(req.uri().path().ends_with("/kernelfunctions/saxpy/status"));
        let admitted = condition(&body["status"], "Admitted");
        assert_eq!(admitted["status"], "False");
        assert_eq!(admitted["reason"], "SourceUnavailable");
        assert!(admitted["message"].as_str().unwrap().contains("ConfigMap default/kernels"), "{admitted}");
        let mut v = serde_json::to_value(&echo).unwrap();
        v["status"] = body["status"].clone();
        send.send_response(ok(&v));

        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::POST);
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "SourceUnavailable");
        send.send_response(ok(&body));
    });
    reconcile(kf, ctx).await;
    server.await.unwrap();
}

/// Issue 16, point 6: a Secret is read as a source only with its owner's consent, the
/// label `kaas.dev/module-source: "true"`. Without it the function is not admitted and
/// says why; with it the Secret's key is the module.
#[tokio::test]
async fn a_secret_source_needs_its_owners_label() {
    for labelled in [false, true] {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(Client::new(svc, "default"), true);
        let mut kf = saxpy();
        kf.metadata.finalizers = Some(vec![FUNCTION_FINALIZER.into()]);
        let m = &mut kf.spec.modules[0];
        let wat = m.wasm.as_ref().unwrap().inline.clone().unwrap();
        m.wasm = Some(Source {
            secret_ref: Some(KeyRef { name: "weights".into(), key: "saxpy.wat".into() }),
            ..Default::default()
        });
        let echo = kf.clone();
        let server = tokio::spawn(async move {
            let (req, _, send) = next(&mut handle).await;
            assert_eq!(req.method(), Method::GET, "a get, never a list or watch");
            assert_eq!(req.uri().path(), "/api/v1/namespaces/default/secrets/weights");
            let labels = if labelled { json!({"kaas.dev/module-source": "true"}) } else { json!({}) };
            use base64::Engine;
            let data = base64::engine::general_purpose::STANDARD.encode(wat.as_bytes());
            send.send_response(ok(&json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "weights", "namespace": "default", "labels": labels},
                "data": {"saxpy.wat": data}})));
            let (req, body, send) = next(&mut handle).await;
            assert!(req.uri().path().ends_with("/kernelfunctions/saxpy/status"));
            let admitted = condition(&body["status"], "Admitted");
            if labelled {
                assert_eq!(admitted["status"], "True", "{admitted}");
            } else {
                assert_eq!(admitted["status"], "False");
                assert_eq!(admitted["reason"], "SourceUnavailable");
                let msg = admitted["message"].as_str().unwrap();
                assert!(msg.contains("not labelled kaas.dev/module-source"), "{msg}");
            }
            let mut v = serde_json::to_value(&echo).unwrap();
            v["status"] = body["status"].clone();
            send.send_response(ok(&v));
            // The event of the decision.
            let (req, body, send) = next(&mut handle).await;
            assert_eq!(req.method(), Method::POST);
            send.send_response(ok(&body));
        });
        reconcile(kf, ctx).await;
        server.await.unwrap();
    }
}

#[tokio::test]
async fn deleting_a_function_evicts_then_releases_the_finalizer() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    // No live executors: nothing to evict, so the finalizer goes at once.
    let ctx = context(Client::new(svc, "default"), false);
    let mut kf = saxpy();
    kf.metadata.finalizers = Some(vec!["other.example/keep".into(), FUNCTION_FINALIZER.into()]);
    kf.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let server = tokio::spawn(async move {
        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::POST);
        assert_eq!(body["reason"], "Evicted");
        send.send_response(ok(&body));

        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), "/apis/kaas.dev/v1alpha1/namespaces/default/kernelfunctions/saxpy");
        assert_eq!(req.headers()["content-type"], "application/json-patch+json");
        // Removes exactly our finalizer, by index, guarded by a test of its value.
        assert_eq!(
            body[0],
            json!({"op": "test", "path": "/metadata/finalizers/1", "value": FUNCTION_FINALIZER})
        );
        assert_eq!(body[1], json!({"op": "remove", "path": "/metadata/finalizers/1"}));
        send.send_response(ok(&serde_json::to_value(saxpy()).unwrap()));
    });
    assert_eq!(reconcile(kf, ctx).await, Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn the_finalizer_evicts_from_live_executors() {
    use kaas_executor::backend::wasm::WasmBackend;
    use kaas_executor::{Executor, ExecutorConfig, service};
    // A real executor with saxpy resident.
    let executor = Executor::start(
        vec![Arc::new(WasmBackend::new(64 << 20, 2, Duration::from_secs(1)).unwrap())],
        ExecutorConfig {
            node: "cpu-1".into(),
            scheduler: kaas_scheduler::SchedulerConfig::new(kaas_scheduler::PolicyConfig::named("edf")),
            shares: Vec::new(),
            health_interval: Duration::from_millis(50),
            accelerator_classes: Default::default(),
        },
    )
    .unwrap();
    let kf = saxpy();
    let classes = docs::<AcceleratorClass>("../examples/cluster/accelerator-classes.yaml");
    let def =
        kaas_operator::convert::function_def(&kf, &kaas_operator::convert::InlineOnly, &classes).unwrap();
    executor.put_function(def.try_into().unwrap()).await.unwrap();
    executor.preload("default/saxpy", None).await.unwrap();
    let resident =
        |e: &Executor| e.status().devices.iter().any(|d| d.resident.iter().any(|r| r == "default/saxpy"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !resident(&executor) {
        assert!(tokio::time::Instant::now() < deadline, "preload never showed in the status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service::serve_tcp(executor.clone(), listener, None, std::future::pending()));

    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let mut node = docs::<KaasNode>("tests/fixtures/nodes.yaml").remove(1);
    node.spec.executor_endpoint = format!("http://{addr}");
    node.status.as_mut().unwrap().heartbeat = Some(Time(Timestamp::now()));
    let ctx = Arc::new(Context::new(
        client,
        (store_of(classes), store_of(vec![node]), store_of(Vec::new())),
        Duration::from_secs(30),
        "default".into(),
        None,
    ));
    let mut kf = saxpy();
    kf.metadata.finalizers = Some(vec![FUNCTION_FINALIZER.into()]);
    kf.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let server = tokio::spawn(async move {
        let (_, body, send) = next(&mut handle).await;
        assert_eq!(body["reason"], "Evicted");
        assert!(body["note"].as_str().unwrap().contains("1 live node"), "{body}");
        send.send_response(ok(&body));
        let (req, _, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::PATCH);
        send.send_response(ok(&serde_json::to_value(saxpy()).unwrap()));
    });
    reconcile(kf, ctx).await;
    server.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while resident(&executor) {
        assert!(tokio::time::Instant::now() < deadline, "still resident after the finalizer ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 17, point 4: `SchedulingPolicy` carries an `Applied` condition (so `kubectl wait
/// --for=condition=Applied` works): True when the gateways run it, False with the reason
/// when its spec is invalid, each transition followed by its event.
#[tokio::test]
async fn a_scheduling_policy_says_whether_it_is_applied() {
    use kaas_crds::SchedulingPolicy;
    use kaas_operator::controller::reconcile_policy;
    for (spec, applied) in
        [(json!({"policy": "edf", "admission": "deadline"}), true), (json!({"policy": "static"}), false)]
    {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(Client::new(svc, "default"), true);
        let mut p: SchedulingPolicy = serde_json::from_value(json!({
            "apiVersion": "kaas.dev/v1alpha1", "kind": "SchedulingPolicy",
            "metadata": {"name": "default", "generation": 3}, "spec": spec,
        }))
        .unwrap();
        p.metadata.uid = Some("p-1".into());
        let echo = serde_json::to_value(&p).unwrap();
        let server = tokio::spawn(async move {
            let (req, body, send) = next(&mut handle).await;
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(req.uri().path(), "/apis/kaas.dev/v1alpha1/schedulingpolicies/default/status");
            let c = &condition(&body["status"], "Applied");
            println!("{c}");
            assert_eq!(c["status"], if applied { "True" } else { "False" });
            assert_eq!(c["reason"], if applied { "Applied" } else { "InvalidPolicy" });
            assert_eq!(c["observedGeneration"], 3);
            let mut v = echo.clone();
            v["status"] = body["status"].clone();
            send.send_response(ok(&v));
            // Then the transition's event: Warning when the policy is invalid.
            let (req, body, send) = next(&mut handle).await;
            assert_eq!(req.method(), Method::POST);
            assert_eq!(body["reason"], if applied { "Applied" } else { "InvalidPolicy" });
            assert_eq!(body["type"], if applied { "Normal" } else { "Warning" });
            send.send_response(ok(&body));
        });
        tokio::time::timeout(Duration::from_secs(10), reconcile_policy(Arc::new(p), ctx))
            .await
            .unwrap()
            .unwrap();
        server.await.unwrap();
    }
}
