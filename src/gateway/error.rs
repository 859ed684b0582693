//! One JSON error shape for every failure the gateway reports.
//!
//! Engine errors keep their stable code (`MER-....`, see
//! [`crate::error_code`]); the HTTP status is derived from the code alone, so a
//! client may branch on either. Two answers are not [`ErrorCode`]s because
//! they are not failures of the engine: a missing key (`not_found`) and a
//! method the route does not serve (`method_not_allowed`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error_code::{ApiError, ErrorCode};

/// Code of the 404 answer for a missing key or an unknown route.
pub(crate) const NOT_FOUND_CODE: &str = "not_found";
/// Code of the 405 answer for a method a route does not serve.
pub(crate) const METHOD_NOT_ALLOWED_CODE: &str = "method_not_allowed";

/// The body of every error reply: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

/// Code, message and remedy of an error reply.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable code: `MER-....`, `not_found` or `method_not_allowed`.
    #[schema(example = "MER-1002")]
    pub(crate) code: String,
    /// What went wrong, naming the offending field or limit.
    pub(crate) message: String,
    /// What the caller should do about it.
    pub(crate) remedy: String,
    /// For MER-3006 (wrong region): the key prefix's home region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) home_region: Option<String>,
    /// For MER-3006: a client (QUIC) address of a node in the home region,
    /// when gossip knows one; for MER-3004: the leader's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
}

/// A failed request, before it is rendered as JSON.
#[derive(Debug)]
pub(crate) enum GatewayError {
    /// An engine or validation error with a stable code.
    Api(ApiError),
    /// The key (or route) does not exist; the message names it.
    NotFound(String),
    /// The route exists but not for this method.
    MethodNotAllowed,
}

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> Self {
        GatewayError::Api(e)
    }
}

impl GatewayError {
    /// The JSON body of this error (for replies built outside axum).
    pub(crate) fn into_json(self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }

    /// Shorthand for an [`ApiError`] with `code`.
    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Self {
        GatewayError::Api(ApiError::new(code, message))
    }

    /// Shorthand for a bad argument (400 `MER-1007`).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::api(ErrorCode::InvalidArgument, message)
    }

    /// The HTTP status of this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            GatewayError::Api(e) => http_status(e.code),
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn body(self) -> ErrorBody {
        let (mut home_region, mut address) = (None, None);
        let (code, message, remedy) = match self {
            GatewayError::Api(e) => {
                home_region = e.home_region;
                address = e.leader_hint;
                (e.code.as_str().to_owned(), e.message, http_remedy(e.code))
            }
            GatewayError::NotFound(message) => (
                NOT_FOUND_CODE.to_owned(),
                message,
                "check the key or path; absence is not an error of the node",
            ),
            GatewayError::MethodNotAllowed => (
                METHOD_NOT_ALLOWED_CODE.to_owned(),
                "this route does not serve that method".to_owned(),
                "see /openapi.json for the methods of each route",
            ),
        };
        ErrorBody {
            error: ErrorDetail {
                code,
                message,
                remedy: remedy.to_owned(),
                home_region,
                address,
            },
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(self.body())).into_response()
    }
}

/// What an HTTP caller should do about `code`. Most remedies are the
/// code's own; a few speak of SDKs or certificates in QUIC terms and read
/// differently for someone holding curl.
pub(crate) fn http_remedy(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::MalformedRequest => {
            "send the request as /openapi.json describes it: a well-formed HTTP request, and a JSON object with the documented field names (no arrays in place of objects, no unknown fields)"
        }
        ErrorCode::PermissionDenied => {
            "connect with a client certificate whose role may call this route (policy changes need the admin role: meridian certs issue --role admin)"
        }
        other => other.remedy(),
    }
}

/// The HTTP status for each stable code. The match is exhaustive on purpose:
/// a new [`ErrorCode`] does not compile until it is given a status here.
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::RequestTooLarge => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ErrorCode::TooManyOps
        | ErrorCode::InvalidArgument
        | ErrorCode::MalformedRequest
        | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
        ErrorCode::Compacted => StatusCode::GONE,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::CertificateRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NotLeader | ErrorCode::WrongRegion => StatusCode::MISDIRECTED_REQUEST,
        ErrorCode::TooStale => StatusCode::SERVICE_UNAVAILABLE,
        // A watch stream's end, sent inside a 200 stream; as a status (a
        // refusal before the stream starts) it would mean "too slow".
        ErrorCode::WatchLagged => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LevelNotAllowed => StatusCode::BAD_REQUEST,
        ErrorCode::PolicyRefused => StatusCode::CONFLICT,
        ErrorCode::LeaseNotFound => StatusCode::NOT_FOUND,
        ErrorCode::CoordinationNotAllowed => StatusCode::BAD_REQUEST,
        ErrorCode::LockBusy => StatusCode::CONFLICT,
        ErrorCode::FenceRejected => StatusCode::CONFLICT,
        ErrorCode::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
        ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        // Not a refusal: the write may have been applied. 504 says "no
        // definite answer from upstream", and the body's code says the rest.
        ErrorCode::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::StorageFailure | ErrorCode::ClockOffset | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ALL;

    #[test]
    fn every_code_maps_to_an_error_status() {
        for code in ALL {
            let s = http_status(*code);
            assert!(s.is_client_error() || s.is_server_error(), "{code} -> {s}");
        }
        assert_eq!(
            http_status(ErrorCode::ValueTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(http_status(ErrorCode::Compacted), StatusCode::GONE);
        assert_eq!(
            http_status(ErrorCode::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(ErrorCode::OutcomeUnknown),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(ErrorCode::ClockOffset),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn body_carries_code_message_and_remedy() {
        let body = GatewayError::api(ErrorCode::RequestTooLarge, "too big").body();
        assert_eq!(body.error.code, "MER-1003");
        assert_eq!(body.error.message, "too big");
        assert_eq!(body.error.remedy, ErrorCode::RequestTooLarge.remedy());
        let body = GatewayError::NotFound("key \"a\" not found".into()).body();
        assert_eq!(body.error.code, NOT_FOUND_CODE);
    }
}
