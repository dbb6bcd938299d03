//! Where module code and constant buffers come from.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key inside a ConfigMap or Secret in the function's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the ConfigMap or Secret (same namespace as the function).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside it. Binary content belongs under `binaryData` (ConfigMap) or `data` (Secret).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// An HTTPS download pinned by its content digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpsSource {
    /// `https://` URL of the content.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// Lower-case hex sha256 of the content; a download with another digest is refused.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// Exactly one place the bytes of a module or a constant buffer come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.inline), has(self.inlineBase64), has(self.configMapRef), has(self.secretRef), has(self.https)].filter(x, x).size() == 1"
).message("set exactly one of inline, inlineBase64, configMapRef, secretRef, https"))]
pub struct Source {
    /// Small text content written in the resource (PTX, CUDA C, WebAssembly text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub inline: Option<String>,
    /// Small binary content, base64 encoded (cubin, wasm, weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub inline_base64: Option<String>,
    /// A key of a ConfigMap in the function's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// A key of a Secret in the function's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// A digest-pinned HTTPS download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<HttpsSource>,
}

impl Source {
    /// A source holding text inline.
    pub fn inline(text: impl Into<String>) -> Self {
        Self { inline: Some(text.into()), ..Self::default() }
    }
}
