//! The invocation gateway: input checks, routing to node executors (which queue and
//! admit under the cluster's policy), spillback to the next node on a refusal, retries
//! when a node dies. Every accepted request ends in exactly one answer.

pub mod auth;
mod core;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod stats;

pub use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

pub use self::core::{ClassModel, Gateway, GatewayConfig};
pub use node::{Connector, NodeClient};

/// Why an invocation was not served; each maps to one HTTP status and gRPC code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// Wrong buffer name or size, malformed body (400).
    #[error("{0}")]
    BadInput(String),
    /// No such function (404).
    #[error("{0}")]
    NotFound(String),
    /// Turned away by admission control (429).
    #[error("{reason}")]
    Rejected {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after_ms: u64,
    },
    /// No capacity or no executor (503).
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed (504).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The function's code failed (a bad module, a kernel fault) (500).
    #[error("{0}")]
    Failed(String),
    /// No valid credentials (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right to invoke this function (403).
    #[error("{0}")]
    Forbidden(String),
}

impl GatewayError {
    /// HTTP status code.
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::BadInput(_) => 400,
            GatewayError::NotFound(_) => 404,
            GatewayError::Rejected { .. } => 429,
            GatewayError::Unavailable(_) => 503,
            GatewayError::DeadlineExceeded(_) => 504,
            GatewayError::Failed(_) => 500,
            GatewayError::Unauthenticated(_) => 401,
            GatewayError::Forbidden(_) => 403,
        }
    }

    /// A bounded reason for bodies and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadInput(_) => "bad_input",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::Rejected { .. } => "rejected",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::DeadlineExceeded(_) => "deadline_exceeded",
            GatewayError::Failed(_) => "function_failed",
            GatewayError::Unauthenticated(_) => "unauthenticated",
            GatewayError::Forbidden(_) => "forbidden",
        }
    }
}

/// A served invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoked {
    /// Output buffers.
    pub outputs: BTreeMap<String, Bytes>,
    /// Whether it paid a cold start.
    pub cold_start: bool,
    /// `node/device` it ran on.
    pub device: String,
    /// Queueing in the gateway and on the node, with the hops between them.
    pub queue: Duration,
    /// Of `queue`, the wait in the node's queue alone, as the executor measured it.
    pub node_queue: Duration,
    /// Cold-start time.
    pub cold: Duration,
    /// Kernel time.
    pub exec: Duration,
    /// End to end, as the gateway saw it.
    pub total: Duration,
}
