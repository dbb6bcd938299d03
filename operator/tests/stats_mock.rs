//! Issue 14, point 6: `KernelFunction.status` figures over every gateway replica. Two real
//! gateways in front of one in-process executor take traffic; each replica's counts are
//! published as its ConfigMap, and the leader's step sums them and writes each function's
//! status — checked request by request against a scripted mock API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kaas_crds::{KernelFunction, KernelFunctionStatus};
use kaas_executor::backend::fault::Fault;
use kaas_operator::controller::stats::{
    PodRef, STATS_FIELD_MANAGER, STATS_KEY, configmap_name, publish, snapshot_configmap, write_statuses,
};
use kaas_operator::gateway::stats::{Snapshot, merge};
use kaas_operator::gateway::{Gateway, GatewayConfig, NodeClient};
use kaas_scheduler::{PolicyConfig, SchedulerConfig};
use kube::Client;
use kube::api::ObjectMeta;
use kube::client::Body;
use serde_json::json;

mod common;
mod mock;
use common::{executor_over, function};
use mock::{next, ok};

fn kf(name: &str, status: Option<KernelFunctionStatus>) -> Arc<KernelFunction> {
    let mut k: KernelFunction = serde_json::from_value(json!({
        "apiVersion": "kaas.dev/v1alpha1", "kind": "KernelFunction",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"modules": [], "buffers": [], "kernels": [], "slo": {"deadlineMs": 5000}}
    }))
    .unwrap();
    k.metadata = ObjectMeta { name: Some(name.into()), namespace: Some("t".into()), ..Default::default() };
    k.status = status;
    Arc::new(k)
}

