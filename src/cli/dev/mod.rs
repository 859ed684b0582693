//! `meridian dev`: a local cluster on loopback from a topology file.
//!
//! Every node of the topology runs as its own `meridian serve` child process
//! with a config written under `--dir` (certificates, node configs, data,
//! logs, and `env` files for a second shell). A short demo runs against the
//! cluster; then it serves until Ctrl-C or SIGTERM, and stops every node
//! (SIGTERM, then SIGKILL after a bounded wait).
//!
//! A topology of one region without links (`regions/local-3.toml`) runs on
//! 127.0.0.1. A topology of several regions (`regions/wan-3.toml`, the
//! default) runs behind the WAN emulator (`meridian-chaos`), started in this process
//! before the nodes and stopped after them: every node binds its own
//! loopback address and advertises its front, so every packet between
//! nodes, and from clients that bind a region's address, crosses the
//! emulated WAN (see [`topology`] for the layout). Each region holds every
//! range in Raft groups of its own nodes; range leaders stream changes to
//! the other regions; gossip spans every region.
//!
//! Every node's gateway speaks HTTPS with client certificates
//! (`server.http_tls = true`) although it binds loopback, where plain HTTP
//! would be allowed: the dev cluster then behaves as a deployment does, and
//! the curl commands it teaches (`--cacert`, `--cert`, `--key` with the dev
//! certificates) are the ones that work against a real cluster.

mod demo;
mod prometheus;
mod topology;
mod wan;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_chaos::Emulator;

use crate::certs::{self, Role};
use crate::transport::TlsFiles;
use topology::{NodePlan, RegionPlan, Topology};

/// How long the cluster may take to elect leaders and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node gets to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `meridian dev` arguments.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Topology file. Default: the embedded regions/wan-3.toml, three
    /// regions of three nodes (us-east, eu-west, ap-south) behind the WAN
    /// emulator (its [[links]] and [wan]), replicating to each other under
    /// its prefix policies. regions/local-3.toml is one region of three
    /// nodes on 127.0.0.1, for quick work.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Directory for certificates, node configs, data, logs and the env files.
    #[arg(long, default_value = "meridian-dev")]
    pub dir: PathBuf,
    /// Shift every port of the topology (and the emulator's control API) by
    /// this much, to run beside another cluster.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Run the demo and stop instead of serving until Ctrl-C.
    #[arg(long)]
    pub demo_only: bool,
}

