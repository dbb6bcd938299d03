//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kaas/crds");
    let mut stale = Vec::new();
    for (file, crd) in kaas_crds::crds() {
        let generated = kaas_crds::crd_yaml(&crd).unwrap();
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != generated {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "charts/kaas/crds is stale for {stale:?}: run `cargo run -p kaas-crds --bin crdgen` and commit"
    );
}

#[test]
fn every_crd_has_status_subresource_and_columns() {
    for (file, crd) in kaas_crds::crds() {
        assert_eq!(crd.spec.group, "kaas.dev", "{file}");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1", "{file}");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{file} lacks /status");
        let cols = v.additional_printer_columns.as_ref().map(Vec::len).unwrap_or(0);
        assert!(cols >= 3, "{file} has {cols} printer columns");
    }
}

#[test]
fn kernel_function_is_namespaced_with_short_name_and_kubectl_columns() {
    let crd = kaas_crds::crds().into_iter().find(|(f, _)| f.starts_with("kernelfunctions")).unwrap().1;
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["kf".to_string()][..]));
    let cols: Vec<String> =
        crd.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect();
    for want in ["Admitted", "Ready", "P99-ms", "SLO", "Age"] {
        assert!(cols.iter().any(|c| c == want), "missing column {want} in {cols:?}");
    }
    for (file, crd) in kaas_crds::crds() {
        if !file.starts_with("kernelfunctions") {
            assert_eq!(crd.spec.scope, "Cluster", "{file}");
        }
    }
}

#[test]
fn policy_enum_is_exactly_the_design_names() {
    let crd = kaas_crds::crds().into_iter().find(|(f, _)| f.starts_with("schedulingpolicies")).unwrap().1;
    let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
    let names = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["policy"]["enum"];
    let expected = serde_json::json!([
        "balance",
        "exclusive",
        "static",
        "cfs-affinity",
        "edf",
        "slo-aware",
        "mqfq-sticky"
    ]);
    assert_eq!(names, &expected);
    let admission = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["admission"]["enum"];
    assert_eq!(admission, &serde_json::json!(["none", "deadline", "token-bucket"]));
}
