//! Share sockets: the executor API as a pod sees it.
//!
//! Each share the device plugin hands out has its own unix socket, and Allocate mounts
//! only the sockets of the shares it allocated. A connection accepted on a share's socket
//! is bound to that share, and on its first call to the namespace of the pod the kubelet
//! allocated the share to ([`ShareOwners`], the PodResources API in the device plugin).
//! Over such a connection a pod may only `Execute` functions of that namespace, under
//! that share's weight and quota: registering, preloading or evicting functions, changing
//! the policy, watching node status, naming another share or none, or pinning a device
//! is refused with `PERMISSION_DENIED` and the reason.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::OnceCell;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::proto::executor_server::Executor as ExecutorApi;
use crate::proto::{self, executor_server::ExecutorServer};
use crate::runtime::{Executor, inputs_from};
use crate::service::{SHARE_MAX_MESSAGE_BYTES, deadline_of, key, oversize_is_resource_exhausted};

/// File name of a share's socket inside its directory.
pub const SHARE_SOCKET: &str = "executor.sock";

/// Who holds a share now.
#[tonic::async_trait]
pub trait ShareOwners: Send + Sync + 'static {
    /// The namespace of the pod `share` (of extended resource `resource`) is allocated to.
    /// `PERMISSION_DENIED` when no pod (or pods of several namespaces) holds it;
    /// `UNAVAILABLE` when the answer cannot be had now.
    async fn namespace_of(&self, resource: &str, share: &str) -> Result<String, Status>;
}

/// One share's socket.
#[derive(Clone, Debug)]
pub struct ShareSocket {
    /// The share's ID (`KAAS_SHARE_IDS`).
    pub share: String,
    /// Its extended resource (`kaas.dev/gpu-share`, `kaas.dev/cpu-share`).
    pub resource: String,
    /// Where its socket is created.
    pub path: PathBuf,
}

/// Whether `id` is safe as a path component: ASCII letters, digits, `-`, `_` and `.`,
/// not starting with a dot.
pub fn is_safe_share_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 200
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a connection is bound to: its share, and once learned, the share's namespace.
#[derive(Clone)]
pub struct ShareConn {
    share: Arc<str>,
    resource: Arc<str>,
    peer_pid: Option<i32>,
    namespace: Arc<OnceCell<String>>,
}

/// A connection accepted on a share socket.
pub struct ShareStream {
    io: UnixStream,
    conn: ShareConn,
}

impl Connected for ShareStream {
    type ConnectInfo = ShareConn;

    fn connect_info(&self) -> ShareConn {
        self.conn.clone()
    }
}

impl AsyncRead for ShareStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShareStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The executor API of share sockets: `Execute` of the bound namespace's functions only.
#[derive(Clone)]
pub struct ShareService {
    executor: Executor,
    owners: Arc<dyn ShareOwners>,
}

impl ShareService {
    /// A service over `executor` asking `owners` who holds each share.
    pub fn new(executor: Executor, owners: Arc<dyn ShareOwners>) -> Self {
        ShareService { executor, owners }
    }

    /// The namespace `conn` is bound to, learned on its first call and kept for the
    /// connection's life (a pod's connections end with its containers). A failed lookup
    /// is not kept: the next call asks again.
    async fn namespace(&self, conn: &ShareConn) -> Result<String, Status> {
        let ns = conn
            .namespace
            .get_or_try_init(|| async {
                let ns = self.owners.namespace_of(&conn.resource, &conn.share).await?;
                info!(share = %conn.share, namespace = %ns, pid = ?conn.peer_pid, "share connection bound");
                Ok::<_, Status>(ns)
            })
            .await?;
        Ok(ns.clone())
    }
}

fn denied(call: &str) -> Status {
    Status::permission_denied(format!(
        "{call} is not allowed on a share socket: a pod may only Execute its own namespace's functions \
         (functions are registered and evicted by the operator through the node API)"
    ))
}

fn conn_of<T>(req: &Request<T>) -> Result<ShareConn, Status> {
    req.extensions()
        .get::<ShareConn>()
        .cloned()
        .ok_or_else(|| Status::internal("share connection without its binding"))
}

#[tonic::async_trait]
impl ExecutorApi for ShareService {
    async fn put_function(
        &self,
        _: Request<proto::FunctionDef>,
    ) -> Result<Response<proto::PutFunctionResponse>, Status> {
        Err(denied("PutFunction"))
    }

