//! Route handlers: extract, validate, call the [`Engine`](crate::engine::Engine),
//! render. Each runs inside [`observe`], which gives it its span, metric,
//! timeout and error rendering.
//!
//! Extractor rejections are taken as `Result`s so that every failure, even a
//! malformed query string or an oversized body, leaves in our error shape and
//! is counted.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::dto::{
    encode_page_token, parse_timestamp, DeleteQuery, DeleteResponse, GetQuery, GetResponse,
    HealthResponse, HistoryEntryJson, HistoryQuery, HistoryResponse, KeyPath, MemberJson,
    MembersResponse, PoliciesResponse, PolicyChangeRequest, PolicyChangedResponse, PrefixPath,
    PutQuery, PutResponse, RangeQuery, RangeResponse, RawValue, ServedMeta, StatusResponse,
    TxnRequest, TxnResponse,
};
use super::error::{ErrorBody, GatewayError};
use super::extract::{body, path_key, query};
use super::{coord, observe, Caller, GatewayState};
use crate::engine::levels::{parse_read_choice, ReadChoice};
use crate::engine::WriteKind;
use crate::error_code::ErrorCode;
use crate::replication::read::ReadLevel;
use crate::transport::ADMIN_ROLES;
use crate::types::{ReadConsistency, Timestamp};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `at=`, refused (400 MER-1007) when further ahead of this node's clock
/// than clock.max_offset_ms: a snapshot the caller asked for, not a peer's
/// clock offset (which the engine would report as MER-3002).
fn at(state: &GatewayState, raw: Option<&str>) -> Result<Option<Timestamp>, GatewayError> {
    let Some(ts) = raw.map(parse_timestamp).transpose()? else {
        return Ok(None);
    };
    state.engine.clock().check_remote(ts).map_err(|e| {
        GatewayError::api(
            ErrorCode::InvalidArgument,
            format!("at={ts} is in the future of this node: {e}"),
        )
    })?;
    Ok(Some(ts))
}

fn empty_key() -> GatewayError {
    GatewayError::api(
        ErrorCode::KeyTooLarge,
        "the key is empty; give it after the route's trailing '/'",
    )
}

/// How a read was asked for: the query's `consistency`, `token` and
/// `on_stale`. `None`: no `consistency` (a linearizable read, as before
/// levels existed, with `at` allowed).
fn read_choice(
    state: &GatewayState,
    consistency: Option<&str>,
    token: Option<&str>,
    on_stale: Option<&str>,
) -> Result<Option<ReadChoice>, GatewayError> {
    // A token comes from the caller, not from a peer: one further ahead of
    // this node's clock than clock.max_offset_ms is a bad argument (400),
    // refused before the engine would count it as a peer's clock offset
    // (MER-3002, a server-side fault).
    if let Some(t) = token.and_then(|t| t.parse::<u64>().ok()) {
        state
            .engine
            .clock()
            .check_remote(Timestamp(t))
            .map_err(|e| {
                GatewayError::api(
                    ErrorCode::InvalidArgument,
                    format!("token={t} cannot be from a reply of this cluster: {e}"),
                )
            })?;
    }
    match consistency {
        Some(c) => Ok(Some(parse_read_choice(c, token, on_stale)?)),
        None if token.is_some() || on_stale.is_some() => Err(GatewayError::api(
            ErrorCode::InvalidArgument,
            "token and on_stale need a consistency (causal or bounded:MS)",
        )),
        None => Ok(None),
    }
}

/// How a read is served: at the level its prefix promises (no
/// `consistency`), serializable, or at the level it asked for. `bound` is
/// the key's policy's `max_staleness_ms`, the bound of
/// `consistency=bounded` without one.
enum Served {
    PrefixDefault,
    Serializable,
    Level(ReadLevel),
}

fn level_of(choice: Option<ReadChoice>, bound: u64) -> Served {
    match choice.map(|c| c.level(bound)) {
        None => Served::PrefixDefault,
        Some(None) => Served::Serializable,
        Some(Some(level)) => Served::Level(level),
    }
}

/// Refuses `at` with a level that picks its own snapshot.
fn no_snapshot_with_level(at: Option<Timestamp>) -> Result<(), GatewayError> {
    match at {
        Some(_) => Err(GatewayError::api(
            ErrorCode::InvalidArgument,
            "at= cannot be combined with a bounded, causal or eventual read: the level picks the snapshot",
        )),
        None => Ok(()),
    }
}

