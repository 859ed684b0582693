//! The WAN emulator's config for a multi-region `meridian dev`: the
//! topology's `[[links]]` and `[wan]` as the emulator reads them, with
//! `--port-offset` applied, checked to front every node port the nodes
//! advertise.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use meridian_chaos::control::DEFAULT_CONTROL_ADDR;
use meridian_chaos::{Protocol, WanConfig};

use super::topology::RegionPlan;

/// The emulator's config for the topology `text` laid out as `plan`.
///
/// Every port (fronts, upstreams, the control API) moves by `offset`, like
/// the nodes' ports. The control API is always on, at `[wan] control_addr`
/// or 127.0.0.1:7390 (plus the offset), so `meridian wan` can reach it.
pub fn emulator_config(text: &str, plan: &[RegionPlan], offset: u16) -> anyhow::Result<WanConfig> {
    let mut config = WanConfig::from_toml(text).context("the topology's [[links]] and [wan]")?;
    let shift = |a: SocketAddr| -> anyhow::Result<SocketAddr> {
        let port = a
            .port()
            .checked_add(offset)
            .with_context(|| format!("--port-offset {offset} pushes {a} past port 65535"))?;
        Ok(SocketAddr::new(a.ip(), port))
    };
    for l in &mut config.listeners {
        l.listen = shift(l.listen)?;
        l.upstream = shift(l.upstream)?;
    }
    let default_control: SocketAddr = DEFAULT_CONTROL_ADDR
        .parse()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 7390)));
    config.control_addr = Some(shift(config.control_addr.unwrap_or(default_control))?);
    check_fronts(&config, plan)?;
    Ok(config)
}

/// Every node's QUIC and gossip traffic must cross the emulator: a node
/// advertising a front nobody listens on would be unreachable, and one
/// whose front forwards elsewhere would be someone else.
fn check_fronts(config: &WanConfig, plan: &[RegionPlan]) -> anyhow::Result<()> {
    for region in plan {
        for n in &region.nodes {
            let wanted = [
                ("quic", n.quic_advertised(), n.quic_bind()),
                ("gossip", n.gossip_advertised(), n.gossip_bind()),
            ];
            for (what, front, real) in wanted {
                let found = config.listeners.iter().any(|l| {
                    l.protocol == Protocol::Udp
                        && l.listen == front
                        && l.upstream == real
                        && l.region == region.name
                });
                if !found {
                    bail!(
                        "[wan]: node {} advertises its {what} port at {front}, but no UDP front \
                         forwards {front} to {real} in region {} (keep [wan] plan = \"loopback\")",
                        n.name,
                        region.name
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::topology::{load_topology, plan};
    use super::*;

    #[test]
    fn the_emulator_fronts_every_node_with_the_offset_applied() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/wan-3.toml");
        let (topo, text) = load_topology(Some(&path)).unwrap();
        let layout = plan(&topo, 1000).unwrap();
        let cfg = emulator_config(&text, &layout, 1000).unwrap();
        assert_eq!(cfg.control_addr, Some("127.0.0.1:8390".parse().unwrap()));
        let quic = cfg
            .listeners
            .iter()
            .find(|l| l.name == "eu-west/eu-west-2/quic")
            .unwrap();
        assert_eq!(quic.listen, "127.1.2.2:8481".parse().unwrap());
        assert_eq!(quic.upstream, "127.0.2.2:8481".parse().unwrap());
        // Without fronts (plan "none") the nodes would be unreachable.
        let none = text.replace("[wan]\n", "[wan]\nplan = \"none\"\n");
        let err = emulator_config(&none, &layout, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("us-east-1"), "{err}");
    }
}
