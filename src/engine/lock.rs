//! The engine's locks and elections (rules: `crate::coord::lock`): acquire
//! (try, or wait in arrival order), release, cancel and the holder, at the
//! region's lease range; and writes guarded by a fencing token in any
//! range.
//!
//! **Invariant (fencing):** a token reaches its acquirer only after every
//! dependent range of the lock holds it as its fence (`Engine::push_fence`
//! runs before [`Engine::lock_acquire`] answers), and a range becomes a
//! dependent (at the lease range) before it first checks a token. So once
//! an acquire returned token `t`, every range a guarded write of the lock
//! can reach refuses tokens below `t`.

use std::time::Duration;

use super::lease::{not_found, storage};
use super::{Engine, TxnOutcome, WriteKind};
use crate::coord::keys;
use crate::coord::lock::{LockRecordV1, MAX_LOCK_VALUE_BYTES};
use crate::error_code::{ApiError, ErrorCode};
use crate::raft::state_machine::fence_refused;
use crate::raft::types::{CommandV1, LockCommandV1};
use crate::raft::RangeDescriptor;
use crate::types::Timestamp;

/// Longest one acquire request waits at the lease range's leader before it
/// answers "queued" (the SDK asks again, keeping its place): requests stay
/// short, so a leader change or a lost client never strands a waiter.
pub const LOCK_WAIT_SLICE: Duration = Duration::from_secs(2);
/// How often a waiting acquire re-reads the lock between applies.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Metric: locks granted.
pub const METRIC_LOCK_GRANTS: &str = "meridian_lock_grants_total";
/// Metric: guarded writes refused for a stale or foreign token.
pub const METRIC_FENCE_REJECTED: &str = "meridian_lock_fence_rejections_total";

/// A lock's holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's lease.
    pub lease: u64,
    /// Its fencing token.
    pub token: u64,
    /// Its value (an election's leader value).
    pub value: Vec<u8>,
}

/// What an acquire got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockAcquired {
    /// The lease holds the lock with this token.
    Granted(u64),
    /// The lease waits in the queue (ask again to keep waiting).
    Queued,
}

impl Engine {
    /// Checks a lock name: a key under a strong prefix homed in this
    /// region (`MER-3006` naming the home otherwise: a lock lives in its
    /// home region's lease range, so two regions never grant it).
    fn lock_name(&self, name: &[u8], what: &str) -> Result<(), ApiError> {
        self.check_key(name)?;
        self.check_coordination_key(name, what)?;
        self.check_write_region(&WriteKind::Delete { key: name.to_vec() })
            .map(|_| ())
    }

    /// Lock `name`'s record at this node's replica of the lease range.
    fn lock_record(&self, name: &[u8]) -> Result<Option<LockRecordV1>, ApiError> {
        let range = self.lease_range()?;
        self.store
            .coord_get(&keys::lock(range.id, name))
            .map_err(storage)?
            .map(|b| {
                LockRecordV1::decode(&b)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
            })
            .transpose()
    }

