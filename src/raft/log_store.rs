//! The Raft log and vote of every range group, in two fjall keyspaces of the
//! node's database (so they share its ordered journal with the MVCC data).
//!
//! Disk format, version 1:
//! - `raft_log`: key `be64(range) ++ be64(index)`, value `[1] ++ postcard(Entry)`.
//! - `raft_state`: key `be64(range) ++ tag` (`v` vote, `c` committed,
//!   `p` last purged), value `[1] ++ postcard(..)`.
//!
//! Rules from openraft's storage contract (`RaftLogStorage` docs): writes
//! take effect in call order (one ordered journal gives that); `save_vote`
//! is durable before it returns; appended entries are readable when
//! `append` returns and the flush callback fires only once they are durable;
//! `truncate_after` removes from the tail so no hole can appear; `purge`
//! records the last purged id, and from then on readers see the log start
//! after it (so no hole can appear either) while a blocking task deletes the
//! purged entries, lowest first, in bounded batches. The marker is committed
//! to the journal before any of those deletions, so after a crash the marker
//! never lags the deleted entries.
//!
//! Appends are made durable off the Raft tasks by one [`LogSyncer`] thread
//! per node: `append` commits its batch to the journal (readable at once) and
//! hands the flush callback to the syncer, which fsyncs once for every
//! callback queued since its last fsync, across all range groups, and only
//! then completes them in the order they were queued. So a leader can send
//! entries to its followers while its own fsync runs, and concurrent groups
//! share fsyncs.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{RangeId, RangeTypes};
use crate::storage::MvccStore;

/// Format byte of every value in the Raft keyspaces.
const FORMAT_V1: u8 = 1;
const LOG_KEYSPACE: &str = "raft_log";
const STATE_KEYSPACE: &str = "raft_state";
const TAG_VOTE: u8 = b'v';
const TAG_COMMITTED: u8 = b'c';
const TAG_PURGED: u8 = b'p';
/// Purged entries deleted per batch by the background deletion.
const PURGE_BATCH: usize = 10_000;

type Entry = EntryOf<RangeTypes>;
type LogId = LogIdOf<RangeTypes>;
type Vote = VoteOf<RangeTypes>;

fn io_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("raft log store: {what}: {e}"))
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_allocvec(v).map_err(|e| io_err("encode", e))?);
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| io_err("decode", e)),
        Some((v, _)) => Err(io_err("decode", format!("unknown record format {v}"))),
        None => Err(io_err("decode", "empty record")),
    }
}

fn log_key(range: RangeId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&range.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn state_key(range: RangeId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&range.to_be_bytes());
    k[8] = tag;
    k
}

/// Makes appended log entries durable on a thread of its own (see the
/// module docs). Cheap to clone; the thread ends when the last clone (and so
/// every log store using it) is dropped.
#[derive(Clone)]
pub struct LogSyncer {
    tx: mpsc::Sender<IOFlushed<RangeTypes>>,
}

impl LogSyncer {
    /// Starts the syncer thread of `store`'s database.
    pub fn start(store: &MvccStore) -> io::Result<LogSyncer> {
        let (tx, rx) = mpsc::channel::<IOFlushed<RangeTypes>>();
        let store = store.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&store, &rx))?;
        Ok(LogSyncer { tx })
    }

    /// Queues `callback` to complete after the next fsync. If the thread is
    /// gone (it only stops when every sender is dropped, so never while a log
    /// store uses it), the callback fails rather than vanish.
    fn queue(&self, callback: IOFlushed<RangeTypes>) {
        if let Err(mpsc::SendError(cb)) = self.tx.send(callback) {
            cb.io_completed(Err(io_err("fsync", "log syncer thread stopped")));
        }
    }
}

fn sync_loop(store: &MvccStore, rx: &mpsc::Receiver<IOFlushed<RangeTypes>>) {
    // Blocks for the first callback; takes every other one already queued:
    // they were all committed to the journal before being queued, so one
    // fsync covers them.
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        let started = Instant::now();
        // Through storage, which poisons the store (and so turns /ready to
        // 503) when the fsync fails: a node that cannot make its log durable
        // must stop acknowledging anything.
        let result = store.sync_durable();
        metrics::histogram!("meridian_raft_log_sync_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("meridian_raft_log_sync_appends").record(pending.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log fsync failed");
        }
        for cb in pending {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io_err("fsync", e)),
            };
            cb.io_completed(r);
        }
    }
}

