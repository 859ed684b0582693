//! MVCC key-value storage on fjall, and every other disk access of the
//! node's database.
//!
//! [`MvccStore`] keeps every version of every key, stamped with the HLC
//! timestamp of its write, until garbage collection drops the versions no
//! snapshot at or above the gc horizon can see. [`RaftLog`] (`raft_log.rs`)
//! keeps the Raft log and state of every range group, as bytes, in two more
//! keyspaces of the same database, so they share its ordered journal. The
//! storage layer owns the disk formats (`encoding`, and the Raft keys in
//! `raft_log`), durability ([`FsyncPolicy`]) and the poison flag: every
//! batch of the node is committed and every sync made through one pair of
//! functions (`commit`, `persist`) that poison on failure, and nothing
//! outside this module opens a keyspace. It does not own timestamps,
//! validation of user requests, Raft's rules or scheduling: the engine
//! stamps writes, checks request limits and decides when to sync and gc;
//! `raft::log_store` encodes the Raft values and keeps openraft's contract.
//!
//! **Invariant:** once `sync` returns `Ok`, every batch applied before it
//! survives a process crash (and, with [`FsyncPolicy::Always`], power loss).
//! **Invariant:** a read at or above the gc horizon sees exactly what it saw
//! before gc; a read below it fails with [`StorageError::Compacted`]. The
//! horizon is store-wide (a single node), or, once [`MvccStore::set_gc_spans`]
//! registered a region's ranges, one per range: each range is collected at a
//! horizon its owner keeps below that range's applied timestamp
//! (docs/consistency.md G8), so an idle range stays readable.
//! **Invariant:** after a failed write or sync (MVCC data, metadata or Raft
//! log alike) the store is poisoned and refuses every further call, reads
//! and the Raft log's included (fjall `src/poison.rs`; Rebello et al.,
//! "Can Applications Recover from fsync Failures?", ATC '20).

pub mod changes;
pub mod coord;
mod encoding;
mod mvcc;
mod raft_log;
mod span_scan;

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::error_code::ErrorCode;
use crate::limits;
use crate::types::{KeyValue, Op, Timestamp, VersionEntry};
use mvcc::{RawEntry, VersionSource};
pub use raft_log::{
    RaftLog, RaftLogView, RaftStateKey, MAX_LOG_READ_ENTRIES, MAX_LOG_REMOVE_ENTRIES,
    MAX_STATE_VALUE_BYTES,
};
pub use span_scan::{
    SpanPageLimits, SpanResume, SpanVersions, MAX_SPAN_PAGE_VERSIONS, SPAN_VISIT_BUDGET,
};

/// fjall keyspace holding one entry per version (format: `encoding`).
const DATA_KEYSPACE: &str = "mvcc_data";

/// Memtable size of the data keyspace: fjall's default, so a working set
/// of up to 64 MiB of recent versions is read from memory. With 16 MiB the
/// read rows of benches/compare_etcd_region.sh that follow its put rows
/// read every key from two or three flushed tables as well (a point read is
/// a range seek in every table its key may lie in), about 20 us more per
/// read at 1 client (docs/benchmarks.md, "Reads after puts"). Fixed when the
/// keyspace is created. Bulk writes do not wait for this size to seal a
/// memtable: see [`BULK_MEMTABLE_BYTES`].
pub const DATA_MEMTABLE_BYTES: u64 = 64 * 1024 * 1024;

/// A bulk write (a Raft snapshot install, [`MvccStore::insert_versions`])
/// seals the data memtable after every this many bytes (8 MiB: measured
/// against 16 MiB in docs/benchmarks.md) and waits until it
/// is flushed before it writes more: an install writes faster than fjall
/// flushes, and every sealed memtable waiting for its flush stays in memory,
/// so without this a node installing a 300 MB range grew by far more than
/// 100 MB (docs/benchmarks.md, "Snapshot streaming").
pub const BULK_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
const _: () = assert!(BULK_MEMTABLE_BYTES < DATA_MEMTABLE_BYTES);

/// Target size of the data keyspace's tables (fjall's default is 64 MiB).
/// A compaction holds in memory every source block it has written to its
/// current output table until that table is finished (lsm-tree's table
/// writer keeps each block's last key, a view into the source block), so a
/// compaction's memory is about one output table: with 64 MiB tables a
/// follower installing a 300 MB snapshot held 66 MB in one merge
/// (heaptrack, docs/benchmarks.md "Snapshot streaming"). The writer rolls
/// to a new table by its compressed size, so data blocks are stored
/// uncompressed: with fjall's default (LZ4 from level 2) a merge into level
/// 2 of well-compressing values held 84 MB of decompressed blocks for one
/// 16 MiB table. Both are fixed when the keyspace is created; stores created
/// before keep theirs.
pub const DATA_TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// A bulk write also waits, after each flush, until the data keyspace's
/// level 0 holds at most this many tables. fjall merges every level-0 table
/// in one compaction and lets level 0 grow to 20 tables before it slows
/// writers; each table merged holds its current block in memory, and with
/// values near 1 MiB a block is one value, so a merge of 20 tables held
/// 67 MB (heaptrack, docs/benchmarks.md "Snapshot streaming"). Four is
/// fjall's level-0 compaction trigger: compaction starts as soon as the
/// install waits.
pub const BULK_L0_TABLES: usize = 4;

/// Longest a bulk write waits for its sealed memtable's flush and level 0's
/// compaction before it goes on anyway (that slow is a disk problem the
/// write path reports on its own; the install stays correct, only its
/// memory bound is lost).
const BULK_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// fjall keyspace holding the format marker, gc horizon and named metadata.
const META_KEYSPACE: &str = "mvcc_meta";

/// fjall keyspace of the latest-version index: user key -> a timestamp
/// never below the key's newest stored version (format: `encoding`). A
/// point read looks its key up here and then reads that exact version,
/// two point lookups fjall answers through its bloom filters; a read
/// through a range iterator instead opens every overlapping table level by
/// level and checks no bloom filter (docs/benchmarks.md, "Stop 27").
const LATEST_KEYSPACE: &str = "mvcc_latest";

/// Memtable size of the latest-version index. Its entries are small (a
/// key and 9 bytes), and every write rewrites its key's entry, so fjall's
/// 64 MiB default would hold about a million of them - as much memory
/// again as the data memtable, and a deeper skiplist for every insert (a
/// random insert is a walk of cache misses: on a fresh region the index's
/// inserts cost as much CPU as the data's). 4 MiB (about 40,000 entries)
/// measured ahead of 16 MiB in interleaved pairs, for puts (1.06 at 16
/// and 64 clients) and reads (1.10 at 64 clients; a smaller memtable is
/// also faster to search); older entries are read from tables through
/// bloom filters. Fixed when the keyspace is created (a store keeps the
/// size it was created with).
pub const LATEST_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// How far above the top version its persisted bound is set, in HLC units
/// (one second: hlc-gen's low 22 bits are the logical counter). The bound
/// is rewritten about once a second of writes instead of in every batch;
/// after a restart, writes below the reloaded bound read their index entry
/// first until the clock passes it.
const TOP_VERSION_AHEAD: u64 = 1_000 << 22;

/// Index entries one batch of the format migration writes
/// ([`MvccStore::open`] of a format 1 store).
const MIGRATE_BATCH_KEYS: usize = 10_000;

/// Most records one [`MvccStore::apply_batch`] accepts: one group commit.
pub const MAX_BATCH_RECORDS: usize = limits::MAX_GROUP_COMMIT;
/// Most operations one [`WriteRecord`] may carry: one transaction.
pub const MAX_RECORD_OPS: usize = limits::HARD_MAX_TXN_OPS;
/// Most key plus value bytes one [`WriteRecord`] may carry: one request.
pub const MAX_RECORD_BYTES: usize = limits::HARD_MAX_REQUEST_BYTES;
/// Most versions one [`MvccStore::gc`] call removes, whatever the caller asks;
/// the removals are held in memory and committed as one batch.
pub const MAX_GC_VERSIONS_PER_CALL: usize = 10 * limits::GC_BATCH_VERSIONS;
/// Longest metadata name in bytes.
pub const MAX_META_NAME_BYTES: usize = 128;
/// Largest metadata value in bytes; metadata is small (marks, ids).
pub const MAX_META_VALUE_BYTES: usize = 64 * 1024;

