//! `[raft]`: the node's place in its region's Raft groups.
//!
//! `node_id = 0` (the default) runs a single node: a region of one voter,
//! which bootstraps its own groups (one per range) and leads them. The write
//! path is the same as in a region of three or five (one write path: Raft
//! propose, fsynced log, apply). Any other id makes the node a voter of
//! every range group of its region; `peers` lists every voter (this node
//! included) and must be identical on all of them, as must `range_prefixes`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{check_name, check_range, invalid, parse_addr, ConfigError};
use crate::raft::{RaftNode, RaftTiming, RangeDescriptor};
use crate::types::prefix_end;

/// Most voters a region's groups may have.
pub const MAX_REGION_VOTERS: usize = 7;
/// Most configured range prefixes.
pub const MAX_RANGE_PREFIXES: usize = 64;
/// Largest `raft.direct_read_confirmations`.
pub const MAX_DIRECT_READ_CONFIRMATIONS: usize = 65_536;

/// One voter of the region.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPeer {
    /// Raft node id (1.., unique, never reused for another node).
    pub id: u64,
    /// Node name (its `node.id`).
    pub name: String,
    /// QUIC address others dial: its `server.advertise_addr`, or its
    /// `server.listen_addr` when that is empty.
    pub addr: String,
    /// Zone.
    pub zone: String,
}

/// `[raft]` as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRaft {
    /// This node's Raft id; 0 = a single node (a one-voter region with Raft
    /// id 1; `peers` must then be empty). Default 0.
    pub node_id: u64,
    /// Initialise the groups with `peers` as voters on first start (set on
    /// one node; harmless if the groups already exist). Default false.
    pub bootstrap: bool,
    /// Every voter of the region, this node included (1..=7).
    pub peers: Vec<RawPeer>,
    /// Key prefixes that get a range of their own; the rest of the keyspace
    /// is covered by the ranges between them (0..=64 prefixes). Default none:
    /// one range for the whole keyspace.
    pub range_prefixes: Vec<String>,
    /// Leader heartbeat, ms (10..=60000); must exceed the region's RTT. Default 50.
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout, ms (> heartbeat). Default 250.
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout and leader lease, ms (> min). Default 500.
    pub election_timeout_max_ms: u64,
    /// Snapshot a range after this many log entries (10..=10000000). Default 100000.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot (0..=10000000). Default 5000.
    pub logs_kept_after_snapshot: u64,
    /// Linearizable reads of one range that confirm leadership one by one
    /// while in flight together at its leader; more share confirmations
    /// (0..=65536, 0: always share). Default 64.
    pub direct_read_confirmations: usize,
}

impl Default for RawRaft {
    fn default() -> Self {
        let t = RaftTiming::default();
        RawRaft {
            node_id: 0,
            bootstrap: false,
            peers: Vec::new(),
            range_prefixes: Vec::new(),
            heartbeat_interval_ms: t.heartbeat_interval_ms,
            election_timeout_min_ms: t.election_timeout_min_ms,
            election_timeout_max_ms: t.election_timeout_max_ms,
            snapshot_after_logs: t.snapshot_after_logs,
            logs_kept_after_snapshot: t.logs_kept_after_snapshot,
            direct_read_confirmations: t.direct_read_confirmations,
        }
    }
}

/// A voter, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Raft id.
    pub id: u64,
    /// Membership record.
    pub node: RaftNode,
    /// Parsed address.
    pub addr: SocketAddr,
}

/// Raft id of a single node (`raft.node_id = 0`): the one voter of its groups.
pub const SINGLE_NODE_RAFT_ID: u64 = 1;