/// A running child node; killed on drop so no node outlives `meridian dev`.
struct ChildNode {
    name: String,
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

/// Writes node `idx` of `region`'s config and validates it, so a bad
/// topology fails here, with the field named, before anything starts.
fn write_node_config(
    dir: &Path,
    topo: &Topology,
    all: &[RegionPlan],
    region: &RegionPlan,
    idx: usize,
) -> anyhow::Result<PathBuf> {
    let max_rtt_ms = topo.max_rtt_ms;
    let node = &region.nodes[idx];
    let prefixes: Vec<String> = region
        .range_prefixes
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    let mut text = format!(
        "[node]\nid = \"{}\"\nregion = \"{}\"\nzone = \"{}\"\ndata_dir = \"{}\"\n\n\
         [server]\nlisten_addr = \"{}\"\n",
        node.name,
        region.name,
        node.zone,
        node.name,
        node.quic_bind(),
    );
    if node.is_fronted() {
        text.push_str(&format!(
            "advertise_addr = \"{}\"\n",
            node.quic_advertised()
        ));
    }
    text.push_str(&format!(
        "http_addr = \"{}\"\nhttp_tls = true\n\n\
         [tls]\nca_cert = \"certs/ca.pem\"\ncert = \"certs/{}.pem\"\nkey = \"certs/{}.key\"\n\n\
         [log]\nlevel = \"warn\"\n\n[raft]\nnode_id = {}\nbootstrap = {}\nrange_prefixes = [{}]\n",
        node.http_bind(),
        node.name,
        node.name,
        idx + 1,
        idx == 0,
        prefixes.join(", "),
    ));
    text.push_str(&gossip_section(all, node, max_rtt_ms));
    text.push_str(&replication_section(all, &topo.replication));
    text.push_str(&control_section(all, node, max_rtt_ms));
    // The region's voters, at the addresses they advertise: in the WAN
    // layout even a region's own Raft traffic crosses the emulator (with
    // no delay unless a link names the region twice).
    for (i, peer) in region.nodes.iter().enumerate() {
        text.push_str(&format!(
            "\n[[raft.peers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\nzone = \"{}\"\n",
            i + 1,
            peer.name,
            peer.quic_advertised(),
            peer.zone
        ));
    }
    let path = dir.join(format!("{}.toml", node.name));
    std::fs::write(&path, text)?;
    crate::config::load_and_validate(Some(&path))
        .with_context(|| format!("the config written for {}", node.name))?;
    Ok(path)
}

/// `[replication]`: every region of the topology (when it has several)
/// and the topology's prefix policies, identical on every node.
fn replication_section(
    all: &[RegionPlan],
    raw: &crate::config::replication::RawReplication,
) -> String {
    use std::fmt::Write;
    let policy = |p: &crate::config::replication::RawPolicy| {
        let mut t = format!(
            "consistency = {:?}\nreplication = {:?}\nmax_staleness_ms = {}\n",
            p.consistency, p.replication, p.max_staleness_ms
        );
        if !p.home.is_empty() {
            let _ = writeln!(t, "home = {:?}", p.home);
        }
        t
    };
    let mut text = String::new();
    if all.len() > 1 {
        let names: Vec<String> = all.iter().map(|r| format!("{:?}", r.name)).collect();
        let _ = write!(text, "\n[replication]\nregions = [{}]\n", names.join(", "));
    }
    let _ = write!(text, "\n[replication.default]\n{}", policy(&raw.default));
    for p in &raw.policies {
        let _ = write!(
            text,
            "\n[[replication.policies]]\nprefix = {:?}\n{}",
            p.prefix,
            policy(&p.policy)
        );
    }
    text
}

/// `[control]`: every node of every region is a member of the control
/// range (ids counted across the topology from 1); the voters are every
/// node of a single region, or the first node of each region of several
/// (voters in every region; losing one region of three keeps a quorum).
/// Its heartbeat is twice the worst RTT between regions: openraft gives an
/// AppendEntries 3/4 of a heartbeat, which must cover the farthest
/// member's round trip with room for jitter and load.
fn control_section(all: &[RegionPlan], node: &NodePlan, max_rtt_ms: u64) -> String {
    use std::fmt::Write;
    let heartbeat = (max_rtt_ms * 2).max(250);
    let mut members = String::new();
    let mut own = 0;
    for (id, (idx, n)) in (1u64..).zip(
        all.iter()
            .flat_map(|r| r.nodes.iter().enumerate().map(move |(i, n)| (i, (r, n)))),
    ) {
        let (region, n) = n;
        if n.name == node.name {
            own = id;
        }
        let voter = all.len() == 1 || idx == 0;
        let _ = write!(
            members,
            "\n[[control.members]]\nid = {id}\nname = \"{}\"\naddr = \"{}\"\nregion = \"{}\"\nzone = \"{}\"\nvoter = {voter}\n",
            n.name,
            n.quic_advertised(),
            region.name,
            n.zone
        );
    }
    format!(
        "\n[control]\nnode_id = {own}\nbootstrap = {}\nheartbeat_interval_ms = {heartbeat}\n\
         election_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n{members}",
        own == 1,
        heartbeat * 6,
        heartbeat * 12,
    )
}

/// `[gossip]`: one cluster across every region, seeded with every other
/// node's advertised gossip address (at most the config's seed limit).
fn gossip_section(all: &[RegionPlan], node: &NodePlan, max_rtt_ms: u64) -> String {
    let seeds: Vec<String> = all
        .iter()
        .flat_map(|r| &r.nodes)
        .filter(|n| n.name != node.name)
        .take(crate::config::gossip::MAX_CONFIG_SEEDS)
        .map(|n| format!("\"{}\"", n.gossip_advertised()))
        .collect();
    let mut text = format!("\n[gossip]\nlisten_addr = \"{}\"\n", node.gossip_bind());
    if node.is_fronted() {
        text.push_str(&format!(
            "advertise_addr = \"{}\"\n",
            node.gossip_advertised()
        ));
    }
    text.push_str(&format!(
        "seeds = [{}]\ncluster_key = \"certs/cluster.key\"\nmax_rtt_ms = {max_rtt_ms}\n",
        seeds.join(", ")
    ));
    text
}

/// The CA, the gossip cluster key, a certificate per node (valid for the
/// addresses it binds and advertises, which clients and peers check) and a
/// client and an admin certificate. Existing files are kept.
fn ensure_certs(dir: &Path, layout: &[RegionPlan]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !dir.join("ca.pem").exists() {
        certs::init_ca(dir, false)?;
    }
    let key = dir.join(super::CLUSTER_KEY_FILE);
    if !key.exists() {
        crate::membership::generate_cluster_key(&key, false)?;
    }
    for n in layout.iter().flat_map(|r| &r.nodes) {
        let sans = vec![n.bind_ip.to_string(), n.advertise_ip.to_string()];
        issue_once(dir, Role::Node, &n.name, &sans)?;
    }
    issue_once(dir, Role::Client, "client", &[])?;
    issue_once(dir, Role::Admin, "admin", &[])?;
    Ok(())
}

fn issue_once(dir: &Path, role: Role, name: &str, sans: &[String]) -> anyhow::Result<()> {
    if !dir.join(format!("{name}.pem")).exists() {
        certs::issue(dir, role, name, dir, sans)?;
    }
    Ok(())
}

fn spawn_node(dir: &Path, name: &str, config: &Path) -> anyhow::Result<ChildNode> {
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
        .with_context(|| format!("starting {name}"))?;
    Ok(ChildNode {
        name: name.to_string(),
        child,
    })
}

/// Runs `meridian dev`.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let (topo, text) = topology::load_topology(args.topology.as_deref())?;
    let layout = topology::plan(&topo, args.port_offset)?;
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let certs_dir = dir.join("certs");
    ensure_certs(&certs_dir, &layout)?;
    let mut configs = Vec::new();
    for region in &layout {
        for (i, n) in region.nodes.iter().enumerate() {
            let cfg = write_node_config(&dir, &topo, &layout, region, i)?;
            configs.push((n.name.clone(), cfg));
        }
    }
    // The emulator first: the nodes' first packets already go to fronts.
    let emulator = if topo.is_wan() {
        let config = wan::emulator_config(&text, &layout, args.port_offset)?;
        let wan = Emulator::start(config).await;
        Some(wan.context("starting the WAN emulator")?)
    } else {
        None
    };
    let control = emulator.as_ref().and_then(Emulator::control_addr);
    let mut nodes = Vec::new();
    for (name, cfg) in &configs {
        match spawn_node(&dir, name, cfg) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(nodes).await;
                return Err(e);
            }
        }
    }
    let tls = TlsFiles {
        ca: certs_dir.join("ca.pem"),
        cert: certs_dir.join("client.pem"),
        key: certs_dir.join("client.key"),
    };
    let written = write_env_files(&dir, &tls, &layout, control).and_then(|env| {
        let prometheus = prometheus::write_config(&dir, &layout)?;
        Ok((env, prometheus))
    });
    let result = match written {
        Ok((env_files, prometheus)) => {
            announce(&dir, &layout, &nodes, &env_files, emulator.as_ref());
            prometheus::announce(&prometheus, &dir, args.port_offset);
            serve(&args, &topo, &layout, &tls, &mut nodes, emulator.as_ref()).await
        }
        Err(e) => Err(e),
    };
    stop_all(nodes).await;
    if let Some(wan) = emulator {
        wan.shutdown().await;
        println!("meridian dev: stopped the WAN emulator");
    }
    result
}

