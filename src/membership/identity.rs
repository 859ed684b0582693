//! Who a node is: the public [`NodeIdentity`] consumers see, and the wire
//! identity [`GossipId`] that foca gossips.
//!
//! SWIM (Das et al., 2002, §4.2) orders the life of one member by an
//! incarnation number that only the member itself increments. foca keeps
//! that counter (`u16`, reset on identity change); we add two more levels
//! above it, so a node can always come back *as itself* with a higher
//! incarnation:
//!
//! - `generation` — chosen by the process at start (a persisted counter or
//!   the start time); a restarted node uses a higher one.
//! - `rejoin` — bumped by [`foca::Identity::renew`] when the cluster declared
//!   this process Down while it was in fact alive (a false positive), so it
//!   rejoins at once instead of staying out.
//!
//! foca's `Identity::Addr` is the node id: at most one identity per node id
//! is kept, and the one with the higher `(generation, rejoin)` wins.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::MembershipError;

/// Longest node id, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Longest region name, in bytes.
pub const MAX_REGION_BYTES: usize = 32;
/// Longest zone name, in bytes.
pub const MAX_ZONE_BYTES: usize = 32;

/// A node as the rest of Meridian knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// Cluster-unique node id (1..=64 bytes of `[A-Za-z0-9._:-]`).
    pub node_id: String,
    /// Region name (1..=32 bytes, same characters).
    pub region: String,
    /// Zone (failure domain) inside the region (1..=32 bytes, same characters).
    pub zone: String,
    /// QUIC address for peer traffic (Raft, replication, forwarding).
    pub peer_addr: SocketAddr,
    /// QUIC address for clients.
    pub client_addr: SocketAddr,
    /// UDP address other nodes send gossip to. Port 0 means "the address the
    /// gossip socket was bound to" (filled in at start).
    pub gossip_addr: SocketAddr,
    /// Process generation: a restarted node must use a higher value than
    /// its previous run (a persisted counter, or the start time in ms).
    pub generation: u64,
}

impl NodeIdentity {
    /// Checks the naming rules; errors name the field (`identity.node_id` …).
    pub fn validate(&self) -> Result<(), MembershipError> {
        check_name("identity.node_id", &self.node_id, MAX_NODE_ID_BYTES)?;
        check_name("identity.region", &self.region, MAX_REGION_BYTES)?;
        check_name("identity.zone", &self.zone, MAX_ZONE_BYTES)?;
        Ok(())
    }
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), MembershipError> {
    let invalid = |reason: String| MembershipError::InvalidConfig {
        field: field.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty".to_owned()));
    }
    if value.len() > max {
        return Err(invalid(format!(
            "is {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(invalid(format!(
            "contains {c:?}; allowed are ASCII letters, digits and . _ : -"
        )));
    }
    Ok(())
}

/// The identity foca gossips (wire format v1: postcard, field order frozen
/// by `tests::gossip_id_frozen_bytes`). Only appended to, never reordered.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct GossipId {
    pub(crate) node_id: String,
    pub(crate) region: String,
    pub(crate) zone: String,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) client_addr: SocketAddr,
    pub(crate) gossip_addr: SocketAddr,
    pub(crate) generation: u64,
    pub(crate) rejoin: u32,
}

impl GossipId {
    pub(crate) fn new(identity: &NodeIdentity) -> GossipId {
        GossipId {
            node_id: identity.node_id.clone(),
            region: identity.region.clone(),
            zone: identity.zone.clone(),
            peer_addr: identity.peer_addr,
            client_addr: identity.client_addr,
            gossip_addr: identity.gossip_addr,
            generation: identity.generation,
            rejoin: 0,
        }
    }

    pub(crate) fn to_identity(&self) -> NodeIdentity {
        NodeIdentity {
            node_id: self.node_id.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            peer_addr: self.peer_addr,
            client_addr: self.client_addr,
            gossip_addr: self.gossip_addr,
            generation: self.generation,
        }
    }

    /// The part of the incarnation this identity fixes: newer wins.
    pub(crate) fn version(&self) -> (u64, u32) {
        (self.generation, self.rejoin)
    }
}

// Compact, so foca's tracing output stays readable.
impl fmt::Debug for GossipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}.{}", self.node_id, self.generation, self.rejoin)
    }
}

impl foca::Identity for GossipId {
    type Addr = String;

    /// A process the cluster declared Down while alive rejoins at once with
    /// `rejoin + 1`, which wins the conflict with the Down identity.
    fn renew(&self) -> Option<Self> {
        let rejoin = self.rejoin.checked_add(1)?;
        Some(GossipId {
            rejoin,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.node_id.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.version() > adversary.version()
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    pub(crate) fn sample() -> NodeIdentity {
        NodeIdentity {
            node_id: "n1".into(),
            region: "eu".into(),
            zone: "a".into(),
            peer_addr: "10.0.0.1:7000".parse().unwrap(),
            client_addr: "10.0.0.1:7001".parse().unwrap(),
            gossip_addr: "10.0.0.1:7946".parse().unwrap(),
            generation: 5,
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut id = sample();
        assert!(id.validate().is_ok());
        id.region = String::new();
        let err = id.validate().unwrap_err().to_string();
        assert!(err.contains("identity.region"), "{err}");
        let mut id = sample();
        id.node_id = "a b".into();
        assert!(id.validate().unwrap_err().to_string().contains("node_id"));
        let mut id = sample();
        id.zone = "z".repeat(MAX_ZONE_BYTES + 1);
        assert!(id
            .validate()
            .unwrap_err()
            .to_string()
            .contains("identity.zone"));
    }

    #[test]
    fn newer_generation_and_rejoin_win() {
        let old = GossipId::new(&sample());
        let renewed = old.renew().unwrap();
        assert_eq!(renewed.rejoin, 1);
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        let mut restarted = GossipId::new(&sample());
        restarted.generation += 1;
        assert!(restarted.win_addr_conflict(&renewed.renew().unwrap()));
        assert_eq!(old.addr(), restarted.addr());
        assert_eq!(restarted.to_identity().generation, 6);
    }

    /// Wire format v1 of the gossiped identity. Changing these bytes breaks
    /// mixed-version clusters: append fields instead.
    #[test]
    fn gossip_id_frozen_bytes() {
        let id = GossipId::new(&sample());
        let bytes = postcard::to_allocvec(&id).unwrap();
        let expected: &[u8] = &[
            2, b'n', b'1', // node_id
            2, b'e', b'u', // region
            1, b'a', // zone
            0, 10, 0, 0, 1, 0xd8, 0x36, // peer_addr V4 10.0.0.1:7000
            0, 10, 0, 0, 1, 0xd9, 0x36, // client_addr :7001
            0, 10, 0, 0, 1, 0x8a, 0x3e, // gossip_addr :7946
            5,    // generation
            0,    // rejoin
        ];
        assert_eq!(bytes, expected);
        let back: GossipId = postcard::from_bytes(expected).unwrap();
        assert_eq!(back, id);
    }
}
