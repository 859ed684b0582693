//! How a range state machine applies the lease rules of [`crate::coord`]:
//! lease records at the region's lease range, the index of attached keys
//! and the dropped markers in every range. Every change goes into the same
//! pending batch as the versions it goes with (`PendingApply::coord`), so a
//! key and its index entry are written atomically.

use std::io;

use super::{io_err, PendingApply, RangeStateMachine};
use crate::coord::{self, keys, LeaseRecordV1};
use crate::raft::types::{LeaseCommandV1, RangeReply};
use crate::storage::WriteRecord;
use crate::types::{Op, Timestamp};

/// Why a `PutLeased` was refused (the reply's `value`; `succeeded` false).
pub mod refused {
    /// The range dropped the lease: it expired or was revoked.
    pub const LEASE_GONE: u64 = 1;
    /// The lease check is older than `coord::ATTACH_VALIDITY_MS`.
    pub const CHECK_TOO_OLD: u64 = 2;
}

/// Most dropped markers one `Drop` prunes.
const PRUNE_PER_DROP: usize = 256;

impl RangeStateMachine {
    /// A coordination entry as the batch being built sees it.
    pub(super) fn coord_state(
        &self,
        key: &[u8],
        pending: &PendingApply,
    ) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = pending.coord.get(key) {
            return Ok(v.clone());
        }
        self.store
            .coord_get(key)
            .map_err(|e| io_err("read coordination state", e))
    }

    /// Coordination entries under `prefix` as the batch being built sees
    /// them (at most `limit`, in key order).
    pub(super) fn coord_scan(
        &self,
        prefix: &[u8],
        limit: usize,
        pending: &PendingApply,
    ) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // Stored entries, with the batch's own changes laid over them.
        let stored = self
            .store
            .coord_scan(prefix, None, limit.saturating_add(pending.coord.len()))
            .map_err(|e| io_err("scan coordination state", e))?;
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in pending.coord.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn lease_record(&self, id: u64, pending: &PendingApply) -> io::Result<Option<LeaseRecordV1>> {
        self.coord_state(&keys::lease(self.range.id, id), pending)?
            .map(|b| LeaseRecordV1::decode(&b).map_err(|e| io_err("lease record", e)))
            .transpose()
    }

    /// Detaches every key `ops` write from the lease it was attached to (a
    /// put without a lease, a delete, a transaction's writes all do).
    pub(super) fn detach_written_keys(
        &self,
        ops: &[Op],
        pending: &mut PendingApply,
    ) -> io::Result<()> {
        for op in ops {
            let key_entry = keys::key_lease(self.range.id, op.key());
            let Some(lease) = self.coord_state(&key_entry, pending)? else {
                continue;
            };
            let lease = keys::read_be64(&lease).ok_or_else(|| io_err("key lease", "not be64"))?;
            pending.coord.insert(key_entry, None);
            pending
                .coord
                .insert(keys::attached(self.range.id, lease, op.key()), None);
        }
        Ok(())
    }

    /// Applies a put attached to `lease` at `ts` (see `CommandV1::PutLeased`).
    pub(super) fn apply_put_leased(
        &mut self,
        ts: Timestamp,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
        checked_at: Timestamp,
        pending: &mut PendingApply,
    ) -> io::Result<RangeReply> {
        let refuse = |why| RangeReply {
            succeeded: false,
            version: ts.0,
            value: why,
        };
        if self
            .coord_state(&keys::dropped(self.range.id, lease), pending)?
            .is_some()
        {
            return Ok(refuse(refused::LEASE_GONE));
        }
        if !coord::attach_allowed(checked_at, ts) {
            return Ok(refuse(refused::CHECK_TOO_OLD));
        }
        let ops = vec![Op::Put {
            key: key.clone(),
            value,
        }];
        self.detach_written_keys(&ops, pending)?;
        pending.coord.insert(
            keys::key_lease(self.range.id, &key),
            Some(keys::be64(lease)),
        );
        pending.coord.insert(
            keys::attached(self.range.id, lease, &key),
            Some(keys::be64(ts.0)),
        );
        self.push_record(ts, ops, pending);
        Ok(RangeReply {
            succeeded: true,
            version: ts.0,
            value: 0,
        })
    }

    /// Adds a writing record to the batch.
    pub(super) fn push_record(&self, ts: Timestamp, ops: Vec<Op>, pending: &mut PendingApply) {
        if ops.is_empty() {
            return;
        }
        crate::decide::record_in_overlay(&mut pending.overlay, &ops, ts);
        pending.bytes += ops.iter().map(super::op_bytes).sum::<usize>();
        pending.records.push(WriteRecord { ts, ops });
    }

    /// Applies a lease command at `ts`.
    pub(super) fn apply_lease(
        &mut self,
        ts: Timestamp,
        cmd: LeaseCommandV1,
        pending: &mut PendingApply,
    ) -> io::Result<RangeReply> {
        let range = self.range.id;
        let mut reply = RangeReply {
            succeeded: true,
            version: ts.0,
            value: 0,
        };
        match cmd {
            LeaseCommandV1::Grant { ttl_ms } => {
                let next = self
                    .coord_state(&keys::next_lease(range), pending)?
                    .and_then(|b| keys::read_be64(&b))
                    .unwrap_or(1);
                let record = LeaseRecordV1::granted(ts, ttl_ms);
                pending
                    .coord
                    .insert(keys::lease(range, next), Some(record.encode()));
                pending
                    .coord
                    .insert(keys::next_lease(range), Some(keys::be64(next + 1)));
                reply.value = next;
            }
            LeaseCommandV1::KeepAlive { ids } => {
                for id in ids.into_iter().take(coord::MAX_LEASES_PER_COMMAND) {
                    let kept = self.lease_record(id, pending)?.and_then(|mut r| {
                        let live = r.keep_alive(ts);
                        live.then_some(r)
                    });
                    match kept {
                        Some(r) => {
                            pending
                                .coord
                                .insert(keys::lease(range, id), Some(r.encode()));
                        }
                        None => reply.succeeded = false,
                    }
                }
            }
            LeaseCommandV1::Expire { ids, revoke } => {
                let mut expired = 0;
                for id in ids.into_iter().take(coord::MAX_LEASES_PER_COMMAND) {
                    if let Some(mut r) = self.lease_record(id, pending)? {
                        if r.expire(ts, revoke) {
                            pending
                                .coord
                                .insert(keys::lease(range, id), Some(r.encode()));
                            // Its locks go to their next waiters.
                            self.release_locks_of(id, ts, pending)?;
                            expired += 1;
                        }
                    }
                }
                reply.succeeded = expired > 0;
                reply.value = expired;
            }
            LeaseCommandV1::Forget { ids } => {
                for id in ids.into_iter().take(coord::MAX_LEASES_PER_COMMAND) {
                    if let Some(r) = self.lease_record(id, pending)? {
                        if r.state != coord::LeaseStateV1::Live {
                            pending.coord.insert(keys::lease(range, id), None);
                        }
                    }
                }
            }
            LeaseCommandV1::Drop { ids } => {
                reply.succeeded = self.drop_leases(ts, &ids, pending)?;
                self.prune_markers(ts, pending)?;
            }
        }
        Ok(reply)
    }

    /// Deletes this range's keys attached to `ids` (at most
    /// `coord::MAX_DROP_KEYS` in all) and marks each lease whose keys are
    /// all gone as dropped. Returns whether every lease was dropped.
    fn drop_leases(
        &mut self,
        ts: Timestamp,
        ids: &[u64],
        pending: &mut PendingApply,
    ) -> io::Result<bool> {
        let range = self.range.id;
        let mut budget = coord::MAX_DROP_KEYS;
        let mut deletes = Vec::new();
        let mut all_done = true;
        for &id in ids.iter().take(coord::MAX_LEASES_PER_COMMAND) {
            let attached = self.coord_scan(&keys::attached_to(range, id), budget + 1, pending)?;
            let done = attached.len() <= budget;
            for (entry, version) in attached.into_iter().take(budget) {
                budget -= 1;
                let key = keys::attached_key_of(&entry).to_vec();
                let version = keys::read_be64(&version).unwrap_or(0);
                // Delete the key only while it still holds the version the
                // lease attached (a write from another region may have
                // replaced it since; that one is not the lease's).
                let current = self.current_state(&key, &pending.overlay)?;
                if current.is_some_and(|(_, v)| v.0 == version) {
                    deletes.push(Op::Delete { key: key.clone() });
                }
                pending.coord.insert(entry, None);
                pending.coord.insert(keys::key_lease(range, &key), None);
            }
            if done {
                if self
                    .coord_state(&keys::dropped(range, id), pending)?
                    .is_none()
                {
                    pending
                        .coord
                        .insert(keys::dropped(range, id), Some(keys::be64(ts.0)));
                    pending
                        .coord
                        .insert(keys::dropped_by_time(range, ts.0, id), Some(Vec::new()));
                }
            } else {
                all_done = false;
                break;
            }
        }
        self.push_record(ts, deletes, pending);
        Ok(all_done)
    }

    /// Removes dropped markers old enough that no put they would refuse can
    /// still attach (`coord::marker_prunable`), a bounded number at a time.
    fn prune_markers(&mut self, ts: Timestamp, pending: &mut PendingApply) -> io::Result<()> {
        let range = self.range.id;
        let oldest = self.coord_scan(&keys::dropped_by_time_all(range), PRUNE_PER_DROP, pending)?;
        for (entry, _) in oldest {
            let Some((at, lease)) = keys::dropped_by_time_of(&entry) else {
                continue;
            };
            if !coord::marker_prunable(Timestamp(at), ts) {
                break;
            }
            pending.coord.insert(entry, None);
            pending.coord.insert(keys::dropped(range, lease), None);
        }
        Ok(())
    }
}
