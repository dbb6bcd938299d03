//! Issue 16, point 6: the chart's ValidatingAdmissionPolicy lets a device plugin write
//! only its own node's KaasNode. Its CEL validation is evaluated here (with the `cel`
//! crate) against the requests a plugin would make: its own node, another node, a token
//! not bound to a pod.

use serde_json::{Value, json};

/// The validation expression of the chart's policy (a folded YAML scalar, no templating).
fn expression() -> String {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/kaas/templates/kaasnode-admission-policy.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("  validations:\n    - expression: >-\n").expect("a validations block") + 37;
    let rest = &text[start..];
    let end = rest.find("      messageExpression:").expect("a message after the expression");
    rest[..end].lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

fn allowed(request: Value) -> bool {
    let program = cel::Program::compile(&expression()).unwrap();
    let mut ctx = cel::Context::default();
    ctx.add_variable("request", request).unwrap();
    match program.execute(&ctx).unwrap() {
        cel::Value::Bool(b) => b,
        other => panic!("the validation is not a boolean: {other:?}"),
    }
}

fn request(name: &str, extra: Value) -> Value {
    json!({
        "name": name,
        "operation": "UPDATE",
        "userInfo": {"username": "system:serviceaccount:kaas-system:kaas-device-plugin", "extra": extra},
    })
}

#[test]
fn a_plugin_writes_its_own_nodes_kaasnode_and_no_other() {
    println!("validation: {}", expression());
    let on = |node: &str| json!({"authentication.kubernetes.io/node-name": [node]});
    assert!(allowed(request("gpu-node-1", on("gpu-node-1"))), "its own node");
    assert!(!allowed(request("gpu-node-2", on("gpu-node-1"))), "another node's KaasNode");
    assert!(!allowed(request("gpu-node-1", json!({}))), "a token bound to no pod names no node");
    assert!(
        !allowed(request("a", json!({"authentication.kubernetes.io/node-name": ["a", "b"]}))),
        "an ambiguous node claim"
    );
}
