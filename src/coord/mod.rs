//! Coordination on top of the store: leases (and, built on them, locks and
//! elections) as a sans-IO core. The range state machines apply these rules
//! ([`crate::raft`]), the engine drives them ([`crate::engine::lease`]); this
//! module owns the rules, the records and their layout in storage's `coord`
//! keyspace, and does no IO.
//!
//! # Where a lease lives
//!
//! A lease belongs to the region it was granted in and lives in that
//! region's **lease range** ([`lease_range`]: the range holding the empty
//! key, which every region has): its record (TTL, deadline, state) is part
//! of that range's replicated state, so a lease keeps its deadline across
//! leader changes. Keys attached to it may lie in any range of the region;
//! each range keeps, in its own replicated state, an index of its keys
//! attached to each lease and a marker for each lease it dropped.
//!
//! # Life of a lease
//!
//! - **Grant**: the lease range applies `Grant{ttl}`: a new id (the next of
//!   a per-region counter, never reused), deadline = the apply timestamp's
//!   physical time + TTL.
//! - **Keepalive**: `KeepAlive{ids}` moves each live lease's deadline to the
//!   apply time + its TTL. The reply is sent after the entry commits, so a
//!   deadline a client was told is durable: no leader change shortens it.
//! - **Expiry**: the lease range's leader proposes `Expire{ids}` for leases
//!   whose deadline passed on its clock; the apply re-checks each deadline
//!   against the entry's own timestamp (a keepalive ordered before it wins),
//!   and marks the lease expired. `Revoke{id}` expires one at once.
//! - **Drop**: the leader then proposes `Drop{ids}` to every range of the
//!   region: each deletes its keys attached to those leases (ordinary,
//!   replicated deletes) and records a dropped marker; then `Forget{ids}`
//!   removes the records from the lease range.
//! - **Attaching a key**: a put with a lease is proposed to the key's range
//!   with the time the lease was last checked live at the lease range
//!   (`checked_at`). The key's range refuses it when it dropped the lease
//!   (a marker), or when more than [`ATTACH_VALIDITY_MS`] passed since the
//!   check ([`attach_allowed`]).
//!
//! **Invariant (no key outlives its lease):** a key attached to a lease is
//! deleted when the lease expires. Proof sketch: a put with lease `L` is
//! applied in range `R` at `a` with `a - checked_at <= V`; `checked_at` is
//! before `L` expired (`d`). If `R` applied `Drop{L}` before the put, its
//! marker refuses the put unless the marker was pruned, which happens only
//! once `R`'s time passes `d + V + 2 * max_offset` (the margin covers the
//! clocks of the two leaders): then `a - checked_at > V` refuses it. If `R`
//! applies the drop after the put, the drop deletes the key.
//!
//! **Invariant (no early expiry):** a lease expires only when the lease
//! range applies an `Expire` whose timestamp is past its deadline, and the
//! deadline only moves forward. Early expiry is bounded by the clock offset
//! between the leader that extended it and the one that expires it
//! (`clock.max_offset_ms`, enforced between nodes).

use serde::{Deserialize, Serialize};

use crate::types::Timestamp;

pub mod lock;

/// Shortest lease TTL a client may ask for.
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
/// Longest lease TTL a client may ask for (one day).
pub const MAX_LEASE_TTL_MS: u64 = 24 * 60 * 60 * 1_000;
/// A put with a lease must apply within this long of the lease's check at
/// the lease range (`V` in the module invariant), else it is refused.
pub const ATTACH_VALIDITY_MS: u64 = 10_000;
/// Most leases one keepalive, expiry, drop or forget names.
pub const MAX_LEASES_PER_COMMAND: usize = 1_000;
/// Most attached keys one `Drop` deletes per lease; a lease with more is
/// dropped in several commands (the reply says some remain).
pub const MAX_DROP_KEYS: usize = 1_000;

