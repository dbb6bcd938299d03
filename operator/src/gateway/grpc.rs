//! The gateway's gRPC API (`kaas.gateway.v1.Gateway`), the HTTP API's twin.

use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use super::{Gateway, GatewayError};
use crate::proto::gateway_server::{Gateway as GatewayApi, GatewayServer};
use crate::proto::{InvokeRequest, InvokeResponse, Timing};

/// The tonic service over a [`Gateway`].
#[derive(Clone)]
pub struct GatewayService {
    gateway: Gateway,
}

impl GatewayService {
    /// The tonic server for `gateway`, taking requests (and sending answers) of at most
    /// `max_bytes`. Serve it behind
    /// [`oversize_is_resource_exhausted`](kaas_executor::service::oversize_is_resource_exhausted)
    /// so that a larger request is answered `RESOURCE_EXHAUSTED`.
    pub fn server(gateway: Gateway, max_bytes: usize) -> GatewayServer<Self> {
        GatewayServer::new(GatewayService { gateway })
            .max_decoding_message_size(max_bytes)
            .max_encoding_message_size(max_bytes)
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        let code = match &e {
            GatewayError::BadInput(_) => Code::InvalidArgument,
            GatewayError::NotFound(_) => Code::NotFound,
            GatewayError::Rejected { .. } => Code::ResourceExhausted,
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            GatewayError::Failed(_) => Code::Internal,
            GatewayError::Unauthenticated(_) => Code::Unauthenticated,
            GatewayError::Forbidden(_) => Code::PermissionDenied,
        };
        let mut s = Status::new(code, e.to_string());
        if let GatewayError::Rejected { retry_after_ms, .. } = &e
            && let Ok(v) = retry_after_ms.to_string().parse()
        {
            s.metadata_mut().insert("retry-after-ms", v);
        }
        if let Ok(v) = e.reason().parse() {
            s.metadata_mut().insert("kaas-error", v);
        }
        s
    }
}

#[tonic::async_trait]
impl GatewayApi for GatewayService {
    async fn invoke(&self, req: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let token = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = super::auth::bearer(token).map(str::to_string);
        let r = req.into_inner();
        if let Err(e) = self.gateway.authorize(token.as_deref(), &r.namespace, &r.name).await {
            self.gateway.metrics().outcome(e.reason());
            return Err(e.into());
        }
        let deadline = (r.deadline_ms > 0).then(|| Duration::from_millis(r.deadline_ms as u64));
        let done = self
            .gateway
            .invoke(&format!("{}/{}", r.namespace, r.name), r.inputs.into_iter().collect(), deadline)
            .await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Ok(Response::new(InvokeResponse {
            outputs: done.outputs.into_iter().collect(),
            cold_start: done.cold_start,
            device: done.device,
            timing: Some(Timing {
                queue_ms: ms(done.queue),
                node_queue_ms: ms(done.node_queue),
                cold_start_ms: ms(done.cold),
                exec_ms: ms(done.exec),
                total_ms: ms(done.total),
            }),
        }))
    }
}
