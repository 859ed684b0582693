//! Lease routes: grant, list, time-to-live, revoke and keepalive over the
//! same [`Engine`](crate::engine::Engine) calls as the QUIC protocol's
//! `Lease*` requests (`server::dispatch`), with their request and reply
//! types (kept beside the handlers: they are used nowhere else).
//!
//! Like every write, a lease operation must reach the region's lease
//! range's leader: another node answers 421 `MER-3004` with the leader's
//! address (`error.address`), as `PUT /v1/kv/{key}` does for its key's
//! range. The gateway does not follow it (docs/http-api.md, "Leases").
//! A put attached to a lease is `PUT /v1/kv/{key}?lease=ID`
//! (`handlers::put_key`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{parse_json_object, served, MAX_JSON_INTEGER};
use super::error::{ErrorBody, GatewayError};
use super::extract::{body, query};
use super::strict::Object;
use super::{observe, GatewayState};
use crate::coord::{MAX_LEASES_PER_COMMAND, MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS};
use crate::engine::lease::LeaseInfo;
use crate::error_code::{ApiError, ErrorCode};
use crate::types::Timestamp;

/// Leases in a `GET /v1/leases` page when the query gives no `limit` (or
/// 0); at most `limits.max_scan_page`.
pub const DEFAULT_LEASE_PAGE: usize = 1_000;

/// A lease as the gateway shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeaseJson {
    /// The lease's id (unique in its region, from 1).
    #[schema(example = 7)]
    pub(crate) id: u64,
    /// The TTL it was granted, ms.
    #[schema(example = 10_000)]
    pub(crate) ttl_ms: u64,
    /// Time left when the reply was made, ms (a keepalive of a lease that
    /// no longer exists reports 0).
    #[schema(example = 9_850)]
    pub(crate) remaining_ms: u64,
    /// HLC timestamp of the grant (0 for a lease that no longer exists).
    pub(crate) granted_at: u64,
    /// `granted_at` as `unix_ms.logical`.
    pub(crate) granted_at_str: String,
}

impl From<LeaseInfo> for LeaseJson {
    fn from(l: LeaseInfo) -> Self {
        LeaseJson {
            id: l.id,
            ttl_ms: l.ttl_ms,
            remaining_ms: l.remaining_ms,
            granted_at: l.granted_at.0,
            granted_at_str: l.granted_at.to_string(),
        }
    }
}

/// Reply of a grant, a time-to-live query and a single keepalive.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeaseResponse {
    /// The lease.
    pub(crate) lease: LeaseJson,
    /// HLC timestamp of the answer (the grant's commit for a grant).
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /v1/leases` and of a batch keepalive.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeasesResponse {
    /// Leases by id (a keepalive: in the order asked, `remaining_ms` 0 for
    /// one that no longer exists).
    pub(crate) leases: Vec<LeaseJson>,
    /// `GET /v1/leases`: pass as `after` for the next page; `null` on the
    /// last page. Absent from a keepalive's reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_after: Option<u64>,
    /// HLC timestamp of the answer.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `DELETE /v1/leases/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeaseRevokedResponse {
    /// The revoked lease.
    pub(crate) id: u64,
    /// Always true: a lease that does not exist answers 404 `MER-1014`.
    pub(crate) revoked: bool,
    /// HLC timestamp of the answer (its keys were deleted before it).
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Body of `POST /v1/leases`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseGrantRequest {
    /// Time to live, ms: 1000..=86400000 (one second to one day). A
    /// keepalive moves the deadline to now + `ttl_ms`.
    #[schema(minimum = 1_000, maximum = 86_400_000, example = 10_000)]
    pub(crate) ttl_ms: u64,
}

/// Body of `POST /v1/leases/keepalive`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseKeepAliveRequest {
    /// The leases to keep alive: 1..=1000 ids, each 1..=2^63-1.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<LeaseIdSchema>, example = json!([7, 8]))]
    pub(crate) ids: Vec<u64>,
}

