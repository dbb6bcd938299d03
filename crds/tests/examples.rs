//! Every example manifest fits the generated CRDs, and broken copies of them are
//! rejected with a message naming the bad field.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kaas_crds::validate::{ValidateError, validate_object};
use serde::Deserialize;
use serde_json::{Value, json};

fn crds() -> Vec<CustomResourceDefinition> {
    kaas_crds::crds().into_iter().map(|(_, c)| c).collect()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every YAML document under `examples/` whose apiVersion is in `kaas.dev`.
fn example_objects() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![examples_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                    let v = Value::deserialize(doc).unwrap();
                    if v.get("apiVersion").and_then(Value::as_str).is_some_and(|a| a.starts_with("kaas.dev/"))
                    {
                        out.push((path.display().to_string(), v));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn example(name: &str) -> Value {
    example_objects().into_iter().find(|(_, v)| v["metadata"]["name"] == name).unwrap().1
}

fn errors_of(object: &Value) -> Vec<String> {
    match validate_object(&crds(), object) {
        Ok(()) => vec![],
        Err(ValidateError::Invalid { errors, .. }) => errors.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[track_caller]
fn assert_rejected(object: &Value, field: &str, words: &str) {
    let errors = errors_of(object);
    assert!(
        errors.iter().any(|e| e.contains(field) && e.contains(words)),
        "expected an error naming `{field}` with `{words}`, got {errors:?}"
    );
}

#[test]
fn every_example_is_valid() {
    let objects = example_objects();
    let kinds: Vec<&str> = objects.iter().map(|(_, v)| v["kind"].as_str().unwrap()).collect();
    assert!(kinds.iter().filter(|k| **k == "KernelFunction").count() >= 3, "{kinds:?}");
    assert!(kinds.contains(&"AcceleratorClass") && kinds.contains(&"SchedulingPolicy"), "{kinds:?}");
    for (path, object) in &objects {
        assert_eq!(errors_of(object), Vec::<String>::new(), "{path}");
        // The typed structs read them too, so the operator will.
        match object["kind"].as_str().unwrap() {
            "KernelFunction" => {
                drop(serde_json::from_value::<kaas_crds::KernelFunction>(object.clone()).unwrap())
            }
            "AcceleratorClass" => {
                drop(serde_json::from_value::<kaas_crds::AcceleratorClass>(object.clone()).unwrap())
            }
            "SchedulingPolicy" => {
                drop(serde_json::from_value::<kaas_crds::SchedulingPolicy>(object.clone()).unwrap())
            }
            other => panic!("unexpected kind {other} in {path}"),
        }
    }
}

#[test]
fn examples_cover_both_device_kinds_and_const_weights() {
    let classes: Vec<Value> = example_objects()
        .into_iter()
        .filter(|(_, v)| v["kind"] == "AcceleratorClass")
        .map(|(_, v)| v)
        .collect();
    assert!(classes.iter().any(|c| c["spec"]["kind"] == "GPU"));
    assert!(classes.iter().any(|c| c["spec"]["kind"] == "CPU"));
    let dense = example("dense-relu");
    assert!(dense["spec"]["buffers"].as_array().unwrap().iter().any(|b| b["kind"] == "Const"));
    assert!(dense["spec"]["kernels"].as_array().unwrap().len() >= 2);
    for (_, f) in example_objects().into_iter().filter(|(_, v)| v["kind"] == "KernelFunction") {
        for m in f["spec"]["modules"].as_array().unwrap() {
            assert!(
                m.get("cuda").is_some() && m.get("wasm").is_some(),
                "{} lacks a backend",
                f["metadata"]["name"]
            );
        }
    }
}

#[test]
fn negative_size_is_rejected() {
    let mut f = example("saxpy");
    f["spec"]["buffers"][0]["size"] = json!(0);
    assert_rejected(&f, "spec.buffers[0].size", ">= 1");
}

#[test]
fn block_beyond_cuda_limits_is_rejected() {
    let mut f = example("saxpy");
    f["spec"]["kernels"][0]["block"] = json!([2048, 1, 1]);
    assert_rejected(&f, "spec.kernels[0].block[0]", "<= 1024");
    let mut f = example("matmul");
    f["spec"]["kernels"][0]["block"] = json!([64, 32, 1]);
    assert_rejected(&f, "block", "at most 1024 threads");
    let mut f = example("matmul");
    f["spec"]["kernels"][0]["grid"] = json!([1, 70000, 1]);
    assert_rejected(&f, "grid", "65535");
    let mut f = example("matmul");
    f["spec"]["kernels"][0]["block"] = json!([16, 16]);
    assert_rejected(&f, "spec.kernels[0].block", "at least 3 items");
}

#[test]
fn duplicate_buffer_names_are_rejected() {
    let mut f = example("saxpy");
    f["spec"]["buffers"][1]["name"] = json!("x");
    assert_rejected(&f, "buffers", "buffer names must be unique");
}

#[test]
fn duplicate_module_names_are_rejected() {
    let mut f = example("saxpy");
    let m = f["spec"]["modules"][0].clone();
    f["spec"]["modules"].as_array_mut().unwrap().push(m);
    assert_rejected(&f, "modules", "module names must be unique");
}

#[test]
fn kernel_naming_a_missing_module_or_buffer_is_rejected() {
    let mut f = example("matmul");
    f["spec"]["kernels"][0]["module"] = json!("nope");
    assert_rejected(&f, "kernels", "module must name an entry of modules");
    let mut f = example("matmul");
    f["spec"]["kernels"][0]["args"][0] = json!({"buffer": "nope"});
    assert_rejected(&f, "kernels", "argument buffer must name an entry of buffers");
}

#[test]
fn closed_enums_reject_unknown_values() {
    let mut f = example("saxpy");
    f["spec"]["buffers"][0]["kind"] = json!("Scratch");
    assert_rejected(&f, "spec.buffers[0].kind", "supported values");
    let mut p = example("default");
    p["spec"]["policy"] = json!("round-robin");
    assert_rejected(&p, "spec.policy", "\"mqfq-sticky\"");
    let mut c = example("cpu-wasm");
    c["spec"]["kind"] = json!("TPU");
    assert_rejected(&c, "spec.kind", "supported values");
}

#[test]
fn const_buffer_needs_source_and_argument_one_literal() {
    let mut f = example("dense-relu");
    f["spec"]["buffers"][1].as_object_mut().unwrap().remove("source");
    assert_rejected(&f, "spec.buffers[1]", "Const buffers need a source");
    let mut f = example("saxpy");
    f["spec"]["kernels"][0]["args"][3] = json!({"f32": 2.0, "u32": 3});
    assert_rejected(&f, "spec.kernels[0].args[3]", "exactly one of");
    let mut f = example("saxpy");
    f["spec"]["modules"][0]["wasm"] = json!({"inline": "(module)", "inlineBase64": "AA=="});
    assert_rejected(&f, "spec.modules[0].wasm", "exactly one of");
}

#[test]
fn unknown_and_missing_fields_are_rejected() {
    let mut f = example("saxpy");
    f["spec"]["slo"]["deadline"] = json!(5);
    assert_rejected(&f, "spec.slo.deadline", "unknown field");
    let mut f = example("saxpy");
    f["spec"]["slo"].as_object_mut().unwrap().remove("deadlineMs");
    assert_rejected(&f, "spec.slo.deadlineMs", "required");
    let mut f = example("saxpy");
    f["spec"]["buffers"][0]["size"] = json!("4096");
    assert_rejected(&f, "spec.buffers[0].size", "type integer");
}

#[test]
fn policy_must_be_named_default_and_static_needs_partitions() {
    let mut p = example("default");
    p["metadata"]["name"] = json!("mine");
    assert_rejected(&p, "", "must be named default");
    let mut p = example("default");
    p["spec"]["policy"] = json!("static");
    assert_rejected(&p, "parameters.partitions", "policy static needs parameters.partitions");
    p["spec"]["parameters"]["partitions"] = json!([{"function": "default/saxpy", "devices": 2}]);
    assert_eq!(errors_of(&p), Vec::<String>::new());
}

#[test]
fn https_source_needs_a_digest() {
    let mut f = example("saxpy");
    f["spec"]["modules"][0]["wasm"] =
        json!({"https": {"url": "https://example.com/k.wasm", "sha256": "abc"}});
    assert_rejected(&f, "spec.modules[0].wasm.https.sha256", "must match");
    let mut f = example("saxpy");
    f["spec"]["modules"][0]["wasm"] =
        json!({"https": {"url": "http://example.com/k.wasm", "sha256": "a".repeat(64)}});
    assert_rejected(&f, "https", "url must start with https://");
}