/// The lease range of a region: the range that holds the empty key (the
/// first range of every region's range table).
pub fn lease_range(
    ranges: &[crate::raft::RangeDescriptor],
) -> Option<&crate::raft::RangeDescriptor> {
    ranges.iter().find(|r| r.contains(b""))
}

/// A lease's state in the lease range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseStateV1 {
    /// Live until its deadline.
    Live,
    /// Expired (or revoked) at the timestamp; its keys are being dropped.
    Expired(u64),
}

/// A lease's record in the lease range's `coord` entries, version 1
/// (disk format: `[1] ++ postcard`, frozen-bytes test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecordV1 {
    /// The TTL granted, in ms.
    pub ttl_ms: u64,
    /// Unix ms after which the lease is expired.
    pub deadline_ms: i64,
    /// When it was granted (HLC).
    pub granted_at: u64,
    /// Live or expired.
    pub state: LeaseStateV1,
}

/// Format byte of a lease record.
const LEASE_RECORD_FORMAT_V1: u8 = 1;

/// Errors decoding a coordination record.
#[derive(Debug, thiserror::Error)]
pub enum CoordDecodeError {
    /// Unknown format byte or a malformed body.
    #[error("coordination record: {0}")]
    Malformed(String),
}

impl LeaseRecordV1 {
    /// A lease granted at `at` for `ttl_ms`.
    pub fn granted(at: Timestamp, ttl_ms: u64) -> LeaseRecordV1 {
        LeaseRecordV1 {
            ttl_ms,
            deadline_ms: deadline(at, ttl_ms),
            granted_at: at.0,
            state: LeaseStateV1::Live,
        }
    }

    /// Whether the lease is live at `at` (not expired and its deadline not
    /// passed).
    pub fn live_at(&self, at: Timestamp) -> bool {
        self.state == LeaseStateV1::Live && at.physical_unix_ms() < self.deadline_ms
    }

    /// Time left at `at`, in ms (0 once expired).
    pub fn remaining_ms(&self, at: Timestamp) -> u64 {
        match self.state {
            LeaseStateV1::Live => {
                u64::try_from(self.deadline_ms - at.physical_unix_ms()).unwrap_or(0)
            }
            LeaseStateV1::Expired(_) => 0,
        }
    }

    /// A keepalive applied at `at`: a live lease's deadline moves to `at` +
    /// TTL (never back). Returns whether the lease was live to keep.
    pub fn keep_alive(&mut self, at: Timestamp) -> bool {
        if !self.live_at(at) {
            return false;
        }
        self.deadline_ms = self.deadline_ms.max(deadline(at, self.ttl_ms));
        true
    }

    /// An expiry applied at `at`: expires a live lease whose deadline has
    /// passed at `at` (or any live lease when `revoke`). Returns whether it
    /// expired now.
    pub fn expire(&mut self, at: Timestamp, revoke: bool) -> bool {
        if self.state != LeaseStateV1::Live {
            return false;
        }
        if !revoke && at.physical_unix_ms() < self.deadline_ms {
            return false;
        }
        self.state = LeaseStateV1::Expired(at.0);
        true
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of integers and a small enum always serialises.
        postcard::to_extend(self, vec![LEASE_RECORD_FORMAT_V1]).unwrap_or_default()
    }

    /// Reads stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<LeaseRecordV1, CoordDecodeError> {
        match bytes.split_first() {
            Some((&LEASE_RECORD_FORMAT_V1, body)) => postcard::from_bytes(body)
                .map_err(|e| CoordDecodeError::Malformed(format!("lease record: {e}"))),
            other => Err(CoordDecodeError::Malformed(format!(
                "lease record format byte {:?}",
                other.map(|(b, _)| *b)
            ))),
        }
    }
}