/// Runs the demo and, unless `--demo-only`, serves until a signal; a signal
/// during start-up or the demo ends it too (the caller stops everything).
async fn serve(
    args: &DevArgs,
    topo: &Topology,
    layout: &[RegionPlan],
    tls: &TlsFiles,
    nodes: &mut [ChildNode],
    emulator: Option<&Emulator>,
) -> anyhow::Result<()> {
    let demo = async {
        match emulator {
            None => {
                let client = demo::wait_ready(&layout[0], tls, nodes).await?;
                let shown = super::dev_demo(&client).await;
                client.close().await;
                shown
            }
            Some(wan) => {
                for region in layout {
                    demo::wait_ready(region, tls, nodes).await?.close().await;
                }
                let shown = demo::multi_region(topo, layout, tls, &wan.controller()).await;
                match shown {
                    // A demo request can fail on a loaded machine (the SDK
                    // reports a node silent past its liveness bound as an
                    // unknown outcome) while every node serves: report it,
                    // and keep serving unless the demo was all we were
                    // asked for (its exit status says whether it ran).
                    Err(e) if !args.demo_only => {
                        eprintln!(
                            "meridian dev: the demo stopped: {e:#}; the cluster keeps serving"
                        );
                        Ok(())
                    }
                    shown => shown,
                }
            }
        }
    };
    tokio::select! {
        r = demo => {
            if let Err(e) = &r {
                eprintln!("meridian dev: {e:#}");
                return r;
            }
        }
        _ = crate::server::wait_for_signal() => {
            println!("meridian dev: signal received, stopping");
            return Ok(());
        }
    }
    if !args.demo_only {
        println!("meridian dev: serving until Ctrl-C");
        crate::server::wait_for_signal().await;
    }
    Ok(())
}

