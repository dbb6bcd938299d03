//! The I/O that feeds conversion: ConfigMap and Secret keys in the function's own
//! namespace, and digest-pinned HTTPS downloads. Missing objects are not errors here:
//! they are simply absent from [`Prefetched`], and conversion reports which one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kaas_crds::{KernelFunction, Source};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::convert::{MODULE_SOURCE_LABEL, Prefetched};

/// Every source of a function.
pub fn sources(kf: &KernelFunction) -> Vec<&Source> {
    let mut out = Vec::new();
    for m in &kf.spec.modules {
        out.extend(m.wasm.iter());
        out.extend(m.cuda.iter().map(|c| &c.source));
    }
    out.extend(kf.spec.buffers.iter().filter_map(|b| b.source.as_ref()));
    out
}

/// Fetches what the function's sources reference. API errors other than "not found"
/// are returned (the reconcile is retried); absent objects and keys are left out.
pub async fn prefetch(client: &Client, kf: &KernelFunction) -> Result<Prefetched, kube::Error> {
    let ns = kf.namespace().unwrap_or_else(|| "default".into());
    let mut out = Prefetched::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut cm_cache: BTreeMap<String, Option<ConfigMap>> = BTreeMap::new();
    let mut secret_cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for s in sources(kf) {
        if let Some(r) = &s.config_map_ref {
            if !cm_cache.contains_key(&r.name) {
                cm_cache.insert(r.name.clone(), cms.get_opt(&r.name).await?);
            }
            if let Some(cm) = &cm_cache[&r.name] {
                let text = cm.data.as_ref().and_then(|d| d.get(&r.key)).map(|t| t.as_bytes().to_vec());
                let bin = cm.binary_data.as_ref().and_then(|d| d.get(&r.key)).map(|b| b.0.clone());
                if let Some(bytes) = text.or(bin) {
                    out.config_maps.insert((ns.clone(), r.name.clone(), r.key.clone()), bytes);
                }
            }
        }
        if let Some(r) = &s.secret_ref {
            if !secret_cache.contains_key(&r.name) {
                secret_cache.insert(r.name.clone(), secrets.get_opt(&r.name).await?);
            }
            if let Some(sec) = &secret_cache[&r.name] {
                let consented = sec.labels().get(MODULE_SOURCE_LABEL).is_some_and(|v| v == "true");
                if !consented {
                    out.unconsented_secrets.insert((ns.clone(), r.name.clone()));
                } else if let Some(b) = sec.data.as_ref().and_then(|d| d.get(&r.key)) {
                    out.secrets.insert((ns.clone(), r.name.clone(), r.key.clone()), b.0.clone());
                }
            }
        }
        if let Some(h) = &s.https
            && !out.downloads.contains_key(&h.url)
        {
            match download(&h.url, &h.sha256).await {
                Ok(bytes) => {
                    out.downloads.insert(h.url.clone(), bytes);
                }
                Err(e) => warn!(url = %h.url, error = %e, "download failed"),
            }
        }
    }
    Ok(out)
}

/// Downloads `url` and checks it against its pinned sha256 (hex).
pub async fn download(url: &str, sha256: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(url.starts_with("https://"), "only https:// URLs are fetched");
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
    let bytes = client.get(url).send().await?.error_for_status()?.bytes().await?.to_vec();
    let got = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(got.eq_ignore_ascii_case(sha256), "sha256 is {got}, the resource pins {sha256}");
    Ok(bytes)
}
