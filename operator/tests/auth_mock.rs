//! Issue 16, point 1: in a cluster the gateway checks each caller's bearer token by
//! TokenReview and its right by SubjectAccessReview (verb `invoke` on `kernelfunctions`
//! in the function's namespace), caching both briefly — checked request by request
//! against a scripted mock API server.

use std::time::Duration;

use http::{Method, Request, Response};
use kaas_operator::gateway::GatewayError;
use kaas_operator::gateway::auth::{Authorize, KubeAuth};
use kube::Client;
use kube::client::Body;
use serde_json::json;

mod mock;
use mock::{Handle, next, ok};

/// Answers a TokenReview: `user` authenticated, or not when `None`.
async fn token_review(handle: &mut Handle, token: &str, user: Option<&str>) {
    let (req, body, send) = next(handle).await;
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(body["spec"]["token"], token);
    let status = match user {
        Some(u) => {
            json!({"authenticated": true, "user": {"username": u, "groups": ["team-a"], "uid": "u-1"}})
        }
        None => json!({"authenticated": false, "error": "token expired"}),
    };
    let mut answer = body.clone();
    answer["status"] = status;
    send.send_response(ok(&answer));
}

/// Answers a SubjectAccessReview after checking what it asks.
async fn access_review(handle: &mut Handle, user: &str, namespace: &str, allowed: bool) {
    let (req, body, send) = next(handle).await;
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/apis/authorization.k8s.io/v1/subjectaccessreviews");
    assert_eq!(body["spec"]["user"], user);
    assert_eq!(body["spec"]["groups"], json!(["team-a"]));
    let attrs = &body["spec"]["resourceAttributes"];
    assert_eq!(attrs["verb"], "invoke");
    assert_eq!(attrs["group"], "kaas.dev");
    assert_eq!(attrs["resource"], "kernelfunctions");
    assert_eq!(attrs["namespace"], namespace);
    assert_eq!(attrs["name"], "saxpy");
    let mut answer = body.clone();
    answer["status"] = json!({"allowed": allowed, "reason": if allowed { "bound to kaas-invoker" } else { "no RBAC policy matched" }});
    send.send_response(ok(&answer));
}

#[tokio::test]
async fn tokens_and_rights_are_checked_by_the_api_server_and_cached() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let auth = KubeAuth::new(Client::new(svc, "default"));
    let server = tokio::spawn(async move {
        token_review(&mut handle, "bad", None).await;
        token_review(&mut handle, "alice-token", Some("alice")).await;
        access_review(&mut handle, "alice", "team-b", false).await;
        token_review(&mut handle, "alice-token", Some("alice")).await;
        access_review(&mut handle, "alice", "team-a", true).await;
        // Every later answer comes from the cache: no further request.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err(),
            "a cached answer asked the API server again"
        );
    });
    let r = auth.authorize(None, "team-a", "saxpy").await;
    assert!(matches!(r, Err(GatewayError::Unauthenticated(_))), "no token, no API call: {r:?}");
    let r = auth.authorize(Some("bad"), "team-a", "saxpy").await;
    assert!(matches!(&r, Err(GatewayError::Unauthenticated(m)) if m.contains("expired")), "{r:?}");
    let r = auth.authorize(Some("alice-token"), "team-b", "saxpy").await;
    println!("another namespace: {r:?}");
    assert!(
        matches!(&r, Err(GatewayError::Forbidden(m)) if m.contains("alice") && m.contains("team-b/saxpy")),
        "{r:?}"
    );
    assert_eq!(auth.authorize(Some("alice-token"), "team-a", "saxpy").await, Ok(()));
    // Cached, allowed and denied alike.
    assert_eq!(auth.authorize(Some("alice-token"), "team-a", "saxpy").await, Ok(()));
    assert!(matches!(
        auth.authorize(Some("alice-token"), "team-b", "saxpy").await,
        Err(GatewayError::Forbidden(_))
    ));
    assert!(matches!(
        auth.authorize(Some("bad"), "team-a", "saxpy").await,
        Err(GatewayError::Unauthenticated(_))
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn an_api_server_that_cannot_answer_is_a_503_and_asked_again() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let auth = KubeAuth::new(Client::new(svc, "default"));
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.uri().path(), "/apis/authentication.k8s.io/v1/tokenreviews");
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd down", "reason": "InternalError"});
            send.send_response(
                Response::builder()
                    .status(500)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        }
    });
    for _ in 0..2 {
        let r = auth.authorize(Some("t"), "a", "saxpy").await;
        assert!(matches!(&r, Err(GatewayError::Unavailable(m)) if m.contains("TokenReview")), "{r:?}");
    }
    server.await.unwrap();
}
