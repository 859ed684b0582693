//! The Raft groups a node runs, and the receiving side of Raft RPCs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::errors::{ClientWriteError, Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use openraft::{Config, Raft, ReadPolicy, SnapshotPolicy};

use super::reads::{Admission, ConfirmError, ReadBatcher, DEFAULT_DIRECT_CONFIRMATIONS};
use openraft_multi::GroupNetworkFactory;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::log_store::{LogSyncer, RangeLogStore};
use super::network::PeerRouter;
use super::point::RangeSnapshotData;
use super::state_machine::{snapshot_dir, RangeStateMachine, ReplicationScope};
use super::transfer::{self, Offer};
use super::types::{
    CatchUpV1, CommandV1, NodeId, RangeCommand, RangeDescriptor, RangeId, RangeTypes, ReplicateV1,
};
use crate::clock::Hlc;
use crate::error_code::{ApiError, ErrorCode};
use crate::peer::{PeerResponseV1, RaftKindV1};
use crate::storage::MvccStore;
use crate::types::Timestamp;

/// A Raft group of one range.
pub type RangeRaft = Raft<RangeTypes, RangeStateMachine>;

/// Raft timing of the region's range groups, in milliseconds.
///
/// The leader lease of openraft equals `election_timeout_max_ms`, and
/// openraft abandons a heartbeat after `heartbeat_interval_ms`: the
/// heartbeat interval must exceed the round trip between the region's
/// nodes plus their processing time, or the lease never renews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    /// Leader heartbeat interval (also the append RPC deadline).
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout; also the leader lease.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot (followers that lag less catch up from the log).
    pub logs_kept_after_snapshot: u64,
    /// Linearizable reads of a range that confirm leadership one by one
    /// while in flight together; more share confirmations
    /// ([`super::reads`]).
    pub direct_read_confirmations: usize,
}

impl Default for RaftTiming {
    /// Region-local defaults: nodes of one region are a few ms apart, so a
    /// 50 ms heartbeat leaves room for their round trip, and elections after
    /// 250-500 ms of silence (the lease is 500 ms) put a new leader in place
    /// well inside a second of losing one (issue 8: SDK writes resume within
    /// 1.5 s of a leader's SIGKILL). Snapshots every 100,000 entries with 5,000 kept behind, as etcd's
    /// `--snapshot-count` and catch-up entries do. A snapshot is only a
    /// point now (`super::point`: one small write and one sync), so the
    /// interval no longer costs a dump of the range; what it bounds is the
    /// log kept on disk, and a follower that falls further behind than the
    /// entries kept costs its leader one dump of the range's visible state.
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 500,
            snapshot_after_logs: 100_000,
            logs_kept_after_snapshot: 5_000,
            direct_read_confirmations: DEFAULT_DIRECT_CONFIRMATIONS,
        }
    }
}

/// Longest a replication batch waits to commit and apply at the destination.
pub const REPLICATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One running range group.
pub struct RangeGroup {
    /// The range.
    pub desc: RangeDescriptor,
    /// Its Raft instance on this node.
    pub raft: RangeRaft,
    applied_ts: Arc<AtomicU64>,
    frontier_ts: Arc<AtomicU64>,
    policy_floor: Arc<AtomicU64>,
    applied_changed: Arc<tokio::sync::Notify>,
    /// Until then this replica grants no votes (see [`RaftHost::open_range`]).
    votes_from: std::time::Instant,
    /// Leadership confirmations shared by concurrent linearizable reads.
    reads: Arc<ReadBatcher<LinearizableReadFailure>>,
}

/// Why openraft could not confirm a linearizable read.
pub type LinearizableReadFailure =
    RaftError<RangeTypes, openraft::errors::LinearizableReadError<RangeTypes>>;

