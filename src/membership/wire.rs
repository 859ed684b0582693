//! What travels inside a sealed packet (format v1), and the custom
//! broadcasts foca piggybacks on its messages. Both are kind-tagged and only
//! ever appended to; `tests` pins their bytes.
//!
//! Frame (the plaintext of one packet):
//!
//! ```text
//! 0x01 Foca  | foca message (foca's PostcardCodec)
//! 0x02 Ping  | postcard PingV1 { seq: u64 }                  (RTT probe / seed discovery)
//! 0x03 Pong  | postcard PongV1 { seq: u64, responder: GossipId }
//! ```
//!
//! Broadcast item (one foca custom broadcast):
//!
//! ```text
//! 0x01 LeaderHint   | postcard LeaderHintV1 { range, region, leader, term }
//! 0x02 RegionHealth | postcard HealthV1 { origin, generation, seq, regions: [(region, alive, suspect, down)] }
//! 0x03 Rtt          | postcard RttV1 { origin, generation, seq, peers: [(node_id, rtt_us)] }
//! 0x04 Leave        | postcard LeaveV1 { node_id, generation, rejoin }
//! ```
//!
//! An unknown frame kind is dropped and counted; an unknown broadcast kind
//! is ignored (not relayed), so a newer node's new broadcasts do not break
//! an older node.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::identity::GossipId;

/// Frame kind: a foca message.
pub(crate) const FRAME_FOCA: u8 = 0x01;
/// Frame kind: RTT probe.
pub(crate) const FRAME_PING: u8 = 0x02;
/// Frame kind: RTT probe reply.
pub(crate) const FRAME_PONG: u8 = 0x03;

/// Broadcast kind: range-leader hint.
pub(crate) const ITEM_LEADER_HINT: u8 = 0x01;
/// Broadcast kind: region health summary.
pub(crate) const ITEM_REGION_HEALTH: u8 = 0x02;
/// Broadcast kind: measured RTTs.
pub(crate) const ITEM_RTT: u8 = 0x03;
/// Broadcast kind: graceful leave.
pub(crate) const ITEM_LEAVE: u8 = 0x04;

/// Largest encoded broadcast item, in bytes. Reports are truncated to fit,
/// so one item always fits in a packet beside foca's own updates.
pub const MAX_BROADCAST_ITEM_BYTES: usize = 512;
/// Most regions one health summary may carry.
pub const MAX_REGIONS_PER_REPORT: usize = 64;
/// Most peers one RTT report may carry.
pub const MAX_PEERS_PER_REPORT: usize = 128;

/// A decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Foca(&'a [u8]),
    Ping(PingV1),
    Pong(PongV1),
}

