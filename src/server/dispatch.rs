//! Per-connection and per-request handling of the client protocol.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::certs::Role;
use crate::engine::{Engine, WriteKind};
use crate::error_code::{ApiError, ErrorCode};
use crate::metric_handles::Handles;
use crate::peer::PolicyChangeV1;
use crate::replication::read::ReadLevel;
use crate::transport::{self, FrameError, PeerIdentity};
use crate::transport::{ADMIN_ROLES, DATA_ROLES, PEER_ROLES};
use crate::types::{ReadConsistency, Timestamp};
use crate::wire::{
    self, KeyValueV1, ReadConsistencyV1, RequestV1, ResponseBodyV1, ResponseV1, StatusV1,
    VersionEntryV1,
};

pub(crate) use super::context::Context;

/// A per-connection token bucket (only when `rate_limit_rps` is set).
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rps: u32) -> Self {
        RateLimiter {
            rate: f64::from(rps),
            tokens: f64::from(rps),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one client-protocol connection (handshake done) until it closes.
pub(crate) async fn serve_connection(
    conn: quinn::Connection,
    peer: PeerIdentity,
    ctx: Arc<Context>,
) {
    let remote = conn.remote_address();
    let peer = Arc::new(peer);
    let span = tracing::info_span!("conn", %remote, peer = %peer.name, role = %peer.role);
    let mut limiter = ctx.rate_limit_rps.map(RateLimiter::new);
    let watches = Arc::new(tokio::sync::Semaphore::new(
        ctx.engine.limits().max_watches_per_connection,
    ));
    async move {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed");
                    return;
                }
            };
            let limited = limiter.as_mut().is_some_and(|l| !l.allow());
            let ctx = ctx.clone();
            let peer = peer.clone();
            let watches = watches.clone();
            tokio::spawn(handle_stream(send, recv, ctx, peer, limited, watches).in_current_span());
        }
    }
    .instrument(span)
    .await;
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<Context>,
    peer: Arc<PeerIdentity>,
    limited: bool,
    watches: Arc<tokio::sync::Semaphore>,
) {
    let read_timeout = Duration::from_millis(crate::limits::REQUEST_READ_TIMEOUT_MS);
    let read = tokio::time::timeout(
        read_timeout,
        transport::read_frame(&mut recv, ctx.max_request_bytes),
    );
    let Ok(read) = read.await else {
        let _ = recv.stop(0u32.into());
        let e = ApiError::new(
            ErrorCode::MalformedRequest,
            "request frame not received in time",
        );
        let _ = transport::write_frame(&mut send, &wire::encode_response(&error(e))).await;
        let _ = send.finish();
        return;
    };
    let response = match read {
        Ok(_) if limited => error(ApiError::new(
            ErrorCode::RateLimited,
            "per-connection request rate exceeded",
        )),
        // A watch keeps its stream for many response frames.
        Ok(frame) if wire::watch::is_watch_request(&frame) => {
            return super::watch::serve(send, frame, ctx, peer, watches).await;
        }
        Ok(frame) => process_frame(&frame, &ctx, &peer).await,
        Err(FrameError::TooLarge { len, max }) => {
            // Tell the peer to stop sending the body we will not read.
            let _ = recv.stop(0u32.into());
            error(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!("request frame is {len} bytes; limit is {max} (max_request_bytes)"),
            ))
        }
        Err(e) => error(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("bad frame: {e}"),
        )),
    };
    let bytes = wire::encode_response(&response);
    if transport::write_frame(&mut send, &bytes).await.is_ok() {
        let _ = send.finish();
        // Wait (bounded) until the peer has the reply, so it is not cut off.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    }
}

/// `meridian_requests_total` by op and outcome code.
static REQUESTS: std::sync::LazyLock<Handles<metrics::Counter, 2>> =
    std::sync::LazyLock::new(|| {
        Handles::new(
            |[op, code]| metrics::counter!("meridian_requests_total", "op" => *op, "code" => *code),
        )
    });

