//! Stable error codes that reach users (in the wire protocol, the HTTP
//! gateway's JSON errors and the CLI). Codes never change meaning once
//! released; new ones are appended. Modelled on TiKV's `error_code`.

use serde::{Deserialize, Serialize};

/// A stable, user-visible error code with a fixed meaning and remedy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// MER-1001: the key is empty or longer than the key limit.
    KeyTooLarge,
    /// MER-1002: the value is longer than the value limit.
    ValueTooLarge,
    /// MER-1003: the request frame is longer than the request limit.
    RequestTooLarge,
    /// MER-1004: a transaction has more operations than allowed.
    TooManyOps,
    /// MER-1005: the frame could not be decoded.
    MalformedRequest,
    /// MER-1006: the client speaks a protocol version this node does not.
    UnsupportedVersion,
    /// MER-1007: an argument is out of its allowed range (for example a page size).
    InvalidArgument,
    /// MER-1008: the requested snapshot is older than the history window.
    Compacted,
    /// MER-2001: the peer's certificate role may not call this API.
    PermissionDenied,
    /// MER-2002: too many requests; retry later.
    RateLimited,
    /// MER-3001: the node's storage failed; the node stops accepting writes.
    StorageFailure,
    /// MER-3002: a remote clock is too far ahead of ours.
    ClockOffset,
    /// MER-3003: the node is shutting down, overloaded or cannot serve the
    /// request now; the request was not applied.
    Unavailable,
    /// MER-3004: this node does not lead the key's range; the reply names the leader if known.
    NotLeader,
    /// MER-9999: an internal error; report it.
    Internal,
    /// MER-3005: the request was sent but its outcome is unknown: a write may
    /// or may not have been applied (a commit timed out, a Raft entry was
    /// discarded, or the connection was lost after sending). Unlike every
    /// other code, this is not a refusal.
    OutcomeUnknown,
    /// MER-3006: this node's region is not the key prefix's home region and
    /// the request needs it (a write to a strong prefix, a linearizable
    /// read, or a read the call asked to redirect); nothing was written.
    /// The reply names the home region and, when gossip knows one, a client
    /// address of a node there.
    WrongRegion,
    /// MER-3007: a bounded-staleness read found this region's frontier
    /// older than the bound and the call asked to fail; the message says
    /// how stale.
    TooStale,
    /// MER-1009: the read level asks for more than the key prefix's
    /// consistency allows (for example a linearizable read of an eventual
    /// prefix); the message names the allowed levels.
    LevelNotAllowed,
    /// MER-1010: the policy change was refused and nothing changed: it
    /// could loosen a guarantee already given where no handoff can run
    /// (removing a prefix policy whose keys would turn strong under the
    /// default), or the cluster has no control range to hold it.
    PolicyRefused,
    /// MER-1011: the HTTP request body is encoded (`Content-Encoding`) in a
    /// way the gateway does not decode; nothing was read or written.
    UnsupportedEncoding,
    /// MER-1012: the HTTP request's URI is longer than the gateway reads.
    UriTooLong,
    /// MER-1013: the HTTP request's header section is larger than the
    /// gateway reads (too many or too long header fields).
    HeadersTooLarge,
    /// MER-1014: the lease does not exist in this region: it expired, was
    /// revoked, or was never granted here; nothing was written.
    LeaseNotFound,
    /// MER-1015: a lease (or a lock, an election, a service instance) on a
    /// key whose prefix is not strong; nothing was written.
    CoordinationNotAllowed,
    /// MER-1016: the lock is held by another holder and the request did
    /// not wait for it (or its wait ended, or the queue is full); nothing
    /// changed.
    LockBusy,
    /// MER-1017: a guarded write's fencing token is not the newest granted
    /// for its lock (a newer one was granted, or it is another lock's);
    /// nothing was written.
    FenceRejected,
    /// MER-2003: the HTTPS gateway got a request on a connection without a
    /// client certificate; nothing was read or written.
    CertificateRequired,
    /// MER-3008: a watch's consumer did not read its events for longer than
    /// the stall timeout while its buffer was full; the watch ended after
    /// the last event it delivered (none was dropped) and the message names
    /// the timestamp to watch again from.
    WatchLagged,
}