fn deadline(at: Timestamp, ttl_ms: u64) -> i64 {
    at.physical_unix_ms()
        .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

/// Whether a put with a lease last checked live at `checked_at` may attach
/// its key when applied at `at` (see the module invariant).
pub fn attach_allowed(checked_at: Timestamp, at: Timestamp) -> bool {
    at.physical_unix_ms() - checked_at.physical_unix_ms()
        <= i64::try_from(ATTACH_VALIDITY_MS).unwrap_or(i64::MAX)
}

/// How long a range keeps a dropped marker: the attach validity plus twice
/// the largest clock offset any node allows (a constant, so every replica
/// prunes at the same entry).
pub const MARKER_KEEP_MS: u64 = ATTACH_VALIDITY_MS + 2 * crate::limits::HARD_MAX_CLOCK_OFFSET_MS;

/// Whether a dropped marker written at `dropped_at` may be pruned at `at`
/// (no put it would refuse can pass [`attach_allowed`] any more).
pub fn marker_prunable(dropped_at: Timestamp, at: Timestamp) -> bool {
    at.physical_unix_ms() - dropped_at.physical_unix_ms()
        > i64::try_from(MARKER_KEEP_MS).unwrap_or(i64::MAX)
}

/// Checks a requested TTL.
pub fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if (MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(format!(
            "lease TTL {ttl_ms} ms is outside {MIN_LEASE_TTL_MS}..={MAX_LEASE_TTL_MS} ms"
        ))
    }
}

/// The layout of a range's coordination entries in storage's `coord`
/// keyspace: every key starts with the range id (`be64`), then a tag.
pub mod keys {
    /// Tag of the lease range's next-lease-id counter (value `be64`).
    pub const NEXT_LEASE: u8 = b'N';
    /// Tag of a lease record: `++ be64(id)`, value a [`super::LeaseRecordV1`].
    pub const LEASE: u8 = b'L';
    /// Tag of an attached key: `++ be64(lease) ++ key`, value `be64(version)`.
    pub const ATTACHED: u8 = b'A';
    /// Tag of a key's lease: `++ key`, value `be64(lease)`.
    pub const KEY_LEASE: u8 = b'K';
    /// Tag of a dropped marker by lease: `++ be64(lease)`, value `be64(dropped_at)`.
    pub const DROPPED: u8 = b'D';
    /// Tag of a lock's record: `++ name`, value a [`super::lock::LockRecordV1`].
    pub const LOCK: u8 = b'O';
    /// Tag of the lock index by lease: `++ be64(lease) ++ name`, empty value.
    pub const LEASE_LOCKS: u8 = b'o';
    /// Tag of a range's fence for a lock: `++ name`, value `be64(token)`.
    pub const FENCE: u8 = b'F';
    /// Tag of the lease range's newest fencing token (value `be64`).
    pub const LAST_TOKEN: u8 = b'n';
    /// Tag of the range's policy floor (value `be64`, a policy table
    /// version; see `CommandV1::PolicyFence`).
    pub const POLICY_FLOOR: u8 = b'P';
    /// Tag of a dropped marker by time (for pruning):
    /// `++ be64(dropped_at) ++ be64(lease)`, empty value.
    pub const DROPPED_BY_TIME: u8 = b'T';

    /// The prefix of every coordination entry of `range`.
    pub fn range_prefix(range: u64) -> Vec<u8> {
        range.to_be_bytes().to_vec()
    }

    fn tagged(range: u64, tag: u8, rest: &[&[u8]]) -> Vec<u8> {
        let mut k = Vec::with_capacity(9 + rest.iter().map(|r| r.len()).sum::<usize>());
        k.extend_from_slice(&range.to_be_bytes());
        k.push(tag);
        for r in rest {
            k.extend_from_slice(r);
        }
        k
    }

    /// The range's policy floor.
    pub fn policy_floor(range: u64) -> Vec<u8> {
        tagged(range, POLICY_FLOOR, &[])
    }

    /// The next-lease-id counter.
    pub fn next_lease(range: u64) -> Vec<u8> {
        tagged(range, NEXT_LEASE, &[])
    }

    /// A lease's record.
    pub fn lease(range: u64, id: u64) -> Vec<u8> {
        tagged(range, LEASE, &[&id.to_be_bytes()])
    }