/// `meridian_request_duration_seconds` by op.
static REQUEST_SECONDS: std::sync::LazyLock<Handles<metrics::Histogram, 1>> =
    std::sync::LazyLock::new(|| {
        Handles::new(|[op]| metrics::histogram!("meridian_request_duration_seconds", "op" => *op))
    });

fn error(e: ApiError) -> ResponseV1 {
    REQUESTS.get(["invalid", e.code.as_str()]).increment(1);
    wire::error_response(&e)
}

async fn process_frame(frame: &[u8], ctx: &Context, peer: &PeerIdentity) -> ResponseV1 {
    let (request, parent) = match wire::decode_request_traced(frame) {
        Ok(r) => r,
        Err(e) => return error(e.into()),
    };
    let op = op_name(&request);
    let started = Instant::now();
    let span = crate::trace_context::entry_span(
        parent,
        || tracing::debug_span!("request", op, region = %ctx.info.region, consistency = consistency_name(&request)),
    );
    let result = match level_of(&request) {
        Some(level) => {
            handle_level(request, level, ctx, peer)
                .instrument(span)
                .await
        }
        None => handle(request, ctx, peer)
            .instrument(span)
            .await
            .map(|(served_at, body)| ResponseV1::Ok {
                served_at: served_at.0,
                body,
            }),
    };
    let code = result.as_ref().err().map_or("ok", |e| e.code.as_str());
    REQUESTS.get([op, code]).increment(1);
    REQUEST_SECONDS
        .get([op])
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(response) => response,
        Err(e) => {
            // Only a WrongRegion refusal needs the key's range (to name the
            // home leader): decode the frame again there, off the hot path.
            let range = (e.code == ErrorCode::WrongRegion)
                .then(|| refused_range(frame, ctx))
                .flatten();
            wire::error_response(&wire::with_home_address(e, ctx.membership.as_ref(), range))
        }
    }
}

/// The range of the key a request in `frame` targets, if it names one.
fn refused_range(frame: &[u8], ctx: &Context) -> Option<u64> {
    let request = wire::decode_request(frame).ok()?;
    match crate::client::routes::Target::of(&request) {
        crate::client::routes::Target::Key(k) => {
            ctx.engine.region().range_of(&k).ok().map(|r| r.id)
        }
        _ => None,
    }
}

/// The level of a read answered with [`ResponseV1::OkLevel`] (the levels
/// appended after `Serializable`); `None` for every other request.
fn level_of(r: &RequestV1) -> Option<ReadLevel> {
    match r {
        RequestV1::GetWith { consistency, .. } | RequestV1::RangeWith { consistency, .. }
            if consistency.answers_with_level() =>
        {
            consistency.level()
        }
        _ => None,
    }
}

/// The read consistency a request's span is filtered by.
fn consistency_name(r: &RequestV1) -> &'static str {
    match r {
        RequestV1::GetWith { consistency, .. } | RequestV1::RangeWith { consistency, .. } => {
            consistency
                .level()
                .as_ref()
                .map_or("serializable", crate::engine::levels::level_name)
        }
        RequestV1::Get { .. } | RequestV1::Range { .. } => "prefix_default",
        RequestV1::History { .. } | RequestV1::HistoryPage { .. } => "linearizable",
        _ => "none",
    }
}

/// Serves a read at a per-call level (bounded, causal, eventual).
async fn handle_level(
    req: RequestV1,
    level: ReadLevel,
    ctx: &Context,
    peer: &PeerIdentity,
) -> Result<ResponseV1, ApiError> {
    role_check(peer, DATA_ROLES)?;
    let engine = &ctx.engine;
    let at_given = || {
        ApiError::new(
            ErrorCode::InvalidArgument,
            "a snapshot timestamp (`at`) cannot be combined with a bounded, causal or eventual read: the level picks the snapshot",
        )
    };
    let (served, staleness_ms, token, body) = match req {
        RequestV1::GetWith { key, at, .. } => {
            if at.is_some() {
                return Err(at_given());
            }
            let r = engine.get_level(key, level).await?;
            let body = value_body(r.value);
            (r.served_at, r.staleness_ms, r.token, body)
        }
        RequestV1::RangeWith {
            start,
            end,
            limit,
            at,
            ..
        } => {
            if at.is_some() {
                return Err(at_given());
            }
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let r = engine.range_level(start, end, limit, level).await?;
            (r.served_at, r.staleness_ms, r.token, page_body(r.value))
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "a request without a read level reached the level handler",
            ))
        }
    };
    Ok(ResponseV1::OkLevel {
        served_at: served.0,
        staleness_ms,
        token: token.0,
        body,
    })
}