/// Who this node is, as the rest of the config names it: a single node is
/// the one voter of its region and needs no `[raft]` peers list.
#[derive(Clone, Debug)]
pub struct SelfNode<'a> {
    /// `node.id`.
    pub name: &'a str,
    /// `node.region`.
    pub region: &'a str,
    /// `node.zone`.
    pub zone: &'a str,
    /// The address others dial: `server.advertise_addr`, else
    /// `server.listen_addr` (whose port 0 is replaced by the bound port at
    /// start, see [`RaftConfig::advertised_at`]).
    pub addr: SocketAddr,
}

/// `[raft]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's Raft id (non-zero).
    pub node_id: u64,
    /// A single node (`raft.node_id = 0`): the one voter of its groups,
    /// bootstrapped at every start (idempotent). Its address follows the
    /// bound QUIC port.
    pub single: bool,
    /// Whether to initialise the groups.
    pub bootstrap: bool,
    /// Every voter.
    pub peers: Vec<Peer>,
    /// The ranges, covering the keyspace without gaps, in key order.
    pub ranges: Vec<RangeDescriptor>,
    /// Timing.
    pub timing: RaftTiming,
}

impl RawRaft {
    /// Validates. `node_id = 0` gives a single node: a one-voter region of
    /// `me` that bootstraps itself.
    pub fn validate(&self, me: &SelfNode<'_>) -> Result<RaftConfig, ConfigError> {
        let timing = self.validate_timing()?;
        let ranges = ranges_from_prefixes(&self.range_prefixes)?;
        if self.node_id == 0 {
            if !self.peers.is_empty() {
                return Err(invalid(
                    "raft.peers",
                    "needs raft.node_id (non-zero); a single node (node_id = 0) lists no peers",
                    self.peers.len(),
                ));
            }
            return Ok(RaftConfig::single(me, ranges, timing));
        }
        let peers = self.validate_peers(me.region)?;
        Ok(RaftConfig {
            node_id: self.node_id,
            single: false,
            bootstrap: self.bootstrap,
            peers,
            ranges,
            timing,
        })
    }

    fn validate_peers(&self, region: &str) -> Result<Vec<Peer>, ConfigError> {
        if self.peers.is_empty() || self.peers.len() > MAX_REGION_VOTERS {
            let rule = format!("must list 1..={MAX_REGION_VOTERS} voters, this node included");
            return Err(invalid("raft.peers", rule, self.peers.len()));
        }
        let mut ids = BTreeSet::new();
        let mut out = Vec::new();
        for p in &self.peers {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(invalid(
                    "raft.peers.id",
                    "must be non-zero and unique",
                    p.id,
                ));
            }
            check_name("raft.peers.name", &p.name)?;
            let addr = parse_addr("raft.peers.addr", &p.addr)?;
            let zone = if p.zone.is_empty() {
                "zone1".to_string()
            } else {
                p.zone.clone()
            };
            check_name("raft.peers.zone", &zone)?;
            let node = RaftNode {
                name: p.name.clone(),
                addr: addr.to_string(),
                region: region.to_string(),
                zone,
            };
            out.push(Peer {
                id: p.id,
                node,
                addr,
            });
        }
        if !ids.contains(&self.node_id) {
            return Err(invalid(
                "raft.node_id",
                "must be one of raft.peers' ids",
                self.node_id,
            ));
        }
        Ok(out)
    }

    fn validate_timing(&self) -> Result<RaftTiming, ConfigError> {
        let (hb, min, max) = validate_election_timing(
            [
                "raft.heartbeat_interval_ms",
                "raft.election_timeout_min_ms",
                "raft.election_timeout_max_ms",
            ],
            self.heartbeat_interval_ms,
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
        )?;
        let snap = check_range(
            "raft.snapshot_after_logs",
            self.snapshot_after_logs,
            10,
            10_000_000,
        )?;
        let keep = check_range(
            "raft.logs_kept_after_snapshot",
            self.logs_kept_after_snapshot,
            0,
            10_000_000,
        )?;
        let direct = check_range(
            "raft.direct_read_confirmations",
            self.direct_read_confirmations,
            0,
            MAX_DIRECT_READ_CONFIRMATIONS,
        )?;
        Ok(RaftTiming {
            heartbeat_interval_ms: hb,
            election_timeout_min_ms: min,
            election_timeout_max_ms: max,
            snapshot_after_logs: snap,
            logs_kept_after_snapshot: keep,
            direct_read_confirmations: direct,
        })
    }
}

