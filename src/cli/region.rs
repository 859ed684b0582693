//! `meridian region ...`: the region's range groups.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::ConnArgs;
use crate::client::{Client, ClientConfig};
use crate::types::Timestamp;
use crate::wire::{MemberV1, MembershipChangeV1, RangeFrontierV1, RangeStatusV1};

/// Longest one region's node gets to answer `region status`.
const REGION_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One region's ranges as one of its nodes sees them.
struct RegionView {
    region: String,
    /// The node that answered, and its address; or why none did.
    from: Result<(String, String), String>,
    ranges: Vec<RangeStatusV1>,
    /// The answering node's clock and each range's timestamps.
    frontiers: Option<(Timestamp, Vec<RangeFrontierV1>)>,
}

/// Milliseconds from `frontier` to `at` (a node's clock when it answered).
fn age_ms(at: Timestamp, frontier: u64) -> i64 {
    at.physical_unix_ms() - Timestamp(frontier).physical_unix_ms()
}

/// Every region of `members`, in name order, with its live nodes.
fn regions_of(members: &[MemberV1]) -> Vec<(String, Vec<&MemberV1>)> {
    let mut by_region: std::collections::BTreeMap<String, Vec<&MemberV1>> = Default::default();
    for m in members {
        let live = by_region.entry(m.region.clone()).or_default();
        if m.state == "alive" {
            live.push(m);
        }
    }
    by_region.into_iter().collect()
}

/// Asks one live node of each region (trying them in turn) for its view.
async fn region_views(base: &ClientConfig, members: &[MemberV1]) -> Vec<RegionView> {
    let mut out = Vec::new();
    for (region, live) in regions_of(members) {
        let mut view = RegionView {
            region: region.clone(),
            from: Err(format!("no live node of {region} answered")),
            ranges: Vec::new(),
            frontiers: None,
        };
        for m in live {
            let Ok(addr) = m.peer_addr.parse() else {
                continue;
            };
            let cfg = ClientConfig {
                endpoints: vec![addr],
                request_timeout: REGION_STATUS_TIMEOUT,
                ..base.clone()
            };
            let ask = async {
                let c = Client::connect(cfg).await?;
                let ranges = c.region_status().await;
                let frontiers = c.frontiers().await;
                c.close().await;
                anyhow::Ok((ranges?, frontiers.ok()))
            };
            match tokio::time::timeout(REGION_STATUS_TIMEOUT, ask).await {
                Ok(Ok((ranges, frontiers))) => {
                    view.from = Ok((m.node_id.clone(), m.peer_addr.clone()));
                    view.ranges = ranges;
                    view.frontiers = frontiers;
                    break;
                }
                Ok(Err(e)) => view.from = Err(format!("{}: {e:#}", m.node_id)),
                Err(_) => view.from = Err(format!("{}: no answer", m.node_id)),
            }
        }
        out.push(view);
    }
    out
}

fn frontier_of(v: &RegionView, range: u64) -> Option<(u64, i64)> {
    let (at, all) = v.frontiers.as_ref()?;
    let f = all.iter().find(|f| f.range == range)?;
    Some((f.frontier, age_ms(*at, f.frontier)))
}

fn view_json(v: &RegionView) -> serde_json::Value {
    match &v.from {
        Err(e) => json!({ "region": v.region, "error": e }),
        Ok((node, addr)) => {
            let ranges: Vec<_> = v
                .ranges
                .iter()
                .map(|s| {
                    let mut j = status_json(s);
                    if let Some((ts, age)) = frontier_of(v, s.range) {
                        j["frontier"] = json!(Timestamp(ts).to_string());
                        j["frontier_age_ms"] = json!(age);
                    }
                    j
                })
                .collect();
            json!({ "region": v.region, "node": node, "addr": addr, "ranges": ranges })
        }
    }
}

fn print_view(v: &RegionView) {
    match &v.from {
        Err(e) => println!("region {}: {e}", v.region),
        Ok((node, addr)) => {
            println!("region {} (as {node} at {addr} sees it)", v.region);
            print_status(&v.ranges, Some(v));
        }
    }
}