/// Two gateways share one executor: `a` serves 20 of `t/ok`, `b` 10 of `t/ok` and 4 of
/// `t/panic` (each a 500).
async fn two_replicas() -> (Snapshot, Snapshot) {
    let scheduler = SchedulerConfig::new(PolicyConfig::named("edf"));
    let (ex, faults) = executor_over(64 << 20, &scheduler);
    faults.inject("t/panic", Fault::Panic);
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = Gateway::start(GatewayConfig { scheduler: scheduler.clone(), ..GatewayConfig::default() })
            .unwrap();
        gw.add_node("n", NodeClient::Local(ex.clone()));
        assert!(gw.wait_ready(Duration::from_secs(20)).await);
        gw.put_function(function("ok"));
        gw.put_function(function("panic"));
        gws.push(gw);
    }
    let input = || -> BTreeMap<String, kaas_operator::gateway::Bytes> {
        [("in".to_string(), 1u32.to_le_bytes().to_vec().into())].into()
    };
    for (gw, f, n) in [(&gws[0], "ok", 20), (&gws[1], "ok", 10), (&gws[1], "panic", 4)] {
        for _ in 0..n {
            let r = gw.invoke(&format!("t/{f}"), input(), Some(Duration::from_secs(2))).await;
            assert_eq!(r.is_ok(), f == "ok", "{f}: {r:?}");
        }
    }
    // A malformed request is the caller's error: not counted.
    assert!(gws[0].invoke("t/ok", BTreeMap::new(), None).await.is_err());
    (gws[0].stats_snapshot("operator-0", 100), gws[1].stats_snapshot("operator-1", 100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_publish_and_the_leader_writes_summed_figures_only_when_they_change() {
    let (a, b) = two_replicas().await;
    assert_eq!(a.functions["t/ok"].answered, 20, "{a:?}");
    assert_eq!(b.functions["t/panic"].answered, 4);
    assert_eq!(b.functions["t/panic"].served, 0);

    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");

    // A replica publishes its counts: server-side apply of its own ConfigMap, owned by
    // its Pod.
    let owner = PodRef { name: "operator-0".into(), uid: "pod-uid-0".into() };
    let cm = snapshot_configmap(&a, "kaas-system", Some(&owner));
    let want = a.clone();
    let server = tokio::spawn(async move {
        let (req, body, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/kaas-system/configmaps/kaas-gateway-stats-operator-0"
        );
        assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
        let q = req.uri().query().unwrap_or_default().to_string();
        assert!(
            q.contains(&format!("fieldManager={STATS_FIELD_MANAGER}")) && q.contains("force=true"),
            "{q}"
        );
        assert_eq!(body["metadata"]["labels"]["kaas.dev/gateway-stats"], "true");
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Pod");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "pod-uid-0");
        let published: Snapshot = serde_json::from_str(body["data"][STATS_KEY].as_str().unwrap()).unwrap();
        assert_eq!(published, want);
        send.send_response(ok(&body));
        handle
    });
    publish(&client, "kaas-system", &cm).await.unwrap();
    let mut handle = server.await.unwrap();

    // The leader's step: list the replicas' ConfigMaps (one is garbage and skipped), sum,
    // write the figures of the functions that have traffic.
    let listed = json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": [
        serde_json::to_value(snapshot_configmap(&a, "kaas-system", None)).unwrap(),
        serde_json::to_value(snapshot_configmap(&b, "kaas-system", None)).unwrap(),
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kaas-gateway-stats-broken", "namespace": "kaas-system"},
         "data": {STATS_KEY: "{not json"}},
    ]});
    let functions = vec![kf("ok", None), kf("panic", None), kf("idle", None)];
    let server = tokio::spawn({
        let listed = listed.clone();
        async move {
            let (req, _, send) = next(&mut handle).await;
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/namespaces/kaas-system/configmaps");
            let q = req.uri().query().unwrap_or_default().to_string();
            assert!(q.contains("labelSelector=kaas.dev%2Fgateway-stats%3Dtrue"), "{q}");
            send.send_response(ok(&listed));
            let mut written = BTreeMap::new();
            for _ in 0..2 {
                let (req, body, send) = next(&mut handle).await;
                assert_eq!(req.method(), Method::PATCH);
                assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
                let q = req.uri().query().unwrap_or_default().to_string();
                assert!(q.contains(&format!("fieldManager={STATS_FIELD_MANAGER}")), "{q}");
                assert!(
                    body["status"].get("conditions").is_none(),
                    "the reconciler's fields are not touched"
                );
                written.insert(req.uri().path().to_string(), body["status"].clone());
                let mut echo = serde_json::to_value(&*kf("echo", None)).unwrap();
                echo["status"] = body["status"].clone();
                send.send_response(ok(&echo));
            }
            (handle, written)
        }
    });
    assert_eq!(write_statuses(&client, "kaas-system", &functions).await.unwrap(), 2);
    let (mut handle, written) = server.await.unwrap();
    let ok_status = &written["/apis/kaas.dev/v1alpha1/namespaces/t/kernelfunctions/ok/status"];
    println!("t/ok status: {ok_status}");
    assert_eq!(ok_status["invocations"], 30, "20 through one replica + 10 through the other");
    assert_eq!(ok_status["sloAttainment"], 1.0);
    assert_eq!(ok_status["rejections"], 0);
    let p99 = ok_status["latencyMs"]["p99"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 2000.0, "{p99}");
    let panic_status = &written["/apis/kaas.dev/v1alpha1/namespaces/t/kernelfunctions/panic/status"];
    assert_eq!(panic_status["invocations"], 4);
    assert_eq!(panic_status["sloAttainment"], 0.0, "a failure is a miss");
    assert!(panic_status.get("latencyMs").is_none(), "nothing served, no latency");

    // Next interval, nothing changed: the statuses already show it, only the list is made.
    let merged = merge(&[a.clone(), b.clone()]);
    let shown = |key: &str| {
        let f = merged[key].figures();
        let latency = f.p50_ms.map(|p50| kaas_crds::LatencyPercentiles {
            p50,
            p95: f.p95_ms.unwrap(),
            p99: f.p99_ms.unwrap(),
        });
        KernelFunctionStatus {
            latency_ms: latency,
            slo_attainment: f.slo_attainment,
            invocations: f.invocations,
            cold_starts: f.cold_starts,
            rejections: f.rejections,
            ..Default::default()
        }
    };
    let functions = vec![kf("ok", Some(shown("t/ok"))), kf("panic", Some(shown("t/panic")))];
    let server = tokio::spawn(async move {
        let (req, _, send) = next(&mut handle).await;
        assert_eq!(req.method(), Method::GET);
        send.send_response(ok(&listed));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err(),
            "no write when the figures are shown"
        );
    });
    assert_eq!(write_statuses(&client, "kaas-system", &functions).await.unwrap(), 0);
    server.await.unwrap();
}

#[test]
fn configmap_names_are_valid_for_any_identity() {
    assert_eq!(configmap_name("operator-7d9f-abc"), "kaas-gateway-stats-operator-7d9f-abc");
    assert_eq!(configmap_name("Host_Name.local."), "kaas-gateway-stats-host-name.local");
    assert!(configmap_name(&"x".repeat(400)).len() <= 253);
}
