//! Lock, election and fenced-write routes over the same
//! [`Engine`](crate::engine::Engine) calls as the QUIC protocol's
//! `Lock*` and `Fenced` requests (`server::dispatch`), with their request
//! and reply types (used nowhere else).
//!
//! A lock lives at its home region's lease range (`crate::engine::lock`):
//! another node answers 421 `MER-3004` naming the leader, as a write does.
//! An election is a lock whose holder carries a value (the leader's
//! address, say): campaigning acquires it, the leadership term is the
//! grant's fencing token, resigning releases it. The routes are separate
//! so each reads in its own words; both go through [`acquire`].
//!
//! Fencing tokens and terms travel as decimal strings in JSON: they are
//! HLC-sized (above 2^53) and many JSON clients read numbers as doubles.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{b64, parse_json_object, served, utf8, KeyPath, MAX_JSON_INTEGER};
use super::error::{ErrorBody, GatewayError};
use super::extract::{body, path_key, query};
use super::lease::check_lease_id;
use super::strict::Object;
use super::{observe, GatewayState};
use crate::coord::lock::MAX_LOCK_VALUE_BYTES;
use crate::engine::lock::{LockAcquired, LockHolder};
use crate::engine::{TxnOutcome, WriteKind};
use crate::error_code::ErrorCode;

/// A fencing token or term from a query or body: a decimal integer
/// 1..=2^63-1.
pub(crate) fn parse_token(raw: &str, what: &str) -> Result<u64, GatewayError> {
    match raw.parse::<u64>() {
        Ok(t) if (1..=MAX_JSON_INTEGER).contains(&t) => Ok(t),
        _ => Err(GatewayError::invalid(format!(
            "{what} {raw:?} is not a fencing token (a decimal integer 1..={MAX_JSON_INTEGER}, as an acquire returns it)"
        ))),
    }
}

/// `fence=NAME:TOKEN` of a guarded put or delete: the lock's name and a
/// token it granted, split at the last `:` (a lock name may hold `:`).
pub(crate) fn parse_fence(raw: &str, max_key_bytes: usize) -> Result<(Vec<u8>, u64), GatewayError> {
    let Some((name, token)) = raw.rsplit_once(':') else {
        return Err(GatewayError::invalid(format!(
            "fence={raw:?} is not NAME:TOKEN (a lock's name, a colon, and the token its acquire returned)"
        )));
    };
    fence_of(name, token, max_key_bytes)
}

/// A fence's lock name and token, checked as arguments (400 `MER-1007`):
/// the name is a parameter here, not the key being written, so its length
/// is a bad argument rather than an oversized key (413).
pub(crate) fn fence_of(
    name: &str,
    token: &str,
    max_key_bytes: usize,
) -> Result<(Vec<u8>, u64), GatewayError> {
    if name.is_empty() || name.len() > max_key_bytes {
        return Err(GatewayError::invalid(format!(
            "the fence's lock name is {} bytes; lock names are 1..={max_key_bytes} bytes",
            name.len()
        )));
    }
    super::strict::check_no_dot_segments(name, "the fence's lock name")?;
    let token = parse_token(token, "the fence's token")?;
    Ok((name.as_bytes().to_vec(), token))
}

/// Applies `kind` only if `token` is lock `name`'s newest grant
/// (`MER-1017` otherwise, nothing written).
pub(crate) async fn write_fenced(
    state: &GatewayState,
    kind: WriteKind,
    (name, token): (Vec<u8>, u64),
) -> Result<TxnOutcome, GatewayError> {
    Ok(state.engine.write_fenced(kind, name, token).await?)
}

/// A lock's holder (an election's leader) as the gateway shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HolderJson {
    /// The holder's lease (the lock is released when it ends).
    #[schema(example = 7)]
    pub(crate) lease: u64,
    /// Its fencing token (an election's term), a decimal string.
    #[schema(example = "384315472163635200")]
    pub(crate) token: String,
    /// The value it holds the lock with, as UTF-8 (null when not UTF-8).
    pub(crate) value: Option<String>,
    /// The value in standard base64.
    pub(crate) value_b64: String,
}

impl From<LockHolder> for HolderJson {
    fn from(h: LockHolder) -> Self {
        HolderJson {
            lease: h.lease,
            token: h.token.to_string(),
            value: utf8(&h.value),
            value_b64: b64(&h.value),
        }
    }
}