/// Fills a `WrongRegion` error's address from gossip (see
/// [`wire::with_home_address`]).
fn op_name(r: &RequestV1) -> &'static str {
    match r {
        RequestV1::Get { .. } => "get",
        RequestV1::Put { .. } | RequestV1::PutAfter { .. } => "put",
        RequestV1::DeleteAfter { .. } => "delete",
        RequestV1::Delete { .. } => "delete",
        RequestV1::Range { .. } => "range",
        RequestV1::Txn(_) => "txn",
        RequestV1::History { .. } => "history",
        RequestV1::HistoryPage { .. } => "history_page",
        RequestV1::Status => "status",
        RequestV1::PeerPing => "peer_ping",
        RequestV1::Raft(_) => "raft",
        RequestV1::GetWith { .. } => "get",
        RequestV1::Members => "members",
        RequestV1::LeaderHints => "leader_hints",
        RequestV1::RangeWith { .. } => "range",
        RequestV1::RegionStatus => "region_status",
        RequestV1::RegionChange(_) => "region_change",
        RequestV1::Policies => "policies",
        RequestV1::SetPolicy(_) => "policy_set",
        RequestV1::RemovePolicy { .. } => "policy_remove",
        RequestV1::Frontiers => "frontiers",
        RequestV1::Watch(_) => "watch",
        RequestV1::LeaseGrant { .. } => "lease_grant",
        RequestV1::LeaseKeepAlive { .. } => "lease_keepalive",
        RequestV1::LeaseRevoke { .. } => "lease_revoke",
        RequestV1::LeaseTtl { .. } => "lease_ttl",
        RequestV1::LeaseList { .. } => "lease_list",
        RequestV1::PutLeased { .. } => "put",
        RequestV1::LockAcquire { .. } => "lock_acquire",
        RequestV1::LockRelease { .. } => "lock_release",
        RequestV1::LockCancel { .. } => "lock_cancel",
        RequestV1::LockHolder { .. } => "lock_holder",
        RequestV1::Fenced { .. } => "fenced_write",
        RequestV1::ServiceRegister { .. } => "service_register",
        RequestV1::ServiceLookup { .. } => "service_lookup",
    }
}

fn role_check(peer: &PeerIdentity, allowed: &[Role]) -> Result<(), ApiError> {
    transport::require_role(peer, allowed)
        .map_err(|e| ApiError::new(ErrorCode::PermissionDenied, e.to_string()))
}

