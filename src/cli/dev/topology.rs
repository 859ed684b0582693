//! A topology file (`regions/*.toml`) and where `meridian dev` puts each of
//! its nodes.
//!
//! Two layouts, picked by the topology:
//!
//! - **Local** (one region, no `[[links]]`, e.g. `regions/local-3.toml`):
//!   every node binds and advertises 127.0.0.1 on its own ports, as a
//!   region on one machine always has.
//! - **WAN** (several regions, or any `[[links]]`, e.g.
//!   `regions/wan-3.toml`): the WAN emulator's loopback plan
//!   (chaos/README.md). Node `j` of region `i` binds `127.0.i.j` and
//!   advertises its front `127.1.i.j`, where the emulator forwards after
//!   the link's delay; a client in region `i` binds `127.0.i.200`.
//!
//! Ports are the topology's plus `--port-offset`, the same on a node's own
//! address and on its front.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context};
use meridian_chaos::addr::LoopbackPlan;
use serde::Deserialize;

/// The default topology, embedded so `meridian dev` works from anywhere.
const DEFAULT_TOPOLOGY: &str = include_str!("../../../regions/wan-3.toml");
/// Most nodes a development topology may start, over all its regions (each
/// is a process; a 2-core machine runs nine comfortably).
pub(super) const MAX_DEV_NODES: usize = 15;
/// Last octet of the address a client in region `i` binds (`127.0.i.200`):
/// inside the region's source network `127.0.i.0/24`, far above any node
/// number the plan can give (at most [`MAX_DEV_NODES`]).
pub(super) const CLIENT_HOST_OCTET: u8 = 200;

/// A topology file (`regions/*.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Worst round trip between any two nodes, ms (sizes the gossip timers).
    #[serde(default = "default_rtt")]
    pub max_rtt_ms: u64,
    /// Regions, in order (the order numbers them in the WAN layout).
    pub regions: Vec<TopologyRegion>,
    /// Round trips between regions (`[[links]]`, also read by the WAN
    /// emulator, chaos/README.md). Checked here; the emulator applies them.
    #[serde(default)]
    pub links: Vec<TopologyLink>,
    /// The WAN emulator's own settings (`[wan]`, chaos/README.md); the
    /// emulator validates them, nodes never read them.
    #[serde(default, rename = "wan")]
    _wan: Option<serde::de::IgnoredAny>,
    /// Prefix policies (`[replication]` without `regions`: a topology of
    /// several regions replicates between all of them).
    #[serde(default)]
    pub replication: crate::config::replication::RawReplication,
}

/// The WAN between two regions (`[[links]]`): what `meridian dev` reads of
/// it (the regions, for the check below, and the round trip, for the demo).
/// The emulator owns the link's full format and bounds (`jitter_ms`,
/// `loss`, ...) and validates it before any node starts.
#[derive(Debug, Deserialize)]
pub struct TopologyLink {
    /// The two regions (the same one twice: that region's own traffic).
    pub regions: [String; 2],
    /// Round trip, ms.
    pub rtt_ms: u64,
}

fn default_rtt() -> u64 {
    300
}

/// A region of a topology.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyRegion {
    /// Region name.
    pub name: String,
    /// Prefixes that get a range of their own.
    #[serde(default)]
    pub range_prefixes: Vec<String>,
    /// Nodes (3 or 5 for a fault-tolerant region).
    pub nodes: Vec<TopologyNode>,
}

/// A node of a topology.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyNode {
    /// Node name, unique in the whole topology (it names the node in
    /// gossip and its certificate).
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Loopback QUIC port.
    pub quic_port: u16,
    /// Loopback HTTP port.
    pub http_port: u16,
    /// Loopback UDP port for gossip.
    pub gossip_port: u16,
}

impl Topology {
    /// Whether the nodes run behind the WAN emulator: several regions, or
    /// links to emulate.
    pub fn is_wan(&self) -> bool {
        self.regions.len() > 1 || !self.links.is_empty()
    }

    /// The round trip configured between two regions, if a link names them.
    pub fn rtt_ms(&self, a: &str, b: &str) -> Option<u64> {
        self.links
            .iter()
            .find(|l| {
                (l.regions[0] == a && l.regions[1] == b) || (l.regions[0] == b && l.regions[1] == a)
            })
            .map(|l| l.rtt_ms)
    }
}

/// Reads and checks a topology (`None`: the embedded local-3); returns it
/// with its text (the WAN emulator reads `[[links]]` and `[wan]` from it).
pub fn load_topology(path: Option<&Path>) -> anyhow::Result<(Topology, String)> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading topology {}", p.display()))?,
        None => DEFAULT_TOPOLOGY.to_string(),
    };
    let topo: Topology = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .context("parsing the topology")?;
    check_regions(&topo)?;
    check_links(&topo)?;
    Ok((topo, text))
}

