//! The peer protocol, version 1: what nodes say to each other.
//!
//! Peer traffic (Raft RPCs, streamed snapshots, later cross-region
//! replication and forwarding) is a protocol of its own beside the client
//! protocol ([`crate::wire`]): it is negotiated with its own ALPN
//! ([`crate::transport::ALPN_PEER`]), served by its own dispatcher
//! (`server::peer`) that admits only `node` certificates, and has its own
//! limits ([`PEER_MAX_FRAME_BYTES`], [`MAX_APPEND_BYTES`],
//! [`SNAPSHOT_CHUNK_BYTES`]). Client limits and rate limits never apply to it.
//!
//! A peer exchange is one bidirectional stream of length-prefixed frames
//! ([`crate::transport::frame`]); each message frame is a `u16` big-endian
//! version ([`PEER_PROTOCOL_VERSION`]) and a postcard body.
//!
//! - Raft RPC: one [`PeerRequestV1::Raft`] frame, one [`PeerResponseV1::Raft`]
//!   (or [`PeerResponseV1::Err`]) frame.
//! - Snapshot: [`PeerRequestV1::SnapshotOffer`] → [`PeerResponseV1::SnapshotResumeAt`]
//!   (the bytes the receiver already holds of that snapshot, from an earlier
//!   interrupted transfer) → raw chunk frames of at most
//!   [`SNAPSHOT_CHUNK_BYTES`] until `total_bytes` → [`PeerResponseV1::SnapshotInstalled`].
//!
//! - Replication: one [`PeerRequestV1::Replicate`] frame (a batch of the
//!   origin region's changes to a range, or an empty probe), one
//!   [`PeerResponseV1::Replicated`] (the destination's cursor after it) or
//!   [`PeerResponseV1::NotLeader`] (send it to the range's leader there).
//! - Catch-up: one [`PeerRequestV1::CatchUp`] frame per chunk of the
//!   origin's state (when the destination is behind the origin's change
//!   log), answered like a replication batch.
//!
//! A request frame may end in a trailer after the postcard body carrying the
//! W3C trace context of a sampled trace ([`encode_traced`],
//! [`decode_traced`]); the layout, shared with the client protocol, and why
//! a trailer, are in [`crate::trace_context`]. A frame without one is the v1
//! frame of earlier builds.
//!
//! Enums are only ever appended to; frozen-bytes tests pin the layout.
//! This module holds types and their encoding only, no logic.

use serde::{Deserialize, Serialize};

use crate::error_code::{ApiError, ErrorCode};
use crate::trace_context::{self, Trailer};

/// The peer protocol version this build speaks.
pub const PEER_PROTOCOL_VERSION: u16 = 1;

/// Largest peer frame a node reads or writes: one log entry is bounded by
/// the proposer's `limits.max_request_bytes` (at most
/// [`crate::limits::HARD_MAX_REQUEST_BYTES`]), and an AppendEntries frame
/// carries more than one entry only while it stays under
/// [`MAX_APPEND_BYTES`]; the rest is framing.
pub const PEER_MAX_FRAME_BYTES: usize = crate::limits::HARD_MAX_FRAME_BYTES;

/// Byte budget of one AppendEntries RPC (sum of its entries' sizes, as
/// estimated by `RangeCommand::approx_bytes`). A batch always carries at
/// least one entry, so an entry larger than the budget travels alone.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// The slowest peer link a deadline allows for: an AppendEntries RPC gets
/// openraft's deadline (three quarters of the heartbeat interval) plus its
/// bytes at this rate, so a batch of large entries is not timed out (and
/// resent, forever) on a link or disk that is merely slower than a
/// heartbeat. 4 MiB/s: a 1 MiB batch gets 250 ms more.
pub const PEER_MIN_BYTES_PER_SEC: usize = 4 * 1024 * 1024;

/// Largest chunk of a snapshot file in one frame. The receiver holds at most
/// one chunk in memory; QUIC flow control bounds what is in flight.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Longest a receiver waits for the next frame of a peer exchange.
pub const PEER_READ_TIMEOUT_MS: u64 = 30_000;

/// Largest reply frame to a Raft RPC (a vote or append result is tiny).
pub const MAX_RAFT_REPLY_BYTES: usize = 1024 * 1024;

/// Raft RPC kinds, version 1 (append-only). The payload of each is the
/// postcard encoding of the openraft request type it names (openraft is
/// pinned exactly, so both ends agree on that layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKindV1 {
    /// AppendEntries (also heartbeats).
    AppendEntries,
    /// RequestVote.
    Vote,
    /// Pre-vote.
    PreVote,
    /// Leadership transfer.
    TransferLeader,
}