/// Reads one key, at a per-call level when `consistency` is given.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(KeyPath, GetQuery),
    responses(
        (status = 200, description = "The live value", body = GetResponse),
        (status = 400, description = "Bad key, at, consistency, token or on_stale, or a combination the parameters' descriptions rule out (MER-1007); a level the prefix does not allow (MER-1009)", body = ErrorBody),
        (status = 413, description = "Key longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 404, description = "No live value at the snapshot (code not_found)", body = ErrorBody),
        (status = 410, description = "Snapshot below the GC horizon (MER-1008)", body = ErrorBody),
        (status = 421, description = "This region is not the prefix's home (MER-3006): home_region and address say where to go", body = ErrorBody),
        (status = 503, description = "A bounded read with on_stale=fail found this region too stale (MER-3007)", body = ErrorBody),
    ))]
pub(crate) async fn get_key(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
) -> Response {
    observe(&state, "get", async {
        let key = path_key(path)?;
        let q = query(q)?;
        let at = at(&state, q.at.as_deref())?;
        let choice = read_choice(
            &state,
            q.consistency.as_deref(),
            q.token.as_deref(),
            q.on_stale.as_deref(),
        )?;
        let engine = &state.engine;
        let k = key.clone().into_bytes();
        let bound = engine.policy_of(&k).1.max_staleness_ms;
        let (value, meta) = match level_of(choice, bound) {
            Served::PrefixDefault => {
                let s = engine.get(k, at).await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Serializable => {
                let s = engine
                    .get_with(k, at, ReadConsistency::Serializable)
                    .await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Level(ReadLevel::Linearizable) => {
                let s = engine
                    .get_with(k, at, ReadConsistency::Linearizable)
                    .await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Level(level) => {
                no_snapshot_with_level(at)?;
                let r = engine.get_level(k, level).await?;
                let meta = ServedMeta {
                    served_at: r.served_at,
                    staleness_ms: r.staleness_ms,
                    token: r.token,
                };
                (r.value, meta)
            }
        };
        match value {
            Some(kv) => Ok(Json(GetResponse::new(key, &kv, meta)).into_response()),
            None => Err(GatewayError::NotFound(format!(
                "key {key:?} has no live value at {} (token {})",
                meta.served_at, meta.token.0
            ))),
        }
    })
    .await
}

/// Writes the raw request body as the value of a key, attached to a lease
/// with `lease=ID` (the key is deleted when the lease ends).
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(KeyPath, PutQuery),
    request_body(content = RawValue, content_type = "application/octet-stream", description = "The value, as raw bytes (any bytes, any Content-Type; 0..=max_value_bytes). No body stores an empty value."),
    responses(
        (status = 200, description = "Written", body = PutResponse),
        (status = 400, description = "Bad key, bad lease id, bad fence, lease and fence together, or an unknown parameter (MER-1007); lease or fence on a key whose prefix is not strong (MER-1015); nothing written", body = ErrorBody),
        (status = 404, description = "lease=ID names no live lease in this region (MER-1014); nothing written", body = ErrorBody),
        (status = 409, description = "fence= carries a token older than its lock's newest grant, or one the lock never granted (MER-1017); nothing written", body = ErrorBody),
        (status = 413, description = "Key (MER-1001), value (MER-1002) or body (MER-1003) too large", body = ErrorBody),
        (status = 421, description = "This node does not lead the key's range (MER-3004; `address` names the leader) or the prefix is homed in another region (MER-3006); nothing written", body = ErrorBody),
    ))]
pub(crate) async fn put_key(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PutQuery>, QueryRejection>,
    value: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "put", async {
        let key = path_key(path)?;
        let q = query(q)?;
        let value = body(value, &state)?;
        let (key, value) = (key.into_bytes(), value.to_vec());
        let version = match (q.lease, q.fence) {
            (None, None) => state.engine.put(key, value).await?.version,
            (Some(lease), None) => {
                let lease = super::lease::check_lease_id(lease, "lease")?;
                state.engine.put_leased(key, value, lease).await?.version
            }
            (None, Some(fence)) => {
                let fence = coord::parse_fence(&fence, state.engine.limits().max_key_bytes)?;
                let kind = WriteKind::Put { key, value };
                coord::write_fenced(&state, kind, fence).await?.version
            }
            (Some(_), Some(_)) => {
                return Err(GatewayError::api(
                    ErrorCode::InvalidArgument,
                    "give lease= or fence=, not both (a leased write cannot be fenced)",
                ))
            }
        };
        Ok(Json(PutResponse {
            version: version.0,
            served_at: version.0,
            served_at_str: version.to_string(),
        })
        .into_response())
    })
    .await
}