/// Longest one shared leadership confirmation for linearizable reads may
/// take (its readers stop waiting at `REPLICATED_READ_TIMEOUT` anyway; this
/// bounds the task that runs it).
const READ_CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Counter: leadership confirmations that found the leader lease stale (or
/// this node not leading) and fell back to a heartbeat round.
pub const METRIC_READ_INDEX_FALLBACKS: &str = "meridian_raft_read_index_fallbacks_total";

/// Confirms that `raft` leads its range and has applied everything
/// committed before this call: by the leader lease when it is fresh, else by
/// a heartbeat round (`ReadIndex`).
async fn confirm_leadership(raft: &RangeRaft) -> Result<(), LinearizableReadFailure> {
    match raft.ensure_linearizable(ReadPolicy::LeaseRead).await {
        Ok(_) => Ok(()),
        Err(_) => {
            metrics::counter!(METRIC_READ_INDEX_FALLBACKS).increment(1);
            raft.ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map(|_| ())
        }
    }
}

impl RangeGroup {
    /// Confirms, for a linearizable read that arrived before this call,
    /// that this replica leads the range and has applied everything
    /// committed when the read arrived. A read makes its own confirmation
    /// unless many of this range are in flight; then it shares one (see
    /// [`crate::raft::reads`]).
    pub async fn confirm_linearizable(&self) -> Result<(), ConfirmError<LinearizableReadFailure>> {
        match self.reads.admit() {
            Admission::Direct(_in_flight) => confirm_leadership(&self.raft)
                .await
                .map_err(|e| ConfirmError::Refused(Arc::new(e))),
            Admission::Shared => self.reads.confirm_shared().await,
        }
    }

    /// The leader this replica knows of, if any.
    pub fn current_leader(&self) -> Option<NodeId> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The highest version applied on this node: a read at it is a
    /// consistent snapshot of the range as far as this replica has applied.
    pub fn applied_ts(&self) -> Timestamp {
        Timestamp(self.applied_ts.load(Ordering::Acquire))
    }

    /// The range's frontier on this replica: everything every region wrote
    /// at or below it is applied here, so a read at it is a consistent
    /// snapshot of the whole cluster's writes (docs/consistency.md). Equal
    /// to [`RangeGroup::applied_ts`] in a single region.
    pub fn frontier_ts(&self) -> Timestamp {
        Timestamp(self.frontier_ts.load(Ordering::Acquire))
    }

    /// The range's policy floor as this replica applied it: the oldest
    /// policy table version under which it still serves client writes and
    /// linearizable reads (`CommandV1::PolicyFence`; 0 when none).
    pub fn policy_floor(&self) -> u64 {
        self.policy_floor.load(Ordering::Acquire)
    }

    /// Woken (`notify_waiters`) whenever the applied timestamp or the
    /// frontier moves: create the `notified()` future before reading them,
    /// then await it, and no move is missed.
    pub fn applied_changed(&self) -> &tokio::sync::Notify {
        &self.applied_changed
    }
}

/// Errors of the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Opening the group's storage failed.
    #[error("range {range}: storage: {source}")]
    Storage {
        /// The range.
        range: RangeId,
        /// The cause.
        source: std::io::Error,
    },
    /// The log syncer thread could not start.
    #[error("raft log syncer: {0}")]
    Syncer(std::io::Error),
    /// The Raft configuration is invalid (names the problem).
    #[error("raft config: {0}")]
    Config(String),
    /// openraft could not start the group.
    #[error("range {range}: raft: {message}")]
    Raft {
        /// The range.
        range: RangeId,
        /// What failed.
        message: String,
    },
}

/// The groups of this node.
pub struct RaftHost {
    node_id: NodeId,
    store: MvccStore,
    hlc: Arc<Hlc>,
    router: PeerRouter,
    config: Arc<Config>,
    syncer: LogSyncer,
    /// The leader lease (election_timeout_max_ms) a restarted replica waits out before voting.
    lease: std::time::Duration,
    /// `RaftTiming::direct_read_confirmations` of every group it opens.
    direct_reads: usize,
    groups: RwLock<HashMap<RangeId, Arc<RangeGroup>>>,
    /// The regions every range replicates with.
    scope: ReplicationScope,
    /// One snapshot receive per range at a time: a sender that gave up and
    /// offers again must not race the abandoned receive on the same
    /// partial file.
    receiving: std::sync::Mutex<HashMap<RangeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per (range, origin region): the order replication batches are
    /// proposed in (see [`InboundOrder`]).
    inbound: std::sync::Mutex<HashMap<(RangeId, String), Arc<InboundOrder>>>,
}

