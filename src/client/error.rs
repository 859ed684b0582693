//! The SDK's errors, split by what they mean for the caller's data: a
//! definite refusal (nothing was written), a request that never left
//! (nothing was written), or an indeterminate outcome (a write may or may
//! not have been applied).

use std::time::Duration;

use crate::error_code::{ApiError, ErrorCode};

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node refused the request with a stable code; the request was not
    /// applied. (A node's "outcome unknown" answer, `MER-3005`, arrives as
    /// [`ClientError::OutcomeUnknown`] instead.)
    #[error(transparent)]
    Api(ApiError),
    /// Bad client settings (endpoints, certificate files).
    #[error("client config: {0}")]
    Config(String),
    /// No endpoint could be reached; the request was not sent.
    #[error("cannot connect to any of {endpoints}: {last}")]
    Connect {
        /// Endpoints tried.
        endpoints: String,
        /// The last error.
        last: String,
    },
    /// The request timeout passed while no attempt that may write was in
    /// flight (every attempt so far was refused or could not be sent, or
    /// the request only reads): nothing was written.
    #[error("request timed out after {0:?} before any node accepted it (nothing was written)")]
    Timeout(Duration),
    /// A request that may write was sent and no definite answer came back:
    /// it may or may not have been applied. (Reads cut off by a dead node
    /// are resent to another node instead.) Read before retrying a write that is not
    /// idempotent. Its code is `MER-3005`.
    #[error("{0}")]
    OutcomeUnknown(#[from] OutcomeUnknown),
    /// The node answered something this SDK does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Why a request's outcome is unknown (see [`ClientError::OutcomeUnknown`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutcomeUnknown {
    /// The node itself could not tell (a commit timed out, its Raft entry
    /// was discarded by a new leader); `MER-3005` from the node.
    #[error(transparent)]
    Node(ApiError),
    /// The node stopped answering (not even keep-alives) after the request
    /// was sent: it died, or the network to it did.
    #[error("{addr} stopped answering {silent_for:?} ago, after the request was sent (outcome unknown, MER-3005)")]
    Unresponsive {
        /// The node.
        addr: std::net::SocketAddr,
        /// How long nothing had been received from it.
        silent_for: Duration,
    },
    /// The connection broke after the request was sent.
    #[error("connection lost during request (outcome unknown, MER-3005): {0}")]
    ConnectionLost(String),
    /// The request timeout passed while an attempt was in flight.
    #[error("request timed out after {0:?} with an attempt in flight (outcome unknown, MER-3005)")]
    Timeout(Duration),
}

impl From<ApiError> for ClientError {
    /// Sorts a node's error: `MER-3005` is not a refusal.
    fn from(e: ApiError) -> Self {
        match e.code {
            ErrorCode::OutcomeUnknown => ClientError::OutcomeUnknown(OutcomeUnknown::Node(e)),
            _ => ClientError::Api(e),
        }
    }
}

impl ClientError {
    /// The stable code: the node's for [`ClientError::Api`], `MER-3005` for
    /// every [`ClientError::OutcomeUnknown`], none for errors that never
    /// reached a node.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            ClientError::OutcomeUnknown(_) => Some(ErrorCode::OutcomeUnknown),
            _ => None,
        }
    }

    /// Whether a write may have been applied although this error was returned.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_outcome_unknown_is_not_a_refusal() {
        let e = ClientError::from(ApiError::new(ErrorCode::OutcomeUnknown, "commit timed out"));
        assert!(e.is_outcome_unknown(), "{e:?}");
        assert_eq!(e.code(), Some(ErrorCode::OutcomeUnknown));
        let e = ClientError::from(ApiError::new(ErrorCode::ValueTooLarge, "big"));
        assert!(matches!(e, ClientError::Api(_)));
        assert!(!e.is_outcome_unknown());
    }

    #[test]
    fn transport_uncertainty_carries_the_code_and_says_so() {
        let e = ClientError::from(OutcomeUnknown::ConnectionLost("reset".into()));
        assert_eq!(e.code(), Some(ErrorCode::OutcomeUnknown));
        assert!(e.to_string().contains("outcome unknown"), "{e}");
        let never_sent = ClientError::Timeout(Duration::from_secs(1));
        assert_eq!(never_sent.code(), None);
        assert!(!never_sent.is_outcome_unknown());
    }
}
