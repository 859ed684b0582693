//! Configuration in two stages: the topology file as written ([`RawFile`],
//! serde, defaults) → [`WanConfig`] (typed, parsed addresses), and
//! [`WanConfig`] → the resolved form the emulator runs (region ids, the
//! link table, the source map), whose errors name the field.
//!
//! The file format lives beside the `[[regions]]` tables of
//! `regions/*.toml`; fields this crate does not know are ignored there (a
//! region's `range_prefixes`, a node's `zone`, the top-level `max_rtt_ms`),
//! and `[[links]]` ignores unknown fields too so other tools may extend it.
//! `[wan]` belongs to the emulator alone and refuses unknown fields, so a
//! typo is an error rather than a silent default.
//!
//! ```toml
//! [[regions]]
//! name = "us-east"
//! [[regions.nodes]]
//! name = "node1"
//! quic_port = 7379      # UDP, proxied (loopback plan)
//! gossip_port = 7385    # UDP, proxied
//! http_port = 7380      # TCP, proxied
//!
//! [[links]]
//! regions = ["us-east", "eu-west"]
//! rtt_ms = 70           # round trip; each direction gets half
//! jitter_ms = 2         # per-packet uniform jitter on each one-way delay
//! loss = 0.001          # per-datagram drop probability, each direction
//!
//! [wan]
//! control_addr = "127.0.0.1:7390"
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::addr::{parse_cidr, LoopbackPlan, SourceMap, SourceRule};
use crate::error::ConfigError;
use crate::limits::*;
use crate::link::LinkParams;
use crate::table::{LinkTable, RegionId};

/// The topology file as written. Unknown fields are ignored (see the
/// module docs).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawFile {
    /// `[[regions]]`: every region, in order (the order numbers them in
    /// the loopback plan).
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    /// `[[links]]`: one per pair of different regions, and optionally a
    /// region's own (a region with itself).
    #[serde(default)]
    pub links: Vec<RawLink>,
    /// `[wan]`: emulator settings.
    #[serde(default)]
    pub wan: RawWan,
}

/// A `[[regions]]` table (only the fields the emulator reads).
#[derive(Clone, Debug, Deserialize)]
pub struct RawRegion {
    /// Region name.
    pub name: String,
    /// `[[regions.nodes]]`, in order.
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

/// A `[[regions.nodes]]` table (only the fields the emulator reads).
#[derive(Clone, Debug, Deserialize)]
pub struct RawNode {
    /// Node name.
    pub name: String,
    /// The node's ports; each one present gets a front listener under the
    /// loopback plan.
    #[serde(flatten)]
    pub ports: NodePorts,
}

/// A node's ports (the same on its own address and on its front).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NodePorts {
    /// QUIC (UDP): clients and peers.
    pub quic_port: Option<u16>,
    /// Gossip (UDP).
    pub gossip_port: Option<u16>,
    /// HTTP gateway (TCP).
    pub http_port: Option<u16>,
}

/// A `[[links]]` table: a region pair and what the link between them does.
#[derive(Clone, Debug, Deserialize)]
pub struct RawLink {
    /// The two regions (the same name twice: that region's own traffic).
    pub regions: Vec<String>,
    /// Round trip, ms (required).
    pub rtt_ms: u64,
    /// Jitter, ms; default 0.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Loss per datagram per direction, 0.0..=1.0; default 0.
    #[serde(default)]
    pub loss: f64,
}

