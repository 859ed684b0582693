//! The Raft log and Raft state of every range group, as bytes, in two fjall
//! keyspaces of the node's database, so they share its ordered journal (and
//! its durability point and poison flag) with the MVCC data.
//!
//! Disk format, version 1 (pinned by `frozen_keys_on_disk`):
//! - `raft_log`: key `be64(range) ++ be64(index)` → the entry's bytes.
//! - `raft_state`: key `be64(range) ++ tag` (one byte, [`RaftStateKey`]) →
//!   the value's bytes.
//!
//! The bytes are the caller's (`raft::log_store` writes a format byte and
//! postcard); this module owns where they live and how they are written.
//! Big-endian keys sort by range, then by index, so one range's entries are
//! one contiguous key span, and every call works inside
//! `[be64(range) ++ be64(0), be64(range) ++ be64(u64::MAX)]`: no call on one
//! range reads or removes a key of another.
//!
//! **Invariant:** removals never leave a hole. The tail is removed newest
//! first and the purged prefix oldest first, each in bounded atomic batches,
//! so whatever batch a crash stops at, the entries left are contiguous.
//! **Invariant:** every write and sync goes through the store's poison path:
//! refused once the store is poisoned, and a failure poisons it (fjall
//! `src/poison.rs`).

use std::ops::Bound;

use fjall::{Keyspace, KeyspaceCreateOptions, Readable};

use super::{MvccStore, StorageError};

/// fjall keyspace of the Raft log entries.
const LOG_KEYSPACE: &str = "raft_log";
/// fjall keyspace of the per-range Raft state (vote, committed, purged).
const STATE_KEYSPACE: &str = "raft_state";

/// Most entries one read returns ([`RaftLogView::entries`] clamps to it):
/// a page bounds the memory of a read, however wide the index range asked.
pub const MAX_LOG_READ_ENTRIES: usize = 1024;
/// Most entries one removal step commits in one batch (the truncation of a
/// tail and each [`RaftLog::purge_step`] clamp to it).
pub const MAX_LOG_REMOVE_ENTRIES: usize = 10_000;
/// Largest Raft state value in bytes; votes and log ids take a few dozen.
pub const MAX_STATE_VALUE_BYTES: usize = 4096;

/// A named value of a range's Raft state; the tag byte is part of the key
/// and so of the disk format: append variants, never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftStateKey {
    /// The vote (`v`); written durably.
    Vote,
    /// The last known committed log id (`c`).
    Committed,
    /// The last purged log id (`p`), the purge marker.
    Purged,
}

impl RaftStateKey {
    fn tag(self) -> u8 {
        match self {
            RaftStateKey::Vote => b'v',
            RaftStateKey::Committed => b'c',
            RaftStateKey::Purged => b'p',
        }
    }
}

fn log_key(range: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&range.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn state_key(range: u64, key: RaftStateKey) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&range.to_be_bytes());
    k[8] = key.tag();
    k
}

/// The index of a log key read back from `range`'s span.
fn index_of(range: u64, key: &[u8]) -> Result<u64, StorageError> {
    match <[u8; 16]>::try_from(key) {
        Ok(k) if k[..8] == range.to_be_bytes() => {
            let mut index = [0u8; 8];
            index.copy_from_slice(&k[8..]);
            Ok(u64::from_be_bytes(index))
        }
        _ => Err(StorageError::Corrupt {
            what: format!("raft log key {key:02x?} outside range {range}"),
        }),
    }
}

/// The key span of `range`'s entries with index in `[from, to]`.
fn span(range: u64, from: u64, to: u64) -> (Bound<[u8; 16]>, Bound<[u8; 16]>) {
    (
        Bound::Included(log_key(range, from)),
        Bound::Included(log_key(range, to)),
    )
}

/// The Raft log and state of one range. Cheap to clone; clones share the
/// store (and so its poison flag).
#[derive(Clone)]
pub struct RaftLog {
    range: u64,
    store: MvccStore,
    log: Keyspace,
    state: Keyspace,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of one range's log, from [`RaftLog::view`]: reads
/// through one view see one state of the log, whatever is written meanwhile.
pub struct RaftLogView {
    range: u64,
    snapshot: fjall::Snapshot,
    log: Keyspace,
}

impl RaftLogView {
    /// The entries with index in `[from, to)`, in index order, at most
    /// `max_entries` (clamped to [`MAX_LOG_READ_ENTRIES`]); read again from
    /// after the last one for the rest.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
        max_entries: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        if from >= to || max_entries == 0 {
            return Ok(Vec::new());
        }
        let max_entries = max_entries.min(MAX_LOG_READ_ENTRIES);
        let mut out = Vec::new();
        for guard in self
            .snapshot
            .range(&self.log, span(self.range, from, to - 1))
            .take(max_entries)
        {
            let (key, value) = guard.into_inner().map_err(StorageError::fjall)?;
            out.push((index_of(self.range, &key)?, value.to_vec()));
        }
        Ok(out)
    }

