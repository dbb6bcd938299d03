//! Device backends behind one trait: [`wasm`] (CPU, wasmtime) and [`cuda`] (GPU, cudarc).

pub mod cuda;
pub mod fault;
pub mod wasm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use kaas_scheduler::Isolation;

use crate::error::ExecError;
use crate::memory::Owner;
use crate::model::FunctionDef;

/// Input or output buffers of an invocation by name. A buffer is a [`Bytes`]: a request's
/// payload is a slice of the message it arrived in, handed on and cloned (a retry, a
/// rerun) without copying.
pub type Outputs = BTreeMap<String, Bytes>;

pub use bytes::Bytes;

/// What a device is.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Stable ID (`cpu`, or the GPU's UUID).
    pub id: String,
    /// `cpu` or `gpu`.
    pub kind: String,
    /// Model name.
    pub model: String,
    /// Memory the executor may use, bytes.
    pub memory_bytes: u64,
    /// Kernels that may run at once.
    pub slots: u32,
}

/// One device and how to run kernels on it.
pub trait Backend: Send + Sync {
    /// The device.
    fn info(&self) -> DeviceInfo;
    /// Bytes not in use.
    fn free_memory(&self) -> u64;
    /// Whether the function has a build for this device kind.
    fn can_run(&self, f: &FunctionDef) -> bool;
    /// Whether this version of the function is resident.
    fn is_resident(&self, f: &FunctionDef) -> bool;
    /// Makes the function resident: modules compiled and loaded, const buffers uploaded.
    fn load(&self, f: &Arc<FunctionDef>) -> Result<(), ExecError>;
    /// Drops a function's resident state.
    fn unload(&self, key: &str);
    /// Sets how tenants share this device (see [`Isolation`]). A function resident under
    /// another scope than the new setting gives it is no longer resident: its next
    /// invocation loads it again, in its new scope.
    fn set_isolation(&self, isolation: Isolation);
    /// Starts an invocation of a resident function: buffers allocated, inputs written.
    fn begin(
        &self,
        f: &Arc<FunctionDef>,
        owner: Owner,
        inputs: Outputs,
    ) -> Result<Box<dyn Invocation>, ExecError>;
    /// `Err(reason)` while the device is unusable. Cheap: reads what [`Backend::probe`]
    /// and failed operations recorded.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Checks the device itself (may block, for example on a GPU synchronisation); runs
    /// on a blocking thread every health interval. A success clears a recorded failure,
    /// so a device that recovers becomes healthy again.
    fn probe(&self) {}
}

/// An invocation in progress on one device. Dropping it frees everything it holds.
pub trait Invocation: Send {
    /// Runs kernel `k` of the graph; returns its device time.
    fn run_kernel(&mut self, k: usize) -> Result<Duration, ExecError>;
    /// Reads the outputs and frees the invocation.
    fn finish(self: Box<Self>) -> Result<Outputs, ExecError>;
    /// Stops each kernel of this invocation after about `budget` instead of the device's
    /// kernel time limit, with [`ExecError::Timeout`]; whether the backend can (and the
    /// budget is below its limit). The executor runs microsecond kernels on its scheduler
    /// thread under such a budget and reruns one that exceeds it on a blocking thread with
    /// the full limit, so a backend that says yes must leave nothing behind when a kernel is
    /// stopped (the invocation is dropped and begun again).
    fn set_time_budget(&mut self, _budget: Duration) -> bool {
        false
    }
}
