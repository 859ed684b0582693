//! The node's KV engine: validation, the single-writer group-commit loop,
//! transactions, snapshot reads and garbage collection.
//!
//! **Architecture Invariant:** exactly one thread (the writer) stamps and
//! applies writes. It takes a batch of queued writes, stamps each with a fresh
//! HLC timestamp (strictly increasing), evaluates transaction guards against
//! the state *including earlier writes of the same batch*, applies the whole
//! batch as one atomic storage batch, makes it durable with one sync (group
//! commit), then publishes the *closed timestamp* and only then replies.
//!
//! **Architecture Invariant:** the closed timestamp `C` is published only
//! after every write stamped `<= C` is applied, and every later write is
//! stamped `> C` (it is taken from the same clock afterwards). So a read at
//! `C` is a consistent snapshot that includes every acknowledged write: reads
//! at "latest" are linearizable on a single node (docs/consistency.md).
//!
//! Readers never block the writer: they read fjall directly at a timestamp.
//! Callers (QUIC server, HTTP gateway) share one `Engine` behind an `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub mod replicated;

pub use replicated::Replicated;

pub use crate::decide::{compare_holds, WriteKind};
use crate::decide::{decide, record_in_overlay, Overlay};

use crate::clock::{ClockError, Hlc};
use crate::config::Limits;
use crate::error_code::{ApiError, ErrorCode};
use crate::limits::{GC_BATCH_VERSIONS, MAX_GROUP_COMMIT, MAX_HISTORY_PAGE, WRITE_QUEUE_CAPACITY};
use crate::raft::RangeGroup;
use crate::storage::{GcSpan, MvccStore, StorageError, WriteRecord};
use crate::types::{CompareTarget, KeyValue, Op, ReadConsistency, Timestamp, Txn, VersionEntry};

/// Metric: writes per group commit (histogram, unitless count).
pub const METRIC_GROUP_COMMIT_SIZE: &str = "meridian_group_commit_writes";
/// Metric: time to apply and sync one group commit.
pub const METRIC_COMMIT_SECONDS: &str = "meridian_commit_duration_seconds";
/// Metric: versions removed by garbage collection.
pub const METRIC_GC_REMOVED: &str = "meridian_gc_removed_versions_total";

/// How often the writer advances the closed timestamp when idle.
const TICK_INTERVAL: Duration = Duration::from_millis(200);

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

enum Cmd {
    Write {
        kind: WriteKind,
        reply: oneshot::Sender<Result<TxnOutcome, ApiError>>,
    },
    /// Advance the closed timestamp and reply with it.
    Barrier(oneshot::Sender<Timestamp>),
    /// Periodic: advance the closed timestamp.
    Tick,
    /// Finish the current batch, then stop; queued commands after it are dropped
    /// (their callers see `Unavailable`, nothing of theirs was written).
    Stop,
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
}

/// The KV engine. Cheap to share behind an `Arc`.
pub struct Engine {
    /// Set when the node is part of a replicated region: writes and reads go
    /// through the key's range group instead of the single writer.
    replicated: Option<Replicated>,
    store: MvccStore,
    hlc: Arc<Hlc>,
    limits: Limits,
    tx: mpsc::Sender<Cmd>,
    closed: Arc<AtomicU64>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    gc: std::sync::Mutex<Option<GcHandle>>,
    ticker: tokio::task::JoinHandle<()>,
}

/// Stop signal and join handle of the garbage-collection thread.
type GcHandle = (std::sync::mpsc::Sender<()>, JoinHandle<()>);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("closed", &self.closed_ts())
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

fn clock_error(e: ClockError) -> ApiError {
    match e {
        ClockError::OffsetTooLarge { .. } => ApiError::new(ErrorCode::ClockOffset, e.to_string()),
        other => ApiError::new(ErrorCode::StorageFailure, other.to_string()),
    }
}

fn unavailable() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "the node is shutting down")
}

