//! `meridian lock ...` and `meridian elect ...`: locks and elections with
//! fencing tokens, held by a lease this command grants and keeps alive.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::conn::ConnArgs;
use crate::client::{Client, LeaseKeeper};

/// Default TTL of the lease a lock or a candidacy is held by.
const DEFAULT_TTL_S: u64 = 10;
/// How long `elect campaign` waits per try before asking again (it waits
/// until elected or Ctrl-C).
const CAMPAIGN_SLICE: Duration = Duration::from_secs(3_600);

#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Acquire lock NAME and print its fencing token; hold it until Ctrl-C
    /// (then release it), or with --detach return at once, leaving it held
    /// by its lease until the lease runs out (--ttl).
    Acquire {
        /// The lock (a key under a strong prefix).
        name: String,
        /// TTL of the lease that holds the lock, in seconds.
        #[arg(long, default_value_t = DEFAULT_TTL_S)]
        ttl: u64,
        /// Wait at most this many seconds for the lock (default: fail at
        /// once with MER-1016 when it is held).
        #[arg(long)]
        wait: Option<u64>,
        /// Return after acquiring; the lock stays held until the lease's
        /// TTL runs out (or `lock release`).
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Release the grant of TOKEN on lock NAME.
    Release {
        /// The lock.
        name: String,
        /// The grant's fencing token.
        #[arg(long)]
        token: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ElectCommand {
    /// Campaign in election NAME with VALUE: wait until elected, print the
    /// term's fencing token, lead until Ctrl-C (then resign), or with
    /// --detach return at once, leading until the lease runs out.
    Campaign {
        /// The election (a key under a strong prefix).
        name: String,
        /// The value the leader publishes (an address, say).
        value: String,
        /// TTL of the lease that holds the candidacy, in seconds.
        #[arg(long, default_value_t = DEFAULT_TTL_S)]
        ttl: u64,
        /// Return once elected.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print election NAME's leader: its value and term token (exit status
    /// 1 when there is none).
    Leader {
        /// The election.
        name: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Resign the leadership of election NAME: the term TOKEN, or without
    /// --token the current leader's (whoever it is).
    Resign {
        /// The election.
        name: String,
        /// The term to resign.
        #[arg(long)]
        token: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Grants the lease a lock or candidacy is held by and starts keeping it alive.
async fn held_lease(client: &Arc<Client>, ttl_s: u64) -> anyhow::Result<(u64, LeaseKeeper)> {
    let lease = client.lease_grant(Duration::from_secs(ttl_s)).await?;
    Ok((lease.id, LeaseKeeper::start(client.clone(), &[lease])))
}

/// Holds until Ctrl-C or until the keeper loses the lease; returns whether
/// the lease was lost.
async fn hold(keeper: &mut LeaseKeeper) -> bool {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = keeper.lost() => true,
    }
}

pub(crate) async fn run_lock(cmd: LockCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LockCommand::Acquire {
            name,
            ttl,
            wait,
            detach,
            conn,
        } => {
            let client = Arc::new(conn.connect().await?);
            let (lease, mut keeper) = held_lease(&client, ttl).await?;
            let token = match client
                .lock_acquire(&name, lease, wait.map(Duration::from_secs))
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    keeper.stop();
                    let _ = client.lease_revoke(lease).await;
                    return Err(e.into());
                }
            };
            if conn.json {
                println!(
                    "{}",
                    json!({"name": name, "token": token.to_string(), "lease": lease})
                );
            } else {
                println!("{name} acquired: token {token} (lease {lease})");
            }
            if detach {
                keeper.stop();
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            if hold(&mut keeper).await {
                eprintln!("lock {name}: its lease was lost; the lock is no longer held");
                client.close().await;
                return Ok(ExitCode::from(1));
            }
            keeper.stop();
            client.lock_release(&name, token).await?;
            client.lease_revoke(lease).await?;
            eprintln!("{name} released");
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LockCommand::Release { name, token, conn } => {
            let client = conn.connect().await?;
            client.lock_release(&name, token).await?;
            if conn.json {
                println!("{}", json!({"name": name, "released": token.to_string()}));
            } else {
                println!("{name} released (token {token})");
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn run_elect(cmd: ElectCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ElectCommand::Campaign {
            name,
            value,
            ttl,
            detach,
            conn,
        } => {
            let client = Arc::new(conn.connect().await?);
            let (lease, mut keeper) = held_lease(&client, ttl).await?;
            let elected = tokio::select! {
                t = client.campaign(&name, &value, lease, CAMPAIGN_SLICE) => Some(t),
                _ = tokio::signal::ctrl_c() => None,
            };
            let token = match elected {
                Some(Ok(t)) => t,
                Some(Err(e)) => return Err(e.into()),
                None => {
                    keeper.stop();
                    let _ = client.lease_revoke(lease).await;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            if conn.json {
                println!(
                    "{}",
                    json!({"name": name, "value": value, "token": token.to_string(), "lease": lease})
                );
            } else {
                println!("{name}: elected with value {value:?}, term token {token}");
            }
            if detach {
                keeper.stop();
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            if hold(&mut keeper).await {
                eprintln!("election {name}: the lease was lost; no longer the leader");
                client.close().await;
                return Ok(ExitCode::from(1));
            }
            keeper.stop();
            client.resign(&name, token).await?;
            client.lease_revoke(lease).await?;
            eprintln!("{name}: resigned");
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        ElectCommand::Leader { name, conn } => {
            let client = conn.connect().await?;
            let leader = client.leader(&name).await?;
            client.close().await;
            match leader {
                Some(l) => {
                    let value = String::from_utf8_lossy(&l.value);
                    if conn.json {
                        println!(
                            "{}",
                            json!({"name": name, "value": value, "token": l.token.to_string(), "lease": l.lease})
                        );
                    } else {
                        println!("{value} (term token {}, lease {})", l.token, l.lease);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    if conn.json {
                        println!("{}", json!({"name": name, "value": null}));
                    } else {
                        eprintln!("{name}: no leader");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        ElectCommand::Resign { name, token, conn } => {
            let client = conn.connect().await?;
            let token = match token {
                Some(t) => t,
                None => match client.leader(&name).await? {
                    Some(l) => l.token,
                    None => anyhow::bail!("{name}: no leader to resign"),
                },
            };
            client.resign(&name, token).await?;
            if conn.json {
                println!("{}", json!({"name": name, "resigned": token.to_string()}));
            } else {
                println!("{name}: term {token} resigned");
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
