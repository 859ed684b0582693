//! The engine's path when the node is part of a replicated region: writes
//! are proposed to the key's range group, reads are made linearizable by the
//! group's leader.
//!
//! Reads: the leader confirms it still leads with openraft's leader lease
//! (`ReadPolicy::LeaseRead`: no network round trip) and falls back to
//! `ReadIndex` (a quorum heartbeat) when the lease is stale. Either way it
//! then waits until it has applied everything committed before the read
//! began, and reads the range at its applied timestamp. The lease assumes
//! the nodes' clocks advance at nearly the same *rate* over one lease
//! (`election_timeout_max_ms`); it does not depend on clock *offsets*.
//! ReadIndex needs no clock assumption at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};
use tracing::Instrument;

use super::TxnOutcome;
use crate::clock::Hlc;
use crate::decide::WriteKind;
use crate::error_code::{ApiError, ErrorCode};
use crate::raft::reads::ConfirmError;
use crate::raft::types::{CommandV1, NodeId};
use crate::raft::{RaftHost, RangeCommand, RangeDescriptor, RangeGroup, RangeTypes};
use crate::replication::sync::{confirmed, regions_at, SYNC_CONFIRM_TIMEOUT_MS};
use crate::types::{Op, Timestamp};

/// Longest a write waits for its proposal to commit and apply. Past it the
/// outcome is unknown (the entry may still commit), and the error says so.
pub const REPLICATED_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a linearizable read waits for leadership confirmation and apply.
pub const REPLICATED_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The region's ranges and this node's groups.
pub struct Replicated {
    host: Arc<RaftHost>,
    /// Bounds the proposals in flight (`MAX_PENDING_PROPOSALS`): openraft
    /// queues client writes without a limit of its own.
    pending: tokio::sync::Semaphore,
    ranges: Vec<RangeDescriptor>,
    /// Peer QUIC addresses by Raft id, to name the leader in redirects.
    addrs: HashMap<NodeId, String>,
    /// What the other regions acknowledged of this node's ranges (`sync-N`).
    acked: Arc<AckedCursors>,
}

/// Per range, the cursor each other region last acknowledged to this
/// node's outbound stream: the origin-side view of how far every
/// destination has durably applied this region's writes. The streams of
/// `server::streams` publish into it (each stream owns its region's
/// entry); `sync-N` writes wait on it ([`Replicated::confirm_sync`]).
///
/// A cursor is a durable fact of the destination's replicated state and
/// never moves back, so an entry stays true when this node stops leading
/// the range; it only stops moving. A `sync-N` write still waiting here
/// when this node stops leading its range (the new leader's streams carry
/// it on) is confirmed by asking the destinations for their cursors:
/// `server::streams` does so for every range [`AckedCursors::waited`]
/// names that this node does not lead, and publishes the answers.
#[derive(Debug, Default)]
pub struct AckedCursors {
    ranges: Mutex<HashMap<u64, tokio::sync::watch::Sender<BTreeMap<String, Timestamp>>>>,
    /// Per range: how many `sync-N` writes wait on it now.
    waiting: Mutex<HashMap<u64, usize>>,
}

/// One `sync-N` write waiting on a range (counted in
/// [`AckedCursors::waited`] until dropped).
struct Waiting<'a> {
    cursors: &'a AckedCursors,
    range: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .cursors
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = waiting.get_mut(&self.range) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.range);
            }
        }
    }
}

impl AckedCursors {
    fn sender(&self, range: u64) -> tokio::sync::watch::Sender<BTreeMap<String, Timestamp>> {
        self.ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(range)
            .or_insert_with(|| tokio::sync::watch::Sender::new(BTreeMap::new()))
            .clone()
    }

    /// `region` acknowledged `cursor` for `range` (kept if higher than what
    /// it acknowledged before; watchers are woken only when it moves).
    pub fn publish(&self, range: u64, region: &str, cursor: Timestamp) {
        self.sender(range).send_if_modified(|acked| {
            let entry = acked.entry(region.to_string()).or_insert(Timestamp::ZERO);
            let moved = cursor > *entry;
            *entry = (*entry).max(cursor);
            moved
        });
    }

    /// The cursors acknowledged for `range`, by region.
    pub fn of(&self, range: u64) -> BTreeMap<String, Timestamp> {
        self.sender(range).borrow().clone()
    }

