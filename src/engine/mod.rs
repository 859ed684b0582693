//! The node's KV engine: validation, routing every write to its range's
//! Raft group, linearizable and snapshot reads, and garbage collection.
//!
//! **Architecture Invariant:** there is one write path. Every write is
//! proposed to the Raft group of its key's range, stamped with the leader's
//! HLC, committed in an fsynced log and applied by the range's state machine
//! (`raft::state_machine`); a single node is a region of one voter and takes
//! the same path (docs/architecture.md). The engine never writes data itself.
//!
//! **Architecture Invariant:** a read at "latest" is served at its range's
//! applied timestamp on a replica that has confirmed its leadership (lease
//! or ReadIndex) and applied everything committed before the read began, so
//! it includes every acknowledged write (docs/consistency.md R1).
//!
//! Readers never block writers: they read the store directly at a timestamp.
//! Callers (QUIC server, HTTP gateway) share one `Engine` behind an `Arc`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::Instrument;

pub mod control;
pub mod discovery;
pub mod handoff;
pub mod lease;
pub mod levels;
pub mod lock;
pub mod replicated;
pub mod watch;
pub use watch::WatchFeed;

pub use levels::{LevelRead, Serve, CAUSAL_WAIT};
pub use replicated::Replicated;

pub use crate::decide::{compare_holds, WriteKind};

use crate::clock::{ClockError, Hlc};
use crate::config::replication::ReplicationConfig;
use crate::config::Limits;
use crate::error_code::{ApiError, ErrorCode};
use crate::limits::{GC_BATCH_VERSIONS, MAX_HISTORY_PAGE};
use crate::raft::RangeGroup;
use crate::replication::policy::{Policy, PolicyTable, Replication};
use crate::replication::read::{next_token, ReadLevel};
use crate::storage::{GcSpan, MvccStore, StorageError};
use crate::types::{CompareTarget, KeyValue, Op, ReadConsistency, Timestamp, Txn, VersionEntry};

/// Every key a write touches (compared or written).
fn write_keys(kind: &WriteKind) -> Vec<&[u8]> {
    match kind {
        WriteKind::Put { key, .. } | WriteKind::Delete { key } => vec![key],
        WriteKind::Txn(t) => t
            .compares
            .iter()
            .map(|c| c.key.as_slice())
            .chain(t.success.iter().chain(&t.failure).map(Op::key))
            .collect(),
    }
}

/// Metric: versions removed by garbage collection.
pub const METRIC_GC_REMOVED: &str = "meridian_gc_removed_versions_total";

/// Metric: the tightest staleness bound of the policies governing a range, seconds.
pub const METRIC_MAX_STALENESS: &str = "meridian_replication_max_staleness_seconds";

/// Metric: completed garbage-collection sweeps.
pub const METRIC_GC_SWEEPS: &str = "meridian_storage_gc_sweeps_total";

/// Metric: Unix time at which the last garbage-collection sweep finished, seconds.
pub const METRIC_GC_LAST_SWEEP: &str = "meridian_storage_gc_last_sweep_timestamp_seconds";

/// Metric: how far a range's collection horizon is behind the wall clock, seconds.
pub const METRIC_GC_HORIZON_AGE: &str = "meridian_storage_gc_horizon_age_seconds";

/// Result of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// HLC version the write committed at.
    pub version: Timestamp,
    /// Whether the key existed before (put: always true; delete: as found).
    pub existed: bool,
}

/// Result of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every guard held.
    pub succeeded: bool,
    /// Commit version (or the evaluation timestamp when nothing was written).
    pub version: Timestamp,
}

/// A read result with the timestamp it was served at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served<T> {
    /// The result.
    pub value: T,
    /// HLC timestamp of the snapshot.
    pub served_at: Timestamp,
}

/// One page of a range scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePage {
    /// Live pairs in key order.
    pub kvs: Vec<KeyValue>,
    /// Where the next page starts, if there may be more.
    pub next: Option<Vec<u8>>,
}

/// Engine settings taken from the node config.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Request limits.
    pub limits: Limits,
    /// History kept for snapshot reads.
    pub history_window: Duration,
    /// GC pass interval.
    pub gc_interval: Duration,
    /// The cluster's regions and every key prefix's policy.
    pub replication: ReplicationConfig,
}

/// The KV engine. Cheap to share behind an `Arc`.
pub struct Engine {
    /// The region's ranges and this node's groups: every write and
    /// linearizable read goes through the key's range group.
    region: Replicated,
    store: MvccStore,
    hlc: Arc<Hlc>,
    limits: Limits,
    /// This node's region and the cluster's regions.
    regions: Regions,
    /// Every key's policy (read-mostly; replaced at run time when this
    /// node applies a change from the control range).
    /// The policy table in force; readers take a snapshot (an `Arc`
    /// clone) and release the lock at once.
    policies: std::sync::RwLock<Arc<PolicyTable>>,
    gc: std::sync::Mutex<Option<GcHandle>>,
}

/// This node's region and every region of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// This node's region.
    pub local: String,
    /// Every region, this one included, in configured order.
    pub all: Vec<String>,
}

/// Stop signal and join handle of the garbage-collection thread.
type GcHandle = (std::sync::mpsc::Sender<()>, JoinHandle<()>);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ranges", &self.region.ranges().len())
            .finish()
    }
}

