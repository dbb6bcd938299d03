//! Leader election on a `coordination.k8s.io/v1` Lease: the holder renews it every
//! [`RENEW`]; another replica takes it over once it has not been renewed for its
//! duration. Writes use the Lease's resourceVersion, so two replicas racing for it
//! cannot both win. The decision is a pure function of the Lease and the clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others check).
pub const RENEW: Duration = Duration::from_secs(5);

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// It does not exist: create it, held by us.
    Create(Lease),
    /// Write it back (renewal or takeover); we lead if the write succeeds.
    Replace(Lease),
    /// Someone else holds a live Lease.
    Follow {
        /// The holder.
        holder: String,
    },
}

fn spec(me: &str, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// The step for `me` given the current Lease.
pub fn step(current: Option<&Lease>, name: &str, namespace: &str, me: &str, now: Timestamp) -> Step {
    let Some(lease) = current else {
        return Step::Create(Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(spec(me, now, now, 0)),
        });
    };
    let s = lease.spec.clone().unwrap_or_default();
    let holder = s.holder_identity.clone().unwrap_or_default();
    let transitions = s.lease_transitions.unwrap_or(0);
    let mut next = lease.clone();
    if holder == me {
        let acquired = s.acquire_time.map_or(now, |t| t.0);
        next.spec = Some(spec(me, now, acquired, transitions));
        return Step::Replace(next);
    }
    let duration = SignedDuration::from_secs(i64::from(s.lease_duration_seconds.unwrap_or(15)));
    let expired = match s.renew_time.or(s.acquire_time) {
        Some(t) => t.0 + duration < now,
        None => true,
    };
    if holder.is_empty() || expired {
        next.spec = Some(spec(me, now, now, transitions + 1));
        Step::Replace(next)
    } else {
        Step::Follow { holder }
    }
}

/// Runs the election until `shutdown`; `leader` says whether this replica leads. On
/// shutdown a held Lease is released (holder cleared) so a successor need not wait.
pub async fn elect(
    client: Client,
    namespace: String,
    name: String,
    me: String,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    // Last successful renewal: leadership ends before the Lease could expire for others.
    let mut renewed: Option<std::time::Instant> = None;
    loop {
        let result = async {
            let current = api.get_opt(&name).await?;
            match step(current.as_ref(), &name, &namespace, &me, Timestamp::now()) {
                Step::Create(l) => api.create(&PostParams::default(), &l).await.map(|_| true),
                Step::Replace(l) => api.replace(&name, &PostParams::default(), &l).await.map(|_| true),
                Step::Follow { .. } => Ok(false),
            }
        }
        .await;
        let leading = match result {
            Ok(l) => {
                renewed = l.then(std::time::Instant::now);
                l
            }
            // A conflict means another replica wrote first: follow until the next round.
            Err(kube::Error::Api(e)) if e.code == 409 => false,
            Err(e) => {
                warn!(error = %e, "lease update failed");
                // Keep leading only while the last renewal leaves a margin of one renew
                // period before the Lease expires and another replica may take it.
                *leader.borrow() && renewed.is_some_and(|t| t.elapsed() + RENEW < LEASE_DURATION)
            }
        };
        if leading != *leader.borrow() {
            info!(lease = %name, identity = %me, leading, "leadership changed");
            leader.send_replace(leading);
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        if let Ok(Some(mut l)) = api.get_opt(&name).await
            && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(me.as_str())
        {
            if let Some(s) = l.spec.as_mut() {
                s.holder_identity = None;
            }
            let _ = api.replace(&name, &PostParams::default(), &l).await;
            info!(lease = %name, "lease released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held(by: &str, renewed: &str) -> Lease {
        match step(None, "kaas", "ns", by, at(renewed)) {
            Step::Create(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_replica_creates_then_renews() {
        let l = held("a", "2026-11-28T10:00:00Z");
        assert_eq!(l.spec.as_ref().unwrap().holder_identity.as_deref(), Some("a"));
        let Step::Replace(r) = step(Some(&l), "kaas", "ns", "a", at("2026-11-28T10:00:05Z")) else {
            panic!()
        };
        let s = r.spec.unwrap();
        assert_eq!(s.renew_time.unwrap().0, at("2026-11-28T10:00:05Z"));
        assert_eq!(s.acquire_time.unwrap().0, at("2026-11-28T10:00:00Z"), "renewal keeps the acquire time");
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn others_follow_a_live_lease_and_take_over_an_expired_one() {
        let l = held("a", "2026-11-28T10:00:00Z");
        assert_eq!(
            step(Some(&l), "kaas", "ns", "b", at("2026-11-28T10:00:14Z")),
            Step::Follow { holder: "a".into() }
        );
        let Step::Replace(r) = step(Some(&l), "kaas", "ns", "b", at("2026-11-28T10:00:16Z")) else {
            panic!()
        };
        let s = r.spec.unwrap();
        assert_eq!(s.holder_identity.as_deref(), Some("b"));
        assert_eq!(s.lease_transitions, Some(1));
        assert_eq!(s.acquire_time.unwrap().0, at("2026-11-28T10:00:16Z"));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut l = held("a", "2026-11-28T10:00:00Z");
        l.spec.as_mut().unwrap().holder_identity = None;
        assert!(matches!(step(Some(&l), "kaas", "ns", "b", at("2026-11-28T10:00:01Z")), Step::Replace(_)));
    }
}
