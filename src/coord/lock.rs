//! Locks and elections with fencing tokens: the pure rules of one lock's
//! record at the region's lease range.
//!
//! A lock has at most one holder, a lease, and a queue of waiters (leases
//! too), served in arrival order. Every grant gets a **fencing token**:
//! strictly greater than every token the lease range granted before, for
//! any lock (so a token of one lock never equals another's current one),
//! and never below the grant's HLC timestamp (so it keeps growing when a
//! later failover moves the locks to another region's clock). A lock ends
//! its holder's grant when the holder releases it, cancels, or its lease
//! expires; the next waiter whose lease is live is granted at once.
//!
//! An election is a lock whose holder carries a value (the leader's
//! address, say): campaigning is acquiring with a value and waiting,
//! resigning is releasing, the leader is the holder, and each leadership
//! term has its token.
//!
//! Guarded writes are checked where the written key lives: every range a
//! guarded write of lock `NAME` touched is a **dependent** of the lock
//! (recorded here) and keeps the newest token it was told
//! (`keys::fence`). A grant's token is pushed to every dependent before the
//! acquirer learns it, so once anyone holds a token, every dependent
//! refuses writes with an older one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::CoordDecodeError;

/// Most waiters one lock queues.
pub const MAX_LOCK_WAITERS: usize = 1_024;
/// Largest value a holder (an election's leader) carries.
pub const MAX_LOCK_VALUE_BYTES: usize = 4_096;
/// Most ranges one lock's guarded writes may span.
pub const MAX_LOCK_DEPENDENTS: usize = 64;

/// The holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderV1 {
    /// Its lease.
    pub lease: u64,
    /// Its fencing token.
    pub token: u64,
    /// Its value (an election's leader value; empty for a plain lock).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A waiter of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterV1 {
    /// Its lease.
    pub lease: u64,
    /// The value it will hold.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A lock's record, version 1 (disk format `[1] ++ postcard`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecordV1 {
    /// The current holder.
    pub holder: Option<HolderV1>,
    /// The newest token granted (0: never granted).
    pub last_token: u64,
    /// Waiters in arrival order.
    pub waiters: VecDeque<WaiterV1>,
    /// Ranges that hold a fence for this lock (guarded writes went there).
    pub dependents: Vec<u64>,
}

const LOCK_RECORD_FORMAT_V1: u8 = 1;

/// What an acquire did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lease holds the lock with this token (now, or already).
    Granted(u64),
    /// Queued at this position (0: next).
    Queued(usize),
    /// Held by another lease and the caller does not wait.
    Busy,
    /// The queue is full.
    QueueFull,
}

impl LockRecordV1 {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![LOCK_RECORD_FORMAT_V1]).unwrap_or_default()
    }

    /// Reads stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<LockRecordV1, CoordDecodeError> {
        match bytes.split_first() {
            Some((&LOCK_RECORD_FORMAT_V1, body)) => postcard::from_bytes(body)
                .map_err(|e| CoordDecodeError::Malformed(format!("lock record: {e}"))),
            other => Err(CoordDecodeError::Malformed(format!(
                "lock record format byte {:?}",
                other.map(|(b, _)| *b)
            ))),
        }
    }

    /// `lease` asks for the lock; `token` is the token a grant now gets
    /// (the caller's next region-wide token). Idempotent: a holder asking
    /// again keeps its grant, a waiter keeps its place.
    pub fn acquire(&mut self, lease: u64, value: Vec<u8>, wait: bool, token: u64) -> Acquired {
        if let Some(h) = &self.holder {
            if h.lease == lease {
                return Acquired::Granted(h.token);
            }
            if let Some(pos) = self.waiters.iter().position(|w| w.lease == lease) {
                return Acquired::Queued(pos);
            }
            if !wait {
                return Acquired::Busy;
            }
            if self.waiters.len() >= MAX_LOCK_WAITERS {
                return Acquired::QueueFull;
            }
            self.waiters.push_back(WaiterV1 { lease, value });
            return Acquired::Queued(self.waiters.len() - 1);
        }
        self.grant(lease, value, token);
        Acquired::Granted(token)
    }

    fn grant(&mut self, lease: u64, value: Vec<u8>, token: u64) {
        debug_assert!(token > self.last_token);
        self.last_token = token;
        self.holder = Some(HolderV1 {
            lease,
            token,
            value,
        });
    }

    /// Ends the grant of `token` (a release). Returns whether it was the
    /// current grant; the next waiter whose lease `live` accepts is then
    /// granted `next_token()`.
    pub fn release(
        &mut self,
        token: u64,
        live: impl FnMut(u64) -> bool,
        next_token: impl FnMut() -> u64,
    ) -> bool {
        if self.holder.as_ref().is_none_or(|h| h.token != token) {
            return false;
        }
        self.holder = None;
        self.promote(live, next_token);
        true
    }

    /// Removes `lease` from the lock, holder or waiter (a cancelled
    /// acquire, an expired lease). Returns whether it held the lock.
    pub fn remove_lease(
        &mut self,
        lease: u64,
        live: impl FnMut(u64) -> bool,
        next_token: impl FnMut() -> u64,
    ) -> bool {
        self.waiters.retain(|w| w.lease != lease);
        if self.holder.as_ref().is_some_and(|h| h.lease == lease) {
            self.holder = None;
            self.promote(live, next_token);
            return true;
        }
        false
    }

    /// Grants the lock to the first waiter whose lease is live (dropping
    /// those whose lease is not), if it is free.
    fn promote(&mut self, mut live: impl FnMut(u64) -> bool, mut next_token: impl FnMut() -> u64) {
        while self.holder.is_none() {
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            if live(w.lease) {
                let token = next_token();
                self.grant(w.lease, w.value, token);
            }
        }
    }

    /// Every lease the record names (holder and waiters).
    pub fn leases(&self) -> impl Iterator<Item = u64> + '_ {
        self.holder
            .iter()
            .map(|h| h.lease)
            .chain(self.waiters.iter().map(|w| w.lease))
    }

    /// Records `range` as a dependent. Returns false when the lock already
    /// has [`MAX_LOCK_DEPENDENTS`] others.
    pub fn add_dependent(&mut self, range: u64) -> bool {
        if self.dependents.contains(&range) {
            return true;
        }
        if self.dependents.len() >= MAX_LOCK_DEPENDENTS {
            return false;
        }
        self.dependents.push(range);
        true
    }
}

