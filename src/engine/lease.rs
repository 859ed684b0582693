//! The engine's lease operations (the rules are `crate::coord`'s): grant,
//! keepalive, revoke, time-to-live and list at the region's lease range,
//! puts attached to a lease in any range, and the expiry driver the lease
//! range's leader runs.
//!
//! A client's lease request must reach the lease range's leader (others
//! answer `NotLeader` naming it, as for any write). A put with a lease goes
//! to its key's range leader like any put; that node checks the lease at
//! the lease range's leader (itself, or one peer exchange) and proposes the
//! put with the check's timestamp.

use std::sync::Arc;
use std::time::Duration;

use super::{clock_error, Engine, WriteOutcome};
use crate::coord::{self, keys, LeaseRecordV1, LeaseStateV1};
use crate::error_code::{ApiError, ErrorCode};
use crate::peer::{LeasePeerV1, PeerRequestV1, PeerResponseV1};
use crate::raft::state_machine::lease_refused;
use crate::raft::types::{CommandV1, LeaseCommandV1};
use crate::raft::{RangeDescriptor, RangeReply};
use crate::replication::policy::Consistency;
use crate::types::Timestamp;

/// How often the lease range's leader looks for expired leases: with the
/// commit, the bound on how late after its deadline a lease expires.
pub const LEASE_TICK: Duration = Duration::from_millis(100);
/// Longest a forwarded lease exchange waits for the peer's answer.
pub const LEASE_FORWARD_TIMEOUT: Duration = Duration::from_secs(12);
/// Lease records the driver reads per page.
const DRIVER_PAGE: usize = 1_000;
/// Metric: leases expired (deadline passed, not revoked).
pub const METRIC_LEASE_EXPIRED: &str = "meridian_lease_expirations_total";
/// Metric: lease keepalives applied.
pub const METRIC_LEASE_KEEPALIVES: &str = "meridian_lease_keepalives_total";
/// Metric: live leases in the region (on the lease range's leader).
pub const METRIC_LEASES_LIVE: &str = "meridian_leases";
/// Metric: locks (and elections) with a holder (on the lease range's leader).
pub const METRIC_LOCKS_HELD: &str = "meridian_locks_held";
/// Metric: acquirers waiting for locks (on the lease range's leader).
pub const METRIC_LOCK_WAITERS: &str = "meridian_lock_waiters";

/// A lease as a client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: u64,
    /// The TTL it was granted.
    pub ttl_ms: u64,
    /// Time left when it was read (0: expired).
    pub remaining_ms: u64,
    /// When it was granted (HLC).
    pub granted_at: Timestamp,
}

impl LeaseInfo {
    fn of(id: u64, r: &LeaseRecordV1, at: Timestamp) -> LeaseInfo {
        LeaseInfo {
            id,
            ttl_ms: r.ttl_ms,
            remaining_ms: r.remaining_ms(at),
            granted_at: Timestamp(r.granted_at),
        }
    }
}

pub(super) fn not_found(id: u64) -> ApiError {
    ApiError::new(
        ErrorCode::LeaseNotFound,
        format!(
            "lease {id} does not exist in this region (expired, revoked, or never granted here)"
        ),
    )
}

pub(super) fn storage(e: crate::storage::StorageError) -> ApiError {
    ApiError::new(e.code(), e.to_string())
}