/// `[wan]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWan {
    /// Control API address (loopback TCP); empty: no control API.
    pub control_addr: String,
    /// Region of senders no source rule matches; empty (the default):
    /// such traffic is unclassified (no delay, never cut).
    pub default_region: String,
    /// Seed of loss and jitter draws; absent: random.
    pub seed: Option<u64>,
    /// `"loopback"` (the default): every node port in `[[regions]]` gets a
    /// front listener and every region a source rule, per
    /// [`LoopbackPlan`]. `"none"`: only `[[wan.listeners]]` and
    /// `[[wan.sources]]`.
    pub plan: String,
    /// The IP upstream sockets bind (UDP flows, TCP connections to the real
    /// nodes); default 127.0.0.1.
    pub upstream_bind_ip: String,
    /// Datagrams one directed link may hold; default
    /// [`DEFAULT_LINK_QUEUE_PACKETS`], 1..=[`MAX_LINK_QUEUE_PACKETS`].
    pub link_queue_packets: Option<usize>,
    /// Bytes one directed link may hold; default
    /// [`DEFAULT_LINK_QUEUE_BYTES`], 65 535..=[`MAX_LINK_QUEUE_BYTES`].
    pub link_queue_bytes: Option<usize>,
    /// UDP flows per listener; default [`DEFAULT_MAX_FLOWS_PER_LISTENER`],
    /// 1..=[`MAX_FLOWS_PER_LISTENER`].
    pub max_flows_per_listener: Option<usize>,
    /// Idle time that closes a UDP flow, ms; default
    /// [`DEFAULT_FLOW_IDLE_MS`], [`MIN_FLOW_IDLE_MS`]..=[`MAX_FLOW_IDLE_MS`].
    pub flow_idle_ms: Option<u64>,
    /// Open TCP connections per listener; default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_LISTENER`],
    /// 1..=[`MAX_CONNECTIONS_PER_LISTENER`].
    pub max_connections_per_listener: Option<usize>,
    /// Extra source rules.
    pub sources: Vec<RawSource>,
    /// Extra listeners.
    pub listeners: Vec<RawListener>,
}

/// A `[[wan.sources]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `a.b.c.d/len` or a single `a.b.c.d`.
    pub cidr: String,
    /// Region of senders in it.
    pub region: String,
}

/// A `[[wan.listeners]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name (shown in status).
    pub name: String,
    /// `"udp"` or `"tcp"`.
    pub protocol: Protocol,
    /// Front address to listen on.
    pub listen: String,
    /// Real address to forward to.
    pub upstream: String,
    /// Region of the upstream (the destination).
    pub region: String,
    /// Fixed region of every sender; absent: classify by source address.
    #[serde(default)]
    pub source_region: Option<String>,
}

/// Transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Datagrams, proxied per flow (QUIC, gossip).
    Udp,
    /// A byte stream, proxied per connection.
    Tcp,
}

/// A link of a [`WanConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    /// One region.
    pub a: String,
    /// The other (or the same: its own traffic).
    pub b: String,
    /// What the link does, both directions.
    pub params: LinkParams,
}

/// A source rule of a [`WanConfig`]: senders in `net/prefix_len` are in
/// `region`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    /// Network.
    pub net: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// Region name.
    pub region: String,
}

/// One front address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Unique name (status, logs).
    pub name: String,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Front address (port 0: any free port; see
    /// [`crate::Emulator::listener_addr`]).
    pub listen: SocketAddr,
    /// Real address forwarded to.
    pub upstream: SocketAddr,
    /// Region of the upstream.
    pub region: String,
    /// Fixed sender region; `None`: by the sender's source IP.
    pub source_region: Option<String>,
}

/// Bounds of a running emulator (see [`crate::limits`] for each default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WanLimits {
    /// Datagrams per directed link queue.
    pub link_queue_packets: usize,
    /// Bytes per directed link queue.
    pub link_queue_bytes: usize,
    /// UDP flows per listener.
    pub max_flows_per_listener: usize,
    /// Idle time that closes a UDP flow.
    pub flow_idle: Duration,
    /// TCP connections per listener.
    pub max_connections_per_listener: usize,
}

impl Default for WanLimits {
    fn default() -> Self {
        WanLimits {
            link_queue_packets: DEFAULT_LINK_QUEUE_PACKETS,
            link_queue_bytes: DEFAULT_LINK_QUEUE_BYTES,
            max_flows_per_listener: DEFAULT_MAX_FLOWS_PER_LISTENER,
            flow_idle: Duration::from_millis(DEFAULT_FLOW_IDLE_MS),
            max_connections_per_listener: DEFAULT_MAX_CONNECTIONS_PER_LISTENER,
        }
    }
}

/// What the emulator runs: regions, links, how senders are classified,
/// the listeners, control and bounds. Build it from a file
/// ([`WanConfig::from_file`]) or in code ([`WanConfig::new`] and the
/// `pub` fields); [`crate::Emulator::start`] checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct WanConfig {
    /// Region names, in order.
    pub regions: Vec<String>,
    /// Links; every pair of different regions needs one.
    pub links: Vec<LinkSpec>,
    /// Source rules (longest prefix wins).
    pub sources: Vec<SourceSpec>,
    /// Region of senders no rule matches; `None`: unclassified.
    pub default_region: Option<String>,
    /// Front addresses.
    pub listeners: Vec<ListenerSpec>,
    /// Control API address; `None`: none.
    pub control_addr: Option<SocketAddr>,
    /// Seed of loss and jitter draws; `None`: random.
    pub seed: Option<u64>,
    /// IP upstream sockets bind.
    pub upstream_bind_ip: IpAddr,
    /// Bounds.
    pub limits: WanLimits,
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ConfigError::invalid(
            field,
            format!("must be within {min}..={max}, got {v}"),
        ));
    }
    Ok(v)
}

