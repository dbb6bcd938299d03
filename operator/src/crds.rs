//! `kaas-operator apply-crds`: applies (server-side, forced) the CustomResourceDefinitions
//! this binary was built with. Helm installs `charts/kaas/crds/` once and never upgrades
//! it; the chart's pre-install/pre-upgrade hook Job runs this, so `helm upgrade` brings the
//! CRDs along with the binaries that read them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tracing::info;

/// Field manager of the CRDs.
pub const CRD_FIELD_MANAGER: &str = "kaas.dev/crds";

/// Applies every kaas CRD; returns their names.
pub async fn apply(client: &Client) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for (_, crd) in kaas_crds::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply(CRD_FIELD_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .map_err(|e| anyhow::anyhow!("applying CRD {name}: {e}"))?;
        info!(crd = %name, "applied");
        names.push(name);
    }
    Ok(names)
}
