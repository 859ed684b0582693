//! `meridian lease ...`: grant, keepalive, revoke, ttl and list leases
//! (etcdctl-like; each with --json).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::conn::ConnArgs;
use crate::client::{Lease, LeaseKeeper};

#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Grant a lease of TTL_S seconds (1 to 86400) in the connected node's
    /// region; prints its id.
    Grant {
        /// Time to live, in seconds.
        ttl_s: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Keep a lease alive until Ctrl-C (or once, with --once); one line per
    /// keepalive. Exits with status 1 when the lease is lost.
    Keepalive {
        /// The lease id.
        id: u64,
        /// Send one keepalive and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Revoke a lease: its keys are deleted before this returns.
    Revoke {
        /// The lease id.
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// A lease's granted TTL and remaining time (exit status 1 if it does
    /// not exist).
    Ttl {
        /// The lease id.
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List the region's live leases.
    Ls {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn lease_json(l: &Lease) -> serde_json::Value {
    json!({
        "id": l.id,
        "ttl_ms": u64::try_from(l.ttl.as_millis()).unwrap_or(u64::MAX),
        "remaining_ms": u64::try_from(l.remaining.as_millis()).unwrap_or(u64::MAX),
        "granted_at": l.granted_at.0.to_string(),
    })
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

pub(crate) async fn run(cmd: LeaseCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LeaseCommand::Grant { ttl_s, conn } => {
            let client = conn.connect().await?;
            let l = client.lease_grant(Duration::from_secs(ttl_s)).await?;
            if conn.json {
                println!("{}", lease_json(&l));
            } else {
                println!("lease {} granted with TTL {}", l.id, secs(l.ttl));
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Keepalive { id, once, conn } => keepalive(id, once, &conn).await,
        LeaseCommand::Revoke { id, conn } => {
            let client = conn.connect().await?;
            client.lease_revoke(id).await?;
            if conn.json {
                println!("{}", json!({"id": id, "revoked": true}));
            } else {
                println!("lease {id} revoked");
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Ttl { id, conn } => {
            let client = conn.connect().await?;
            let l = client.lease_ttl(id).await?;
            if conn.json {
                println!("{}", lease_json(&l));
            } else {
                println!(
                    "lease {} granted with TTL {}, remaining {}",
                    l.id,
                    secs(l.ttl),
                    secs(l.remaining)
                );
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Ls { conn } => {
            let client = conn.connect().await?;
            let leases = client.lease_list().await?;
            if conn.json {
                let list: Vec<_> = leases.iter().map(lease_json).collect();
                println!("{}", json!({ "leases": list }));
            } else {
                println!("found {} leases", leases.len());
                for l in &leases {
                    println!(
                        "{} (TTL {}, remaining {})",
                        l.id,
                        secs(l.ttl),
                        secs(l.remaining)
                    );
                }
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn keepalive(id: u64, once: bool, conn: &ConnArgs) -> anyhow::Result<ExitCode> {
    let client = Arc::new(conn.connect().await?);
    let print = |l: &Lease| {
        if conn.json {
            println!("{}", lease_json(l));
        } else {
            println!("lease {} keepalived with TTL {}", l.id, secs(l.remaining));
        }
    };
    let first = client.lease_keep_alive(&[id]).await?;
    let Some(l) = first.into_iter().next().filter(|l| !l.remaining.is_zero()) else {
        anyhow::bail!(crate::error_code::ApiError::new(
            crate::error_code::ErrorCode::LeaseNotFound,
            format!("lease {id} does not exist in this region (expired, revoked, or never granted here)")
        ));
    };
    print(&l);
    if once {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut keeper = LeaseKeeper::start(client.clone(), &[l]);
    let mut tick = tokio::time::interval(l.ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = keeper.lost() => {
                eprintln!("lease {id} lost: it expired or was revoked (its keys are deleted)");
                client.close().await;
                return Ok(ExitCode::from(1));
            }
            _ = tick.tick() => {
                // The keeper's last answer (it keeps the lease alive at
                // the same pace).
                if let Some(crate::client::KeptLease::Alive { lease, .. }) = keeper.state(id) {
                    print(&lease);
                }
            }
        }
    }
    keeper.stop();
    client.close().await;
    Ok(ExitCode::SUCCESS)
}
