//! A range's state machine: the MVCC store, restricted to the range's span.
//!
//! Apply runs the same deterministic decision as the single-node writer
//! ([`crate::engine::decide`]) and writes the results, the applied log id,
//! the membership and the last applied timestamp in one atomic batch.
//! Snapshots are a complete dump of the range's versions (history included,
//! so snapshot reads agree across replicas), bounded by
//! [`MAX_SNAPSHOT_VERSIONS`]. The state machine task only takes a frozen
//! view of the store (no copy) together with the applied state; the dump is
//! encoded from that view on a thread of its own at a lower OS priority, so
//! apply never waits for it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::types::{RangeDescriptor, RangeId, RangeReply, RangeTypes};
use crate::clock::Hlc;
use crate::engine::decide::{decide, record_in_overlay, KeyState, Overlay};
use crate::storage::{FrozenView, MvccStore, RawVersion, WriteRecord};
use crate::types::Timestamp;

/// Largest number of versions a range snapshot may hold. A range that grows
/// past it must be split (range splitting is future work); building a
/// snapshot then fails loudly instead of truncating.
pub const MAX_SNAPSHOT_VERSIONS: usize = 2_000_000;

/// Format byte of a snapshot body.
const SNAPSHOT_FORMAT_V1: u8 = 1;

type LogId = LogIdOf<RangeTypes>;
type Membership = StoredMembershipOf<RangeTypes>;
type Snapshot = SnapshotOf<RangeTypes, Vec<u8>>;
type SnapshotMeta = SnapshotMetaOf<RangeTypes>;

fn io_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("range state machine: {what}: {e}"))
}

/// The persisted applied state of a range, written with every apply.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    applied: Option<LogId>,
    membership: Membership,
    last_ts: u64,
}

/// The body of a snapshot: the range and every version in it.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    range: RangeId,
    last_ts: u64,
    versions: Vec<(Vec<u8>, u64, Option<Vec<u8>>)>,
}

fn meta_name(range: RangeId) -> String {
    format!("raft/{range}/applied")
}

/// The state machine of one range group.
pub struct RangeStateMachine {
    range: RangeDescriptor,
    store: MvccStore,
    hlc: Arc<Hlc>,
    state: AppliedState,
    /// Highest timestamp applied, shared with readers: a read at it sees a
    /// consistent snapshot of the range (everything applied so far).
    applied_ts: Arc<AtomicU64>,
    /// The latest snapshot, shared with builders that finish it.
    current: Arc<Mutex<Option<Snapshot>>>,
}