    /// The entry with the highest index, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let Some(guard) = self
            .snapshot
            .range(&self.log, span(self.range, 0, u64::MAX))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = guard.into_inner().map_err(StorageError::fjall)?;
        Ok(Some((index_of(self.range, &key)?, value.to_vec())))
    }
}

impl RaftLog {
    /// Opens the log of `range` in `store`'s database (creating the two
    /// keyspaces in a database that has none yet).
    pub fn open(store: &MvccStore, range: u64) -> Result<RaftLog, StorageError> {
        store.check_poisoned()?;
        let db = &store.inner.db;
        let open = |name| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(|err| store.write_failed("raft_log_open", err))
        };
        Ok(RaftLog {
            range,
            store: store.clone(),
            log: open(LOG_KEYSPACE)?,
            state: open(STATE_KEYSPACE)?,
        })
    }

    /// A point-in-time view for reads.
    pub fn view(&self) -> Result<RaftLogView, StorageError> {
        self.store.check_poisoned()?;
        Ok(RaftLogView {
            range: self.range,
            snapshot: self.store.inner.db.snapshot(),
            log: self.log.clone(),
        })
    }

    /// [`RaftLogView::entries`] on a view of now.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
        max_entries: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.view()?.entries(from, to, max_entries)
    }

    /// [`RaftLogView::last`] on a view of now.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        self.view()?.last()
    }

    /// Writes `entries` (indexes strictly consecutive) in one atomic batch,
    /// replacing entries of the same index. Readable on return; durable
    /// only after a later [`RaftLog::persist`] (or any fsync of the store).
    /// The batch's size is the caller's: openraft appends at most what one
    /// AppendEntries or one round of proposals carries.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
        self.store.check_poisoned()?;
        if let Some(pair) = entries
            .windows(2)
            .find(|p| p[0].0.checked_add(1) != Some(p[1].0))
        {
            return Err(StorageError::invalid(format!(
                "raft log append: index {} follows {}",
                pair[1].0, pair[0].0
            )));
        }
        let mut batch = self.store.inner.db.batch();
        for (index, bytes) in entries {
            batch.insert(&self.log, log_key(self.range, *index), bytes.as_slice());
        }
        self.store.commit("raft_log_append", batch)
    }

    /// Removes every entry with index `from` or above, newest first, in
    /// batches of at most [`MAX_LOG_REMOVE_ENTRIES`]; a crash between
    /// batches leaves a shorter tail, never a hole. Not fsynced.
    pub fn truncate_from(&self, from: u64) -> Result<(), StorageError> {
        while self.truncate_step(from, MAX_LOG_REMOVE_ENTRIES)? {}
        Ok(())
    }

    /// Removes up to `max_entries` of the newest entries with index `from`
    /// or above in one batch; says whether any remain.
    fn truncate_step(&self, from: u64, max_entries: usize) -> Result<bool, StorageError> {
        self.remove_step("raft_log_truncate", from, u64::MAX, max_entries, true)
            .map(|next| next.is_some())
    }

    /// Removes up to `max_entries` (clamped to [`MAX_LOG_REMOVE_ENTRIES`],
    /// at least 1) of the oldest entries with index in `[from, up_to]`, in
    /// one batch, and returns the index to continue from while entries
    /// remain (`None`: none left): the deletion behind a purge, called until
    /// it returns `None`. Not fsynced.
    ///
    /// The scan starts at `from`, so entries below it are left alone: a
    /// caller that knows where the last deletion stopped passes that, and
    /// never walks the tombstones earlier purges left (an LSM keeps them
    /// until compaction drops them; from index 0, every step of every purge
    /// walked all of them again).
    pub fn purge_step(
        &self,
        from: u64,
        up_to: u64,
        max_entries: usize,
    ) -> Result<Option<u64>, StorageError> {
        self.remove_step("raft_log_purge", from, up_to, max_entries, false)
    }

    /// Removes up to `max_entries` entries of `[from, to]`, oldest or
    /// newest first, in one batch; returns the index of the next entry in
    /// that order, if one remains.
    fn remove_step(
        &self,
        what: &str,
        from: u64,
        to: u64,
        max_entries: usize,
        newest_first: bool,
    ) -> Result<Option<u64>, StorageError> {
        self.store.check_poisoned()?;
        if max_entries == 0 {
            return Err(StorageError::invalid(format!(
                "{what}: max_entries must be at least 1"
            )));
        }
        if from > to {
            return Ok(None);
        }
        let max_entries = max_entries.min(MAX_LOG_REMOVE_ENTRIES);
        let snapshot = self.store.inner.db.snapshot();
        let scan = snapshot.range(&self.log, span(self.range, from, to));
        let mut keys: Box<dyn Iterator<Item = fjall::Guard>> = if newest_first {
            Box::new(scan.rev())
        } else {
            Box::new(scan)
        };
        let mut batch = self.store.inner.db.batch();
        for guard in keys.by_ref().take(max_entries) {
            let key = guard.key().map_err(StorageError::fjall)?;
            batch.remove(&self.log, super::owned_key(&key));
        }
        let next = match keys.next() {
            Some(guard) => {
                let key = guard.key().map_err(StorageError::fjall)?;
                Some(index_of(self.range, &key)?)
            }
            None => None,
        };
        self.store.commit(what, batch)?;
        Ok(next)
    }

    /// The value stored under `key`, if any.
    pub fn state(&self, key: RaftStateKey) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.check_poisoned()?;
        let raw = self
            .state
            .get(state_key(self.range, key))
            .map_err(StorageError::fjall)?;
        Ok(raw.map(|v| v.to_vec()))
    }

    /// Writes `value` under `key`, ordered in the journal after every
    /// earlier write; not fsynced.
    pub fn put_state(&self, key: RaftStateKey, value: &[u8]) -> Result<(), StorageError> {
        self.store.check_poisoned()?;
        if value.len() > MAX_STATE_VALUE_BYTES {
            return Err(StorageError::invalid(format!(
                "raft state value of {} bytes exceeds {MAX_STATE_VALUE_BYTES}",
                value.len()
            )));
        }
        let mut batch = self.store.inner.db.batch();
        batch.insert(&self.state, state_key(self.range, key), value);
        self.store.commit("raft_state_put", batch)
    }

    /// [`RaftLog::put_state`], then an fsync before returning, whatever the
    /// store's fsync policy: how a vote is saved.
    pub fn put_state_durable(&self, key: RaftStateKey, value: &[u8]) -> Result<(), StorageError> {
        self.put_state(key, value)?;
        self.persist()
    }

    /// Makes everything written so far (every range's log, and the MVCC
    /// data) survive power loss: [`MvccStore::sync_durable`].
    pub fn persist(&self) -> Result<(), StorageError> {
        self.store.sync_durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_store(dir: &std::path::Path) -> MvccStore {
        crate::storage::open_for_tests(dir)
    }

    fn bytes(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    fn entries(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        (from..=to).map(|i| (i, bytes(i))).collect()
    }

    /// Every index stored for `log`, purged or not, in order.
    fn indexes(log: &RaftLog) -> Vec<u64> {
        let view = log.view().unwrap();
        let mut out = Vec::new();
        loop {
            let from = out.last().map_or(0, |i| i + 1);
            let page = view.entries(from, u64::MAX, MAX_LOG_READ_ENTRIES).unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page.into_iter().map(|(i, _)| i));
        }
    }

    /// The Raft keyspaces' format v1 as it lands on disk: keyspace names
    /// and keys, read back through fjall itself. An existing data directory
    /// must open, so these never change.
    #[test]
    fn frozen_keys_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let log = RaftLog::open(&store, 3).unwrap();
        log.append(&[(0x0102, vec![7])]).unwrap();
        log.put_state(RaftStateKey::Vote, &[8]).unwrap();
        log.put_state(RaftStateKey::Committed, &[9]).unwrap();
        log.put_state(RaftStateKey::Purged, &[10]).unwrap();
        let db = &store.inner.db;
        let raw = |name| {
            let ks = db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            ks.iter()
                .map(|g| {
                    let (k, v) = g.into_inner().unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            raw("raft_log"),
            vec![(
                vec![0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2],
                vec![7]
            )]
        );
        let range3 = [0, 0, 0, 0, 0, 0, 0, 3];
        let state_key = |tag: u8| [&range3[..], &[tag]].concat();
        assert_eq!(
            raw("raft_state"),
            vec![
                (state_key(b'c'), vec![9]),
                (state_key(b'p'), vec![10]),
                (state_key(b'v'), vec![8]),
            ]
        );
    }

    #[test]
    fn appended_entries_read_back_in_bounded_pages() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(&open_store(dir.path()), 1).unwrap();
        assert_eq!(log.last().unwrap(), None);
        log.append(&entries(1, 5)).unwrap();
        assert_eq!(log.entries(2, 4, 10).unwrap(), entries(2, 3));
        assert_eq!(log.entries(0, u64::MAX, 2).unwrap(), entries(1, 2));
        assert_eq!(log.entries(4, 2, 10).unwrap(), Vec::new(), "reversed");
        assert_eq!(log.last().unwrap(), Some((5, bytes(5))));
        // A page never exceeds the ceiling, whatever is asked.
        log.append(&entries(6, MAX_LOG_READ_ENTRIES as u64 + 10))
            .unwrap();
        let page = log.entries(0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(page.len(), MAX_LOG_READ_ENTRIES);
    }

    #[test]
    fn append_refuses_indexes_that_are_not_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let log = RaftLog::open(&store, 1).unwrap();
        let gap = vec![(1, bytes(1)), (3, bytes(3))];
        assert!(matches!(
            log.append(&gap),
            Err(StorageError::InvalidArgument { .. })
        ));
        let backwards = vec![(2, bytes(2)), (1, bytes(1))];
        assert!(log.append(&backwards).is_err());
        assert_eq!(indexes(&log), Vec::<u64>::new(), "nothing written");
        assert!(!store.is_poisoned(), "a refused argument does not poison");
    }

    /// The tail is removed newest first in bounded steps: after every
    /// step (where a crash could stop it) the log is a prefix of what it
    /// was, with no hole.
    #[test]
    fn truncating_the_tail_leaves_no_hole() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(&open_store(dir.path()), 1).unwrap();
        log.append(&entries(1, 20)).unwrap();
        let mut steps = 0;
        while log.truncate_step(8, 3).unwrap() {
            steps += 1;
            let left = indexes(&log);
            let last = *left.last().unwrap();
            assert!(last >= 7, "never below the truncation point");
            assert_eq!(left, (1..=last).collect::<Vec<_>>(), "a prefix");
        }
        assert_eq!(steps, 4, "13 entries in steps of 3: 4 with more left");
        assert_eq!(indexes(&log), (1..=7).collect::<Vec<_>>());
        // The public call removes the whole tail, and appending continues it.
        log.append(&entries(8, 12)).unwrap();
        log.truncate_from(10).unwrap();
        assert_eq!(indexes(&log), (1..=9).collect::<Vec<_>>());
        log.truncate_from(0).unwrap();
        assert_eq!(log.last().unwrap(), None);
    }

    /// Purge deletion is bounded per step, oldest first (the entries left
    /// are always a suffix), and says exactly whether entries remain.
    #[test]
    fn purge_steps_are_bounded_and_say_whether_more_remain() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(&open_store(dir.path()), 1).unwrap();
        log.append(&entries(1, 10)).unwrap();
        assert_eq!(log.purge_step(0, 7, 3).unwrap(), Some(4), "4..=7 remain");
        assert_eq!(indexes(&log), (4..=10).collect::<Vec<_>>());
        assert_eq!(log.purge_step(4, 7, 4).unwrap(), None, "exactly 4 left");
        assert_eq!(indexes(&log), (8..=10).collect::<Vec<_>>());
        assert_eq!(log.purge_step(0, 7, 1).unwrap(), None, "nothing to do");
        assert_eq!(log.purge_step(9, 7, 1).unwrap(), None, "empty span");
        assert!(matches!(
            log.purge_step(0, 7, 0),
            Err(StorageError::InvalidArgument { .. })
        ));
    }

    /// A purge step starts at `from`: entries below it are not its
    /// business (the caller deleted them in an earlier step), and the index
    /// it returns is the first entry it left.
    #[test]
    fn purge_steps_start_where_they_are_told() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(&open_store(dir.path()), 1).unwrap();
        log.append(&entries(1, 30)).unwrap();
        assert_eq!(log.purge_step(11, 25, 5).unwrap(), Some(16));
        assert_eq!(log.purge_step(16, 25, 100).unwrap(), None);
        let left: Vec<u64> = (1..=10).chain(26..=30).collect();
        assert_eq!(indexes(&log), left);
    }

    /// Ranges next to each other in key order (and the first and last
    /// range ids) share nothing: reads, truncation, purge and state of one
    /// never see or touch another's keys, even at the extreme indexes.
    #[test]
    fn keys_of_one_range_never_touch_another_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let ids = [0, 1, 2, u64::MAX];
        let logs: Vec<RaftLog> = ids
            .iter()
            .map(|&id| RaftLog::open(&store, id).unwrap())
            .collect();
        for log in &logs {
            log.append(&[(0, bytes(0))]).unwrap();
            log.append(&entries(1, 5)).unwrap();
            log.append(&[(u64::MAX, bytes(u64::MAX))]).unwrap();
            log.put_state(RaftStateKey::Vote, &log.range.to_be_bytes())
                .unwrap();
        }
        let middle = &logs[1];
        assert_eq!(middle.last().unwrap(), Some((u64::MAX, bytes(u64::MAX))));
        middle.truncate_from(3).unwrap();
        assert_eq!(middle.purge_step(0, 1, 100).unwrap(), None);
        middle.put_state(RaftStateKey::Vote, b"changed").unwrap();
        assert_eq!(indexes(middle), vec![2]);
        assert_eq!(middle.last().unwrap(), Some((2, bytes(2))));
        for log in logs.iter().filter(|l| l.range != 1) {
            // `indexes` reads `[0, u64::MAX)`; `last` shows the entry at MAX.
            assert_eq!(indexes(log), vec![0, 1, 2, 3, 4, 5], "range {}", log.range);
            assert_eq!(log.last().unwrap(), Some((u64::MAX, bytes(u64::MAX))));
            assert_eq!(
                log.state(RaftStateKey::Vote).unwrap(),
                Some(log.range.to_be_bytes().to_vec())
            );
        }
    }

    #[test]
    fn state_values_round_trip_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let log = RaftLog::open(&store, 1).unwrap();
        assert_eq!(log.state(RaftStateKey::Vote).unwrap(), None);
        log.put_state_durable(RaftStateKey::Vote, b"v1").unwrap();
        log.put_state(RaftStateKey::Committed, b"c1").unwrap();
        assert_eq!(log.state(RaftStateKey::Vote).unwrap(), Some(b"v1".to_vec()));
        assert_eq!(
            log.state(RaftStateKey::Committed).unwrap(),
            Some(b"c1".to_vec())
        );
        let big = vec![0; MAX_STATE_VALUE_BYTES + 1];
        assert!(matches!(
            log.put_state(RaftStateKey::Vote, &big),
            Err(StorageError::InvalidArgument { .. })
        ));
        assert!(!store.is_poisoned());
        assert_eq!(log.state(RaftStateKey::Vote).unwrap(), Some(b"v1".to_vec()));
    }

    /// Every write of the log path goes through storage's poison path: a
    /// failed commit poisons the store, and then every call of every range
    /// (reads included) and of the MVCC store is refused.
    #[test]
    fn a_failed_log_write_poisons_and_everything_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let log = RaftLog::open(&store, 1).unwrap();
        let other = RaftLog::open(&store, 2).unwrap();
        log.append(&entries(1, 3)).unwrap();
        store.fail_writes(true);
        assert!(matches!(
            log.append(&entries(4, 4)),
            Err(StorageError::Fjall(_))
        ));
        assert!(store.is_poisoned());
        store.fail_writes(false);
        let poisoned = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Poisoned));
        assert!(poisoned(log.append(&entries(4, 4))));
        assert!(poisoned(log.entries(0, 10, 10).map(drop)));
        assert!(poisoned(log.last().map(drop)));
        assert!(poisoned(log.truncate_from(2)));
        assert!(poisoned(log.purge_step(0, 2, 10).map(drop)));
        assert!(poisoned(log.state(RaftStateKey::Vote).map(drop)));
        assert!(poisoned(log.put_state(RaftStateKey::Vote, b"v")));
        assert!(poisoned(log.put_state_durable(RaftStateKey::Vote, b"v")));
        assert!(poisoned(log.persist()));
        assert!(poisoned(other.append(&entries(1, 1))));
        assert!(poisoned(RaftLog::open(&store, 3).map(drop)));
        assert!(poisoned(store.sync()));
    }

    /// A failed sync on the log path (the vote's fsync) poisons the store
    /// the same way, and the vote is not reported saved.
    #[test]
    fn a_failed_vote_sync_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let log = RaftLog::open(&store, 1).unwrap();
        store.fail_syncs(true);
        assert!(matches!(
            log.put_state_durable(RaftStateKey::Vote, b"v"),
            Err(StorageError::Fjall(_))
        ));
        assert!(store.is_poisoned());
        assert!(matches!(
            log.state(RaftStateKey::Vote),
            Err(StorageError::Poisoned)
        ));
    }
}