fn addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|e| ConfigError::invalid(field, format!("{s:?} is not an ip:port address: {e}")))
}

impl WanConfig {
    /// Regions with no links, listeners or source rules yet, and default
    /// bounds.
    pub fn new<S: Into<String>>(regions: impl IntoIterator<Item = S>) -> WanConfig {
        WanConfig {
            regions: regions.into_iter().map(Into::into).collect(),
            links: Vec::new(),
            sources: Vec::new(),
            default_region: None,
            listeners: Vec::new(),
            control_addr: None,
            seed: None,
            upstream_bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            limits: WanLimits::default(),
        }
    }

    /// Adds a link (builder style).
    pub fn link(mut self, a: &str, b: &str, params: LinkParams) -> WanConfig {
        self.links.push(LinkSpec {
            a: a.into(),
            b: b.into(),
            params,
        });
        self
    }

    /// Reads a topology file.
    pub fn from_file(path: &Path) -> Result<WanConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        WanConfig::from_toml(&text)
    }

    /// Parses a topology file's text.
    pub fn from_toml(text: &str) -> Result<WanConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        raw.validate()
    }

    /// Adds region `region_index`'s node `node_index` under the loopback
    /// plan: a UDP front for its QUIC and gossip ports and a TCP front for
    /// its HTTP port, each `127.1.i.j:port` → `127.0.i.j:port`, classified
    /// by source address. Names are `region/node/quic|gossip|http`.
    pub fn add_loopback_node(
        &mut self,
        region_index: usize,
        node_index: usize,
        node: &str,
        ports: NodePorts,
    ) -> Result<(), ConfigError> {
        let field = format!("regions[{region_index}].nodes[{node_index}]");
        let region = self
            .regions
            .get(region_index)
            .cloned()
            .ok_or_else(|| ConfigError::invalid(&field, "no such region"))?;
        let (Some(real), Some(front)) = (
            LoopbackPlan::node_ip(region_index, node_index),
            LoopbackPlan::front_ip(region_index, node_index),
        ) else {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "the loopback plan numbers at most {MAX_NODES_PER_REGION} regions and nodes"
                ),
            ));
        };
        let kinds = [
            ("quic", Protocol::Udp, ports.quic_port),
            ("gossip", Protocol::Udp, ports.gossip_port),
            ("http", Protocol::Tcp, ports.http_port),
        ];
        for (kind, protocol, port) in kinds {
            let Some(port) = port else { continue };
            self.listeners.push(ListenerSpec {
                name: format!("{region}/{node}/{kind}"),
                protocol,
                listen: SocketAddr::from((front, port)),
                upstream: SocketAddr::from((real, port)),
                region: region.clone(),
                source_region: None,
            });
        }
        Ok(())
    }

    /// Adds a source rule `127.0.{i+1}.0/24` → region `i` for every region
    /// (the loopback plan's node addresses).
    pub fn add_loopback_sources(&mut self) {
        for (i, region) in self.regions.iter().enumerate() {
            if let Some((net, prefix_len)) = LoopbackPlan::region_net(i) {
                self.sources.push(SourceSpec {
                    net,
                    prefix_len,
                    region: region.clone(),
                });
            }
        }
    }
}

impl RawFile {
    /// Stage one: parses addresses and applies defaults and ranges.
    pub fn validate(&self) -> Result<WanConfig, ConfigError> {
        let mut cfg = WanConfig::new(self.regions.iter().map(|r| r.name.clone()));
        for (i, l) in self.links.iter().enumerate() {
            let [a, b] = l.regions.as_slice() else {
                return Err(ConfigError::invalid(
                    format!("links[{i}].regions"),
                    format!("needs exactly two region names, got {}", l.regions.len()),
                ));
            };
            let params = LinkParams {
                rtt_ms: l.rtt_ms,
                jitter_ms: l.jitter_ms,
                loss: l.loss,
            };
            params
                .validate()
                .map_err(|e| ConfigError::invalid(format!("links[{i}]"), e))?;
            cfg = cfg.link(a, b, params);
        }
        self.wan.apply(&mut cfg)?;
        match self.wan.plan.as_str() {
            "" | "loopback" => {
                cfg.add_loopback_sources();
                for (ri, region) in self.regions.iter().enumerate() {
                    for (ni, node) in region.nodes.iter().enumerate() {
                        cfg.add_loopback_node(ri, ni, &node.name, node.ports)?;
                    }
                }
            }
            "none" => {}
            other => {
                return Err(ConfigError::invalid(
                    "wan.plan",
                    format!("must be \"loopback\" or \"none\", got {other:?}"),
                ))
            }
        }
        Ok(cfg)
    }
}

