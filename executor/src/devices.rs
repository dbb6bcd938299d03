//! Finding the devices an executor runs on.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::backend::Backend;
use crate::backend::cuda::CudaBackend;
use crate::backend::wasm::WasmBackend;
use crate::error::ExecError;

/// Which backends to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// Every GPU CUDA finds, plus the CPU device.
    #[default]
    Auto,
    /// GPUs only; fail if there are none.
    Cuda,
    /// The CPU device only.
    Wasm,
}

/// How devices are set up.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// Backends.
    pub backend: BackendChoice,
    /// Memory of the CPU device, bytes.
    pub cpu_memory: u64,
    /// Concurrent kernels on the CPU device.
    pub cpu_slots: u32,
    /// Concurrent kernels (streams) per GPU.
    pub gpu_slots: u32,
    /// GPU memory left to the driver and other users, bytes.
    pub gpu_reserve: u64,
    /// A kernel running longer fails its invocation.
    pub kernel_timeout: Duration,
    /// How far past its buffers a WebAssembly module's linear memory may reach, bytes.
    pub wasm_memory_margin: u64,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            backend: BackendChoice::Auto,
            cpu_memory: 4 << 30,
            cpu_slots: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            gpu_slots: 4,
            gpu_reserve: 1 << 30,
            kernel_timeout: Duration::from_secs(10),
            wasm_memory_margin: crate::backend::wasm::DEFAULT_MEMORY_MARGIN,
        }
    }
}

/// The devices to run on. With `auto`, a machine without CUDA runs on its CPU alone and
/// the reason is logged.
pub fn discover(opts: &DeviceOptions) -> Result<Vec<Arc<dyn Backend>>, ExecError> {
    let mut devices: Vec<Arc<dyn Backend>> = Vec::new();
    if opts.backend != BackendChoice::Wasm {
        match CudaBackend::discover(opts.gpu_slots, opts.gpu_reserve, opts.kernel_timeout) {
            Ok(gpus) => {
                for g in gpus {
                    info!(device = %g.info().id, model = %g.info().model, "GPU found");
                    devices.push(Arc::new(g));
                }
            }
            Err(e) if opts.backend == BackendChoice::Cuda => return Err(e),
            Err(e) => warn!("running without GPUs: {e}"),
        }
    }
    if opts.backend != BackendChoice::Cuda {
        devices.push(Arc::new(
            WasmBackend::new(opts.cpu_memory, opts.cpu_slots, opts.kernel_timeout)?
                .with_memory_margin(opts.wasm_memory_margin),
        ));
    }
    Ok(devices)
}