fn storage_error(e: StorageError) -> ApiError {
    match e {
        StorageError::Compacted { requested, horizon } => ApiError::new(
            ErrorCode::Compacted,
            format!("snapshot {requested} is below the garbage-collection horizon {horizon}"),
        ),
        other => ApiError::new(ErrorCode::StorageFailure, other.to_string()),
    }
}

/// Where a read is served, and the policy table version that decided it.
struct Decided {
    serve: Serve,
    table: u64,
}

/// The refusal of a write or linearizable read of a key in a handoff of
/// `prefix`'s policy (`None`: the default's) from the key's policy `from` to
/// `to` (`MER-3003`: nothing was written; retry once it completes).
fn handing_off(prefix: Option<&[u8]>, from: &Policy, to: &Policy) -> ApiError {
    let what = prefix.map_or_else(
        || "the default policy".to_string(),
        |p| format!("prefix {:?}", String::from_utf8_lossy(p)),
    );
    ApiError::new(
        ErrorCode::Unavailable,
        format!(
            "{what} is being handed off from {} at {} to {} at {} (a policy change under way): it takes no writes and no linearizable reads until the new home has every write acknowledged before (nothing was written); retry in a moment",
            from.consistency.as_str(),
            from.home,
            to.consistency.as_str(),
            to.home
        ),
    )
}

/// Refuses a leader read of range `range` decided under policy table
/// `table` when the range's policy floor is above it (`MER-3003`): a
/// handoff under a later table moved on, and another region may be the
/// home already. A table at the floor is current enough.
fn check_floor(range: u64, table: u64, floor: u64) -> Result<(), ApiError> {
    if table >= floor {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Unavailable,
        format!(
            "range {range} moved on with a policy handoff (table {floor}) this node has not applied yet (it has {table}); retry"
        ),
    ))
}

/// `op` as a client write decided under policy table `table`: wrapped so a
/// range fenced by a later handoff refuses it (`CommandV1::Policed`);
/// as it is under a table from config (version 0, which never changes).
pub(crate) fn policed(
    table: u64,
    op: crate::raft::types::CommandV1,
) -> crate::raft::types::CommandV1 {
    if table == 0 {
        op
    } else {
        crate::raft::types::CommandV1::Policed {
            table,
            op: Box::new(op),
        }
    }
}

fn clock_error(e: ClockError) -> ApiError {
    match e {
        ClockError::OffsetTooLarge { .. } => ApiError::new(ErrorCode::ClockOffset, e.to_string()),
        other => ApiError::new(ErrorCode::StorageFailure, other.to_string()),
    }
}

