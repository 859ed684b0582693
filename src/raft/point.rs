//! A range's Raft snapshot is a point, not a copy.
//!
//! Building a snapshot records only where it is: the snapshot meta (last log
//! id and membership) and the range's applied timestamp `last_ts` at that
//! log index ([`SnapshotPoint`]). That is one small metadata write and one
//! sync, whatever the range's size, because the store already *is* the
//! snapshot: it keeps every version a read at or above the range's gc horizon
//! can see, so the range's state at `last_ts` stays readable for as long as
//! the horizon is at or below `last_ts`. etcd compacts its log the same way:
//! its backend is the data, and a Raft snapshot for compaction is cheap.
//! (Before, every replica dumped its whole range, history included, every
//! `snapshot_after_logs` entries; under load the three replicas did so at
//! about the same moment, and the region's write p99/p999 at 256 clients was
//! 98/122 ms against 51/66 ms with snapshots deferred; docs/benchmarks.md.)
//!
//! A point becomes a file only when a leader must send it to a follower
//! behind its log (`network::full_snapshot` calls [`LocalPoint::materialize`]):
//! the range's state visible at `last_ts` ([`super::snapshot`]) is written
//! from a frozen store view on a thread of its own at nice +10, then streamed
//! like any snapshot file. The file is kept (one per range) so a transfer cut
//! off and offered again sends the same bytes and resumes; it is deleted when
//! a newer point supersedes it, and every file is deleted at restart.
//!
//! **The horizon rule.** A point can be materialised only while the range's
//! gc horizon is at or below its `last_ts` (docs/consistency.md G8: gc never
//! changes a read at or above the horizon). The view is taken before the
//! horizon is read, as every snapshot read does: gc raises the horizon
//! durably before it removes anything, so a view taken before a horizon at or
//! below `last_ts` was seen still holds every version visible at `last_ts`.
//! A point the horizon has passed is refused ([`MaterializeError::Stale`],
//! never an incomplete dump): a fresh snapshot is requested from the range's
//! Raft group and the send fails, so openraft retries with the new point.
//! That new point is materialised as soon as it is built, from the view it was
//! built with, so a horizon that follows the applied timestamp closely (a
//! zero history window) cannot pass it again before the retry.
//!
//! The current point is persisted in the store's meta keyspace as
//! `raft/<range>/snapshot`: `version u8 = 1 | postcard(SnapshotPointV1)`,
//! pinned by a frozen-bytes test, so `get_current_snapshot` answers after a
//! restart without building anything.
//!
//! **Invariant: a point never runs ahead of the data.** A built point is
//! written after the applied batches it covers, in the same ordered journal
//! (fjall keeps one journal for every keyspace of the node's database, and
//! recovery after a crash or power loss keeps a prefix of it), and synced
//! before openraft learns of it and may purge the log up to it. So a prefix
//! that holds the point holds everything it covers; a prefix that lost it
//! holds an older point whose log entries were not purged. An installed
//! point is written in the batch that records the installed state. Checked
//! again when the point is read back at open (it must not be ahead of the
//! applied state).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::type_config::alias::SnapshotMetaOf;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::snapshot::{self, SnapshotFile};
use super::types::{Cursors, RangeDescriptor, RangeId, RangeTypes};
use crate::storage::{FrozenView, MvccStore};
use crate::types::Timestamp;

type SnapshotMeta = SnapshotMetaOf<RangeTypes>;
type MaterializedSlot = Arc<tokio::sync::Mutex<Option<Materialized>>>;

/// The persisted point format this build writes and reads.
pub const POINT_FORMAT_V1: u8 = 1;
/// Format of a point that carries a floor below `last_ts` or stream
/// cursors (a range of a multi-region cluster); a single region's point
/// is still written as version 1.
pub const POINT_FORMAT_V2: u8 = 2;

/// Requests for a fresh snapshot that a range queues for its Raft group.
/// One is enough: a request only asks for "a point newer than this one",
/// and openraft builds one snapshot at a time.
pub const SNAPSHOT_REQUESTS_QUEUED: usize = 1;