/// A request that opens a peer exchange, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequestV1 {
    /// A Raft RPC for one range group.
    Raft {
        /// The range (Raft group) addressed.
        range: u64,
        /// Which RPC.
        kind: RaftKindV1,
        /// postcard of the openraft request (`serde_bytes`: the same layout
        /// as a `Vec<u8>`, decoded in one copy).
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Offers a snapshot of a range; chunk frames follow the receiver's
    /// [`PeerResponseV1::SnapshotResumeAt`].
    SnapshotOffer {
        /// The range (Raft group) addressed.
        range: u64,
        /// Identifies the snapshot file's exact bytes (a digest prefix), so
        /// a receiver resumes only a transfer of the same file.
        snapshot_id: Vec<u8>,
        /// Size of the snapshot file in bytes.
        total_bytes: u64,
        /// postcard of the leader's vote (openraft `Vote`).
        vote: Vec<u8>,
        /// postcard of the snapshot's openraft `SnapshotMeta`.
        meta: Vec<u8>,
    },
    /// A batch of an origin region's changes to a range, for the range's
    /// leader in the destination region, which proposes it to its group.
    Replicate {
        /// The range (Raft group) addressed.
        range: u64,
        /// The range's first key at the origin: a destination whose range
        /// spans other keys refuses the batch (the regions' range tables
        /// disagree).
        start: Vec<u8>,
        /// The range's end at the origin (exclusive; `None`: unbounded).
        end: Option<Vec<u8>>,
        /// postcard of the batch, the Raft log's own `ReplicateV1`
        /// (proposed as it is; its layout is pinned with the log's).
        #[serde(with = "serde_bytes")]
        batch: Vec<u8>,
    },
    /// A policy change forwarded to the control range's leader by the node
    /// a client (QUIC or HTTP) sent it to; that node checked the caller's
    /// role. Answered with [`PeerResponseV1::PolicyChanged`],
    /// [`PeerResponseV1::NotLeader`] or an error.
    Policy(PolicyChangeV1),
    /// One chunk of a cross-region catch-up, for the range's leader in the
    /// destination region, which proposes it to its group; answered like
    /// [`PeerRequestV1::Replicate`].
    CatchUp {
        /// The range (Raft group) addressed.
        range: u64,
        /// The range's first key at the origin.
        start: Vec<u8>,
        /// The range's end at the origin (exclusive; `None`: unbounded).
        end: Option<Vec<u8>>,
        /// postcard of the chunk, the Raft log's own `CatchUpV1`.
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// A lease operation for the leader of a range of the sender's region
    /// (`crate::coord`): a lease check at the lease range, or a lease
    /// command to propose there. Answered with
    /// [`PeerResponseV1::LeaseChecked`] / [`PeerResponseV1::LeaseApplied`],
    /// [`PeerResponseV1::NotLeader`] or an error.
    Lease(LeasePeerV1),
    /// A policy handoff's fence (`engine::control`), for the leader of
    /// `range` in the receiver's region: propose
    /// `CommandV1::PolicyFence { table }`, then, when `wait_for` names a
    /// region, wait until that region's cursor for this one passed the
    /// fence. Answered with [`PeerResponseV1::PolicyFenced`],
    /// [`PeerResponseV1::NotLeader`] or an error.
    PolicyFence {
        /// The range (Raft group) addressed.
        range: u64,
        /// The handoff's policy table version.
        table: u64,
        /// The region that must have applied this region's writes up to
        /// the fence (the new home), if not the receiver's own.
        wait_for: Option<String>,
    },
}

/// A lease operation between nodes of one region, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeasePeerV1 {
    /// Is the lease live? Asked of the lease range's leader, which answers
    /// from a linearizable read.
    Check {
        /// The lease.
        id: u64,
    },
    /// Propose a lease command (the Raft log's own type) to `range`.
    Propose {
        /// The range.
        range: u64,
        /// The command.
        command: crate::raft::types::LeaseCommandV1,
    },
    /// Propose a lock command (the Raft log's own type) to `range`.
    ProposeLock {
        /// The range.
        range: u64,
        /// The command.
        command: crate::raft::types::LockCommandV1,
    },
}

