//! The lessor: when each lease expires. Only the leader keeps the clocks
//! (etcd's "primary lessor"); the leases themselves, and their keys, are
//! replicated state (`konsen_storage::LeaseTable`).
//!
//! * When a node becomes leader, every lease's clock starts at its TTL
//!   plus the longest election timeout ([`Lessor::promote`]), as etcd's
//!   `Promote` extends by the election timeout: a keep-alive the old leader
//!   acknowledged is never outlived, since the old leader stepped down
//!   (check-quorum) within an election timeout of the new one's election.
//! * A grant applied on the leader starts its clock; a keep-alive
//!   ([`Lessor::renew`]) restarts it. Keep-alives reaching a follower are
//!   forwarded to the leader (`RaftPeer.Lease`).
//! * Every [`EXPIRY_CHECK`] the leader's [`run_expiry`] task proposes a
//!   `LeaseRevoke` through the log for each expired lease, at most
//!   [`LEASE_REVOKES_PER_CHECK_MAX`] at a time, so every node deletes the
//!   same keys at the same revision. A revoke that fails is offered again
//!   after [`REVOKE_RETRY`].
//! * A follower's lessor holds no clocks: no lease expires while there is
//!   no leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use konsen_rpc::convert::WriteResult;
use konsen_storage::Command;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::periodic::Periodic;
use crate::services::Shared;

/// How often the leader looks for expired leases (etcd: 500 ms).
pub const EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// Expired leases revoked per check, at most; the rest wait for the next
/// (etcd's `leaseRevokeRate` is 1000 per second).
pub const LEASE_REVOKES_PER_CHECK_MAX: usize = 500;
/// How long an expired lease whose revoke was proposed waits before it is
/// proposed again (the revoke may have been lost with a leader change).
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// One lease's clock on the leader.
#[derive(Clone, Copy, Debug)]
struct Clock {
    ttl: i64,
    expiry: Instant,
    /// When its revoke was last proposed.
    revoking: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    primary: bool,
    clocks: HashMap<i64, Clock>,
}

/// This node is not the leader: only the leader keeps the clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotPrimary;

/// The leases' clocks. Cheap to clone; shared by the node loop (leadership,
/// grants and revokes applied), the Lease service and the peer service.
#[derive(Clone, Debug, Default)]
pub struct Lessor(Arc<Mutex<Inner>>);