impl Engine {
    /// Starts the writer thread and the tick task. Must be called inside a tokio runtime.
    pub fn start(
        store: MvccStore,
        hlc: Arc<Hlc>,
        opts: EngineOptions,
        replicated: Option<Replicated>,
    ) -> Result<Engine, ApiError> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let closed = Arc::new(AtomicU64::new(hlc.now().map_err(clock_error)?.0));
        let writer = Writer {
            store: store.clone(),
            hlc: hlc.clone(),
            closed: closed.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("meridian-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("spawn writer: {e}")))?;
        let (gc_stop, gc_stop_rx) = std::sync::mpsc::channel();
        let horizons = match &replicated {
            None => Horizons::Store {
                closed: closed.clone(),
            },
            Some(r) => Horizons::Ranges {
                groups: register_range_horizons(&store, r)?,
            },
        };
        let collector = Collector {
            store: store.clone(),
            horizons,
            history_window: opts.history_window,
            interval: opts.gc_interval,
        };
        let gc = std::thread::Builder::new()
            .name("meridian-gc".into())
            .spawn(move || collector.run(gc_stop_rx))
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("spawn gc: {e}")))?;
        let tick_tx = tx.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                // A full queue means the writer is busy and advancing anyway.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tick_tx.try_send(Cmd::Tick) {
                    break;
                }
            }
        });
        Ok(Engine {
            replicated,
            store,
            hlc,
            limits: opts.limits,
            tx,
            closed,
            writer: std::sync::Mutex::new(Some(handle)),
            gc: std::sync::Mutex::new(Some((gc_stop, gc))),
            ticker,
        })
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The replicated routing, when the node is part of a region's groups.
    pub fn replicated(&self) -> Option<&Replicated> {
        self.replicated.as_ref()
    }

    /// The store (for status and metrics).
    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// The closed timestamp: every write at or below it is applied.
    pub fn closed_ts(&self) -> Timestamp {
        Timestamp(self.closed.load(Ordering::Acquire))
    }

    /// Stops the writer after the writes queued so far; later calls get
    /// `Unavailable`. Blocks until the writer thread has exited.
    pub async fn shutdown(&self) {
        self.ticker.abort();
        let _ = self.tx.send(Cmd::Stop).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let gc = self.gc.lock().ok().and_then(|mut g| g.take());
        if let Some((stop, h)) = gc {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
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

    async fn submit(&self, kind: WriteKind) -> Result<TxnOutcome, ApiError> {
        if let Some(r) = &self.replicated {
            return r.write(&self.hlc, kind).await;
        }
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Write { kind, reply };
        self.tx.send(cmd).await.map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
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

    /// Resolves the snapshot timestamp for a read: latest closed, or `at`
    /// once the closed timestamp has reached it.
    async fn read_ts(&self, at: Option<Timestamp>) -> Result<Timestamp, ApiError> {
        let closed = self.closed_ts();
        let Some(at) = at else { return Ok(closed) };
        if at <= closed {
            return Ok(at);
        }
        if at > self.hlc.last() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "snapshot timestamp {at} is in the future (clock is at {})",
                    self.hlc.last()
                ),
            ));
        }
        // Writes stamped below `at` may still be in the queue: wait for them.
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Barrier(reply))
            .await
            .map_err(|_| unavailable())?;
        let closed = rx.await.map_err(|_| unavailable())?;
        debug_assert!(
            closed >= at,
            "barrier must close past every issued timestamp"
        );
        Ok(at)
    }

    /// Reads `key` at the latest state or at snapshot `at`.
    pub async fn get(
        &self,
        key: Vec<u8>,
        at: Option<Timestamp>,
    ) -> Result<Served<Option<KeyValue>>, ApiError> {
        self.get_with(key, at, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the chosen consistency (see [`ReadConsistency`]).
    pub async fn get_with(
        &self,
        key: Vec<u8>,
        at: Option<Timestamp>,
        consistency: ReadConsistency,
    ) -> Result<Served<Option<KeyValue>>, ApiError> {
        self.check_key(&key)?;
        let ts = match (&self.replicated, consistency) {
            (Some(r), ReadConsistency::Linearizable) => {
                r.read_ts(&self.hlc, r.range_of(&key)?, at).await?
            }
            (Some(r), ReadConsistency::Serializable) => r.local_ts(r.range_of(&key)?, at)?,
            (None, _) => self.read_ts(at).await?,
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
        self.range_with(start, end, limit, at, ReadConsistency::Linearizable)
            .await
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
            || end
                .as_ref()
                .is_some_and(|e| e.len() > self.limits.max_key_bytes)
        {
            return Err(ApiError::new(
                ErrorCode::KeyTooLarge,
                "range bound longer than max_key_bytes",
            ));
        }
        let (ts, end, range_end) = match &self.replicated {
            None => (self.read_ts(at).await?, end, None),
            Some(r) => {
                // One page never crosses a range boundary: each range has its
                // own applied timestamp. Paging continues in the next range.
                let range = r.range_of(&start)?;
                // A scan's first page is read at a fresh timestamp, closed in
                // this range by a barrier if needed, so that later pages in
                // other ranges read at it are not behind this node's clock (a
                // range's own applied timestamp can be far behind when it is
                // idle). Other leaders' clocks may be ahead of ours, so this
                // alone does not cover writes they acknowledged just before:
                // the SDK's listing picks a timestamp covering every range
                // first (docs/consistency.md R3c).
                let ts = match consistency {
                    ReadConsistency::Serializable => r.local_ts(range, at)?,
                    ReadConsistency::Linearizable => {
                        let at = match at {
                            Some(t) => t,
                            None => self.hlc.now().map_err(clock_error)?,
                        };
                        r.read_ts(&self.hlc, range, Some(at)).await?
                    }
                };
                let clip = match (&end, &range.end) {
                    (Some(e), Some(re)) if re < e => Some(re.clone()),
                    (None, Some(re)) => Some(re.clone()),
                    _ => None,
                };
                match clip {
                    Some(re) => (ts, Some(re.clone()), Some(re)),
                    None => (ts, end, None),
                }
            }
        };
        let page = self
            .store
            .scan(&start, end.as_deref(), ts, limit)
            .map_err(storage_error)?;
        Ok(Served {
            value: RangePage {
                kvs: page.items,
                next: page.next_key.or(range_end),
            },
            served_at: ts,
        })
    }

    /// Version history of `key`, newest first; `limit` 0 means the maximum page.
    pub async fn history(
        &self,
        key: Vec<u8>,
        limit: usize,
    ) -> Result<Served<Vec<VersionEntry>>, ApiError> {
        self.check_key(&key)?;
        if limit > MAX_HISTORY_PAGE {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("limit {limit} exceeds the history page maximum {MAX_HISTORY_PAGE}"),
            ));
        }
        let limit = if limit == 0 { MAX_HISTORY_PAGE } else { limit };
        let ts = match &self.replicated {
            Some(r) => r.read_ts(&self.hlc, r.range_of(&key)?, None).await?,
            None => self.closed_ts(),
        };
        let entries = self.store.history(&key, limit).map_err(storage_error)?;
        // Versions above the closed timestamp are not acknowledged yet: hide them.
        let entries = entries.into_iter().filter(|e| e.version <= ts).collect();
        Ok(Served {
            value: entries,
            served_at: ts,
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// The single owner of the write path.
struct Writer {
    store: MvccStore,
    hlc: Arc<Hlc>,
    closed: Arc<AtomicU64>,
}

type Reply = oneshot::Sender<Result<TxnOutcome, ApiError>>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch = Vec::with_capacity(MAX_GROUP_COMMIT);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_GROUP_COMMIT {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if self.process(&mut batch) {
                break;
            }
        }
        tracing::info!("writer stopped");
    }

    /// Handles one group; returns true when asked to stop.
    fn process(&mut self, batch: &mut Vec<Cmd>) -> bool {
        let mut records = Vec::new();
        let mut replies: Vec<(Reply, Result<TxnOutcome, ApiError>)> = Vec::new();
        let mut barriers = Vec::new();
        let mut overlay = Overlay::new();
        let mut stop = false;
        for cmd in batch.drain(..) {
            if stop {
                continue; // dropping the reply sender tells the caller Unavailable
            }
            match cmd {
                Cmd::Write { kind, reply, .. } => {
                    let outcome = self.stage(kind, &mut overlay, &mut records);
                    replies.push((reply, outcome));
                }
                Cmd::Barrier(reply) => barriers.push(reply),
                Cmd::Tick => {} // publishing the closed timestamp below is the point
                Cmd::Stop => stop = true,
            }
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(&records) {
                for (_, outcome) in replies.iter_mut() {
                    if outcome.is_ok() {
                        *outcome = Err(e.clone());
                    }
                }
            }
        }
        self.publish_closed();
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        let closed = Timestamp(self.closed.load(Ordering::Acquire));
        for reply in barriers {
            let _ = reply.send(closed);
        }
        stop
    }

    fn commit(&self, records: &[WriteRecord]) -> Result<(), ApiError> {
        let started = Instant::now();
        self.store.apply_batch(records).map_err(storage_error)?;
        self.store.sync().map_err(storage_error)?;
        metrics::histogram!(METRIC_GROUP_COMMIT_SIZE).record(records.len() as f64);
        metrics::histogram!(METRIC_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn publish_closed(&self) {
        match self.hlc.now() {
            Ok(ts) => {
                self.closed.fetch_max(ts.0, Ordering::AcqRel);
            }
            Err(e) => tracing::error!(error = %e, "cannot advance closed timestamp"),
        }
    }

    /// Current state of `key` for guard evaluation: this group's overlay first.
    fn current(
        &self,
        key: &[u8],
        overlay: &Overlay,
    ) -> Result<Option<(Vec<u8>, Timestamp)>, ApiError> {
        if let Some(pending) = overlay.get(key) {
            return Ok(pending.clone());
        }
        let kv = self.store.get(key, Timestamp::MAX).map_err(storage_error)?;
        Ok(kv.map(|kv| (kv.value, kv.version)))
    }

    fn stage(
        &self,
        kind: WriteKind,
        overlay: &mut Overlay,
        records: &mut Vec<WriteRecord>,
    ) -> Result<TxnOutcome, ApiError> {
        let ts = self.hlc.now().map_err(clock_error)?;
        let (succeeded, ops) = decide(kind, |key| self.current(key, overlay))?;
        if !ops.is_empty() {
            record_in_overlay(overlay, &ops, ts);
            records.push(WriteRecord { ts, ops });
        }
        Ok(TxnOutcome {
            succeeded,
            version: ts,
        })
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
        let initial = group.as_ref().map_or(floor, |g| floor.min(g.applied_ts()));
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

/// Whose timestamp each horizon follows.
enum Horizons {
    /// A single node: one store-wide horizon below the closed timestamp,
    /// which the writer advances with the clock even when idle.
    Store { closed: Arc<AtomicU64> },
    /// A region: one horizon per range, below that range's applied timestamp
    /// on this replica. An idle range's applied timestamp stands still, so
    /// its latest state stays readable; every entry this replica has still
    /// to apply lands above its applied timestamp, so apply never meets the
    /// horizon (docs/consistency.md G8).
    Ranges { groups: Vec<Arc<RangeGroup>> },
}

/// Garbage collection on its own thread, off the write path: it only removes
/// versions no read at or above the horizon can see, while writes only add
/// versions above it, so the two never conflict (storage serialises the
/// horizon change with writes).
struct Collector {
    store: MvccStore,
    horizons: Horizons,
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
                self.interval
            };
        }
    }

    /// One bounded gc step (per range in a region); returns whether a sweep
    /// has more to do.
    fn step(&self) -> bool {
        match &self.horizons {
            Horizons::Store { closed } => {
                let closed = Timestamp(closed.load(Ordering::Acquire));
                horizon_below(closed, self.history_window)
                    .is_some_and(|h| self.record(None, self.store.gc(h, GC_BATCH_VERSIONS)))
            }
            Horizons::Ranges { groups } => {
                let mut more = false;
                for g in groups {
                    let Some(h) = horizon_below(g.applied_ts(), self.history_window) else {
                        continue; // nothing applied long enough ago
                    };
                    let stats = self.store.gc_span(g.desc.id, h, GC_BATCH_VERSIONS);
                    more |= self.record(Some(g.desc.id), stats);
                }
                more
            }
        }
    }

    fn record(
        &self,
        range: Option<u64>,
        stats: Result<crate::storage::GcStats, StorageError>,
    ) -> bool {
        match stats {
            Ok(stats) => {
                metrics::counter!(METRIC_GC_REMOVED).increment(stats.removed_versions as u64);
                stats.more
            }
            Err(e) => {
                tracing::error!(error = %e, ?range, "garbage collection failed");
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