    fn wait_on(&self, range: u64) -> Waiting<'_> {
        *self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(range)
            .or_default() += 1;
        Waiting {
            cursors: self,
            range,
        }
    }

    /// The ranges some `sync-N` write waits on now.
    pub fn waited(&self) -> Vec<u64> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Waits, at most `limit`, until the cursors acknowledged for `range`
    /// satisfy `reached`; registered as waiting ([`AckedCursors::waited`])
    /// meanwhile, so the cursors are probed if this node stops leading the
    /// range. Whether they did.
    async fn wait_until(
        &self,
        range: u64,
        limit: Duration,
        reached: impl FnMut(&BTreeMap<String, Timestamp>) -> bool,
    ) -> bool {
        let _waiting = self.wait_on(range);
        let mut acked = self.sender(range).subscribe();
        // The sender lives in `self` as long as we do: a closed channel
        // cannot happen, but it would mean the same as a timeout.
        tokio::time::timeout(limit, acked.wait_for(reached))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits, at most `limit`, until `region` acknowledged a cursor at or
    /// past `version` for `range` (a policy handoff's fence). `Err`
    /// carries the cursor it had when the bound passed.
    pub async fn wait_region(
        &self,
        range: u64,
        region: &str,
        version: Timestamp,
        limit: Duration,
    ) -> Result<(), Timestamp> {
        let reached =
            |a: &BTreeMap<String, Timestamp>| a.get(region).is_some_and(|c| *c >= version);
        if self.wait_until(range, limit, reached).await {
            return Ok(());
        }
        Err(self
            .of(range)
            .get(region)
            .copied()
            .unwrap_or(Timestamp::ZERO))
    }

    /// Waits, at most `limit`, until `n` distinct regions acknowledged a
    /// cursor at or past `version` for `range`. `Err` carries how many had
    /// when the bound passed.
    pub async fn wait_confirmed(
        &self,
        range: u64,
        version: Timestamp,
        n: u8,
        limit: Duration,
    ) -> Result<(), usize> {
        if self
            .wait_until(range, limit, |a| confirmed(a, version, n))
            .await
        {
            return Ok(());
        }
        Err(regions_at(&self.of(range), version))
    }
}

fn unavailable(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, msg)
}

/// A write that may or may not have been applied (MER-3005), not a refusal.
fn outcome_unknown(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::OutcomeUnknown, msg)
}

impl Replicated {
    /// Routing over `ranges` (which cover the keyspace) through `host`.
    pub fn new(
        host: Arc<RaftHost>,
        ranges: Vec<RangeDescriptor>,
        addrs: HashMap<NodeId, String>,
    ) -> Self {
        Replicated {
            host,
            pending: tokio::sync::Semaphore::new(crate::limits::MAX_PENDING_PROPOSALS),
            ranges,
            addrs,
            acked: Arc::default(),
        }
    }

    /// What other regions acknowledged of this node's ranges: the outbound
    /// streams publish here.
    pub fn acked_cursors(&self) -> &Arc<AckedCursors> {
        &self.acked
    }

    /// Waits, at most [`SYNC_CONFIRM_TIMEOUT_MS`], until `n` distinct other
    /// regions acknowledged a cursor at or past `version` for the range
    /// owning `key`: the write applied there at `version` is durable in them
    /// (docs/consistency.md X6). Past the bound the write is committed here
    /// but not confirmed elsewhere: `MER-3005`, whose message says so.
    pub async fn confirm_sync(
        &self,
        key: &[u8],
        version: Timestamp,
        n: u8,
    ) -> Result<(), ApiError> {
        let range = self.range_of(key)?.id;
        let limit = Duration::from_millis(SYNC_CONFIRM_TIMEOUT_MS);
        let started = std::time::Instant::now();
        let waited = self.acked.wait_confirmed(range, version, n, limit).await;
        metrics::histogram!("meridian_sync_confirm_duration_seconds", "range" => range.to_string())
            .record(started.elapsed().as_secs_f64());
        match waited {
            Ok(()) => Ok(()),
            Err(have) => {
                metrics::counter!("meridian_sync_unconfirmed_total", "range" => range.to_string())
                    .increment(1);
                Err(outcome_unknown(format!(
                    "write committed in this region at version {version} but confirmed by only \
                     {have} of the {n} other regions its sync-{n} policy needs within \
                     {SYNC_CONFIRM_TIMEOUT_MS} ms: it is durable here and will reach the other \
                     regions when they can be reached, but it may be lost if this region is lost \
                     before then; read it in another region to find out"
                )))
            }
        }
    }