impl Engine {
    /// The region's lease range.
    pub fn lease_range(&self) -> Result<RangeDescriptor, ApiError> {
        coord::lease_range(self.region.ranges())
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "no range holds the empty key"))
    }

    async fn propose_lease(
        &self,
        range: &RangeDescriptor,
        command: LeaseCommandV1,
    ) -> Result<RangeReply, ApiError> {
        let now = self.hlc.now().map_err(clock_error)?;
        self.region
            .propose_reply(range, now, CommandV1::Lease(command))
            .await
    }

    /// The lease record `id` at this node's replica of the lease range.
    fn lease_record(&self, id: u64) -> Result<Option<LeaseRecordV1>, ApiError> {
        let range = self.lease_range()?;
        self.store
            .coord_get(&keys::lease(range.id, id))
            .map_err(storage)?
            .map(|b| {
                LeaseRecordV1::decode(&b)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
            })
            .transpose()
    }

    /// Grants a lease of `ttl_ms` (this node must lead the lease range).
    pub async fn lease_grant(&self, ttl_ms: u64) -> Result<LeaseInfo, ApiError> {
        coord::check_ttl(ttl_ms).map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
        let range = self.lease_range()?;
        let reply = self
            .propose_lease(&range, LeaseCommandV1::Grant { ttl_ms })
            .await?;
        Ok(LeaseInfo {
            id: reply.value,
            ttl_ms,
            remaining_ms: ttl_ms,
            granted_at: Timestamp(reply.version),
        })
    }

    /// Keeps `ids` alive: each live lease's deadline moves to now + its
    /// TTL. Returns each lease's state after it, or `remaining_ms = 0` for
    /// one that does not exist or expired. The answer follows the commit,
    /// so the deadlines it reports survive a leader change.
    pub async fn lease_keep_alive(&self, ids: Vec<u64>) -> Result<Vec<LeaseInfo>, ApiError> {
        if ids.is_empty() || ids.len() > coord::MAX_LEASES_PER_COMMAND {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "a keepalive names 1..={} leases, not {}",
                    coord::MAX_LEASES_PER_COMMAND,
                    ids.len()
                ),
            ));
        }
        let range = self.lease_range()?;
        let reply = self
            .propose_lease(&range, LeaseCommandV1::KeepAlive { ids: ids.clone() })
            .await?;
        metrics::counter!(METRIC_LEASE_KEEPALIVES).increment(ids.len() as u64);
        let at = Timestamp(reply.version);
        ids.into_iter()
            .map(|id| {
                Ok(match self.lease_record(id)? {
                    Some(r) => LeaseInfo::of(id, &r, at),
                    None => LeaseInfo {
                        id,
                        ttl_ms: 0,
                        remaining_ms: 0,
                        granted_at: Timestamp::ZERO,
                    },
                })
            })
            .collect()
    }

    /// Revokes lease `id` at once and deletes its keys before answering.
    pub async fn lease_revoke(&self, id: u64) -> Result<(), ApiError> {
        let range = self.lease_range()?;
        let reply = self
            .propose_lease(
                &range,
                LeaseCommandV1::Expire {
                    ids: vec![id],
                    revoke: true,
                },
            )
            .await?;
        if !reply.succeeded {
            // Not live: unknown, or already expired (then the driver is
            // dropping it; say it is gone either way).
            return Err(not_found(id));
        }
        self.drop_everywhere(&[id]).await?;
        self.propose_lease(&range, LeaseCommandV1::Forget { ids: vec![id] })
            .await?;
        Ok(())
    }

    /// Lease `id` as of a linearizable read at the lease range's leader.
    pub async fn lease_ttl(&self, id: u64) -> Result<LeaseInfo, ApiError> {
        let range = self.lease_range()?;
        let at = self.region.read_ts(&self.hlc, &range, None).await?;
        let now = self.hlc.now().map_err(clock_error)?.max(at);
        match self.lease_record(id)? {
            Some(r) if r.live_at(now) => Ok(LeaseInfo::of(id, &r, now)),
            _ => Err(not_found(id)),
        }
    }

    /// Live leases (at most `limit`, by id, after `after`) as of a
    /// linearizable read at the lease range's leader.
    pub async fn lease_list(&self, after: u64, limit: usize) -> Result<Vec<LeaseInfo>, ApiError> {
        let range = self.lease_range()?;
        let at = self.region.read_ts(&self.hlc, &range, None).await?;
        let now = self.hlc.now().map_err(clock_error)?.max(at);
        let mut out = Vec::new();
        let from = (after > 0).then(|| keys::lease(range.id, after));
        self.for_each_coord(&keys::leases(range.id), from, |k, v| {
            if out.len() >= limit {
                return false;
            }
            if let (Some(id), Ok(r)) = (keys::lease_id_of(k), LeaseRecordV1::decode(v)) {
                if r.live_at(now) {
                    out.push(LeaseInfo::of(id, &r, now));
                }
            }
            true
        })?;
        Ok(out)
    }

    /// Checks at the lease range's leader that lease `id` is live and
    /// returns the check's timestamp: here when this node leads it, else
    /// asked of the leader over the peer protocol.
    async fn lease_check(&self, id: u64) -> Result<Timestamp, ApiError> {
        match self.lease_check_here(id).await {
            Err(e) if e.code == ErrorCode::NotLeader => {
                let addr = leader_addr(&e)?;
                match self
                    .forward(addr, PeerRequestV1::Lease(LeasePeerV1::Check { id }))
                    .await?
                {
                    PeerResponseV1::LeaseChecked { checked_at } => {
                        // Keep our clock above the check, so the put is
                        // stamped after it.
                        let at = Timestamp(checked_at);
                        if at > self.hlc.last() {
                            self.hlc.update(at).map_err(clock_error)?;
                        }
                        Ok(at)
                    }
                    other => Err(unexpected(addr, &other)),
                }
            }
            other => other,
        }
    }

    /// The lease check (at the lease range's leader) on this node (`NotLeader` if it does not
    /// lead the lease range).
    pub async fn lease_check_here(&self, id: u64) -> Result<Timestamp, ApiError> {
        self.lease_ttl(id).await?;
        self.hlc.now().map_err(clock_error)
    }

    /// Proposes a lease or lock command to `range` at its leader: here,
    /// or forwarded once over the peer protocol.
    pub(super) async fn propose_anywhere(
        &self,
        range: &RangeDescriptor,
        command: CommandV1,
    ) -> Result<RangeReply, ApiError> {
        let now = self.hlc.now().map_err(clock_error)?;
        match self.region.propose_reply(range, now, command.clone()).await {
            Err(e) if e.code == ErrorCode::NotLeader => {
                let addr = leader_addr(&e)?;
                let req = match command {
                    CommandV1::Lease(command) => LeasePeerV1::Propose {
                        range: range.id,
                        command,
                    },
                    CommandV1::Lock(command) => LeasePeerV1::ProposeLock {
                        range: range.id,
                        command,
                    },
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::Internal,
                            format!("only lease and lock commands are forwarded, not {other:?}"),
                        ))
                    }
                };
                match self.forward(addr, PeerRequestV1::Lease(req)).await? {
                    PeerResponseV1::LeaseApplied {
                        succeeded,
                        version,
                        value,
                    } => Ok(RangeReply {
                        succeeded,
                        version,
                        value,
                    }),
                    other => Err(unexpected(addr, &other)),
                }
            }
            other => other,
        }
    }

    /// Serves a forwarded [`LeasePeerV1`] on this node.
    pub async fn serve_lease_peer(&self, req: LeasePeerV1) -> PeerResponseV1 {
        let answer = match req {
            LeasePeerV1::Check { id } => self
                .lease_check_here(id)
                .await
                .map(|at| PeerResponseV1::LeaseChecked { checked_at: at.0 }),
            LeasePeerV1::Propose { range, command } => {
                self.propose_here(range, CommandV1::Lease(command)).await
            }
            LeasePeerV1::ProposeLock { range, command } => {
                self.propose_here(range, CommandV1::Lock(command)).await
            }
        };
        match answer {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::NotLeader => PeerResponseV1::NotLeader {
                leader: e.leader_hint,
            },
            Err(e) => PeerResponseV1::error(&e),
        }
    }

    /// Proposes a forwarded command to `range` on this node.
    async fn propose_here(
        &self,
        range: u64,
        command: CommandV1,
    ) -> Result<PeerResponseV1, ApiError> {
        let Some(r) = self.region.ranges().iter().find(|r| r.id == range).cloned() else {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("no range {range} in this region"),
            ));
        };
        let now = self.hlc.now().map_err(clock_error)?;
        let reply = self.region.propose_reply(&r, now, command).await?;
        Ok(PeerResponseV1::LeaseApplied {
            succeeded: reply.succeeded,
            version: reply.version,
            value: reply.value,
        })
    }

    pub(super) async fn forward(
        &self,
        addr: std::net::SocketAddr,
        req: PeerRequestV1,
    ) -> Result<PeerResponseV1, ApiError> {
        let router = self.region.host().router();
        let reply = tokio::time::timeout(
            LEASE_FORWARD_TIMEOUT,
            router.exchange(addr, &req, crate::peer::PEER_MAX_FRAME_BYTES),
        )
        .await;
        match reply {
            Ok(Ok(PeerResponseV1::Err { code, message })) => {
                let code = code
                    .strip_prefix("MER-")
                    .and_then(|n| n.parse().ok())
                    .and_then(ErrorCode::from_u16)
                    .unwrap_or(ErrorCode::Internal);
                Err(ApiError::new(code, message))
            }
            Ok(Ok(PeerResponseV1::NotLeader { .. })) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the range's leader moved while a lease operation was forwarded; retry",
            )),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!("forwarding a lease operation to {addr} failed: {e}"),
            )),
            Err(_) => Err(ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!("{addr} did not answer a forwarded lease operation within {LEASE_FORWARD_TIMEOUT:?}"),
            )),
        }
    }

    /// Writes `value` at `key` attached to lease `lease`: deleted when the
    /// lease expires. Only on strong prefixes.
    pub async fn put_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        self.check_coordination_key(&key, "a key attached to a lease")?;
        let kind = super::WriteKind::Put {
            key: key.clone(),
            value: value.clone(),
        };
        let table = self.check_write_region(&kind)?;
        let range = self.region.range_of(&key)?.clone();
        // Only the range's leader proposes: do not ask the lease range for
        // a put that would be refused here anyway.
        if !self.region.leads(&range) {
            return Err(self.region.not_leading(&range));
        }
        let checked_at = self.lease_check(lease).await?;
        let now = self.hlc.now().map_err(clock_error)?;
        let reply = self
            .region
            .propose_reply(
                &range,
                now,
                super::policed(
                    table,
                    CommandV1::PutLeased {
                        key,
                        value,
                        lease,
                        checked_at: checked_at.0,
                    },
                ),
            )
            .await?;
        if !reply.succeeded {
            return Err(match reply.value {
                lease_refused::CHECK_TOO_OLD => ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the put took more than {} ms from its lease check to its commit and was not applied; retry",
                        coord::ATTACH_VALIDITY_MS
                    ),
                ),
                _ => not_found(lease),
            });
        }
        if let Some((k, n)) = self.sync_regions(&kind) {
            self.region
                .confirm_sync(&k, Timestamp(reply.version), n)
                .await?;
        }
        Ok(WriteOutcome {
            version: Timestamp(reply.version),
            existed: true,
        })
    }

    /// Refuses coordination (leases, locks, elections, services) on a key
    /// whose prefix is not strong (`MER-1015`).
    pub(crate) fn check_coordination_key(&self, key: &[u8], what: &str) -> Result<(), ApiError> {
        let (prefix, policy) = self.policy_of(key);
        if policy.consistency == Consistency::Strong {
            return Ok(());
        }
        let under = prefix.map_or_else(
            || "the default policy".to_string(),
            |p| format!("prefix {:?}", String::from_utf8_lossy(&p)),
        );
        Err(ApiError::new(
            ErrorCode::CoordinationNotAllowed,
            format!(
                "{what} must be under a strong prefix: {:?} is under {under}, which is {}",
                String::from_utf8_lossy(key),
                policy.consistency.as_str()
            ),
        ))
    }

    /// Proposes `Drop{ids}` to every range of the region until each has
    /// dropped every key attached to them.
    async fn drop_everywhere(&self, ids: &[u64]) -> Result<(), ApiError> {
        for range in self.region.ranges().to_vec() {
            // A range drops at most MAX_DROP_KEYS keys per command; a lease
            // has finitely many, so this ends (bounded all the same).
            for _ in 0..1_000_000 {
                let reply = self
                    .propose_anywhere(
                        &range,
                        CommandV1::Lease(LeaseCommandV1::Drop { ids: ids.to_vec() }),
                    )
                    .await?;
                if reply.succeeded {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether this node leads its region's lease range.
    fn leads_lease_range(&self) -> bool {
        self.lease_range()
            .is_ok_and(|range| self.region.leads(&range))
    }

    /// One pass of the expiry driver, on the lease range's leader: expires
    /// every live lease whose deadline passed, then drops every expired
    /// lease's keys in every range and forgets it. Returns how many leases
    /// are live (0 on a node that does not lead the lease range).
    pub async fn lease_driver_pass(&self) -> Result<usize, ApiError> {
        let range = self.lease_range()?;
        if !self.region.leads(&range) {
            return Ok(0);
        }
        let now = self.hlc.now().map_err(clock_error)?;
        let (mut due, mut expired, mut live) = (Vec::new(), Vec::new(), 0usize);
        self.for_each_coord(&keys::leases(range.id), None, |k, v| {
            if let (Some(id), Ok(r)) = (keys::lease_id_of(k), LeaseRecordV1::decode(v)) {
                match r.state {
                    LeaseStateV1::Live if !r.live_at(now) => due.push(id),
                    LeaseStateV1::Live => live += 1,
                    LeaseStateV1::Expired(_) => expired.push(id),
                }
            }
            true
        })?;
        metrics::gauge!(METRIC_LEASES_LIVE).set(live as f64);
        self.publish_lock_gauges(&range)?;
        for ids in due.chunks(coord::MAX_LEASES_PER_COMMAND) {
            let reply = self
                .propose_lease(
                    &range,
                    LeaseCommandV1::Expire {
                        ids: ids.to_vec(),
                        revoke: false,
                    },
                )
                .await?;
            metrics::counter!(METRIC_LEASE_EXPIRED).increment(reply.value);
            expired.extend_from_slice(ids);
        }
        for ids in expired.chunks(coord::MAX_LEASES_PER_COMMAND) {
            self.drop_everywhere(ids).await?;
            self.propose_lease(&range, LeaseCommandV1::Forget { ids: ids.to_vec() })
                .await?;
        }
        Ok(live)
    }
}

impl Engine {
    /// Calls `visit` with this node's coordination entries under `prefix`
    /// (after `after`), in key order, a page of [`DRIVER_PAGE`] at a time,
    /// until it returns false.
    fn for_each_coord(
        &self,
        prefix: &[u8],
        mut after: Option<Vec<u8>>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ApiError> {
        loop {
            let page = self
                .store
                .coord_scan(prefix, after.as_deref(), DRIVER_PAGE)
                .map_err(storage)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (k, v) in &page {
                if !visit(k, v) {
                    return Ok(());
                }
            }
        }
    }

    /// Sets the gauges of locks held and waiters from this node's replica
    /// of the lease range (called by the driver on its leader).
    fn publish_lock_gauges(&self, range: &RangeDescriptor) -> Result<(), ApiError> {
        let (mut held, mut waiting) = (0usize, 0usize);
        self.for_each_coord(&keys::locks(range.id), None, |_, v| {
            if let Ok(r) = crate::coord::lock::LockRecordV1::decode(v) {
                held += usize::from(r.holder.is_some());
                waiting += r.waiters.len();
            }
            true
        })?;
        metrics::gauge!(METRIC_LOCKS_HELD).set(held as f64);
        metrics::gauge!(METRIC_LOCK_WAITERS).set(waiting as f64);
        Ok(())
    }
}

/// Zeroes the gauges only the lease range's leader exports.
fn clear_coord_gauges() {
    for gauge in [METRIC_LEASES_LIVE, METRIC_LOCKS_HELD, METRIC_LOCK_WAITERS] {
        metrics::gauge!(gauge).set(0.0);
    }
}

/// Runs the expiry driver every [`LEASE_TICK`] until the engine is dropped
/// (it holds only a weak reference).
pub fn spawn_lease_driver(engine: &Arc<Engine>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LEASE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leading = false;
        loop {
            tick.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            let leading = engine.leads_lease_range();
            if was_leading && !leading {
                // The gauges are the lease range leader's: a node that lost
                // the leadership stops exporting its last count.
                clear_coord_gauges();
            }
            was_leading = leading;
            if let Err(e) = engine.lease_driver_pass().await {
                tracing::debug!(error = %e, "lease expiry pass failed; retrying");
            }
        }
    })
}

fn leader_addr(e: &ApiError) -> Result<std::net::SocketAddr, ApiError> {
    e.leader_hint
        .as_deref()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the range has no leader right now (an election is under way); retry",
            )
        })
}

fn unexpected(addr: std::net::SocketAddr, reply: &PeerResponseV1) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("unexpected answer from {addr} to a lease operation: {reply:?}"),
    )
}