/// Deletes a key (writes a tombstone; history keeps older versions).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(KeyPath, DeleteQuery),
    responses(
        (status = 200, description = "Deleted, or already absent (existed = false)", body = DeleteResponse),
        (status = 400, description = "Bad key, bad fence or an unknown parameter (MER-1007); a fenced delete of a key outside a strong prefix (MER-1015); nothing written", body = ErrorBody),
        (status = 409, description = "fence= carries a token older than its lock's newest grant, or one the lock never granted (MER-1017); nothing written", body = ErrorBody),
        (status = 413, description = "Key longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This node does not lead the key's range (MER-3004; `address` names the leader) or the prefix is homed in another region (MER-3006); nothing written", body = ErrorBody)))]
pub(crate) async fn delete_key(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Response {
    observe(&state, "delete", async {
        let key = path_key(path)?.into_bytes();
        let (version, existed) = match query(q)?.fence {
            None => {
                let w = state.engine.delete(key).await?;
                (w.version, w.existed)
            }
            Some(fence) => {
                let fence = coord::parse_fence(&fence, state.engine.limits().max_key_bytes)?;
                let out = coord::write_fenced(&state, WriteKind::Delete { key }, fence).await?;
                (out.version, out.succeeded)
            }
        };
        Ok(Json(DeleteResponse {
            version: version.0,
            existed,
            served_at: version.0,
            served_at_str: version.to_string(),
        })
        .into_response())
    })
    .await
}

/// Answers `/v1/kv/` and `/v1/history/` (no key) with MER-1001, as the engine would.
pub(crate) async fn empty_key_route(State(state): State<GatewayState>) -> Response {
    observe(&state, "empty_key", async { Err(empty_key()) }).await
}

/// Lists live keys by prefix or range, one page at a time, at a per-call
/// level when `consistency` is given.
#[utoipa::path(get, path = "/v1/kv", tag = "kv", params(RangeQuery),
    responses(
        (status = 200, description = "One page of live pairs in key order", body = RangeResponse),
        (status = 400, description = "Bad bounds, limit, at, page token or level, or prefix together with start/end (MER-1007); a level the prefix does not allow (MER-1009)", body = ErrorBody),
        (status = 410, description = "Snapshot below the GC horizon (MER-1008)", body = ErrorBody),
        (status = 413, description = "A bound longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This region is not the prefix's home (MER-3006)", body = ErrorBody),
        (status = 503, description = "A bounded read with on_stale=fail found this region too stale (MER-3007); or range replies held the gateway's whole memory budget (server.http_response_budget_bytes) for 10 s (MER-3003), nothing read", body = ErrorBody),
    ))]
pub(crate) async fn range(
    State(state): State<GatewayState>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    observe(&state, "range", async {
        let q = query(q)?;
        let bounds = q.bounds()?;
        let at = at(&state, q.at.as_deref())?;
        let choice = read_choice(
            &state,
            q.consistency.as_deref(),
            q.token.as_deref(),
            q.on_stale.as_deref(),
        )?;
        let (start, end, limit) = (bounds.start, bounds.end, q.limit.unwrap_or(0));
        let engine = &state.engine;
        // Before the page is read: held until the reply has been sent.
        let reservation = state
            .responses
            .reserve(engine.limits().page_reservation_bytes())
            .await?;
        let bound = engine.policy_of(&start).1.max_staleness_ms;
        let (page, meta) = match level_of(choice, bound) {
            Served::PrefixDefault => {
                let s = engine.range(start, end, limit, at).await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Serializable => {
                let s = engine
                    .range_with(start, end, limit, at, ReadConsistency::Serializable)
                    .await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Level(ReadLevel::Linearizable) => {
                let s = engine
                    .range_with(start, end, limit, at, ReadConsistency::Linearizable)
                    .await?;
                (s.value, ServedMeta::plain(s.served_at))
            }
            Served::Level(level) => {
                no_snapshot_with_level(at)?;
                let r = engine.range_level(start, end, limit, level).await?;
                let meta = ServedMeta {
                    served_at: r.served_at,
                    staleness_ms: r.staleness_ms,
                    token: r.token,
                };
                (r.value, meta)
            }
        };
        let envelope = RangeResponse {
            kvs: Vec::new(),
            next_page_token: page.next.as_deref().map(encode_page_token),
            served_at: meta.served_at.0,
            served_at_str: meta.served_at.to_string(),
            staleness_ms: meta.staleness_ms,
            token: meta.token.0.to_string(),
        };
        super::budget::stream_page(page.kvs, envelope, reservation)
    })
    .await
}

/// Every prefix policy and the default, as this node holds them.
#[utoipa::path(get, path = "/v1/policies", tag = "node",
    responses((status = 200, description = "The policy table", body = PoliciesResponse)))]
