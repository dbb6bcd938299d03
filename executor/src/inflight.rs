//! Requests admitted but not answered yet, and the bytes of their inputs, under ceilings:
//! what keeps a flood from growing an executor's or a gateway's queues and memory without
//! bound. Past a ceiling a request is refused at once (a 429 with `Retry-After`), before
//! it is queued; everything already admitted is served as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Default ceiling of requests an executor holds (queued or running).
pub const DEFAULT_EXECUTOR_REQUESTS: usize = 4096;
/// Default ceiling of the input bytes an executor holds.
pub const DEFAULT_EXECUTOR_BYTES: u64 = 1 << 30;
/// Default ceiling of requests a gateway holds.
pub const DEFAULT_GATEWAY_REQUESTS: usize = 10_000;
/// Default ceiling of the input bytes a gateway holds.
pub const DEFAULT_GATEWAY_BYTES: u64 = 512 << 20;

/// The counters and ceilings of one component.
#[derive(Debug)]
pub struct InFlight {
    what: &'static str,
    max_requests: AtomicUsize,
    max_bytes: AtomicU64,
    requests: AtomicUsize,
    bytes: AtomicU64,
}

/// An admitted request's place; dropping it (the answer sent, or the caller gone) frees it.
#[derive(Debug)]
pub struct Slot {
    of: Arc<InFlight>,
    bytes: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.of.requests.fetch_sub(1, Ordering::AcqRel);
        self.of.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Ceilings for `what` (`executor`, `gateway`: named in refusals).
    pub fn new(what: &'static str, max_requests: usize, max_bytes: u64) -> Arc<Self> {
        Arc::new(InFlight {
            what,
            max_requests: AtomicUsize::new(max_requests),
            max_bytes: AtomicU64::new(max_bytes),
            requests: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Changes the ceilings (what is in flight stays).
    pub fn set(&self, max_requests: usize, max_bytes: u64) {
        self.max_requests.store(max_requests, Ordering::Release);
        self.max_bytes.store(max_bytes, Ordering::Release);
    }

    /// Requests and bytes in flight now.
    pub fn now(&self) -> (usize, u64) {
        (self.requests.load(Ordering::Acquire), self.bytes.load(Ordering::Acquire))
    }

    /// Admits a request carrying `bytes` of inputs, or says which ceiling it would pass.
    pub fn admit(self: &Arc<Self>, bytes: u64) -> Result<Slot, String> {
        let max = self.max_requests.load(Ordering::Acquire);
        let n = self.requests.fetch_add(1, Ordering::AcqRel);
        let held = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let slot = Slot { of: self.clone(), bytes };
        if n >= max {
            return Err(format!("the {} holds {n} requests, its ceiling", self.what));
        }
        let max_bytes = self.max_bytes.load(Ordering::Acquire);
        if held.saturating_add(bytes) > max_bytes {
            return Err(format!(
                "the {} holds {held} bytes of inputs; {bytes} more would pass its ceiling of {max_bytes}",
                self.what
            ));
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_refuse_and_freed_slots_make_room() {
        let f = InFlight::new("executor", 2, 100);
        let a = f.admit(40).unwrap();
        let b = f.admit(40).unwrap();
        let e = f.admit(1).unwrap_err();
        assert!(e.contains("holds 2 requests"), "{e}");
        assert_eq!(f.now(), (2, 80), "a refusal holds nothing");
        drop(a);
        let e = f.admit(61).unwrap_err();
        assert!(e.contains("ceiling of 100"), "{e}");
        let c = f.admit(60).unwrap();
        drop((b, c));
        assert_eq!(f.now(), (0, 0));
        f.set(0, 100);
        assert!(f.admit(0).is_err());
    }
}