/// Longest a replication batch that arrived before the batch it continues
/// waits for that one to be proposed first.
pub const REORDER_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Where the batches of one (range, origin) that this node proposed, in
/// order, end. An origin keeps several batches in flight, each its own
/// QUIC stream, so one can arrive (or be scheduled) before the batch it
/// continues; proposed first, it would be refused by the cursor
/// (`replication::stream::Inbound`) and the origin would resend from
/// there, a round trip lost. So a batch whose `after` is past the end of
/// what was proposed waits, at most [`REORDER_WAIT`], for its predecessor;
/// the proposal itself is queued under the lock (`client_write_ff`), so
/// the Raft log holds the batches in the order they continue each other.
/// Only an optimisation: the cursor in the replicated state decides what
/// applies, whatever order the batches commit in.
#[derive(Default)]
struct InboundOrder {
    /// The `closed` of the last batch queued (or the cursor a reply
    /// named); 0: nothing known, wait for nothing.
    proposed: tokio::sync::Mutex<u64>,
    moved: tokio::sync::Notify,
}

impl InboundOrder {
    /// Waits (bounded) until a batch continuing from `after` is next, and
    /// returns the lock to queue it under.
    async fn turn(&self, after: u64) -> tokio::sync::MutexGuard<'_, u64> {
        let deadline = tokio::time::Instant::now() + REORDER_WAIT;
        loop {
            // Registered before the check, so no move is missed.
            let moved = self.moved.notified();
            let proposed = self.proposed.lock().await;
            if *proposed == 0 || after <= *proposed || tokio::time::Instant::now() >= deadline {
                return proposed;
            }
            drop(proposed);
            let _ = tokio::time::timeout_at(deadline, moved).await;
        }
    }

    /// Records that everything up to `closed` is proposed (or applied).
    async fn advance(&self, closed: u64) {
        let mut proposed = self.proposed.lock().await;
        *proposed = (*proposed).max(closed);
        drop(proposed);
        self.moved.notify_waiters();
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RaftHost {
    /// A host for node `node_id`, sending RPCs from `endpoint` with
    /// `peer_config` (node certificate, peer ALPN).
    pub fn new(
        node_id: NodeId,
        endpoint: quinn::Endpoint,
        peer_config: quinn::ClientConfig,
        store: MvccStore,
        hlc: Arc<Hlc>,
        timing: &RaftTiming,
    ) -> Result<RaftHost, HostError> {
        let config = Config {
            cluster_name: "meridian".into(),
            heartbeat_interval: timing.heartbeat_interval_ms,
            election_timeout_min: timing.election_timeout_min_ms,
            election_timeout_max: timing.election_timeout_max_ms,
            // Snapshots stream in chunks whose reads have their own
            // deadline (peer::PEER_READ_TIMEOUT_MS); this bounds one call.
            install_snapshot_timeout: timing.election_timeout_max_ms.max(10_000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_after_logs),
            max_in_snapshot_log_to_keep: timing.logs_kept_after_snapshot,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        let config = config
            .validate()
            .map_err(|e| HostError::Config(e.to_string()))?;
        let syncer = LogSyncer::start(&store).map_err(HostError::Syncer)?;
        Ok(RaftHost {
            node_id,
            syncer,
            store,
            hlc,
            router: PeerRouter::new(endpoint, peer_config),
            config: Arc::new(config),
            lease: std::time::Duration::from_millis(timing.election_timeout_max_ms),
            direct_reads: timing.direct_read_confirmations,
            groups: RwLock::new(HashMap::new()),
            scope: ReplicationScope::default(),
            receiving: std::sync::Mutex::new(HashMap::new()),
            inbound: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The host with its ranges replicating with `scope`'s regions (set
    /// before any range is opened).
    pub fn with_scope(mut self, scope: ReplicationScope) -> RaftHost {
        self.scope = scope;
        self
    }

    /// The regions every range replicates with.
    pub fn scope(&self) -> &ReplicationScope {
        &self.scope
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The shared peer router (to record peer addresses).
    pub fn router(&self) -> &PeerRouter {
        &self.router
    }

    /// Starts (or returns) the group of `desc` on this node.
    pub async fn open_range(&self, desc: RangeDescriptor) -> Result<Arc<RangeGroup>, HostError> {
        if let Some(g) = self.group(desc.id) {
            return Ok(g);
        }
        let range = desc.id;
        let storage = |source| HostError::Storage { range, source };
        let mut log =
            RangeLogStore::open(&self.store, range, self.syncer.clone()).map_err(storage)?;
        // A replica that voted before may have acknowledged a leader whose
        // lease (election_timeout_max_ms, openraft's leader lease) is still
        // running, and a restart forgot when it last heard from it: granting
        // a vote now could elect a second leader while the first still
        // serves lease reads. So a restarted replica grants no vote until a
        // whole lease has passed since it started (Raft thesis §6.4's lease
        // reads assume voters remember their leader; this is the bound that
        // survives a restart). A replica that never voted had no leader.
        use openraft::RaftLogReader;
        let voted_before = log.read_vote().await.map_err(storage)?.is_some();
        let votes_from = std::time::Instant::now()
            + if voted_before {
                self.lease
            } else {
                std::time::Duration::ZERO
            };
        let mut sm = RangeStateMachine::open_in(
            desc.clone(),
            self.store.clone(),
            self.hlc.clone(),
            self.scope.clone(),
        )
        .map_err(storage)?;
        let applied_ts = sm.applied_ts();
        let frontier_ts = sm.frontier_ts();
        let policy_floor = sm.policy_floor();
        let applied_changed = sm.applied_changed();
        let requests = sm.take_snapshot_requests();
        let network = GroupNetworkFactory::new(self.router.clone(), range);
        let raft = Raft::new(self.node_id, self.config.clone(), network, log, sm)
            .await
            .map_err(|e| HostError::Raft {
                range,
                message: e.to_string(),
            })?;
        if let Some(requests) = requests {
            tokio::spawn(snapshot_on_request(range, raft.clone(), requests));
        }
        let reads = ReadBatcher::new(self.direct_reads, READ_CONFIRM_TIMEOUT, {
            let raft = raft.clone();
            move || {
                let raft = raft.clone();
                async move { confirm_leadership(&raft).await }
            }
        });
        let group = Arc::new(RangeGroup {
            desc,
            raft,
            reads,
            applied_ts,
            frontier_ts,
            policy_floor,
            applied_changed,
            votes_from,
        });
        write(&self.groups).insert(range, group.clone());
        Ok(group)
    }

    /// The group of `range`, if this node runs it.
    pub fn group(&self, range: RangeId) -> Option<Arc<RangeGroup>> {
        read(&self.groups).get(&range).cloned()
    }

    /// Every group on this node.
    pub fn groups(&self) -> Vec<Arc<RangeGroup>> {
        read(&self.groups).values().cloned().collect()
    }

    fn group_or_err(&self, range: RangeId) -> Result<Arc<RangeGroup>, ApiError> {
        self.group(range).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("node {} runs no group for range {range}", self.node_id),
            )
        })
    }

    /// Serves one incoming Raft RPC and returns the encoded result;
    /// `traced_entry` is the `proposed_at` of the entry of an AppendEntries
    /// that the RPC's (current, sampled) span traces, if any.
    pub async fn handle_rpc(
        &self,
        range: RangeId,
        kind: RaftKindV1,
        p: &[u8],
        traced_entry: Option<u64>,
    ) -> Result<Vec<u8>, ApiError> {
        let group = self.group_or_err(range)?;
        let raft = &group.raft;
        match kind {
            RaftKindV1::AppendEntries => {
                let req: AppendEntriesRequest<RangeTypes> = decode(p)?;
                self.check_entry_clocks(&req)?;
                // The traced entry's log append and apply on this replica
                // join the RPC's trace (see crate::trace_context).
                if let (Some(entry), Some(ctx)) = (traced_entry, crate::trace_context::current()) {
                    crate::trace_context::remember(range, entry, ctx);
                }
                let res: Result<AppendEntriesResponse<RangeTypes>, RaftError<RangeTypes>> =
                    raft.append_entries(req).await;
                encode(&res)
            }
            RaftKindV1::Vote | RaftKindV1::PreVote if Instant::now() < group.votes_from => {
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "range {range}: restarted replica grants no vote until the leader lease it may have acknowledged has run out"
                    ),
                ))
            }
            RaftKindV1::Vote => {
                let req: VoteRequest<RangeTypes> = decode(p)?;
                let res: Result<VoteResponse<RangeTypes>, RaftError<RangeTypes>> =
                    raft.vote(req).await;
                encode(&res)
            }
            RaftKindV1::PreVote => {
                let req: VoteRequest<RangeTypes> = decode(p)?;
                let res: Result<VoteResponse<RangeTypes>, RaftError<RangeTypes>> =
                    raft.pre_vote(req).await;
                encode(&res)
            }
            RaftKindV1::TransferLeader => {
                let req: TransferLeaderRequest<RangeTypes> = decode(p)?;
                let res: Result<TransferLeaderResponse<RangeTypes>, Fatal<RangeTypes>> =
                    raft.handle_transfer_leader(req).await;
                encode(&res)
            }
        }
    }

    /// Serves a batch of another region's changes to `range` (or an empty
    /// probe for the cursor): checks that both regions agree on the range's
    /// span, that the origin is a region the range replicates with, and
    /// that the batch's closed timestamp is within `clock.max_offset_ms` of
    /// our clock (it bounds every record's); then proposes the batch to the
    /// group, whose apply decides what is new (exactly once, through the
    /// origin's cursor) and returns the cursor.
    pub async fn handle_replicate(
        &self,
        range: RangeId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        batch: &[u8],
    ) -> PeerResponseV1 {
        let batch: ReplicateV1 = match decode(batch) {
            Ok(b) => b,
            Err(e) => return PeerResponseV1::error(&e),
        };
        let (group, now) =
            match self.inbound_target(range, &start, &end, &batch.origin, batch.closed) {
                Ok(t) => t,
                Err(reply) => return *reply,
            };
        let origin = batch.origin.clone();
        let (after, closed) = (batch.after, batch.closed);
        let record_ts: Vec<u64> = batch.records.iter().map(|r| r.ts).collect();
        let cmd = RangeCommand {
            proposed_at: now.0,
            op: CommandV1::Replicate(batch),
        };
        // A sampled batch's trace continues into this region's apply.
        if let Some(ctx) = crate::trace_context::current() {
            crate::trace_context::remember(range, now.0, ctx);
        }
        let order = self.inbound_order(range, &origin);
        let (responder, reply) = openraft::impls::ProgressResponder::complete_only();
        {
            let mut proposed = order.turn(after).await;
            if let Err(e) = group.raft.client_write_ff(cmd, Some(responder)).await {
                return refuse(
                    ErrorCode::Unavailable,
                    format!("range {range} stopped: {e}"),
                );
            }
            *proposed = (*proposed).max(closed);
        }
        order.moved.notify_waiters();
        let answer = inbound_reply(reply, "replication batch").await;
        if let PeerResponseV1::Replicated { applied, cursor } = answer {
            order.advance(cursor).await;
            if applied {
                self.record_apply_lag(range, &origin, after, &record_ts);
            }
        }
        answer
    }

    /// Serves one chunk of a cross-region catch-up of `range` (the origin's
    /// state, sent when this region's cursor is below where the origin's
    /// change log is complete): the checks of
    /// [`RaftHost::handle_replicate`], then the chunk is proposed to the
    /// group, whose apply merges it (`replication::catch_up`). Chunks come
    /// one at a time, each after the previous one's answer.
    pub async fn handle_catch_up(
        &self,
        range: RangeId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        chunk: &[u8],
    ) -> PeerResponseV1 {
        let chunk: CatchUpV1 = match decode(chunk) {
            Ok(c) => c,
            Err(e) => return PeerResponseV1::error(&e),
        };
        let (group, now) = match self.inbound_target(range, &start, &end, &chunk.origin, chunk.at) {
            Ok(t) => t,
            Err(reply) => return *reply,
        };
        let cmd = RangeCommand {
            proposed_at: now.0,
            op: CommandV1::CatchUp(chunk),
        };
        let (responder, reply) = openraft::impls::ProgressResponder::complete_only();
        if let Err(e) = group.raft.client_write_ff(cmd, Some(responder)).await {
            return refuse(
                ErrorCode::Unavailable,
                format!("range {range} stopped: {e}"),
            );
        }
        inbound_reply(reply, "catch-up chunk").await
    }

    /// The checks every inbound stream message passes: both regions agree
    /// on the range's span, `origin` is a region the range replicates with,
    /// and `closed` (which bounds every timestamp the message carries) is
    /// within `clock.max_offset_ms` of our clock. Returns the group and the
    /// clock's time to propose at.
    fn inbound_target(
        &self,
        range: RangeId,
        start: &[u8],
        end: &Option<Vec<u8>>,
        origin: &str,
        closed: u64,
    ) -> Result<(Arc<RangeGroup>, Timestamp), Box<PeerResponseV1>> {
        let group = self
            .group_or_err(range)
            .map_err(|e| Box::new(PeerResponseV1::error(&e)))?;
        if group.desc.start != start || group.desc.end != *end {
            return Err(Box::new(refuse(
                ErrorCode::InvalidArgument,
                format!(
                    "range {range} spans different keys here than at the origin: \
                     every region must configure the same raft.range_prefixes"
                ),
            )));
        }
        if !self.scope.others.iter().any(|r| r == origin) {
            return Err(Box::new(refuse(
                ErrorCode::InvalidArgument,
                format!(
                    "region `{origin}` is not one this node replicates with (replication.regions: {})",
                    self.scope.others.join(",")
                ),
            )));
        }
        if let Err(e) = self.hlc.check_remote(Timestamp(closed)) {
            return Err(Box::new(refuse(
                ErrorCode::ClockOffset,
                format!("replication message refused: {e}"),
            )));
        }
        let now = self
            .hlc
            .now()
            .map_err(|e| Box::new(refuse(ErrorCode::StorageFailure, e.to_string())))?;
        Ok((group, now))
    }

    fn inbound_order(&self, range: RangeId, origin: &str) -> Arc<InboundOrder> {
        self.inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((range, origin.to_string()))
            .or_default()
            .clone()
    }

    /// `meridian_replication_lag_seconds{origin,destination,range}`: for
    /// each record of an applied batch, this region's apply time (now, the
    /// wall clock) minus the record's origin HLC time: the replication lag
    /// as a reader here sees it. Records at or below the batch's `after`
    /// were applied before (a resend) and are not counted again. Assumes
    /// the regions' clocks agree, within `clock.max_offset_ms`.
    fn record_apply_lag(&self, range: RangeId, origin: &str, after: u64, record_ts: &[u64]) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let lag = metrics::histogram!("meridian_replication_lag_seconds",
            "origin" => origin.to_string(),
            "destination" => self.scope.local.clone(),
            "range" => range.to_string());
        for ts in record_ts.iter().filter(|ts| **ts > after) {
            let ms = now_ms
                .saturating_sub(Timestamp(*ts).physical_unix_ms())
                .max(0);
            lag.record(ms as f64 / 1000.0);
        }
    }

    /// Refuses entries stamped more than `max_offset_ms` ahead of our clock
    /// before they reach the log (design.md, Clocks). Once accepted an entry
    /// may commit, and a committed one is applied whatever the clock says.
    fn check_entry_clocks(&self, req: &AppendEntriesRequest<RangeTypes>) -> Result<(), ApiError> {
        let newest = req
            .entries
            .iter()
            .filter_map(|e| match &e.payload {
                openraft::EntryPayload::Normal(cmd) => Some(cmd.proposed_at),
                _ => None,
            })
            .max();
        match newest {
            Some(ts) => self
                .hlc
                .check_remote(Timestamp(ts))
                .map_err(|e| ApiError::new(ErrorCode::ClockOffset, format!("append refused: {e}"))),
            None => Ok(()),
        }
    }

    /// Receives a snapshot offered on a peer stream (resuming an earlier
    /// partial transfer of the same file), installs it, and returns the
    /// final reply of the exchange.
    pub async fn receive_snapshot(
        &self,
        offer: Offer,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
    ) -> PeerResponseV1 {
        match self.receive_and_install(offer, send, recv).await {
            Ok(bytes) => PeerResponseV1::SnapshotInstalled(bytes),
            Err(e) => PeerResponseV1::error(&e),
        }
    }

    async fn receive_and_install(
        &self,
        offer: Offer,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
    ) -> Result<Vec<u8>, ApiError> {
        let range = offer.range;
        let group = self.group_or_err(range)?;
        let lock = self
            .receiving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(range)
            .or_default()
            .clone();
        let _receiving = lock.lock().await;
        let dir = snapshot_dir(&self.store);
        let unavailable = |what: &str, e: std::io::Error| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("range {range}: {what}: {e}"),
            )
        };
        let started = std::time::Instant::now();
        let got = transfer::receive_snapshot(offer, &dir, send, recv)
            .await
            .map_err(|e| unavailable("receive snapshot", e))?;
        if let Err(e) = self.hlc.check_remote(Timestamp(got.header.last_ts)) {
            got.file.remove();
            return Err(ApiError::new(
                ErrorCode::ClockOffset,
                format!("range {range}: snapshot refused: {e}"),
            ));
        }
        tracing::info!(
            range,
            bytes = got.file.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "received a range snapshot"
        );
        let snapshot = SnapshotOf::<RangeTypes, RangeSnapshotData> {
            meta: got.meta,
            snapshot: RangeSnapshotData::Received(got.file),
        };
        let res: Result<SnapshotResponse<RangeTypes>, Fatal<RangeTypes>> =
            group.raft.install_full_snapshot(got.vote, snapshot).await;
        encode(&res)
    }

    /// Stops every group (bounded by openraft's own shutdown).
    pub async fn shutdown(&self) {
        let groups: Vec<_> = write(&self.groups).drain().map(|(_, g)| g).collect();
        for g in groups {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(range = g.desc.id, error = %e, "raft group did not shut down cleanly");
            }
        }
    }
}