impl Engine {
    /// Starts the garbage collector over `region`'s ranges.
    pub fn start(
        store: MvccStore,
        hlc: Arc<Hlc>,
        opts: EngineOptions,
        region: Replicated,
    ) -> Result<Engine, ApiError> {
        let (gc_stop, gc_stop_rx) = std::sync::mpsc::channel();
        let collector = Collector {
            store: store.clone(),
            groups: register_range_horizons(&store, &region)?,
            history_window: opts.history_window,
            interval: opts.gc_interval,
        };
        let gc = std::thread::Builder::new()
            .name("meridian-gc".into())
            .spawn(move || collector.run(gc_stop_rx))
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("spawn gc: {e}")))?;
        let engine = Engine {
            region,
            store,
            hlc,
            limits: opts.limits,
            regions: Regions {
                local: opts.replication.local_region.clone(),
                all: opts.replication.regions.clone(),
            },
            policies: std::sync::RwLock::new(Arc::new(opts.replication.table)),
            gc: std::sync::Mutex::new(Some((gc_stop, gc))),
        };
        engine.publish_staleness_bounds();
        Ok(engine)
    }

    /// Sets `meridian_replication_max_staleness_seconds{range}` for every
    /// range: the tightest `max_staleness_ms` of the policies governing its
    /// keys, which the alert on `meridian_replication_frontier_age_seconds`
    /// compares against.
    fn publish_staleness_bounds(&self) {
        let table = self
            .policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in self.region.ranges() {
            let ms = table.min_staleness_ms_in(&r.start, r.end.as_deref());
            metrics::gauge!(METRIC_MAX_STALENESS, "range" => r.id.to_string())
                .set(ms as f64 / 1000.0);
        }
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This node's region and the cluster's regions.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The policy of `key` and the prefix it comes from (`None`: the default).
    pub fn policy_of(&self, key: &[u8]) -> (Option<Vec<u8>>, Policy) {
        let table = self.policy_snapshot();
        let (prefix, policy) = table.policy_of(key);
        (prefix.map(<[u8]>::to_vec), policy.clone())
    }

    /// The policy table in force now (a later install does not change it).
    fn policy_snapshot(&self) -> Arc<PolicyTable> {
        Arc::clone(
            &self
                .policies
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the policy table with `table` (the control range's, as
    /// this node applied it). Refused when it names other regions than
    /// this node replicates with (a misconfigured node keeps its table and
    /// says so). Returns whether the table changed.
    pub fn install_policies(&self, table: PolicyTable) -> Result<bool, ApiError> {
        if table.regions() != self.regions.all.as_slice() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the control range's regions ({}) differ from this node's [replication] regions ({}); fix the node's config",
                    table.regions().join(", "),
                    self.regions.all.join(", ")
                ),
            ));
        }
        let mut current = self
            .policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if **current == table {
            return Ok(false);
        }
        *current = Arc::new(table);
        drop(current);
        self.publish_staleness_bounds();
        Ok(true)
    }

    /// A copy of the whole policy table.
    pub fn policy_table(&self) -> PolicyTable {
        PolicyTable::clone(&self.policy_snapshot())
    }

    /// The frontier of the range owning `key` on this replica (see
    /// [`RangeGroup::frontier_ts`]).
    pub fn frontier_of(&self, key: &[u8]) -> Result<Timestamp, ApiError> {
        Ok(self.group_of(key)?.frontier_ts())
    }

    /// This node's group of the range owning `key`.
    fn group_of(&self, key: &[u8]) -> Result<Arc<RangeGroup>, ApiError> {
        self.region.group(self.region.range_of(key)?)
    }

    /// The region's ranges and this node's groups.
    pub fn region(&self) -> &Replicated {
        &self.region
    }

    /// The store (for status and metrics).
    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// The latest timestamp this node's clock has issued or seen: the
    /// `served_at` of answers that read no data (status, ping, health).
    pub fn clock_ts(&self) -> Timestamp {
        self.hlc.last()
    }

    /// The lowest applied timestamp over this node's ranges: every write at
    /// or below it, in any range, is applied on this replica (an idle range
    /// holds it back; it never runs ahead of what was applied).
    pub fn closed_ts(&self) -> Timestamp {
        self.region
            .ranges()
            .iter()
            .filter_map(|r| self.region.host().group(r.id))
            .map(|g| g.applied_ts())
            .min()
            .unwrap_or(Timestamp::ZERO)
    }

    /// The lowest garbage-collection horizon over the ranges: a snapshot
    /// read at or above it is served in every range.
    pub fn gc_horizon_floor(&self) -> Timestamp {
        self.region
            .ranges()
            .iter()
            .map(|r| self.store.gc_horizon_at(&r.start))
            .min()
            .unwrap_or(Timestamp::ZERO)
    }

    /// Stops the garbage collector (blocks until its thread has exited),
    /// then syncs the store. Call it after the Raft groups stopped: applied
    /// batches wait in the journal's buffer until a sync, and fjall's own
    /// flush when the database is dropped is not reached at every exit (a
    /// SIGTERMed `meridian serve` skipped it), so without this sync a
    /// cleanly stopped node's store lacked its last applies (the log still
    /// held them; tests/peer.rs
    /// a_clean_stop_leaves_every_applied_write_on_disk).
    pub async fn shutdown(&self) {
        let gc = self.gc.lock().ok().and_then(|mut g| g.take());
        if let Some((stop, h)) = gc {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store sync at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "store sync at shutdown did not run"),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes {
            return Err(ApiError::new(
                ErrorCode::KeyTooLarge,
                format!(
                    "key is {} bytes; keys must be 1..={} bytes",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), ApiError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(ApiError::new(
                ErrorCode::ValueTooLarge,
                format!(
                    "value is {} bytes; limit is {}",
                    value.len(),
                    self.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    fn check_op(&self, op: &Op) -> Result<(), ApiError> {
        self.check_key(op.key())?;
        if let Op::Put { value, .. } = op {
            self.check_value(value)?;
        }
        Ok(())
    }

    fn check_txn(&self, txn: &Txn) -> Result<(), ApiError> {
        let count = txn.compares.len() + txn.success.len() + txn.failure.len();
        if count > self.limits.max_txn_ops {
            return Err(ApiError::new(
                ErrorCode::TooManyOps,
                format!(
                    "transaction has {count} compares and operations; limit is {}",
                    self.limits.max_txn_ops
                ),
            ));
        }
        for c in &txn.compares {
            self.check_key(&c.key)?;
            if let CompareTarget::Value(v) = &c.target {
                self.check_value(v)?;
            }
        }
        txn.success
            .iter()
            .chain(&txn.failure)
            .try_for_each(|op| self.check_op(op))
    }

    /// Proposes `kind` and, when a key's policy is `sync-N`, acknowledges
    /// only once N other regions applied it (docs/consistency.md X6).
    async fn submit(&self, kind: WriteKind) -> Result<TxnOutcome, ApiError> {
        let table = self.check_write_region(&kind)?;
        let sync = self.sync_regions(&kind);
        let out = self.region.write(&self.hlc, kind, table).await?;
        if let Some((key, n)) = sync {
            self.region.confirm_sync(&key, out.version, n).await?;
        }
        Ok(out)
    }

    /// The most other regions any key of `kind` must be confirmed in (its
    /// policy's `sync-N`), with one such key; `None` when every key is
    /// `async`. A write stays in one range, so one key names it.
    fn sync_regions(&self, kind: &WriteKind) -> Option<(Vec<u8>, u8)> {
        write_keys(kind)
            .into_iter()
            .filter_map(|key| match self.policy_of(key).1.replication {
                Replication::Sync(n) => Some((key.to_vec(), n)),
                Replication::Async => None,
            })
            .max_by_key(|(_, n)| *n)
    }

    /// Refuses, before anything is proposed, a write touching a key of a
    /// strong prefix homed in another region (`MER-3006`) or of a policy
    /// in a handoff (`MER-3003`, retry); causal and eventual prefixes
    /// accept writes here (design.md, "Writes"). Returns the version of the
    /// policy table it decided under: the write carries it
    /// ([`policed`]), and a range fenced by a later handoff refuses it.
    fn check_write_region(&self, kind: &WriteKind) -> Result<u64, ApiError> {
        let table = self
            .policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_keys(kind).into_iter().try_for_each(|key| {
            let (prefix, policy) = table.policy_of(key);
            if let Some((of, to)) = table.handoff_for(key) {
                return Err(handing_off(of, policy, to));
            }
            levels::check_write(levels::KeyPolicy {
                prefix,
                policy,
                local_region: &self.regions.local,
                only_region: self.regions.all.len() <= 1,
            })
        })?;
        Ok(table.version())
    }

    /// Decides where a read of `key` at `level` is served, driving
    /// [`crate::replication::read::decide`] with the key's policy, this
    /// node's region, the range's frontier here and the clock, waiting at
    /// most [`CAUSAL_WAIT`] for a causal token.
    async fn resolve_level(&self, key: &[u8], level: &ReadLevel) -> Result<Decided, ApiError> {
        levels::check_level(level)?;
        if let ReadLevel::Causal { token } = level {
            // A token is an HLC timestamp from some node's reply: one far
            // ahead of our wall clock is refused like any remote timestamp
            // (design.md, Clocks), so a forged token cannot stall reads.
            self.hlc.check_remote(*token).map_err(clock_error)?;
        }
        // A snapshot of the table: the decision below is made under one
        // version of it, whatever is installed meanwhile.
        let t = self.policy_snapshot();
        let (prefix, policy) = t.policy_of(key);
        let handoff = t.handoff_for(key);
        if let (ReadLevel::Linearizable, Some((of, to))) = (level, handoff) {
            return Err(handing_off(of, policy, to));
        }
        let key_policy = levels::KeyPolicy {
            prefix,
            policy,
            local_region: &self.regions.local,
            only_region: self.regions.all.len() <= 1,
        };
        let env = KeyEnv { engine: self, key };
        let serve = levels::resolve(&env, key_policy, level, CAUSAL_WAIT).await?;
        // Nothing is served at the home's leader during a handoff (a
        // bounded or causal read sent there too): the home is changing.
        if let (Serve::Leader, Some((of, to))) = (&serve, handoff) {
            return Err(handing_off(of, policy, to));
        }
        let table = t.version();
        Ok(Decided { serve, table })
    }

    /// Makes a read of `range` decided under policy table `table`
    /// linearizable at this leader ([`Replicated::read_ts`]), unless a
    /// handoff fenced the range under a later table: then this node's
    /// table is out of date and another region may be the home already
    /// (`MER-3003`, retry once the node has the new table).
    async fn leader_read_ts(
        &self,
        range: &crate::raft::RangeDescriptor,
        at: Option<Timestamp>,
        table: u64,
    ) -> Result<Timestamp, ApiError> {
        let ts = self.region.read_ts(&self.hlc, range, at).await?;
        check_floor(range.id, table, self.region.group(range)?.policy_floor())?;
        Ok(ts)
    }

    /// Reads `key` at a per-call `level` (docs/consistency.md, "Read
    /// levels"): at the home leader, or locally at this region's frontier,
    /// as the key's policy and the level decide.
    pub async fn get_level(
        &self,
        key: Vec<u8>,
        level: ReadLevel,
    ) -> Result<LevelRead<Option<KeyValue>>, ApiError> {
        self.check_key(&key)?;
        let r = &self.region;
        let range = r.range_of(&key)?;
        let span = level_span(&self.regions.local, range.id, &level);
        let decided = self.resolve_level(&key, &level).instrument(span).await?;
        let (ts, staleness_ms) = match decided.serve {
            Serve::Leader => (self.leader_read_ts(range, None, decided.table).await?, 0),
            Serve::Local { at, staleness_ms } => (at, staleness_ms),
        };
        let value = self.store.get(&key, ts).map_err(storage_error)?;
        Ok(LevelRead {
            value,
            served_at: ts,
            staleness_ms,
            token: next_token(brought_token(&level), ts),
        })
    }

    /// One page of live keys in `[start, end)` at a per-call `level`. A
    /// page never crosses a policy boundary (nor a range boundary): the
    /// level is decided for the policy of `start`, and `next` continues
    /// at the boundary.
    pub async fn range_level(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        level: ReadLevel,
    ) -> Result<LevelRead<RangePage>, ApiError> {
        let limit = self.page_limit(limit, &start, end.as_deref())?;
        let r = &self.region;
        let range = r.range_of(&start)?;
        let span = level_span(&self.regions.local, range.id, &level);
        let decided = self.resolve_level(&start, &level).instrument(span).await?;
        let (ts, staleness_ms) = match decided.serve {
            Serve::Leader => {
                let at = self.hlc.now().map_err(clock_error)?;
                (
                    self.leader_read_ts(range, Some(at), decided.table).await?,
                    0,
                )
            }
            Serve::Local { at, staleness_ms } => (at, staleness_ms),
        };
        let page = self.scan_page(range, &start, end, limit, ts)?;
        Ok(LevelRead {
            value: page,
            served_at: ts,
            staleness_ms,
            token: next_token(brought_token(&level), ts),
        })
    }

    /// Where the policy covering `start` ends: the end of its prefix, or,
    /// under the default policy, the next prefix with a policy of its own.
    fn policy_span_end(&self, start: &[u8]) -> Option<Vec<u8>> {
        let table = self
            .policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match table.policy_of(start) {
            (Some(prefix), _) => crate::types::prefix_end(prefix),
            (None, _) => table
                .prefixes()
                .map(|(p, _)| p)
                .find(|p| *p > start)
                .map(<[u8]>::to_vec),
        }
    }

    /// Writes `value` at `key`.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<WriteOutcome, ApiError> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        let out = self.submit(WriteKind::Put { key, value }).await?;
        Ok(WriteOutcome {
            version: out.version,
            existed: true,
        })
    }

    /// [`Engine::put`] by a session holding `token` (writes follow reads,
    /// design.md): the token is merged into the clock first (HLC receive
    /// rule; refused with `MER-3002` when more than `clock.max_offset_ms`
    /// ahead, and nothing is written), so the write is stamped above it.
    pub async fn put_after(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        token: Timestamp,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        self.merge_token(token)?;
        let out = self.submit(WriteKind::Put { key, value }).await?;
        debug_assert!(out.version > token, "stamped above the session token");
        Ok(WriteOutcome {
            version: out.version,
            existed: true,
        })
    }

    /// [`Engine::delete`] by a session holding `token` (see
    /// [`Engine::put_after`]).
    pub async fn delete_after(
        &self,
        key: Vec<u8>,
        token: Timestamp,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_key(&key)?;
        self.merge_token(token)?;
        let out = self.submit(WriteKind::Delete { key }).await?;
        Ok(WriteOutcome {
            version: out.version,
            existed: out.succeeded,
        })
    }

    /// Merges a session token into the clock, so every timestamp this node
    /// issues next is above it. The state machine applies a write at
    /// `max(proposed_at, last_applied + 1)`, never below its stamp, so a
    /// write proposed here afterwards has a version above the token.
    fn merge_token(&self, token: Timestamp) -> Result<(), ApiError> {
        if token > self.hlc.last() {
            self.hlc.update(token).map_err(clock_error)?;
        }
        Ok(())
    }

    /// Deletes `key` (a tombstone; history keeps older versions).
    pub async fn delete(&self, key: Vec<u8>) -> Result<WriteOutcome, ApiError> {
        self.check_key(&key)?;
        let out = self.submit(WriteKind::Delete { key }).await?;
        // For deletes the writer reports existence through `succeeded`.
        Ok(WriteOutcome {
            version: out.version,
            existed: out.succeeded,
        })
    }

    /// Runs an atomic compare / then / else transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, ApiError> {
        self.check_txn(&txn)?;
        self.submit(WriteKind::Txn(txn)).await
    }

    /// Reads `key` at the latest state or at snapshot `at`, at the level
    /// its prefix promises ([`Engine::default_level`]): linearizable for a
    /// strong prefix, the region's consistent frontier for a causal one,
    /// the latest local state for an eventual one. A call that names a
    /// level ([`Engine::get_with`], [`Engine::get_level`]) gets that level
    /// or a clear error, never a weaker one.
    pub async fn get(
        &self,
        key: Vec<u8>,
        at: Option<Timestamp>,
    ) -> Result<Served<Option<KeyValue>>, ApiError> {
        match (self.default_level(&key), at) {
            (Some(level), None) => {
                let r = self.get_level(key, level).await?;
                Ok(Served {
                    value: r.value,
                    served_at: r.served_at,
                })
            }
            // A snapshot named by the caller, on a prefix that is not
            // strong: this replica's state at it, once applied here.
            (Some(_), Some(at)) => {
                self.get_with(key, Some(at), ReadConsistency::Serializable)
                    .await
            }
            (None, at) => self.get_with(key, at, ReadConsistency::Linearizable).await,
        }
    }

    /// The level a read that names none gets under `key`'s policy: `None`
    /// for a strong prefix (linearizable, at the home leader), causal with
    /// no token (the region's frontier) for a causal one, eventual for an
    /// eventual one.
    pub fn default_level(&self, key: &[u8]) -> Option<ReadLevel> {
        use crate::replication::policy::Consistency;
        match self.policy_snapshot().policy_of(key).1.consistency {
            Consistency::Strong => None,
            Consistency::Causal => Some(ReadLevel::Causal {
                token: Timestamp::ZERO,
            }),
            Consistency::Eventual => Some(ReadLevel::Eventual),
        }
    }

    /// Reads `key` with the chosen consistency (see [`ReadConsistency`]).
    pub async fn get_with(
        &self,
        key: Vec<u8>,
        at: Option<Timestamp>,
        consistency: ReadConsistency,
    ) -> Result<Served<Option<KeyValue>>, ApiError> {
        self.check_key(&key)?;
        let r = &self.region;
        let range = r.range_of(&key)?;
        let ts = match consistency {
            ReadConsistency::Linearizable => {
                // The key's prefix must allow it and this must be its home.
                let decided = self.resolve_level(&key, &ReadLevel::Linearizable).await?;
                self.leader_read_ts(range, at, decided.table).await?
            }
            ReadConsistency::Serializable => r.local_ts(range, at)?,
        };
        let value = self.store.get(&key, ts).map_err(storage_error)?;
        Ok(Served {
            value,
            served_at: ts,
        })
    }

    /// Scans live keys in `[start, end)`; `limit` 0 means the default page size.
    pub async fn range(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        at: Option<Timestamp>,
    ) -> Result<Served<RangePage>, ApiError> {
        match (self.default_level(&start), at) {
            (Some(level), None) => {
                let r = self.range_level(start, end, limit, level).await?;
                Ok(Served {
                    value: r.value,
                    served_at: r.served_at,
                })
            }
            (Some(_), Some(at)) => {
                self.range_with(start, end, limit, Some(at), ReadConsistency::Serializable)
                    .await
            }
            (None, at) => {
                self.range_with(start, end, limit, at, ReadConsistency::Linearizable)
                    .await
            }
        }
    }

    /// [`Engine::range`] with the chosen consistency.
    pub async fn range_with(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        at: Option<Timestamp>,
        consistency: ReadConsistency,
    ) -> Result<Served<RangePage>, ApiError> {
        let limit = self.page_limit(limit, &start, end.as_deref())?;
        let r = &self.region;
        // One page never crosses a range boundary: each range has its own
        // applied timestamp. Paging continues in the next range.
        let range = r.range_of(&start)?;
        // A scan's first page is read at a fresh timestamp, closed in this
        // range by a barrier if needed, so that later pages in other ranges
        // read at it are not behind this node's clock (a range's own applied
        // timestamp can be far behind when it is idle). Other leaders' clocks
        // may be ahead of ours, so this alone does not cover writes they
        // acknowledged just before: the SDK's listing picks a timestamp
        // covering every range first (docs/consistency.md R3c).
        let ts = match consistency {
            ReadConsistency::Serializable => r.local_ts(range, at)?,
            ReadConsistency::Linearizable => {
                let decided = self.resolve_level(&start, &ReadLevel::Linearizable).await?;
                let at = match at {
                    Some(t) => t,
                    None => self.hlc.now().map_err(clock_error)?,
                };
                self.leader_read_ts(range, Some(at), decided.table).await?
            }
        };
        let page = self.scan_page(range, &start, end, limit, ts)?;
        Ok(Served {
            value: page,
            served_at: ts,
        })
    }

    /// The page size for `limit` (0: the default), after checking it and
    /// the bounds against the limits.
    fn page_limit(
        &self,
        limit: usize,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<usize, ApiError> {
        let limit = match limit {
            0 => crate::limits::DEFAULT_SCAN_PAGE.min(self.limits.max_scan_page),
            n if n > self.limits.max_scan_page => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "limit {n} exceeds max_scan_page {}",
                        self.limits.max_scan_page
                    ),
                ))
            }
            n => n,
        };
        if start.len() > self.limits.max_key_bytes
            || end.is_some_and(|e| e.len() > self.limits.max_key_bytes)
        {
            return Err(ApiError::new(
                ErrorCode::KeyTooLarge,
                "range bound longer than max_key_bytes",
            ));
        }
        Ok(limit)
    }

    /// Scans `[start, end)` at `ts`, clipped to `range` and to the policy
    /// covering `start`; `next` continues past the clip.
    fn scan_page(
        &self,
        range: &crate::raft::RangeDescriptor,
        start: &[u8],
        end: Option<Vec<u8>>,
        limit: usize,
        ts: Timestamp,
    ) -> Result<RangePage, ApiError> {
        // The nearest of the range's end and the policy's end, if it cuts
        // the requested span short.
        let clip = [range.end.clone(), self.policy_span_end(start)]
            .into_iter()
            .flatten()
            .filter(|c| end.as_ref().is_none_or(|e| c < e))
            .min();
        let end = clip.clone().or(end);
        let page = self
            .store
            .scan_bounded(
                start,
                end.as_deref(),
                ts,
                limit,
                self.limits.max_scan_page_bytes,
            )
            .map_err(storage_error)?;
        Ok(RangePage {
            kvs: page.items,
            next: page.next_key.or(clip),
        })
    }

    /// Version history of `key`, newest first; `limit` 0 means the maximum page.
    pub async fn history(
        &self,
        key: Vec<u8>,
        limit: usize,
    ) -> Result<Served<Vec<VersionEntry>>, ApiError> {
        // The first QUIC history request has no continuation: it gets the
        // versions asked for in one reply or, when they would not fit in
        // one page (`limits.max_scan_page_bytes`), a clear error naming
        // the paged request, never a silently shortened list. (A version
        // being applied, hidden from the page, can make a history that is
        // exactly at the bound look cut: the answer is then the same
        // advice to page.)
        let wanted = if limit == 0 { MAX_HISTORY_PAGE } else { limit };
        let max_bytes = self.limits.max_scan_page_bytes;
        let page = self.history_page(key, None, limit, max_bytes).await?;
        let (entries, next) = page.value;
        if next.is_some() && entries.len() < wanted {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the newest {wanted} versions hold more than one reply's limits.max_scan_page_bytes ({max_bytes} bytes) of values; \
                     ask for them a page at a time (HistoryPage: Client::history_page, or `meridian kv history`, which pages) or ask for fewer"
                ),
            ));
        }
        Ok(Served {
            value: entries,
            served_at: page.served_at,
        })
    }

    /// One page of a key's versions below `before` (newest first), ending
    /// at `limit` versions or before the values pass `max_bytes` (at least
    /// one version). The second value is the `before` of the next page when
    /// older versions remain.
    pub async fn history_page(
        &self,
        key: Vec<u8>,
        before: Option<Timestamp>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Served<(Vec<VersionEntry>, Option<Timestamp>)>, ApiError> {
        self.check_key(&key)?;
        if limit > MAX_HISTORY_PAGE {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("limit {limit} exceeds the history page maximum {MAX_HISTORY_PAGE}"),
            ));
        }
        let limit = if limit == 0 { MAX_HISTORY_PAGE } else { limit };
        let r = &self.region;
        let ts = r.read_ts(&self.hlc, r.range_of(&key)?, None).await?;
        let (entries, more) = self
            .store
            .history_page(&key, before, limit, max_bytes)
            .map_err(storage_error)?;
        let next = if more {
            entries.last().map(|e| e.version)
        } else {
            None
        };
        // Versions above the range's applied timestamp are not acknowledged
        // yet (a newer entry being applied): hide them.
        let entries = entries.into_iter().filter(|e| e.version <= ts).collect();
        Ok(Served {
            value: (entries, next),
            served_at: ts,
        })
    }
}

