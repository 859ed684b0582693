//! Leases in the SDK: grant, keepalive, revoke, time-to-live, list, puts
//! attached to a lease, and [`LeaseKeeper`], which keeps many leases alive
//! over the client's connections (one request per round carries them all).
//!
//! A lease lives in the region of the node that granted it; keep it alive
//! and attach keys through clients of that region.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Client, ClientError, WriteResponse};
use crate::types::Timestamp;
use crate::wire::{LeaseV1, RequestV1, ResponseBodyV1};

/// A lease as the cluster reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: u64,
    /// The TTL it was granted.
    pub ttl: Duration,
    /// Time left when the answer was made (zero: expired or unknown).
    pub remaining: Duration,
    /// When it was granted (HLC).
    pub granted_at: Timestamp,
}

impl From<LeaseV1> for Lease {
    fn from(l: LeaseV1) -> Lease {
        Lease {
            id: l.id,
            ttl: Duration::from_millis(l.ttl_ms),
            remaining: Duration::from_millis(l.remaining_ms),
            granted_at: Timestamp(l.granted_at),
        }
    }
}

/// Most leases [`Client::lease_list`] asks for per page.
const LIST_PAGE: u32 = 1_000;

impl Client {
    /// Grants a lease of `ttl` (whole milliseconds, 1 s to 1 day) in the
    /// connected node's region.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, ClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        match self.call(&RequestV1::LeaseGrant { ttl_ms }).await? {
            (_, ResponseBodyV1::Lease(l)) => Ok(l.into()),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Keeps `ids` alive once: each live lease's deadline moves to now +
    /// its TTL, durably. Returns each lease after it; one with `remaining`
    /// zero is gone (expired, revoked or unknown).
    pub async fn lease_keep_alive(&self, ids: &[u64]) -> Result<Vec<Lease>, ClientError> {
        let req = RequestV1::LeaseKeepAlive { ids: ids.to_vec() };
        match self.call(&req).await? {
            (_, ResponseBodyV1::Leases(l)) => Ok(l.into_iter().map(Lease::from).collect()),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Revokes lease `id`: its keys are deleted before this returns.
    pub async fn lease_revoke(&self, id: u64) -> Result<(), ClientError> {
        match self.call(&RequestV1::LeaseRevoke { id }).await? {
            (_, ResponseBodyV1::Written { .. }) => Ok(()),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Lease `id`'s TTL and time left (linearizable).
    pub async fn lease_ttl(&self, id: u64) -> Result<Lease, ClientError> {
        match self.call(&RequestV1::LeaseTtl { id }).await? {
            (_, ResponseBodyV1::Lease(l)) => Ok(l.into()),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Every live lease of the connected node's region, by id (paged).
    pub async fn lease_list(&self) -> Result<Vec<Lease>, ClientError> {
        let mut out: Vec<Lease> = Vec::new();
        loop {
            let after = out.last().map_or(0, |l| l.id);
            let req = RequestV1::LeaseList {
                after,
                limit: LIST_PAGE,
            };
            let page = match self.call(&req).await? {
                (_, ResponseBodyV1::Leases(l)) => l,
                (_, other) => return Err(Self::unexpected(other)),
            };
            let full = page.len() >= LIST_PAGE as usize;
            out.extend(page.into_iter().map(Lease::from));
            if !full {
                return Ok(out);
            }
        }
    }

    /// Writes `value` at `key` attached to lease `lease`: the key is
    /// deleted when the lease expires or is revoked. `key` must be under a
    /// strong prefix (`MER-1015` otherwise); an unknown or expired lease is
    /// `MER-1014`.
    pub async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: u64,
    ) -> Result<WriteResponse, ClientError> {
        let req = RequestV1::PutLeased {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease,
        };
        self.write(&req).await
    }
}

/// What a [`LeaseKeeper`] knows of one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptLease {
    /// Kept alive: the cluster's last answer, and when (on this client's
    /// clock) the keepalive that got it was sent. The lease is safe to rely
    /// on until `sent + remaining`.
    Alive {
        /// The last answer.
        lease: Lease,
        /// When its keepalive was sent.
        sent: tokio::time::Instant,
    },
    /// Gone: the cluster said so, or no keepalive succeeded before the
    /// time it had left ran out. Keys attached to it are (being) deleted.
    Lost,
}

type Kept = Arc<Mutex<BTreeMap<u64, KeptLease>>>;

/// Keeps leases alive in the background: every round one keepalive request
/// carries every lease it keeps, sent at a third of the shortest TTL (and
/// retried every [`KEEPER_RETRY`] after a failure). A lease is reported
/// [`KeptLease::Lost`] when the cluster says it is gone or when the time
/// it had left at the last successful keepalive has passed. Dropping the
/// keeper stops it (the leases then run out on their own).
pub struct LeaseKeeper {
    kept: Kept,
    changed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// Pause after a failed keepalive round before the next try.
pub const KEEPER_RETRY: Duration = Duration::from_millis(200);

impl LeaseKeeper {
    /// Starts keeping `leases` (as granted) alive through `client`.
    pub fn start(client: Arc<Client>, leases: &[Lease]) -> LeaseKeeper {
        let now = tokio::time::Instant::now();
        let kept: Kept = Arc::new(Mutex::new(
            leases
                .iter()
                .map(|l| {
                    (
                        l.id,
                        KeptLease::Alive {
                            lease: *l,
                            sent: now,
                        },
                    )
                })
                .collect(),
        ));
        let (tx, changed) = watch::channel(0u64);
        let task = tokio::spawn(keep(client, kept.clone(), tx));
        LeaseKeeper {
            kept,
            changed,
            task,
        }
    }

    /// What the keeper knows of lease `id` (`None`: not kept).
    pub fn state(&self, id: u64) -> Option<KeptLease> {
        lock(&self.kept).get(&id).copied()
    }

    /// Waits until some kept lease is lost and returns its id.
    pub async fn lost(&mut self) -> u64 {
        loop {
            if let Some(id) = lock(&self.kept)
                .iter()
                .find(|(_, k)| matches!(k, KeptLease::Lost))
                .map(|(id, _)| *id)
            {
                return id;
            }
            if self.changed.changed().await.is_err() {
                // The task ended; everything it kept is lost by now.
                return lock(&self.kept).keys().next().copied().unwrap_or(0);
            }
        }
    }

    /// Stops keeping the leases alive (they run out on their own).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(kept: &Kept) -> std::sync::MutexGuard<'_, BTreeMap<u64, KeptLease>> {
    kept.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn keep(client: Arc<Client>, kept: Kept, changed: watch::Sender<u64>) {
    let mut rounds = 0u64;
    loop {
        let alive: Vec<(u64, Lease)> = lock(&kept)
            .iter()
            .filter_map(|(id, k)| match k {
                KeptLease::Alive { lease, .. } => Some((*id, *lease)),
                KeptLease::Lost => None,
            })
            .collect();
        if alive.is_empty() {
            return;
        }
        let shortest = alive.iter().map(|(_, l)| l.ttl).min().unwrap_or_default();
        let ids: Vec<u64> = alive.iter().map(|(id, _)| *id).collect();
        let sent = tokio::time::Instant::now();
        let pause = match client.lease_keep_alive(&ids).await {
            Ok(answers) => {
                let mut k = lock(&kept);
                for a in answers {
                    let state = if a.remaining.is_zero() {
                        KeptLease::Lost
                    } else {
                        KeptLease::Alive { lease: a, sent }
                    };
                    k.insert(a.id, state);
                }
                shortest / 3
            }
            Err(e) => {
                tracing::debug!(error = %e, "lease keepalive failed; retrying");
                // Past the time a lease had left, it may have expired.
                let now = tokio::time::Instant::now();
                for k in lock(&kept).values_mut() {
                    if let KeptLease::Alive { lease, sent } = *k {
                        if now >= sent + lease.remaining {
                            *k = KeptLease::Lost;
                        }
                    }
                }
                KEEPER_RETRY
            }
        };
        rounds += 1;
        changed.send_replace(rounds);
        tokio::time::sleep(pause).await;
    }
}
