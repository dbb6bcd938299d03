//! A connection to one node's executor: in-process (standalone) or over gRPC.

use std::time::Duration;

use kaas_executor::proto::{self, executor_client::ExecutorClient};
use kaas_executor::{ExecError, Executor, model::FunctionDef};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::GatewayError;

/// An executor the gateway dispatches to.
#[derive(Clone)]
pub enum NodeClient {
    /// In the same process.
    Local(Executor),
    /// Over gRPC.
    Remote(ExecutorClient<Channel>),
}

/// How a node call failed.
#[derive(Debug, Clone)]
pub enum NodeFailure {
    /// The node answered with an error about the request: pass it on.
    Answer(GatewayError),
    /// The node could not be reached or died mid-call: retry elsewhere.
    Down(String),
}

/// How gateways and controllers reach executors over TCP: mutual TLS (the cluster's
/// default, [`kaas_executor::tls`]) or plaintext.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    tls: Option<ClientTlsConfig>,
}

impl Connector {
    /// Plaintext: for executors on loopback or an otherwise closed network.
    pub fn plaintext() -> Self {
        Connector { tls: None }
    }

    /// Mutual TLS with this client configuration.
    pub fn tls(config: ClientTlsConfig) -> Self {
        Connector { tls: Some(config) }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A lazily connecting client for the endpoint a `KaasNode` publishes. With TLS every
    /// connection is TLS whatever the scheme says (an `http://` endpoint is dialled as
    /// `https://`): a gateway with certificates never falls back to plaintext.
    pub fn remote(&self, endpoint: &str) -> Result<NodeClient, GatewayError> {
        let bad = |e: String| GatewayError::Unavailable(format!("bad executor endpoint {endpoint}: {e}"));
        let ep = match (&self.tls, endpoint.strip_prefix("http://")) {
            (Some(tls), rest) => {
                let uri = rest.map_or_else(|| endpoint.to_string(), |r| format!("https://{r}"));
                Endpoint::from_shared(uri)
                    .map_err(|e| bad(e.to_string()))?
                    .tls_config(tls.clone())
                    .map_err(|e| bad(e.to_string()))?
            }
            (None, _) if endpoint.starts_with("https://") => {
                return Err(bad("it is https, and this gateway has no --executor-tls-* certificates".into()));
            }
            (None, _) => Endpoint::from_shared(endpoint.to_string()).map_err(|e| bad(e.to_string()))?,
        };
        Ok(NodeClient::from_endpoint(ep))
    }
}

impl NodeClient {
    /// A lazily connecting plaintext client for `http://host:port`.
    pub fn remote(endpoint: &str) -> Result<Self, GatewayError> {
        Connector::plaintext().remote(endpoint)
    }