pub(crate) async fn policies(State(state): State<GatewayState>) -> Response {
    observe(&state, "policies", async {
        let table = state.engine.policy_table();
        Ok(Json(PoliciesResponse::new(&state.engine.regions().local, &table)).into_response())
    })
    .await
}

/// Runs `change` through the control range (forwarded to its leader).
async fn change_policy(
    state: &GatewayState,
    change: crate::peer::PolicyChangeV1,
) -> Result<Response, GatewayError> {
    let control = crate::engine::control::required(state.control.as_deref())?;
    let c = control.apply(change).await?;
    Ok(Json(PolicyChangedResponse {
        version: c.table.version,
        epoch: c.epoch,
        policies: PoliciesResponse::new(&state.engine.regions().local, &c.table.table),
    })
    .into_response())
}

/// Changes the default policy (keys under no prefix policy) in the control
/// range; every node applies it without a restart.
#[utoipa::path(put, path = "/v1/policies", tag = "node", request_body = PolicyChangeRequest,
    responses(
        (status = 200, description = "Committed; the table after the change", body = PolicyChangedResponse),
        (status = 400, description = "Malformed body (MER-1005); unknown region or bad value (MER-1007)", body = ErrorBody),
        (status = 403, description = "The client certificate's role is not admin (MER-2001); nothing changed", body = ErrorBody),
        (status = 409, description = "The cluster has no control range (MER-1010); nothing changed", body = ErrorBody),
        (status = 503, description = "No control leader right now, or a handoff (turning the default strong, moving its strong home) that could not finish (MER-3003): the default stays in its handoff until the change is repeated or another cancels it", body = ErrorBody),
        (status = 504, description = "Forwarded to the control leader, no answer (MER-3005): it may have applied", body = ErrorBody)))]
pub(crate) async fn set_default_policy(
    State(state): State<GatewayState>,
    Extension(caller): Extension<Caller>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "policy_set", async {
        caller.require(ADMIN_ROLES)?;
        let set = PolicyChangeRequest::parse(&body(raw, &state)?, None)?;
        change_policy(&state, crate::peer::PolicyChangeV1::Set(set)).await
    })
    .await
}

/// Sets a prefix's policy (fields not given keep the value now governing
/// the prefix's keys) in the control range.
#[utoipa::path(put, path = "/v1/policies/{prefix}", tag = "node", request_body = PolicyChangeRequest,
    params(PrefixPath),
    responses(
        (status = 200, description = "Committed; the table after the change", body = PolicyChangedResponse),
        (status = 400, description = "Malformed body (MER-1005); unknown region, bad value, nested prefix (MER-1007)", body = ErrorBody),
        (status = 403, description = "The client certificate's role is not admin (MER-2001); nothing changed", body = ErrorBody),
        (status = 409, description = "The cluster has no control range (MER-1010); nothing changed", body = ErrorBody),
        (status = 503, description = "No control leader right now, or a handoff (turning the prefix strong, moving its strong home) that could not finish (MER-3003): the prefix stays in its handoff until the change is repeated or another cancels it", body = ErrorBody),
        (status = 504, description = "Forwarded to the control leader, no answer (MER-3005): it may have applied", body = ErrorBody)))]
pub(crate) async fn set_prefix_policy(
    State(state): State<GatewayState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "policy_set", async {
        caller.require(ADMIN_ROLES)?;
        let prefix = path_key(path)?.into_bytes();
        let set = PolicyChangeRequest::parse(&body(raw, &state)?, Some(prefix))?;
        change_policy(&state, crate::peer::PolicyChangeV1::Set(set)).await
    })
    .await
}