/// The span of a level read's decision (and causal wait), with the fields
/// an operator filters by.
fn level_span(region: &str, range: u64, level: &ReadLevel) -> tracing::Span {
    tracing::debug_span!(
        "level_read",
        region,
        range,
        level = levels::level_name(level)
    )
}

/// The session token a level brings (causal reads only).
fn brought_token(level: &ReadLevel) -> Option<Timestamp> {
    match level {
        ReadLevel::Causal { token } => Some(*token),
        _ => None,
    }
}

/// The frontier of one key's range and the engine's clock, for
/// [`levels::resolve`].
struct KeyEnv<'a> {
    engine: &'a Engine,
    key: &'a [u8],
}

impl levels::LevelEnv for KeyEnv<'_> {
    fn frontier(&self) -> Result<Timestamp, ApiError> {
        self.engine.frontier_of(self.key)
    }

    fn applied(&self) -> Result<Timestamp, ApiError> {
        Ok(self.engine.group_of(self.key)?.applied_ts())
    }

    fn now(&self) -> Result<Timestamp, ApiError> {
        self.engine.hlc.now().map_err(clock_error)
    }
}

/// Registers one gc horizon per range of the region with storage (which
/// then collects and checks each range on its own), and returns the groups
/// whose applied timestamps the collector follows.
///
/// A range starts at its persisted horizon, or, the first time, at the
/// lower of the store-wide horizon (where a node that collected store-wide
/// before got to) and what the range has applied, so apply never meets it.
fn register_range_horizons(
    store: &MvccStore,
    r: &Replicated,
) -> Result<Vec<Arc<RangeGroup>>, ApiError> {
    let floor = store.gc_horizon();
    let mut groups = Vec::new();
    let mut spans = Vec::new();
    for range in r.ranges() {
        let group = r.host().group(range.id);
        let initial = group.as_ref().map_or(floor, |g| floor.min(g.frontier_ts()));
        spans.push((
            GcSpan {
                id: range.id,
                start: range.start.clone(),
                end: range.end.clone(),
            },
            initial,
        ));
        groups.extend(group);
    }
    let horizons = store.set_gc_spans(spans).map_err(storage_error)?;
    tracing::info!(?horizons, "per-range gc horizons");
    Ok(groups)
}

