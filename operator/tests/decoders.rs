//! Issue 16, point 7: the gateway's and the reconciler's decoders of untrusted input never
//! panic. Any bytes as an HTTP invocation body (through the real router) or a gRPC
//! `InvokeRequest`, and any KernelFunction spec — a valid example with its numbers and
//! names replaced by arbitrary ones, or any JSON — end in an answer or a clear error.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use http::Request;
use kaas_crds::{AcceleratorClass, KernelFunction};
use kaas_operator::convert::{InlineOnly, function_def};
use kaas_operator::gateway::http::{DEFAULT_MAX_REQUEST_BYTES, HttpState, router};
use kaas_operator::gateway::{Gateway, GatewayConfig};
use kaas_operator::proto::InvokeRequest;
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

fn docs<T: serde::de::DeserializeOwned>(path: &str) -> Vec<T> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::with::singleton_map_recursive::deserialize(d).unwrap())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A gateway with function `t/ok` and no nodes: every valid request ends in a 503.
fn gateway(rt: &tokio::runtime::Runtime) -> Gateway {
    rt.block_on(async {
        let gw = Gateway::start(GatewayConfig::default()).unwrap();
        gw.put_function(common::function("ok"));
        gw
    })
}

/// Bodies that look like invocations: JSON with arbitrary names, base64 and deadlines.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        "[A-Za-z0-9+/=]{0,12}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let inputs = prop::collection::btree_map("[a-z]{0,3}", value.clone(), 0..3);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (inputs, prop::option::of(value), any::<bool>()).prop_map(|(inputs, deadline, extra)| {
            let mut v = json!({ "inputs": inputs });
            if let Some(d) = deadline {
                v["deadlineMs"] = d;
            }
            if extra {
                v["unexpected"] = json!(1);
            }
            serde_json::to_vec(&v).unwrap()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_http_body_is_answered_with_a_client_or_capacity_error(body in bodies(), path in "[a-z:]{0,12}") {
        let rt = runtime();
        let gw = gateway(&rt);
        let app = router(HttpState {
            gateway: gw,
            registry: Arc::new(prometheus_client::registry::Registry::default()),
            liveness: Default::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        });
        for uri in ["/v1/namespaces/t/functions/ok:invoke".to_string(), format!("/v1/namespaces/t/functions/{path}")] {
            let req = Request::post(&uri).header("content-type", "application/json").body(Body::from(body.clone())).unwrap();
            let status = rt.block_on(app.clone().oneshot(req)).unwrap().status().as_u16();
            // 400 malformed, 404 unknown, 405 no such route, 503 no executor: never a 500.
            prop_assert!([400, 404, 405, 503].contains(&status), "{uri}: {status}");
        }
    }

    #[test]
    fn any_grpc_bytes_decode_to_a_request_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(r) = InvokeRequest::decode(bytes.as_slice()) {
            let rt = runtime();
            let gw = gateway(&rt);
            let deadline = (r.deadline_ms > 0).then(|| std::time::Duration::from_millis(r.deadline_ms as u64));
            let out = rt.block_on(gw.invoke(&format!("{}/{}", r.namespace, r.name), r.inputs.into_iter().collect(), deadline));
            prop_assert!(out.is_err(), "no executor: never served");
        }
    }

    #[test]
    fn any_spec_converts_or_says_why(
        numbers in prop::collection::vec(prop_oneof![any::<i64>().prop_map(Value::from), any::<f64>().prop_map(Value::from), Just(json!(0)), Just(json!(-1)), Just(json!(u64::MAX))], 64),
        names in prop::collection::vec("[a-z{}$. ]{0,6}", 32),
    ) {
        let classes = docs::<AcceleratorClass>("../examples/cluster/accelerator-classes.yaml");
        for file in ["saxpy", "dense-relu"] {
            let kf: KernelFunction = docs(&format!("../examples/functions/{file}.yaml")).remove(0);
            let mut v = serde_json::to_value(&kf).unwrap();
            let (mut n, mut s) = (0, 0);
            mutate(&mut v["spec"], &numbers, &mut n, &names, &mut s);
            // A spec the schema would refuse may not even deserialize: that is an error too.
            if let Ok(kf) = serde_json::from_value::<KernelFunction>(v)
                && let Err(e) = function_def(&kf, &InlineOnly, &classes)
            {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn any_json_is_a_kernel_function_or_an_error(text in "\\PC{0,300}") {
        if let Ok(kf) = serde_json::from_str::<KernelFunction>(&text) {
            let _ = function_def(&kf, &InlineOnly, &[]);
        }
    }
}

/// Replaces every number with the next of `numbers` and every string but inline sources
/// with the next of `names`, cycling.
fn mutate(v: &mut Value, numbers: &[Value], n: &mut usize, names: &[String], s: &mut usize) {
    match v {
        Value::Number(_) => {
            *v = numbers[*n % numbers.len()].clone();
            *n += 1;
        }
        Value::String(text) if text.len() < 64 => {
            *v = Value::from(names[*s % names.len()].clone());
            *s += 1;
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mutate(x, numbers, n, names, s)),
        Value::Object(o) => o.values_mut().for_each(|x| mutate(x, numbers, n, names, s)),
        _ => {}
    }
}