fn io_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("snapshot point: {what}: {e}"))
}

/// Where a range's snapshot is: the log position it covers and the range's
/// applied timestamp there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// openraft's meta: last log id and membership covered.
    pub meta: SnapshotMeta,
    /// The range's last applied timestamp at `meta.last_log_id`.
    pub last_ts: Timestamp,
    /// The range's frontier there (equal to `last_ts` in a single region):
    /// the snapshot keeps the history in `(floor, last_ts]`.
    pub floor: Timestamp,
    /// The range's stream cursor per origin region there.
    pub cursors: Cursors,
}

impl SnapshotPoint {
    /// A single region's point: no history kept, no cursors.
    pub fn single(meta: SnapshotMeta, last_ts: Timestamp) -> SnapshotPoint {
        SnapshotPoint {
            meta,
            last_ts,
            floor: last_ts,
            cursors: Cursors::new(),
        }
    }

    /// The header of the point's snapshot file.
    pub fn header(&self, range: u64) -> snapshot::SnapshotHeader {
        snapshot::SnapshotHeader {
            range,
            last_ts: self.last_ts.0,
            floor: self.floor.0,
            cursors: self.cursors.iter().map(|(r, t)| (r.clone(), *t)).collect(),
        }
    }

    /// Whether `self` covers more of the log than `other`.
    fn is_newer_than(&self, other: &SnapshotPoint) -> bool {
        self.meta.last_log_id > other.meta.last_log_id
    }
}

/// The persisted form of a [`SnapshotPoint`], version 1. The meta is
/// openraft's serde layout, pinned with the exact openraft version like the
/// log's.
#[derive(Serialize, Deserialize)]
struct SnapshotPointV1 {
    meta: SnapshotMeta,
    last_ts: u64,
}

/// The persisted form of a [`SnapshotPoint`], version 2.
#[derive(Serialize, Deserialize)]
struct SnapshotPointV2 {
    meta: SnapshotMeta,
    last_ts: u64,
    floor: u64,
    cursors: Vec<(String, u64)>,
}

/// Encodes a point for the meta keyspace.
pub fn encode_point(point: &SnapshotPoint) -> io::Result<Vec<u8>> {
    if point.floor != point.last_ts || !point.cursors.is_empty() {
        let v2 = SnapshotPointV2 {
            meta: point.meta.clone(),
            last_ts: point.last_ts.0,
            floor: point.floor.0,
            cursors: point.cursors.iter().map(|(r, t)| (r.clone(), *t)).collect(),
        };
        return postcard::to_extend(&v2, vec![POINT_FORMAT_V2]).map_err(|e| io_err("encode", e));
    }
    let v1 = SnapshotPointV1 {
        meta: point.meta.clone(),
        last_ts: point.last_ts.0,
    };
    let mut bytes = vec![POINT_FORMAT_V1];
    bytes = postcard::to_extend(&v1, bytes).map_err(|e| io_err("encode", e))?;
    Ok(bytes)
}

/// Decodes a point written by [`encode_point`]; refuses another version.
pub fn decode_point(bytes: &[u8]) -> io::Result<SnapshotPoint> {
    let corrupt = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot point: {what}"),
        )
    };
    match bytes.split_first() {
        Some((&POINT_FORMAT_V1, body)) => {
            let v1: SnapshotPointV1 =
                postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
            Ok(SnapshotPoint::single(v1.meta, Timestamp(v1.last_ts)))
        }
        Some((&POINT_FORMAT_V2, body)) => {
            let v2: SnapshotPointV2 =
                postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
            if v2.floor > v2.last_ts {
                return Err(corrupt(format!(
                    "floor {} above last_ts {}",
                    v2.floor, v2.last_ts
                )));
            }
            Ok(SnapshotPoint {
                meta: v2.meta,
                last_ts: Timestamp(v2.last_ts),
                floor: Timestamp(v2.floor),
                cursors: v2.cursors.into_iter().collect(),
            })
        }
        Some((v, _)) => Err(corrupt(format!(
            "format {v} (this build reads {POINT_FORMAT_V1} and {POINT_FORMAT_V2})"
        ))),
        None => Err(corrupt("empty record".into())),
    }
}

