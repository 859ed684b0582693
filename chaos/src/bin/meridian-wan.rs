//! `meridian-wan`: run the WAN emulator standalone, or change and read a
//! running one through its control API.
//!
//! ```text
//! meridian-wan run --config regions/wan-3.toml
//! meridian-wan partition us-east eu-west      # cut both ways
//! meridian-wan partition --one-way ap-south us-east
//! meridian-wan isolate eu-west
//! meridian-wan heal
//! meridian-wan link us-east eu-west --rtt-ms 90 --loss 0.01
//! meridian-wan status [--json]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use meridian_chaos::control::{self, Request, DEFAULT_CONTROL_ADDR};
use meridian_chaos::{Emulator, LinkChange, Partition, WanConfig};

#[derive(Debug, Parser)]
#[command(
    name = "meridian-wan",
    version,
    about = "Meridian's WAN emulator: latency, jitter, loss and partitions between regions on loopback"
)]
struct Cli {
    /// Control API address. Default: `[wan] control_addr` of --config,
    /// else 127.0.0.1:7390.
    #[arg(long, global = true, env = "MERIDIAN_WAN_CONTROL")]
    control: Option<SocketAddr>,
    /// Topology file (`[[regions]]`, `[[links]]`, `[wan]`); required by `run`.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the emulator until Ctrl-C or SIGTERM.
    Run {
        /// Seed of loss and jitter draws (default: `[wan] seed`, else random).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Cut two regions apart, both directions (--one-way: only A -> B).
    Partition {
        /// A region.
        a: String,
        /// Another region.
        b: String,
        /// Cut only A -> B; B's packets still reach A.
        #[arg(long)]
        one_way: bool,
    },
    /// Cut a region from every other region.
    Isolate {
        /// The region.
        region: String,
    },
    /// Remove every partition.
    Heal,
    /// Change a link (both directions); parameters not given are kept.
    Link {
        /// A region.
        a: String,
        /// Another region (or the same: its own traffic).
        b: String,
        /// Round trip, ms.
        #[arg(long)]
        rtt_ms: Option<u64>,
        /// Jitter on each one-way delay, ms.
        #[arg(long)]
        jitter_ms: Option<u64>,
        /// Loss per datagram per direction, 0.0..=1.0.
        #[arg(long)]
        loss: Option<f64>,
    },
    /// Show partitions, links with their counters, and busy listeners.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match &cli.config {
        Some(path) => Some(
            WanConfig::from_file(path).with_context(|| format!("loading {}", path.display()))?,
        ),
        None => None,
    };
    let default_control: SocketAddr = DEFAULT_CONTROL_ADDR.parse()?;
    let control_addr = cli
        .control
        .or(config.as_ref().and_then(|c| c.control_addr))
        .unwrap_or(default_control);
    let request = match cli.command {
        Command::Run { seed } => {
            let Some(mut config) = config else {
                bail!("run needs --config FILE (a topology with [[regions]] and [[links]])")
            };
            config.control_addr = Some(control_addr);
            if seed.is_some() {
                config.seed = seed;
            }
            return run(config).await;
        }
        Command::Partition { a, b, one_way } => Request::Partition(if one_way {
            Partition::OneWay { from: a, to: b }
        } else {
            Partition::Cut { a, b }
        }),
        Command::Isolate { region } => Request::Partition(Partition::Isolate { region }),
        Command::Heal => Request::Heal,
        Command::Link {
            a,
            b,
            rtt_ms,
            jitter_ms,
            loss,
        } => Request::Link {
            a,
            b,
            change: LinkChange {
                rtt_ms,
                jitter_ms,
                loss,
            },
        },
        Command::Status { json } => {
            let reply = control::send(control_addr, &Request::Status).await?;
            let Some(status) = reply.status.filter(|_| reply.ok) else {
                bail!(
                    "{}",
                    reply
                        .error
                        .unwrap_or_else(|| "no status in the reply".into())
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            return Ok(());
        }
    };
    let reply = control::send(control_addr, &request).await?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "refused".into()));
    }
    println!("ok: {request}");
    Ok(())
}

async fn run(config: WanConfig) -> anyhow::Result<()> {
    let wan = Emulator::start(config.clone()).await?;
    println!(
        "meridian-wan: {} listeners for regions {}; control API on {}",
        config.listeners.len(),
        config.regions.join(", "),
        wan.control_addr()
            .map_or_else(|| "(none)".to_string(), |a| a.to_string()),
    );
    for l in &config.listeners {
        let listen = wan.listener_addr(&l.name).unwrap_or(l.listen);
        let source = l.source_region.as_deref().unwrap_or("by source address");
        println!(
            "  {:<28} {:?} {} -> {} (senders: {source})",
            l.name, l.protocol, listen, l.upstream
        );
    }
    wait_for_stop().await?;
    println!("meridian-wan: stopping");
    wan.shutdown().await;
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