/// The log of one range group. Cheap to clone (readers are clones).
#[derive(Clone)]
pub struct RangeLogStore {
    range: RangeId,
    store: MvccStore,
    db: Database,
    log: Keyspace,
    state: Keyspace,
    syncer: LogSyncer,
    /// First index not purged (0: nothing purged); shared by the clones.
    first_kept: Arc<AtomicU64>,
}

impl RangeLogStore {
    /// Opens the log of `range` in the keyspaces of `mvcc`'s database;
    /// `syncer` (one per node, started on the same store) makes its appends
    /// durable, through the store, which owns the poison flag.
    pub fn open(mvcc: &MvccStore, range: RangeId, syncer: LogSyncer) -> io::Result<RangeLogStore> {
        let db = mvcc.database();
        let log = db
            .keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| io_err("open log keyspace", e))?;
        let state = db
            .keyspace(STATE_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| io_err("open state keyspace", e))?;
        let mut store = RangeLogStore {
            range,
            store: mvcc.clone(),
            db: db.clone(),
            log,
            state,
            syncer,
            first_kept: Arc::new(AtomicU64::new(0)),
        };
        let purged: Option<LogId> = store.get_state(TAG_PURGED)?;
        if let Some(p) = purged {
            store.first_kept = Arc::new(AtomicU64::new(p.index + 1));
            // Finish a deletion a restart interrupted.
            store.delete_purged(p.index);
        }
        Ok(store)
    }

    /// Deletes the entries up to `index` on a blocking thread (see the
    /// module docs). Entries left behind by a failure are invisible to
    /// readers and retried at the next purge or restart.
    fn delete_purged(&self, index: u64) {
        let this = self.clone();
        let work = move || {
            if let Err(e) = this.delete_up_to(index) {
                tracing::warn!(range = this.range, error = %e, "deleting purged raft log entries failed; retried at the next purge");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }

    fn delete_up_to(&self, index: u64) -> io::Result<()> {
        let bounds = self.index_bounds(&(..=index));
        loop {
            let mut batch = self.db.batch();
            let mut n = 0;
            for guard in self.log.range(bounds).take(PURGE_BATCH) {
                batch.remove(&self.log, guard.key().map_err(|e| io_err("purge scan", e))?);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            batch.commit().map_err(|e| io_err("purge", e))?;
        }
    }

    fn first_kept(&self) -> u64 {
        self.first_kept.load(Ordering::Acquire)
    }

    fn get_state<T: DeserializeOwned>(&self, tag: u8) -> io::Result<Option<T>> {
        let raw = self
            .state
            .get(state_key(self.range, tag))
            .map_err(|e| io_err("read state", e))?;
        raw.map(|r| decode(&r)).transpose()
    }

    fn index_bounds<RB: RangeBounds<u64>>(&self, range: &RB) -> (Bound<[u8; 16]>, Bound<[u8; 16]>) {
        let lower = match range.start_bound() {
            Bound::Included(i) => Bound::Included(log_key(self.range, *i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(self.range, *i)),
            Bound::Unbounded => Bound::Included(log_key(self.range, 0)),
        };
        let upper = match range.end_bound() {
            Bound::Included(i) => Bound::Included(log_key(self.range, *i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(self.range, *i)),
            Bound::Unbounded => Bound::Included(log_key(self.range, u64::MAX)),
        };
        (lower, upper)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let (lower, upper) = self.index_bounds(&(..));
        match self.log.range((lower, upper)).next_back() {
            None => Ok(None),
            Some(guard) => {
                let (_, value) = guard.into_inner().map_err(|e| io_err("read last", e))?;
                decode(&value).map(Some)
            }
        }
    }

    fn persist(&self) -> io::Result<()> {
        self.store.sync_durable().map_err(|e| io_err("fsync", e))
    }
}

/// openraft asks for ranges like `start..end`; a reversed range is empty.
fn is_empty_range<RB: RangeBounds<u64>>(range: &RB) -> bool {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(s), Bound::Excluded(e)) => s >= e,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s.saturating_add(1) >= *e,
        (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

impl RaftLogReader<RangeTypes> for RangeLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        // Purged entries awaiting deletion are not part of the log.
        let (mut lower, upper) = self.index_bounds(&range);
        let floor = log_key(self.range, self.first_kept());
        if let Bound::Included(k) | Bound::Excluded(k) = &lower {
            if *k < floor {
                lower = Bound::Included(floor);
            }
        }
        let mut out = Vec::new();
        for guard in self.log.range((lower, upper)) {
            let (_, value) = guard.into_inner().map_err(|e| io_err("read entries", e))?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_state(TAG_VOTE)
    }
}

impl RaftLogStorage<RangeTypes> for RangeLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<RangeTypes>, io::Error> {
        let last_purged: Option<LogId> = self.get_state(TAG_PURGED)?;
        let first_kept = self.first_kept();
        let last = self
            .last_entry()?
            .map(|e| e.log_id)
            .filter(|id| id.index >= first_kept)
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.state
            .insert(state_key(self.range, TAG_VOTE), encode(vote)?)
            .map_err(|e| io_err("save vote", e))?;
        // Durable before returning: a vote must never be forgotten after a crash.
        self.persist()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: losing it only means re-applying from an earlier point.
        self.state
            .insert(state_key(self.range, TAG_COMMITTED), encode(&committed)?)
            .map_err(|e| io_err("save committed", e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_state::<Option<LogId>>(TAG_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<RangeTypes>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.db.batch();
        for entry in entries {
            batch.insert(
                &self.log,
                log_key(self.range, entry.log_id.index),
                encode(&entry)?,
            );
        }
        batch.commit().map_err(|e| io_err("append", e))?;
        // Readable now; acknowledged once the syncer's fsync made it durable.
        self.syncer.queue(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let bounds = self.index_bounds(&(from..));
        let mut keys = Vec::new();
        for guard in self.log.range(bounds) {
            keys.push(guard.key().map_err(|e| io_err("truncate scan", e))?);
        }
        let mut batch = self.db.batch();
        // Newest first, so a partial removal could only shorten the tail.
        for key in keys.into_iter().rev() {
            batch.remove(&self.log, key);
        }
        batch.commit().map_err(|e| io_err("truncate", e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Deleting a snapshot's worth of entries (100,000 by default) here
        // would stall this group's Raft task: record the marker, hide the
        // entries, and delete them in the background.
        self.state
            .insert(state_key(self.range, TAG_PURGED), encode(&log_id)?)
            .map_err(|e| io_err("purge", e))?;
        self.first_kept
            .fetch_max(log_id.index + 1, Ordering::AcqRel);
        self.delete_purged(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use openraft::testing::{blank_ent, log_id};
    use openraft::type_config::TypeConfigExt;

    use super::*;

    async fn append_flushed(store: &mut RangeLogStore, entries: Vec<Entry>) {
        let (tx, rx) = RangeTypes::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    fn test_store(dir: &std::path::Path) -> MvccStore {
        MvccStore::open(crate::storage::StoreOptions {
            path: dir.to_path_buf(),
            fsync: crate::storage::FsyncPolicy::Always,
            cache_bytes: 1 << 20,
        })
        .unwrap()
    }

    /// Issue 8 item 10: a failed log fsync fails the appends it covered and
    /// poisons the store, which is what /ready reports (503) and every later
    /// storage call refuses with MER-3001.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_log_fsync_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 3, syncer).unwrap();
        append_flushed(&mut store, vec![blank_ent::<RangeTypes>(1, 1, 1)]).await;
        assert!(!mvcc.is_poisoned());
        mvcc.fail_syncs(true);
        let (tx, rx) = RangeTypes::oneshot();
        store
            .append(
                vec![blank_ent::<RangeTypes>(1, 1, 2)],
                IOFlushed::signal(tx),
            )
            .await
            .unwrap();
        let flushed = rx.await.unwrap();
        assert!(flushed.is_err(), "the append is not reported durable");
        assert!(mvcc.is_poisoned(), "the store is poisoned");
        mvcc.fail_syncs(false);
        let vote = openraft::Vote::new(2, 1);
        assert!(
            store.save_vote(&vote).await.is_err(),
            "a poisoned store syncs nothing"
        );
        assert_eq!(
            mvcc.get(b"k", crate::types::Timestamp::MAX)
                .unwrap_err()
                .code(),
            crate::error_code::ErrorCode::StorageFailure
        );
    }

    /// The Raft keyspaces' format v1, pinned: a data directory written by
    /// an earlier build must open. Keys are `be64(range) ++ be64(index)` and
    /// `be64(range) ++ tag`; values are the format byte then postcard.
    #[test]
    fn frozen_disk_format_v1() {
        assert_eq!(
            log_key(3, 0x0102),
            [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(state_key(3, TAG_VOTE), [0, 0, 0, 0, 0, 0, 0, 3, b'v']);
        assert_eq!(state_key(3, TAG_COMMITTED)[8], b'c');
        assert_eq!(state_key(3, TAG_PURGED)[8], b'p');
        // Values: FORMAT_V1, then postcard of openraft's types (whose layout
        // is why openraft is pinned exactly) or of our RangeCommand.
        let entry = blank_ent::<RangeTypes>(2, 1, 5);
        assert_eq!(encode(&entry).unwrap(), [1, 2, 1, 5, 0]);
        let vote = Vote::new(2, 1);
        assert_eq!(encode(&vote).unwrap(), [1, 2, 1, 0]);
        let committed = Some(log_id::<RangeTypes>(2, 1, 5));
        assert_eq!(encode(&committed).unwrap(), [1, 1, 2, 1, 5]);
        let cmd = crate::raft::types::RangeCommand {
            proposed_at: 300,
            op: crate::raft::types::CommandV1::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        };
        let normal = Entry {
            log_id: log_id::<RangeTypes>(2, 1, 6),
            payload: openraft::EntryPayload::Normal(cmd),
        };
        let bytes = encode(&normal).unwrap();
        assert_eq!(bytes, [1, 2, 1, 6, 1, 0xac, 0x02, 0, 1, b'k', 1, b'v']);
        let back: Entry = decode(&bytes).unwrap();
        assert_eq!(back.log_id, normal.log_id);
        assert!(
            decode::<Entry>(&[2, 2, 1, 5, 0]).is_err(),
            "unknown format byte"
        );
    }

    fn stored_keys(store: &RangeLogStore) -> usize {
        store.log.range(store.index_bounds(&(..))).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purged_entries_vanish_at_once_and_are_deleted_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 7, syncer.clone()).unwrap();
        let entries: Vec<Entry> = (1..=25_000)
            .map(|i| blank_ent::<RangeTypes>(1, 1, i))
            .collect();
        append_flushed(&mut store, entries).await;

        store
            .purge(log_id::<RangeTypes>(1, 1, 20_000))
            .await
            .unwrap();
        // Readers see the log start right after the purge point, with no hole.
        let got = store.try_get_log_entries(0..25_001).await.unwrap();
        assert_eq!(got.first().map(|e| e.log_id.index), Some(20_001));
        assert_eq!(got.len(), 5_000);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(20_000));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(25_000));

        // The purged entries are deleted in the background (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored_keys(&store) > 5_000 {
            assert!(
                Instant::now() < deadline,
                "purged entries were never deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Purging everything leaves the purge point as the last log id, and a
        // reopened store agrees.
        store
            .purge(log_id::<RangeTypes>(1, 1, 25_000))
            .await
            .unwrap();
        let mut reopened = RangeLogStore::open(&mvcc, 7, syncer).unwrap();
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(25_000));
        assert!(reopened
            .try_get_log_entries(0..25_001)
            .await
            .unwrap()
            .is_empty());
    }
}
