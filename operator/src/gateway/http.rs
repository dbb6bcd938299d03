//! The HTTP API: `POST /v1/namespaces/{ns}/functions/{name}:invoke`, `/metrics`,
//! `/healthz`, `/readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use kaas_executor::liveness::Liveness;

use super::{Gateway, GatewayError, Invoked};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The gateway.
    pub gateway: Gateway,
    /// Every metric of the process.
    pub registry: Arc<Registry>,
    /// The process's long-lived tasks and in-process executors: `/healthz` fails naming
    /// any that has ended.
    pub liveness: Liveness,
    /// The largest payload (decoded input bytes) a request may carry; the body limit is
    /// what its base64 and JSON take ([`body_limit`]).
    pub max_request_bytes: usize,
}

/// The default of `--max-request-bytes`: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;

/// The HTTP body limit for payloads of `max_request_bytes`: base64 takes 4/3, plus 64 KiB
/// for names and JSON. A larger body is answered 413 without being read.
pub fn body_limit(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_mul(4) / 3 + (64 << 10)
}

/// The router of the gateway's HTTP API.
pub fn router(state: HttpState) -> Router {
    let limit = body_limit(state.max_request_bytes);
    let invoke = post(invoke)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(limit, refuse_declared_oversize))
        .layer(axum::middleware::from_fn_with_state(state.gateway.clone(), authorize));
    Router::new()
        .route("/v1/namespaces/{ns}/functions/{action}", invoke)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// `/metrics`, `/healthz` and `/readyz` alone, for a separate metrics port.
pub fn ops_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeBody<'a> {
    /// Base64, borrowed from the body where it has no escapes (base64 never needs any):
    /// a payload is not copied before it is decoded.
    #[serde(borrow)]
    inputs: BTreeMap<String, std::borrow::Cow<'a, str>>,
    #[serde(default)]
    deadline_ms: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimingJson {
    queue_ms: f64,
    node_queue_ms: f64,
    cold_start_ms: f64,
    exec_ms: f64,
    total_ms: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InvokeReply {
    outputs: BTreeMap<String, String>,
    cold_start: bool,
    device: String,
    timing: TimingJson,
}

fn error(e: GatewayError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = serde_json::json!({ "error": e.to_string(), "reason": e.reason() });
    let mut resp;
    if let GatewayError::Rejected { retry_after_ms, .. } = &e {
        body["retryAfterMs"] = (*retry_after_ms).into();
        resp = (status, axum::Json(body)).into_response();
        let secs = retry_after_ms.div_ceil(1000).max(1);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    } else {
        resp = (status, axum::Json(body)).into_response();
    }
    resp
}

async fn invoke(
    State(s): State<HttpState>,
    Path((ns, action)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    let Some(name) = action.strip_suffix(":invoke") else {
        return error(GatewayError::NotFound(format!("unknown action in {action:?}; use {{name}}:invoke")));
    };
    let body: InvokeBody = match serde_json::from_slice(&raw) {
        Ok(b) => b,
        Err(e) => return error(GatewayError::BadInput(format!("body: {e}"))),
    };
    let mut inputs = BTreeMap::new();
    for (k, v) in body.inputs {
        match STANDARD.decode(v.as_bytes()) {
            Ok(b) => {
                inputs.insert(k, kaas_executor::backend::Bytes::from(b));
            }
            Err(e) => return error(GatewayError::BadInput(format!("input {k:?} is not base64: {e}"))),
        }
    }
    let deadline = body.deadline_ms.map(Duration::from_millis);
    // The base64 text is done with: not held (4/3 of the payload) while the call runs.
    drop(raw);
    match s.gateway.invoke(&format!("{ns}/{name}"), inputs, deadline).await {
        Ok(r) => axum::Json(reply(r)).into_response(),
        Err(e) => error(e),
    }
}

fn reply(r: Invoked) -> InvokeReply {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    InvokeReply {
        outputs: r.outputs.into_iter().map(|(k, v)| (k, STANDARD.encode(v))).collect(),
        cold_start: r.cold_start,
        device: r.device,
        timing: TimingJson {
            queue_ms: ms(r.queue),
            node_queue_ms: ms(r.node_queue),
            cold_start_ms: ms(r.cold),
            exec_ms: ms(r.exec),
            total_ms: ms(r.total),
        },
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The caller's token is checked first, before the body is read.
async fn authorize(
    State(gw): State<Gateway>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // /v1/namespaces/{ns}/functions/{name}:invoke
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let ns = parts.nth(2).unwrap_or_default().to_string();
    let name = parts.nth(1).unwrap_or_default();
    let name = name.strip_suffix(":invoke").unwrap_or(name).to_string();
    let token = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = gw.authorize(super::auth::bearer(token), &ns, &name).await {
        gw.metrics().outcome(e.reason());
        let mut resp = error(e);
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return resp;
    }
    next.run(req).await
}

/// A body whose declared length is over the limit is answered 413 before any of it is
/// read (a body without a length is read up to the limit, then refused alike).
async fn refuse_declared_oversize(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        let body = serde_json::json!({
            "error": format!("request body of {len} bytes exceeds the limit of {limit} bytes (--max-request-bytes of payload, in base64)"),
            "reason": "too_large",
        });
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
    }
    next.run(req).await
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let (code, body) = s.liveness.report();
    (StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), body).into_response()
}

async fn ready(State(s): State<HttpState>) -> Response {
    if s.gateway.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy executor device yet\n").into_response()
    }
}