/// Region and node names unique (a node name is its gossip identity and
/// its certificate's name, across every region), node counts in bounds.
fn check_regions(topo: &Topology) -> anyhow::Result<()> {
    if topo.regions.is_empty() {
        bail!("the topology has no region")
    }
    let mut regions = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for r in &topo.regions {
        if !regions.insert(r.name.as_str()) {
            bail!("regions: `{}` is named twice", r.name);
        }
        if r.nodes.is_empty() {
            bail!("regions `{}`: a region needs at least one node", r.name);
        }
        for n in &r.nodes {
            if !nodes.insert(n.name.as_str()) {
                bail!(
                    "regions `{}`: node name `{}` is used twice; node names must be unique \
                     across all regions (they name the node in gossip and its certificate)",
                    r.name,
                    n.name
                );
            }
        }
    }
    if nodes.len() > MAX_DEV_NODES {
        bail!(
            "a development topology runs at most {MAX_DEV_NODES} nodes, this one has {}",
            nodes.len()
        );
    }
    Ok(())
}

fn check_links(topo: &Topology) -> anyhow::Result<()> {
    for link in &topo.links {
        for r in &link.regions {
            if !topo.regions.iter().any(|t| &t.name == r) {
                bail!("links: region `{r}` is not one of the topology's regions");
            }
        }
        // Each link's rtt, jitter and loss bounds are the emulator's own:
        // `wan::emulator_config` (WanConfig::from_toml) checks them before
        // any node starts.
    }
    Ok(())
}

/// Where one node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// Node name (unique in the topology).
    pub name: String,
    /// Zone.
    pub zone: String,
    /// The IP the node binds: its sockets listen there and its packets
    /// leave from there.
    pub bind_ip: IpAddr,
    /// The IP the node advertises and everyone dials (its front in the WAN
    /// layout, `bind_ip` in the local one).
    pub advertise_ip: IpAddr,
    /// QUIC port, offset applied.
    pub quic_port: u16,
    /// HTTP gateway port, offset applied.
    pub http_port: u16,
    /// Gossip port, offset applied.
    pub gossip_port: u16,
}

impl NodePlan {
    /// QUIC address the node binds.
    pub fn quic_bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind_ip, self.quic_port)
    }

    /// QUIC address the node advertises (what clients and peers dial).
    pub fn quic_advertised(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_ip, self.quic_port)
    }

    /// HTTP address the gateway binds.
    pub fn http_bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind_ip, self.http_port)
    }

    /// HTTP address to reach the gateway at (through the emulator in the
    /// WAN layout).
    pub fn http_advertised(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_ip, self.http_port)
    }

    /// Gossip address the node binds.
    pub fn gossip_bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind_ip, self.gossip_port)
    }

    /// Gossip address the node advertises.
    pub fn gossip_advertised(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_ip, self.gossip_port)
    }

    /// Whether it advertises another address than it binds.
    pub fn is_fronted(&self) -> bool {
        self.bind_ip != self.advertise_ip
    }
}

/// Where one region's nodes and clients run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionPlan {
    /// Region name.
    pub name: String,
    /// Its range prefixes.
    pub range_prefixes: Vec<String>,
    /// Its nodes, in topology order (Raft ids 1.. in this order).
    pub nodes: Vec<NodePlan>,
    /// The address a client in this region binds, so the emulator counts it
    /// in the region (WAN layout only).
    pub client_ip: Option<IpAddr>,
}

impl RegionPlan {
    /// Every node's advertised QUIC address.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(NodePlan::quic_advertised).collect()
    }
}

