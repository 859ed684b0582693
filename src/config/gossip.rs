//! `[gossip]`: membership over SWIM gossip (see docs/membership.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{check_range, invalid, parse_addr, parse_advertise_addr, ConfigError};
use crate::membership::GossipTimers;

/// Most seeds a node may list.
pub const MAX_CONFIG_SEEDS: usize = 16;

/// `[gossip]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGossip {
    /// UDP address for gossip; empty (the default) disables membership.
    /// The node binds it and sends every gossip datagram from it.
    pub listen_addr: String,
    /// The UDP address other nodes send gossip to, as `IP:port`: the
    /// `gossip_addr` of this node's identity. Empty (the default): the
    /// bound `listen_addr`. Set it when gossip reaches the node through a
    /// proxy or NAT (the WAN emulator's fronts in `meridian dev`), or when
    /// `listen_addr` is unspecified (`0.0.0.0`, `[::]`). A specific IP and
    /// a port in 1..=65535.
    pub advertise_addr: String,
    /// Gossip addresses of nodes to join through; one live node is enough.
    /// Empty on the first node of a cluster.
    pub seeds: Vec<String>,
    /// The 32-byte cluster key file (created by `meridian certs init`).
    /// Default `meridian-data/certs/cluster.key`.
    pub cluster_key: PathBuf,
    /// Worst round trip between any two nodes of the cluster, in ms
    /// (1..=5000); probe and suspicion timers are derived from it. Default 300.
    pub max_rtt_ms: u64,
}

/// `[gossip]`, validated.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Bind address.
    pub listen_addr: SocketAddr,
    /// The address other nodes send gossip to; `None` = the bound listen
    /// address.
    pub advertise_addr: Option<SocketAddr>,
    /// Seeds.
    pub seeds: Vec<SocketAddr>,
    /// Cluster key path.
    pub cluster_key: PathBuf,
    /// Timers.
    pub timers: GossipTimers,
}

impl RawGossip {
    /// Validates; `None` when gossip is off.
    pub fn validate(&self, base: &Path) -> Result<Option<GossipConfig>, ConfigError> {
        if self.listen_addr.trim().is_empty() {
            return Ok(None);
        }
        let listen_addr = parse_addr("gossip.listen_addr", &self.listen_addr)?;
        let advertise_addr = match self.advertise_addr.trim() {
            "" if listen_addr.ip().is_unspecified() => {
                return Err(invalid(
                    "gossip.advertise_addr",
                    "is required when gossip.listen_addr is unspecified (other nodes \
                     send gossip to the advertised address)",
                    "\"\"",
                ))
            }
            "" => None,
            a => Some(parse_advertise_addr("gossip.advertise_addr", a)?),
        };
        if self.seeds.len() > MAX_CONFIG_SEEDS {
            return Err(invalid(
                "gossip.seeds",
                format!("at most {MAX_CONFIG_SEEDS} seeds"),
                self.seeds.len(),
            ));
        }
        let seeds = self
            .seeds
            .iter()
            .map(|s| parse_addr("gossip.seeds", s))
            .collect::<Result<Vec<_>, _>>()?;
        let rtt = if self.max_rtt_ms == 0 {
            300
        } else {
            self.max_rtt_ms
        };
        let rtt = check_range("gossip.max_rtt_ms", rtt, 1, 5_000)?;
        let key = if self.cluster_key.as_os_str().is_empty() {
            PathBuf::from("meridian-data/certs/cluster.key")
        } else {
            self.cluster_key.clone()
        };
        let cluster_key = if key.is_absolute() {
            key
        } else {
            base.join(key)
        };
        Ok(Some(GossipConfig {
            listen_addr,
            advertise_addr,
            seeds,
            cluster_key,
            timers: GossipTimers::for_max_rtt(Duration::from_millis(rtt)),
        }))
    }
}