async fn handle(
    req: RequestV1,
    ctx: &Context,
    peer: &PeerIdentity,
) -> Result<(Timestamp, ResponseBodyV1), ApiError> {
    let engine = &ctx.engine;
    match req {
        RequestV1::PeerPing => {
            role_check(peer, PEER_ROLES)?;
            Ok((engine.clock_ts(), ResponseBodyV1::Pong))
        }
        RequestV1::Raft(_) => {
            // Kept in the enum (formats are append-only) but no longer
            // served here: peer traffic has its own protocol and dispatcher.
            role_check(peer, PEER_ROLES)?;
            Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                "Raft RPCs travel on the peer protocol (ALPN meridian-peer/1), not the client protocol; run the same Meridian build on every node",
            ))
        }
        RequestV1::Members => {
            let m = ctx.membership.as_ref().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    "gossip is not configured on this node ([gossip])",
                )
            })?;
            Ok((
                engine.clock_ts(),
                ResponseBodyV1::Members(wire::members_v1(m)),
            ))
        }
        RequestV1::LeaderHints => {
            let m = ctx.membership.as_ref().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    "gossip is not configured on this node ([gossip])",
                )
            })?;
            let hints = m
                .leader_hints()
                .into_values()
                .map(|h| crate::wire::LeaderHintV1 {
                    range: h.range,
                    region: h.region,
                    leader: h.leader_node,
                    term: h.term,
                })
                .collect();
            Ok((engine.clock_ts(), ResponseBodyV1::LeaderHints(hints)))
        }
        RequestV1::RegionStatus => {
            let host = &ctx.raft;
            Ok((
                engine.clock_ts(),
                ResponseBodyV1::RegionStatus(host.status()),
            ))
        }
        RequestV1::RegionChange(change) => {
            role_check(peer, ADMIN_ROLES)?;
            let r = engine.region();
            let range = change.range;
            let voters = r
                .change_membership(&ctx.info.region, range, change.change)
                .await?;
            Ok((
                engine.clock_ts(),
                ResponseBodyV1::RegionChanged { range, voters },
            ))
        }
        RequestV1::Status => Ok((engine.clock_ts(), ResponseBodyV1::Status(status(ctx)))),
        RequestV1::ServiceLookup { name, zone } => {
            role_check(peer, DATA_ROLES)?;
            let rtt = ctx
                .membership
                .as_ref()
                .map(crate::membership::Membership::region_rtts)
                .unwrap_or_default();
            let found = engine.service_lookup(&name, &zone, &rtt).await?;
            Ok((
                engine.clock_ts(),
                ResponseBodyV1::Services(found.into_iter().map(Into::into).collect()),
            ))
        }
        RequestV1::Policies => {
            let table = engine.policy_table();
            let policies = wire::policies_v1(&engine.regions().local, &table);
            Ok((engine.clock_ts(), ResponseBodyV1::Policies(policies)))
        }
        RequestV1::Frontiers => {
            let r = engine.region();
            let frontiers = r
                .ranges()
                .iter()
                .filter_map(|d| r.host().group(d.id))
                .map(|g| wire::RangeFrontierV1 {
                    range: g.desc.id,
                    applied: g.applied_ts().0,
                    frontier: g.frontier_ts().0,
                })
                .collect();
            Ok((engine.clock_ts(), ResponseBodyV1::Frontiers(frontiers)))
        }
        RequestV1::SetPolicy(set) => {
            role_check(peer, ADMIN_ROLES)?;
            let control = crate::engine::control::required(ctx.control.as_deref())?;
            let changed = control.apply(PolicyChangeV1::Set(set)).await?;
            Ok(policy_changed(engine, changed))
        }
        RequestV1::RemovePolicy { prefix } => {
            role_check(peer, ADMIN_ROLES)?;
            let control = crate::engine::control::required(ctx.control.as_deref())?;
            let changed = control.apply(PolicyChangeV1::Remove { prefix }).await?;
            Ok(policy_changed(engine, changed))
        }
        other => {
            role_check(peer, DATA_ROLES)?;
            handle_data(other, engine).await
        }
    }
}

/// A lease's wire form (the wire sits below the engine, so the
/// conversion lives here).
fn lease_v1(l: crate::engine::lease::LeaseInfo) -> wire::LeaseV1 {
    wire::LeaseV1 {
        id: l.id,
        ttl_ms: l.ttl_ms,
        remaining_ms: l.remaining_ms,
        granted_at: l.granted_at.0,
    }
}

/// The reply body of a read of one key.
fn value_body(kv: Option<crate::types::KeyValue>) -> ResponseBodyV1 {
    ResponseBodyV1::Value(kv.map(KeyValueV1::from))
}

/// The reply body of one range page.
fn page_body(page: crate::engine::RangePage) -> ResponseBodyV1 {
    ResponseBodyV1::Page {
        kvs: page.kvs.into_iter().map(KeyValueV1::from).collect(),
        next: page.next,
    }
}

