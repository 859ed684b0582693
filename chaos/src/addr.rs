//! Addressing: which region a packet comes from, and the loopback address
//! plan that makes that knowable.
//!
//! A node's address must be the same for every viewer (gossip advertises
//! one address per node; Raft and replication learn addresses from config
//! and gossip), yet the delay depends on the sender's region. So the
//! emulator listens on one *front* address per destination node and tells
//! the sender's region from the packet's *source IP*: every node binds its
//! own loopback IP, numbered by region (see [`LoopbackPlan`]), and a
//! [`SourceMap`] turns the IP back into the region. On Linux every address
//! in 127.0.0.0/8 is local without configuration, and a socket bound to
//! 127.0.2.1 sends with that source address (checked by
//! `tests/emulator/addressing.rs`); an unbound socket sends from 127.0.0.1.
//!
//! Software that cannot choose its source address (etcd dialing from
//! 127.0.0.1) gets listeners with a fixed source region instead: one front
//! address per (source region, destination) pair, e.g.
//! [`LoopbackPlan::fixed_source_front`].

use std::net::{IpAddr, Ipv4Addr};

use crate::table::RegionId;

/// The loopback address plan for a topology with up to 250 regions of up
/// to 250 nodes. Region `i` and node `j` are 0-based positions in the
/// topology; octets are 1-based so no address ends in `.0`.
///
/// | what | address |
/// |---|---|
/// | node (i, j) binds (its real sockets) | `127.0.{i+1}.{j+1}` |
/// | node (i, j)'s front, what everyone dials and it advertises | `127.1.{i+1}.{j+1}` |
/// | node (i, j)'s front for senders pinned to region k | `127.{k+2}.{i+1}.{j+1}` |
///
/// Ports stay the node's own. Senders are classified by
/// `127.0.{i+1}.0/24` → region `i`; 127.0.0.1 (a CLI, a test, a process
/// that did not bind) matches no region.
#[derive(Clone, Copy, Debug)]
pub struct LoopbackPlan;

impl LoopbackPlan {
    /// Second octet of the addresses nodes bind.
    pub const NODE_OCTET: u8 = 0;
    /// Second octet of the front addresses.
    pub const FRONT_OCTET: u8 = 1;
    /// Second octet of the first fixed-source front range (region 0's).
    pub const FIXED_SOURCE_FIRST_OCTET: u8 = 2;

    fn octet(index: usize) -> Option<u8> {
        u8::try_from(index + 1).ok().filter(|&o| o <= 250)
    }

    /// The IP node `node` of region `region` binds. `None` beyond 250.
    pub fn node_ip(region: usize, node: usize) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(
            127,
            Self::NODE_OCTET,
            Self::octet(region)?,
            Self::octet(node)?,
        ))
    }

    /// The front IP of node `node` of region `region`: what other nodes
    /// dial and what the node advertises. `None` beyond 250.
    pub fn front_ip(region: usize, node: usize) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(
            127,
            Self::FRONT_OCTET,
            Self::octet(region)?,
            Self::octet(node)?,
        ))
    }

    /// The front IP of node (`region`, `node`) for senders that cannot
    /// bind an address, pinned to region `source`. `None` beyond the plan.
    pub fn fixed_source_front(source: usize, region: usize, node: usize) -> Option<Ipv4Addr> {
        let second = u8::try_from(source)
            .ok()?
            .checked_add(Self::FIXED_SOURCE_FIRST_OCTET)?;
        Some(Ipv4Addr::new(
            127,
            second,
            Self::octet(region)?,
            Self::octet(node)?,
        ))
    }

    /// The network of region `region`'s node addresses, `127.0.{i+1}.0/24`.
    pub fn region_net(region: usize) -> Option<(Ipv4Addr, u8)> {
        Some((
            Ipv4Addr::new(127, Self::NODE_OCTET, Self::octet(region)?, 0),
            24,
        ))
    }
}

/// Senders whose source IP is within `net/prefix_len` are in `region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRule {
    /// Network address.
    pub net: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// The region.
    pub region: RegionId,
}

impl SourceRule {
    fn mask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    fn matches(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(ip) & mask == u32::from(self.net) & mask
    }
}

/// Parses `a.b.c.d/len` or a bare `a.b.c.d` (a /32).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u8>().map_err(|e| format!("{s:?}: {e}"))?),
        None => (s, 32),
    };
    let ip: Ipv4Addr = ip
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv4 address or network: {e}"))?;
    if len > 32 {
        return Err(format!("{s:?}: a prefix length is at most 32"));
    }
    Ok((ip, len))
}