/// When [`MvccStore::sync`] makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsyncPolicy {
    /// `sync` fsyncs the journal (fjall `PersistMode::SyncAll`) and the Raft
    /// log's durability point fdatasyncs it (`PersistMode::SyncData`, as
    /// etcd does its WAL: the journal's size is fixed and fsynced when fjall
    /// creates it, and fdatasync still flushes the block allocation a write
    /// needs, so only timestamps are skipped): acknowledged writes survive
    /// process crashes and power loss.
    Always,
    /// `sync` only flushes the journal to OS buffers (`PersistMode::Buffer`):
    /// acknowledged writes survive a process crash but may be lost on power
    /// loss or kernel crash. For tests and benchmarks, or replicated
    /// deployments that accept losing a node's tail.
    Never,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Directory of the fjall database; created if missing.
    pub path: PathBuf,
    /// Durability of [`MvccStore::sync`].
    pub fsync: FsyncPolicy,
    /// Block cache size in bytes.
    pub cache_bytes: u64,
}

/// Errors of the storage boundary.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    /// fjall failed (I/O or internal error). If it happened on a write or
    /// sync the store is now poisoned; on a read it is not.
    #[error("storage engine: {0}")]
    Fjall(#[source] fjall::Error),
    /// Bytes on disk do not decode: written by a newer build or damaged.
    /// The read is refused; the store is not changed.
    #[error("corrupt or unsupported data on disk: {what}")]
    Corrupt {
        /// What was found and where.
        what: String,
    },
    /// The read timestamp is below the gc horizon; versions it needs may be
    /// gone. Read at `horizon` or later.
    #[error("snapshot {} is below the gc horizon {}", requested.0, horizon.0)]
    Compacted {
        /// The timestamp asked for.
        requested: Timestamp,
        /// The current gc horizon.
        horizon: Timestamp,
    },
    /// An earlier write or sync failed; nothing is accepted any more because
    /// what reached the disk is unknown. Restart the node to recover.
    #[error("storage is poisoned by an earlier write or sync failure; restart the node")]
    Poisoned,
    /// The caller passed something the store refuses (a limit, a timestamp
    /// order). Nothing was written.
    #[error("invalid storage argument: {reason}")]
    InvalidArgument {
        /// Which argument and which rule.
        reason: String,
    },
}

impl StorageError {
    /// The user-visible code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::Fjall(_) | StorageError::Corrupt { .. } | StorageError::Poisoned => {
                ErrorCode::StorageFailure
            }
            StorageError::Compacted { .. } => ErrorCode::Compacted,
            StorageError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
        }
    }

    fn fjall(err: fjall::Error) -> Self {
        match err {
            fjall::Error::Poisoned => StorageError::Poisoned,
            other => StorageError::Fjall(other),
        }
    }

    fn invalid(reason: impl Into<String>) -> Self {
        StorageError::InvalidArgument {
            reason: reason.into(),
        }
    }
}

/// One page of a range scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Live key-values in key order.
    pub items: Vec<KeyValue>,
    /// Where the next page starts (pass it as `start`): `Some` iff more live
    /// keys may remain in the range. A page may be short (even empty) with
    /// `next_key` set when the scan ran out of its work budget.
    pub next_key: Option<Vec<u8>>,
}

/// The mutations of one write, all stamped with one timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// The version every op of this record writes.
    pub ts: Timestamp,
    /// The mutations; a later op on the same key wins.
    pub ops: Vec<Op>,
}

/// What one [`MvccStore::gc`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Versions removed by this call.
    pub removed_versions: usize,
    /// Whether versions may remain to collect at this horizon (call again).
    pub more: bool,
}

/// A key span with a garbage-collection horizon of its own: one range of a
/// region. Registered once with [`MvccStore::set_gc_spans`]; the registered
/// spans tile the keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcSpan {
    /// Stable id (the range id); names the persisted horizon.
    pub id: u64,
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End key (exclusive); `None` is the end of the keyspace.
    pub end: Option<Vec<u8>>,
}

impl GcSpan {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether any key of `[start, end)` lies in this span.
    fn intersects(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        end.is_none_or(|e| self.start.as_slice() < e)
            && self.end.as_deref().is_none_or(|se| start < se)
    }
}

/// A registered span and its horizon (raised only under `write_lock`, after
/// it is durable, like the store-wide one).
struct SpanHorizon {
    span: GcSpan,
    horizon: AtomicU64,
    /// At or above every version stored in the span (in memory: the
    /// store-wide top version when the span was registered, raised with the
    /// store's). Per span because each range stamps its own writes: on a
    /// replica, one range's batch may apply below another's newest version.
    top: AtomicU64,
}

/// Which horizon a gc call or a raise works on.
#[derive(Clone, Copy)]
enum Slot<'a> {
    /// The store-wide horizon (no spans registered).
    Store,
    /// One registered span's.
    Span(&'a SpanHorizon),
}

/// Checks that `spans` tile the keyspace: sorted, contiguous, from the empty
/// key to the end, ids distinct.
fn validate_tiling(spans: &[GcSpan]) -> Result<(), StorageError> {
    let mut ids = HashSet::new();
    let mut expect_start: Option<&[u8]> = Some(&[]);
    for s in spans {
        if !ids.insert(s.id) {
            return Err(StorageError::invalid(format!(
                "gc span id {} repeats",
                s.id
            )));
        }
        if expect_start != Some(s.start.as_slice()) {
            return Err(StorageError::invalid(format!(
                "gc span {} does not start where the previous one ends",
                s.id
            )));
        }
        if s.end.as_deref().is_some_and(|e| e <= s.start.as_slice()) {
            return Err(StorageError::invalid(format!("gc span {} is empty", s.id)));
        }
        expect_start = s.end.as_deref();
    }
    if expect_start.is_some() {
        return Err(StorageError::invalid(
            "gc spans must cover the keyspace up to its end",
        ));
    }
    Ok(())
}

/// Where an unfinished gc pass resumes.
struct GcCursor {
    /// The horizon of the pass; a new horizon starts a new pass.
    horizon: Timestamp,
    /// Encoded lower bound of the next key to visit.
    resume: Vec<u8>,
}

/// One stored version, as [`MvccStore::dump_range`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawVersion {
    /// The user key.
    pub key: Vec<u8>,
    /// The HLC version.
    pub version: Timestamp,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Encoded-key bounds covering every version of the user keys in
/// `[start, end)`: the encoding is order-preserving and prefix-free, so
/// `key_prefix(k)` sorts before all of `k`'s versions and after every smaller key's.
fn encoded_bounds(start: &[u8], end: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = Bound::Included(encoding::key_prefix(start));
    let upper = end.map_or(Bound::Unbounded, |e| {
        Bound::Excluded(encoding::key_prefix(e))
    });
    (lower, upper)
}

