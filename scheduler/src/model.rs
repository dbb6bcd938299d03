//! The cluster, function and request model the scheduler decides over.

use serde::{Deserialize, Serialize};

/// Time in nanoseconds since an origin the caller chooses. The core never reads a clock.
pub type Nanos = u64;

/// Nanoseconds in one millisecond.
pub const MS: Nanos = 1_000_000;
/// Nanoseconds in one second.
pub const SEC: Nanos = 1_000_000_000;

/// Converts milliseconds (possibly fractional) to nanoseconds, rounding to the nearest.
pub fn ms(v: f64) -> Nanos {
    (v * MS as f64).round().max(0.0) as Nanos
}

/// Converts nanoseconds to fractional milliseconds.
pub fn to_ms(v: Nanos) -> f64 {
    v as f64 / MS as f64
}

/// Index of an accelerator class in [`Cluster::classes`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClassId(pub u16);

/// Index of a device in [`Cluster::devices`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u32);

/// Index of a function in the scheduler's function table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionId(pub u32);

/// What runs a class's kernels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum DeviceKind {
    /// CUDA kernels on a GPU.
    #[default]
    Gpu,
    /// WebAssembly builds of the kernels on CPU cores.
    Cpu,
}

/// A device model: every device of a class is alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcceleratorClass {
    /// Name, as in the `AcceleratorClass` resource.
    pub name: String,
    /// GPU or CPU.
    pub kind: DeviceKind,
    /// Speed relative to the reference class; used when a function has no runtime for this class.
    pub speed: f64,
    /// Memory of one device in bytes.
    pub memory_bytes: u64,
    /// Kernels that may run concurrently on one device.
    pub slots: u32,
    /// Price of one device-hour.
    pub price_per_hour: f64,
}

/// One device of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its class.
    pub class: ClassId,
    /// Stable name (node/device) used in reports.
    pub name: String,
}

/// The devices the scheduler may use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Device models.
    pub classes: Vec<AcceleratorClass>,
    /// Devices, each of a class above.
    pub devices: Vec<Device>,
}

impl Cluster {
    /// Adds `count` devices of a new class and returns the class id.
    pub fn add_class(&mut self, class: AcceleratorClass, count: usize) -> ClassId {
        let id = ClassId(self.classes.len() as u16);
        for i in 0..count {
            self.devices.push(Device { class: id, name: format!("{}-{i}", class.name) });
        }
        self.classes.push(class);
        id
    }

    /// The class of a device.
    pub fn class_of(&self, d: DeviceId) -> &AcceleratorClass {
        &self.classes[self.devices[d.0 as usize].class.0 as usize]
    }
}

/// A kernel function as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// `namespace/name`, or any unique label.
    pub name: String,
    /// Tenant it belongs to (the namespace in a cluster).
    pub tenant: String,
    /// Warm runtime of one invocation per class; `None` where the function cannot run there
    /// (no build for that backend). Indexed by [`ClassId`].
    pub runtime: Vec<Option<Nanos>>,
    /// Time to make the function resident on a device of each class (module load and const
    /// upload): what a cold start pays. Indexed by [`ClassId`].
    pub load_time: Vec<Nanos>,
    /// Bytes of resident state (modules and const buffers) kept on a device while warm.
    pub resident_bytes: u64,
    /// Bytes of per-invocation buffers (inputs, outputs, temps) held while running.
    pub working_bytes: u64,
    /// Relative deadline of each invocation.
    pub deadline: Nanos,
    /// Fair-share weight (≥ 1).
    pub weight: u32,
    /// Higher runs first where a policy honours priority.
    pub priority: i32,
    /// Share of the runtime taken by each kernel of the graph, in order (sums to 1).
    pub kernel_shares: Vec<f64>,
    /// Reserved invocation rate (requests per second) for token-bucket admission; `None` = unlimited.
    pub reserved_rate: Option<f64>,
}

impl Function {
    /// A single-kernel function with the same runtime and load time on every one of `classes` classes.
    pub fn uniform(name: &str, classes: usize, runtime: Nanos, load_time: Nanos, deadline: Nanos) -> Self {
        Function {
            name: name.to_string(),
            tenant: name.to_string(),
            runtime: vec![Some(runtime); classes],
            load_time: vec![load_time; classes],
            resident_bytes: 1 << 20,
            working_bytes: 0,
            deadline,
            weight: 1,
            priority: 0,
            kernel_shares: vec![1.0],
            reserved_rate: None,
        }
    }

    /// Warm runtime on a class, if the function can run there.
    pub fn runtime_on(&self, class: ClassId) -> Option<Nanos> {
        self.runtime.get(class.0 as usize).copied().flatten()
    }

    /// Shortest warm runtime over all classes it can run on.
    pub fn best_runtime(&self) -> Option<Nanos> {
        self.runtime.iter().flatten().copied().min()
    }

    /// Number of kernels in its graph (at least one).
    pub fn kernel_count(&self) -> usize {
        self.kernel_shares.len().max(1)
    }

    /// Expected runtime of kernel `k` on a class.
    pub fn kernel_runtime(&self, class: ClassId, k: usize) -> Option<Nanos> {
        let total = self.runtime_on(class)?;
        if self.kernel_shares.len() <= 1 {
            return Some(total);
        }
        Some((total as f64 * self.kernel_shares[k]).round() as Nanos)
    }
}

/// An invocation handed to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Function to run.
    pub function: FunctionId,
    /// Arrival time.
    pub arrival: Nanos,
    /// Absolute deadline (arrival + the function's deadline, unless the caller set another).
    pub deadline: Nanos,
}