/// The layout of every region `meridian dev` starts.
pub fn plan(topo: &Topology, offset: u16) -> anyhow::Result<Vec<RegionPlan>> {
    if !topo.replication.regions.is_empty() {
        bail!(
            "[replication] regions: leave it out of a topology; its regions are the topology's [[regions]]"
        );
    }
    if let Some(first) = topo.regions.first() {
        if let Some(r) = topo
            .regions
            .iter()
            .find(|r| r.range_prefixes != first.range_prefixes)
        {
            bail!(
                "region `{}` has range_prefixes {:?} but `{}` has {:?}: regions replicate range by range, so every region must cut the keyspace the same way",
                r.name,
                r.range_prefixes,
                first.name,
                first.range_prefixes
            );
        }
    }
    let port = |p: u16| {
        p.checked_add(offset)
            .with_context(|| format!("--port-offset {offset} pushes port {p} past 65535"))
    };
    let wan = topo.is_wan();
    let mut out = Vec::new();
    for (i, region) in topo.regions.iter().enumerate() {
        let mut nodes = Vec::new();
        for (j, n) in region.nodes.iter().enumerate() {
            let (bind_ip, advertise_ip) = if wan {
                let (Some(real), Some(front)) =
                    (LoopbackPlan::node_ip(i, j), LoopbackPlan::front_ip(i, j))
                else {
                    bail!(
                        "region `{}` node `{}`: beyond the loopback plan",
                        region.name,
                        n.name
                    );
                };
                (IpAddr::V4(real), IpAddr::V4(front))
            } else {
                (
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                )
            };
            nodes.push(NodePlan {
                name: n.name.clone(),
                zone: n.zone.clone(),
                bind_ip,
                advertise_ip,
                quic_port: port(n.quic_port)?,
                http_port: port(n.http_port)?,
                gossip_port: port(n.gossip_port)?,
            });
        }
        let client_ip = match LoopbackPlan::region_net(i) {
            Some((net, _)) if wan => {
                let [a, b, c, _] = net.octets();
                Some(IpAddr::V4(Ipv4Addr::new(a, b, c, CLIENT_HOST_OCTET)))
            }
            _ => None,
        };
        out.push(RegionPlan {
            name: region.name.clone(),
            range_prefixes: region.range_prefixes.clone(),
            nodes,
            client_ip,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wan3() -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/wan-3.toml");
        load_topology(Some(&path)).unwrap().0
    }

    fn local3() -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/local-3.toml");
        load_topology(Some(&path)).unwrap().0
    }

    #[test]
    fn the_shipped_topologies_parse() {
        let one = local3();
        assert_eq!(one.regions.len(), 1);
        assert!(!one.is_wan());
        let (default, _) = load_topology(None).unwrap();
        assert_eq!(default.regions.len(), 3, "the default is three regions");
        assert!(default.is_wan());
        let three = wan3();
        assert!(three.is_wan());
        let names: Vec<&str> = three.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["us-east", "eu-west", "ap-south"]);
        assert_eq!(three.rtt_ms("us-east", "eu-west"), Some(70));
        assert_eq!(three.rtt_ms("ap-south", "eu-west"), Some(140));
        assert_eq!(three.rtt_ms("us-east", "ap-south"), Some(200));
        assert_eq!(three.rtt_ms("us-east", "us-east"), None);
    }

    #[test]
    fn the_local_layout_is_loopback_and_the_wan_layout_follows_the_emulators_plan() {
        let local = plan(&local3(), 10).unwrap();
        assert_eq!(local.len(), 1);
        let n = &local[0].nodes[0];
        assert_eq!(n.quic_bind().to_string(), "127.0.0.1:7389");
        assert_eq!(n.quic_advertised(), n.quic_bind());
        assert!(!n.is_fronted());
        assert_eq!(local[0].client_ip, None);

        let wan = plan(&wan3(), 100).unwrap();
        assert_eq!(wan.len(), 3);
        let eu2 = &wan[1].nodes[1];
        assert_eq!(eu2.name, "eu-west-2");
        assert_eq!(eu2.quic_bind().to_string(), "127.0.2.2:7581");
        assert_eq!(eu2.quic_advertised().to_string(), "127.1.2.2:7581");
        assert_eq!(eu2.gossip_bind().to_string(), "127.0.2.2:7586");
        assert_eq!(eu2.gossip_advertised().to_string(), "127.1.2.2:7586");
        assert_eq!(eu2.http_advertised().to_string(), "127.1.2.2:7582");
        assert_eq!(wan[1].client_ip, Some("127.0.2.200".parse().unwrap()));
        assert_eq!(wan[2].endpoints()[2].to_string(), "127.1.3.3:7683");
        let err = plan(&wan3(), 65_000).unwrap_err().to_string();
        assert!(err.contains("--port-offset"), "{err}");
    }

    fn load(text: &str) -> anyhow::Result<Topology> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        load_topology(Some(&path)).map(|(t, _)| t)
    }

    const NODE: &str = "zone = \"z\"\nquic_port = 1\nhttp_port = 2\ngossip_port = 3\n";

    #[test]
    fn a_link_to_an_unknown_region_is_refused() {
        let err = load(&format!(
            "[[regions]]\nname = \"a\"\n[[regions.nodes]]\nname = \"n\"\n{NODE}\
             [[links]]\nregions = [\"a\", \"mars\"]\nrtt_ms = 5\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("mars"), "{err}");
    }

    #[test]
    fn node_names_must_be_unique_across_regions() {
        let err = load(&format!(
            "[[regions]]\nname = \"a\"\n[[regions.nodes]]\nname = \"node1\"\n{NODE}\
             [[regions]]\nname = \"b\"\n[[regions.nodes]]\nname = \"node1\"\n{NODE}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`node1` is used twice"), "{err}");
        let err = load(&format!(
            "[[regions]]\nname = \"a\"\n[[regions.nodes]]\nname = \"n1\"\n{NODE}\
             [[regions]]\nname = \"a\"\n[[regions.nodes]]\nname = \"n2\"\n{NODE}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`a` is named twice"), "{err}");
    }

    #[test]
    fn regions_must_cut_the_keyspace_alike_and_name_no_regions_of_their_own() {
        let two = |a: &str, b: &str, extra: &str| {
            load(&format!(
                "{extra}[[regions]]\nname = \"a\"\nrange_prefixes = [{a}]\n[[regions.nodes]]\nname = \"n1\"\n{NODE}\
                 [[regions]]\nname = \"b\"\nrange_prefixes = [{b}]\n[[regions.nodes]]\nname = \"n2\"\n{NODE}"
            ))
            .unwrap()
        };
        let err = plan(&two("\"x/\"", "\"y/\"", ""), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut the keyspace the same way"), "{err}");
        assert!(plan(&two("\"x/\"", "\"x/\"", ""), 0).is_ok());
        let err = plan(&two("", "", "[replication]\nregions = [\"a\", \"b\"]\n"), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("leave it out of a topology"), "{err}");
    }
}
