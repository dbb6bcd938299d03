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

/// The largest HTTPS source fetched by default (`--max-download-bytes`): the operator
/// holds a source in memory while it registers the function.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 128 << 20;
/// Verified downloads kept for reuse by default, bytes (`--download-cache-bytes`).
pub const DEFAULT_DOWNLOAD_CACHE_BYTES: u64 = 256 << 20;
const MAX_REDIRECTS: usize = 5;

/// HTTPS sources, fetched with a size cap, redirects only to public https addresses,
/// and each `(url, sha256)` fetched once: the pinned digest makes a verified download
/// valid for as long as it is cached.
pub struct Downloader {
    client: reqwest::Client,
    max_bytes: u64,
    cache: std::sync::Mutex<Cache>,
}

/// A verified download and when it was last used.
type Cached = (std::sync::Arc<[u8]>, u64);

#[derive(Default)]
struct Cache {
    /// By `(url, lowercase sha256)`.
    entries: BTreeMap<(String, String), Cached>,
    bytes: u64,
    capacity: u64,
    tick: u64,
}

/// Whether an address is one a redirect must not lead to.
fn internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| internal(v4.into()))
        }
    }
}

/// Why a redirect to `url` is refused, if it is.
fn refused_redirect(url: &reqwest::Url) -> Option<String> {
    if url.scheme() != "https" {
        return Some(format!("redirect to non-https {url}"));
    }
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>()
        && internal(ip)
    {
        return Some(format!("redirect to the internal address {host}"));
    }
    if bare == "localhost" || bare.ends_with(".localhost") {
        return Some(format!("redirect to {host}"));
    }
    None
}

impl Downloader {
    /// A downloader taking sources of at most `max_bytes`, keeping `cache_bytes` of
    /// verified downloads, trusting the public web roots plus `extra_roots` (PEM).
    pub fn new(max_bytes: u64, cache_bytes: u64, extra_roots: &[Vec<u8>]) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    let n = attempt.previous().len();
                    return attempt.error(format!("more than {n} redirects"));
                }
                match refused_redirect(attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                }
            }));
        for pem in extra_roots {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(Downloader {
            client: builder.build()?,
            max_bytes,
            cache: std::sync::Mutex::new(Cache { capacity: cache_bytes, ..Cache::default() }),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Downloads `url` (or takes it from the cache) and checks it against its pinned
    /// sha256 (hex). The body is streamed: one over the size cap is refused as soon as it
    /// says or shows so, never held whole.
    pub async fn get(&self, url: &str, sha256: &str) -> anyhow::Result<std::sync::Arc<[u8]>> {
        anyhow::ensure!(url.starts_with("https://"), "only https:// URLs are fetched, not {url}");
        let key = (url.to_string(), sha256.to_ascii_lowercase());
        {
            let mut c = self.cache();
            c.tick += 1;
            let tick = c.tick;
            if let Some((bytes, used)) = c.entries.get_mut(&key) {
                *used = tick;
                return Ok(bytes.clone());
            }
        }
        let max = self.max_bytes;
        let too_big = |n: u64| {
            anyhow::anyhow!("{url} is {n} bytes or more, over the limit of {max} (--max-download-bytes)")
        };
        let mut resp = self.client.get(url).send().await?.error_for_status()?;
        if let Some(n) = resp.content_length()
            && n > max
        {
            return Err(too_big(n));
        }
        // Chunks as they come (no reallocation while growing): a body refused as too
        // large never held more than the cap.
        let (mut chunks, mut len) = (Vec::new(), 0u64);
        let mut hash = Sha256::new();
        while let Some(chunk) = resp.chunk().await? {
            len += chunk.len() as u64;
            if len > max {
                return Err(too_big(len));
            }
            hash.update(&chunk);
            chunks.push(chunk);
        }
        let got = hex::encode(hash.finalize());
        anyhow::ensure!(got == key.1, "sha256 is {got}, the resource pins {sha256}");
        let bytes: std::sync::Arc<[u8]> = chunks.concat().into();
        let mut c = self.cache();
        let size = bytes.len() as u64;
        if size <= c.capacity {
            while c.bytes + size > c.capacity {
                let oldest = c.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
                let Some(k) = oldest else { break };
                if let Some((b, _)) = c.entries.remove(&k) {
                    c.bytes -= b.len() as u64;
                }
            }
            c.tick += 1;
            let tick = c.tick;
            c.bytes += size;
            c.entries.insert(key, (bytes.clone(), tick));
        }
        Ok(bytes)
    }

    /// Verified downloads kept, and their bytes.
    pub fn cached(&self) -> (usize, u64) {
        let c = self.cache();
        (c.entries.len(), c.bytes)
    }
}

static DOWNLOADER: std::sync::OnceLock<Downloader> = std::sync::OnceLock::new();

/// Sets the process's download limits (once, at start; later calls are ignored).
pub fn configure_downloads(max_bytes: u64, cache_bytes: u64) -> anyhow::Result<()> {
    let d = Downloader::new(max_bytes, cache_bytes, &[])?;
    let _ = DOWNLOADER.set(d);
    Ok(())
}

fn downloader() -> anyhow::Result<&'static Downloader> {
    if let Some(d) = DOWNLOADER.get() {
        return Ok(d);
    }
    let d = Downloader::new(DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_DOWNLOAD_CACHE_BYTES, &[])?;
    Ok(DOWNLOADER.get_or_init(|| d))
}

/// Downloads `url` through the process's [`Downloader`] and checks its pinned sha256.
pub async fn download(url: &str, sha256: &str) -> anyhow::Result<Vec<u8>> {
    Ok(downloader()?.get(url, sha256).await?.to_vec())
}
