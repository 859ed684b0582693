//! The Raft log and vote of every range group, through storage's
//! [`RaftLog`] (keyspaces `raft_log` and `raft_state` of the node's
//! database, sharing its ordered journal, durability point and poison flag
//! with the MVCC data). Storage owns every disk access and the key layout;
//! this module owns openraft's contract and the value format.
//!
//! Value format, version 1: `[1] ++ postcard(..)` of an `Entry`, a `Vote`,
//! or a `LogId` (committed: `Option<LogId>`); keys are storage's
//! (`be64(range) ++ be64(index)`, `be64(range) ++ tag`). Pinned with the
//! keys by `frozen_disk_format_v1` here and `frozen_keys_on_disk` in storage.
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
//! never lags the deleted entries. A read returns every entry of its range
//! from one point-in-time view, and refuses a hole inside the range.
//!
//! Appends are made durable off the Raft tasks by one [`LogSyncer`] thread
//! per node: `append` commits its batch to the journal (readable at once) and
//! hands the flush callback to the syncer, which fsyncs once for every
//! callback queued since its last fsync, across all range groups, and only
//! then completes them in the order they were queued. So a leader can send
//! entries to its followers while its own fsync runs, and concurrent groups
//! share fsyncs.
//!
//! Storage errors cross openraft's boundary as `io::Error`, with the
//! [`StorageError`] kept as the source: any write or sync failure has
//! already poisoned the store, and every later call is refused.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{RangeId, RangeTypes};
use crate::storage::{
    MvccStore, RaftLog, RaftLogView, RaftStateKey, StorageError, MAX_LOG_READ_ENTRIES,
    MAX_LOG_REMOVE_ENTRIES,
};

/// Format byte of every value in the Raft keyspaces.
const FORMAT_V1: u8 = 1;

type Entry = EntryOf<RangeTypes>;
type LogId = LogIdOf<RangeTypes>;
type Vote = VoteOf<RangeTypes>;

/// A storage failure on the way to openraft; `source` says what it means
/// for the store (`Poisoned`, `Corrupt`, ..).
#[derive(thiserror::Error, Debug)]
#[error("raft log store: {what}: {source}")]
struct LogStoreError {
    what: &'static str,
    #[source]
    source: StorageError,
}

/// Converts a storage error at openraft's boundary, keeping it as the source.
fn io_err(what: &'static str) -> impl FnOnce(StorageError) -> io::Error {
    move |source| io::Error::other(LogStoreError { what, source })
}

fn corrupt(what: String) -> io::Error {
    io_err("decode")(StorageError::Corrupt { what })
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let mut out = vec![FORMAT_V1];
    // Our own in-memory values always serialize; a failure is a bug.
    out.extend(
        postcard::to_allocvec(v)
            .map_err(|e| io::Error::other(format!("raft log store: encode: {e}")))?,
    );
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            postcard::from_bytes(body).map_err(|e| corrupt(format!("raft value: {e}")))
        }
        Some((v, _)) => Err(corrupt(format!("unknown raft value format {v}"))),
        None => Err(corrupt("empty raft value".to_string())),
    }
}

/// Decodes the entry stored at `index`, checking it is the entry of that
/// index (the paired check of `append`'s key).
fn decode_entry(index: u64, bytes: &[u8]) -> io::Result<Entry> {
    let entry: Entry = decode(bytes)?;
    if entry.log_id.index != index {
        return Err(corrupt(format!(
            "raft log entry {} stored at index {index}",
            entry.log_id.index
        )));
    }
    Ok(entry)
}

/// Makes appended log entries durable on a thread of its own (see the
/// module docs). Cheap to clone; the thread ends when the last clone (and so
/// every log store using it) is dropped.
#[derive(Clone)]
pub struct LogSyncer {
    tx: mpsc::Sender<Queued>,
}

/// A flush callback, and the span of the append it completes when that
/// append is part of a sampled trace (it ends once the fsync is done).
type Queued = (IOFlushed<RangeTypes>, Option<tracing::Span>);

