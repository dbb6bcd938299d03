//! How kaas processes log: `info` unless `RUST_LOG` says otherwise.
//!
//! Every process (and every benchmark, which must measure what a deployed process pays)
//! installs a subscriber: without one, `tracing`'s `log` fallback turns every span of the
//! HTTP/2 stack into a log call (11 % of the gateway bench's instructions).

/// The filter: `RUST_LOG` when it is set and valid, else `info`.
pub fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}

/// Installs a plain-text subscriber with [`filter`] writing to stderr (stdout is left to
/// what a process prints for its starter).
pub fn init_stderr() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter()).init();
}
