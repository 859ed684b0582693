//! Reading a request's parts: the key in the path, the query string and
//! the body, each failure turned into the gateway's error shape (extractor
//! rejections arrive as `Result`s, so none leaves as axum's plain text).
//! Shared by every route module; it imports none of them.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;

use super::error::GatewayError;
use super::GatewayState;
use crate::error_code::ErrorCode;

/// The key in a route's path: decoded, without `.`/`..` segments.
pub(crate) fn path_key(path: Result<Path<String>, PathRejection>) -> Result<String, GatewayError> {
    let Path(key) = path.map_err(|e| {
        GatewayError::api(ErrorCode::InvalidArgument, format!("bad key in path: {e}"))
    })?;
    super::strict::check_no_dot_segments(&key, "key")?;
    Ok(key)
}

/// A query string read as `T` (unknown parameters refused by `T`).
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, GatewayError> {
    let Query(q) = q.map_err(|e| GatewayError::api(ErrorCode::InvalidArgument, e.body_text()))?;
    Ok(q)
}

/// A request body, within `limits.max_request_bytes` (413 `MER-1003`).
pub(crate) fn body(
    b: Result<Bytes, BytesRejection>,
    state: &GatewayState,
) -> Result<Bytes, GatewayError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let max = state.engine.limits().max_request_bytes;
            GatewayError::api(
                ErrorCode::RequestTooLarge,
                format!("request body is larger than {max} bytes (max_request_bytes)"),
            )
        } else {
            GatewayError::api(
                ErrorCode::MalformedRequest,
                format!("could not read the request body: {e}"),
            )
        }
    })
}