/// A lease id in a request: 1..=2^63-1 (documents the items of `ids`).
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct LeaseIdSchema;

// By hand: the derive takes no bounds on a newtype.
impl utoipa::PartialSchema for LeaseIdSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .description(Some("A lease id, 1..=2^63-1"))
            .into()
    }
}

impl ToSchema for LeaseIdSchema {}

/// The `{id}` of a lease route (documents the path parameter; the
/// handler reads it from the path).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct LeasePath {
    /// The lease's id, from a grant: 1..=2^63-1 (400 `MER-1007` otherwise).
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    id: i64,
}

/// Query of `GET /v1/leases`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LeaseListQuery {
    /// List ids above this: the previous page's `next_after`. Default 0
    /// (from the first).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub(crate) after: Option<u64>,
    /// Most leases in the page; 0 or absent means 1000, at most
    /// `limits.max_scan_page` (10000).
    #[param(minimum = 0, maximum = 10000)]
    pub(crate) limit: Option<usize>,
}

/// A lease id from a path or body: 1..=[`MAX_JSON_INTEGER`].
pub(crate) fn check_lease_id(id: u64, what: &str) -> Result<u64, GatewayError> {
    if (1..=MAX_JSON_INTEGER).contains(&id) {
        Ok(id)
    } else {
        Err(GatewayError::invalid(format!(
            "{what} {id} is not a lease id (ids are 1..={MAX_JSON_INTEGER}, as a grant returns them)"
        )))
    }
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<u64, GatewayError> {
    let Path(raw) =
        path.map_err(|e| GatewayError::invalid(format!("bad lease id in path: {e}")))?;
    let id = raw.parse::<u64>().map_err(|_| {
        GatewayError::invalid(format!(
            "lease id {raw:?} is not a decimal integer (ids are 1..={MAX_JSON_INTEGER})"
        ))
    })?;
    check_lease_id(id, "lease id")
}

fn lease_reply(lease: LeaseInfo, at: Timestamp) -> Response {
    let (served_at, served_at_str) = served(at);
    Json(LeaseResponse {
        lease: lease.into(),
        served_at,
        served_at_str,
    })
    .into_response()
}

fn not_found(id: u64) -> GatewayError {
    GatewayError::Api(ApiError::new(
        ErrorCode::LeaseNotFound,
        format!(
            "lease {id} does not exist in this region (expired, revoked, or never granted here)"
        ),
    ))
}

/// Grants a lease.
#[utoipa::path(post, path = "/v1/leases", tag = "lease", request_body = LeaseGrantRequest,
    responses(
        (status = 200, description = "Granted: the new lease, live until now + ttl_ms unless kept alive", body = LeaseResponse,
            example = json!({"lease": {"id": 7, "ttl_ms": 10000, "remaining_ms": 10000, "granted_at": 384315472163635200_u64, "granted_at_str": "1795639112708.0"}, "served_at": 384315472163635200_u64, "served_at_str": "1795639112708.0"})),
        (status = 400, description = "Malformed body or an unknown field (MER-1005); ttl_ms outside 1000..=86400000 (MER-1007); nothing granted", body = ErrorBody),
        (status = 413, description = "Body over max_request_bytes (MER-1003)", body = ErrorBody),
        (status = 421, description = "This node does not lead the region's lease range (MER-3004): `address` names the leader; nothing granted", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing granted", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): a lease may have been granted; it expires after its TTL", body = ErrorBody),
    ))]
pub(crate) async fn grant(
    State(state): State<GatewayState>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "lease_grant", async {
        let Object(req): Object<LeaseGrantRequest> =
            parse_json_object(&body(raw, &state)?, "lease grant body")?;
        if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&req.ttl_ms) {
            return Err(GatewayError::invalid(format!(
                "ttl_ms {} is outside {MIN_LEASE_TTL_MS}..={MAX_LEASE_TTL_MS}",
                req.ttl_ms
            )));
        }
        let lease = state.engine.lease_grant(req.ttl_ms).await?;
        Ok(lease_reply(lease, lease.granted_at))
    })
    .await
}