    /// The host (for status and metrics).
    pub fn host(&self) -> &Arc<RaftHost> {
        &self.host
    }

    /// The region's ranges, in key order; they cover the keyspace.
    pub fn ranges(&self) -> &[RangeDescriptor] {
        &self.ranges
    }

    /// The range that owns `key`.
    pub fn range_of(&self, key: &[u8]) -> Result<&RangeDescriptor, ApiError> {
        self.ranges.iter().find(|r| r.contains(key)).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                "no range owns the key (range table has a gap)",
            )
        })
    }

    /// This node's group of `range`.
    pub(crate) fn group(&self, range: &RangeDescriptor) -> Result<Arc<RangeGroup>, ApiError> {
        self.host
            .group(range.id)
            .ok_or_else(|| unavailable(format!("range {} is not running on this node", range.id)))
    }

    /// Whether this node leads `range` now (as far as its Raft knows).
    pub fn leads(&self, range: &RangeDescriptor) -> bool {
        self.host
            .group(range.id)
            .is_some_and(|g| g.current_leader() == Some(self.host.node_id()))
    }

    /// `NotLeader` for `range`, naming its leader when this node knows it.
    pub fn not_leading(&self, range: &RangeDescriptor) -> ApiError {
        let leader = self
            .host
            .group(range.id)
            .and_then(|g| g.current_leader())
            .and_then(|id| self.addrs.get(&id).cloned());
        ApiError::not_leader(
            format!("this node does not lead range {}", range.id),
            leader,
        )
    }

    fn not_leader(&self, f: &ForwardToLeader<RangeTypes>, range: u64) -> ApiError {
        let addr = f
            .leader_node
            .as_ref()
            .map(|n| n.addr.clone())
            .or_else(|| f.leader_id.and_then(|id| self.addrs.get(&id).cloned()));
        ApiError::not_leader(format!("this node does not lead range {range}"), addr)
    }

    /// The single range every key of `kind` lies in (`MER-1007` when they
    /// span several).
    pub fn range_of_write_kind(&self, kind: &WriteKind) -> Result<&RangeDescriptor, ApiError> {
        let keys: Vec<&[u8]> = match kind {
            WriteKind::Put { key, .. } | WriteKind::Delete { key } => vec![key],
            WriteKind::Txn(t) => {
                let ops = t.success.iter().chain(&t.failure).map(Op::key);
                t.compares
                    .iter()
                    .map(|c| c.key.as_slice())
                    .chain(ops)
                    .collect()
            }
        };
        let first = keys
            .first()
            .map_or(Ok(&self.ranges[0]), |k| self.range_of(k))?;
        if let Some(k) = keys.iter().find(|k| !first.contains(k)) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "a transaction must stay in one range: key {:?} is outside range {} (cross-range transactions are not supported yet)",
                    String::from_utf8_lossy(k),
                    first.id
                ),
            ));
        }
        Ok(first)
    }

    /// Proposes `kind`, decided under policy table `table` (0: a table
    /// from config, or not a client write), to its range's group and waits
    /// for it to apply.
    pub async fn write(
        &self,
        hlc: &Hlc,
        kind: WriteKind,
        table: u64,
    ) -> Result<TxnOutcome, ApiError> {
        let range = self.range_of_write_kind(&kind)?.clone();
        let now = hlc
            .now()
            .map_err(|e| ApiError::new(ErrorCode::StorageFailure, e.to_string()))?;
        self.propose(&range, now, super::policed(table, kind.into()))
            .await
    }

    async fn propose(
        &self,
        range: &RangeDescriptor,
        now: Timestamp,
        op: CommandV1,
    ) -> Result<TxnOutcome, ApiError> {
        let reply = self.propose_reply(range, now, op).await?;
        Ok(TxnOutcome {
            succeeded: reply.succeeded,
            version: Timestamp(reply.version),
        })
    }

    /// Proposes `op` to `range`'s group stamped `now` (it must lead the
    /// range here: `NotLeader` otherwise) and returns the state machine's
    /// reply once applied.
    pub(crate) async fn propose_reply(
        &self,
        range: &RangeDescriptor,
        now: Timestamp,
        op: CommandV1,
    ) -> Result<crate::raft::RangeReply, ApiError> {
        let group = self.group(range)?;
        let started = std::time::Instant::now();
        let _pending = PendingProposal::start(range.id);
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self
            .pending
            .acquire()
            .await
            .map_err(|_| unavailable("the node is shutting down"))?;
        let cmd = RangeCommand {
            proposed_at: now.0,
            op,
        };
        // Only a write in a sampled trace gets a propose span: the other
        // 99% would pay for a span nobody sees. Its entry's log append,
        // replication and apply find the trace by (range, proposed_at)
        // (see crate::trace_context).
        let span = match crate::trace_context::current() {
            Some(_) => tracing::debug_span!("raft_propose", range = range.id, proposed_at = now.0),
            None => tracing::Span::none(),
        };
        if let Some(ctx) = crate::trace_context::of_span(&span) {
            crate::trace_context::remember(range.id, now.0, ctx);
        }
        let result = tokio::time::timeout(REPLICATED_WRITE_TIMEOUT, group.raft.client_write(cmd))
            .instrument(span)
            .await;
        metrics::histogram!("meridian_raft_proposal_duration_seconds", "range" => range.id.to_string())
            .record(started.elapsed().as_secs_f64());
        let reply = match result {
            Err(_) => {
                return Err(outcome_unknown(
                    "write timed out waiting for commit; its outcome is unknown",
                ))
            }
            Ok(Ok(resp)) => resp.data,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return Err(self.not_leader(&f, range.id));
            }
            Ok(Err(e)) => return Err(outcome_unknown(format!("write outcome unknown: {e}"))),
        };
        if !reply.succeeded && reply.value == crate::raft::types::POLICY_OUTDATED {
            return Err(unavailable(format!(
                "range {} refused the write: this node decided it under a policy table older than a handoff the range applied (nothing was written); retry",
                range.id
            )));
        }
        Ok(reply)
    }

    /// Makes a read of `range` linearizable and returns the timestamp to read
    /// at: the latest applied (for `at = None`) or `at` once it is applied.
    pub async fn read_ts(
        &self,
        hlc: &Hlc,
        range: &RangeDescriptor,
        at: Option<Timestamp>,
    ) -> Result<Timestamp, ApiError> {
        let group = self.group(range)?;
        let confirmed = tokio::time::timeout(REPLICATED_READ_TIMEOUT, group.confirm_linearizable())
            .await
            .map_err(|_| unavailable("timed out confirming leadership for a linearizable read"))?;
        match confirmed {
            Ok(()) => {}
            Err(ConfirmError::TimedOut(_)) => {
                return Err(unavailable(
                    "timed out confirming leadership for a linearizable read",
                ))
            }
            Err(ConfirmError::Refused(e)) => {
                return Err(match e.forward_to_leader() {
                    Some(f) => self.not_leader(f, range.id),
                    None => unavailable(format!("cannot serve a linearizable read: {e}")),
                })
            }
        }
        let applied = group.applied_ts();
        let Some(at) = at else { return Ok(applied) };
        if at <= applied {
            return Ok(at);
        }
        self.close_range_at(hlc, range, at).await?;
        Ok(at)
    }

    /// Makes `range` serve a snapshot read at `at` above its applied
    /// timestamp (docs/consistency.md R3): its clock passes `at`, then a
    /// barrier commits above it, so every entry at or below `at` is applied
    /// and every later one is stamped above it.
    ///
    /// `at` may come from another leader's clock (a listing's later page is
    /// read at its first page's timestamp) and be ahead of ours: the HLC
    /// receive rule merges it, and refuses it (`MER-3002`, G2) when it is
    /// more than `clock.max_offset_ms` ahead of our wall clock.
    async fn close_range_at(
        &self,
        hlc: &Hlc,
        range: &RangeDescriptor,
        at: Timestamp,
    ) -> Result<(), ApiError> {
        let clock = |e: crate::clock::ClockError| match e {
            crate::clock::ClockError::OffsetTooLarge { .. } => {
                ApiError::new(ErrorCode::ClockOffset, e.to_string())
            }
            other => ApiError::new(ErrorCode::StorageFailure, other.to_string()),
        };
        if at > hlc.last() {
            hlc.update(at).map_err(clock)?;
        }
        let now = hlc.now().map_err(clock)?;
        debug_assert!(now > at, "the clock has passed the snapshot timestamp");
        self.propose(range, now, CommandV1::Barrier).await?;
        Ok(())
    }
}