/// Checks a heartbeat (10..=60000 ms) and an election timeout window
/// above it (max at most 600000 ms); `names` are the three fields' names
/// for the error. Returns (heartbeat, min, max).
pub(crate) fn validate_election_timing(
    names: [&'static str; 3],
    hb: u64,
    min: u64,
    max: u64,
) -> Result<(u64, u64, u64), ConfigError> {
    let hb = check_range(names[0], hb, 10, 60_000)?;
    if min <= hb {
        return Err(invalid(names[1], "must exceed the heartbeat interval", min));
    }
    if max <= min || max > 600_000 {
        let rule = "must exceed the minimum election timeout and be at most 600000";
        return Err(invalid(names[2], rule, max));
    }
    Ok((hb, min, max))
}

impl RaftConfig {
    /// A single node: the one voter of every range group, bootstrapped by
    /// itself.
    pub fn single(me: &SelfNode<'_>, ranges: Vec<RangeDescriptor>, timing: RaftTiming) -> Self {
        let node = RaftNode {
            name: me.name.to_string(),
            addr: me.addr.to_string(),
            region: me.region.to_string(),
            zone: me.zone.to_string(),
        };
        RaftConfig {
            node_id: SINGLE_NODE_RAFT_ID,
            single: true,
            bootstrap: true,
            peers: vec![Peer {
                id: SINGLE_NODE_RAFT_ID,
                node,
                addr: me.addr,
            }],
            ranges,
            timing,
        }
    }

    /// Records the QUIC address a single node advertises, known only once
    /// it is bound: `server.advertise_addr`, or the bound listen address
    /// (whose configured port may be 0). A region's peers keep their
    /// configured addresses.
    pub fn advertised_at(mut self, addr: SocketAddr) -> Self {
        if self.single {
            for p in &mut self.peers {
                p.addr = addr;
                p.node.addr = addr.to_string();
            }
        }
        self
    }
}

/// Cuts the keyspace at every prefix and at the end of every prefix, so each
/// prefix is exactly one range and the gaps between them are ranges too.
/// Range ids are 1.. in key order.
pub fn ranges_from_prefixes(prefixes: &[String]) -> Result<Vec<RangeDescriptor>, ConfigError> {
    if prefixes.len() > MAX_RANGE_PREFIXES {
        let rule = format!("at most {MAX_RANGE_PREFIXES} prefixes");
        return Err(invalid("raft.range_prefixes", rule, prefixes.len()));
    }
    let mut cuts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for p in prefixes {
        if p.is_empty() {
            return Err(invalid(
                "raft.range_prefixes",
                "prefixes must be non-empty",
                "\"\"",
            ));
        }
        let p = p.as_bytes().to_vec();
        if let Some(end) = prefix_end(&p) {
            cuts.insert(end);
        }
        cuts.insert(p);
    }
    // A prefix nested in another (e.g. "a/" and "a/b/") would cut the outer
    // prefix's range in two: refuse rather than surprise.
    for a in prefixes {
        if let Some(b) = prefixes
            .iter()
            .find(|b| *b != a && b.starts_with(a.as_str()))
        {
            let rule = format!("prefixes must not nest (`{b}` is inside `{a}`)");
            return Err(invalid("raft.range_prefixes", rule, a));
        }
    }
    cuts.remove(&Vec::new());
    let mut ranges = Vec::new();
    let mut start = Vec::new();
    for cut in cuts {
        ranges.push((start, Some(cut.clone())));
        start = cut;
    }
    ranges.push((start, None));
    Ok(ranges
        .into_iter()
        .zip(1u64..)
        .map(|((start, end), id)| RangeDescriptor { id, start, end })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_contiguous_ranges() {
        let r = ranges_from_prefixes(&["locks/".into(), "config/".into()]).unwrap();
        let spans: Vec<(&[u8], Option<&[u8]>)> = r
            .iter()
            .map(|d| (d.start.as_slice(), d.end.as_deref()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (&b""[..], Some(&b"config/"[..])),
                (b"config/", Some(b"config0")),
                (b"config0", Some(b"locks/")),
                (b"locks/", Some(b"locks0")),
                (b"locks0", None),
            ]
        );
        assert_eq!(
            r.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let whole = ranges_from_prefixes(&[]).unwrap();
        assert_eq!(whole.len(), 1);
        assert!(whole[0].contains(b"anything"));
    }

    #[test]
    fn nested_and_empty_prefixes_are_refused() {
        assert!(ranges_from_prefixes(&["a/".into(), "a/b/".into()]).is_err());
        assert!(ranges_from_prefixes(&["".into()]).is_err());
    }

    #[test]
    fn peers_and_timing_are_checked() {
        let peer = |id: u64| RawPeer {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            zone: String::new(),
        };
        let mut raw = RawRaft {
            node_id: 1,
            peers: vec![peer(1), peer(2), peer(3)],
            ..RawRaft::default()
        };
        let cfg = raw.validate(&me()).unwrap();
        assert_eq!(cfg.peers.len(), 3);
        assert_eq!(cfg.peers[0].node.region, "eu");
        raw.node_id = 9;
        assert!(raw
            .validate(&me())
            .unwrap_err()
            .to_string()
            .contains("raft.node_id"));
        raw.node_id = 1;
        raw.peers.push(peer(2));
        assert!(raw
            .validate(&me())
            .unwrap_err()
            .to_string()
            .contains("raft.peers.id"));
        raw.peers.pop();
        raw.election_timeout_min_ms = 50;
        assert!(raw
            .validate(&me())
            .unwrap_err()
            .to_string()
            .contains("election_timeout_min_ms"));
        raw.node_id = 0;
        raw.election_timeout_min_ms = RawRaft::default().election_timeout_min_ms;
        assert!(
            raw.validate(&me())
                .unwrap_err()
                .to_string()
                .contains("raft.peers"),
            "a single node lists no peers"
        );
        raw.peers.clear();
        let single = raw.validate(&me()).unwrap();
        assert!(single.single && single.bootstrap);
        assert_eq!(single.node_id, SINGLE_NODE_RAFT_ID);
        assert_eq!(single.peers.len(), 1);
        assert_eq!(single.peers[0].node.name, "n1");
        let bound: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let single = single.advertised_at(bound);
        assert_eq!(single.peers[0].addr, bound);
        assert_eq!(single.peers[0].node.addr, "127.0.0.1:4242");
    }

    #[test]
    fn direct_read_confirmations_default_to_64_and_are_bounded() {
        let mut raw = RawRaft::default();
        let cfg = raw.validate(&me()).unwrap();
        assert_eq!(cfg.timing.direct_read_confirmations, 64);
        raw.direct_read_confirmations = 0;
        assert_eq!(
            raw.validate(&me())
                .unwrap()
                .timing
                .direct_read_confirmations,
            0,
            "0 (always share) is allowed"
        );
        raw.direct_read_confirmations = MAX_DIRECT_READ_CONFIRMATIONS + 1;
        let err = raw.validate(&me()).unwrap_err().to_string();
        assert!(
            err.contains("raft.direct_read_confirmations") && err.contains("65536"),
            "{err}"
        );
    }

    fn me() -> SelfNode<'static> {
        SelfNode {
            name: "n1",
            region: "eu",
            zone: "zone1",
            addr: "127.0.0.1:0".parse().unwrap(),
        }
    }
}