/// The meta-keyspace name of range `range`'s current point.
pub fn point_name(range: RangeId) -> String {
    format!("raft/{range}/snapshot")
}

/// A range's snapshot as openraft carries it (its `SnapshotData`).
#[derive(Clone, Debug)]
pub enum RangeSnapshotData {
    /// A point of this node's own range: what building a snapshot returns
    /// and what `get_current_snapshot` answers. Materialised into a file
    /// only when it must be sent.
    Point(LocalPoint),
    /// A verified file received from a leader, to install. Deleted once the
    /// install completed.
    Received(SnapshotFile),
}

/// A point of this node's range, with the means to materialise it.
#[derive(Clone)]
pub struct LocalPoint {
    point: SnapshotPoint,
    points: Arc<RangePoints>,
}

impl std::fmt::Debug for LocalPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPoint")
            .field("range", &self.points.range.id)
            .field("point", &self.point)
            .finish()
    }
}

impl LocalPoint {
    /// The point.
    pub fn point(&self) -> &SnapshotPoint {
        &self.point
    }

    /// The snapshot file of this point: the one written for it before, or a
    /// new one (see the module header). Fails with
    /// [`MaterializeError::Stale`] once the range's gc horizon has passed
    /// the point, after requesting a fresh snapshot.
    pub async fn materialize(&self) -> Result<SnapshotFile, MaterializeError> {
        self.points.materialize(&self.point).await
    }
}

/// Why a point could not be materialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaterializeError {
    /// The range's gc horizon has passed the point: the state at its
    /// timestamp is no longer in the store. A fresh snapshot has been
    /// requested; send again and the new point goes.
    #[error(
        "range {range}: snapshot point at {last_ts} is below the gc horizon {horizon}; a new snapshot was triggered, retry"
    )]
    Stale {
        /// The range.
        range: RangeId,
        /// The point's timestamp.
        last_ts: Timestamp,
        /// The horizon that passed it.
        horizon: Timestamp,
    },
    /// Reading the store or writing the file failed; nothing changed.
    #[error("range {range}: materialise snapshot: {source}")]
    Io {
        /// The range.
        range: RangeId,
        /// The cause.
        source: io::Error,
    },
}

/// A materialised point and its file.
struct Materialized {
    point: SnapshotPoint,
    file: SnapshotFile,
}

