//! `meridian region ...`: the region's range groups.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::ConnArgs;
use crate::wire::{MembershipChangeV1, RangeStatusV1};

/// Region subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RegionCommand {
    /// Each range's leader, term, log and applied index, and members, as the
    /// connected node sees them.
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

fn print_status(all: &[RangeStatusV1]) {
    println!(
        "{:<6} {:<22} {:>7} {:>6} {:>9} {:>9}  voters",
        "range", "span", "leader", "term", "log", "applied"
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
        println!(
            "{:<6} {:<22} {:>7} {:>6} {:>9} {:>9}  {:?}",
            s.range,
            span,
            opt(s.leader),
            s.term,
            opt(s.last_log_index),
            opt(s.applied_index),
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
            client.close().await;
            if conn.json {
                let items: Vec<_> = all.iter().map(status_json).collect();
                println!("{}", json!({ "ranges": items }));
            } else {
                print_status(&all);
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
