//! Liveness for `/healthz`: a process is alive while every long-lived task it started is
//! still running and every registered check passes. A task that ends — returns or panics
//! — before shutdown is a dead actor: `/healthz` answers 503 naming it, so the kubelet's
//! liveness probe restarts the process instead of leaving it up and serving errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Check = Arc<dyn Fn() -> bool + Send + Sync>;
/// A task's name and whether it has ended.
type Task = (&'static str, Arc<AtomicBool>);

/// Named tasks and checks. Cheap to clone; clones share the set.
#[derive(Clone, Default)]
pub struct Liveness {
    tasks: Arc<Mutex<Vec<Task>>>,
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
}

/// Set when the future holding it is dropped: completion, panic or abort.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Liveness {
    /// A set with nothing in it (alive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut` on the current runtime as the long-lived task `name`: once it ends,
    /// for whatever reason, the process is no longer alive.
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let ended = Arc::new(AtomicBool::new(false));
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push((name, ended.clone()));
        tokio::spawn(async move {
            let _mark = Ended(ended);
            fut.await
        })
    }

    /// Adds a check that must hold for the process to be alive (say, that an in-process
    /// executor's actor still runs).
    pub fn check(&self, name: &'static str, f: impl Fn() -> bool + Send + Sync + 'static) {
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).push((name, Arc::new(f)));
    }

    /// The names of ended tasks and failing checks; empty when alive.
    pub fn dead(&self) -> Vec<&'static str> {
        let mut dead: Vec<&'static str> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| e.load(Ordering::Acquire))
            .map(|(n, _)| *n)
            .collect();
        let checks: Vec<(&'static str, Check)> =
            self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        dead.extend(checks.iter().filter(|(_, c)| !c()).map(|(n, _)| *n));
        dead
    }

    /// `(200, "ok\n")` when alive, else `(503, "dead: ...\n")`: what `/healthz` answers.
    pub fn report(&self) -> (u16, String) {
        let dead = self.dead();
        if dead.is_empty() { (200, "ok\n".into()) } else { (503, format!("dead: {}\n", dead.join(", "))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_dead_a_running_one_is_not() {
        let l = Liveness::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        l.spawn("waiter", async move {
            let _ = rx.await;
        });
        let p = l.spawn("panicker", async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("actor bug");
        });
        assert_eq!(l.report().0, 200, "nothing has ended yet");
        assert!(p.await.is_err());
        assert_eq!(l.dead(), vec!["panicker"]);
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(l.dead(), vec!["waiter", "panicker"]);
        let (code, body) = l.report();
        assert_eq!((code, body.as_str()), (503, "dead: waiter, panicker\n"));
    }

    #[test]
    fn a_failing_check_is_dead() {
        let l = Liveness::new();
        let flag = Arc::new(AtomicBool::new(true));
        let f = flag.clone();
        l.check("executor actor", move || f.load(Ordering::Relaxed));
        assert!(l.dead().is_empty());
        flag.store(false, Ordering::Relaxed);
        assert_eq!(l.report(), (503, "dead: executor actor\n".to_string()));
    }
}
