//! `meridian wan ...`: partitions and status of the WAN emulator a
//! multi-region `meridian dev` runs, through its control API (the same
//! requests as the `meridian-wan` binary, by the chaos library's client).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use meridian_chaos::control::{self, Request, DEFAULT_CONTROL_ADDR};
use meridian_chaos::Partition;

/// Where the emulator's control API is.
#[derive(Debug, Args, Clone)]
pub(crate) struct WanConn {
    /// The emulator's control API (`meridian dev` prints it and writes it
    /// into its env files).
    #[arg(long, env = "MERIDIAN_WAN_CONTROL", default_value = DEFAULT_CONTROL_ADDR, global = true)]
    control: SocketAddr,
}

/// `meridian wan` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum WanCommand {
    /// Cut two regions apart, both directions (--one-way: only A -> B).
    Partition {
        /// A region.
        a: String,
        /// Another region.
        b: String,
        /// Cut only A -> B; B's packets still reach A.
        #[arg(long)]
        one_way: bool,
        #[command(flatten)]
        conn: WanConn,
    },
    /// Cut a region from every other region.
    Isolate {
        /// The region.
        region: String,
        #[command(flatten)]
        conn: WanConn,
    },
    /// Remove every partition.
    Heal {
        #[command(flatten)]
        conn: WanConn,
    },
    /// Partitions, links with their RTT and counters, busy fronts.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: WanConn,
    },
}

pub(crate) async fn run(cmd: WanCommand) -> anyhow::Result<ExitCode> {
    let (conn, request, json) = match cmd {
        WanCommand::Partition {
            a,
            b,
            one_way,
            conn,
        } => {
            let p = if one_way {
                Partition::OneWay { from: a, to: b }
            } else {
                Partition::Cut { a, b }
            };
            (conn, Request::Partition(p), false)
        }
        WanCommand::Isolate { region, conn } => (
            conn,
            Request::Partition(Partition::Isolate { region }),
            false,
        ),
        WanCommand::Heal { conn } => (conn, Request::Heal, false),
        WanCommand::Status { json, conn } => (conn, Request::Status, json),
    };
    let reply = control::send(conn.control, &request).await?;
    if !reply.ok {
        bail!(
            "the emulator refused `{request}`: {}",
            reply.error.unwrap_or_else(|| "no reason given".into())
        );
    }
    match reply.status {
        Some(status) if json => println!("{}", serde_json::to_string_pretty(&status)?),
        Some(status) => print!("{}", status.render()),
        None => println!("ok: {request}"),
    }
    Ok(ExitCode::SUCCESS)
}
