//! The gRPC service: a thin adapter from the generated tonic trait to [`Executor`], and
//! helpers to serve it on TCP and unix sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use crate::model::FunctionDef;
use crate::proto::executor_server::{Executor as ExecutorApi, ExecutorServer};
use crate::proto::{self};
use crate::runtime::{Executor, inputs_from};

/// The tonic service over an [`Executor`].
#[derive(Clone)]
pub struct ExecutorService {
    executor: Executor,
}

impl ExecutorService {
    /// A service for `executor`.
    pub fn new(executor: Executor) -> Self {
        ExecutorService { executor }
    }

    /// The tonic server wrapper, taking messages of at most `max_bytes`.
    pub fn into_server(self, max_bytes: usize) -> ExecutorServer<Self> {
        ExecutorServer::new(self).max_decoding_message_size(max_bytes).max_encoding_message_size(max_bytes)
    }
}

/// The largest message the node API (TCP, the gateways' channel) takes: it carries
/// function definitions with their weights (`Const` contents), up to 1 GiB.
pub const NODE_MAX_MESSAGE_BYTES: usize = 1 << 30;
/// The largest message a pod's share socket takes (invocations only): 64 MiB, the
/// gateway's default.
pub const SHARE_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// HTTP/2 flow-control window per stream, for kaas's gRPC servers and clients: h2's
/// default of 64 KiB paces a multi-MiB payload by a WINDOW_UPDATE round trip every 64 KiB
/// (256 of them for 16 MiB). A peer may buffer this much per stream unread.
pub const STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// ... and per connection (all its streams together).
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// The largest HTTP/2 frame a kaas server takes (h2's default is 16 KiB): fewer frames,
/// headers and wake-ups per payload.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// A tonic server with kaas's HTTP/2 settings (windows, frame size; see
/// [`STREAM_WINDOW_BYTES`]): the executor's node API, its share sockets and the gateways'
/// gRPC API are all built from this.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
}

/// A server layer that answers a message over the limit with `RESOURCE_EXHAUSTED`, the
/// code gRPC specifies for it (tonic says `OUT_OF_RANGE`). Tonic refuses such a message
/// from its length prefix, before reading it, so its size costs no memory.
pub fn oversize_is_resource_exhausted<B>(mut r: http::Response<B>) -> http::Response<B> {
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let oversize = r.headers().get("grpc-status").is_some_and(|v| v == "11")
        && r.headers().get("grpc-message").is_some_and(|m| {
            // Percent-encoded on the wire.
            has(m.as_bytes(), b"message%20length%20too%20large")
                || has(m.as_bytes(), b"message length too large")
        });
    if oversize {
        r.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    r
}

/// The stream of `WatchStatus`.
pub type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::NodeStatus, Status>> + Send>>;

/// A request's deadline: `deadline_ms` of 0 means the function's own.
pub(crate) fn deadline_of(deadline_ms: u32) -> Option<Duration> {
    (deadline_ms > 0).then(|| Duration::from_millis(u64::from(deadline_ms)))
}

/// The wire form of a finished invocation.
impl From<crate::runtime::Executed> for proto::ExecuteResponse {
    fn from(e: crate::runtime::Executed) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        proto::ExecuteResponse {
            outputs: e.outputs.into_iter().collect(),
            cold_start: e.cold_start,
            device: e.device,
            timing: Some(proto::Timing {
                queue_ms: ms(e.queue),
                cold_start_ms: ms(e.cold),
                exec_ms: ms(e.exec),
                total_ms: ms(e.total),
            }),
        }
    }
}

/// A function's key, `namespace/name`.
pub(crate) fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[tonic::async_trait]
impl ExecutorApi for ExecutorService {
    async fn put_function(
        &self,
        req: Request<proto::FunctionDef>,
    ) -> Result<Response<proto::PutFunctionResponse>, Status> {
        let def = FunctionDef::try_from(req.into_inner())?;
        let runnable_on = self.executor.put_function(def).await?;
        Ok(Response::new(proto::PutFunctionResponse { runnable_on }))
    }

    async fn execute(
        &self,
        req: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let r = req.into_inner();
        let share = match (r.share_id.is_empty(), r.device.is_empty()) {
            (false, _) => Some(r.share_id),
            (true, false) => Some(format!("@{}", r.device)),
            (true, true) => None,
        };
        let e = self
            .executor
            .execute(&key(&r.namespace, &r.name), inputs_from(r.inputs), deadline_of(r.deadline_ms), share)
            .await?;
        Ok(Response::new(e.into()))
    }