impl Lessor {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .expect("lessor invariant: no holder of its lock panicked")
    }

    /// This node became leader: starts every lease's clock at its TTL
    /// plus `extend`.
    pub fn promote(&self, leases: Vec<(i64, i64)>, extend: Duration) {
        self.promote_at(Instant::now(), leases, extend);
    }

    fn promote_at(&self, now: Instant, leases: Vec<(i64, i64)>, extend: Duration) {
        let mut inner = self.lock();
        inner.primary = true;
        inner.clocks = leases
            .into_iter()
            .map(|(id, ttl)| {
                (
                    id,
                    Clock {
                        ttl,
                        expiry: now + secs(ttl) + extend,
                        revoking: None,
                    },
                )
            })
            .collect();
        if !inner.clocks.is_empty() {
            info!(
                leases = inner.clocks.len(),
                "leader: lease clocks started, extended by {extend:?}"
            );
        }
    }

    /// This node stopped leading: it keeps no clocks.
    pub fn demote(&self) {
        let mut inner = self.lock();
        inner.primary = false;
        inner.clocks.clear();
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// A grant was applied here.
    pub fn granted(&self, id: i64, ttl: i64) {
        let mut inner = self.lock();
        if inner.primary {
            inner.clocks.insert(
                id,
                Clock {
                    ttl,
                    expiry: Instant::now() + secs(ttl),
                    revoking: None,
                },
            );
        }
    }

    /// A revoke was applied here.
    pub fn revoked(&self, id: i64) {
        self.lock().clocks.remove(&id);
    }

    /// A keep-alive: restarts lease `id`'s clock and returns its TTL, or
    /// `None` if it does not exist or already expired (its revoke is on its
    /// way: etcd too answers such a keep-alive with a TTL of 0).
    pub fn renew(&self, id: i64) -> Result<Option<i64>, NotPrimary> {
        self.renew_at(Instant::now(), id)
    }

    fn renew_at(&self, now: Instant, id: i64) -> Result<Option<i64>, NotPrimary> {
        let mut inner = self.lock();
        if !inner.primary {
            return Err(NotPrimary);
        }
        Ok(inner.clocks.get_mut(&id).and_then(|clock| {
            if clock.expiry <= now {
                return None;
            }
            clock.expiry = now + secs(clock.ttl);
            Some(clock.ttl)
        }))
    }

    /// Lease `id`'s granted TTL and the whole seconds left, or `None` if
    /// it does not exist or expired.
    pub fn time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>, NotPrimary> {
        self.time_to_live_at(Instant::now(), id)
    }

    fn time_to_live_at(&self, now: Instant, id: i64) -> Result<Option<(i64, i64)>, NotPrimary> {
        let inner = self.lock();
        if !inner.primary {
            return Err(NotPrimary);
        }
        Ok(inner.clocks.get(&id).and_then(|clock| {
            let left = clock.expiry.checked_duration_since(now)?;
            Some((clock.ttl, left.as_secs() as i64))
        }))
    }

    /// The expired leases to revoke now (at most `max`), each marked so
    /// that it is offered again only after [`REVOKE_RETRY`].
    fn expired(&self, now: Instant, max: usize) -> Vec<i64> {
        let mut inner = self.lock();
        if !inner.primary {
            return Vec::new();
        }
        let mut due: Vec<(Instant, i64)> = inner
            .clocks
            .iter()
            .filter(|(_, c)| {
                c.expiry <= now
                    && c.revoking
                        .is_none_or(|at| now.duration_since(at) >= REVOKE_RETRY)
            })
            .map(|(&id, c)| (c.expiry, id))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        for (_, id) in &due {
            if let Some(clock) = inner.clocks.get_mut(id) {
                clock.revoking = Some(now);
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// On the leader, revokes expired leases through the log; runs until
/// `shutdown` turns true.
pub async fn run_expiry(shared: Shared, lessor: Lessor, shutdown: watch::Receiver<bool>) {
    let mut periodic = Periodic::new(EXPIRY_CHECK, shutdown);
    while periodic.tick().await {
        for id in lessor.expired(Instant::now(), LEASE_REVOKES_PER_CHECK_MAX) {
            let shared = shared.clone();
            tokio::spawn(async move {
                match shared.write(Command::LeaseRevoke { id }).await {
                    Ok(outcome) => match outcome.result {
                        WriteResult::LeaseRevoke(r) => {
                            info!(lease = id, keys = r.deleted, "lease expired and revoked")
                        }
                        other => debug!(lease = id, "expired lease not revoked: {other:?}"),
                    },
                    Err(status) => warn!(
                        lease = id,
                        "revoking an expired lease failed: {}",
                        status.message()
                    ),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_run_on_the_leader_only() {
        let lessor = Lessor::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(lessor.renew_at(t0, 1), Err(NotPrimary));
        lessor.granted(1, 5);
        lessor.promote_at(t0, vec![(1, 5)], Duration::from_secs(2));
        assert_eq!(lessor.time_to_live_at(t0, 1), Ok(Some((5, 7))));
        assert!(
            lessor.expired(at(6000), 10).is_empty(),
            "extended by the election"
        );
        assert_eq!(lessor.renew_at(at(6000), 1), Ok(Some(5)));
        assert_eq!(lessor.time_to_live_at(at(6500), 1), Ok(Some((5, 4))));
        assert!(lessor.expired(at(10_999), 10).is_empty());
        assert_eq!(
            lessor.renew_at(at(11_000), 1),
            Ok(None),
            "an expired lease is not renewed"
        );
        assert_eq!(lessor.expired(at(11_000), 10), vec![1]);
        assert!(
            lessor.expired(at(11_001), 10).is_empty(),
            "offered once per retry interval"
        );
        assert_eq!(lessor.expired(at(11_000) + REVOKE_RETRY, 10), vec![1]);
        lessor.revoked(1);
        assert_eq!(lessor.time_to_live_at(at(11_000), 1), Ok(None));
        lessor.demote();
        assert_eq!(lessor.time_to_live(1), Err(NotPrimary));
    }
}