impl LogSyncer {
    /// Starts the syncer thread of `store`'s database.
    pub fn start(store: &MvccStore) -> io::Result<LogSyncer> {
        let (tx, rx) = mpsc::channel::<Queued>();
        let store = store.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&store, &rx))?;
        Ok(LogSyncer { tx })
    }

    /// Queues `callback` to complete after the next fsync. If the thread is
    /// gone (it only stops when every sender is dropped, so never while a log
    /// store uses it), the callback fails rather than vanish.
    fn queue(&self, callback: IOFlushed<RangeTypes>, span: Option<tracing::Span>) {
        if let Err(mpsc::SendError((cb, _))) = self.tx.send((callback, span)) {
            cb.io_completed(Err(io::Error::other(
                "raft log store: fsync: log syncer thread stopped",
            )));
        }
    }
}

fn sync_loop(store: &MvccStore, rx: &mpsc::Receiver<Queued>) {
    // Blocks for the first callback; takes every other one already queued:
    // they were all committed to the journal before being queued, so one
    // fsync covers them.
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        let started = Instant::now();
        // One fsync serves every queued append: it shows in the first
        // traced append's trace.
        let fsync_span = pending
            .iter()
            .find_map(|(_, span)| span.as_ref())
            .map(|parent| {
                crate::trace_context::exported(|| {
                    tracing::debug_span!(parent: parent, "raft_log_fsync", appends = pending.len())
                })
            });
        let entered = fsync_span.as_ref().map(tracing::Span::enter);
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
        drop(entered);
        for (cb, _span) in pending {
            // io::Error is not Clone: each callback gets the message.
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(format!("raft log store: fsync: {e}"))),
            };
            cb.io_completed(r);
        }
    }
}

/// The sampled trace of the proposal `entry` carries, if this node
/// remembers one (see [`crate::trace_context`]).
fn recall_trace(range: RangeId, entry: &Entry) -> Option<crate::trace_context::TraceContext> {
    match &entry.payload {
        openraft::EntryPayload::Normal(cmd) => crate::trace_context::recall(range, cmd.proposed_at),
        _ => None,
    }
}

/// `[from, to)` of an openraft index range; `to` is `u64::MAX` for an open
/// end (index `u64::MAX` itself is never reached by a log).
fn index_span<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// The log of one range group. Cheap to clone (readers are clones).
#[derive(Clone)]
pub struct RangeLogStore {
    range: RangeId,
    log: RaftLog,
    syncer: LogSyncer,
    /// First index not purged (0: nothing purged); shared by the clones.
    first_kept: Arc<AtomicU64>,
    /// Every entry below this index is deleted (0 after open: a deletion a
    /// restart interrupted may have left any); where the next purge's
    /// deletion starts, so it never walks the tombstones of earlier ones.
    deleted_below: Arc<AtomicU64>,
}

