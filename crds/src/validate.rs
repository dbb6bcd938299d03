//! Client-side validation of a manifest against a generated CRD: the structural
//! OpenAPI rules the API server enforces (types, required fields, closed enums,
//! bounds, patterns, unknown fields as with `--validate=strict`) and the CEL
//! `x-kubernetes-validations` rules, evaluated with `kube-cel`.
//!
//! Supported schema keywords: `type`, `nullable`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `minimum`, `maximum`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `pattern`, `allOf`, `anyOf`, `oneOf`,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`. `metadata` is
//! checked for a name only; the API server validates it itself.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// One reason a manifest does not fit its CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, `spec.kernels[0].block`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Errors from validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The manifest names a kind this CRD set does not define.
    #[error("no CRD defines apiVersion {api_version} kind {kind}")]
    UnknownKind {
        /// `apiVersion` of the manifest.
        api_version: String,
        /// `kind` of the manifest.
        kind: String,
    },
    /// The manifest breaks one or more schema rules.
    #[error("invalid {kind}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// `kind` of the manifest.
        kind: String,
        /// Every rule it breaks.
        errors: Vec<FieldError>,
    },
}

/// Validates `object` against whichever CRD of `crds` defines its `apiVersion` and `kind`.
pub fn validate_object(crds: &[CustomResourceDefinition], object: &Value) -> Result<(), ValidateError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let schema = crds
        .iter()
        .filter(|crd| crd.spec.names.kind == kind)
        .flat_map(|crd| crd.spec.versions.iter().map(move |v| (crd, v)))
        .find(|(crd, v)| format!("{}/{}", crd.spec.group, v.name) == api_version)
        .and_then(|(_, v)| v.schema.as_ref()?.open_api_v3_schema.as_ref())
        .map(serde_json::to_value)
        .transpose()
        .ok()
        .flatten()
        .ok_or_else(|| ValidateError::UnknownKind { api_version: api_version.into(), kind: kind.into() })?;
    let errors = validate_value(&schema, object);
    if errors.is_empty() { Ok(()) } else { Err(ValidateError::Invalid { kind: kind.into(), errors }) }
}

/// Validates `object` against an OpenAPI v3 schema: structure first, then CEL rules
/// (CEL runs only on a structurally valid object, as in the API server).
pub fn validate_value(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    structural(schema, object, "", &mut errors, true);
    if errors.is_empty()
        && let Err(cel) = kube_cel::Validator::new().validate(schema, object, None)
    {
        errors.extend(cel.into_vec().into_iter().map(|e| FieldError {
            path: e.field_path.trim_start_matches('.').to_string(),
            message: e.message,
        }));
    }
    errors
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

fn push(errors: &mut Vec<FieldError>, path: &str, message: impl Into<String>) {
    let path = if path.is_empty() { "<root>".to_string() } else { path.to_string() };
    errors.push(FieldError { path, message: message.into() });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn structural(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>, root: bool) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            push(errors, path, "must not be null");
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            push(errors, path, format!("must be an integer or a string, not {}", type_name(v)));
        }
        return;
    }
    for (key, all) in [("allOf", true), ("anyOf", false), ("oneOf", false)] {
        if let Some(subs) = schema.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<FieldError>> = subs
                .iter()
                .map(|s| {
                    let mut e = Vec::new();
                    structural(s, v, path, &mut e, false);
                    e
                })
                .collect();
            let passing = results.iter().filter(|e| e.is_empty()).count();
            if all {
                errors.extend(results.into_iter().flatten());
            } else if passing == 0 || (key == "oneOf" && passing > 1) {
                push(
                    errors,
                    path,
                    format!(
                        "must match {} of the alternatives of {key}",
                        if key == "oneOf" { "exactly one" } else { "at least one" }
                    ),
                );
            }
        }
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = ty == actual || (ty == "number" && actual == "integer");
        if !ok {
            push(errors, path, format!("must be of type {ty}, not {actual}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        push(errors, path, format!("unsupported value {v}: supported values are {}", names.join(", ")));
    }
    match v {
        Value::Number(n) => number_bounds(schema, n.as_f64().unwrap_or(f64::NAN), path, errors),
        Value::String(s) => string_bounds(schema, s, path, errors),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                push(errors, path, format!("must have at least {min} items, has {len}"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                push(errors, path, format!("must have at most {max} items, has {len}"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for field in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(field) {
                        push(errors, &join(path, field), "required field is missing");
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            for (field, value) in map {
                let child = join(path, field);
                if root && (field == "apiVersion" || field == "kind") {
                    continue;
                }
                if root && field == "metadata" {
                    if value.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
                        && value.get("generateName").is_none()
                    {
                        push(errors, "metadata.name", "required field is missing");
                    }
                    continue;
                }
                match (props.and_then(|p| p.get(field)), additional) {
                    (Some(s), _) => structural(s, value, &child, errors, false),
                    (None, Some(s)) if s.is_object() => structural(s, value, &child, errors, false),
                    (None, Some(Value::Bool(true))) => {}
                    _ if preserve => {}
                    _ => push(errors, &child, "unknown field"),
                }
            }
        }
        _ => {}
    }
}

fn number_bounds(schema: &Value, n: f64, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            push(errors, path, format!("must be {} {min}, is {n}", if exclusive { ">" } else { ">=" }));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            push(errors, path, format!("must be {} {max}, is {n}", if exclusive { "<" } else { "<=" }));
        }
    }
}

fn string_bounds(schema: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        push(errors, path, format!("must be at least {min} characters"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        push(errors, path, format!("must be at most {max} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => push(errors, path, format!("must match {pattern}")),
            Ok(_) => {}
            Err(e) => push(errors, path, format!("schema pattern {pattern} does not compile: {e}")),
        }
    }
}
