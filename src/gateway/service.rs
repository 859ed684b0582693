//! Service discovery routes: register an instance under a lease and look a
//! service up, over the same [`Engine`](crate::engine::Engine) calls as
//! the QUIC protocol's `ServiceRegister` / `ServiceLookup`
//! (`server::dispatch`). Rules and limits: `crate::discovery`.
//!
//! An instance registers in this node's region (its record is the key
//! `services/<region>/<name>/<id>`, attached to the lease), so it
//! disappears when the lease is no longer kept alive. A lookup reads every
//! region's part of the registry from this node's replica: this region's
//! instances first (the caller's zone first among them), then the other
//! regions' by the round trip this node measured to them.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::parse_json_object;
use super::error::{ErrorBody, GatewayError};
use super::extract::{body, query};
use super::lease::check_lease_id;
use super::strict::{check_no_dot_segments, Object};
use super::{observe, GatewayState};
use crate::discovery::{instance_key, ServiceInstance};

/// Body of `PUT /v1/services/{name}/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceRegisterRequest {
    /// The lease the registration lives by (from `POST /v1/leases`): keep
    /// it alive while the instance is healthy. 1..=2^63-1.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 7)]
    pub(crate) lease: u64,
    /// Where the instance listens: 1..=16 addresses of 1..=256 bytes.
    #[schema(min_items = 1, max_items = 16, example = json!(["10.0.0.7:8080"]))]
    pub(crate) addrs: Vec<String>,
    /// Free-form metadata: at most 32 entries, keys 1..=1024 bytes, values
    /// up to 1024 bytes.
    #[serde(default)]
    #[schema(example = json!({"version": "1.4.2"}))]
    pub(crate) meta: BTreeMap<String, String>,
    /// The instance's zone (lookups from the same zone list it first); at
    /// most 128 bytes.
    #[serde(default)]
    #[schema(max_length = 128, example = "us-east-1a")]
    pub(crate) zone: String,
}

/// A registered instance.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceInstanceJson {
    /// The service.
    pub(crate) name: String,
    /// The instance, unique within its service and region.
    pub(crate) id: String,
    /// Where it listens.
    pub(crate) addrs: Vec<String>,
    /// Its metadata.
    pub(crate) meta: BTreeMap<String, String>,
    /// The region it registered in.
    pub(crate) region: String,
    /// Its zone ("" when not given).
    pub(crate) zone: String,
}

impl From<ServiceInstance> for ServiceInstanceJson {
    fn from(i: ServiceInstance) -> Self {
        ServiceInstanceJson {
            name: i.name,
            id: i.id,
            addrs: i.addrs,
            meta: i.meta,
            region: i.region,
            zone: i.zone,
        }
    }
}

/// Reply of `PUT /v1/services/{name}/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceRegisteredResponse {
    /// The registry key holding the record (`services/<region>/<name>/<id>`).
    #[schema(example = "services/us-east/billing/i-1")]
    pub(crate) key: String,
    /// HLC timestamp the record was written at.
    pub(crate) version: u64,
    /// Same as `version`.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /v1/services/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServicesResponse {
    /// Live instances (at most 1000): this region's first (the `zone`
    /// asked for first among them), then other regions' nearest first.
    pub(crate) instances: Vec<ServiceInstanceJson>,
    /// HLC timestamp of the answer.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// The `{name}` of a service route (documents the path parameter).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct ServicePath {
    /// The service: 1..=128 bytes, no `/` or control characters.
    #[param(min_length = 1, max_length = 128, pattern = "^[^/\\x00-\\x1f\\x7f]+$")]
    name: String,
}

/// The `{name}/{id}` of a registration (documents the path parameters).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct InstancePath {
    /// The service: 1..=128 bytes, no `/` or control characters.
    #[param(min_length = 1, max_length = 128, pattern = "^[^/\\x00-\\x1f\\x7f]+$")]
    name: String,
    /// The instance: 1..=128 bytes, no `/` or control characters.
    #[param(min_length = 1, max_length = 128, pattern = "^[^/\\x00-\\x1f\\x7f]+$")]
    id: String,
}

