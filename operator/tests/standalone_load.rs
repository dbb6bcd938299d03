//! Issue 17, point 5: standalone mode reads resources with a maintained YAML parser
//! (`serde_yaml_ng`, the fork of the archived `serde_yaml`): files as people and tools
//! write them — several documents, CRLF line endings, anchors and aliases, other API
//! groups beside kaas.dev — load, and a document that is not YAML is an error naming the
//! file instead of being skipped.

use kaas_operator::standalone::load_dir;

/// A function whose output buffer's size is an alias of the input's.
const FUNCTION: &str = "apiVersion: kaas.dev/v1alpha1
kind: KernelFunction
metadata: { name: probe }
spec:
  modules:
    - name: m
      wasm:
        inline: |
          (module (memory (export \"memory\") 1)
            (func (export \"k\") (param i32 i32 i32 i32 i32 i32 i32 i32)))
  buffers:
    - { name: x, size: &n 64, kind: Input }
    - { name: y, size: *n, kind: Output }
  kernels:
    - { module: m, entry: k, grid: [1, 1, 1], block: [1, 1, 1], args: [{ buffer: x }, { buffer: y }] }
  slo: { deadlineMs: 100 }
  profile:
    - { acceleratorClass: cpu-wasm, runtimeMs: 1, loadMs: 5 }
";

#[test]
fn multi_document_crlf_and_aliases_load_and_broken_yaml_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Two functions and a ConfigMap in one file, every line ending in CRLF.
    let mixed = format!(
        "{FUNCTION}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: other }}\n---\n{}",
        FUNCTION.replace("name: probe", "name: probe-2")
    );
    std::fs::write(dir.path().join("mixed.yaml"), mixed.replace('\n', "\r\n")).unwrap();
    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(dir.path().join("more/third.yml"), FUNCTION.replace("name: probe", "name: probe-3"))
        .unwrap();
    let r = load_dir(dir.path()).unwrap();
    let mut names: Vec<String> = r.functions.iter().map(|f| f.metadata.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["probe", "probe-2", "probe-3"]);
    for f in &r.functions {
        assert_eq!(f.metadata.namespace.as_deref(), Some("default"));
        let sizes: Vec<u64> = f.spec.buffers.iter().map(|b| b.size).collect();
        assert_eq!(sizes, [64, 64], "the alias repeats the anchored size");
    }

    // Broken YAML is reported with the file and document, not skipped.
    std::fs::write(dir.path().join("broken.yaml"), format!("{FUNCTION}---\nkind: [unclosed\n")).unwrap();
    let err = format!("{:#}", load_dir(dir.path()).unwrap_err());
    assert!(err.contains("broken.yaml") && err.contains("document 2 is not valid YAML"), "{err}");
}
