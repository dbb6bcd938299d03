//! Issue 17, point 3: `kaas-operator apply-crds` (the chart's pre-upgrade hook) applies
//! every kaas CRD by server-side apply, forced, with its own field manager — checked
//! request by request against a scripted mock API server.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;

#[tokio::test]
async fn every_crd_is_applied_server_side() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..kaas_crds::crds().len() {
            let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                .await
                .expect("a request per CRD")
                .unwrap();
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
            let q = req.uri().query().unwrap_or_default().to_string();
            assert!(q.contains("fieldManager=kaas.dev%2Fcrds") && q.contains("force=true"), "{q}");
            let path = req.uri().path().to_string();
            let name = path
                .strip_prefix("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/")
                .unwrap()
                .to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["kind"], "CustomResourceDefinition");
            assert_eq!(body["metadata"]["name"], name);
            assert_eq!(body["spec"]["group"], "kaas.dev");
            assert!(body["spec"]["versions"][0]["schema"]["openAPIV3Schema"].is_object());
            seen.push(name);
            send.send_response(Response::builder().status(200).body(Body::from(bytes)).unwrap());
        }
        seen.sort();
        seen
    });
    let mut applied = kaas_operator::crds::apply(&client).await.unwrap();
    applied.sort();
    assert_eq!(server.await.unwrap(), applied);
    assert_eq!(
        applied,
        [
            "acceleratorclasses.kaas.dev",
            "kaasnodes.kaas.dev",
            "kernelfunctions.kaas.dev",
            "schedulingpolicies.kaas.dev"
        ]
    );
}