    /// The prefix of every lease record.
    pub fn leases(range: u64) -> Vec<u8> {
        tagged(range, LEASE, &[])
    }

    /// The lease id a lease record's key names.
    pub fn lease_id_of(key: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
    }

    /// An attached key's index entry.
    pub fn attached(range: u64, lease: u64, key: &[u8]) -> Vec<u8> {
        tagged(range, ATTACHED, &[&lease.to_be_bytes(), key])
    }

    /// The prefix of every key attached to `lease`.
    pub fn attached_to(range: u64, lease: u64) -> Vec<u8> {
        tagged(range, ATTACHED, &[&lease.to_be_bytes()])
    }

    /// The user key an attached entry names.
    pub fn attached_key_of(entry: &[u8]) -> &[u8] {
        entry.get(17..).unwrap_or_default()
    }

    /// A key's lease entry.
    pub fn key_lease(range: u64, key: &[u8]) -> Vec<u8> {
        tagged(range, KEY_LEASE, &[key])
    }

    /// A dropped marker by lease.
    pub fn dropped(range: u64, lease: u64) -> Vec<u8> {
        tagged(range, DROPPED, &[&lease.to_be_bytes()])
    }

    /// A dropped marker by time.
    pub fn dropped_by_time(range: u64, at: u64, lease: u64) -> Vec<u8> {
        tagged(
            range,
            DROPPED_BY_TIME,
            &[&at.to_be_bytes(), &lease.to_be_bytes()],
        )
    }

    /// The prefix of every dropped marker by time.
    pub fn dropped_by_time_all(range: u64) -> Vec<u8> {
        tagged(range, DROPPED_BY_TIME, &[])
    }

    /// `(dropped_at, lease)` of a by-time marker key.
    pub fn dropped_by_time_of(key: &[u8]) -> Option<(u64, u64)> {
        let at = u64::from_be_bytes(key.get(9..17)?.try_into().ok()?);
        let lease = u64::from_be_bytes(key.get(17..25)?.try_into().ok()?);
        Some((at, lease))
    }

    /// A lock's record.
    pub fn lock(range: u64, name: &[u8]) -> Vec<u8> {
        tagged(range, LOCK, &[name])
    }

    /// The prefix of every lock record.
    pub fn locks(range: u64) -> Vec<u8> {
        tagged(range, LOCK, &[])
    }

    /// A lease's entry in the lock index.
    pub fn lease_lock(range: u64, lease: u64, name: &[u8]) -> Vec<u8> {
        tagged(range, LEASE_LOCKS, &[&lease.to_be_bytes(), name])
    }

    /// The prefix of every lock a lease holds or waits for.
    pub fn lease_locks(range: u64, lease: u64) -> Vec<u8> {
        tagged(range, LEASE_LOCKS, &[&lease.to_be_bytes()])
    }

    /// The lock name of a lock-index entry.
    pub fn lease_lock_name_of(entry: &[u8]) -> &[u8] {
        entry.get(17..).unwrap_or_default()
    }

    /// A range's fence for a lock.
    pub fn fence(range: u64, name: &[u8]) -> Vec<u8> {
        tagged(range, FENCE, &[name])
    }

    /// The newest fencing token of the lease range.
    pub fn last_token(range: u64) -> Vec<u8> {
        tagged(range, LAST_TOKEN, &[])
    }