/// The horizon `history_window` below `latest` (milliseconds, logical 0),
/// or `None` when that reaches before the HLC epoch (nothing is old enough).
/// Never above `latest`: a read at `latest` always passes it.
pub fn horizon_below(latest: Timestamp, history_window: Duration) -> Option<Timestamp> {
    let window_ms = i64::try_from(history_window.as_millis()).unwrap_or(i64::MAX);
    let horizon = Timestamp::from_parts(latest.physical_unix_ms().saturating_sub(window_ms), 0)?;
    debug_assert!(horizon <= latest);
    Some(horizon)
}

/// Garbage collection on its own thread, off the write path: it only removes
/// versions no read at or above the horizon can see, while writes only add
/// versions above it, so the two never conflict (storage serialises the
/// horizon change with writes).
///
/// Each range has its own horizon, below that range's frontier on this
/// replica (its applied timestamp in a single region). An idle range's
/// frontier stands still, so its latest state stays readable; every entry
/// this replica has still to apply, and every change another region has
/// still to send, lands above the frontier, so apply never meets the
/// horizon (docs/consistency.md G8).
struct Collector {
    store: MvccStore,
    groups: Vec<Arc<RangeGroup>>,
    history_window: Duration,
    interval: Duration,
}

/// Pause between steps of an unfinished sweep, so a sweep over a large store
/// is spread out instead of monopolising a core.
const GC_STEP_PAUSE: Duration = Duration::from_millis(20);