/// Whether a guarded write with `token` may apply where the newest token
/// known for its lock is `fence` (`None`: this range is not a dependent
/// yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceCheck {
    /// The token is the newest granted: apply.
    Current,
    /// A newer token has been granted.
    Stale(u64),
    /// No such grant is known here: the token is from another lock, or
    /// was never granted.
    Unknown(u64),
    /// The range does not follow this lock yet: attach first.
    NotAttached,
}

/// Checks a guarded write's token against the range's fence.
pub fn check_fence(fence: Option<u64>, token: u64) -> FenceCheck {
    match fence {
        None => FenceCheck::NotAttached,
        Some(f) if token == f => FenceCheck::Current,
        Some(f) if token < f => FenceCheck::Stale(f),
        Some(f) => FenceCheck::Unknown(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(start: u64) -> impl FnMut() -> u64 {
        let mut n = start;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn waiters_are_served_in_arrival_order_with_strictly_increasing_tokens() {
        let mut l = LockRecordV1::default();
        assert_eq!(l.acquire(1, vec![], true, 10), Acquired::Granted(10));
        assert_eq!(
            l.acquire(1, vec![], true, 11),
            Acquired::Granted(10),
            "idempotent"
        );
        assert_eq!(l.acquire(2, vec![], false, 11), Acquired::Busy);
        assert_eq!(l.acquire(2, b"b".to_vec(), true, 11), Acquired::Queued(0));
        assert_eq!(l.acquire(3, vec![], true, 11), Acquired::Queued(1));
        assert_eq!(
            l.acquire(2, vec![], true, 11),
            Acquired::Queued(0),
            "keeps its place"
        );
        assert!(
            !l.release(9, |_| true, counter(20)),
            "not the current grant"
        );
        assert!(l.release(10, |_| true, counter(20)));
        let h = l.holder.clone().unwrap();
        assert_eq!((h.lease, h.token, h.value), (2, 21, b"b".to_vec()));
        // Lease 3's lease died: it is skipped when 2 releases.
        assert!(l.release(21, |lease| lease != 3, counter(30)));
        assert_eq!(l.holder, None);
        assert!(l.waiters.is_empty());
        assert_eq!(l.last_token, 21, "the newest grant's token stays known");
    }

    #[test]
    fn an_expired_holder_passes_the_lock_on_and_a_waiter_can_leave() {
        let mut l = LockRecordV1::default();
        l.acquire(1, vec![], true, 5);
        l.acquire(2, vec![], true, 6);
        l.acquire(3, vec![], true, 6);
        assert!(!l.remove_lease(2, |_| true, counter(7)), "a waiter leaves");
        assert!(
            l.remove_lease(1, |_| true, counter(7)),
            "the holder's lease expired"
        );
        assert_eq!(l.holder.as_ref().map(|h| (h.lease, h.token)), Some((3, 8)));
        assert_eq!(l.leases().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn the_queue_and_dependents_are_bounded() {
        let mut l = LockRecordV1::default();
        l.acquire(0, vec![], true, 1);
        for i in 1..=MAX_LOCK_WAITERS as u64 {
            assert!(matches!(l.acquire(i, vec![], true, 2), Acquired::Queued(_)));
        }
        assert_eq!(l.acquire(99_999, vec![], true, 2), Acquired::QueueFull);
        for r in 0..MAX_LOCK_DEPENDENTS as u64 {
            assert!(l.add_dependent(r));
        }
        assert!(l.add_dependent(0), "already one");
        assert!(!l.add_dependent(999));
    }

    #[test]
    fn fences_refuse_stale_and_unknown_tokens() {
        assert_eq!(check_fence(None, 5), FenceCheck::NotAttached);
        assert_eq!(check_fence(Some(5), 5), FenceCheck::Current);
        assert_eq!(check_fence(Some(7), 5), FenceCheck::Stale(7));
        assert_eq!(check_fence(Some(5), 7), FenceCheck::Unknown(5));
    }

    #[test]
    fn frozen_lock_record_bytes() {
        let mut l = LockRecordV1::default();
        l.acquire(1, b"v".to_vec(), true, 9);
        l.acquire(2, vec![], true, 10);
        l.add_dependent(3);
        let bytes = l.encode();
        assert_eq!(
            bytes,
            vec![1, 1, 1, 9, 1, b'v', 9, 1, 2, 0, 1, 3],
            "lock record v1 layout changed: add a new format instead"
        );
        assert_eq!(LockRecordV1::decode(&bytes).unwrap(), l);
    }
}
