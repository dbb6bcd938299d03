//! `kaas-executor`: runs kernel graphs of many tenants on a node's GPUs (CUDA through
//! cudarc) and CPUs (WebAssembly through wasmtime).
//!
//! The executor owns device memory ([`memory`]), keeps functions resident, queues kernels
//! per device under the scheduling core's policies ([`runtime`]) and serves the
//! `kaas.executor.v1` gRPC API ([`service`]) on TCP and unix sockets. A bad module, a
//! kernel fault or a timeout fails that invocation with a clear error and leaves the
//! executor serving everyone else.

pub mod backend;
pub mod codec;
pub mod devices;
pub mod error;
pub mod inflight;
pub mod liveness;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod nvrtc;
pub mod runtime;
pub mod service;
pub mod share;
pub mod signature;
pub mod status;
pub mod tls;

/// Generated gRPC types of `proto/executor.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("kaas.executor.v1");
}

pub use error::ExecError;
pub use runtime::{Executed, Executor, ExecutorConfig, Share};