/// A range's snapshot points: the current one (durable in the meta
/// keyspace), the file of the latest materialisation, and the channel on
/// which the range asks its Raft group for a fresh snapshot.
pub struct RangePoints {
    range: RangeDescriptor,
    store: MvccStore,
    /// Where materialised files are written.
    dir: PathBuf,
    /// The current point. Its lock also orders the writes of points, so the
    /// stored point is always the one here (never an older one written by a
    /// build that finished after an install).
    current: Mutex<Option<SnapshotPoint>>,
    /// The latest materialised file. Its lock is held while a point is
    /// materialised, so one range writes one file at a time and a send that
    /// arrives meanwhile waits for that file instead of writing its own.
    materialized: MaterializedSlot,
    /// Requests for a fresh snapshot (bounded: [`SNAPSHOT_REQUESTS_QUEUED`]).
    requests: mpsc::Sender<()>,
    /// A send found its point stale: materialise the next point as soon as
    /// it is built.
    materialize_next: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RangePoints {
    /// Opens the points of `range`, reading its current point back, and
    /// returns the receiving end of its fresh-snapshot requests (the owner
    /// of the range's Raft group drains it).
    pub fn open(
        range: RangeDescriptor,
        store: MvccStore,
        dir: PathBuf,
    ) -> io::Result<(Arc<RangePoints>, mpsc::Receiver<()>)> {
        let current = store
            .meta_get(&point_name(range.id))
            .map_err(|e| io_err("load", e))?
            .map(|bytes| decode_point(&bytes))
            .transpose()?;
        let (requests, rx) = mpsc::channel(SNAPSHOT_REQUESTS_QUEUED);
        let points = RangePoints {
            range,
            store,
            dir,
            current: Mutex::new(current),
            materialized: Arc::new(tokio::sync::Mutex::new(None)),
            requests,
            materialize_next: AtomicBool::new(false),
        };
        Ok((Arc::new(points), rx))
    }

    /// The range's id.
    pub fn range_id(&self) -> RangeId {
        self.range.id
    }

    /// The store the points are of.
    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    /// The current point, if the range has one.
    pub fn current(&self) -> Option<SnapshotPoint> {
        lock(&self.current).clone()
    }

    /// `point` as snapshot data of this range.
    pub fn local(self: &Arc<Self>, point: SnapshotPoint) -> LocalPoint {
        LocalPoint {
            point,
            points: self.clone(),
        }
    }

    /// Whether the next point should be materialised as soon as it is built
    /// (a send is waiting for one); clears the request.
    pub fn take_materialize_request(&self) -> bool {
        self.materialize_next.swap(false, Ordering::AcqRel)
    }

    /// Records a point just built (`view`: the store as of the point, when
    /// [`RangePoints::take_materialize_request`] asked for it), durably,
    /// unless a newer point (an install) is current already. Returns once
    /// the point and everything it covers are synced; a view given is then
    /// materialised in the background.
    pub async fn record_built(
        self: &Arc<Self>,
        point: SnapshotPoint,
        view: Option<FrozenView>,
    ) -> io::Result<()> {
        // Taken before the point becomes current, so a send of it waits for
        // the file written below instead of writing its own.
        let slot = match view {
            Some(_) => Some(self.materialized.clone().lock_owned().await),
            None => None,
        };
        let (this, p) = (self.clone(), point.clone());
        let recorded = tokio::task::spawn_blocking(move || this.persist_built(&p))
            .await
            .map_err(|e| io_err("record task", e))??;
        if let (true, Some(view), Some(slot)) = (recorded, view, slot) {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.materialize_into(slot, point, view).await {
                    tracing::warn!(error = %e, "cannot materialise a new snapshot point");
                }
            });
        }
        self.evict_superseded();
        Ok(())
    }

    /// Writes and syncs `point` unless a newer one is current; says whether
    /// it did.
    fn persist_built(&self, point: &SnapshotPoint) -> io::Result<bool> {
        {
            let mut current = lock(&self.current);
            if current.as_ref().is_some_and(|c| c.is_newer_than(point)) {
                return Ok(false); // an install got there first; it is durable
            }
            self.write_point(point, &[])?;
            *current = Some(point.clone());
        }
        // openraft purges the log up to this point once it learns of it:
        // what the point covers must be durable first. One sync covers the
        // point and every applied batch before it (module invariant).
        self.store
            .sync()
            .map_err(|e| io_err("sync before compaction", e))?;
        Ok(true)
    }

    /// Records an installed snapshot's point together with `with` (the
    /// applied state, the cleared install marker) in one atomic batch, then
    /// syncs. An install always makes its point current: openraft installs
    /// only a snapshot newer than everything applied.
    pub fn record_installed(
        &self,
        point: &SnapshotPoint,
        with: &[(&str, Vec<u8>)],
    ) -> io::Result<()> {
        {
            let mut current = lock(&self.current);
            self.write_point(point, with)?;
            *current = Some(point.clone());
        }
        self.store
            .sync()
            .map_err(|e| io_err("sync installed snapshot", e))
    }

    fn write_point(&self, point: &SnapshotPoint, with: &[(&str, Vec<u8>)]) -> io::Result<()> {
        let name = point_name(self.range.id);
        let bytes = encode_point(point)?;
        // Paired with the read back in `open`: never record a point we could not decode.
        debug_assert_eq!(decode_point(&bytes).ok().as_ref(), Some(point));
        let mut meta: Vec<(&str, Vec<u8>)> = with.to_vec();
        meta.push((name.as_str(), bytes));
        self.store
            .apply_batch_with_meta(&[], &meta)
            .map_err(|e| io_err("record", e))
    }

    /// Deletes the materialised file if a newer point is current (in the
    /// background: a materialisation in progress holds the slot, and checks
    /// for itself when it finishes). A send still reading the file keeps its
    /// open handle.
    pub fn evict_superseded(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut slot = this.materialized.lock().await;
            let stale = slot.as_ref().is_some_and(|m| this.is_superseded(&m.point));
            if stale {
                if let Some(m) = slot.take() {
                    m.file.remove();
                }
            }
        });
    }

    fn is_superseded(&self, point: &SnapshotPoint) -> bool {
        self.current().is_some_and(|c| c.is_newer_than(point))
    }

    async fn materialize(
        self: &Arc<Self>,
        point: &SnapshotPoint,
    ) -> Result<SnapshotFile, MaterializeError> {
        let slot = self.materialized.clone().lock_owned().await;
        if let Some(m) = slot.as_ref().filter(|m| m.point == *point) {
            return Ok(m.file.clone());
        }
        let range = self.range.id;
        let io = |source| MaterializeError::Io { range, source };
        // View first, horizon second (see the horizon rule in the header).
        let view = self
            .store
            .frozen_view()
            .map_err(|e| io(io_err("frozen view", e)))?;
        let horizon = self.store.gc_horizon_at(&self.range.start);
        if horizon > point.floor {
            self.request_fresh(point, horizon);
            return Err(MaterializeError::Stale {
                range,
                last_ts: point.last_ts,
                horizon,
            });
        }
        // A task of its own: a send cancelled meanwhile (replication moved
        // on) drops only its wait, and the file still lands in the slot
        // instead of being orphaned until the next restart.
        let (this, point) = (self.clone(), point.clone());
        tokio::spawn(async move { this.materialize_into(slot, point, view).await })
            .await
            .map_err(|e| io(io_err("materialise task", e)))?
            .map_err(io)
    }

    /// Writes the file of `point` from `view` on a background thread and
    /// keeps it in `slot`, replacing (deleting) the file there, unless a
    /// newer point became current meanwhile: then the file is unlinked at
    /// once and only the returned handle reads it.
    async fn materialize_into(
        &self,
        mut slot: tokio::sync::OwnedMutexGuard<Option<Materialized>>,
        point: SnapshotPoint,
        view: FrozenView,
    ) -> io::Result<SnapshotFile> {
        let started = Instant::now();
        let header = point.header(self.range.id);
        let (range, dir) = (self.range.clone(), self.dir.clone());
        let file = in_background("range-snapshot", move || {
            snapshot::write_snapshot(&view, &range, &header, &dir)
        })
        .await?;
        let elapsed = started.elapsed();
        metrics::histogram!("meridian_raft_snapshot_materialize_seconds")
            .record(elapsed.as_secs_f64());
        metrics::histogram!("meridian_raft_snapshot_materialize_bytes").record(file.len() as f64);
        tracing::info!(
            range = self.range.id,
            index = ?point.meta.last_log_id.map(|l| l.index),
            last_ts = point.last_ts.0,
            bytes = file.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "materialised a range snapshot point"
        );
        if self.is_superseded(&point) {
            file.remove();
        } else if let Some(old) = slot.replace(Materialized {
            point,
            file: file.clone(),
        }) {
            old.file.remove();
        }
        Ok(file)
    }

    fn request_fresh(&self, point: &SnapshotPoint, horizon: Timestamp) {
        self.materialize_next.store(true, Ordering::Release);
        // Full: a request is already queued, which is all this asks for.
        // Closed: the group is shutting down and sends nothing more.
        let _ = self.requests.try_send(());
        metrics::counter!("meridian_raft_snapshot_stale_points_total").increment(1);
        tracing::warn!(
            range = self.range.id,
            index = ?point.meta.last_log_id.map(|l| l.index),
            last_ts = point.last_ts.0,
            horizon = horizon.0,
            "snapshot point is below the gc horizon; requested a new snapshot"
        );
    }
}