/// Lists the region's live leases by id, one page at a time.
#[utoipa::path(get, path = "/v1/leases", tag = "lease", params(LeaseListQuery),
    responses(
        (status = 200, description = "One page of live leases by id (a linearizable read at the lease range's leader); follow next_after until null", body = LeasesResponse,
            example = json!({"leases": [{"id": 7, "ttl_ms": 10000, "remaining_ms": 8125, "granted_at": 384315472163635200_u64, "granted_at_str": "1795639112708.0"}], "next_after": null, "served_at": 384315472817946624_u64, "served_at_str": "1795639112747.0"})),
        (status = 400, description = "Bad after or limit, or an unknown parameter (MER-1007)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004): `address` names the leader", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<GatewayState>,
    q: Result<Query<LeaseListQuery>, QueryRejection>,
) -> Response {
    observe(&state, "lease_list", async {
        let q = query(q)?;
        let after = q.after.unwrap_or(0);
        if after > MAX_JSON_INTEGER {
            return Err(GatewayError::invalid(format!(
                "after={after} is above {MAX_JSON_INTEGER}"
            )));
        }
        let max = state.engine.limits().max_scan_page;
        let limit = match q.limit.unwrap_or(0) {
            0 => DEFAULT_LEASE_PAGE.min(max),
            n if n <= max => n,
            n => {
                return Err(GatewayError::invalid(format!(
                    "limit={n} is above limits.max_scan_page ({max})"
                )))
            }
        };
        let leases = state.engine.lease_list(after, limit).await?;
        let next_after = (leases.len() == limit)
            .then(|| leases.last().map(|l| l.id))
            .flatten();
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LeasesResponse {
            leases: leases.into_iter().map(LeaseJson::from).collect(),
            next_after,
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// A lease's time to live.
#[utoipa::path(get, path = "/v1/leases/{id}", tag = "lease", params(LeasePath),
    responses(
        (status = 200, description = "The live lease and its time left (a linearizable read at the lease range's leader)", body = LeaseResponse),
        (status = 400, description = "An id that is not 1..=2^63-1 (MER-1007)", body = ErrorBody),
        (status = 404, description = "No such live lease: expired, revoked or never granted in this region (MER-1014)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004): `address` names the leader", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
    ))]
pub(crate) async fn ttl(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "lease_ttl", async {
        let id = path_id(path)?;
        let lease = state.engine.lease_ttl(id).await?;
        Ok(lease_reply(lease, state.engine.clock_ts()))
    })
    .await
}

/// Revokes a lease: its attached keys are deleted before the answer.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "lease", params(LeasePath),
    responses(
        (status = 200, description = "Revoked; every key attached to it is deleted", body = LeaseRevokedResponse,
            example = json!({"id": 7, "revoked": true, "served_at": 384315472817946624_u64, "served_at_str": "1795639112747.0"})),
        (status = 400, description = "An id that is not 1..=2^63-1 (MER-1007)", body = ErrorBody),
        (status = 404, description = "No such live lease (MER-1014); nothing changed", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004): `address` names the leader; nothing changed", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the revoke may have applied (GET /v1/leases/{id} tells)", body = ErrorBody),
    ))]
pub(crate) async fn revoke(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "lease_revoke", async {
        let id = path_id(path)?;
        state.engine.lease_revoke(id).await?;
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LeaseRevokedResponse {
            id,
            revoked: true,
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

/// Keeps one lease alive: its deadline moves to now + its TTL.
#[utoipa::path(post, path = "/v1/leases/{id}/keepalive", tag = "lease", params(LeasePath),
    responses(
        (status = 200, description = "Kept alive (the new deadline is committed, so it survives a leader change)", body = LeaseResponse),
        (status = 400, description = "An id that is not 1..=2^63-1 (MER-1007)", body = ErrorBody),
        (status = 404, description = "No such live lease (MER-1014): it expired or was revoked; grant a new one", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004): `address` names the leader", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the keepalive may have applied; send another", body = ErrorBody),
    ))]