impl RawWan {
    fn apply(&self, cfg: &mut WanConfig) -> Result<(), ConfigError> {
        if !self.control_addr.trim().is_empty() {
            cfg.control_addr = Some(addr("wan.control_addr", &self.control_addr)?);
        }
        if !self.default_region.trim().is_empty() {
            cfg.default_region = Some(self.default_region.trim().to_string());
        }
        cfg.seed = self.seed;
        if !self.upstream_bind_ip.trim().is_empty() {
            cfg.upstream_bind_ip = self.upstream_bind_ip.trim().parse().map_err(|e| {
                ConfigError::invalid(
                    "wan.upstream_bind_ip",
                    format!("{:?} is not an IP address: {e}", self.upstream_bind_ip),
                )
            })?;
        }
        cfg.limits = WanLimits {
            link_queue_packets: range(
                "wan.link_queue_packets",
                self.link_queue_packets,
                DEFAULT_LINK_QUEUE_PACKETS,
                1,
                MAX_LINK_QUEUE_PACKETS,
            )?,
            link_queue_bytes: range(
                "wan.link_queue_bytes",
                self.link_queue_bytes,
                DEFAULT_LINK_QUEUE_BYTES,
                MAX_DATAGRAM_BYTES,
                MAX_LINK_QUEUE_BYTES,
            )?,
            max_flows_per_listener: range(
                "wan.max_flows_per_listener",
                self.max_flows_per_listener,
                DEFAULT_MAX_FLOWS_PER_LISTENER,
                1,
                MAX_FLOWS_PER_LISTENER,
            )?,
            flow_idle: Duration::from_millis(range(
                "wan.flow_idle_ms",
                self.flow_idle_ms,
                DEFAULT_FLOW_IDLE_MS,
                MIN_FLOW_IDLE_MS,
                MAX_FLOW_IDLE_MS,
            )?),
            max_connections_per_listener: range(
                "wan.max_connections_per_listener",
                self.max_connections_per_listener,
                DEFAULT_MAX_CONNECTIONS_PER_LISTENER,
                1,
                MAX_CONNECTIONS_PER_LISTENER,
            )?,
        };
        for (i, s) in self.sources.iter().enumerate() {
            let (net, prefix_len) = parse_cidr(&s.cidr)
                .map_err(|e| ConfigError::invalid(format!("wan.sources[{i}].cidr"), e))?;
            cfg.sources.push(SourceSpec {
                net,
                prefix_len,
                region: s.region.clone(),
            });
        }
        for (i, l) in self.listeners.iter().enumerate() {
            cfg.listeners.push(ListenerSpec {
                name: l.name.clone(),
                protocol: l.protocol,
                listen: addr(&format!("wan.listeners[{i}].listen"), &l.listen)?,
                upstream: addr(&format!("wan.listeners[{i}].upstream"), &l.upstream)?,
                region: l.region.clone(),
                source_region: l.source_region.clone(),
            });
        }
        Ok(())
    }
}

/// How a listener classifies its senders, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Classify {
    /// By source IP through the emulator's [`SourceMap`].
    ByAddress,
    /// Every sender is in this region.
    Fixed(RegionId),
}

/// A listener with its regions resolved.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedListener {
    pub(crate) spec: ListenerSpec,
    pub(crate) region: RegionId,
    pub(crate) classify: Classify,
}

/// Stage two: what the emulator runs.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) table: LinkTable,
    pub(crate) sources: SourceMap,
    pub(crate) listeners: Vec<ResolvedListener>,
}