/// A policy change, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyChangeV1 {
    /// Set fields of a prefix's (or the default's) policy.
    Set(crate::wire::SetPolicyV1),
    /// Remove a prefix's policy.
    Remove {
        /// The prefix.
        prefix: Vec<u8>,
    },
}

/// A reply in a peer exchange, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponseV1 {
    /// postcard of the openraft result of a Raft RPC.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The receiver already holds the first `offset` bytes of the offered
    /// snapshot: the sender continues from there.
    SnapshotResumeAt {
        /// Bytes already held.
        offset: u64,
    },
    /// postcard of the openraft result of installing the snapshot.
    SnapshotInstalled(Vec<u8>),
    /// The exchange was refused; nothing was changed by it.
    Err {
        /// Stable error code (`MER-…`).
        code: String,
        /// What went wrong.
        message: String,
    },
    /// A replication batch was proposed and applied by the destination's
    /// group (`applied`), or refused by its cursor (a gap, or a region the
    /// range does not replicate with: `applied = false`); either way
    /// `cursor` is where the destination is: continue from it.
    Replicated {
        /// Whether the batch continued the cursor and was applied.
        applied: bool,
        /// The destination's cursor for the origin after the batch.
        cursor: u64,
    },
    /// This node does not lead the range; `leader` is the peer address of
    /// the node that does, when known. Nothing was changed.
    NotLeader {
        /// The leader's peer address.
        leader: Option<String>,
    },
    /// A forwarded policy change committed in the control range.
    PolicyChanged {
        /// The table's version after it.
        version: u64,
        /// The changed policy's epoch (0 for a removal).
        epoch: u64,
        /// The table after it.
        policies: crate::wire::PoliciesV1,
    },
    /// The lease was live at the lease range's leader at `checked_at`.
    LeaseChecked {
        /// The read timestamp of the check (HLC).
        checked_at: u64,
    },
    /// A forwarded lease command applied; the range's reply.
    LeaseApplied {
        /// The reply's `succeeded`.
        succeeded: bool,
        /// The version it applied at.
        version: u64,
        /// The reply's `value`.
        value: u64,
    },
    /// The range applied the fence at `at` (and the region named waited
    /// for has applied everything this one wrote up to it).
    PolicyFenced {
        /// The fence's applied version (HLC).
        at: u64,
    },
}

impl PeerResponseV1 {
    /// The error reply for `e`.
    pub fn error(e: &ApiError) -> PeerResponseV1 {
        PeerResponseV1::Err {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
        }
    }
}

/// Why a peer frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerDecodeError {
    /// Fewer than two bytes: no version header.
    #[error("peer frame of {0} bytes has no version header")]
    Short(usize),
    /// A version this build does not speak: the nodes run incompatible builds.
    #[error(
        "peer protocol version {0} is not supported (this node speaks {PEER_PROTOCOL_VERSION})"
    )]
    UnsupportedVersion(u16),
    /// The body is not a valid encoding of the expected message.
    #[error("malformed peer frame: {0}")]
    Malformed(String),
}