/// Body of `POST /v1/locks/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockAcquireRequest {
    /// The lease that will hold the lock (from `POST /v1/leases`): when it
    /// ends the lock passes to the next waiter. 1..=2^63-1.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 7)]
    pub(crate) lease: u64,
    /// Wait in line when the lock is held (at most 2 s per request; then
    /// `granted` is false: send the same request again to keep the
    /// place). false: answer 409 `MER-1016` at once when held.
    #[serde(default)]
    pub(crate) wait: bool,
    /// Stored with the grant (shown by `GET`); at most 4096 bytes of UTF-8.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub(crate) value: String,
}

/// Reply of `POST /v1/locks/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LockAcquireResponse {
    /// true: the lease holds the lock with `token`. false (only with
    /// `wait`): queued; send the request again to keep waiting.
    pub(crate) granted: bool,
    /// The acquiring lease.
    pub(crate) lease: u64,
    /// The fencing token of the grant, a decimal string ("0" when queued):
    /// pass it to guarded writes (`fence=NAME:TOKEN`) and to release.
    #[schema(example = "384315472163635200")]
    pub(crate) token: String,
    /// HLC timestamp of the answer.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /v1/locks/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LockHolderResponse {
    /// The holder; null when the lock is free.
    pub(crate) holder: Option<HolderJson>,
    /// HLC timestamp of the answer (a linearizable read).
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `DELETE /v1/locks/{name}` and `DELETE /v1/elections/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LockReleasedResponse {
    /// Whether a grant ended: always true for a release by token; for a
    /// cancel by lease, whether the lease held the lock (false: it only
    /// left the queue, or was not in it).
    pub(crate) released: bool,
    /// HLC timestamp of the answer.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Query of `DELETE /v1/locks/{name}`: exactly one of the two.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LockReleaseQuery {
    /// Release the grant with this fencing token (409 `MER-1017` when it
    /// is not the current grant).
    #[param(pattern = "^[1-9][0-9]{0,18}$")]
    pub(crate) token: Option<String>,
    /// Take this lease off the lock: a waiter leaves the queue, a holder
    /// releases. 1..=2^63-1.
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub(crate) lease: Option<u64>,
}

/// Body of `POST /v1/elections/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignRequest {
    /// The candidate's lease: leadership ends with it. 1..=2^63-1.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 7)]
    pub(crate) lease: u64,
    /// What followers see as the leader (an address, say); at most 4096
    /// bytes of UTF-8.
    #[schema(max_length = 4096, example = "10.0.0.7:8080")]
    pub(crate) value: String,
    /// Wait for leadership (default true; at most 2 s per request, then
    /// `elected` is false: campaign again to keep the place). false:
    /// answer 409 `MER-1016` at once when another candidate leads.
    #[serde(default = "yes")]
    pub(crate) wait: bool,
}

fn yes() -> bool {
    true
}