impl WanConfig {
    /// Stage two: resolves region names and checks that every pair of
    /// regions has a link, names are unique and bounds hold.
    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut table = LinkTable::new(self.regions.clone())
            .map_err(|e| ConfigError::invalid("regions", e.to_string()))?;
        let region = |field: String, name: &str| {
            table_region(&table, name).map_err(|reason| ConfigError::invalid(field, reason))
        };
        let n = self.regions.len();
        let mut seen = vec![false; n * n];
        for (i, l) in self.links.iter().enumerate() {
            let (a, b) = (
                region(format!("links[{i}].regions"), &l.a)?,
                region(format!("links[{i}].regions"), &l.b)?,
            );
            if std::mem::replace(&mut seen[a.index() * n + b.index()], true) {
                return Err(ConfigError::invalid(
                    format!("links[{i}]"),
                    format!("a second link between {} and {}", l.a, l.b),
                ));
            }
            seen[b.index() * n + a.index()] = true;
        }
        for (i, a) in self.regions.iter().enumerate() {
            for (j, b) in self.regions.iter().enumerate().skip(i + 1) {
                if !seen[i * n + j] {
                    return Err(ConfigError::invalid(
                        "links",
                        format!("no link between {a} and {b}; every pair of regions needs one"),
                    ));
                }
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            table
                .set_link(&l.a, &l.b, l.params)
                .map_err(|e| ConfigError::invalid(format!("links[{i}]"), e.to_string()))?;
        }
        let sources = self.resolve_sources(&table)?;
        let listeners = self.resolve_listeners(&table)?;
        Ok(Resolved {
            table,
            sources,
            listeners,
        })
    }

    fn resolve_sources(&self, table: &LinkTable) -> Result<SourceMap, ConfigError> {
        if self.sources.len() > MAX_SOURCE_RULES {
            return Err(ConfigError::invalid(
                "wan.sources",
                format!(
                    "at most {MAX_SOURCE_RULES} rules, got {}",
                    self.sources.len()
                ),
            ));
        }
        let mut rules = Vec::with_capacity(self.sources.len());
        for (i, s) in self.sources.iter().enumerate() {
            let field = format!("wan.sources[{i}]");
            if s.prefix_len > 32 {
                return Err(ConfigError::invalid(field, "a prefix length is at most 32"));
            }
            rules.push(SourceRule {
                net: s.net,
                prefix_len: s.prefix_len,
                region: table_region(table, &s.region)
                    .map_err(|r| ConfigError::invalid(format!("{field}.region"), r))?,
            });
        }
        let default = match &self.default_region {
            Some(name) => Some(
                table_region(table, name)
                    .map_err(|r| ConfigError::invalid("wan.default_region", r))?,
            ),
            None => None,
        };
        Ok(SourceMap::new(rules, default))
    }

    fn resolve_listeners(&self, table: &LinkTable) -> Result<Vec<ResolvedListener>, ConfigError> {
        if self.listeners.len() > MAX_LISTENERS {
            return Err(ConfigError::invalid(
                "listeners",
                format!("at most {MAX_LISTENERS}, got {}", self.listeners.len()),
            ));
        }
        let mut out: Vec<ResolvedListener> = Vec::with_capacity(self.listeners.len());
        for (i, l) in self.listeners.iter().enumerate() {
            let field = format!("listeners[{i}] ({})", l.name);
            if l.name.is_empty() || out.iter().any(|o| o.spec.name == l.name) {
                return Err(ConfigError::invalid(
                    field,
                    "names must be unique and non-empty",
                ));
            }
            let clash = out.iter().any(|o| {
                o.spec.protocol == l.protocol && o.spec.listen == l.listen && l.listen.port() != 0
            });
            if clash || l.listen == l.upstream {
                return Err(ConfigError::invalid(
                    format!("{field}.listen"),
                    format!(
                        "{} is already a listener's address or its own upstream",
                        l.listen
                    ),
                ));
            }
            let region = table_region(table, &l.region)
                .map_err(|r| ConfigError::invalid(format!("{field}.region"), r))?;
            let classify = match &l.source_region {
                None => Classify::ByAddress,
                Some(s) => Classify::Fixed(
                    table_region(table, s)
                        .map_err(|r| ConfigError::invalid(format!("{field}.source_region"), r))?,
                ),
            };
            out.push(ResolvedListener {
                spec: l.clone(),
                region,
                classify,
            });
        }
        Ok(out)
    }
}

fn table_region(table: &LinkTable, name: &str) -> Result<RegionId, String> {
    table.region(name).map_err(|_| {
        format!(
            "unknown region {name:?} (regions: {})",
            table.names().join(", ")
        )
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