impl From<PeerDecodeError> for ApiError {
    fn from(e: PeerDecodeError) -> ApiError {
        let code = match e {
            PeerDecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            PeerDecodeError::Short(_) | PeerDecodeError::Malformed(_) => {
                ErrorCode::MalformedRequest
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// Encodes a peer message with its version header.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let out = PEER_PROTOCOL_VERSION.to_be_bytes().to_vec();
    // Writing into a Vec cannot fail; an unencodable value is a programmer
    // error, answered with an empty body the peer refuses as malformed.
    postcard::to_extend(msg, out).unwrap_or_else(|_| PEER_PROTOCOL_VERSION.to_be_bytes().to_vec())
}

/// Encodes a peer message with `trailer` (the trace context of a sampled
/// trace, and for an AppendEntries the entry it is about) after its body;
/// an empty trailer gives the plain v1 frame.
pub fn encode_traced<T: Serialize>(msg: &T, trailer: &Trailer) -> Vec<u8> {
    let mut frame = encode(msg);
    trailer.write(&mut frame);
    frame
}

/// Decodes a peer message, refusing unknown versions and trailing bytes
/// other than a well-formed trailer (whose context it drops).
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, PeerDecodeError> {
    decode_traced(frame).map(|(msg, _)| msg)
}

/// Decodes a peer message and its trailer.
pub fn decode_traced<'a, T: Deserialize<'a>>(
    frame: &'a [u8],
) -> Result<(T, Trailer), PeerDecodeError> {
    let (header, body) = frame
        .split_at_checked(2)
        .ok_or(PeerDecodeError::Short(frame.len()))?;
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != PEER_PROTOCOL_VERSION {
        return Err(PeerDecodeError::UnsupportedVersion(version));
    }
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| PeerDecodeError::Malformed(e.to_string()))?;
    let trailer =
        trace_context::read_trailer(rest).map_err(|e| PeerDecodeError::Malformed(e.to_string()))?;
    Ok((msg, trailer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_raft_request_bytes() {
        let req = PeerRequestV1::Raft {
            range: 3,
            kind: RaftKindV1::Vote,
            payload: vec![7, 8],
        };
        let bytes = encode(&req);
        assert_eq!(bytes, vec![0, 1, 0, 3, 1, 2, 7, 8]);
        assert_eq!(decode::<PeerRequestV1>(&bytes), Ok(req));
    }

    #[test]
    fn frozen_replication_messages() {
        let req = PeerRequestV1::Replicate {
            range: 2,
            start: b"a".to_vec(),
            end: None,
            batch: vec![7, 8],
        };
        let bytes = encode(&req);
        assert_eq!(bytes, vec![0, 1, 2, 2, 1, b'a', 0, 2, 7, 8]);
        assert_eq!(decode::<PeerRequestV1>(&bytes), Ok(req));
        let done = PeerResponseV1::Replicated {
            applied: true,
            cursor: 3,
        };
        assert_eq!(encode(&done), vec![0, 1, 4, 1, 3]);
        let elsewhere = PeerResponseV1::NotLeader {
            leader: Some("x".into()),
        };
        assert_eq!(encode(&elsewhere), vec![0, 1, 5, 1, 1, b'x']);
    }

    #[test]
    fn frozen_lease_messages() {
        use crate::raft::types::LeaseCommandV1;
        let check = PeerRequestV1::Lease(LeasePeerV1::Check { id: 9 });
        assert_eq!(encode(&check), vec![0, 1, 5, 0, 9]);
        assert_eq!(decode::<PeerRequestV1>(&encode(&check)), Ok(check));
        let propose = PeerRequestV1::Lease(LeasePeerV1::Propose {
            range: 2,
            command: LeaseCommandV1::Grant { ttl_ms: 5 },
        });
        assert_eq!(encode(&propose), vec![0, 1, 5, 1, 2, 0, 5]);
        assert_eq!(decode::<PeerRequestV1>(&encode(&propose)), Ok(propose));
        let lock = PeerRequestV1::Lease(LeasePeerV1::ProposeLock {
            range: 2,
            command: crate::raft::types::LockCommandV1::SetFence {
                name: b"n".to_vec(),
                token: 9,
            },
        });
        assert_eq!(encode(&lock), vec![0, 1, 5, 2, 2, 4, 1, b'n', 9]);
        assert_eq!(decode::<PeerRequestV1>(&encode(&lock)), Ok(lock));
        let checked = PeerResponseV1::LeaseChecked { checked_at: 7 };
        assert_eq!(encode(&checked), vec![0, 1, 7, 7]);
        let applied = PeerResponseV1::LeaseApplied {
            succeeded: true,
            version: 3,
            value: 4,
        };
        assert_eq!(encode(&applied), vec![0, 1, 8, 1, 3, 4]);
        assert_eq!(decode::<PeerResponseV1>(&encode(&applied)), Ok(applied));
    }

    #[test]
    fn frozen_policy_fence_messages() {
        let fence = PeerRequestV1::PolicyFence {
            range: 2,
            table: 7,
            wait_for: Some("eu".into()),
        };
        assert_eq!(encode(&fence), vec![0, 1, 6, 2, 7, 1, 2, b'e', b'u']);
        assert_eq!(decode::<PeerRequestV1>(&encode(&fence)), Ok(fence));
        let fenced = PeerResponseV1::PolicyFenced { at: 5 };
        assert_eq!(encode(&fenced), vec![0, 1, 9, 5]);
        assert_eq!(decode::<PeerResponseV1>(&encode(&fenced)), Ok(fenced));
    }

    #[test]
    fn frozen_catch_up_request() {
        let req = PeerRequestV1::CatchUp {
            range: 2,
            start: b"a".to_vec(),
            end: Some(b"b".to_vec()),
            chunk: vec![7],
        };
        let bytes = encode(&req);
        assert_eq!(bytes, vec![0, 1, 4, 2, 1, b'a', 1, 1, b'b', 1, 7]);
        assert_eq!(decode::<PeerRequestV1>(&bytes), Ok(req));
    }

    #[test]
    fn frozen_policy_forwarding() {
        let req = PeerRequestV1::Policy(PolicyChangeV1::Remove {
            prefix: b"a/".to_vec(),
        });
        let bytes = encode(&req);
        assert_eq!(bytes, vec![0, 1, 3, 1, 2, b'a', b'/']);
        assert_eq!(decode::<PeerRequestV1>(&bytes), Ok(req));
        let done = PeerResponseV1::PolicyChanged {
            version: 2,
            epoch: 0,
            policies: crate::wire::PoliciesV1 {
                local_region: "r".into(),
                regions: vec!["r".into()],
                default: crate::wire::PolicyV1 {
                    consistency: crate::wire::ConsistencyV1::Strong,
                    home: "r".into(),
                    replication: crate::wire::ReplicationV1::Async,
                    max_staleness_ms: 1,
                },
                prefixes: Vec::new(),
            },
        };
        let bytes = encode(&done);
        assert_eq!(
            bytes,
            vec![0, 1, 6, 2, 0, 1, b'r', 1, 1, b'r', 0, 1, b'r', 0, 1, 0]
        );
        assert_eq!(decode::<PeerResponseV1>(&bytes), Ok(done));
    }

    #[test]
    fn frozen_snapshot_offer_and_replies() {
        let offer = PeerRequestV1::SnapshotOffer {
            range: 1,
            snapshot_id: vec![0xab],
            total_bytes: 300,
            vote: vec![5],
            meta: vec![6],
        };
        assert_eq!(
            encode(&offer),
            vec![0, 1, 1, 1, 1, 0xab, 0xac, 0x02, 1, 5, 1, 6]
        );
        let resume = PeerResponseV1::SnapshotResumeAt { offset: 2 };
        assert_eq!(encode(&resume), vec![0, 1, 1, 2]);
        assert_eq!(
            encode(&PeerResponseV1::SnapshotInstalled(vec![9])),
            vec![0, 1, 2, 1, 9]
        );
        let err = PeerResponseV1::Err {
            code: "MER-1".into(),
            message: "m".into(),
        };
        assert_eq!(
            encode(&err),
            vec![0, 1, 3, 5, b'M', b'E', b'R', b'-', b'1', 1, b'm']
        );
        assert_eq!(decode::<PeerResponseV1>(&encode(&err)), Ok(err));
    }

    /// A traced AppendEntries: `frozen_raft_request_bytes`'s layout, then
    /// the trailer (trace context, traced entry); untraced frames decode as
    /// before.
    #[test]
    fn frozen_traced_raft_request() {
        let req = PeerRequestV1::Raft {
            range: 3,
            kind: RaftKindV1::AppendEntries,
            payload: vec![7],
        };
        let trailer = Trailer {
            context: Some(crate::trace_context::TraceContext {
                trace_id: [0x0f; 16],
                span_id: [0xf0; 8],
                flags: 1,
            }),
            entry: Some(258),
        };
        let bytes = encode_traced(&req, &trailer);
        let mut expected = vec![0, 1, 0, 3, 0, 1, 7, 1, 25];
        expected.extend([0x0f; 16]);
        expected.extend([0xf0; 8]);
        expected.push(1);
        expected.extend([2, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(bytes, expected);
        assert_eq!(
            decode_traced::<PeerRequestV1>(&bytes),
            Ok((req.clone(), trailer))
        );
        assert_eq!(decode::<PeerRequestV1>(&bytes), Ok(req.clone()));
        assert_eq!(encode_traced(&req, &Trailer::default()), encode(&req));
        assert_eq!(
            decode_traced::<PeerRequestV1>(&encode(&req)),
            Ok((req, Trailer::default()))
        );
    }

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        assert_eq!(
            decode::<PeerRequestV1>(&[0, 2, 0]),
            Err(PeerDecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode::<PeerRequestV1>(&[0]),
            Err(PeerDecodeError::Short(1))
        );
        let mut bytes = encode(&PeerResponseV1::SnapshotResumeAt { offset: 0 });
        bytes.push(0);
        assert!(matches!(
            decode::<PeerResponseV1>(&bytes),
            Err(PeerDecodeError::Malformed(_))
        ));
        let client_frame = crate::wire::encode_request(&crate::wire::RequestV1::Status);
        assert!(decode::<PeerRequestV1>(&client_frame).is_err());
    }
}