    /// `lease` asks for lock `name` carrying `value`: granted at once when
    /// free; else, with `wait`, queued in arrival order and waited for (at
    /// most [`LOCK_WAIT_SLICE`], then `Queued`: ask again to keep the
    /// place); without `wait`, `MER-1016`. The token is pushed to the
    /// lock's dependent ranges before it is returned.
    pub async fn lock_acquire(
        &self,
        name: Vec<u8>,
        lease: u64,
        value: Vec<u8>,
        wait: bool,
    ) -> Result<LockAcquired, ApiError> {
        self.lock_name(&name, "a lock")?;
        if value.len() > MAX_LOCK_VALUE_BYTES {
            return Err(ApiError::new(
                ErrorCode::ValueTooLarge,
                format!("a lock's value is at most {MAX_LOCK_VALUE_BYTES} bytes"),
            ));
        }
        let range = self.lease_range()?;
        let reply = self
            .propose_lock(
                &range,
                LockCommandV1::Acquire {
                    name: name.clone(),
                    lease,
                    value,
                    wait,
                },
            )
            .await?;
        let token = if reply.succeeded {
            reply.value
        } else {
            match reply.value {
                fence_refused::QUEUED => match self.wait_for_grant(&range, &name, lease).await? {
                    Some(token) => token,
                    None => return Ok(LockAcquired::Queued),
                },
                fence_refused::LEASE_GONE => return Err(not_found(lease)),
                fence_refused::QUEUE_FULL => {
                    return Err(ApiError::new(
                        ErrorCode::LockBusy,
                        format!(
                            "lock {:?} has {} waiters already",
                            String::from_utf8_lossy(&name),
                            crate::coord::lock::MAX_LOCK_WAITERS
                        ),
                    ))
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::LockBusy,
                        format!(
                            "lock {:?} is held by another lease",
                            String::from_utf8_lossy(&name)
                        ),
                    ))
                }
            }
        };
        self.push_fence(&name, token).await?;
        metrics::counter!(METRIC_LOCK_GRANTS).increment(1);
        Ok(LockAcquired::Granted(token))
    }

    async fn propose_lock(
        &self,
        range: &RangeDescriptor,
        command: LockCommandV1,
    ) -> Result<crate::raft::RangeReply, ApiError> {
        let now = self.hlc.now().map_err(super::clock_error)?;
        self.region
            .propose_reply(range, now, CommandV1::Lock(command))
            .await
    }

    /// Waits (at most [`LOCK_WAIT_SLICE`]) until `lease` holds `name`
    /// here; `None` when it still waits. A lease that left the lock (it
    /// expired) is `MER-1014`.
    async fn wait_for_grant(
        &self,
        range: &RangeDescriptor,
        name: &[u8],
        lease: u64,
    ) -> Result<Option<u64>, ApiError> {
        let group = self.region.group(range)?;
        let until = tokio::time::Instant::now() + LOCK_WAIT_SLICE;
        loop {
            let applied = group.applied_changed().notified();
            let record = self.lock_record(name)?.unwrap_or_default();
            if let Some(h) = record.holder.as_ref().filter(|h| h.lease == lease) {
                return Ok(Some(h.token));
            }
            if !record.waiters.iter().any(|w| w.lease == lease) {
                return Err(not_found(lease));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            let _ = tokio::time::timeout(LOCK_POLL, applied).await;
        }
    }

    /// Makes every dependent range of lock `name` refuse tokens below
    /// `token` (see the module invariant).
    async fn push_fence(&self, name: &[u8], token: u64) -> Result<(), ApiError> {
        let dependents = self
            .lock_record(name)?
            .map(|r| r.dependents)
            .unwrap_or_default();
        for id in dependents {
            let Some(range) = self.region.ranges().iter().find(|r| r.id == id).cloned() else {
                continue;
            };
            self.propose_anywhere(
                &range,
                CommandV1::Lock(LockCommandV1::SetFence {
                    name: name.to_vec(),
                    token,
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Ends the grant of `token` on lock `name`; the next waiter is
    /// granted. Refused (`MER-1017`) when `token` is not the current grant.
    pub async fn lock_release(&self, name: Vec<u8>, token: u64) -> Result<(), ApiError> {
        self.lock_name(&name, "a lock")?;
        let range = self.lease_range()?;
        let reply = self
            .propose_lock(
                &range,
                LockCommandV1::Release {
                    name: name.clone(),
                    token,
                },
            )
            .await?;
        if !reply.succeeded {
            return Err(ApiError::new(
                ErrorCode::FenceRejected,
                format!(
                    "token {token} is not the current grant of lock {:?} (released already, superseded, or another lock's)",
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        Ok(())
    }

    /// Takes `lease` off lock `name`: a waiter leaves the queue, a holder
    /// releases. Returns whether it held the lock.
    pub async fn lock_cancel(&self, name: Vec<u8>, lease: u64) -> Result<bool, ApiError> {
        self.lock_name(&name, "a lock")?;
        let range = self.lease_range()?;
        let reply = self
            .propose_lock(&range, LockCommandV1::Cancel { name, lease })
            .await?;
        Ok(reply.succeeded)
    }

    /// Lock `name`'s holder (an election's leader), from a linearizable
    /// read at the lease range's leader; `None` when free.
    pub async fn lock_holder(&self, name: Vec<u8>) -> Result<Option<LockHolder>, ApiError> {
        self.lock_name(&name, "a lock")?;
        let range = self.lease_range()?;
        self.region.read_ts(&self.hlc, &range, None).await?;
        Ok(self.lock_record(&name)?.and_then(|r| {
            r.holder.map(|h| LockHolder {
                lease: h.lease,
                token: h.token,
                value: h.value,
            })
        }))
    }

    /// Applies `kind` (a put, delete or transaction, in one range) only if
    /// `token` is the newest token granted for lock `name`: `MER-1017`
    /// otherwise, nothing written. The keys must be under strong prefixes.
    pub async fn write_fenced(
        &self,
        kind: WriteKind,
        name: Vec<u8>,
        token: u64,
    ) -> Result<TxnOutcome, ApiError> {
        self.lock_name(&name, "a lock")?;
        match &kind {
            WriteKind::Put { key, value } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            WriteKind::Delete { key } => self.check_key(key)?,
            WriteKind::Txn(t) => self.check_txn(t)?,
        }
        for key in super::write_keys(&kind) {
            self.check_coordination_key(key, "a write guarded by a fencing token")?;
        }
        let table = self.check_write_region(&kind)?;
        let range = self.region.range_of_write_kind(&kind)?.clone();
        if !self.region.leads(&range) {
            return Err(self.region.not_leading(&range));
        }
        let stale = |why: &str| {
            metrics::counter!(METRIC_FENCE_REJECTED).increment(1);
            ApiError::new(
                ErrorCode::FenceRejected,
                format!(
                    "fencing token {token} {why} for lock {:?}",
                    String::from_utf8_lossy(&name)
                ),
            )
        };
        // At most: refused as not attached, attach, then applied.
        for _ in 0..3 {
            let now = self.hlc.now().map_err(super::clock_error)?;
            let reply = self
                .region
                .propose_reply(
                    &range,
                    now,
                    super::policed(
                        table,
                        CommandV1::Fenced {
                            name: name.clone(),
                            token,
                            op: Box::new(kind.clone().into()),
                        },
                    ),
                )
                .await?;
            if reply.succeeded || reply.value == 0 {
                return Ok(TxnOutcome {
                    succeeded: reply.succeeded,
                    version: Timestamp(reply.version),
                });
            }
            match reply.value {
                fence_refused::NOT_ATTACHED => self.attach_fence(&name, &range).await?,
                fence_refused::STALE => {
                    return Err(stale("is stale: a newer token has been granted"))
                }
                _ => return Err(stale("was never granted")),
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the range kept losing its fence for the lock while the write was retried; retry",
        ))
    }

    /// Makes `range` a dependent of lock `name` and gives it the lock's
    /// newest token as its fence.
    async fn attach_fence(&self, name: &[u8], range: &RangeDescriptor) -> Result<(), ApiError> {
        let lease_range = self.lease_range()?;
        let reply = self
            .propose_anywhere(
                &lease_range,
                CommandV1::Lock(LockCommandV1::Attach {
                    name: name.to_vec(),
                    range: range.id,
                }),
            )
            .await?;
        if !reply.succeeded {
            return Err(match reply.value {
                fence_refused::TOO_MANY_DEPENDENTS => ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "writes guarded by lock {:?} already span {} ranges",
                        String::from_utf8_lossy(name),
                        crate::coord::lock::MAX_LOCK_DEPENDENTS
                    ),
                ),
                _ => ApiError::new(
                    ErrorCode::FenceRejected,
                    format!(
                        "lock {:?} never granted a token: the fencing token is not one of its",
                        String::from_utf8_lossy(name)
                    ),
                ),
            });
        }
        self.propose_anywhere(
            range,
            CommandV1::Lock(LockCommandV1::SetFence {
                name: name.to_vec(),
                token: reply.value,
            }),
        )
        .await?;
        Ok(())
    }
}