impl Collector {
    fn run(self, stop: std::sync::mpsc::Receiver<()>) {
        let mut wait = self.interval;
        // A message or a closed channel both mean stop; only a timeout means work.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
            wait = if self.step() {
                GC_STEP_PAUSE
            } else {
                metrics::counter!(METRIC_GC_SWEEPS).increment(1);
                let now_ms = crate::clock::PhysicalClock::now_unix_ms(&crate::clock::SystemClock);
                metrics::gauge!(METRIC_GC_LAST_SWEEP).set(now_ms as f64 / 1000.0);
                self.interval
            };
        }
    }

    /// One bounded gc step per range; returns whether a sweep has more to do.
    fn step(&self) -> bool {
        let mut more = false;
        for g in &self.groups {
            let Some(h) = horizon_below(g.frontier_ts(), self.history_window) else {
                continue; // nothing applied long enough ago
            };
            let now_ms = crate::clock::PhysicalClock::now_unix_ms(&crate::clock::SystemClock);
            let age_ms = now_ms.saturating_sub(h.physical_unix_ms()).max(0);
            metrics::gauge!(METRIC_GC_HORIZON_AGE, "range" => g.desc.id.to_string())
                .set(age_ms as f64 / 1000.0);
            let stats = self.store.gc_span(g.desc.id, h, GC_BATCH_VERSIONS);
            more |= self.record(g.desc.id, stats);
            // The change log is kept as long as the history: a history window
            // below the frontier. A region further behind than that cannot be
            // caught up from the log (its stream says so; storage records
            // where the log is complete from).
            match self.store.truncate_changes(g.desc.id, h) {
                Ok(m) => more |= m,
                Err(e) => {
                    tracing::error!(error = %e, range = g.desc.id, "change log truncation failed")
                }
            }
        }
        more
    }

    fn record(&self, range: u64, stats: Result<crate::storage::GcStats, StorageError>) -> bool {
        match stats {
            Ok(stats) => {
                metrics::counter!(METRIC_GC_REMOVED).increment(stats.removed_versions as u64);
                stats.more
            }
            Err(e) => {
                tracing::error!(error = %e, range, "garbage collection failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CompareOp;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_idle_range_keeps_its_latest_state_above_the_horizon() {
        // Applied an hour and a half ago, idle since: the horizon is an hour
        // below *that*, not below the clock, so a read at latest passes it.
        let applied = Timestamp::from_parts(1_790_000_000_000, 7).unwrap();
        let h = horizon_below(applied, HOUR).unwrap();
        assert!(h < applied);
        assert_eq!(h.physical_unix_ms(), applied.physical_unix_ms() - 3_600_000);
        assert_eq!(h.logical(), 0);
        // A window of zero still leaves the latest state readable.
        assert!(horizon_below(applied, Duration::ZERO).unwrap() <= applied);
    }

    #[test]
    fn a_leader_read_needs_a_table_at_or_above_the_range_floor() {
        assert!(check_floor(3, 0, 0).is_ok(), "no handoff ever");
        assert!(check_floor(3, 5, 5).is_ok(), "the handoff's own table");
        assert!(check_floor(3, 9, 5).is_ok());
        let e = check_floor(3, 4, 5).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(
            e.message.contains("range 3") && e.message.contains("table 5"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_never_written_range_has_no_horizon() {
        assert_eq!(horizon_below(Timestamp::ZERO, HOUR), None);
        assert_eq!(
            horizon_below(Timestamp::ZERO, Duration::ZERO),
            Some(Timestamp::ZERO)
        );
    }

    #[test]
    fn compare_semantics() {
        let present = (b"b".to_vec(), Timestamp(10));
        let s = Some(&present);
        assert!(compare_holds(
            CompareOp::Equal,
            &CompareTarget::Value(b"b".to_vec()),
            s
        ));
        assert!(compare_holds(
            CompareOp::Less,
            &CompareTarget::Value(b"c".to_vec()),
            s
        ));
        assert!(compare_holds(
            CompareOp::Greater,
            &CompareTarget::Value(b"a".to_vec()),
            s
        ));
        assert!(!compare_holds(
            CompareOp::NotEqual,
            &CompareTarget::Value(b"b".to_vec()),
            s
        ));
        assert!(!compare_holds(
            CompareOp::NotEqual,
            &CompareTarget::Value(b"b".to_vec()),
            None
        ));
        assert!(compare_holds(
            CompareOp::Equal,
            &CompareTarget::Version(Timestamp(10)),
            s
        ));
        assert!(compare_holds(
            CompareOp::Equal,
            &CompareTarget::Version(Timestamp::ZERO),
            None
        ));
        assert!(compare_holds(
            CompareOp::Greater,
            &CompareTarget::Version(Timestamp(9)),
            s
        ));
        assert!(compare_holds(
            CompareOp::Equal,
            &CompareTarget::Exists(true),
            s
        ));
        assert!(compare_holds(
            CompareOp::Equal,
            &CompareTarget::Exists(false),
            None
        ));
        assert!(!compare_holds(
            CompareOp::Equal,
            &CompareTarget::Exists(true),
            None
        ));
    }
}