/// Query of `GET /v1/services/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LookupQuery {
    /// The caller's zone: its instances come first within this region.
    #[param(max_length = 128)]
    pub(crate) zone: Option<String>,
}

/// Registers (or re-registers) an instance in this node's region.
#[utoipa::path(put, path = "/v1/services/{name}/{id}", tag = "service", params(InstancePath),
    request_body = ServiceRegisterRequest,
    responses(
        (status = 200, description = "Registered until the lease ends", body = ServiceRegisteredResponse,
            example = json!({"key": "services/us-east/billing/i-1", "version": 384315472163635200_u64, "served_at": 384315472163635200_u64, "served_at_str": "1795639112708.0"})),
        (status = 400, description = "Malformed body or an unknown field (MER-1005); a record over the limits, a bad name, id or lease id (MER-1007); this region's registry is not a strong prefix homed here (MER-1015); nothing written", body = ErrorBody),
        (status = 404, description = "The lease is not live in this region (MER-1014); nothing written", body = ErrorBody),
        (status = 413, description = "Body over max_request_bytes (MER-1003)", body = ErrorBody),
        (status = 421, description = "This node does not lead the record's range (MER-3004): `address` names the leader; nothing written", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003); nothing written", body = ErrorBody),
        (status = 504, description = "No answer in time (MER-3005): the record may be written (it goes with the lease)", body = ErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<GatewayState>,
    path: Result<Path<(String, String)>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    observe(&state, "service_register", async {
        let Path((name, id)) =
            path.map_err(|e| GatewayError::invalid(format!("bad service path: {e}")))?;
        check_no_dot_segments(&name, "service name")?;
        check_no_dot_segments(&id, "instance id")?;
        let Object(req): Object<ServiceRegisterRequest> =
            parse_json_object(&body(raw, &state)?, "service registration body")?;
        let lease = check_lease_id(req.lease, "lease")?;
        let region = state.engine.regions().local.clone();
        let instance = ServiceInstance {
            v: 1,
            name,
            id,
            addrs: req.addrs,
            meta: req.meta,
            region: region.clone(),
            zone: req.zone,
        };
        instance
            .validate()
            .map_err(|e| GatewayError::invalid(e.to_string()))?;
        let key = instance_key(&region, &instance.name, &instance.id);
        let w = state.engine.service_register(instance, lease).await?;
        Ok(Json(ServiceRegisteredResponse {
            key,
            version: w.version.0,
            served_at: w.version.0,
            served_at_str: w.version.to_string(),
        })
        .into_response())
    })
    .await
}

/// A service's live instances, in every region, nearest first.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "service", params(ServicePath, LookupQuery),
    responses(
        (status = 200, description = "Instances read from this node's replica (another region's registrations and expiries show after replication)", body = ServicesResponse),
        (status = 400, description = "A bad name or zone, or an unknown parameter (MER-1007)", body = ErrorBody),
        (status = 503, description = "Shutting down or overloaded (MER-3003)", body = ErrorBody),
    ))]
pub(crate) async fn lookup(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<LookupQuery>, QueryRejection>,
) -> Response {
    observe(&state, "service_lookup", async {
        let Path(name) =
            path.map_err(|e| GatewayError::invalid(format!("bad service name in path: {e}")))?;
        check_no_dot_segments(&name, "service name")?;
        let zone = query(q)?.zone.unwrap_or_default();
        if zone.len() > crate::discovery::MAX_SERVICE_NAME_BYTES {
            return Err(GatewayError::invalid(format!(
                "zone is {} bytes; at most {}",
                zone.len(),
                crate::discovery::MAX_SERVICE_NAME_BYTES
            )));
        }
        let rtt = state
            .membership
            .as_ref()
            .map(crate::membership::Membership::region_rtts)
            .unwrap_or_default();
        let found = state.engine.service_lookup(&name, &zone, &rtt).await?;
        let at = state.engine.clock_ts();
        Ok(Json(ServicesResponse {
            instances: found.into_iter().map(Into::into).collect(),
            served_at: at.0,
            served_at_str: at.to_string(),
        })
        .into_response())
    })
    .await
}