/// The two consistencies answered with [`ResponseV1::Ok`]; the levels after
/// them go through [`handle_level`] before reaching here.
fn plain(c: ReadConsistencyV1) -> Result<ReadConsistency, ApiError> {
    match c {
        ReadConsistencyV1::Linearizable => Ok(ReadConsistency::Linearizable),
        ReadConsistencyV1::Serializable => Ok(ReadConsistency::Serializable),
        _ => Err(ApiError::new(
            ErrorCode::Internal,
            "a read level reached the plain read handler",
        )),
    }
}

async fn handle_data(
    req: RequestV1,
    engine: &Engine,
) -> Result<(Timestamp, ResponseBodyV1), ApiError> {
    match req {
        // The forms without a consistency field read at the level the
        // key's prefix promises (Engine::default_level).
        RequestV1::Get { key, at } => {
            let r = engine.get(key, at.map(Timestamp)).await?;
            Ok((r.served_at, value_body(r.value)))
        }
        RequestV1::Range {
            start,
            end,
            limit,
            at,
        } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let r = engine.range(start, end, limit, at.map(Timestamp)).await?;
            Ok((r.served_at, page_body(r.value)))
        }
        RequestV1::GetWith {
            key,
            at,
            consistency,
        } => {
            let r = engine
                .get_with(key, at.map(Timestamp), plain(consistency)?)
                .await?;
            Ok((r.served_at, value_body(r.value)))
        }
        RequestV1::Put { key, value } => {
            let w = engine.put(key, value).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: w.existed,
                },
            ))
        }
        RequestV1::PutAfter { key, value, token } => {
            let w = engine.put_after(key, value, Timestamp(token)).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: w.existed,
                },
            ))
        }
        RequestV1::DeleteAfter { key, token } => {
            let w = engine.delete_after(key, Timestamp(token)).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: w.existed,
                },
            ))
        }
        RequestV1::PutLeased { key, value, lease } => {
            let w = engine.put_leased(key, value, lease).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: w.existed,
                },
            ))
        }
        RequestV1::LockAcquire {
            name,
            lease,
            value,
            wait,
        } => {
            use crate::engine::lock::LockAcquired;
            let got = engine
                .lock_acquire(name, lease, value.clone(), wait)
                .await?;
            let body = match got {
                LockAcquired::Granted(token) => wire::LockV1 {
                    granted: true,
                    lease,
                    token,
                    value,
                },
                LockAcquired::Queued => wire::LockV1 {
                    granted: false,
                    lease,
                    token: 0,
                    value,
                },
            };
            Ok((engine.clock_ts(), ResponseBodyV1::Lock(Some(body))))
        }
        RequestV1::LockRelease { name, token } => {
            engine.lock_release(name, token).await?;
            Ok((engine.clock_ts(), ResponseBodyV1::Lock(None)))
        }
        RequestV1::LockCancel { name, lease } => {
            engine.lock_cancel(name, lease).await?;
            Ok((engine.clock_ts(), ResponseBodyV1::Lock(None)))
        }
        RequestV1::LockHolder { name } => {
            let holder = engine.lock_holder(name).await?.map(|h| wire::LockV1 {
                granted: true,
                lease: h.lease,
                token: h.token,
                value: h.value,
            });
            Ok((engine.clock_ts(), ResponseBodyV1::Lock(holder)))
        }
        RequestV1::Fenced { name, token, write } => {
            let kind = match write {
                wire::FencedWriteV1::Put { key, value } => WriteKind::Put { key, value },
                wire::FencedWriteV1::Delete { key } => WriteKind::Delete { key },
                wire::FencedWriteV1::Txn(t) => WriteKind::Txn(t.into()),
            };
            let out = engine.write_fenced(kind, name, token).await?;
            Ok((
                out.version,
                ResponseBodyV1::Txn {
                    succeeded: out.succeeded,
                    version: out.version.0,
                },
            ))
        }
        RequestV1::ServiceRegister { instance, lease } => {
            let w = engine.service_register(instance.into(), lease).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: true,
                },
            ))
        }
        RequestV1::LeaseGrant { ttl_ms } => {
            let l = engine.lease_grant(ttl_ms).await?;
            Ok((l.granted_at, ResponseBodyV1::Lease(lease_v1(l))))
        }
        RequestV1::LeaseKeepAlive { ids } => {
            let kept = engine.lease_keep_alive(ids).await?;
            let body = kept.into_iter().map(lease_v1).collect();
            Ok((engine.clock_ts(), ResponseBodyV1::Leases(body)))
        }
        RequestV1::LeaseRevoke { id } => {
            engine.lease_revoke(id).await?;
            let at = engine.clock_ts();
            Ok((
                at,
                ResponseBodyV1::Written {
                    version: at.0,
                    existed: true,
                },
            ))
        }
        RequestV1::LeaseTtl { id } => {
            let l = engine.lease_ttl(id).await?;
            Ok((engine.clock_ts(), ResponseBodyV1::Lease(lease_v1(l))))
        }
        RequestV1::LeaseList { after, limit } => {
            let limit = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(engine.limits().max_scan_page);
            let leases = engine.lease_list(after, limit).await?;
            let body = leases.into_iter().map(lease_v1).collect();
            Ok((engine.clock_ts(), ResponseBodyV1::Leases(body)))
        }
        RequestV1::Delete { key } => {
            let w = engine.delete(key).await?;
            Ok((
                w.version,
                ResponseBodyV1::Written {
                    version: w.version.0,
                    existed: w.existed,
                },
            ))
        }
        RequestV1::RangeWith {
            start,
            end,
            limit,
            at,
            consistency,
        } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let r = engine
                .range_with(start, end, limit, at.map(Timestamp), plain(consistency)?)
                .await?;
            Ok((r.served_at, page_body(r.value)))
        }
        RequestV1::Txn(t) => {
            let out = engine.txn(t.into()).await?;
            Ok((
                out.version,
                ResponseBodyV1::Txn {
                    succeeded: out.succeeded,
                    version: out.version.0,
                },
            ))
        }
        RequestV1::History { key, limit } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let r = engine.history(key, limit).await?;
            let entries = r.value.iter().map(VersionEntryV1::from).collect();
            Ok((r.served_at, ResponseBodyV1::History(entries)))
        }
        RequestV1::HistoryPage { key, limit, before } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let max_bytes = engine.limits().max_scan_page_bytes;
            let before = before.map(Timestamp);
            let r = engine.history_page(key, before, limit, max_bytes).await?;
            let (entries, next) = r.value;
            Ok((
                r.served_at,
                ResponseBodyV1::HistoryPage {
                    entries: entries.iter().map(VersionEntryV1::from).collect(),
                    next_before: next.map(|t| t.0),
                },
            ))
        }
        RequestV1::Status
        | RequestV1::PeerPing
        | RequestV1::Raft(_)
        | RequestV1::RegionStatus
        | RequestV1::Members
        | RequestV1::LeaderHints
        | RequestV1::Policies
        | RequestV1::SetPolicy(_)
        | RequestV1::RemovePolicy { .. }
        | RequestV1::Frontiers
        | RequestV1::ServiceLookup { .. }
        | RequestV1::RegionChange(_) => Err(ApiError::new(
            ErrorCode::Internal,
            "routed to the wrong handler",
        )),
        // Served on its own stream by `server::watch` before this point.
        RequestV1::Watch(_) => Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "a watch request must be the only frame of its stream",
        )),
    }
}

fn policy_changed(
    engine: &Engine,
    c: crate::engine::control::Changed,
) -> (crate::types::Timestamp, ResponseBodyV1) {
    let policies = wire::policies_v1(&engine.regions().local, &c.table.table);
    (
        engine.clock_ts(),
        ResponseBodyV1::PolicyChanged {
            version: c.table.version,
            epoch: c.epoch,
            policies,
        },
    )
}

fn status(ctx: &Context) -> StatusV1 {
    StatusV1 {
        node_id: ctx.info.node_id.clone(),
        region: ctx.info.region.clone(),
        zone: ctx.info.zone.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        approximate_keys: ctx.engine.store().approximate_keys() as u64,
        gc_horizon: ctx.engine.gc_horizon_floor().0,
    }
}
