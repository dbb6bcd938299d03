//! Who may invoke (DESIGN.md §9): a bearer token, checked before anything else is done
//! with the request, over HTTP and gRPC alike.
//!
//! - In a cluster ([`KubeAuth`]): the token by a `TokenReview`, the caller's right by a
//!   `SubjectAccessReview` for verb `invoke` on `kernelfunctions` (group `kaas.dev`) in the
//!   function's namespace; both answers cached briefly in a bounded cache. The chart's
//!   ClusterRole `kaas-invoker` grants the verb.
//! - Standalone ([`TokenFile`]): `--auth-token-file`, one `TOKEN NAMESPACE[,NAMESPACE...]`
//!   (or `TOKEN *`) per line.
//!
//! No token: 401. A token that does not authenticate: 401. No right: 403.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::GatewayError;

/// Decides whether the bearer of a token may invoke `namespace/name`.
#[tonic::async_trait]
pub trait Authorize: Send + Sync {
    /// `Ok` to invoke; `Unauthenticated` (401) or `Forbidden` (403) otherwise.
    async fn authorize(&self, token: Option<&str>, namespace: &str, name: &str) -> Result<(), GatewayError>;
}

/// The token of an `Authorization: Bearer …` value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn missing() -> GatewayError {
    GatewayError::Unauthenticated("no bearer token (Authorization: Bearer <token>)".into())
}

/// Where a token may invoke.
#[derive(Clone, Debug, PartialEq)]
enum Scope {
    All,
    Namespaces(HashSet<String>),
}

/// Tokens from a file: `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *` per line; `#`
/// comments and blank lines are skipped. Only the tokens' SHA-256 digests are kept.
#[derive(Debug)]
pub struct TokenFile {
    tokens: HashMap<[u8; 32], Scope>,
}

impl TokenFile {
    /// Parses a token file's text; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(scope), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "line {}: expected `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *`",
                    i + 1
                ));
            };
            let scope = if scope == "*" {
                Scope::All
            } else {
                let set: HashSet<String> =
                    scope.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
                if set.is_empty() {
                    return Err(format!("line {}: no namespace", i + 1));
                }
                Scope::Namespaces(set)
            };
            if tokens.insert(digest(token), scope).is_some() {
                return Err(format!("line {}: the token appears twice", i + 1));
            }
        }
        if tokens.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(TokenFile { tokens })
    }

    /// Reads and parses `path`.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
        TokenFile::parse(&text).map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether it holds none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[tonic::async_trait]
impl Authorize for TokenFile {
    async fn authorize(&self, token: Option<&str>, namespace: &str, name: &str) -> Result<(), GatewayError> {
        let token = token.ok_or_else(missing)?;
        match self.tokens.get(&digest(token)) {
            None => Err(GatewayError::Unauthenticated("unknown token".into())),
            Some(Scope::All) => Ok(()),
            Some(Scope::Namespaces(ns)) if ns.contains(namespace) => Ok(()),
            Some(Scope::Namespaces(_)) => Err(GatewayError::Forbidden(format!(
                "this token may not invoke functions in namespace {namespace:?} ({namespace}/{name})"
            ))),
        }
    }
}

/// How long an answer of the API server is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most; beyond, expired ones go first, then the oldest.
pub const CACHE_ENTRIES: usize = 4096;

/// (token digest, namespace, name).
type Key = ([u8; 32], String, String);
/// When an answer was given, and the answer.
type Answer = (Instant, Result<(), GatewayError>);

/// TokenReview + SubjectAccessReview against the API server, cached.
pub struct KubeAuth {
    client: Client,
    cache: Mutex<HashMap<Key, Answer>>,
}

impl KubeAuth {
    /// Over `client` (the operator needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`, which the chart grants).
    pub fn new(client: Client) -> Self {
        KubeAuth { client, cache: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, key: &Key) -> Option<Result<(), GatewayError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, r)| r.clone())
    }

    fn remember(&self, key: Key, r: &Result<(), GatewayError>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES
                && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), r.clone()));
    }

    async fn review(&self, token: &str, namespace: &str, name: &str) -> Result<(), GatewayError> {
        let unavailable = |what: &str, e: kube::Error| {
            GatewayError::Unavailable(format!("cannot check the caller ({what} failed: {e})"))
        };
        let tr = TokenReview {
            spec: TokenReviewSpec { token: token.to_string(), ..Default::default() },
            ..Default::default()
        };
        let tr = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &tr)
            .await
            .map_err(|e| unavailable("TokenReview", e))?;
        let status = tr.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "the token did not authenticate".into());
            return Err(GatewayError::Unauthenticated(why));
        }
        let user = status.user.unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.into()),
                    verb: Some("invoke".into()),
                    group: Some("kaas.dev".into()),
                    resource: Some("kernelfunctions".into()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let sar = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| unavailable("SubjectAccessReview", e))?;
        let s = sar.status.unwrap_or_default();
        if s.allowed {
            Ok(())
        } else {
            Err(GatewayError::Forbidden(format!(
                "{} may not invoke kernelfunctions {namespace}/{name} (needs verb invoke, as ClusterRole kaas-invoker grants){}",
                user.username.unwrap_or_else(|| "the caller".into()),
                s.reason.map(|r| format!(": {r}")).unwrap_or_default()
            )))
        }
    }
}

#[tonic::async_trait]
impl Authorize for KubeAuth {
    async fn authorize(&self, token: Option<&str>, namespace: &str, name: &str) -> Result<(), GatewayError> {
        let token = token.ok_or_else(missing)?;
        let key = (digest(token), namespace.to_string(), name.to_string());
        if let Some(r) = self.cached(&key) {
            return r;
        }
        let r = self.review(token, namespace, name).await;
        // An API server that could not answer is asked again next time.
        if !matches!(r, Err(GatewayError::Unavailable(_))) {
            self.remember(key, &r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[tokio::test]
    async fn a_token_file_scopes_tokens_to_namespaces() {
        let f = TokenFile::parse("# ops\nt-team a,b\nt-admin *\n\n").unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.authorize(Some("t-team"), "a", "f").await.is_ok());
        assert!(matches!(f.authorize(Some("t-team"), "c", "f").await, Err(GatewayError::Forbidden(_))));
        assert!(f.authorize(Some("t-admin"), "c", "f").await.is_ok());
        assert!(matches!(f.authorize(Some("nope"), "a", "f").await, Err(GatewayError::Unauthenticated(_))));
        assert!(matches!(f.authorize(None, "a", "f").await, Err(GatewayError::Unauthenticated(_))));
    }

    #[test]
    fn a_bad_token_file_says_which_line() {
        assert_eq!(
            TokenFile::parse("a\n").unwrap_err(),
            "line 1: expected `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *`"
        );
        assert_eq!(TokenFile::parse("a x\na y\n").unwrap_err(), "line 2: the token appears twice");
        assert_eq!(TokenFile::parse("# nothing\n").unwrap_err(), "no token in the file");
        assert_eq!(TokenFile::parse("a ,\n").unwrap_err(), "line 1: no namespace");
    }
}
