//! Per-request admission control: `none`, `deadline`, `token-bucket`.

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::model::{Nanos, SEC};

/// How requests are admitted at arrival. Combinable with any policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionMode {
    /// Admit everything that can run somewhere.
    #[default]
    None,
    /// Reject when the predicted completion misses the deadline.
    Deadline,
    /// Per-function token bucket at the function's reserved rate.
    TokenBucket,
}

impl AdmissionMode {
    /// Names accepted in configuration.
    pub const NAMES: [&'static str; 3] = ["none", "deadline", "token-bucket"];

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        match name {
            "none" => Ok(AdmissionMode::None),
            "deadline" => Ok(AdmissionMode::Deadline),
            "token-bucket" => Ok(AdmissionMode::TokenBucket),
            other => Err(ConfigError::UnknownName {
                what: "admission mode",
                name: other.to_string(),
                valid: Self::NAMES.join(", "),
            }),
        }
    }

    /// Configuration name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Why a request was not admitted.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// Predicted completion is after the deadline.
    DeadlineUnmeetable {
        /// Predicted completion time.
        predicted: Nanos,
        /// The request's deadline.
        deadline: Nanos,
    },
    /// The function is resident nowhere and its deadline cannot cover the load: a load has
    /// been started (scale from zero); requests arriving once it is done are served warm.
    Warming {
        /// When the function is expected to be warm.
        ready_at: Nanos,
        /// How long from the rejection until then.
        retry_after: Nanos,
    },
    /// The function's token bucket is empty.
    RateLimited {
        /// When the next token arrives.
        retry_after: Nanos,
    },
    /// No healthy device can ever run the function (no build for any class present, or
    /// it does not fit any device's memory).
    NoCapacity,
    /// The active policy will never run the function.
    Refused(String),
    /// The function id is not known to the scheduler.
    UnknownFunction,
}

impl Rejection {
    /// A short, bounded category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Rejection::DeadlineUnmeetable { .. } => "deadline",
            Rejection::Warming { .. } => "warming",
            Rejection::RateLimited { .. } => "rate-limited",
            Rejection::NoCapacity => "no-capacity",
            Rejection::Refused(_) => "policy",
            Rejection::UnknownFunction => "unknown-function",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::DeadlineUnmeetable { predicted, deadline } if predicted > deadline => write!(
                f,
                "predicted completion misses the deadline by {:.3} ms",
                (predicted - deadline) as f64 / 1e6
            ),
            Rejection::DeadlineUnmeetable { predicted, deadline } => write!(
                f,
                "predicted completion leaves only {:.3} ms before the deadline, less than the admission headroom",
                (deadline - predicted) as f64 / 1e6
            ),
            Rejection::Warming { retry_after, .. } => write!(
                f,
                "function is warming (being loaded onto a device; its deadline cannot cover the load); retry in {:.3} ms",
                *retry_after as f64 / 1e6
            ),
            Rejection::RateLimited { retry_after } => {
                write!(f, "reserved rate exceeded; retry in {:.3} ms", *retry_after as f64 / 1e6)
            }
            Rejection::NoCapacity => write!(f, "no healthy device can run this function"),
            Rejection::Refused(why) => write!(f, "{why}"),
            Rejection::UnknownFunction => write!(f, "unknown function"),
        }
    }
}

/// A token bucket per function.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenBuckets {
    buckets: Vec<(f64, Nanos)>,
}

impl TokenBuckets {
    /// Takes a token for function `i` at `rate` per second with `burst` capacity.
    pub(crate) fn take(&mut self, i: usize, rate: f64, burst: f64, now: Nanos) -> Result<(), Nanos> {
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, (f64::NAN, 0));
        }
        let (tokens, last) = &mut self.buckets[i];
        if tokens.is_nan() {
            *tokens = burst;
            *last = now;
        }
        let elapsed = now.saturating_sub(*last) as f64 / SEC as f64;
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(((1.0 - *tokens) / rate * SEC as f64).ceil() as Nanos)
        } else {
            Err(Nanos::MAX)
        }
    }
}