pub(crate) async fn keep_alive_one(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    observe(&state, "lease_keepalive", async {
        let id = path_id(path)?;
        let kept = state.engine.lease_keep_alive(vec![id]).await?;
        match kept.into_iter().next() {
            Some(lease) if lease.remaining_ms > 0 => {
                Ok(lease_reply(lease, state.engine.clock_ts()))
            }
            _ => Err(not_found(id)),
        }
    })
    .await
}

/// Keeps many leases alive in one commit (the HTTP form of the SDK's
/// keepalive batches).
#[utoipa::path(post, path = "/v1/leases/keepalive", tag = "lease", request_body = LeaseKeepAliveRequest,
    responses(
        (status = 200, description = "Each lease after the keepalive, in the order asked; remaining_ms 0 for one that no longer exists", body = LeasesResponse,
            example = json!({"leases": [{"id": 7, "ttl_ms": 10000, "remaining_ms": 10000, "granted_at": 384315472163635200_u64, "granted_at_str": "1795639112708.0"}, {"id": 8, "ttl_ms": 0, "remaining_ms": 0, "granted_at": 0, "granted_at_str": "0.0"}], "served_at": 384315472817946624_u64, "served_at_str": "1795639112747.0"})),
        (status = 400, description = "Malformed body or an unknown field (MER-1005); no ids, more than 1000, or an id outside 1..=2^63-1 (MER-1007); nothing kept alive", body = ErrorBody),
        (status = 413, description = "Body over max_request_bytes (MER-1003)", body = ErrorBody),
        (status = 421, description = "This node does not lead the lease range (MER-3004): `address` names the leader", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the keepalive may have applied; send another", body = ErrorBody),
    ))]
pub(crate) async fn keep_alive_many(
    State(state): State<GatewayState>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "lease_keepalive", async {
        let Object(req): Object<LeaseKeepAliveRequest> =
            parse_json_object(&body(raw, &state)?, "lease keepalive body")?;
        if req.ids.is_empty() || req.ids.len() > MAX_LEASES_PER_COMMAND {
            return Err(GatewayError::invalid(format!(
                "ids names {} leases; a keepalive names 1..={MAX_LEASES_PER_COMMAND}",
                req.ids.len()
            )));
        }
        for id in &req.ids {
            check_lease_id(*id, "ids holds")?;
        }
        let kept = state.engine.lease_keep_alive(req.ids).await?;
        let (served_at, served_at_str) = served(state.engine.clock_ts());
        Ok(Json(LeasesResponse {
            leases: kept.into_iter().map(LeaseJson::from).collect(),
            next_after: None,
            served_at,
            served_at_str,
        })
        .into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_one_to_int64_max() {
        assert!(check_lease_id(0, "id").is_err());
        assert_eq!(check_lease_id(1, "id").ok(), Some(1));
        assert_eq!(
            check_lease_id(MAX_JSON_INTEGER, "id").ok(),
            Some(MAX_JSON_INTEGER)
        );
        assert!(check_lease_id(MAX_JSON_INTEGER + 1, "id").is_err());
    }

    #[test]
    fn bodies_are_objects_with_known_fields_only() {
        let ok: Result<Object<LeaseGrantRequest>, _> =
            parse_json_object(br#"{"ttl_ms":5000}"#, "body");
        assert_eq!(ok.map(|Object(r)| r.ttl_ms).ok(), Some(5000));
        for bad in [
            &br#"[5000]"#[..],
            br#"{"ttl_ms":5000,"ttl":1}"#,
            br#"{"ttl_ms":-1}"#,
            br#"{}"#,
        ] {
            let e = parse_json_object::<Object<LeaseGrantRequest>>(bad, "body").unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{bad:?}");
        }
        let ids: Object<LeaseKeepAliveRequest> =
            parse_json_object(br#"{"ids":[1,2]}"#, "body").unwrap();
        assert_eq!(ids.0.ids, vec![1, 2]);
    }
}