/// Longest a membership change may take (a new node catches up first).
pub const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a leadership transfer may take before it is reported as not
/// done: the target campaigns at once, so on a healthy region it takes one
/// election round (milliseconds), but a target that is behind on the log
/// must catch up first.
pub const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(5);

impl Replicated {
    fn write_error(
        &self,
        e: RaftError<RangeTypes, ClientWriteError<RangeTypes>>,
        range: u64,
    ) -> ApiError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.not_leader(&f, range),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ApiError::new(
                ErrorCode::InvalidArgument,
                format!("membership change refused: {c}"),
            ),
            other => outcome_unknown(format!("membership change outcome unknown: {other}")),
        }
    }

    /// Hands the leadership of `range` to voter `to` (on the range's
    /// leader: `NotLeader` elsewhere) and waits, at most
    /// [`MOVE_LEADER_TIMEOUT`], until this replica sees `to` lead. Returns
    /// the voters. Changes no data and no membership, so a transfer that
    /// did not finish is `Unavailable` (the leader may be anyone then;
    /// `meridian region status` tells), never an unknown outcome.
    async fn move_leader(
        &self,
        range: &RangeDescriptor,
        group: &RangeGroup,
        to: NodeId,
    ) -> Result<Vec<u64>, ApiError> {
        use openraft::async_runtime::WatchReceiver;

        let (leader, voters) = {
            let m = group.raft.metrics().borrow_watched().clone();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (m.current_leader, voters)
        };
        if !voters.contains(&to) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "node {to} is not a voter of range {} (voters: {voters:?})",
                    range.id
                ),
            ));
        }
        if leader != Some(self.host.node_id()) {
            return Err(self.not_leading(range));
        }
        if to == self.host.node_id() {
            return Ok(voters);
        }
        group
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| {
                unavailable(format!(
                    "range {}: leadership transfer failed: {e}",
                    range.id
                ))
            })?;
        group
            .raft
            .wait(Some(MOVE_LEADER_TIMEOUT))
            .metrics(|m| m.current_leader == Some(to), "leader moved")
            .await
            .map_err(|_| {
                let now = group.current_leader();
                unavailable(format!(
                    "range {}: node {to} did not take the leadership within {} ms (leader now: {}); retry, or check `meridian region status`",
                    range.id,
                    MOVE_LEADER_TIMEOUT.as_millis(),
                    now.map_or("unknown".to_string(), |l| l.to_string())
                ))
            })?;
        Ok(voters)
    }

    /// Applies a membership change to one range's group (joint consensus) on
    /// its leader and returns the voters afterwards.
    pub async fn change_membership(
        &self,
        region: &str,
        range_id: u64,
        change: crate::wire::MembershipChangeV1,
    ) -> Result<Vec<u64>, ApiError> {
        use std::collections::BTreeSet;

        use openraft::ChangeMembers;

        use crate::wire::MembershipChangeV1;
        let range = self
            .ranges
            .iter()
            .find(|r| r.id == range_id)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidArgument, format!("no range {range_id}"))
            })?
            .clone();
        let group = self.group(&range)?;
        let raft = &group.raft;
        let work = async {
            let resp = match change {
                MembershipChangeV1::AddNode {
                    id,
                    name,
                    addr,
                    zone,
                } => {
                    if addr.parse::<std::net::SocketAddr>().is_err() {
                        return Err(ApiError::new(
                            ErrorCode::InvalidArgument,
                            format!("addr `{addr}` is not IP:port"),
                        ));
                    }
                    let node = crate::raft::RaftNode {
                        name,
                        addr,
                        region: region.to_string(),
                        zone,
                    };
                    // Learner first (blocks until it has caught up), then voter.
                    raft.add_learner(id, node, true)
                        .await
                        .map_err(|e| self.write_error(e, range_id))?;
                    let voters = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                    raft.change_membership(voters, false).await
                }
                MembershipChangeV1::RemoveNode { id } => {
                    let voters = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
                    raft.change_membership(voters, false).await
                }
                // Bounded by its own wait (MOVE_LEADER_TIMEOUT).
                MembershipChangeV1::MoveLeader { to } => {
                    return self.move_leader(&range, &group, to).await;
                }
            };
            let resp = resp.map_err(|e| self.write_error(e, range_id))?;
            Ok(resp
                .membership
                .map(|m| m.voter_ids().collect())
                .unwrap_or_default())
        };
        tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, work)
            .await
            .map_err(|_| {
                outcome_unknown("membership change timed out; check `meridian region status`")
            })?
    }
}

