//! How a range state machine applies the lock rules of
//! [`crate::coord::lock`]: lock records and the lock index by lease at the
//! region's lease range, fences in every range that guarded writes reach,
//! and the fence check of a guarded write, all in the apply batch.

use std::collections::HashSet;
use std::io;

use super::{io_err, PendingApply, RangeStateMachine};
use crate::coord::keys;
use crate::coord::lock::{check_fence, Acquired, FenceCheck, LockRecordV1, MAX_LOCK_VALUE_BYTES};
use crate::coord::LeaseRecordV1;
use crate::raft::types::{CommandV1, LockCommandV1, RangeReply};
use crate::types::Timestamp;

/// Why a lock command or a guarded write was refused (the reply's `value`
/// when `succeeded` is false).
pub mod fence_refused {
    /// Acquire: queued behind the holder (not a refusal; the caller waits).
    pub const QUEUED: u64 = 0;
    /// Acquire: held by another lease and the caller did not wait.
    pub const BUSY: u64 = 1;
    /// Acquire: the queue is full.
    pub const QUEUE_FULL: u64 = 2;
    /// Acquire: the asking lease is not live.
    pub const LEASE_GONE: u64 = 3;
    /// Acquire: the value is over `MAX_LOCK_VALUE_BYTES`.
    pub const VALUE_TOO_LARGE: u64 = 4;
    /// Attach: no token was ever granted for the lock.
    pub const NO_SUCH_LOCK: u64 = 5;
    /// Attach: the lock's guarded writes already span the most ranges.
    pub const TOO_MANY_DEPENDENTS: u64 = 6;
    /// Guarded write: this range does not follow the lock yet (attach).
    pub const NOT_ATTACHED: u64 = 7;
    /// Guarded write: a newer token has been granted.
    pub const STALE: u64 = 8;
    /// Guarded write: the token was never granted for this lock.
    pub const UNKNOWN: u64 = 9;
    /// Guarded write: the guarded operation is not a put, delete or
    /// transaction (a malformed entry; nothing is applied).
    pub const NOT_A_WRITE: u64 = 10;
}

/// Most locks one expired lease gives up in one apply (a lease in more is
/// an abuse the acquire path bounds long before).
const MAX_LOCKS_PER_LEASE: usize = 10_000;

impl RangeStateMachine {
    fn lock_record(&self, name: &[u8], pending: &PendingApply) -> io::Result<Option<LockRecordV1>> {
        self.coord_state(&keys::lock(self.range.id, name), pending)?
            .map(|b| LockRecordV1::decode(&b).map_err(|e| io_err("lock record", e)))
            .transpose()
    }

    /// Writes lock `name`'s record and keeps the lock index by lease in
    /// step with the leases it names.
    fn write_lock(
        &self,
        name: &[u8],
        old: &LockRecordV1,
        new: &LockRecordV1,
        pending: &mut PendingApply,
    ) {
        let range = self.range.id;
        let before: HashSet<u64> = old.leases().collect();
        let after: HashSet<u64> = new.leases().collect();
        for gone in before.difference(&after) {
            pending
                .coord
                .insert(keys::lease_lock(range, *gone, name), None);
        }
        for added in after.difference(&before) {
            pending
                .coord
                .insert(keys::lease_lock(range, *added, name), Some(Vec::new()));
        }
        pending
            .coord
            .insert(keys::lock(range, name), Some(new.encode()));
    }

    /// Whether lease `id` is live at `ts` in this (the lease) range.
    fn lease_live(&self, id: u64, ts: Timestamp, pending: &PendingApply) -> io::Result<bool> {
        Ok(self
            .coord_state(&keys::lease(self.range.id, id), pending)?
            .and_then(|b| LeaseRecordV1::decode(&b).ok())
            .is_some_and(|r| r.live_at(ts)))
    }

    /// The liveness at `ts` of every lease `record` names.
    fn live_leases(
        &self,
        record: &LockRecordV1,
        ts: Timestamp,
        pending: &PendingApply,
    ) -> io::Result<HashSet<u64>> {
        let mut live = HashSet::new();
        for lease in record.leases() {
            if self.lease_live(lease, ts, pending)? {
                live.insert(lease);
            }
        }
        Ok(live)
    }

    /// A source of fencing tokens for grants applied at `ts`: each above
    /// the range's newest and at least `ts`. Call [`Self::store_tokens`]
    /// with the last one handed out.
    fn token_floor(&self, pending: &PendingApply) -> io::Result<u64> {
        Ok(self
            .coord_state(&keys::last_token(self.range.id), pending)?
            .and_then(|b| keys::read_be64(&b))
            .unwrap_or(0))
    }

    fn store_tokens(&self, last: u64, pending: &mut PendingApply) {
        pending
            .coord
            .insert(keys::last_token(self.range.id), Some(keys::be64(last)));
    }