    /// A `be64` value.
    pub fn be64(v: u64) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// Reads a `be64` value.
    pub fn read_be64(v: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(v.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_parts(ms, 0).unwrap()
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_lease_lives_until_its_deadline_and_keepalive_moves_it_forward_only() {
        let mut l = LeaseRecordV1::granted(at(T0), 5_000);
        assert!(l.live_at(at(T0 + 4_999)));
        assert!(!l.live_at(at(T0 + 5_000)));
        assert_eq!(l.remaining_ms(at(T0 + 1_000)), 4_000);
        assert!(l.keep_alive(at(T0 + 3_000)));
        assert_eq!(l.deadline_ms, T0 + 8_000);
        // A keepalive stamped earlier (a slower clock) never moves it back.
        assert!(l.keep_alive(at(T0 + 2_000)));
        assert_eq!(l.deadline_ms, T0 + 8_000);
        // Past the deadline a keepalive is too late.
        assert!(!l.keep_alive(at(T0 + 8_000)));
    }

    #[test]
    fn expiry_rechecks_the_deadline_at_apply_and_revoke_does_not() {
        let mut l = LeaseRecordV1::granted(at(T0), 5_000);
        assert!(!l.expire(at(T0 + 4_000), false), "not yet due");
        assert_eq!(l.state, LeaseStateV1::Live);
        assert!(l.expire(at(T0 + 5_000), false));
        assert_eq!(l.state, LeaseStateV1::Expired(at(T0 + 5_000).0));
        assert!(!l.expire(at(T0 + 6_000), true), "expires once");
        assert_eq!(l.remaining_ms(at(T0)), 0);
        assert!(
            !l.keep_alive(at(T0 + 1)),
            "an expired lease is not kept alive"
        );

        let mut r = LeaseRecordV1::granted(at(T0), 5_000);
        assert!(r.expire(at(T0 + 1), true));
    }

    #[test]
    fn attach_validity_and_marker_pruning_agree() {
        let checked = at(T0);
        assert!(attach_allowed(checked, at(T0 + ATTACH_VALIDITY_MS as i64)));
        assert!(!attach_allowed(
            checked,
            at(T0 + ATTACH_VALIDITY_MS as i64 + 1)
        ));
        // A marker written after the check is kept for as long as any put
        // checked before it could still attach, with two offsets to spare.
        let dropped = at(T0 + 1);
        for late in [0, 1, 1_000, ATTACH_VALIDITY_MS as i64] {
            let a = at(T0 + late);
            if attach_allowed(checked, a) {
                assert!(!marker_prunable(dropped, a));
            }
        }
        assert!(!marker_prunable(
            dropped,
            at(T0 + 1 + MARKER_KEEP_MS as i64)
        ));
        assert!(marker_prunable(dropped, at(T0 + 2 + MARKER_KEEP_MS as i64)));
    }

    #[test]
    fn ttl_bounds() {
        assert!(check_ttl(MIN_LEASE_TTL_MS).is_ok());
        assert!(check_ttl(MAX_LEASE_TTL_MS).is_ok());
        assert!(check_ttl(MIN_LEASE_TTL_MS - 1).is_err());
        assert!(check_ttl(MAX_LEASE_TTL_MS + 1).is_err());
    }

    #[test]
    fn frozen_lease_record_bytes() {
        let l = LeaseRecordV1 {
            ttl_ms: 5_000,
            deadline_ms: 1_800_000_005_000,
            granted_at: 7,
            state: LeaseStateV1::Expired(9),
        };
        let bytes = l.encode();
        assert_eq!(
            bytes,
            vec![1, 136, 39, 144, 142, 227, 133, 227, 104, 7, 1, 9],
            "lease record v1 layout changed: add a new format instead"
        );
        assert_eq!(LeaseRecordV1::decode(&bytes).unwrap(), l);
        assert!(LeaseRecordV1::decode(&[2, 0]).is_err());
    }

    #[test]
    fn key_layout_round_trips() {
        let k = keys::lease(3, 42);
        assert_eq!(keys::lease_id_of(&k), Some(42));
        assert!(k.starts_with(&keys::leases(3)));
        let a = keys::attached(3, 42, b"svc/x");
        assert!(a.starts_with(&keys::attached_to(3, 42)));
        assert_eq!(keys::attached_key_of(&a), b"svc/x");
        let t = keys::dropped_by_time(3, 100, 42);
        assert_eq!(keys::dropped_by_time_of(&t), Some((100, 42)));
        // Ranges never share entries.
        assert!(!keys::lease(4, 42).starts_with(&keys::range_prefix(3)));
    }
}
