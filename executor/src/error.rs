//! Errors of the executor, each mapped to a gRPC status the gateway turns into an HTTP code.

/// Why an invocation or a request failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ExecError {
    /// Inputs do not match the function's buffers.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The function definition is invalid.
    #[error("invalid function: {0}")]
    BadFunction(String),
    /// No function with that name is registered.
    #[error("unknown function {0}")]
    UnknownFunction(String),
    /// A module failed to compile or load.
    #[error("module {module:?} failed to load: {message}")]
    ModuleLoad {
        /// Module name.
        module: String,
        /// Compiler or driver message.
        message: String,
    },
    /// A kernel trapped or faulted.
    #[error("kernel {entry:?} faulted: {message}")]
    KernelFault {
        /// Entry point.
        entry: String,
        /// Trap or driver message.
        message: String,
    },
    /// A kernel ran past its time limit and was stopped.
    #[error("kernel {entry:?} exceeded its time limit of {limit_ms} ms")]
    Timeout {
        /// Entry point.
        entry: String,
        /// The limit.
        limit_ms: u64,
    },
    /// The invocation's deadline passed before it could finish.
    #[error("deadline passed after {waited_ms:.1} ms")]
    DeadlineExceeded {
        /// Time spent.
        waited_ms: f64,
    },
    /// A memory quota or the device memory would be exceeded.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Admission control rejected the request.
    #[error("rejected: {reason}")]
    Rejected {
        /// Why (the scheduler's rejection, e.g. the predicted miss or the warm-up).
        reason: String,
        /// When a retry can expect to be admitted, in ms.
        retry_after_ms: u64,
    },
    /// No device here can run the function.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// A backend is unavailable (no CUDA driver, device lost).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The executor is shutting down.
    #[error("executor shutting down")]
    ShuttingDown,
}

impl ExecError {
    /// A bounded category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            ExecError::BadInput(_) => "bad_input",
            ExecError::BadFunction(_) => "bad_function",
            ExecError::UnknownFunction(_) => "unknown_function",
            ExecError::ModuleLoad { .. } => "module_load",
            ExecError::KernelFault { .. } => "kernel_fault",
            ExecError::Timeout { .. } => "timeout",
            ExecError::DeadlineExceeded { .. } => "deadline",
            ExecError::OutOfMemory(_) => "out_of_memory",
            ExecError::Rejected { .. } => "rejected",
            ExecError::NoCapacity(_) => "no_capacity",
            ExecError::Unavailable(_) => "unavailable",
            ExecError::ShuttingDown => "shutting_down",
        }
    }
}

impl From<ExecError> for tonic::Status {
    fn from(e: ExecError) -> Self {
        use tonic::Code;
        let code = match &e {
            ExecError::BadInput(_) | ExecError::BadFunction(_) => Code::InvalidArgument,
            ExecError::UnknownFunction(_) => Code::NotFound,
            ExecError::ModuleLoad { .. } | ExecError::KernelFault { .. } => Code::Aborted,
            ExecError::Timeout { .. } | ExecError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            ExecError::OutOfMemory(_) | ExecError::Rejected { .. } => Code::ResourceExhausted,
            ExecError::NoCapacity(_) | ExecError::Unavailable(_) | ExecError::ShuttingDown => {
                Code::Unavailable
            }
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Ok(v) = e.category().parse() {
            status.metadata_mut().insert("kaas-error", v);
        }
        if let ExecError::Rejected { retry_after_ms, .. } = &e
            && let Ok(v) = retry_after_ms.to_string().parse()
        {
            status.metadata_mut().insert("kaas-retry-after-ms", v);
        }
        status
    }
}