/// Triggers a snapshot of `range` for each request its state machine makes
/// (its current point fell below the gc horizon before it could be sent;
/// `super::point`). Ends when the group shuts down (the state machine, and
/// with it the sending side, is dropped) or refuses the trigger.
async fn snapshot_on_request(
    range: RangeId,
    raft: RangeRaft,
    mut requests: tokio::sync::mpsc::Receiver<()>,
) {
    while requests.recv().await.is_some() {
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::debug!(range, error = %e, "cannot trigger a snapshot; the group stopped");
            break;
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_allocvec(v)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encode raft reply: {e}")))
}

impl RaftHost {
    /// Every group on this node, as the status API reports it.
    pub fn status(&self) -> Vec<crate::wire::RangeStatusV1> {
        use openraft::async_runtime::WatchReceiver;
        let mut out: Vec<_> = self
            .groups()
            .iter()
            .map(|g| {
                let m = g.raft.metrics().borrow_watched().clone();
                let membership = m.membership_config.membership();
                crate::wire::RangeStatusV1 {
                    range: g.desc.id,
                    start: g.desc.start.clone(),
                    end: g.desc.end.clone(),
                    node: self.node_id,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log_index: m.last_log_index,
                    applied_index: m.last_applied.map(|l| l.index),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.range);
        out
    }

    /// Publishes each group's Raft metrics as Prometheus gauges until the
    /// group stops (one watcher task per group), and, with `hints`
    /// (membership and this node's name), gossips a range-leader hint
    /// whenever this node becomes a range's leader in a new term.
    ///
    /// Leadership is followed on openraft's server metrics (vote, state,
    /// leader: they change on elections only), and the log gauges are
    /// sampled every [`RAFT_GAUGE_INTERVAL`]: openraft's full metrics
    /// change on almost every pass of its core loop (they carry the
    /// milliseconds since the last quorum acknowledgement), so a watcher
    /// woken by them ran once per linearizable read, and re-registering six
    /// labelled gauges each time cost about 13 allocations per read
    /// (docs/benchmarks.md, stop 26). The gauge handles are registered once.
    pub fn spawn_metrics(&self, hints: Option<(crate::membership::Membership, String)>) {
        use openraft::async_runtime::WatchReceiver;
        for g in self.groups() {
            let mut server = g.raft.server_metrics();
            let data = g.raft.metrics();
            let gauges = RaftGauges::register(g.desc.id);
            let me = self.node_id;
            let hints = hints.clone();
            let range_id = g.desc.id;
            tokio::spawn(async move {
                let mut hinted_term = None;
                let mut seen_leader = None;
                let mut sample = tokio::time::interval(RAFT_GAUGE_INTERVAL);
                sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let (leader, term) = {
                        use openraft::vote::RaftLeaderId;
                        let s = server.borrow_watched();
                        (s.current_leader, s.vote.leader_id().term())
                    };
                    // A change of the leader this node knows of (a new
                    // leader elected, or the old one lost): counted once
                    // per node, so a flapping range shows on every member.
                    if leader != seen_leader {
                        if seen_leader.is_some() || leader.is_some() {
                            gauges.leader_changes.increment(1);
                        }
                        seen_leader = leader;
                    }
                    if let Some((membership, name)) = &hints {
                        if leader == Some(me) && hinted_term != Some(term) {
                            hinted_term = Some(term);
                            if let Err(e) = membership.publish_leader_hint(range_id, name, term) {
                                tracing::warn!(range = range_id, error = %e, "cannot gossip the leader hint");
                            }
                        }
                    }
                    gauges.set(leader == Some(me), term, &data.borrow_watched());
                    tokio::select! {
                        changed = server.changed() => {
                            if changed.is_err() {
                                break; // the group shut down
                            }
                        }
                        _ = sample.tick() => {}
                    }
                }
            });
        }
    }
}

/// How often a range's log gauges (commit and applied index, lags) are
/// sampled between leadership changes (which update them at once).
pub const RAFT_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// One range's Raft gauges, registered once (a `metrics::gauge!` call with
/// labels allocates its label list and a handle each time).
struct RaftGauges {
    is_leader: metrics::Gauge,
    term: metrics::Gauge,
    commit_index: metrics::Gauge,
    applied_index: metrics::Gauge,
    commit_lag: metrics::Gauge,
    apply_lag: metrics::Gauge,
    leader_changes: metrics::Counter,
}

impl RaftGauges {
    fn register(range: u64) -> RaftGauges {
        let labels = [("range", range.to_string())];
        RaftGauges {
            is_leader: metrics::gauge!("meridian_raft_is_leader", &labels),
            term: metrics::gauge!("meridian_raft_term", &labels),
            commit_index: metrics::gauge!("meridian_raft_commit_index", &labels),
            applied_index: metrics::gauge!("meridian_raft_applied_index", &labels),
            commit_lag: metrics::gauge!("meridian_raft_commit_lag_entries", &labels),
            apply_lag: metrics::gauge!("meridian_raft_apply_lag_entries", &labels),
            leader_changes: metrics::counter!("meridian_raft_leader_changes_total", &labels),
        }
    }

    /// Sets the gauges: leadership and term as the server metrics say,
    /// the log positions from `m`.
    fn set(&self, leading: bool, term: u64, m: &openraft::RaftMetrics<RangeTypes>) {
        self.is_leader.set(f64::from(u8::from(leading)));
        self.term.set(term as f64);
        let commit = m.cluster_committed.as_ref().map_or(0, |l| l.index);
        self.commit_index.set(commit as f64);
        let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        self.applied_index.set(applied as f64);
        let last = m.last_log_index.unwrap_or(0);
        self.commit_lag.set(last.saturating_sub(commit) as f64);
        self.apply_lag.set(commit.saturating_sub(applied) as f64);
    }
}

/// An error reply to an inbound stream message; nothing was changed.
fn refuse(code: ErrorCode, message: String) -> PeerResponseV1 {
    PeerResponseV1::error(&ApiError::new(code, message))
}

/// The answer to an inbound stream message proposed to a group: the
/// destination's cursor once it applied (or refused) it, where the range's
/// leader is, or why the outcome is unknown (the sender resends from the
/// cursor either way). `what` names the message in errors.
async fn inbound_reply<F, E>(reply: F, what: &str) -> PeerResponseV1
where
    F: std::future::Future<
        Output = Result<
            Result<openraft::raft::ClientWriteResponse<RangeTypes>, ClientWriteError<RangeTypes>>,
            E,
        >,
    >,
{
    match tokio::time::timeout(REPLICATE_TIMEOUT, reply).await {
        Ok(Ok(Ok(resp))) => PeerResponseV1::Replicated {
            applied: resp.data.succeeded,
            cursor: resp.data.version,
        },
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => PeerResponseV1::NotLeader {
            leader: f.leader_node.map(|n| n.addr),
        },
        Ok(Ok(Err(e))) => refuse(
            ErrorCode::OutcomeUnknown,
            format!("{what} outcome unknown: {e}"),
        ),
        Ok(Err(_)) => refuse(
            ErrorCode::OutcomeUnknown,
            format!("{what} outcome unknown: the range dropped its proposal"),
        ),
        Err(_) => refuse(
            ErrorCode::OutcomeUnknown,
            format!("{what} timed out waiting for commit; resend from the cursor"),
        ),
    }
}