/// Removes a prefix's policy; its keys fall back to the default (under the
/// same rules as a change).
#[utoipa::path(delete, path = "/v1/policies/{prefix}", tag = "node",
    params(PrefixPath),
    responses(
        (status = 200, description = "Committed; the table after the change", body = PolicyChangedResponse),
        (status = 400, description = "No policy on that prefix, or a bad prefix (MER-1007)", body = ErrorBody),
        (status = 403, description = "The client certificate's role is not admin (MER-2001); nothing changed", body = ErrorBody),
        (status = 409, description = "Falling back to the default could loosen a guarantee already given, or no control range (MER-1010); nothing changed", body = ErrorBody),
        (status = 503, description = "No control leader right now (MER-3003); nothing changed", body = ErrorBody),
        (status = 504, description = "Forwarded to the control leader, no answer (MER-3005): it may have applied", body = ErrorBody)))]
pub(crate) async fn remove_policy(
    State(state): State<GatewayState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "policy_remove", async {
        caller.require(ADMIN_ROLES)?;
        let prefix = path_key(path)?.into_bytes();
        change_policy(&state, crate::peer::PolicyChangeV1::Remove { prefix }).await
    })
    .await
}

/// Runs an atomic compare / then / else transaction.
#[utoipa::path(post, path = "/v1/txn", tag = "kv", request_body = TxnRequest,
    responses(
        (status = 200, description = "Committed; `succeeded` says which branch ran", body = TxnResponse),
        (status = 400, description = "Malformed JSON, an array in place of an object, an unknown field (MER-1005); a compare without exactly one target, an operator its target does not take, a key with a dot segment, a bad fence token, a fenced txn whose keys span ranges (MER-1007); more than max_txn_ops compares plus operations in all (MER-1004); a fenced txn outside strong prefixes (MER-1015)", body = ErrorBody),
        (status = 409, description = "fence carries a token older than its lock's newest grant, or one the lock never granted (MER-1017); nothing written", body = ErrorBody),
        (status = 421, description = "A fenced txn reached a node that does not lead its range (MER-3004; `address` names the leader); nothing written", body = ErrorBody),
        (status = 413, description = "Body (MER-1003), key (MER-1001, also an empty key) or value (MER-1002) too large", body = ErrorBody),
    ))]
pub(crate) async fn txn(
    State(state): State<GatewayState>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "txn", async {
        // Parsed by hand rather than with axum's Json so that syntax errors and
        // a missing content type both answer 400 in our error shape.
        let mut req = TxnRequest::parse(&body(raw, &state)?)?;
        let fence = req
            .fence
            .take()
            .map(|f| coord::fence_of(&f.lock, &f.token, state.engine.limits().max_key_bytes))
            .transpose()?;
        let txn = req.into_txn()?;
        let out = match fence {
            None => state.engine.txn(txn).await?,
            Some(fence) => coord::write_fenced(&state, WriteKind::Txn(txn), fence).await?,
        };
        Ok(Json(TxnResponse {
            succeeded: out.succeeded,
            version: out.version.0,
            served_at: out.version.0,
            served_at_str: out.version.to_string(),
        })
        .into_response())
    })
    .await
}

/// Lists a key's versions, newest first, deletes included.
#[utoipa::path(get, path = "/v1/history/{key}", tag = "kv",
    params(KeyPath, HistoryQuery),
    responses(
        (status = 200, description = "Versions newest first (empty when the key never existed); at most `limit` and about limits.max_scan_page_bytes of values per page, `next_before` continues", body = HistoryResponse),
        (status = 400, description = "Bad key, limit or before (MER-1007)", body = ErrorBody),
        (status = 413, description = "Key longer than max_key_bytes (MER-1001)", body = ErrorBody)))]
pub(crate) async fn history(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    observe(&state, "history", async {
        let key = path_key(path)?;
        let q = query(q)?;
        // parse_timestamp names `at=` in its messages; this parameter is `before`.
        let before = q
            .before
            .as_deref()
            .map(|raw| {
                parse_timestamp(raw)
                    .map_err(|e| GatewayError::api(e.code, e.message.replacen("at=", "before=", 1)))
            })
            .transpose()?;
        let max_bytes = state.engine.limits().max_scan_page_bytes;
        let served = state
            .engine
            .history_page(key.into_bytes(), before, q.limit.unwrap_or(0), max_bytes)
            .await?;
        let (entries, next) = served.value;
        Ok(Json(HistoryResponse {
            entries: entries.iter().map(HistoryEntryJson::from).collect(),
            next_before: next.map(|t| t.0),
            served_at: served.served_at.0,
            served_at_str: served.served_at.to_string(),
        })
        .into_response())
    })
    .await
}