fn validate_meta(name: &str, value: &[u8]) -> Result<(), StorageError> {
    validate_meta_name(name)?;
    if value.len() > MAX_META_VALUE_BYTES {
        return Err(StorageError::invalid(format!(
            "metadata value of {} bytes exceeds {MAX_META_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

struct Inner {
    path: PathBuf,
    /// Fault injection for tests: every sync fails while set.
    fail_syncs: AtomicBool,
    /// Fault injection for tests: every batch commit fails while set.
    fail_writes: AtomicBool,
    db: Database,
    data: Keyspace,
    /// The latest-version index ([`LATEST_KEYSPACE`]); written only under
    /// `write_lock`.
    latest: Keyspace,
    /// At or above every version ever stored; changed only under
    /// `write_lock`. A version above it is above every version of its key,
    /// so its index entry needs no read first.
    top_version: AtomicU64,
    /// The bound persisted as `sys/top_version`: at or above `top_version`,
    /// rewritten ([`TOP_VERSION_AHEAD`] above it) only in the batch that
    /// takes `top_version` past it, so most batches do not write it. After
    /// a restart the top version starts at this bound.
    top_persisted: AtomicU64,
    meta: Keyspace,
    /// The per-range change logs of cross-region replication ([`changes`]).
    changes: Keyspace,
    /// Coordination state of the ranges (`coord`): leases and the keys
    /// attached to them, overwritten in place (no history).
    coord: Keyspace,
    fsync: FsyncPolicy,
    poisoned: AtomicBool,
    /// The gc horizon; only raised under `write_lock` and after it is durable.
    horizon: AtomicU64,
    /// Serializes writes with horizon changes, so that no write at or below
    /// the horizon commits after gc has started removing versions.
    write_lock: Mutex<()>,
    /// Bytes bulk writes put in the data memtable since it was last sealed
    /// for them ([`BULK_MEMTABLE_BYTES`]).
    bulk_bytes: AtomicU64,
    /// Per-span horizons, once a region's ranges are registered; until then
    /// (and always on a single node) `horizon` covers every key.
    spans: OnceLock<Vec<SpanHorizon>>,
    /// Serializes gc calls and remembers where the last one stopped, per
    /// span (`None`: the store-wide sweep).
    gc_cursor: Mutex<HashMap<Option<u64>, GcCursor>>,
}

/// A multi-version key-value store on fjall. Cheap to clone; all clones share
/// one database.
#[derive(Clone)]
pub struct MvccStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccStore")
            .field("fsync", &self.inner.fsync)
            .field("gc_horizon", &self.gc_horizon())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of the store, from [`MvccStore::frozen_view`]:
/// how a Raft snapshot is built off the apply path.
pub struct FrozenView {
    snapshot: fjall::Snapshot,
    data: Keyspace,
    coord: Keyspace,
}

impl FrozenView {
    /// Every stored version (tombstones included) of the user keys in
    /// `[start, end)` as of the view, in key order and newest first per key.
    /// Refuses with `InvalidArgument` rather than return more than
    /// `max_versions`: a Raft snapshot of a range is built from this and
    /// must be complete.
    pub fn dump_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max_versions: usize,
    ) -> Result<Vec<RawVersion>, StorageError> {
        let mut out = Vec::new();
        self.for_each_version(start, end, max_versions, |key, version, value| {
            out.push(RawVersion {
                key: key.to_vec(),
                version,
                value: value.map(<[u8]>::to_vec),
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `visit` with every version [`FrozenView::dump_range`] would
    /// return, without copying them; stops at the first error of `visit`.
    /// Returns how many versions were visited.
    pub fn for_each_version(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max_versions: usize,
        mut visit: impl FnMut(&[u8], Timestamp, Option<&[u8]>) -> Result<(), StorageError>,
    ) -> Result<usize, StorageError> {
        if end.is_some_and(|e| e <= start) {
            return Ok(0);
        }
        let mut n = 0;
        for guard in self.snapshot.range(&self.data, encoded_bounds(start, end)) {
            let (key, value) = guard.into_inner().map_err(StorageError::fjall)?;
            let (user_key, version) = encoding::decode_version_key(&key)?;
            let value = encoding::decode_record(&value)?;
            if n == max_versions {
                return Err(StorageError::invalid(format!(
                    "range holds more than {max_versions} versions"
                )));
            }
            visit(&user_key, version, value)?;
            n += 1;
        }
        Ok(n)
    }
}

/// A consistent fjall snapshot of the data keyspace, as mvcc's source.
struct SnapshotSource<'a> {
    snapshot: fjall::Snapshot,
    data: &'a Keyspace,
}

impl VersionSource for SnapshotSource<'_> {
    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Box<dyn Iterator<Item = Result<RawEntry, StorageError>> + '_> {
        if bounds_are_empty(&lower, &upper) {
            return Box::new(std::iter::empty());
        }
        let iter = self.snapshot.range(self.data, (lower, upper));
        Box::new(iter.map(|guard| guard.into_inner().map_err(StorageError::fjall)))
    }
}

/// Whether no key lies between the bounds (lsm-tree expects `lower <= upper`).
fn bounds_are_empty(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    use Bound::{Excluded, Included};
    match (lower, upper) {
        (Included(l), Included(u)) => l > u,
        (Included(l) | Excluded(l), Included(u) | Excluded(u)) => l >= u,
        _ => false,
    }
}

/// A copy of `key`, a key read from a fjall iterator, to keep past the
/// iteration step (in a write batch, a plan, a list). A key read from a
/// table is a view into the data block it was read from and keeps that
/// whole block in memory while it lives: removing the keys of 245 versions
/// of up to 1 MiB through one batch of such views held 225 MB until the
/// batch was committed (heaptrack, docs/benchmarks.md "Snapshot
/// streaming"). Every key a batch or a gc plan keeps goes through here.
pub(crate) fn owned_key(key: &fjall::Slice) -> Vec<u8> {
    key.to_vec()
}

/// Locks a mutex whose data stays valid even if a holder panicked: the
/// write lock guards no data and the gc cursor is only a hint.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MvccStore {
    /// Opens (or creates) the store at `opts.path`.
    ///
    /// Refuses with [`StorageError::Corrupt`] a store whose format marker
    /// names a version this build cannot read.
    #[tracing::instrument(level = "info", skip_all, fields(path = %opts.path.display()))]
    pub fn open(opts: StoreOptions) -> Result<Self, StorageError> {
        // Batches stay in the journal's buffer until `sync`/`sync_durable`
        // (or a full buffer, or a journal rotation, which syncs) writes them
        // out: durability was only ever promised at those points (module
        // invariant), the journal keeps batches in order, so what a crash
        // keeps is still a prefix of the batches, and a write(2) per batch
        // (two per Raft entry per node: the log append and the apply) cost
        // about 3% of a put's CPU.
        let db = Database::builder(&opts.path)
            .cache_size(opts.cache_bytes)
            .manual_journal_persist(true)
            .open()
            .map_err(StorageError::fjall)?;
        let data = db
            .keyspace(DATA_KEYSPACE, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(DATA_MEMTABLE_BYTES)
                    .data_block_compression_policy(fjall::config::CompressionPolicy::all(
                        fjall::CompressionType::None,
                    ))
                    .compaction_strategy(Arc::new(
                        fjall::compaction::Leveled::default()
                            .with_table_target_size(DATA_TABLE_BYTES),
                    ))
            })
            .map_err(StorageError::fjall)?;
        let latest = db
            .keyspace(LATEST_KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(LATEST_MEMTABLE_BYTES)
            })
            .map_err(StorageError::fjall)?;
        let meta = db
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(StorageError::fjall)?;
        let changes = db
            .keyspace(changes::CHANGES_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(StorageError::fjall)?;
        let coord = db
            .keyspace(coord::COORD_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(StorageError::fjall)?;
        let horizon = match meta
            .get(encoding::META_GC_HORIZON_KEY)
            .map_err(StorageError::fjall)?
        {
            Some(raw) => encoding::decode_horizon(&raw)?,
            None => Timestamp::ZERO,
        };
        tracing::info!(gc_horizon = horizon.0, "storage opened");
        let inner = Inner {
            path: opts.path.clone(),
            fail_syncs: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            db,
            data,
            latest,
            top_version: AtomicU64::new(0),
            top_persisted: AtomicU64::new(0),
            meta,
            changes,
            coord,
            fsync: opts.fsync,
            poisoned: AtomicBool::new(false),
            horizon: AtomicU64::new(horizon.0),
            write_lock: Mutex::new(()),
            bulk_bytes: AtomicU64::new(0),
            spans: OnceLock::new(),
            gc_cursor: Mutex::new(HashMap::new()),
        };
        let store = MvccStore {
            inner: Arc::new(inner),
        };
        store.check_store_format()?;
        store.load_top_version()?;
        Ok(store)
    }

    /// The newest version of `key` at or below `at`; `None` if there is none
    /// or it is a tombstone. Fails with [`StorageError::Compacted`] when `at`
    /// is below the gc horizon.
    pub fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<KeyValue>, StorageError> {
        let src = self.read_view(at, || self.horizon_at(key))?;
        let Some(raw) = src
            .snapshot
            .get(&self.inner.latest, encoding::latest_key(key))
            .map_err(StorageError::fjall)?
        else {
            // No index entry: the key has no stored version (invariant).
            return Ok(None);
        };
        let latest = encoding::decode_latest(&raw)?;
        // No version of the key lies above `latest`, so when `latest <= at`
        // and that exact version is stored it is the newest at `at`. Else
        // (a read below the newest write, or a version gc removed) the
        // range iterator finds it.
        let exact = if latest <= at {
            src.snapshot
                .get(&self.inner.data, encoding::encode_version_key(key, latest))
                .map_err(StorageError::fjall)?
        } else {
            None
        };
        let entry = match exact {
            Some(record) => VersionEntry {
                version: latest,
                value: encoding::decode_record(&record)?.map(<[u8]>::to_vec),
            },
            None => match mvcc::newest_at(&src, key, at)? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        Ok(entry.value.map(|value| KeyValue {
            key: key.to_vec(),
            value,
            version: entry.version,
        }))
    }

    /// Live keys in `[start, end)` (`end: None` is unbounded) as of `at`, in
    /// key order, at most `limit` of them (clamped to
    /// [`limits::HARD_MAX_SCAN_PAGE`]). Follow [`ScanPage::next_key`] for the
    /// rest. `limit` must be at least 1.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        at: Timestamp,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        self.scan_bounded(start, end, at, limit, usize::MAX)
    }

    /// [`MvccStore::scan`] that also ends the page before its keys and values
    /// pass `max_bytes` (a page holds at least one pair), so a page of
    /// large values cannot hold `limit` of them in memory.
    pub fn scan_bounded(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        at: Timestamp,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ScanPage, StorageError> {
        if limit == 0 {
            return Err(StorageError::invalid("scan limit must be at least 1"));
        }
        let src = self.read_view(at, || self.horizon_over(start, end))?;
        if end.is_some_and(|end| start >= end) {
            return Ok(ScanPage::default());
        }
        let limit = limit.min(limits::HARD_MAX_SCAN_PAGE);
        mvcc::scan(
            &src,
            start,
            end,
            at,
            (limit, max_bytes),
            mvcc::SCAN_VISIT_BUDGET,
        )
    }

    /// Up to `limit` (clamped to [`limits::MAX_HISTORY_PAGE`]) stored versions
    /// of `key`, newest first, tombstones included as `value: None`. Versions
    /// removed by gc are not shown.
    pub fn history(&self, key: &[u8], limit: usize) -> Result<Vec<VersionEntry>, StorageError> {
        self.check_poisoned()?;
        let src = self.source();
        mvcc::history(&src, key, limit.min(limits::MAX_HISTORY_PAGE))
    }

    /// One page of `key`'s versions below `before` (all when `None`), newest
    /// first: at most `limit` (capped at [`limits::MAX_HISTORY_PAGE`]) and
    /// ending before the values pass `max_bytes` (at least one version).
    /// `true` when older versions remain; continue below the last one.
    pub fn history_page(
        &self,
        key: &[u8],
        before: Option<Timestamp>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<VersionEntry>, bool), StorageError> {
        self.check_poisoned()?;
        let src = self.source();
        let limit = limit.min(limits::MAX_HISTORY_PAGE);
        mvcc::history_page(&src, key, before, limit, max_bytes)
    }

    /// Writes all `records` as one atomic fjall batch (group commit). Does
    /// not fsync: call [`MvccStore::sync`] before acknowledging.
    ///
    /// Records must have strictly increasing timestamps, all above the gc
    /// horizon, and respect [`MAX_BATCH_RECORDS`], [`MAX_RECORD_OPS`],
    /// [`MAX_RECORD_BYTES`] and the value and key size ceilings; otherwise
    /// nothing is written and [`StorageError::InvalidArgument`] is returned.
    /// A commit failure poisons the store.
    #[tracing::instrument(level = "debug", skip_all, fields(records = records.len()))]
    pub fn apply_batch(&self, records: &[WriteRecord]) -> Result<(), StorageError> {
        self.apply_batch_with_meta(records, &[])
    }

    /// [`MvccStore::apply_batch`] plus named metadata written in the same
    /// atomic fjall batch: a Raft state machine records its applied log id
    /// with the data it applied, so a crash never separates the two.
    pub fn apply_batch_with_meta(
        &self,
        records: &[WriteRecord],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StorageError> {
        self.apply_batch_inner(records, meta, &[], &[])
    }

    /// The shared body of the apply calls; `changes` are change-log entries
    /// (key, value) committed in the same batch.
    fn apply_batch_inner(
        &self,
        records: &[WriteRecord],
        meta: &[(&str, Vec<u8>)],
        changes: &[(Vec<u8>, Vec<u8>)],
        coord: &[coord::CoordWrite],
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        for (name, value) in meta {
            validate_meta(name, value)?;
        }
        validate_records(records)?;
        coord::validate(coord)?;
        if records.is_empty() && meta.is_empty() && coord.is_empty() {
            return Ok(());
        }
        let _write = lock(&self.inner.write_lock);
        // Paired with the owners' rule (horizon below the applied timestamp):
        // a version at or below its span's horizon would be invisible to
        // reads that gc promised to leave unchanged.
        self.check_above_horizons(records)?;
        let mut batch = self.inner.db.batch();
        self.insert_meta(&mut batch, meta);
        for (key, value) in changes {
            batch.insert(&self.inner.changes, key.as_slice(), value.as_slice());
        }
        for w in coord {
            match &w.value {
                Some(v) => batch.insert(&self.inner.coord, w.key.as_slice(), v.as_slice()),
                None => batch.remove(&self.inner.coord, w.key.as_slice()),
            }
        }
        let mut raised = LatestRaise::default();
        for record in records {
            // A later op on the same key wins: walk backwards, keep the first.
            let mut seen = HashSet::with_capacity(record.ops.len());
            for op in record.ops.iter().rev().filter(|op| seen.insert(op.key())) {
                let (key, value) = match op {
                    Op::Put { key, value } => (key, Some(value.as_slice())),
                    Op::Delete { key } => (key, None),
                };
                let encoded = encoding::encode_version_key(key, record.ts);
                // Checked by validate_records; re-checked in debug builds
                // together with the round trip the readers rely on.
                debug_assert!(encoded.len() <= encoding::MAX_ENCODED_KEY_BYTES);
                debug_assert_eq!(
                    encoding::decode_version_key(&encoded).ok(),
                    Some((key.clone(), record.ts))
                );
                batch.insert(&self.inner.data, encoded, encoding::encode_record(value));
                raised.note(key, record.ts);
            }
        }
        self.raise_latest(&mut batch, raised)?;
        self.commit("apply_batch", batch)
    }

    /// The durability point: per [`FsyncPolicy`], makes every batch applied
    /// so far survive a process crash (`Never`) or also power loss
    /// (`Always`). On failure the store is poisoned.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn sync(&self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let mode = match self.inner.fsync {
            FsyncPolicy::Always => PersistMode::SyncAll,
            FsyncPolicy::Never => PersistMode::Buffer,
        };
        let started = Instant::now();
        self.persist("sync", mode)?;
        metrics::histogram!("meridian_storage_sync_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The durability point of the Raft log and vote, whose entries count
    /// only once persisted: per [`FsyncPolicy`], everything committed so far
    /// survives power loss (`Always`: an fdatasync) or a process crash (`Never`:
    /// written to the OS, like etcd's `--unsafe-no-fsync`). On failure the
    /// store is poisoned, like any failed write or sync.
    pub fn sync_durable(&self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let mode = match self.inner.fsync {
            FsyncPolicy::Always => PersistMode::SyncData,
            FsyncPolicy::Never => PersistMode::Buffer,
        };
        self.persist("sync_durable", mode)
    }

    /// Fault injection: while `on`, every sync fails (and so poisons the store).
    #[cfg(test)]
    pub(crate) fn fail_syncs(&self, on: bool) {
        self.inner.fail_syncs.store(on, Ordering::Release);
    }

    /// Fault injection: while `on`, every batch commit fails (and so poisons
    /// the store) before anything reaches the journal.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, on: bool) {
        self.inner.fail_writes.store(on, Ordering::Release);
    }

    /// Collects versions no read at or above `horizon` can see: for every
    /// key, all versions above the horizon stay, the newest at or below it
    /// stays unless it is a tombstone, and older ones go. Removes at most
    /// `max_versions` (clamped to [`MAX_GC_VERSIONS_PER_CALL`], must be at
    /// least 1) per call; `more` says whether to call again.
    ///
    /// The horizon never moves backwards (a lower `horizon` collects at the
    /// current one) and is made durable before anything is removed. While a
    /// sweep is unfinished (`more` was true), later calls continue it at its
    /// own horizon and ignore the requested one, so every sweep completes.
    ///
    /// This is the store-wide collection of a single node; once spans are
    /// registered it is refused (`InvalidArgument`): use [`MvccStore::gc_span`].
    #[tracing::instrument(level = "debug", skip_all, fields(horizon = horizon.0))]
    pub fn gc(&self, horizon: Timestamp, max_versions: usize) -> Result<GcStats, StorageError> {
        if self.inner.spans.get().is_some() {
            return Err(StorageError::invalid(
                "per-span gc horizons are registered: collect each span with gc_span",
            ));
        }
        self.gc_step(Slot::Store, horizon, max_versions)
    }

    /// [`MvccStore::gc`] for the versions of one registered span, at that
    /// span's own horizon. The caller keeps `horizon` at or below what this
    /// replica has applied in the span (minus the history window), so apply
    /// never meets a version below it (docs/consistency.md G8).
    #[tracing::instrument(level = "debug", skip_all, fields(span = id, horizon = horizon.0))]
    pub fn gc_span(
        &self,
        id: u64,
        horizon: Timestamp,
        max_versions: usize,
    ) -> Result<GcStats, StorageError> {
        let span = self.span(id)?;
        self.gc_step(Slot::Span(span), horizon, max_versions)
    }

    fn gc_step(
        &self,
        slot: Slot<'_>,
        horizon: Timestamp,
        max_versions: usize,
    ) -> Result<GcStats, StorageError> {
        self.check_poisoned()?;
        if max_versions == 0 {
            return Err(StorageError::invalid("gc max_versions must be at least 1"));
        }
        let max_versions = max_versions.min(MAX_GC_VERSIONS_PER_CALL);
        let (cursor_key, lower, upper) = match slot {
            Slot::Store => (None, Bound::Unbounded, Bound::Unbounded),
            Slot::Span(s) => {
                let (lower, upper) = encoded_bounds(&s.span.start, s.span.end.as_deref());
                (Some(s.span.id), lower, upper)
            }
        };
        let mut cursors = lock(&self.inner.gc_cursor);
        // A sweep in progress finishes at the horizon it started with; only a
        // new sweep raises the horizon. Restarting whenever the requested
        // horizon moved (it moves on every call) would never finish a sweep
        // over a store larger than one step's visit budget.
        let (horizon, lower) = match cursors.remove(&cursor_key) {
            Some(c) => (c.horizon, Bound::Included(c.resume)),
            None => (self.raise(slot, horizon)?, lower),
        };
        let plan = mvcc::plan_gc(
            &self.source(),
            lower,
            upper,
            horizon,
            max_versions,
            mvcc::GC_VISIT_BUDGET,
        )?;
        let removed_versions = plan.remove.len();
        if removed_versions > 0 {
            // Under the write lock, so no write raises an index entry between
            // the check below and the commit.
            let _write = lock(&self.inner.write_lock);
            let mut batch = self.inner.db.batch();
            for &i in &plan.tombstones {
                // A tombstone gc removes was its key's newest version at or
                // below the horizon, and every older version goes with it.
                // If the index still names it, no version is above it: the
                // key is left with none, and its entry goes too.
                let (user_key, ts) = encoding::decode_version_key(&plan.remove[i])?;
                if self.latest_of(&user_key)? == Some(ts) {
                    batch.remove(&self.inner.latest, encoding::latest_key(&user_key));
                }
            }
            for key in plan.remove {
                batch.remove(&self.inner.data, key);
            }
            // Not fsynced: removals lost in a crash are simply redone.
            self.commit("gc", batch)?;
        }
        let more = plan.resume.is_some();
        if let Some(resume) = plan.resume {
            cursors.insert(cursor_key, GcCursor { horizon, resume });
        }
        metrics::counter!("meridian_storage_gc_removed_versions_total")
            .increment(removed_versions as u64);
        tracing::debug!(removed_versions, more, "gc step");
        Ok(GcStats {
            removed_versions,
            more,
        })
    }

    /// The store-wide gc horizon: with no spans registered, reads below it
    /// fail with `Compacted`. With spans registered it is only the floor they
    /// started from; see [`MvccStore::gc_horizon_at`].
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp(self.inner.horizon.load(Ordering::Acquire))
    }

    /// The horizon in force for `key`: its span's, or the store-wide one.
    pub fn gc_horizon_at(&self, key: &[u8]) -> Timestamp {
        self.horizon_at(key)
    }

    /// Registers the spans (a region's ranges, which must tile the keyspace)
    /// that from now on each have a gc horizon of their own, and returns
    /// their horizons. A span with no persisted horizon starts at the
    /// `initial` given with it, made durable here; the caller picks one at or
    /// below what the span has applied, so apply never meets it (for a store
    /// collected store-wide before, the lower of that horizon and the applied
    /// timestamp: gc kept every key's newest version at or below it, so reads
    /// at or above the span's applied timestamp are unchanged). Can be called
    /// once per open store.
    pub fn set_gc_spans(
        &self,
        spans: Vec<(GcSpan, Timestamp)>,
    ) -> Result<Vec<(u64, Timestamp)>, StorageError> {
        self.check_poisoned()?;
        let only: Vec<GcSpan> = spans.iter().map(|(s, _)| s.clone()).collect();
        validate_tiling(&only)?;
        let _write = lock(&self.inner.write_lock);
        if self.inner.spans.get().is_some() {
            return Err(StorageError::invalid("gc spans are already registered"));
        }
        let mut batch = self.inner.db.batch();
        let mut fresh = false;
        let mut registered = Vec::with_capacity(spans.len());
        for (span, initial) in spans {
            let key = encoding::span_horizon_key(span.id);
            let horizon = match self.inner.meta.get(&key).map_err(StorageError::fjall)? {
                Some(raw) => encoding::decode_horizon(&raw)?,
                None => {
                    batch.insert(&self.inner.meta, key, encoding::encode_horizon(initial));
                    fresh = true;
                    initial
                }
            };
            registered.push(SpanHorizon {
                span,
                horizon: AtomicU64::new(horizon.0),
                // Under `write_lock`: no version above it is stored.
                top: AtomicU64::new(self.inner.top_version.load(Ordering::Acquire)),
            });
        }
        if fresh {
            self.commit("set_gc_spans", batch)?;
            self.persist("set_gc_spans", PersistMode::SyncAll)?;
        }
        let out = registered
            .iter()
            .map(|s| (s.span.id, Timestamp(s.horizon.load(Ordering::Acquire))))
            .collect();
        // Under `write_lock` and checked above: nobody else sets it.
        let _ = self.inner.spans.set(registered);
        Ok(out)
    }

    /// Raises (durably, never lowers) the horizon of every span holding keys
    /// of `[start, end)`, or the store-wide one when no spans are registered.
    /// A Raft snapshot install calls it before replacing a range: the
    /// snapshot holds the sender's history only down to the sender's own
    /// horizon, so this replica may serve reads only from the snapshot's
    /// applied timestamp on.
    pub fn raise_gc_horizon(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        to: Timestamp,
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        match self.inner.spans.get() {
            None => {
                self.raise(Slot::Store, to)?;
            }
            Some(spans) => {
                for s in spans.iter().filter(|s| s.span.intersects(start, end)) {
                    self.raise(Slot::Span(s), to)?;
                }
            }
        }
        Ok(())
    }

    /// Named metadata written by [`MvccStore::meta_put_durable`].
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.check_poisoned()?;
        validate_meta_name(name)?;
        let key = encoding::meta_user_key(name);
        let Some(raw) = self.inner.meta.get(key).map_err(StorageError::fjall)? else {
            return Ok(None);
        };
        Ok(Some(encoding::decode_meta(&raw)?.to_vec()))
    }

    /// Writes named metadata and fsyncs it (SyncAll) before returning,
    /// whatever the [`FsyncPolicy`]. A failure poisons the store.
    pub fn meta_put_durable(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check_poisoned()?;
        validate_meta_name(name)?;
        if value.len() > MAX_META_VALUE_BYTES {
            return Err(StorageError::invalid(format!(
                "metadata value of {} bytes exceeds {MAX_META_VALUE_BYTES}",
                value.len()
            )));
        }
        let key = encoding::meta_user_key(name);
        self.put_meta_durable("meta_put_durable", key, encoding::encode_meta(value))
    }

    /// Every stored version (tombstones included) of the user keys in
    /// `[start, end)`, in key order and newest first per key, as of now.
    /// See [`FrozenView::dump_range`].
    pub fn dump_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max_versions: usize,
    ) -> Result<Vec<RawVersion>, StorageError> {
        self.frozen_view()?.dump_range(start, end, max_versions)
    }

    /// A read-only view of the data and metadata as of this instant, cheap
    /// to take (no copy). Later writes and gc do not change what it shows;
    /// it pins the files it needs until dropped, so drop it soon.
    pub fn frozen_view(&self) -> Result<FrozenView, StorageError> {
        self.check_poisoned()?;
        Ok(FrozenView {
            snapshot: self.inner.db.snapshot(),
            data: self.inner.data.clone(),
            coord: self.inner.coord.clone(),
        })
    }

    /// Removes up to `max_versions` stored versions (tombstones included)
    /// of the user keys in `[start, end)` in one atomic batch, and says
    /// whether any remain: the first step of installing a Raft snapshot,
    /// taken in bounded batches so a large range never sits in one batch.
    /// Not fsynced.
    pub fn clear_range_step(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max_versions: usize,
    ) -> Result<bool, StorageError> {
        self.check_poisoned()?;
        if end.is_some_and(|e| e <= start) {
            return Ok(false);
        }
        if max_versions == 0 {
            return Err(StorageError::invalid(
                "clear_range_step: max_versions must be at least 1",
            ));
        }
        let _write = lock(&self.inner.write_lock);
        let snapshot = self.inner.db.snapshot();
        let mut batch = self.inner.db.batch();
        let mut removed = 0;
        for guard in snapshot.range(&self.inner.data, encoded_bounds(start, end)) {
            if removed == max_versions {
                break;
            }
            let key = guard.key().map_err(StorageError::fjall)?;
            batch.remove(&self.inner.data, owned_key(&key));
            removed += 1;
        }
        // The index entries go once no version is left in the span (they
        // may outlive their versions, never the reverse): the data keys are
        // exhausted when this batch removes fewer than it may.
        if removed < max_versions {
            let index_bounds = (
                Bound::Included(encoding::latest_key(start)),
                end.map_or(Bound::Unbounded, |e| {
                    Bound::Excluded(encoding::latest_key(e))
                }),
            );
            for guard in snapshot.range(&self.inner.latest, index_bounds) {
                if removed == max_versions {
                    break;
                }
                let key = guard.key().map_err(StorageError::fjall)?;
                batch.remove(&self.inner.latest, owned_key(&key));
                removed += 1;
            }
        }
        self.commit("clear_range_step", batch)?;
        Ok(removed == max_versions)
    }

    /// Writes `versions` (which must lie in `[start, end)`) as they are, in
    /// one atomic batch: how a Raft snapshot's versions are installed, a
    /// bounded batch at a time after [`MvccStore::clear_range_step`]. Not
    /// fsynced.
    pub fn insert_versions(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        versions: &[RawVersion],
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let in_span = |k: &[u8]| k >= start && end.is_none_or(|e| k < e);
        if let Some(v) = versions.iter().find(|v| !in_span(&v.key)) {
            return Err(StorageError::invalid(format!(
                "snapshot version of key {:?} lies outside the range",
                String::from_utf8_lossy(&v.key)
            )));
        }
        if let Some(v) = versions
            .iter()
            .find(|v| encoding::encoded_key_len(&v.key) > encoding::MAX_ENCODED_KEY_BYTES)
        {
            return Err(StorageError::invalid(format!(
                "snapshot key of {} bytes is too long to store",
                v.key.len()
            )));
        }
        let mut bytes = 0u64;
        {
            let _write = lock(&self.inner.write_lock);
            let mut batch = self.inner.db.batch();
            let mut raised = LatestRaise::default();
            for v in versions {
                let encoded = encoding::encode_version_key(&v.key, v.version);
                let record = encoding::encode_record(v.value.as_deref());
                bytes += (encoded.len() + record.len()) as u64;
                batch.insert(&self.inner.data, encoded, record);
                raised.note(&v.key, v.version);
            }
            self.raise_latest(&mut batch, raised)?;
            self.commit("insert_versions", batch)?;
        }
        self.bound_bulk_memtable(bytes)
    }

    /// Counts `bytes` a bulk write just committed and, once
    /// [`BULK_MEMTABLE_BYTES`] have accumulated, seals the data memtable
    /// and waits (at most [`BULK_FLUSH_WAIT`]) until no sealed memtable is
    /// left and level 0 holds at most [`BULK_L0_TABLES`] tables, so a bulk
    /// write holds about one bulk's worth of memtable, and compaction merges
    /// a bounded number of tables, above what the node's ordinary writes
    /// hold. Blocks, like the install that calls it: installs run in
    /// `spawn_blocking`, or while a range's state machine opens (an
    /// interrupted install redone) before its group runs.
    fn bound_bulk_memtable(&self, bytes: u64) -> Result<(), StorageError> {
        let total = self.inner.bulk_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if total < BULK_MEMTABLE_BYTES {
            return Ok(());
        }
        self.inner.bulk_bytes.store(0, Ordering::Release);
        let data = &self.inner.data;
        data.rotate_memtable().map_err(StorageError::fjall)?;
        let deadline = std::time::Instant::now() + BULK_FLUSH_WAIT;
        while data.sealed_memtable_count() > 0 || data.l0_table_count() > BULK_L0_TABLES {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    sealed = data.sealed_memtable_count(),
                    level0 = data.l0_table_count(),
                    "a bulk write waited {BULK_FLUSH_WAIT:?} for flushes and compaction; going on without"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// Checks the latest-version index against the data, streaming both
    /// (a full scan): every key with a stored version has an entry naming
    /// exactly its newest version, and no entry names a key without one.
    /// Returns the number of keys. Every write call keeps this on return;
    /// only a snapshot install cut off midway leaves entries of removed
    /// keys until it is redone, which the node does when it restarts. For
    /// tests and offline checks; fails with `Corrupt` naming the first
    /// difference.
    pub fn verify_latest_index(&self) -> Result<u64, StorageError> {
        self.check_poisoned()?;
        let snapshot = self.inner.db.snapshot();
        let mut index = snapshot.iter(&self.inner.latest);
        let mismatch = |what: String| StorageError::Corrupt {
            what: format!("latest-version index: {what}"),
        };
        let mut keys = 0u64;
        self.for_each_newest(&snapshot, |user_key, newest| {
            let Some(entry) = index.next() else {
                return Err(mismatch(format!("no entry for {user_key:02x?}")));
            };
            let (key, value) = entry.into_inner().map_err(StorageError::fjall)?;
            let ts = encoding::decode_latest(&value)?;
            if key.as_ref() != encoding::latest_key(&user_key).as_slice() || ts != newest {
                return Err(mismatch(format!(
                    "entry {key:02x?}@{} where {user_key:02x?}@{} is the next newest version",
                    ts.0, newest.0
                )));
            }
            keys += 1;
            Ok(())
        })?;
        if let Some(entry) = index.next() {
            let key = entry.key().map_err(StorageError::fjall)?;
            return Err(mismatch(format!(
                "entry {key:02x?} names a key with no version"
            )));
        }
        Ok(keys)
    }

    /// The directory of the store. Files that belong with the node's data
    /// (Raft snapshot files) live in subdirectories of it.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.path
    }

    /// Approximate number of stored versions (tombstones and not yet
    /// collected versions included): a cheap gauge for metrics, not a count.
    pub fn approximate_keys(&self) -> usize {
        self.inner.data.approximate_len()
    }

    /// Whether an earlier write or sync failure poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Bytes the store occupies on disk (every keyspace, the Raft log's
    /// included, and the journal), as fjall counts them; `None` if fjall
    /// cannot tell (the error is logged at debug: it is only a metric).
    pub fn disk_space_bytes(&self) -> Option<u64> {
        self.inner
            .db
            .disk_space()
            .map_err(|e| tracing::debug!(error = %e, "cannot measure the store's disk space"))
            .ok()
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        if self.is_poisoned() {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    /// Commits `batch` (atomically, to the journal; not fsynced). Every
    /// batch of the store, MVCC and Raft log alike, is committed here, so a
    /// failure always poisons.
    /// Adds named metadata (validated by the caller) to `batch`.
    fn insert_meta(&self, batch: &mut fjall::OwnedWriteBatch, meta: &[(&str, Vec<u8>)]) {
        for (name, value) in meta {
            batch.insert(
                &self.inner.meta,
                encoding::meta_user_key(name),
                encoding::encode_meta(value),
            );
        }
    }

    fn commit(&self, what: &str, batch: fjall::OwnedWriteBatch) -> Result<(), StorageError> {
        let result = if self.inner.fail_writes.load(Ordering::Acquire) {
            Err(fjall::Error::Io(std::io::Error::other(
                "injected write failure",
            )))
        } else {
            batch.commit()
        };
        result.map_err(|err| self.write_failed(what, err))
    }

    /// Persists the journal per `mode`. Every sync of the store goes
    /// through here, so a failure always poisons.
    fn persist(&self, what: &str, mode: PersistMode) -> Result<(), StorageError> {
        let result = if self.inner.fail_syncs.load(Ordering::Acquire) {
            Err(fjall::Error::Io(std::io::Error::other(
                "injected sync failure",
            )))
        } else {
            self.inner.db.persist(mode)
        };
        result.map_err(|err| self.write_failed(what, err))
    }

    /// Poisons the store after a failed write: what reached the disk is
    /// unknown, so no later call may build on it.
    fn write_failed(&self, what: &str, err: fjall::Error) -> StorageError {
        self.inner.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %err, operation = what, "storage write failed; store poisoned");
        metrics::counter!("meridian_storage_poisoned_total").increment(1);
        StorageError::fjall(err)
    }

    fn source(&self) -> SnapshotSource<'_> {
        SnapshotSource {
            snapshot: self.inner.db.snapshot(),
            data: &self.inner.data,
        }
    }

    /// A snapshot for reading at `at`, taken *before* the horizon is checked:
    /// gc removes versions only after raising the horizon, so if `at` is not
    /// below the horizon seen afterwards, the snapshot still holds every
    /// version a read at `at` needs.
    fn read_view(
        &self,
        at: Timestamp,
        horizon: impl FnOnce() -> Timestamp,
    ) -> Result<SnapshotSource<'_>, StorageError> {
        self.check_poisoned()?;
        let src = self.source();
        let horizon = horizon();
        if at < horizon {
            return Err(StorageError::Compacted {
                requested: at,
                horizon,
            });
        }
        Ok(src)
    }

    fn span(&self, id: u64) -> Result<&SpanHorizon, StorageError> {
        self.inner
            .spans
            .get()
            .and_then(|spans| spans.iter().find(|s| s.span.id == id))
            .ok_or_else(|| StorageError::invalid(format!("no gc span {id} is registered")))
    }

    /// The horizon reads of `key` must respect.
    fn horizon_at(&self, key: &[u8]) -> Timestamp {
        match self.inner.spans.get() {
            None => self.gc_horizon(),
            Some(spans) => spans
                .iter()
                .find(|s| s.span.contains(key))
                .map_or(Timestamp::ZERO, |s| {
                    Timestamp(s.horizon.load(Ordering::Acquire))
                }),
        }
    }

    /// The highest horizon among the spans holding keys of `[start, end)`.
    fn horizon_over(&self, start: &[u8], end: Option<&[u8]>) -> Timestamp {
        match self.inner.spans.get() {
            None => self.gc_horizon(),
            Some(spans) => spans
                .iter()
                .filter(|s| s.span.intersects(start, end))
                .map(|s| Timestamp(s.horizon.load(Ordering::Acquire)))
                .max()
                .unwrap_or(Timestamp::ZERO),
        }
    }

    /// Refuses a batch with a version at or below its key's horizon.
    fn check_above_horizons(&self, records: &[WriteRecord]) -> Result<(), StorageError> {
        for record in records {
            for op in &record.ops {
                let horizon = self.horizon_at(op.key());
                if record.ts <= horizon {
                    return Err(StorageError::invalid(format!(
                        "write at {} is at or below the gc horizon {}",
                        record.ts.0, horizon.0
                    )));
                }
            }
        }
        Ok(())
    }

    /// Raises the horizon of `slot` to `requested` (never lowers it),
    /// durably, and returns the horizon now in force.
    fn raise(&self, slot: Slot<'_>, requested: Timestamp) -> Result<Timestamp, StorageError> {
        let _write = lock(&self.inner.write_lock);
        let (cell, key) = match slot {
            Slot::Store => (&self.inner.horizon, encoding::META_GC_HORIZON_KEY.to_vec()),
            Slot::Span(s) => (&s.horizon, encoding::span_horizon_key(s.span.id)),
        };
        let current = Timestamp(cell.load(Ordering::Acquire));
        if requested <= current {
            return Ok(current);
        }
        self.put_meta_durable("gc_horizon", key, encoding::encode_horizon(requested))?;
        cell.store(requested.0, Ordering::Release);
        Ok(requested)
    }

    /// The latest-version index entry of `key`.
    fn latest_of(&self, key: &[u8]) -> Result<Option<Timestamp>, StorageError> {
        let raw = self
            .inner
            .latest
            .get(encoding::latest_key(key))
            .map_err(StorageError::fjall)?;
        match raw {
            Some(raw) => Ok(Some(encoding::decode_latest(&raw)?)),
            None => Ok(None),
        }
    }

    /// Adds to `batch` the index entries `raised` lifts: an entry is only
    /// ever raised, to the highest version the batch writes of its key.
    /// The caller holds `write_lock` (every index writer does), so the
    /// entries read here are the ones the batch replaces.
    ///
    /// A version above its span's top version (the store's, before spans
    /// are registered) is above every stored version of its key, so its
    /// entry is written without reading the old one: on one region's write
    /// path every version is, since a range stamps each entry above its
    /// applied timestamp. Versions at or below it (merged from a region
    /// whose clock is ahead, or installed) read first. Decisions use the
    /// tops from before the batch; then the batch raises them, and the
    /// persisted store-wide top with them.
    fn raise_latest(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        raised: LatestRaise<'_>,
    ) -> Result<(), StorageError> {
        let top = Timestamp(self.inner.top_version.load(Ordering::Acquire));
        let mut new_top = top;
        for (&key, &ts) in &raised.0 {
            new_top = new_top.max(ts);
            let below = Timestamp(self.top_cell(key).load(Ordering::Acquire));
            if ts > below || self.latest_of(key)?.is_none_or(|current| current < ts) {
                batch.insert(
                    &self.inner.latest,
                    encoding::latest_key(key),
                    encoding::encode_latest(ts),
                );
            }
        }
        if self.inner.spans.get().is_some() {
            for (&key, &ts) in &raised.0 {
                self.top_cell(key).fetch_max(ts.0, Ordering::AcqRel);
            }
        }
        if new_top > top {
            // Raised before the commit: if it fails the store is poisoned,
            // and a top above the disk's only costs reads.
            self.inner.top_version.store(new_top.0, Ordering::Release);
            if new_top.0 > self.inner.top_persisted.load(Ordering::Acquire) {
                let bound = Timestamp(new_top.0.saturating_add(TOP_VERSION_AHEAD));
                batch.insert(
                    &self.inner.meta,
                    encoding::META_TOP_VERSION_KEY,
                    encoding::encode_latest(bound),
                );
                self.inner.top_persisted.store(bound.0, Ordering::Release);
            }
        }
        Ok(())
    }

    /// The top version that covers `key`: its span's, or the store's.
    fn top_cell(&self, key: &[u8]) -> &AtomicU64 {
        self.inner
            .spans
            .get()
            .and_then(|spans| spans.iter().find(|s| s.span.contains(key)))
            .map_or(&self.inner.top_version, |s| &s.top)
    }

    /// Loads the top version, or (a store without one: new, or written by
    /// the first format 2 build) takes the highest index entry and
    /// persists it.
    fn load_top_version(&self) -> Result<(), StorageError> {
        let stored = self
            .inner
            .meta
            .get(encoding::META_TOP_VERSION_KEY)
            .map_err(StorageError::fjall)?;
        let top = match stored {
            Some(raw) => encoding::decode_latest(&raw)?,
            None => {
                let mut top = Timestamp::ZERO;
                for guard in self.inner.latest.iter() {
                    let (_, value) = guard.into_inner().map_err(StorageError::fjall)?;
                    top = top.max(encoding::decode_latest(&value)?);
                }
                self.put_meta_durable(
                    "top version",
                    encoding::META_TOP_VERSION_KEY.to_vec(),
                    encoding::encode_latest(top),
                )?;
                top
            }
        };
        self.inner.top_version.store(top.0, Ordering::Release);
        self.inner.top_persisted.store(top.0, Ordering::Release);
        Ok(())
    }

    /// Checks the format marker: writes it (durably) into a brand-new
    /// store, and migrates a format 1 store to format 2 by building its
    /// latest-version index, then marks it (an interrupted migration is
    /// redone from the start on the next open; it only writes entries).
    fn check_store_format(&self) -> Result<(), StorageError> {
        let marker = self
            .inner
            .meta
            .get(encoding::META_FORMAT_KEY)
            .map_err(StorageError::fjall)?;
        match marker {
            Some(raw) => match encoding::decode_store_format(&raw)? {
                encoding::STORE_FORMAT_V2 => return Ok(()),
                encoding::STORE_FORMAT_V1 => self.build_latest_index()?,
                found => {
                    return Err(StorageError::Corrupt {
                        what: format!(
                            "store format version {found} (this build reads {} and {})",
                            encoding::STORE_FORMAT_V1,
                            encoding::STORE_FORMAT_V2
                        ),
                    })
                }
            },
            None if self.inner.data.is_empty().map_err(StorageError::fjall)? => {}
            None => {
                return Err(StorageError::Corrupt {
                    what: "data present but no store format marker".to_string(),
                })
            }
        }
        self.put_meta_durable(
            "store format",
            encoding::META_FORMAT_KEY.to_vec(),
            encoding::encode_store_format(encoding::STORE_FORMAT_V2),
        )
    }

    /// Calls `visit` with every user key of `snapshot`'s data and its newest
    /// stored version (the first of its data keys), in key order.
    fn for_each_newest(
        &self,
        snapshot: &fjall::Snapshot,
        mut visit: impl FnMut(Vec<u8>, Timestamp) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut previous: Vec<u8> = Vec::new();
        for guard in snapshot.iter(&self.inner.data) {
            let raw_key = guard.key().map_err(StorageError::fjall)?;
            let (prefix, _) = encoding::split_version_key(&raw_key)?;
            if prefix == previous.as_slice() {
                continue;
            }
            previous = prefix.to_vec();
            let (user_key, newest) = encoding::decode_version_key(&raw_key)?;
            visit(user_key, newest)?;
        }
        Ok(())
    }

    /// Writes the latest-version index entry of every key from its newest
    /// stored version (the first of its data keys), in bounded batches.
    fn build_latest_index(&self) -> Result<(), StorageError> {
        let started = Instant::now();
        let snapshot = self.inner.db.snapshot();
        let mut batch = self.inner.db.batch();
        let (mut in_batch, mut keys, mut top) = (0, 0u64, Timestamp::ZERO);
        self.for_each_newest(&snapshot, |user_key, ts| {
            top = top.max(ts);
            batch.insert(
                &self.inner.latest,
                encoding::latest_key(&user_key),
                encoding::encode_latest(ts),
            );
            (in_batch, keys) = (in_batch + 1, keys + 1);
            if in_batch == MIGRATE_BATCH_KEYS {
                let full = std::mem::replace(&mut batch, self.inner.db.batch());
                self.commit("store format migration", full)?;
                in_batch = 0;
            }
            Ok(())
        })?;
        // The top version comes with the index, so opening does not scan
        // the index again to find it.
        batch.insert(
            &self.inner.meta,
            encoding::META_TOP_VERSION_KEY,
            encoding::encode_latest(top),
        );
        self.commit("store format migration", batch)?;
        tracing::info!(
            keys,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built the latest-version index of a format 1 store"
        );
        Ok(())
    }

    fn put_meta_durable(
        &self,
        what: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut batch = self.inner.db.batch();
        batch.insert(&self.inner.meta, key, value);
        self.commit(what, batch)?;
        self.persist(what, PersistMode::SyncAll)
    }
}

/// The highest version a batch writes of each key, for
/// [`MvccStore::raise_latest`] (one entry per key: two inserts of one key
/// in one fjall batch share a sequence number, and which wins is not
/// defined).
#[derive(Default)]
struct LatestRaise<'a>(HashMap<&'a [u8], Timestamp>);

impl<'a> LatestRaise<'a> {
    fn note(&mut self, key: &'a [u8], ts: Timestamp) {
        let entry = self.0.entry(key).or_insert(ts);
        *entry = (*entry).max(ts);
    }
}

/// Checks the shape and limits of a batch before anything is written.
fn validate_records(records: &[WriteRecord]) -> Result<(), StorageError> {
    if records.len() > MAX_BATCH_RECORDS {
        return Err(StorageError::invalid(format!(
            "{} records in one batch exceed {MAX_BATCH_RECORDS}",
            records.len()
        )));
    }
    for pair in records.windows(2) {
        if pair[0].ts >= pair[1].ts {
            return Err(StorageError::invalid(format!(
                "record timestamps must strictly increase, got {} then {}",
                pair[0].ts.0, pair[1].ts.0
            )));
        }
    }
    records.iter().try_for_each(validate_record)
}

fn validate_record(record: &WriteRecord) -> Result<(), StorageError> {
    if record.ops.len() > MAX_RECORD_OPS {
        return Err(StorageError::invalid(format!(
            "{} ops in one record exceed {MAX_RECORD_OPS}",
            record.ops.len()
        )));
    }
    let mut bytes = 0usize;
    for op in &record.ops {
        let key = op.key();
        if encoding::encoded_key_len(key) > encoding::MAX_ENCODED_KEY_BYTES {
            return Err(StorageError::invalid(format!(
                "key of {} bytes does not fit the storage key limit",
                key.len()
            )));
        }
        let value_len = match op {
            Op::Put { value, .. } => value.len(),
            Op::Delete { .. } => 0,
        };
        if value_len > limits::HARD_MAX_VALUE_BYTES {
            return Err(StorageError::invalid(format!(
                "value of {value_len} bytes exceeds {}",
                limits::HARD_MAX_VALUE_BYTES
            )));
        }
        bytes = bytes.saturating_add(key.len() + value_len);
    }
    if bytes > MAX_RECORD_BYTES {
        return Err(StorageError::invalid(format!(
            "record of {bytes} bytes exceeds {MAX_RECORD_BYTES}"
        )));
    }
    Ok(())
}

fn validate_meta_name(name: &str) -> Result<(), StorageError> {
    if name.is_empty() || name.len() > MAX_META_NAME_BYTES {
        return Err(StorageError::invalid(format!(
            "metadata name must be 1..={MAX_META_NAME_BYTES} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// A store for unit tests: at `path`, 1 MiB cache, no fsync (durability
/// across power loss is not what unit tests check). One opener for every
/// module's tests, so a new store option is set in one place.
#[cfg(test)]
pub(crate) fn open_for_tests(path: &std::path::Path) -> MvccStore {
    MvccStore::open(StoreOptions {
        path: path.to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 1 << 20,
    })
    .expect("open a test store")
}

#[cfg(test)]
mod tests;