    /// Applies a lock command at `ts`.
    pub(super) fn apply_lock(
        &mut self,
        ts: Timestamp,
        cmd: LockCommandV1,
        pending: &mut PendingApply,
    ) -> io::Result<RangeReply> {
        let reply = |succeeded, value| RangeReply {
            succeeded,
            version: ts.0,
            value,
        };
        let floor = self.token_floor(pending)?;
        let last = std::cell::Cell::new(floor);
        let next_token = || {
            let t = ts.0.max(last.get() + 1);
            last.set(t);
            t
        };
        match cmd {
            LockCommandV1::Acquire {
                name,
                lease,
                value,
                wait,
            } => {
                if value.len() > MAX_LOCK_VALUE_BYTES {
                    return Ok(reply(false, fence_refused::VALUE_TOO_LARGE));
                }
                if !self.lease_live(lease, ts, pending)? {
                    return Ok(reply(false, fence_refused::LEASE_GONE));
                }
                let old = self.lock_record(&name, pending)?.unwrap_or_default();
                let mut new = old.clone();
                let token = next_token();
                let out = match new.acquire(lease, value, wait, token) {
                    Acquired::Granted(t) => {
                        if t == token {
                            self.store_tokens(token, pending);
                        }
                        reply(true, t)
                    }
                    Acquired::Queued(_) => reply(false, fence_refused::QUEUED),
                    Acquired::Busy => reply(false, fence_refused::BUSY),
                    Acquired::QueueFull => reply(false, fence_refused::QUEUE_FULL),
                };
                if new != old {
                    self.write_lock(&name, &old, &new, pending);
                }
                Ok(out)
            }
            LockCommandV1::Release { name, token } => {
                let Some(old) = self.lock_record(&name, pending)? else {
                    return Ok(reply(false, 0));
                };
                let live = self.live_leases(&old, ts, pending)?;
                let mut new = old.clone();
                let released = new.release(token, |l| live.contains(&l), next_token);
                if released {
                    if last.get() != floor {
                        self.store_tokens(last.get(), pending);
                    }
                    self.write_lock(&name, &old, &new, pending);
                }
                Ok(reply(released, 0))
            }
            LockCommandV1::Cancel { name, lease } => {
                let Some(old) = self.lock_record(&name, pending)? else {
                    return Ok(reply(false, 0));
                };
                let live = self.live_leases(&old, ts, pending)?;
                let mut new = old.clone();
                let held = new.remove_lease(lease, |l| live.contains(&l), next_token);
                if new != old {
                    if last.get() != floor {
                        self.store_tokens(last.get(), pending);
                    }
                    self.write_lock(&name, &old, &new, pending);
                }
                Ok(reply(held, 0))
            }
            LockCommandV1::Attach { name, range } => {
                let Some(old) = self.lock_record(&name, pending)? else {
                    return Ok(reply(false, fence_refused::NO_SUCH_LOCK));
                };
                if old.last_token == 0 {
                    return Ok(reply(false, fence_refused::NO_SUCH_LOCK));
                }
                let mut new = old.clone();
                if !new.add_dependent(range) {
                    return Ok(reply(false, fence_refused::TOO_MANY_DEPENDENTS));
                }
                if new != old {
                    self.write_lock(&name, &old, &new, pending);
                }
                Ok(reply(true, new.last_token))
            }
            LockCommandV1::SetFence { name, token } => {
                let key = keys::fence(self.range.id, &name);
                let current = self
                    .coord_state(&key, pending)?
                    .and_then(|b| keys::read_be64(&b))
                    .unwrap_or(0);
                if token > current {
                    pending.coord.insert(key, Some(keys::be64(token)));
                }
                Ok(reply(true, current.max(token)))
            }
        }
    }

    /// Takes every lock lease `id` holds or waits for away from it (its
    /// lease expired), granting each freed lock to its next live waiter.
    pub(super) fn release_locks_of(
        &mut self,
        id: u64,
        ts: Timestamp,
        pending: &mut PendingApply,
    ) -> io::Result<()> {
        let range = self.range.id;
        let entries =
            self.coord_scan(&keys::lease_locks(range, id), MAX_LOCKS_PER_LEASE, pending)?;
        let mut last = self.token_floor(pending)?;
        for (entry, _) in entries {
            let name = keys::lease_lock_name_of(&entry).to_vec();
            let Some(old) = self.lock_record(&name, pending)? else {
                pending.coord.insert(entry, None);
                continue;
            };
            let live = self.live_leases(&old, ts, pending)?;
            let mut new = old.clone();
            new.remove_lease(
                id,
                |l| l != id && live.contains(&l),
                || {
                    last = ts.0.max(last + 1);
                    last
                },
            );
            self.write_lock(&name, &old, &new, pending);
        }
        self.store_tokens(last, pending);
        Ok(())
    }

    /// Applies a write guarded by lock `name`'s `token` at `ts`.
    pub(super) fn apply_fenced(
        &mut self,
        ts: Timestamp,
        name: &[u8],
        token: u64,
        op: CommandV1,
        pending: &mut PendingApply,
    ) -> io::Result<RangeReply> {
        let fence = self
            .coord_state(&keys::fence(self.range.id, name), pending)?
            .and_then(|b| keys::read_be64(&b));
        let refused = match check_fence(fence, token) {
            FenceCheck::Current => None,
            FenceCheck::NotAttached => Some(fence_refused::NOT_ATTACHED),
            FenceCheck::Stale(_) => Some(fence_refused::STALE),
            FenceCheck::Unknown(_) => Some(fence_refused::UNKNOWN),
        };
        if let Some(why) = refused {
            return Ok(RangeReply {
                succeeded: false,
                version: ts.0,
                value: why,
            });
        }
        match op {
            CommandV1::Put { .. } | CommandV1::Delete { .. } | CommandV1::Txn(_) => {
                self.apply_op(ts, op, pending)
            }
            _ => Ok(RangeReply {
                succeeded: false,
                version: ts.0,
                value: fence_refused::NOT_A_WRITE,
            }),
        }
    }
}