/// Region subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RegionCommand {
    /// Each range's leader, term, log and applied index, members and
    /// frontier age: as the connected node sees them, then (with gossip)
    /// as one live node of every region sees them.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a node as a voter of every range (learner first, then voter,
    /// through joint consensus). Needs an admin certificate.
    AddNode {
        /// New, never used Raft id.
        #[arg(long)]
        id: u64,
        /// Node name.
        #[arg(long)]
        name: String,
        /// Its QUIC address, as others dial it (its server.advertise_addr, else listen_addr).
        #[arg(long)]
        addr: String,
        /// Its zone.
        #[arg(long, default_value = "zone1")]
        zone: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a voter from every range. Needs an admin certificate.
    RemoveNode {
        /// Raft id.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Hand a range's leadership to another voter of it, as `etcdctl
    /// move-leader` does: for draining a node before maintenance. Every
    /// range when --range is not given. Needs an admin certificate.
    MoveLeader {
        /// Raft id of the voter to lead (`meridian region status` lists
        /// each range's voters).
        #[arg(long)]
        to: u64,
        /// Only this range.
        #[arg(long)]
        range: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Replace a voter: add the new node, then remove the old one.
    ReplaceNode {
        /// Raft id to remove.
        #[arg(long)]
        old_id: u64,
        /// New Raft id.
        #[arg(long)]
        id: u64,
        /// New node's name.
        #[arg(long)]
        name: String,
        /// New node's QUIC address, as others dial it (its server.advertise_addr, else listen_addr).
        #[arg(long)]
        addr: String,
        /// New node's zone.
        #[arg(long, default_value = "zone1")]
        zone: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn status_json(s: &RangeStatusV1) -> serde_json::Value {
    json!({
        "range": s.range,
        "start": String::from_utf8_lossy(&s.start),
        "end": s.end.as_ref().map(|e| String::from_utf8_lossy(e).into_owned()),
        "node": s.node,
        "leader": s.leader,
        "term": s.term,
        "last_log_index": s.last_log_index,
        "applied_index": s.applied_index,
        "voters": s.voters,
        "learners": s.learners,
    })
}

fn print_status(all: &[RangeStatusV1], view: Option<&RegionView>) {
    println!(
        "{:<6} {:<22} {:>7} {:>6} {:>9} {:>9} {:>10}  voters",
        "range", "span", "leader", "term", "log", "applied", "frontier"
    );
    for s in all {
        let span = format!(
            "[{:?}, {})",
            String::from_utf8_lossy(&s.start),
            s.end.as_ref().map_or("end".to_string(), |e| format!(
                "{:?}",
                String::from_utf8_lossy(e)
            ))
        );
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let age = view
            .and_then(|v| frontier_of(v, s.range))
            .map_or("-".to_string(), |(_, age)| format!("{age}ms"));
        println!(
            "{:<6} {:<22} {:>7} {:>6} {:>9} {:>9} {:>10}  {:?}",
            s.range,
            span,
            opt(s.leader),
            s.term,
            opt(s.last_log_index),
            opt(s.applied_index),
            age,
            s.voters
        );
    }
}

async fn change_all(conn: &ConnArgs, change: MembershipChangeV1) -> anyhow::Result<()> {
    let client = conn.connect().await?;
    let ranges = client.region_status().await?;
    for r in &ranges {
        let voters = client.region_change(r.range, change.clone()).await?;
        if conn.json {
            println!("{}", json!({"range": r.range, "voters": voters}));
        } else {
            println!("range {}: voters {:?}", r.range, voters);
        }
    }
    client.close().await;
    Ok(())
}

pub(crate) async fn run(cmd: RegionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionCommand::Status { conn } => {
            let client = conn.connect().await?;
            let all = client.region_status().await?;
            // Gossip off (a single node, a region without [gossip]): the
            // connected node's view is all there is.
            let members = client.members().await.unwrap_or_default();
            client.close().await;
            let views = region_views(&conn.client_config()?, &members).await;
            if conn.json {
                let items: Vec<_> = all.iter().map(status_json).collect();
                let regions: Vec<_> = views.iter().map(view_json).collect();
                println!("{}", json!({ "ranges": items, "regions": regions }));
            } else if views.is_empty() {
                print_status(&all, None);
            } else {
                for v in &views {
                    print_view(v);
                }
            }
        }
        RegionCommand::AddNode {
            id,
            name,
            addr,
            zone,
            conn,
        } => {
            change_all(
                &conn,
                MembershipChangeV1::AddNode {
                    id,
                    name,
                    addr,
                    zone,
                },
            )
            .await?;
        }
        RegionCommand::RemoveNode { id, conn } => {
            change_all(&conn, MembershipChangeV1::RemoveNode { id }).await?;
        }
        RegionCommand::MoveLeader { to, range, conn } => {
            let client = conn.connect().await?;
            let ranges: Vec<u64> = match range {
                Some(r) => vec![r],
                None => client
                    .region_status()
                    .await?
                    .iter()
                    .map(|s| s.range)
                    .collect(),
            };
            for r in ranges {
                client
                    .region_change(r, MembershipChangeV1::MoveLeader { to })
                    .await
                    .with_context(|| format!("range {r}"))?;
                if conn.json {
                    println!("{}", json!({"range": r, "leader": to}));
                } else {
                    println!("range {r}: leader {to}");
                }
            }
            client.close().await;
        }
        RegionCommand::ReplaceNode {
            old_id,
            id,
            name,
            addr,
            zone,
            conn,
        } => {
            change_all(
                &conn,
                MembershipChangeV1::AddNode {
                    id,
                    name,
                    addr,
                    zone,
                },
            )
            .await?;
            change_all(&conn, MembershipChangeV1::RemoveNode { id: old_id }).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn members(conn: &ConnArgs) -> anyhow::Result<ExitCode> {
    let client = conn.connect().await?;
    let all = client.members().await?;
    client.close().await;
    if conn.json {
        let items: Vec<_> = all
            .iter()
            .map(|m| {
                json!({
                    "node": m.node_id, "region": m.region, "zone": m.zone, "addr": m.peer_addr,
                    "state": m.state, "generation": m.generation, "rejoin": m.rejoin,
                    "refutation": m.refutation,
                    "rtt_ms": m.rtt_us.map(|us| us as f64 / 1000.0),
                })
            })
            .collect();
        println!("{}", json!({ "members": items }));
        return Ok(ExitCode::SUCCESS);
    }
    // `addr` is the QUIC address the member advertises (what peers and
    // clients dial), which may be a proxy's front rather than its socket.
    println!(
        "{:<14} {:<10} {:<11} {:<21} {:<8} {:>12} {:>9}",
        "node", "region", "zone", "addr", "state", "incarnation", "rtt_ms"
    );
    for m in &all {
        let inc = format!("{}.{}.{}", m.generation, m.rejoin, m.refutation);
        let rtt = m
            .rtt_us
            .map_or("-".to_string(), |us| format!("{:.2}", us as f64 / 1000.0));
        println!(
            "{:<14} {:<10} {:<11} {:<21} {:<8} {:>12} {:>9}",
            m.node_id, m.region, m.zone, m.peer_addr, m.state, inc, rtt
        );
    }
    Ok(ExitCode::SUCCESS)
}