/// Node identity and storage gauges.
#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, description = "Node status", body = StatusResponse)))]
pub(crate) async fn status(State(state): State<GatewayState>) -> Response {
    observe(&state, "status", async {
        let closed = state.engine.closed_ts();
        let store = state.engine.store();
        Ok(Json(StatusResponse {
            node_id: state.info.node_id.clone(),
            region: state.info.region.clone(),
            zone: state.info.zone.clone(),
            quic_addr: state.info.quic_addr.to_string(),
            listen_addr: state.info.listen_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            approximate_keys: u64::try_from(store.approximate_keys()).unwrap_or(u64::MAX),
            gc_horizon: state.engine.gc_horizon_floor().0,
            closed_ts: closed.0,
            uptime_secs: state.started.elapsed().as_secs(),
            served_at: closed.0,
            served_at_str: closed.to_string(),
        })
        .into_response())
    })
    .await
}

fn health_body(status: &str, state: &GatewayState) -> HealthResponse {
    let now = state.engine.clock_ts();
    HealthResponse {
        status: status.to_owned(),
        served_at: now.0,
        served_at_str: now.to_string(),
    }
}

/// Liveness: 200 whenever the process answers.
#[utoipa::path(get, path = "/health", tag = "node",
    responses((status = 200, description = "The process serves", body = HealthResponse)))]
pub(crate) async fn health(State(state): State<GatewayState>) -> Response {
    observe(&state, "health", async {
        Ok(Json(health_body("ok", &state)).into_response())
    })
    .await
}

/// Readiness: 200 unless a storage failure poisoned the store.
#[utoipa::path(get, path = "/ready", tag = "node",
    responses(
        (status = 200, description = "The store accepts reads and writes", body = HealthResponse),
        (status = 503, description = "The store is poisoned (MER-3001); restart the node", body = ErrorBody),
    ))]
pub(crate) async fn ready(State(state): State<GatewayState>) -> Response {
    observe(&state, "ready", async {
        if state.engine.store().is_poisoned() {
            // A readiness probe wants 503 here, not the 500 that MER-3001 maps
            // to on data routes: the node is alive but must not get traffic.
            let e = GatewayError::api(
                ErrorCode::StorageFailure,
                "a storage write or sync failed; the store is poisoned",
            );
            let mut response = e.into_response();
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Ok(response);
        }
        Ok(Json(health_body("ready", &state)).into_response())
    })
    .await
}

/// Process metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<GatewayState>) -> Response {
    observe(&state, "metrics", async {
        let text = state.metrics.render();
        Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response())
    })
    .await
}

/// Unknown routes: 404 in our error shape.
pub(crate) async fn not_found(State(state): State<GatewayState>, uri: axum::http::Uri) -> Response {
    observe(&state, "unknown_route", async move {
        Err(GatewayError::NotFound(format!(
            "no route for {}",
            uri.path()
        )))
    })
    .await
}

/// Known routes with a method they do not serve: 405 in our error shape.
pub(crate) async fn method_not_allowed(State(state): State<GatewayState>) -> Response {
    observe(&state, "method_not_allowed", async {
        Err(GatewayError::MethodNotAllowed)
    })
    .await
}

/// `GET /v1/members`: the gossip view of this node.
#[utoipa::path(get, path = "/v1/members", tag = "node",
    responses(
        (status = 200, description = "Members as this node's gossip sees them; empty when gossip is not configured on this node", body = MembersResponse),
    ))]
pub(crate) async fn members(State(state): State<GatewayState>) -> Response {
    observe(&state, "members", async {
        // Without [gossip] the node knows no members: an empty view, not
        // an error (nothing about the request was wrong).
        let members = state
            .membership
            .as_ref()
            .map(crate::wire::members_v1)
            .unwrap_or_default()
            .into_iter()
            .map(|m| MemberJson {
                node: m.node_id,
                region: m.region,
                zone: m.zone,
                addr: m.peer_addr,
                state: m.state,
                generation: m.generation,
                rejoin: m.rejoin,
                refutation: m.refutation,
                rtt_ms: m.rtt_us.map(|us| us as f64 / 1000.0),
            })
            .collect();
        Ok(Json(MembersResponse { members }).into_response())
    })
    .await
}