/// Runs `work` on a thread of its own at a lower OS priority (Linux: nice
/// +10 for that thread only), so writing a range's snapshot file yields the
/// CPU to requests and Raft traffic when the machine is busy.
pub(super) async fn in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_thread_priority();
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| io_err("background work", "thread ended without a result"))?
}

#[cfg(target_os = "linux")]
fn lower_thread_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    // Crossplatform 22 of 0..=99 maps to nice +10 for a normal thread. On
    // Linux a nice value belongs to the calling thread only.
    let result = ThreadPriorityValue::try_from(22u8)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            set_current_thread_priority(ThreadPriority::Crossplatform(v)).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not lower the snapshot thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority() {
    // Elsewhere a nice value is per process: leave it alone.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WriteRecord;
    use crate::types::Op;

    fn point(index: u64, last_ts: u64) -> SnapshotPoint {
        SnapshotPoint::single(
            SnapshotMeta {
                last_log_id: Some(openraft::testing::log_id::<RangeTypes>(1, 1, index)),
                last_membership: Default::default(),
            },
            Timestamp(last_ts),
        )
    }

    #[test]
    fn frozen_point_bytes() {
        let bytes = encode_point(&point(40, 300)).unwrap();
        assert_eq!(bytes, FROZEN_POINT);
        assert_eq!(decode_point(&bytes).unwrap(), point(40, 300));
    }

    /// `raft/<range>/snapshot` as version 1 writes it.
    const FROZEN_POINT: &[u8] = &[
        1, // point format 1
        1, 1, 1, 40, // last_log_id: Some(term 1, node 1, index 40)
        0, 0, 0, // last_membership: log id None, no configs, no nodes
        0, // openraft's reserved snapshot_id slot: ""
        0xac, 0x02, // last_ts 300
    ];

    /// A multi-region point keeps its floor and cursors (version 2).
    #[test]
    fn frozen_replicated_point_bytes() {
        let mut p = point(40, 300);
        p.floor = Timestamp(200);
        p.cursors.insert("eu".into(), 250);
        let bytes = encode_point(&p).unwrap();
        assert_eq!(bytes[0], POINT_FORMAT_V2);
        assert_eq!(
            &bytes[bytes.len() - 10..],
            &[0xac, 0x02, 0xc8, 0x01, 1, 2, b'e', b'u', 0xfa, 0x01],
            "last_ts 300, floor 200, one cursor"
        );
        assert_eq!(decode_point(&bytes).unwrap(), p);
    }

    #[test]
    fn a_point_of_another_format_is_refused() {
        let mut bytes = encode_point(&point(1, 1)).unwrap();
        bytes[0] = 9;
        let err = decode_point(&bytes).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
        assert!(decode_point(&[]).is_err());
        assert!(decode_point(&[POINT_FORMAT_V1, 0xff]).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_at_nice_ten() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let nice = rt
            .block_on(in_background("nice-test", || {
                let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
                // Fields after the parenthesised command name; nice is field 19.
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
                let nice = rest.split_whitespace().nth(16).unwrap_or_default();
                nice.parse::<i32>().map_err(io::Error::other)
            }))
            .unwrap();
        assert_eq!(nice, 10);
    }

    fn open(dir: &std::path::Path) -> (MvccStore, Arc<RangePoints>, mpsc::Receiver<()>) {
        let store = crate::storage::open_for_tests(&dir.join("db"));
        let range = RangeDescriptor {
            id: 1,
            start: Vec::new(),
            end: None,
        };
        let (points, rx) = RangePoints::open(range, store.clone(), dir.join("snaps")).unwrap();
        (store, points, rx)
    }

    fn write(store: &MvccStore, ts: u64, key: &str) {
        let op = Op::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        };
        store
            .apply_batch(&[WriteRecord {
                ts: Timestamp(ts),
                ops: vec![op],
            }])
            .unwrap();
    }

    /// The horizon rule: a point the gc horizon has passed is refused, not
    /// dumped incompletely; a fresh snapshot is requested, and the next
    /// point is materialised as soon as it is built, so the retry finds its
    /// file ready.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_point_below_the_horizon_is_refused_and_a_fresh_one_requested() {
        let dir = tempfile::tempdir().unwrap();
        let (store, points, mut requests) = open(dir.path());
        write(&store, 5, "a");
        points.record_built(point(3, 5), None).await.unwrap();
        write(&store, 8, "b");
        store.raise_gc_horizon(b"", None, Timestamp(8)).unwrap();
        let stale = points.local(point(3, 5)).materialize().await;
        match stale {
            Err(MaterializeError::Stale {
                last_ts, horizon, ..
            }) => assert_eq!((last_ts, horizon), (Timestamp(5), Timestamp(8))),
            other => panic!("{other:?}"),
        }
        assert!(
            requests.try_recv().is_ok(),
            "a fresh snapshot was requested"
        );
        assert!(!dir.path().join("snaps").exists(), "no file was written");

        // What get_snapshot_builder does next: the request asks for a view.
        assert!(points.take_materialize_request());
        assert!(!points.take_materialize_request(), "asked once");
        let fresh = point(4, 8);
        let view = store.frozen_view().unwrap();
        points
            .record_built(fresh.clone(), Some(view))
            .await
            .unwrap();
        // Written from the view while the retry waits for the slot.
        let file = points.local(fresh.clone()).materialize().await.unwrap();
        let again = points.local(fresh).materialize().await.unwrap();
        assert_eq!((file.id(), file.path()), (again.id(), again.path()));
        let (_, header) = SnapshotFile::open_verified(file.path()).unwrap();
        assert_eq!(header.last_ts, 8);
    }

    /// A resumed send gets the same file; a newer point's materialisation
    /// deletes the superseded file; a restart finds the current point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn materialised_files_are_kept_per_point_and_replaced_by_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (store, points, _requests) = open(dir.path());
        write(&store, 5, "a");
        points.record_built(point(3, 5), None).await.unwrap();
        let first = points.local(point(3, 5)).materialize().await.unwrap();
        let resumed = points.local(point(3, 5)).materialize().await.unwrap();
        assert_eq!(first.path(), resumed.path());
        write(&store, 9, "b");
        points.record_built(point(6, 9), None).await.unwrap();
        let second = points.local(point(6, 9)).materialize().await.unwrap();
        assert_ne!(first.id(), second.id());
        assert!(!first.path().exists(), "the superseded file is deleted");
        assert!(second.path().exists());
        // The same point materialised from scratch gives the same bytes.
        let view = store.frozen_view().unwrap();
        let range = points.range.clone();
        let header = snapshot::SnapshotHeader::single(range.id, 9);
        let again =
            snapshot::write_snapshot(&view, &range, &header, &dir.path().join("other")).unwrap();
        assert_eq!(again.id(), second.id());
        drop(points);
        let range = RangeDescriptor {
            id: 1,
            start: Vec::new(),
            end: None,
        };
        let (reopened, _) = RangePoints::open(range, store, dir.path().join("snaps")).unwrap();
        assert_eq!(reopened.current(), Some(point(6, 9)));
    }

    /// A build that finishes after an install of a newer snapshot does not
    /// replace the installed point, in memory or on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_build_never_replaces_an_installed_point() {
        let dir = tempfile::tempdir().unwrap();
        let (store, points, _requests) = open(dir.path());
        points.record_installed(&point(10, 20), &[]).unwrap();
        points.record_built(point(7, 15), None).await.unwrap();
        assert_eq!(points.current(), Some(point(10, 20)));
        let stored = store.meta_get(&point_name(1)).unwrap().unwrap();
        assert_eq!(decode_point(&stored).unwrap(), point(10, 20));
    }
}