/// Reply of `POST /v1/elections/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignResponse {
    /// true: this candidate leads for `term`. false: still in line.
    pub(crate) elected: bool,
    /// The candidate's lease.
    pub(crate) lease: u64,
    /// The leadership term, a decimal string ("0" when not elected): a
    /// fencing token of the election's lock, strictly increasing per
    /// election. Guard the leader's writes with `fence=NAME:TERM`.
    #[schema(example = "384315472163635200")]
    pub(crate) term: String,
    /// HLC timestamp of the answer.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /v1/elections/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeaderResponse {
    /// The leader (`token` is its term); null when there is none.
    pub(crate) leader: Option<HolderJson>,
    /// HLC timestamp of the answer (a linearizable read).
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Query of `DELETE /v1/elections/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResignQuery {
    /// The term to end (from the campaign's reply).
    #[param(pattern = "^[1-9][0-9]{0,18}$")]
    pub(crate) term: String,
}

/// Acquires lock `name` for `lease`, the one path of locks and elections.
async fn acquire(
    state: &GatewayState,
    name: String,
    lease: u64,
    value: String,
    wait: bool,
) -> Result<LockAcquired, GatewayError> {
    let lease = check_lease_id(lease, "lease")?;
    if value.len() > MAX_LOCK_VALUE_BYTES {
        return Err(GatewayError::api(
            ErrorCode::ValueTooLarge,
            format!(
                "value is {} bytes; a lock's value is at most {MAX_LOCK_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    let got = state
        .engine
        .lock_acquire(name.into_bytes(), lease, value.into_bytes(), wait)
        .await?;
    Ok(got)
}

async fn release(state: &GatewayState, name: String, token: u64) -> Result<Response, GatewayError> {
    state.engine.lock_release(name.into_bytes(), token).await?;
    Ok(released(state, true))
}

fn released(state: &GatewayState, released: bool) -> Response {
    let (served_at, served_at_str) = served(state.engine.clock_ts());
    Json(LockReleasedResponse {
        released,
        served_at,
        served_at_str,
    })
    .into_response()
}

async fn holder(state: &GatewayState, name: String) -> Result<Option<HolderJson>, GatewayError> {
    Ok(state
        .engine
        .lock_holder(name.into_bytes())
        .await?
        .map(HolderJson::from))
}

/// Acquires a lock for a lease: at once when free, else (with `wait`) in
/// arrival order.
#[utoipa::path(post, path = "/v1/locks/{key}", tag = "lock", params(KeyPath),
    request_body = LockAcquireRequest,
    responses(
        (status = 200, description = "Granted (`token` is the grant's fencing token) or, with wait, still queued (`granted` false: send again)", body = LockAcquireResponse,
            example = json!({"granted": true, "lease": 7, "token": "384315472163635200", "served_at": 384315472163635200_u64, "served_at_str": "1795639112708.0"})),
        (status = 400, description = "Malformed body or an unknown field (MER-1005); a bad name or lease id (MER-1007); a name outside a strong prefix (MER-1015); nothing changed", body = ErrorBody),
        (status = 404, description = "The lease is not live in this region (MER-1014); nothing changed", body = ErrorBody),
        (status = 409, description = "Held by another lease and wait is false, or 1024 waiters already (MER-1016); nothing changed", body = ErrorBody),
        (status = 413, description = "Name (MER-1001), value (MER-1002) or body (MER-1003) too large", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004; `address` names the leader), or the name's prefix is homed in another region (MER-3006)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing changed", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the lease may hold the lock or wait for it (GET tells)", body = ErrorBody),
    ))]
pub(crate) async fn lock_acquire(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "lock_acquire", async {
        let name = path_key(path)?;
        let Object(req): Object<LockAcquireRequest> =
            parse_json_object(&body(raw, &state)?, "lock acquire body")?;
        let lease = req.lease;
        let (granted, token) = match acquire(&state, name, lease, req.value, req.wait).await? {
            LockAcquired::Granted(token) => (true, token),
            LockAcquired::Queued => (false, 0),
        };
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LockAcquireResponse {
            granted,
            lease,
            token: token.to_string(),
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// A lock's holder.
#[utoipa::path(get, path = "/v1/locks/{key}", tag = "lock", params(KeyPath),
    responses(
        (status = 200, description = "The holder, or null when free (a linearizable read at the lease range's leader)", body = LockHolderResponse),
        (status = 400, description = "A bad name (MER-1007), a name outside a strong prefix (MER-1015)", body = ErrorBody),
        (status = 413, description = "Name longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004), or the name's prefix is homed in another region (MER-3006)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
    ))]
pub(crate) async fn lock_holder(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "lock_holder", async {
        let name = path_key(path)?;
        let holder = holder(&state, name).await?;
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LockHolderResponse {
            holder,
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// Releases a lock by its grant's token, or takes a lease off it.
#[utoipa::path(delete, path = "/v1/locks/{key}", tag = "lock", params(KeyPath, LockReleaseQuery),
    responses(
        (status = 200, description = "Released (the next waiter is granted), or the lease left the queue", body = LockReleasedResponse),
        (status = 400, description = "Neither or both of token and lease, a bad token, lease id or name, or an unknown parameter (MER-1007); a name outside a strong prefix (MER-1015); nothing changed", body = ErrorBody),
        (status = 409, description = "token is not the current grant: released already, superseded, or another lock's (MER-1017); nothing changed", body = ErrorBody),
        (status = 413, description = "Name longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004), or the name's prefix is homed in another region (MER-3006); nothing changed", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing changed", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the release may have applied (GET tells)", body = ErrorBody),
    ))]
pub(crate) async fn lock_release(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<LockReleaseQuery>, QueryRejection>,
) -> Response {
    observe(&state, "lock_release", async {
        let name = path_key(path)?;
        match query(q)? {
            LockReleaseQuery {
                token: Some(token),
                lease: None,
            } => release(&state, name, parse_token(&token, "token")?).await,
            LockReleaseQuery {
                token: None,
                lease: Some(lease),
            } => {
                let lease = check_lease_id(lease, "lease")?;
                let held = state.engine.lock_cancel(name.into_bytes(), lease).await?;
                Ok(released(&state, held))
            }
            _ => Err(GatewayError::invalid(
                "give exactly one of token= (release that grant) or lease= (take that lease off the lock)",
            )),
        }
    })
    .await
}

/// Campaigns for leadership of an election.
#[utoipa::path(post, path = "/v1/elections/{key}", tag = "election", params(KeyPath),
    request_body = CampaignRequest,
    responses(
        (status = 200, description = "Elected (`term` is the leadership term) or, with wait, still in line (`elected` false: campaign again)", body = CampaignResponse,
            example = json!({"elected": true, "lease": 7, "term": "384315472163635200", "served_at": 384315472163635200_u64, "served_at_str": "1795639112708.0"})),
        (status = 400, description = "Malformed body or an unknown field (MER-1005); a bad name or lease id (MER-1007); a name outside a strong prefix (MER-1015); nothing changed", body = ErrorBody),
        (status = 404, description = "The lease is not live in this region (MER-1014); nothing changed", body = ErrorBody),
        (status = 409, description = "Another candidate leads and wait is false, or 1024 candidates in line (MER-1016)", body = ErrorBody),
        (status = 413, description = "Name (MER-1001), value (MER-1002) or body (MER-1003) too large", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004), or the name's prefix is homed in another region (MER-3006)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing changed", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the candidate may lead or be in line (GET tells)", body = ErrorBody),
    ))]
pub(crate) async fn campaign(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "election_campaign", async {
        let name = path_key(path)?;
        let Object(req): Object<CampaignRequest> =
            parse_json_object(&body(raw, &state)?, "campaign body")?;
        let lease = req.lease;
        let (elected, term) = match acquire(&state, name, lease, req.value, req.wait).await? {
            LockAcquired::Granted(term) => (true, term),
            LockAcquired::Queued => (false, 0),
        };
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(CampaignResponse {
            elected,
            lease,
            term: term.to_string(),
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// An election's current leader.
#[utoipa::path(get, path = "/v1/elections/{key}", tag = "election", params(KeyPath),
    responses(
        (status = 200, description = "The leader and its term, or null (a linearizable read at the lease range's leader)", body = LeaderResponse),
        (status = 400, description = "A bad name (MER-1007), a name outside a strong prefix (MER-1015)", body = ErrorBody),
        (status = 413, description = "Name longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004), or the name's prefix is homed in another region (MER-3006)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
    ))]
pub(crate) async fn leader(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "election_leader", async {
        let name = path_key(path)?;
        let leader = holder(&state, name).await?;
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LeaderResponse {
            leader,
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// Resigns a leadership term: the next candidate in line is elected.
#[utoipa::path(delete, path = "/v1/elections/{key}", tag = "election", params(KeyPath, ResignQuery),
    responses(
        (status = 200, description = "Resigned", body = LockReleasedResponse),
        (status = 400, description = "A missing or bad term, a bad name, or an unknown parameter (MER-1007); a name outside a strong prefix (MER-1015)", body = ErrorBody),
        (status = 409, description = "term is not the current one: resigned already or superseded (MER-1017); nothing changed", body = ErrorBody),
        (status = 413, description = "Name longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004), or the name's prefix is homed in another region (MER-3006)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing changed", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the resignation may have applied (GET tells)", body = ErrorBody),
    ))]
pub(crate) async fn resign(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ResignQuery>, QueryRejection>,
) -> Response {
    observe(&state, "election_resign", async {
        let name = path_key(path)?;
        let term = parse_token(&query(q)?.term, "term")?;
        release(&state, name, term).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_a_name_and_a_token_split_at_the_last_colon() {
        assert_eq!(
            parse_fence("jobs/lock:12", 16).ok(),
            Some((b"jobs/lock".to_vec(), 12))
        );
        assert_eq!(parse_fence("a:b:7", 16).ok(), Some((b"a:b".to_vec(), 7)));
        for bad in [
            "nolock",
            ":7",
            "a:",
            "a:0",
            "a:-1",
            "a:x",
            "a/../b:7",
            "a:9223372036854775808",
            "seventeen-bytes-x:7",
        ] {
            let e = parse_fence(bad, 16).unwrap_err();
            assert!(
                matches!(&e, GatewayError::Api(a) if a.code == ErrorCode::InvalidArgument),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn lock_bodies_are_objects_with_known_fields_only() {
        let Object(req): Object<LockAcquireRequest> =
            parse_json_object(br#"{"lease":7}"#, "body").unwrap();
        assert_eq!((req.lease, req.wait, req.value.as_str()), (7, false, ""));
        let Object(c): Object<CampaignRequest> =
            parse_json_object(br#"{"lease":7,"value":"me"}"#, "body").unwrap();
        assert!(c.wait, "a campaign waits unless told not to");
        for bad in [
            &br#"[7,true,""]"#[..],
            br#"{"lease":7,"ttl":1}"#,
            br#"{"wait":true}"#,
            br#"{"lease":"7"}"#,
        ] {
            let e = parse_json_object::<Object<LockAcquireRequest>>(bad, "body").unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{bad:?}");
        }
    }
}