/// Builds a snapshot from a frozen view taken while the state machine was
/// not applying (in `get_snapshot_builder`), so data and meta agree exactly.
pub struct RangeSnapshotBuilder {
    store: MvccStore,
    range: RangeDescriptor,
    meta: SnapshotMeta,
    last_ts: u64,
    view: Option<Result<FrozenView, String>>,
    current: Arc<Mutex<Option<Snapshot>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RangeStateMachine {
    /// Opens the state machine of `range`, restoring its applied state.
    pub fn open(range: RangeDescriptor, store: MvccStore, hlc: Arc<Hlc>) -> io::Result<Self> {
        let raw = store
            .meta_get(&meta_name(range.id))
            .map_err(|e| io_err("load applied state", e))?;
        let state: AppliedState = match raw {
            Some(bytes) => {
                postcard::from_bytes(&bytes).map_err(|e| io_err("decode applied state", e))?
            }
            None => AppliedState::default(),
        };
        let applied_ts = Arc::new(AtomicU64::new(state.last_ts));
        Ok(RangeStateMachine {
            range,
            store,
            hlc,
            state,
            applied_ts,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// The shared highest-applied timestamp.
    pub fn applied_ts(&self) -> Arc<AtomicU64> {
        self.applied_ts.clone()
    }

    fn current_state(&self, key: &[u8], overlay: &Overlay) -> io::Result<KeyState> {
        if let Some(pending) = overlay.get(key) {
            return Ok(pending.clone());
        }
        let kv = self
            .store
            .get(key, Timestamp::MAX)
            .map_err(|e| io_err("read for apply", e))?;
        Ok(kv.map(|kv| (kv.value, kv.version)))
    }

    fn persist_meta(&self) -> io::Result<Vec<(String, Vec<u8>)>> {
        let bytes =
            postcard::to_allocvec(&self.state).map_err(|e| io_err("encode applied state", e))?;
        Ok(vec![(meta_name(self.range.id), bytes)])
    }

    /// Applies one normal entry's command to the batch being built.
    fn apply_command(
        &mut self,
        cmd: super::types::RangeCommand,
        overlay: &mut Overlay,
        records: &mut Vec<WriteRecord>,
    ) -> io::Result<RangeReply> {
        // Deterministic version: never below the proposer's clock, always
        // above the previous applied version (see the module invariant).
        let ts = Timestamp(cmd.proposed_at.max(self.state.last_ts.saturating_add(1)));
        self.state.last_ts = ts.0;
        let Some(write) = cmd.op.into_write() else {
            // A barrier: nothing to write, the timestamp above is its effect.
            return Ok(RangeReply {
                succeeded: true,
                version: ts.0,
            });
        };
        let (succeeded, ops) = decide(write, |key| self.current_state(key, overlay))?;
        if !ops.is_empty() {
            record_in_overlay(overlay, &ops, ts);
            records.push(WriteRecord { ts, ops });
        }
        Ok(RangeReply {
            succeeded,
            version: ts.0,
        })
    }
}

/// Encodes the snapshot body of `range` from `view`, straight from the
/// store's bytes into the postcard layout of [`SnapshotBody`] (a struct is
/// its fields in order; a `Vec` is a varint count then its elements), so no
/// copy of the range is held besides the encoded body.
fn snapshot_body(view: &FrozenView, range: &RangeDescriptor, last_ts: u64) -> io::Result<Vec<u8>> {
    let encode = |e: postcard::Error| crate::storage::StorageError::InvalidArgument {
        reason: format!("encode snapshot: {e}"),
    };
    let mut versions = Vec::new();
    let count = view
        .for_each_version(
            &range.start,
            range.end.as_deref(),
            MAX_SNAPSHOT_VERSIONS,
            |key, version, value| {
                versions =
                    postcard::to_extend(&(key, version.0, value), std::mem::take(&mut versions))
                        .map_err(encode)?;
                Ok(())
            },
        )
        .map_err(|e| io_err("dump range", e))?;
    let mut bytes = vec![SNAPSHOT_FORMAT_V1];
    let header = (range.id, last_ts, count);
    bytes = postcard::to_extend(&header, bytes).map_err(|e| io_err("encode snapshot", e))?;
    bytes.extend_from_slice(&versions);
    Ok(bytes)
}

/// Runs `work` on a thread of its own at a lower OS priority (Linux: nice
/// +10 for that thread only), so dumping a range yields the CPU to requests
/// and Raft traffic when the machine is busy.
async fn in_background<T: Send + 'static>(
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

impl RaftSnapshotBuilder<RangeTypes> for RangeSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let view = match self.view.take() {
            Some(Ok(view)) => view,
            Some(Err(e)) => return Err(io_err("frozen view for a snapshot", e)),
            None => return Err(io_err("build snapshot", "builder already used")),
        };
        let store = self.store.clone();
        let range = self.range.clone();
        let last_ts = self.last_ts;
        // Dumping a range is disk and CPU work: keep it off the async
        // workers, at a priority below theirs.
        let started = std::time::Instant::now();
        let body = in_background("range-snapshot", move || {
            // openraft purges the log up to this snapshot: what it covers must be durable.
            store
                .sync()
                .map_err(|e| io_err("sync before snapshot", e))?;
            snapshot_body(&view, &range, last_ts)
        })
        .await?;
        let snapshot = Snapshot {
            meta: self.meta.clone(),
            snapshot: body,
        };
        {
            // Built off the apply path: a snapshot installed meanwhile may be
            // newer, and must not be replaced by this older one.
            let mut current = lock(&self.current);
            let newer = current
                .as_ref()
                .is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id);
            if !newer {
                *current = Some(snapshot.clone());
            }
        }
        metrics::counter!("meridian_raft_snapshots_built_total").increment(1);
        metrics::histogram!("meridian_raft_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            range = self.range.id,
            index = ?self.meta.last_log_id.map(|l| l.index),
            bytes = snapshot.snapshot.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built a range snapshot"
        );
        Ok(snapshot)
    }
}

impl RaftStateMachine<RangeTypes> for RangeStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = RangeSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<RangeTypes>, io::Error>> + Unpin + OptionalSend,
    {
        let mut records = Vec::new();
        let mut overlay = Overlay::new();
        let mut replies = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let reply = match entry.payload {
                EntryPayload::Blank => RangeReply::default(),
                EntryPayload::Membership(m) => {
                    self.state.membership = Membership::new(Some(entry.log_id), m);
                    RangeReply::default()
                }
                EntryPayload::Normal(cmd) => self.apply_command(cmd, &mut overlay, &mut records)?,
            };
            self.state.applied = Some(entry.log_id);
            replies.push((responder, reply));
        }
        let meta = self.persist_meta()?;
        let meta_refs: Vec<(&str, Vec<u8>)> =
            meta.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        self.store
            .apply_batch_with_meta(&records, &meta_refs)
            .map_err(|e| io_err("apply batch", e))?;
        let last = Timestamp(self.state.last_ts);
        // Keep the local clock above every applied version, so this node
        // (if it becomes leader) proposes above them.
        self.hlc.observe(last);
        self.applied_ts.fetch_max(last.0, Ordering::AcqRel);
        for (responder, reply) in replies {
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Nothing is applying now, so the view and the applied state agree.
        // The trait gives no way to fail here; a failure surfaces from
        // build_snapshot.
        let view = self.store.frozen_view().map_err(|e| e.to_string());
        RangeSnapshotBuilder {
            store: self.store.clone(),
            range: self.range.clone(),
            meta: SnapshotMeta {
                last_log_id: self.state.applied,
                last_membership: self.state.membership.clone(),
            },
            last_ts: self.state.last_ts,
            view: Some(view),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let body: SnapshotBody = match snapshot.split_first() {
            Some((&SNAPSHOT_FORMAT_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| io_err("decode snapshot", e))?
            }
            _ => return Err(io_err("install snapshot", "unknown snapshot format")),
        };
        if body.range != self.range.id {
            return Err(io_err(
                "install snapshot",
                format!(
                    "snapshot of range {} offered to range {}",
                    body.range, self.range.id
                ),
            ));
        }
        let versions: Vec<RawVersion> = body
            .versions
            .into_iter()
            .map(|(key, version, value)| RawVersion {
                key,
                version: Timestamp(version),
                value,
            })
            .collect();
        self.state = AppliedState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            last_ts: body.last_ts,
        };
        let meta_kv = self.persist_meta()?;
        let meta_refs: Vec<(&str, Vec<u8>)> = meta_kv
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let r = &self.range;
        // The snapshot holds the sender's history only down to the sender's
        // gc horizon: serve reads of this range from its timestamp on.
        self.store
            .raise_gc_horizon(&r.start, r.end.as_deref(), Timestamp(body.last_ts))
            .map_err(|e| io_err("raise gc horizon for snapshot", e))?;
        self.store
            .replace_range(&r.start, r.end.as_deref(), &versions, &meta_refs)
            .map_err(|e| io_err("install snapshot", e))?;
        self.store
            .sync()
            .map_err(|e| io_err("sync installed snapshot", e))?;
        self.hlc.observe(Timestamp(body.last_ts));
        self.applied_ts.fetch_max(body.last_ts, Ordering::AcqRel);
        *lock(&self.current) = Some(Snapshot {
            meta: meta.clone(),
            snapshot,
        });
        metrics::counter!("meridian_raft_snapshots_installed_total").increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.current).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FsyncPolicy, StoreOptions};
    use crate::types::Op;

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

    #[test]
    fn streamed_snapshot_body_is_the_postcard_of_snapshot_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(StoreOptions {
            path: dir.path().to_path_buf(),
            fsync: FsyncPolicy::Never,
            cache_bytes: 1 << 20,
        })
        .unwrap();
        let put = |k: &str, v: &str| Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        let records = vec![
            WriteRecord {
                ts: Timestamp(10),
                ops: vec![put("a", "1"), put("b", "2"), put("z", "out of range")],
            },
            WriteRecord {
                ts: Timestamp(11),
                ops: vec![put("a", "3"), Op::Delete { key: b"b".to_vec() }],
            },
        ];
        store.apply_batch_with_meta(&records, &[]).unwrap();
        let range = RangeDescriptor {
            id: 4,
            start: b"a".to_vec(),
            end: Some(b"m".to_vec()),
        };
        let view = store.frozen_view().unwrap();
        let streamed = snapshot_body(&view, &range, 11).unwrap();
        let versions = view.dump_range(b"a", Some(b"m"), 100).unwrap();
        assert_eq!(versions.len(), 4, "a@11, a@10, b@11 (tombstone), b@10");
        let body = SnapshotBody {
            range: 4,
            last_ts: 11,
            versions: versions
                .into_iter()
                .map(|v| (v.key, v.version.0, v.value))
                .collect(),
        };
        let mut expected = vec![SNAPSHOT_FORMAT_V1];
        expected.extend(postcard::to_allocvec(&body).unwrap());
        assert_eq!(streamed, expected);
        let decoded: SnapshotBody = postcard::from_bytes(&streamed[1..]).unwrap();
        assert_eq!(decoded.versions.len(), 4);
    }
}
