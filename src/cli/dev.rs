//! `meridian dev`: a local cluster on loopback from a topology file.
//!
//! Every node of the topology runs as its own `meridian serve` child process
//! with a config written under `--dir` (certificates, node configs, data,
//! logs and an `env` file for a second shell). A short demo runs against the
//! cluster; then it serves until Ctrl-C or SIGTERM, and stops every node
//! (SIGTERM, then SIGKILL after a bounded wait).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::certs::{self, Role};
use crate::client::{Client, ClientConfig};
use crate::transport::TlsFiles;

/// The default topology, embedded so `meridian dev` works from anywhere.
const DEFAULT_TOPOLOGY: &str = include_str!("../../regions/local-3.toml");
/// How long the cluster may take to elect leaders and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node gets to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes a development topology may start.
const MAX_DEV_NODES: usize = 15;

/// A topology file (`regions/*.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Worst round trip between any two nodes, ms (sizes the gossip timers).
    #[serde(default = "default_rtt")]
    pub max_rtt_ms: u64,
    /// Regions; `meridian dev` runs the first (multi-region comes with replication).
    pub regions: Vec<TopologyRegion>,
    /// Round trips between regions (`[[links]]`, also read by the WAN
    /// emulator, chaos/README.md). Checked here; the emulator applies them.
    #[serde(default)]
    pub links: Vec<TopologyLink>,
    /// The WAN emulator's own settings (`[wan]`, chaos/README.md); the
    /// emulator validates them, nodes never read them.
    #[serde(default, rename = "wan")]
    _wan: Option<serde::de::IgnoredAny>,
}

/// The WAN between two regions (`[[links]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyLink {
    /// The two regions (the same one twice: that region's own traffic).
    pub regions: [String; 2],
    /// Round trip, ms.
    pub rtt_ms: u64,
    /// Jitter, ms (default 0).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Loss per datagram per direction, 0.0..=1.0 (default 0).
    #[serde(default)]
    pub loss: f64,
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
    /// Node name.
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

/// `meridian dev` arguments.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Topology file (default: the embedded regions/local-3.toml, one region of three nodes).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Directory for certificates, node configs, data, logs and the env file.
    #[arg(long, default_value = "meridian-dev")]
    pub dir: PathBuf,
    /// Shift every port of the topology by this much (to run beside another cluster).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Run the demo and stop instead of serving until Ctrl-C.
    #[arg(long)]
    pub demo_only: bool,
}

fn load_topology(path: Option<&Path>) -> anyhow::Result<Topology> {
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
    let Some(region) = topo.regions.first() else {
        bail!("the topology has no region")
    };
    for link in &topo.links {
        for r in &link.regions {
            if !topo.regions.iter().any(|t| &t.name == r) {
                bail!("links: region `{r}` is not one of the topology's regions");
            }
        }
        // The emulator's own bounds (chaos/README.md), checked here too so a
        // bad link is refused before any node starts.
        if link.rtt_ms > 10_000 || link.jitter_ms > 5_000 || !(0.0..=1.0).contains(&link.loss) {
            bail!(
                "links {:?}: rtt_ms must be 0..=10000, jitter_ms 0..=5000 and loss 0.0..=1.0",
                link.regions
            );
        }
    }
    if region.nodes.is_empty() || region.nodes.len() > MAX_DEV_NODES {
        bail!(
            "a region needs 1..={MAX_DEV_NODES} nodes, the topology has {}",
            region.nodes.len()
        );
    }
    Ok(topo)
}

