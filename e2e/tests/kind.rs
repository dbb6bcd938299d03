//! The kind suite (`e2e/kind/run.sh`). It needs Docker and kind, which CI machines do
//! not have, so it is ignored by default (cargo test lists it as ignored, with the
//! reason) and additionally gated by `KAAS_E2E_KIND=1`, since it creates a cluster.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs Docker and kind: KAAS_E2E_KIND=1 cargo test -p kaas-e2e --test kind -- --ignored (e2e/kind/README.md)"]
fn kind_suite() {
    assert_eq!(
        std::env::var("KAAS_E2E_KIND").as_deref(),
        Ok("1"),
        "the kind suite creates and deletes a kind cluster: set KAAS_E2E_KIND=1 to run it (e2e/kind/README.md)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kind/run.sh");
    let status = Command::new(&script).status().expect("run e2e/kind/run.sh");
    assert!(status.success(), "kind suite failed: {status}");
}