/// Why a frame or broadcast item could not be read. The packet was
/// authenticated, so this means a bug or a version skew, never an attack
/// from outside the cluster; it is counted and the item dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Nothing after the kind byte, or no kind byte.
    #[error("empty frame or item")]
    Empty,
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownFrame(u8),
    /// The body does not decode as its kind says.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// What was being decoded.
        kind: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A list longer than its limit.
    #[error("{kind} carries {len} entries, at most {max}")]
    TooLong {
        /// What was being decoded.
        kind: &'static str,
        /// Entries found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Encoding failed (a value too large for its limit).
    #[error("cannot encode {kind}: {reason}")]
    Encode {
        /// What was being encoded.
        kind: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PingV1 {
    pub(crate) seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PongV1 {
    pub(crate) seq: u64,
    pub(crate) responder: GossipId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaderHintV1 {
    pub(crate) range: u64,
    pub(crate) region: String,
    pub(crate) leader: String,
    pub(crate) term: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RegionCountsV1 {
    pub(crate) region: String,
    pub(crate) alive: u32,
    pub(crate) suspect: u32,
    pub(crate) down: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HealthV1 {
    pub(crate) origin: String,
    pub(crate) generation: u64,
    pub(crate) seq: u64,
    pub(crate) regions: Vec<RegionCountsV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RttV1 {
    pub(crate) origin: String,
    pub(crate) generation: u64,
    pub(crate) seq: u64,
    pub(crate) peers: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaveV1 {
    pub(crate) node_id: String,
    pub(crate) generation: u64,
    pub(crate) rejoin: u32,
}

/// A decoded broadcast item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    LeaderHint(LeaderHintV1),
    RegionHealth(HealthV1),
    Rtt(RttV1),
    Leave(LeaveV1),
    /// A kind from a newer build: ignored.
    Unknown(u8),
}

pub(crate) fn encode_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(kind);
    out.extend_from_slice(body);
    out
}

pub(crate) fn encode_tagged<T: Serialize>(
    kind: u8,
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_allocvec(value).map_err(|e| WireError::Encode {
        kind: what,
        reason: e.to_string(),
    })?;
    Ok(encode_frame(kind, &body))
}

pub(crate) fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, WireError> {
    let (&kind, body) = bytes.split_first().ok_or(WireError::Empty)?;
    match kind {
        FRAME_FOCA => Ok(Frame::Foca(body)),
        FRAME_PING => Ok(Frame::Ping(decode_exact(body, "ping")?)),
        FRAME_PONG => Ok(Frame::Pong(decode_exact(body, "pong")?)),
        other => Err(WireError::UnknownFrame(other)),
    }
}

pub(crate) fn decode_item(bytes: &[u8]) -> Result<Item, WireError> {
    let (&kind, body) = bytes.split_first().ok_or(WireError::Empty)?;
    let item = match kind {
        ITEM_LEADER_HINT => Item::LeaderHint(decode_exact(body, "leader hint")?),
        ITEM_REGION_HEALTH => {
            let h: HealthV1 = decode_exact(body, "region health")?;
            check_len("region health", h.regions.len(), MAX_REGIONS_PER_REPORT)?;
            Item::RegionHealth(h)
        }
        ITEM_RTT => {
            let r: RttV1 = decode_exact(body, "rtt report")?;
            check_len("rtt report", r.peers.len(), MAX_PEERS_PER_REPORT)?;
            Item::Rtt(r)
        }
        ITEM_LEAVE => Item::Leave(decode_exact(body, "leave")?),
        other => Item::Unknown(other),
    };
    Ok(item)
}

fn check_len(kind: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooLong { kind, len, max });
    }
    Ok(())
}

/// Decodes `T` and refuses trailing bytes.
fn decode_exact<T: DeserializeOwned>(body: &[u8], kind: &'static str) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| WireError::Malformed {
        kind,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_frozen_bytes() {
        let ping = encode_tagged(FRAME_PING, "ping", &PingV1 { seq: 300 }).unwrap();
        assert_eq!(ping, [0x02, 0xac, 0x02]);
        assert_eq!(
            decode_frame(&ping).unwrap(),
            Frame::Ping(PingV1 { seq: 300 })
        );
        assert_eq!(decode_frame(&[0x01, 9, 9]).unwrap(), Frame::Foca(&[9, 9]));
        assert_eq!(decode_frame(&[0x7f]), Err(WireError::UnknownFrame(0x7f)));
        assert_eq!(decode_frame(&[]), Err(WireError::Empty));
        assert!(
            decode_frame(&[0x02, 0xac, 0x02, 0]).is_err(),
            "trailing byte"
        );
    }

    #[test]
    fn item_frozen_bytes() {
        let hint = LeaderHintV1 {
            range: 7,
            region: "eu".into(),
            leader: "n1".into(),
            term: 3,
        };
        let bytes = encode_tagged(ITEM_LEADER_HINT, "hint", &hint).unwrap();
        assert_eq!(bytes, [0x01, 7, 2, b'e', b'u', 2, b'n', b'1', 3]);
        assert_eq!(decode_item(&bytes).unwrap(), Item::LeaderHint(hint));

        let health = HealthV1 {
            origin: "n1".into(),
            generation: 1,
            seq: 2,
            regions: vec![RegionCountsV1 {
                region: "eu".into(),
                alive: 3,
                suspect: 0,
                down: 1,
            }],
        };
        let bytes = encode_tagged(ITEM_REGION_HEALTH, "health", &health).unwrap();
        assert_eq!(
            bytes,
            [0x02, 2, b'n', b'1', 1, 2, 1, 2, b'e', b'u', 3, 0, 1]
        );
        let rtt = RttV1 {
            origin: "n1".into(),
            generation: 1,
            seq: 2,
            peers: vec![("n2".into(), 1500)],
        };
        let bytes = encode_tagged(ITEM_RTT, "rtt", &rtt).unwrap();
        assert_eq!(
            bytes,
            [0x03, 2, b'n', b'1', 1, 2, 1, 2, b'n', b'2', 0xdc, 0x0b]
        );
        let leave = LeaveV1 {
            node_id: "n1".into(),
            generation: 4,
            rejoin: 1,
        };
        let bytes = encode_tagged(ITEM_LEAVE, "leave", &leave).unwrap();
        assert_eq!(bytes, [0x04, 2, b'n', b'1', 4, 1]);
        assert_eq!(decode_item(&[0x42, 1, 2]).unwrap(), Item::Unknown(0x42));
    }

    #[test]
    fn oversized_lists_are_refused() {
        let rtt = RttV1 {
            origin: "n".into(),
            generation: 0,
            seq: 0,
            peers: (0..=MAX_PEERS_PER_REPORT as u32)
                .map(|i| (String::new(), i))
                .collect(),
        };
        let bytes = encode_tagged(ITEM_RTT, "rtt", &rtt).unwrap();
        assert!(matches!(
            decode_item(&bytes),
            Err(WireError::TooLong { .. })
        ));
    }
}