/// `env` (every endpoint) and, in the WAN layout, `REGION.env` per region
/// (that region's endpoints and the address that puts a client in it).
fn write_env_files(
    dir: &Path,
    tls: &TlsFiles,
    layout: &[RegionPlan],
    control: Option<SocketAddr>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let certs = format!(
        "export MERIDIAN_CA={}\nexport MERIDIAN_CERT={}\nexport MERIDIAN_KEY={}\n",
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display(),
    );
    let wan = control.map_or(String::new(), |c| {
        format!("export MERIDIAN_WAN_CONTROL={c}\n")
    });
    let join = |eps: Vec<SocketAddr>| {
        let list: Vec<String> = eps.iter().map(ToString::to_string).collect();
        list.join(",")
    };
    let all = join(layout.iter().flat_map(RegionPlan::endpoints).collect());
    // Sourced after a REGION.env, `env` makes the shell unclassified again.
    let unbind = if control.is_some() {
        "unset MERIDIAN_BIND\n"
    } else {
        ""
    };
    let mut files = vec![("all regions".to_string(), dir.join("env"))];
    std::fs::write(
        &files[0].1,
        format!("export MERIDIAN_ENDPOINTS={all}\n{certs}{wan}{unbind}"),
    )?;
    for region in layout {
        let Some(ip) = region.client_ip else { continue };
        let path = dir.join(format!("{}.env", region.name));
        std::fs::write(
            &path,
            format!(
                "export MERIDIAN_ENDPOINTS={}\nexport MERIDIAN_BIND={ip}\n{certs}{wan}",
                join(region.endpoints())
            ),
        )?;
        files.push((region.name.clone(), path));
    }
    Ok(files)
}

/// Tells the user where everything is.
fn announce(
    dir: &Path,
    layout: &[RegionPlan],
    nodes: &[ChildNode],
    env_files: &[(String, PathBuf)],
    emulator: Option<&Emulator>,
) {
    if let Some(wan) = emulator {
        let control = wan
            .control_addr()
            .map_or_else(|| "(none)".to_string(), |a| a.to_string());
        let regions: Vec<&str> = layout.iter().map(|r| r.name.as_str()).collect();
        println!(
            "meridian dev: WAN emulator between regions {}: control API on {control}",
            regions.join(", ")
        );
    }
    for (region, n) in layout
        .iter()
        .flat_map(|r| r.nodes.iter().map(move |n| (r, n)))
    {
        let pid = nodes
            .iter()
            .find(|c| c.name == n.name)
            .map_or(0, |c| c.child.id());
        let bound = if n.is_fronted() {
            format!(" (bound {})", n.quic_bind())
        } else {
            String::new()
        };
        println!(
            "meridian dev: {} (region {}) pid {pid} quic {}{bound} https {}",
            n.name,
            region.name,
            n.quic_advertised(),
            n.http_advertised()
        );
    }
    println!("meridian dev: logs and configs in {}", dir.display());
    for (what, path) in env_files {
        let how = match layout.iter().find(|r| &r.name == what) {
            Some(r) => format!(
                "a client in region {what} (endpoints {}, binds {})",
                r.endpoints()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                r.client_ip.map_or_else(String::new, |ip| ip.to_string()),
            ),
            None => format!("every endpoint ({what})"),
        };
        println!("meridian dev: source {}  # {how}", path.display());
    }
    if let Some(first) = env_files.get(1) {
        println!(
            "meridian dev: in another shell: source {} && meridian kv get demo/greeting",
            first.1.display()
        );
        println!(
            "meridian dev: every region replicates every range; a prefix's policy (meridian policy ls) says where it is written and how it is read"
        );
        println!(
            "meridian dev: partition: meridian wan partition A B; heal: meridian wan heal; \
             meridian wan status (MERIDIAN_WAN_CONTROL is in the env files)"
        );
    } else if let Some(all) = env_files.first() {
        println!(
            "meridian dev: in another shell: source {} && meridian kv get demo/greeting",
            all.1.display()
        );
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
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if exited {
            println!("meridian dev: stopped {}", n.name);
        } else {
            let _ = n.child.kill();
            let _ = n.child.wait();
            println!(
                "meridian dev: killed {} (still running {STOP_TIMEOUT:?} after SIGTERM)",
                n.name
            );
        }
    }
}