/// Every code, for lookups and tests.
pub const ALL: &[ErrorCode] = &[
    ErrorCode::KeyTooLarge,
    ErrorCode::ValueTooLarge,
    ErrorCode::RequestTooLarge,
    ErrorCode::TooManyOps,
    ErrorCode::MalformedRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::InvalidArgument,
    ErrorCode::Compacted,
    ErrorCode::PermissionDenied,
    ErrorCode::RateLimited,
    ErrorCode::StorageFailure,
    ErrorCode::ClockOffset,
    ErrorCode::Unavailable,
    ErrorCode::NotLeader,
    ErrorCode::Internal,
    ErrorCode::OutcomeUnknown,
    ErrorCode::WrongRegion,
    ErrorCode::TooStale,
    ErrorCode::LevelNotAllowed,
    ErrorCode::PolicyRefused,
    ErrorCode::UnsupportedEncoding,
    ErrorCode::UriTooLong,
    ErrorCode::HeadersTooLarge,
    ErrorCode::CertificateRequired,
    ErrorCode::WatchLagged,
    ErrorCode::LeaseNotFound,
    ErrorCode::CoordinationNotAllowed,
    ErrorCode::LockBusy,
    ErrorCode::FenceRejected,
];

impl ErrorCode {
    /// The stable text form, e.g. `MER-1001`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::KeyTooLarge => "MER-1001",
            ErrorCode::ValueTooLarge => "MER-1002",
            ErrorCode::RequestTooLarge => "MER-1003",
            ErrorCode::TooManyOps => "MER-1004",
            ErrorCode::MalformedRequest => "MER-1005",
            ErrorCode::UnsupportedVersion => "MER-1006",
            ErrorCode::InvalidArgument => "MER-1007",
            ErrorCode::Compacted => "MER-1008",
            ErrorCode::PermissionDenied => "MER-2001",
            ErrorCode::RateLimited => "MER-2002",
            ErrorCode::StorageFailure => "MER-3001",
            ErrorCode::ClockOffset => "MER-3002",
            ErrorCode::Unavailable => "MER-3003",
            ErrorCode::NotLeader => "MER-3004",
            ErrorCode::Internal => "MER-9999",
            ErrorCode::OutcomeUnknown => "MER-3005",
            ErrorCode::WrongRegion => "MER-3006",
            ErrorCode::TooStale => "MER-3007",
            ErrorCode::LevelNotAllowed => "MER-1009",
            ErrorCode::PolicyRefused => "MER-1010",
            ErrorCode::UnsupportedEncoding => "MER-1011",
            ErrorCode::UriTooLong => "MER-1012",
            ErrorCode::HeadersTooLarge => "MER-1013",
            ErrorCode::LeaseNotFound => "MER-1014",
            ErrorCode::CoordinationNotAllowed => "MER-1015",
            ErrorCode::LockBusy => "MER-1016",
            ErrorCode::FenceRejected => "MER-1017",
            ErrorCode::CertificateRequired => "MER-2003",
            ErrorCode::WatchLagged => "MER-3008",
        }
    }

    /// The numeric form carried on the wire (the digits of [`ErrorCode::as_str`]).
    pub fn as_u16(self) -> u16 {
        // The text form is always "MER-" followed by four digits.
        self.as_str()[4..].parse().unwrap_or(9999)
    }

    /// Parses the numeric wire form; unknown numbers (from a newer node) map to `None`.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        ALL.iter().copied().find(|c| c.as_u16() == n)
    }

    /// What the caller should do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            ErrorCode::KeyTooLarge => "use a non-empty key within max_key_bytes",
            ErrorCode::ValueTooLarge => "store a smaller value (limit max_value_bytes)",
            ErrorCode::RequestTooLarge => "split the request (limit max_request_bytes)",
            ErrorCode::TooManyOps => "split the transaction (limit max_txn_ops)",
            ErrorCode::MalformedRequest => "use a matching SDK or CLI version",
            ErrorCode::UnsupportedVersion => "upgrade the client or the node",
            ErrorCode::InvalidArgument => "fix the argument named in the message",
            ErrorCode::Compacted => "read at a newer timestamp",
            ErrorCode::PermissionDenied => "use a certificate with the required role",
            ErrorCode::RateLimited => "back off and retry",
            ErrorCode::StorageFailure => "check the node's disk and logs, then restart it",
            ErrorCode::ClockOffset => "fix clock synchronisation (NTP) on the nodes",
            ErrorCode::Unavailable => "retry on another node or later",
            ErrorCode::NotLeader => {
                "send the request to the leader named in the reply (the SDK does)"
            }
            ErrorCode::Internal => "report a bug with the node's logs",
            ErrorCode::OutcomeUnknown => {
                "the write may or may not have been applied: read the key (or guard a retry with a transaction compare) before retrying"
            }
            ErrorCode::WrongRegion => {
                "send the request to a node of the home region named in the reply (the SDK does when it knows one), or read at a local level (bounded, causal, eventual)"
            }
            ErrorCode::TooStale => {
                "raise the staleness bound, read with on_stale=redirect, or read at the home region"
            }
            ErrorCode::LevelNotAllowed => {
                "ask for a level the prefix allows (`meridian policy ls` shows each prefix's consistency)"
            }
            ErrorCode::PolicyRefused => {
                "keep the prefix's guarantee (use a new prefix for data that needs a stronger one), or configure [control] to change policies at run time"
            }
            ErrorCode::UnsupportedEncoding => {
                "send the body uncompressed, without a Content-Encoding header (or with identity)"
            }
            ErrorCode::UriTooLong => {
                "shorten the URI: use a shorter key, or fewer or shorter query parameters"
            }
            ErrorCode::HeadersTooLarge => "send fewer or shorter header fields",
            ErrorCode::LeaseNotFound => {
                "grant a new lease (`meridian lease grant TTL_S`) in the region of the key's home, and keep it alive"
            }
            ErrorCode::CoordinationNotAllowed => {
                "use a key under a strong prefix (`meridian policy ls` shows each prefix's consistency)"
            }
            ErrorCode::LockBusy => {
                "wait for the lock (acquire with a wait), or try again later"
            }
            ErrorCode::FenceRejected => {
                "stop acting as the lock's holder: your grant was superseded; acquire the lock again for a new token"
            }
            ErrorCode::CertificateRequired => {
                "connect with a client certificate issued by the cluster CA (meridian certs issue --role client NAME; curl --cert NAME.pem --key NAME.key --cacert ca.pem)"
            }
            ErrorCode::WatchLagged => {
                "read watch events faster (or raise limits.watch_stall_timeout_ms), then watch again from the timestamp in the message (the SDK's resume point)"
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a user sees it: a stable code, a message, and (through the
/// code) what to do. This is what the wire protocol, the HTTP gateway and the
/// CLI report; internal errors convert into it at the API boundary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} ({})", code.remedy())]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, naming the offending field or limit.
    pub message: String,
    /// For `NotLeader`: the QUIC address of the range's leader, if known;
    /// for `WrongRegion`: a client QUIC address of a node in the home
    /// region, if gossip knows one.
    pub leader_hint: Option<String>,
    /// For `WrongRegion`: the home region the request must go to.
    pub home_region: Option<String>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            leader_hint: None,
            home_region: None,
        }
    }

    /// A `NotLeader` error pointing at `leader` (a QUIC address), if known.
    pub fn not_leader(message: impl Into<String>, leader: Option<String>) -> ApiError {
        ApiError {
            code: ErrorCode::NotLeader,
            message: message.into(),
            leader_hint: leader,
            home_region: None,
        }
    }

    /// A `WrongRegion` error sending the caller to `home`, at `addr` (a
    /// client QUIC address of a node there) when known.
    pub fn wrong_region(
        message: impl Into<String>,
        home: impl Into<String>,
        addr: Option<String>,
    ) -> ApiError {
        ApiError {
            code: ErrorCode::WrongRegion,
            message: message.into(),
            leader_hint: addr,
            home_region: Some(home.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.as_u16()), "duplicate {c}");
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(*c));
        }
        assert_eq!(ErrorCode::KeyTooLarge.as_u16(), 1001);
        assert_eq!(ErrorCode::from_u16(4242), None);
        // Released numbers never move; new codes are appended.
        assert_eq!(ErrorCode::Unavailable.as_u16(), 3003);
        assert_eq!(ErrorCode::NotLeader.as_u16(), 3004);
        assert_eq!(ErrorCode::OutcomeUnknown.as_u16(), 3005);
        assert_eq!(ErrorCode::WrongRegion.as_u16(), 3006);
        assert_eq!(ErrorCode::TooStale.as_u16(), 3007);
        assert_eq!(ErrorCode::LevelNotAllowed.as_u16(), 1009);
        assert_eq!(ErrorCode::PolicyRefused.as_u16(), 1010);
        assert_eq!(ErrorCode::UnsupportedEncoding.as_u16(), 1011);
        assert_eq!(ErrorCode::UriTooLong.as_u16(), 1012);
        assert_eq!(ErrorCode::HeadersTooLarge.as_u16(), 1013);
        assert_eq!(ErrorCode::CertificateRequired.as_u16(), 2003);
        assert_eq!(ErrorCode::WatchLagged.as_u16(), 3008);
        assert_eq!(ErrorCode::LeaseNotFound.as_u16(), 1014);
        assert_eq!(ErrorCode::CoordinationNotAllowed.as_u16(), 1015);
        assert_eq!(ErrorCode::LockBusy.as_u16(), 1016);
        assert_eq!(ErrorCode::FenceRejected.as_u16(), 1017);
        assert_eq!(ALL.last(), Some(&ErrorCode::FenceRejected));
    }
}