/// A running child node; killed on drop so no node outlives `meridian dev`.
struct ChildNode {
    name: String,
    quic: String,
    child: Child,
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_node_config(
    dir: &Path,
    topo: &Topology,
    idx: usize,
    offset: u16,
) -> anyhow::Result<PathBuf> {
    let region = &topo.regions[0];
    let node = &region.nodes[idx];
    let port = |p: u16| p.checked_add(offset).context("port offset overflows");
    let mut text = format!(
        "[node]\nid = \"{}\"\nregion = \"{}\"\nzone = \"{}\"\ndata_dir = \"{}\"\n\n\
         [server]\nlisten_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n\n\
         [tls]\nca_cert = \"certs/ca.pem\"\ncert = \"certs/{}.pem\"\nkey = \"certs/{}.key\"\n\n\
         [log]\nlevel = \"warn\"\n\n[raft]\nnode_id = {}\nbootstrap = {}\nrange_prefixes = [{}]\n",
        node.name,
        region.name,
        node.zone,
        node.name,
        port(node.quic_port)?,
        port(node.http_port)?,
        node.name,
        node.name,
        idx + 1,
        idx == 0,
        region
            .range_prefixes
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let seeds = region
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != idx)
        .map(|(_, n)| port(n.gossip_port).map(|p| format!("\"127.0.0.1:{p}\"")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    text.push_str(&format!(
        "\n[gossip]\nlisten_addr = \"127.0.0.1:{}\"\nseeds = [{}]\ncluster_key = \"certs/cluster.key\"\nmax_rtt_ms = {}\n",
        port(node.gossip_port)?,
        seeds.join(", "),
        topo.max_rtt_ms,
    ));
    for (i, peer) in region.nodes.iter().enumerate() {
        text.push_str(&format!(
            "\n[[raft.peers]]\nid = {}\nname = \"{}\"\naddr = \"127.0.0.1:{}\"\nzone = \"{}\"\n",
            i + 1,
            peer.name,
            port(peer.quic_port)?,
            peer.zone
        ));
    }
    let path = dir.join(format!("{}.toml", node.name));
    std::fs::write(&path, text)?;
    // Validate now, so a bad topology fails here with the field named.
    crate::config::load_and_validate(Some(&path))?;
    Ok(path)
}

fn ensure_certs(dir: &Path, region: &TopologyRegion) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !dir.join("ca.pem").exists() {
        certs::init_ca(dir, false)?;
    }
    let key = dir.join(super::CLUSTER_KEY_FILE);
    if !key.exists() {
        crate::membership::generate_cluster_key(&key, false)?;
    }
    let mut wanted: Vec<(Role, &str)> = region
        .nodes
        .iter()
        .map(|n| (Role::Node, n.name.as_str()))
        .collect();
    wanted.push((Role::Client, "client"));
    wanted.push((Role::Admin, "admin"));
    for (role, name) in wanted {
        if !dir.join(format!("{name}.pem")).exists() {
            certs::issue(dir, role, name, dir, &[])?;
        }
    }
    Ok(())
}

fn spawn_node(dir: &Path, name: &str, config: &Path, quic: String) -> anyhow::Result<ChildNode> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .current_dir(dir)
        .arg("serve")
        .arg("--config")
        .arg(config.file_name().context("config path has no file name")?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting a node")?;
    Ok(ChildNode {
        name: name.to_string(),
        quic,
        child,
    })
}

/// Runs `meridian dev`.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let topo = load_topology(args.topology.as_deref())?;
    let region = &topo.regions[0];
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let certs_dir = dir.join("certs");
    ensure_certs(&certs_dir, region)?;
    let mut nodes = Vec::new();
    for (i, n) in region.nodes.iter().enumerate() {
        let cfg = write_node_config(&dir, &topo, i, args.port_offset)?;
        let quic = format!("127.0.0.1:{}", n.quic_port + args.port_offset);
        nodes.push(spawn_node(&dir, &n.name, &cfg, quic)?);
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.quic.clone()).collect();
    let env_file = dir.join("env");
    std::fs::write(
        &env_file,
        format!(
            "export MERIDIAN_ENDPOINTS={}\nexport MERIDIAN_CA={}\nexport MERIDIAN_CERT={}\nexport MERIDIAN_KEY={}\n",
            endpoints.join(","),
            certs_dir.join("ca.pem").display(),
            certs_dir.join("client.pem").display(),
            certs_dir.join("client.key").display(),
        ),
    )?;
    for n in &nodes {
        println!(
            "meridian dev: {} (region {}) pid {} quic {}",
            n.name,
            region.name,
            n.child.id(),
            n.quic
        );
    }
    println!("meridian dev: logs and configs in {}", dir.display());
    println!(
        "meridian dev: in another shell: source {} && meridian kv get demo/greeting",
        env_file.display()
    );
    let tls = TlsFiles {
        ca: certs_dir.join("ca.pem"),
        cert: certs_dir.join("client.pem"),
        key: certs_dir.join("client.key"),
    };
    let result = async {
        let client = wait_ready(&endpoints, &tls, &mut nodes).await?;
        super::dev_demo(&client).await?;
        client.close().await;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &result {
        eprintln!("meridian dev: {e:#}");
    } else if !args.demo_only {
        println!("meridian dev: serving until Ctrl-C");
        crate::server::wait_for_signal().await;
    }
    stop_all(nodes).await;
    result
}

/// Polls (bounded) until a write through the cluster succeeds, which needs
/// every range to have a leader; fails early if a node exits.
async fn wait_ready(
    endpoints: &[String],
    tls: &TlsFiles,
    nodes: &mut [ChildNode],
) -> anyhow::Result<Client> {
    let eps = crate::client::parse_endpoints(&endpoints.join(","))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "{} exited with {status} during start-up; see its log",
                    n.name
                );
            }
        }
        let cfg = ClientConfig {
            endpoints: eps.clone(),
            tls: tls.clone(),
            request_timeout: Duration::from_secs(3),
            bind: None,
        };
        let attempt = async {
            let c = Client::connect(cfg).await?;
            c.put("demo/ready", "yes").await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("the cluster did not become ready: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// SIGTERM every node (they shut down cleanly), then SIGKILL stragglers.
async fn stop_all(mut nodes: Vec<ChildNode>) {
    for n in &nodes {
        // std has no SIGTERM; `kill` is part of every Linux base system.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(n.child.id().to_string())
            .status();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("meridian dev: stopped {}", n.name);
    }
    // Anything still running is killed by ChildNode's Drop.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_topologies_parse() {
        let one = load_topology(None).unwrap();
        assert_eq!(one.regions.len(), 1);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/wan-3.toml");
        let three = load_topology(Some(&path)).unwrap();
        let names: Vec<&str> = three.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["us-east", "eu-west", "ap-south"]);
        let rtt = |a: &str, b: &str| {
            three
                .links
                .iter()
                .find(|l| l.regions.contains(&a.to_string()) && l.regions.contains(&b.to_string()))
                .map(|l| l.rtt_ms)
        };
        assert_eq!(rtt("us-east", "eu-west"), Some(70));
        assert_eq!(rtt("eu-west", "ap-south"), Some(140));
        assert_eq!(rtt("us-east", "ap-south"), Some(200));
    }

    #[test]
    fn a_link_to_an_unknown_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[[regions]]\nname = \"a\"\n[[regions.nodes]]\nname = \"n\"\nzone = \"z\"\nquic_port = 1\nhttp_port = 2\ngossip_port = 3\n[[links]]\nregions = [\"a\", \"mars\"]\nrtt_ms = 5\n",
        )
        .unwrap();
        let err = load_topology(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("mars"), "{err}");
    }
}