impl RangeLogStore {
    /// Opens the log of `range` in `mvcc`'s database; `syncer` (one per
    /// node, started on the same store) makes its appends durable, through
    /// the store, which owns the poison flag.
    pub fn open(mvcc: &MvccStore, range: RangeId, syncer: LogSyncer) -> io::Result<RangeLogStore> {
        let log = RaftLog::open(mvcc, range).map_err(io_err("open"))?;
        let mut store = RangeLogStore {
            range,
            log,
            syncer,
            first_kept: Arc::new(AtomicU64::new(0)),
            deleted_below: Arc::new(AtomicU64::new(0)),
        };
        let purged: Option<LogId> = store.get_state(RaftStateKey::Purged)?;
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

    fn delete_up_to(&self, index: u64) -> Result<(), StorageError> {
        let mut from = self.deleted_below.load(Ordering::Acquire);
        while let Some(next) = self.log.purge_step(from, index, MAX_LOG_REMOVE_ENTRIES)? {
            from = next;
        }
        self.deleted_below
            .fetch_max(index.saturating_add(1), Ordering::AcqRel);
        Ok(())
    }

    fn first_kept(&self) -> u64 {
        self.first_kept.load(Ordering::Acquire)
    }

    fn get_state<T: DeserializeOwned>(&self, key: RaftStateKey) -> io::Result<Option<T>> {
        let raw = self.log.state(key).map_err(io_err("read state"))?;
        raw.map(|r| decode(&r)).transpose()
    }

    fn put_state<T: Serialize>(&self, key: RaftStateKey, value: &T) -> io::Result<()> {
        self.log
            .put_state(key, &encode(value)?)
            .map_err(io_err("write state"))
    }

    /// Up to a page of entries of `[from, to)` from `view`, decoded and
    /// checked. Callers raise `from` to the first kept index, read once per
    /// call: purged entries awaiting deletion are not part of the log.
    fn read_page(&self, view: &RaftLogView, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        let page = view
            .entries(from, to, MAX_LOG_READ_ENTRIES)
            .map_err(io_err("read entries"))?;
        let mut out: Vec<Entry> = Vec::with_capacity(page.len());
        for (index, bytes) in page {
            if let Some(prev) = out.last() {
                // Holes inside a range are never permitted (openraft's
                // `try_get_log_entries` contract).
                if prev.log_id.index + 1 != index {
                    return Err(corrupt(format!(
                        "raft log of range {} has a hole after index {}",
                        self.range, prev.log_id.index
                    )));
                }
            }
            out.push(decode_entry(index, &bytes)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<RangeTypes> for RangeLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = index_span(&range);
        // Every entry of the range, page by page from one view, so the
        // result is one state of the log even while the Raft task writes;
        // the floor is read once, so a purge meanwhile cannot open a gap
        // between two pages.
        let view = self.log.view().map_err(io_err("read entries"))?;
        let mut out: Vec<Entry> = Vec::new();
        let mut next = from.max(self.first_kept());
        loop {
            let page = self.read_page(&view, next, to)?;
            let full = page.len() == MAX_LOG_READ_ENTRIES;
            if let (Some(prev), Some(first)) = (out.last(), page.first()) {
                if prev.log_id.index + 1 != first.log_id.index {
                    return Err(corrupt(format!(
                        "raft log of range {} has a hole after index {}",
                        self.range, prev.log_id.index
                    )));
                }
            }
            out.extend(page);
            match out.last() {
                Some(last) if full => next = last.log_id.index + 1,
                _ => return Ok(out),
            }
        }
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        // One page: replication cuts AppendEntries further by bytes.
        let view = self.log.view().map_err(io_err("read entries"))?;
        self.read_page(&view, start.max(self.first_kept()), end)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_state(RaftStateKey::Vote)
    }
}

impl RaftLogStorage<RangeTypes> for RangeLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<RangeTypes>, io::Error> {
        let last_purged: Option<LogId> = self.get_state(RaftStateKey::Purged)?;
        let first_kept = self.first_kept();
        let last = match self.log.last().map_err(io_err("read last"))? {
            Some((index, bytes)) if index >= first_kept => {
                Some(decode_entry(index, &bytes)?.log_id)
            }
            _ => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Durable before returning: a vote must never be forgotten after a crash.
        self.log
            .put_state_durable(RaftStateKey::Vote, &encode(vote)?)
            .map_err(io_err("save vote"))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: losing it only means re-applying from an earlier point.
        self.put_state(RaftStateKey::Committed, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .get_state::<Option<LogId>>(RaftStateKey::Committed)?
            .flatten())
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
        let mut traced = None;
        let encoded = entries
            .into_iter()
            .map(|e| {
                if traced.is_none() {
                    traced = recall_trace(self.range, &e);
                }
                Ok((e.log_id.index, encode(&e)?))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let span = traced.map(|parent| {
            crate::trace_context::entry_span(Some(parent), || {
                tracing::debug_span!(
                    "raft_log_append",
                    range = self.range,
                    entries = encoded.len()
                )
            })
        });
        let entered = span.as_ref().map(tracing::Span::enter);
        self.log.append(&encoded).map_err(io_err("append"))?;
        drop(entered);
        // Readable now; acknowledged once the syncer's fsync made it durable.
        self.syncer.queue(callback, span);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        // Newest first (storage), so a crash part-way only shortens the tail.
        self.log.truncate_from(from).map_err(io_err("truncate"))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Deleting a snapshot's worth of entries (100,000 by default) here
        // would stall this group's Raft task: record the marker, hide the
        // entries, and delete them in the background. The marker is in the
        // journal before any deletion (one ordered journal).
        self.put_state(RaftStateKey::Purged, &log_id)?;
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
        assert_refuses_everything(&mut store).await;
    }

    /// Whether `err` is storage's refusal of a poisoned store.
    fn is_poisoned(err: &io::Error) -> bool {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<LogStoreError>())
            .is_some_and(|e| matches!(e.source, StorageError::Poisoned))
    }

    /// Every call of the log store, reads included, is refused as poisoned.
    async fn assert_refuses_everything(store: &mut RangeLogStore) {
        let (tx, _rx) = RangeTypes::oneshot();
        let append = store
            .append(
                vec![blank_ent::<RangeTypes>(1, 1, 9)],
                IOFlushed::signal(tx),
            )
            .await;
        assert!(is_poisoned(&append.unwrap_err()), "append");
        let read = store.try_get_log_entries(0..10).await;
        assert!(is_poisoned(&read.unwrap_err()), "try_get_log_entries");
        let limited = store.limited_get_log_entries(0, 10).await;
        assert!(
            is_poisoned(&limited.unwrap_err()),
            "limited_get_log_entries"
        );
        assert!(
            is_poisoned(&store.read_vote().await.unwrap_err()),
            "read_vote"
        );
        let state = store.get_log_state().await;
        assert!(is_poisoned(&state.unwrap_err()), "get_log_state");
        let committed = store.save_committed(None).await;
        assert!(is_poisoned(&committed.unwrap_err()), "save_committed");
        let truncate = store.truncate_after(None).await;
        assert!(is_poisoned(&truncate.unwrap_err()), "truncate_after");
        let purge = store.purge(log_id::<RangeTypes>(1, 1, 1)).await;
        assert!(is_poisoned(&purge.unwrap_err()), "purge");
    }

    /// Issue 8: a failed write on the log path (the append's batch commit,
    /// injected below fjall's commit in storage) fails the append, poisons
    /// the store, and from then on the log store and the MVCC store refuse
    /// every call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_log_write_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 3, syncer).unwrap();
        append_flushed(&mut store, vec![blank_ent::<RangeTypes>(1, 1, 1)]).await;
        mvcc.fail_writes(true);
        let (tx, rx) = RangeTypes::oneshot();
        let err = store
            .append(
                vec![blank_ent::<RangeTypes>(1, 1, 2)],
                IOFlushed::signal(tx),
            )
            .await
            .unwrap_err();
        assert!(!is_poisoned(&err), "the failure itself is reported: {err}");
        assert!(rx.await.is_err(), "no flush is ever reported for it");
        assert!(mvcc.is_poisoned(), "the store is poisoned");
        mvcc.fail_writes(false);
        assert_refuses_everything(&mut store).await;
        assert!(matches!(mvcc.sync(), Err(StorageError::Poisoned)));
    }

    /// The Raft keyspaces' value format v1, pinned: a data directory
    /// written by an earlier build must open. (The keys are storage's,
    /// pinned by `storage::raft_log`'s `frozen_keys_on_disk`.)
    #[test]
    fn frozen_disk_format_v1() {
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

    /// Entries stored for the range, purged ones awaiting deletion included.
    fn stored_keys(store: &RangeLogStore) -> usize {
        let view = store.log.view().unwrap();
        let (mut n, mut from) = (0, 0);
        loop {
            let page = view.entries(from, u64::MAX, MAX_LOG_READ_ENTRIES).unwrap();
            match page.last() {
                Some((last, _)) => from = last + 1,
                None => return n,
            }
            n += page.len();
        }
    }

    /// What `append` stores is exactly the pinned value bytes, under the
    /// entry's index, and what a reader returns decodes from them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_entries_are_stored_in_format_v1() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 3, syncer).unwrap();
        append_flushed(&mut store, vec![blank_ent::<RangeTypes>(2, 1, 5)]).await;
        let stored = RaftLog::open(&mvcc, 3).unwrap().entries(0, 10, 10).unwrap();
        assert_eq!(stored, vec![(5, vec![1, 2, 1, 5, 0])]);
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        let raw_vote = RaftLog::open(&mvcc, 3)
            .unwrap()
            .state(RaftStateKey::Vote)
            .unwrap();
        assert_eq!(raw_vote, Some(vec![1, 2, 1, 0]));
    }

    /// A read of a range spanning several storage pages returns every
    /// entry, in order (openraft's `try_get_log_entries` must not stop
    /// early), while `limited_get_log_entries` returns one page.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_return_every_entry_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 4, syncer).unwrap();
        let n = 2 * MAX_LOG_READ_ENTRIES as u64 + 10;
        let entries: Vec<Entry> = (1..=n).map(|i| blank_ent::<RangeTypes>(1, 1, i)).collect();
        append_flushed(&mut store, entries).await;
        let got = store.try_get_log_entries(3..=n).await.unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (3..=n).collect::<Vec<_>>());
        let page = store.limited_get_log_entries(1, n + 1).await.unwrap();
        assert_eq!(page.len(), MAX_LOG_READ_ENTRIES);
        assert_eq!(page.first().map(|e| e.log_id.index), Some(1));
        assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
    }

    /// A hole inside a read range is refused, not skipped (openraft's
    /// `try_get_log_entries` contract); the store is not poisoned by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hole_in_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = test_store(dir.path());
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 5, syncer).unwrap();
        append_flushed(&mut store, vec![blank_ent::<RangeTypes>(1, 1, 1)]).await;
        // Written behind the log store's back, leaving index 2 missing.
        let raw = RaftLog::open(&mvcc, 5).unwrap();
        raw.append(&[(3, encode(&blank_ent::<RangeTypes>(1, 1, 3)).unwrap())])
            .unwrap();
        let err = store.try_get_log_entries(1..4).await.unwrap_err();
        assert!(err.to_string().contains("hole"), "{err}");
        assert!(!mvcc.is_poisoned());
    }

    /// A store with range 7's log holding entries `1..=last`, flushed.
    async fn range_7_with_entries(
        dir: &std::path::Path,
        last: u64,
    ) -> (MvccStore, LogSyncer, RangeLogStore) {
        let mvcc = test_store(dir);
        let syncer = LogSyncer::start(&mvcc).unwrap();
        let mut store = RangeLogStore::open(&mvcc, 7, syncer.clone()).unwrap();
        let entries: Vec<Entry> = (1..=last)
            .map(|i| blank_ent::<RangeTypes>(1, 1, i))
            .collect();
        append_flushed(&mut store, entries).await;
        (mvcc, syncer, store)
    }

    /// Each purge's deletion starts where the last one ended, not at index
    /// 0: the tombstones an LSM keeps for deleted entries until compaction
    /// are never walked again (walking them made every purge step cost as
    /// much as all earlier purges together). Shown by an entry planted
    /// below the first purge point after its deletion: the second purge
    /// does not visit it. After a reopen the first deletion starts at 0
    /// (a deletion cut short by the restart may have left entries).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_purge_deletes_from_where_the_last_one_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (mvcc, syncer, store) = range_7_with_entries(dir.path(), 300).await;

        store.delete_up_to(100).unwrap();
        assert_eq!(store.deleted_below.load(Ordering::Acquire), 101);
        assert_eq!(stored_keys(&store), 200);
        store.log.append(&[(5, b"planted".to_vec())]).unwrap();
        store.delete_up_to(200).unwrap();
        assert_eq!(store.deleted_below.load(Ordering::Acquire), 201);
        assert_eq!(
            stored_keys(&store),
            101,
            "entries 201..=300 and the planted 5"
        );

        let reopened = RangeLogStore::open(&mvcc, 7, syncer).unwrap();
        reopened.delete_up_to(200).unwrap();
        assert_eq!(stored_keys(&reopened), 100, "a reopened store starts at 0");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purged_entries_vanish_at_once_and_are_deleted_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let (mvcc, syncer, mut store) = range_7_with_entries(dir.path(), 25_000).await;

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
