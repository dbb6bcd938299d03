#![allow(dead_code)] // each test file uses a part
//! The scripted mock API server the Kubernetes I/O tests share (tower-test): take the next
//! request the code under test made, check it, answer it.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// The server side of a mock `kube::Client`.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The next request (within 5 s), its JSON body (`Null` when empty), and its responder.
pub async fn next(
    handle: &mut Handle,
) -> (Request<()>, Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the code under test made no further request")
        .expect("client gone");
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (Request::from_parts(parts, ()), v, send)
}

/// A 200 with `v` as its body.
pub fn ok(v: &Value) -> Response<Body> {
    Response::builder().status(200).body(Body::from(serde_json::to_vec(v).unwrap())).unwrap()
}

/// The condition of `kind` in a status body (`{"conditions": [...]}`); panics naming it
/// when absent.
pub fn condition(status: &Value, kind: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
        .clone()
}