    async fn preload(
        &self,
        req: Request<proto::PreloadRequest>,
    ) -> Result<Response<proto::PreloadResponse>, Status> {
        let r = req.into_inner();
        let f = r.function.ok_or_else(|| Status::invalid_argument("function is required"))?;
        let device = (!r.device.is_empty()).then_some(r.device);
        let devices = self.executor.preload(&key(&f.namespace, &f.name), device).await?;
        Ok(Response::new(proto::PreloadResponse { devices }))
    }

    async fn evict(
        &self,
        req: Request<proto::FunctionRef>,
    ) -> Result<Response<proto::EvictResponse>, Status> {
        let f = req.into_inner();
        let devices = self.executor.evict(&key(&f.namespace, &f.name)).await?;
        Ok(Response::new(proto::EvictResponse { devices }))
    }

    async fn set_policy(
        &self,
        req: Request<proto::PolicyUpdate>,
    ) -> Result<Response<proto::PolicyAck>, Status> {
        let config: kaas_scheduler::SchedulerConfig = serde_json::from_str(&req.into_inner().config_json)
            .map_err(|e| Status::invalid_argument(format!("scheduler configuration: {e}")))?;
        let policy = config.policy.name.clone();
        self.executor.set_scheduler(config).await?;
        Ok(Response::new(proto::PolicyAck { policy }))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        req: Request<proto::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let interval = Duration::from_millis(req.into_inner().interval_ms.max(10) as u64);
        let mut rx = self.executor.watch();
        let stream = async_stream(move |tx| async move {
            loop {
                let snapshot = proto::NodeStatus::from(&*rx.borrow_and_update());
                if tx.send(Ok(snapshot)).await.is_err() {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A stream fed by a task through a bounded channel.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How long in-flight calls (status streams included) get after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs a server future with graceful shutdown, cut short after [`SHUTDOWN_GRACE`]:
/// status streams never end by themselves and would otherwise hold shutdown forever.
pub(crate) async fn with_grace<E>(
    serve: impl FnOnce(
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), E>> + Send>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), E> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve(Box::pin(async move {
        shutdown.await;
        let _ = tx.send(());
    }));
    tokio::select! {
        r = server => r,
        _ = async { if rx.await.is_ok() { tokio::time::sleep(SHUTDOWN_GRACE).await } else { std::future::pending::<()>().await } } => Ok(()),
    }
}

/// Serves the executor API on a TCP address until `shutdown` resolves; with `tls`, only
/// to clients whose certificate chains to its client CA (see [`crate::tls`]).
pub async fn serve_tcp(
    executor: Executor,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let mut builder = grpc_server();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    with_grace(
        move |signal| {
            Box::pin(
                builder
                    .layer(tower::util::MapResponseLayer::new(oversize_is_resource_exhausted))
                    .add_service(ExecutorService::new(executor).into_server(NODE_MAX_MESSAGE_BYTES))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                        signal,
                    ),
            )
        },
        shutdown,
    )
    .await
}

/// Serves the whole executor API (the node API) on a unix socket at `path` (replacing a
/// stale one) until `shutdown` resolves; the socket file is removed afterwards. The socket
/// is made owner-only: it registers and evicts any tenant's functions, so it is for the
/// node's own processes, never mounted into pods (they get share sockets, [`crate::share`]).
pub async fn serve_unix(
    executor: Executor,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let result = with_grace(
        move |signal| {
            Box::pin(
                grpc_server()
                    .layer(tower::util::MapResponseLayer::new(oversize_is_resource_exhausted))
                    .add_service(ExecutorService::new(executor).into_server(SHARE_MAX_MESSAGE_BYTES))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), signal),
            )
        },
        shutdown,
    )
    .await;
    let _ = std::fs::remove_file(path);
    result.map_err(std::io::Error::other)
}

/// Binds a TCP listener, for callers that want the bound port before serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A client connected over a unix socket.
pub async fn connect_unix(
    path: &Path,
) -> Result<proto::executor_client::ExecutorClient<tonic::transport::Channel>, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(proto::executor_client::ExecutorClient::new(channel)
        .max_decoding_message_size(SHARE_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(SHARE_MAX_MESSAGE_BYTES))
}