    fn from_endpoint(ep: Endpoint) -> Self {
        let ep = ep
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(kaas_executor::service::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(kaas_executor::service::CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        NodeClient::Remote(
            ExecutorClient::new(ep.connect_lazy())
                .max_decoding_message_size(1 << 30)
                .max_encoding_message_size(1 << 30),
        )
    }

    /// Registers a function.
    pub async fn put_function(&self, def: proto::FunctionDef) -> Result<(), NodeFailure> {
        match self {
            NodeClient::Local(ex) => {
                let def = FunctionDef::try_from(def).map_err(|e| NodeFailure::Answer(from_exec(e)))?;
                ex.put_function(def).await.map(drop).map_err(|e| NodeFailure::Answer(from_exec(e)))
            }
            NodeClient::Remote(c) => c.clone().put_function(def).await.map(drop).map_err(from_status),
        }
    }

    /// Sets the node's scheduling policy (the cluster's, pushed by the gateway).
    pub async fn set_policy(&self, config: &kaas_scheduler::SchedulerConfig) -> Result<(), NodeFailure> {
        match self {
            NodeClient::Local(ex) => {
                ex.set_scheduler(config.clone()).await.map_err(|e| NodeFailure::Answer(from_exec(e)))
            }
            NodeClient::Remote(c) => {
                let config_json = serde_json::to_string(config)
                    .map_err(|e| NodeFailure::Answer(GatewayError::BadInput(e.to_string())))?;
                c.clone().set_policy(proto::PolicyUpdate { config_json }).await.map(drop).map_err(from_status)
            }
        }
    }

    /// Runs an invocation.
    pub async fn execute(&self, req: proto::ExecuteRequest) -> Result<proto::ExecuteResponse, NodeFailure> {
        match self {
            NodeClient::Local(ex) => {
                let share = (!req.device.is_empty()).then(|| format!("@{}", req.device));
                let deadline = (req.deadline_ms > 0).then(|| Duration::from_millis(req.deadline_ms as u64));
                let key = format!("{}/{}", req.namespace, req.name);
                let e = ex
                    .execute(&key, req.inputs.into_iter().collect(), deadline, share)
                    .await
                    .map_err(|e| NodeFailure::Answer(from_exec(e)))?;
                Ok(e.into())
            }
            NodeClient::Remote(c) => {
                c.clone().execute(req).await.map(|r| r.into_inner()).map_err(from_status)
            }
        }
    }

    /// Evicts a function everywhere on the node.
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<(), NodeFailure> {
        match self {
            NodeClient::Local(ex) => match ex.evict(&format!("{namespace}/{name}")).await {
                Ok(_) | Err(ExecError::UnknownFunction(_)) => Ok(()),
                Err(e) => Err(NodeFailure::Answer(from_exec(e))),
            },
            NodeClient::Remote(c) => {
                match c
                    .clone()
                    .evict(proto::FunctionRef { namespace: namespace.into(), name: name.into() })
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                    Err(s) => Err(from_status(s)),
                }
            }
        }
    }

    /// Preloads a function on a device.
    pub async fn preload(&self, namespace: &str, name: &str, device: &str) -> Result<(), NodeFailure> {
        match self {
            NodeClient::Local(ex) => ex
                .preload(&format!("{namespace}/{name}"), Some(device.to_string()))
                .await
                .map(drop)
                .map_err(|e| NodeFailure::Answer(from_exec(e))),
            NodeClient::Remote(c) => c
                .clone()
                .preload(proto::PreloadRequest {
                    function: Some(proto::FunctionRef { namespace: namespace.into(), name: name.into() }),
                    device: device.into(),
                })
                .await
                .map(drop)
                .map_err(from_status),
        }
    }
}

/// Executor errors keep their meaning through the gateway.
pub fn from_exec(e: ExecError) -> GatewayError {
    match e {
        ExecError::BadInput(m) => GatewayError::BadInput(m),
        ExecError::BadFunction(m) => GatewayError::BadInput(m),
        ExecError::UnknownFunction(m) => GatewayError::NotFound(m),
        ExecError::Timeout { .. } | ExecError::DeadlineExceeded { .. } => {
            GatewayError::DeadlineExceeded(e.to_string())
        }
        ExecError::Rejected { reason, retry_after_ms } => GatewayError::Rejected { reason, retry_after_ms },
        ExecError::OutOfMemory(_) => GatewayError::Rejected { reason: e.to_string(), retry_after_ms: 1000 },
        ExecError::NoCapacity(_) | ExecError::Unavailable(_) | ExecError::ShuttingDown => {
            GatewayError::Unavailable(e.to_string())
        }
        ExecError::ModuleLoad { .. } | ExecError::KernelFault { .. } => GatewayError::Failed(e.to_string()),
    }
}

/// A gRPC status from an executor. Statuses the executor produced carry `kaas-error`
/// metadata; anything else is the transport failing, which means the node is down.
fn from_status(s: tonic::Status) -> NodeFailure {
    if s.metadata().get("kaas-error").is_none() {
        return NodeFailure::Down(format!("{:?}: {}", s.code(), s.message()));
    }
    use tonic::Code;
    let m = s.message().to_string();
    let retry_after_ms =
        s.metadata().get("kaas-retry-after-ms").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1000);
    NodeFailure::Answer(match s.code() {
        Code::InvalidArgument => GatewayError::BadInput(m),
        Code::NotFound => GatewayError::NotFound(m),
        Code::DeadlineExceeded => GatewayError::DeadlineExceeded(m),
        Code::ResourceExhausted => GatewayError::Rejected { reason: m, retry_after_ms },
        Code::Unavailable => GatewayError::Unavailable(m),
        _ => GatewayError::Failed(m),
    })
}
