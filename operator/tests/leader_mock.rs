//! Leader election against a scripted mock API server: create the Lease when absent,
//! lead, and release it on shutdown; follow a live Lease held by another replica.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kaas_operator::controller::leader::elect;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

async fn next(h: &mut Handle) -> (Method, String, Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) =
        tokio::time::timeout(Duration::from_secs(5), h.next_request()).await.expect("no request").unwrap();
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (parts.method, parts.uri.path().to_string(), v, send)
}

fn reply(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kaas-system/leases/kaas-operator";

#[tokio::test]
async fn creates_leads_and_releases_the_lease() {
    let (svc, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (leader_tx, mut leader) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(elect(
        Client::new(svc, "default"),
        "kaas-system".into(),
        "kaas-operator".into(),
        "operator-0".into(),
        leader_tx,
        stop,
    ));
    let (m, path, _, send) = next(&mut h).await;
    assert_eq!((m, path.as_str()), (Method::GET, PATH));
    send.send_response(reply(404, &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})));
    let (m, path, body, send) = next(&mut h).await;
    assert_eq!(m, Method::POST);
    assert_eq!(path, "/apis/coordination.k8s.io/v1/namespaces/kaas-system/leases");
    assert_eq!(body["spec"]["holderIdentity"], "operator-0");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    let mut created = body.clone();
    created["metadata"]["resourceVersion"] = json!("1");
    send.send_response(reply(201, &created));
    tokio::time::timeout(Duration::from_secs(2), leader.wait_for(|l| *l)).await.unwrap().unwrap();

    stop_tx.send(true).unwrap();
    let (m, _, _, send) = next(&mut h).await;
    assert_eq!(m, Method::GET);
    send.send_response(reply(200, &created));
    let (m, path, body, send) = next(&mut h).await;
    assert_eq!((m, path.as_str()), (Method::PUT, PATH));
    assert!(body["spec"].get("holderIdentity").is_none_or(Value::is_null), "released: {body}");
    assert_eq!(body["metadata"]["resourceVersion"], "1", "writes are guarded by the resourceVersion");
    send.send_response(reply(200, &body));
    task.await.unwrap();
    assert!(!*leader.borrow());
}

#[tokio::test]
async fn follows_a_live_lease_of_another_replica() {
    let (svc, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (leader_tx, leader) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(elect(
        Client::new(svc, "default"),
        "kaas-system".into(),
        "kaas-operator".into(),
        "operator-1".into(),
        leader_tx,
        stop,
    ));
    let (_, _, _, send) = next(&mut h).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    send.send_response(reply(
        200,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kaas-operator", "namespace": "kaas-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": "operator-0", "leaseDurationSeconds": 15, "renewTime": now, "acquireTime": now}}),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!*leader.borrow(), "another replica holds a live Lease");
    stop_tx.send(true).unwrap();
    // A follower writes nothing, not even on the way out: had it sent a write, it would
    // still be waiting for the answer and the task could not finish.
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("follower hung on a write").unwrap();
    let after = tokio::time::timeout(Duration::from_secs(1), h.next_request()).await.unwrap();
    assert!(after.is_none(), "unexpected request after stopping");
}