/// Source IP → region: the longest matching rule wins; no match gives the
/// default region, or `None` (unclassified: no delay, never cut).
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    rules: Vec<SourceRule>,
    default: Option<RegionId>,
}

impl SourceMap {
    /// A map from rules (at most [`crate::limits::MAX_SOURCE_RULES`],
    /// checked by the config) and a default.
    pub fn new(mut rules: Vec<SourceRule>, default: Option<RegionId>) -> SourceMap {
        // Longest prefix first, so the first match is the best.
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix_len));
        SourceMap { rules, default }
    }

    /// The region of a sender at `ip`.
    pub fn classify(&self, ip: IpAddr) -> Option<RegionId> {
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        v4.and_then(|ip| self.rules.iter().find(|r| r.matches(ip)))
            .map(|r| r.region)
            .or(self.default)
    }

    /// The rules, longest prefix first.
    pub fn rules(&self) -> &[SourceRule] {
        &self.rules
    }

    /// The region of senders no rule matches.
    pub fn default_region(&self) -> Option<RegionId> {
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plan_numbers_regions_and_nodes_from_one() {
        assert_eq!(
            LoopbackPlan::node_ip(0, 0),
            Some(Ipv4Addr::new(127, 0, 1, 1))
        );
        assert_eq!(
            LoopbackPlan::front_ip(2, 1),
            Some(Ipv4Addr::new(127, 1, 3, 2))
        );
        assert_eq!(
            LoopbackPlan::fixed_source_front(1, 0, 2),
            Some(Ipv4Addr::new(127, 3, 1, 3))
        );
        assert_eq!(
            LoopbackPlan::region_net(1),
            Some((Ipv4Addr::new(127, 0, 2, 0), 24))
        );
        assert_eq!(LoopbackPlan::node_ip(250, 0), None);
        assert_eq!(LoopbackPlan::front_ip(0, 250), None);
        assert!(LoopbackPlan::node_ip(249, 249).is_some());
    }

    #[test]
    fn the_plans_ranges_do_not_overlap() {
        // A front address never classifies as a node's source.
        let map = SourceMap::new(
            (0..3)
                .map(|i| {
                    let (net, prefix_len) = LoopbackPlan::region_net(i).unwrap();
                    SourceRule {
                        net,
                        prefix_len,
                        region: RegionId(i as u16),
                    }
                })
                .collect(),
            None,
        );
        for r in 0..3 {
            for n in 0..3 {
                let node = LoopbackPlan::node_ip(r, n).unwrap();
                assert_eq!(map.classify(node.into()), Some(RegionId(r as u16)));
                let front = LoopbackPlan::front_ip(r, n).unwrap();
                assert_eq!(map.classify(front.into()), None);
            }
        }
        assert_eq!(map.classify(ip("127.0.0.1")), None);
    }

    #[test]
    fn longest_prefix_wins_then_default() {
        let rules = vec![
            SourceRule {
                net: Ipv4Addr::new(127, 0, 0, 0),
                prefix_len: 16,
                region: RegionId(0),
            },
            SourceRule {
                net: Ipv4Addr::new(127, 0, 2, 7),
                prefix_len: 32,
                region: RegionId(2),
            },
            SourceRule {
                net: Ipv4Addr::new(127, 0, 2, 0),
                prefix_len: 24,
                region: RegionId(1),
            },
        ];
        let map = SourceMap::new(rules, Some(RegionId(3)));
        assert_eq!(map.classify(ip("127.0.2.7")), Some(RegionId(2)));
        assert_eq!(map.classify(ip("127.0.2.8")), Some(RegionId(1)));
        assert_eq!(map.classify(ip("127.0.9.1")), Some(RegionId(0)));
        assert_eq!(map.classify(ip("10.0.0.1")), Some(RegionId(3)));
        assert_eq!(map.classify(ip("::ffff:127.0.2.7")), Some(RegionId(2)));
        assert_eq!(map.classify(ip("::1")), Some(RegionId(3)));
    }

    #[test]
    fn zero_prefix_matches_everything() {
        let map = SourceMap::new(
            vec![SourceRule {
                net: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                region: RegionId(1),
            }],
            None,
        );
        assert_eq!(map.classify(ip("192.0.2.1")), Some(RegionId(1)));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("127.0.1.0/24"),
            Ok((Ipv4Addr::new(127, 0, 1, 0), 24))
        );
        assert_eq!(
            parse_cidr("127.0.1.5"),
            Ok((Ipv4Addr::new(127, 0, 1, 5), 32))
        );
        assert!(parse_cidr("127.0.1.0/33").is_err());
        assert!(parse_cidr("localhost").is_err());
        assert!(parse_cidr("127.0.1.0/x").is_err());
    }
}