    async fn execute(
        &self,
        req: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let conn = conn_of(&req)?;
        let r = req.into_inner();
        let share = &*conn.share;
        if r.share_id.is_empty() {
            return Err(Status::permission_denied(format!(
                "share_id is required on a share socket: this socket serves share {share:?} (see KAAS_SHARE_IDS)"
            )));
        }
        if r.share_id != share {
            return Err(Status::permission_denied(format!(
                "share {:?} is not this socket's: it serves share {share:?} only",
                r.share_id
            )));
        }
        if !r.device.is_empty() {
            return Err(Status::permission_denied(format!(
                "device {:?}: a share runs on its own device; pinning a device is for the node API",
                r.device
            )));
        }
        let ns = self.namespace(&conn).await?;
        if r.namespace != ns {
            warn!(share, namespace = %ns, function = %format!("{}/{}", r.namespace, r.name), "foreign function refused");
            return Err(Status::permission_denied(format!(
                "share {share:?} is allocated to a pod in namespace {ns:?}; it may not run {}/{} of another namespace",
                r.namespace, r.name
            )));
        }
        let e = self
            .executor
            .execute(
                &key(&r.namespace, &r.name),
                inputs_from(r.inputs),
                deadline_of(r.deadline_ms),
                Some(r.share_id),
            )
            .await?;
        Ok(Response::new(e.into()))
    }

    async fn preload(
        &self,
        _: Request<proto::PreloadRequest>,
    ) -> Result<Response<proto::PreloadResponse>, Status> {
        Err(denied("Preload"))
    }

    async fn evict(&self, _: Request<proto::FunctionRef>) -> Result<Response<proto::EvictResponse>, Status> {
        Err(denied("Evict"))
    }

    async fn set_policy(
        &self,
        _: Request<proto::PolicyUpdate>,
    ) -> Result<Response<proto::PolicyAck>, Status> {
        Err(denied("SetPolicy"))
    }

    type WatchStatusStream = crate::service::StatusStream;

    async fn watch_status(
        &self,
        _: Request<proto::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        // Node status names every tenant's functions.
        Err(denied("WatchStatus"))
    }
}

/// Binds `path` afresh (a stale socket is replaced; its directory is created) and lets
/// anyone who can reach the file connect: which pods can is decided by the mount.
fn bind_share(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    // Connecting needs write permission on the socket; pods may run as any user.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves every share socket in `sockets` until `shutdown` resolves, then removes them.
pub async fn serve_shares(
    executor: Executor,
    sockets: Vec<ShareSocket>,
    owners: Arc<dyn ShareOwners>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for s in &sockets {
        if !is_safe_share_id(&s.share) {
            return Err(std::io::Error::other(format!(
                "share ID {:?} is not usable as a file name",
                s.share
            )));
        }
        let l = bind_share(&s.path)
            .map_err(|e| std::io::Error::other(format!("cannot listen on {}: {e}", s.path.display())))?;
        let share: Arc<str> = s.share.as_str().into();
        let resource: Arc<str> = s.resource.as_str().into();
        listeners.push(UnixListenerStream::new(l).map(move |accepted| {
            accepted.map(|io| {
                let peer_pid = io.peer_cred().ok().and_then(|c| c.pid());
                ShareStream {
                    io,
                    conn: ShareConn {
                        share: share.clone(),
                        resource: resource.clone(),
                        peer_pid,
                        namespace: Arc::new(OnceCell::new()),
                    },
                }
            })
        }));
    }
    let incoming = futures::stream::select_all(listeners);
    let service = ExecutorServer::new(ShareService::new(executor, owners))
        .max_decoding_message_size(SHARE_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(SHARE_MAX_MESSAGE_BYTES);
    let result = crate::service::with_grace(
        move |signal| {
            Box::pin(
                crate::service::grpc_server()
                    .layer(tower::util::MapResponseLayer::new(oversize_is_resource_exhausted))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, signal),
            )
        },
        shutdown,
    )
    .await;
    for s in &sockets {
        let _ = std::fs::remove_file(&s.path);
    }
    result.map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_ids_that_could_escape_their_directory_are_refused() {
        assert!(is_safe_share_id("GPU-3f2a9c1e-77aa-4b1c-9d3e-0123456789ab-s3"));
        assert!(is_safe_share_id("cpu-s0"));
        for bad in ["", "..", ".hidden", "a/b", "../x", "a b", "a\0b", "ü"] {
            assert!(!is_safe_share_id(bad), "{bad:?} accepted");
        }
    }
}