impl Replicated {
    /// The timestamp a serializable read of `range` is served at on this
    /// replica: what it has applied (no leader involved), or `at` if it has
    /// applied that far.
    pub fn local_ts(
        &self,
        range: &RangeDescriptor,
        at: Option<Timestamp>,
    ) -> Result<Timestamp, ApiError> {
        let applied = self.group(range)?.applied_ts();
        match at {
            None => Ok(applied),
            Some(t) if t <= applied => Ok(t),
            Some(t) => Err(unavailable(format!(
                "this replica has applied range {} only up to {applied}, below {t}; retry or read linearizably",
                range.id
            ))),
        }
    }
}

/// Counts a proposal in `meridian_raft_proposals_pending{range}` from the
/// moment it waits for a slot until its caller has the outcome (or gave
/// up: dropping the future drops the guard).
struct PendingProposal(metrics::Gauge);

impl PendingProposal {
    fn start(range: u64) -> Self {
        let gauge =
            metrics::gauge!("meridian_raft_proposals_pending", "range" => range.to_string());
        gauge.increment(1.0);
        PendingProposal(gauge)
    }
}

impl Drop for PendingProposal {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `waited` names a range exactly while a sync write waits on it (the
    /// streams supervisor probes the destinations of such ranges when this
    /// node no longer leads them), however the wait ends.
    #[tokio::test]
    async fn waited_names_a_range_only_while_a_write_waits_on_it() {
        let acked = Arc::new(AckedCursors::default());
        let (range, version) = (7, Timestamp(100));
        assert!(acked.waited().is_empty());
        let waiter = {
            let acked = acked.clone();
            tokio::spawn(async move {
                acked
                    .wait_confirmed(range, version, 1, Duration::from_secs(10))
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acked.waited().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the wait never registered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(acked.waited(), vec![range]);
        acked.publish(range, "eu-west", version);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(acked.waited().is_empty(), "confirmed: no longer waited on");
        let short = Duration::from_millis(10);
        assert_eq!(
            acked.wait_confirmed(range, Timestamp(500), 1, short).await,
            Err(0)
        );
        assert!(acked.waited().is_empty(), "timed out: no longer waited on");
    }

    /// A handoff's fence waits for the one region named (another region's
    /// cursor does not count), wakes when the streams publish it past the
    /// fence, and reports that region's cursor when the bound passes.
    #[tokio::test]
    async fn a_fence_waits_for_the_named_region_only() {
        let acked = Arc::new(AckedCursors::default());
        let (range, fence) = (3, Timestamp(100));
        acked.publish(range, "ap-south", Timestamp(500));
        acked.publish(range, "eu-west", Timestamp(40));
        let short = Duration::from_millis(10);
        assert_eq!(
            acked.wait_region(range, "eu-west", fence, short).await,
            Err(Timestamp(40)),
            "ap-south's cursor is not eu-west's"
        );
        let waiter = {
            let acked = acked.clone();
            tokio::spawn(async move {
                acked
                    .wait_region(range, "eu-west", fence, Duration::from_secs(10))
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acked.waited().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        acked.publish(range, "eu-west", Timestamp(99));
        acked.publish(range, "eu-west", fence);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(
            acked.wait_region(range, "us-east", fence, short).await,
            Err(Timestamp::ZERO),
            "a region never heard from"
        );
    }

    /// A sync write waits for N distinct regions at or past its version,
    /// wakes when the streams publish them, and reports how many it had
    /// when the bound passes; a lower cursor never replaces a higher one.
    #[tokio::test]
    async fn sync_waits_for_n_regions_and_reports_the_shortfall() {
        let acked = Arc::new(AckedCursors::default());
        let (range, version) = (7, Timestamp(100));
        acked.publish(range, "eu-west", Timestamp(150));
        acked.publish(range, "eu-west", Timestamp(90));
        assert_eq!(
            acked.of(range)["eu-west"],
            Timestamp(150),
            "cursors never move back"
        );
        let short = Duration::from_millis(50);
        assert_eq!(acked.wait_confirmed(range, version, 1, short).await, Ok(()));
        assert_eq!(
            acked.wait_confirmed(range, version, 2, short).await,
            Err(1),
            "ap-south has not acknowledged"
        );
        acked.publish(range, "ap-south", Timestamp(99));
        let waiter = {
            let acked = acked.clone();
            tokio::spawn(async move {
                acked
                    .wait_confirmed(range, version, 2, Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one short of its version");
        acked.publish(range, "ap-south", Timestamp(100));
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(
            acked.wait_confirmed(8, version, 1, short).await,
            Err(0),
            "other ranges are separate"
        );
    }
}
