//! The `meridian` command line.
//!
//! Binaries and glue may use `anyhow`; every error reaches standard error
//! with a non-zero exit status. Human output by default, `--json` for scripts.

mod bench;
pub mod conn;
mod dev;
mod kv;
mod lease;
mod lock;
mod policy;
mod region;
mod service;
mod txn_parse;
mod wan;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::certs::{self, Role};
use crate::client::{Client, ClientError};
pub use conn::ConnArgs;

/// Exit status of a command that failed without changing anything (the
/// node refused the request, or it was never sent), and of `kv get` when
/// the key does not exist.
pub const EXIT_FAILED: u8 = 1;
/// Exit status when a request was sent but no definite answer came back
/// (`MER-3005`: a commit timed out, the node died or the connection broke):
/// a write may or may not have been applied. (2 is clap's usage error.)
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Meridian: a geo-distributed, multi-region metadata service.
#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about,
    after_help = "Exit status: 0 success; 1 failed and nothing was changed (for `kv get`: \
                  the key does not exist); 2 usage error; 3 outcome unknown (MER-3005): \
                  a write may or may not have been applied, read before retrying."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. Without --config: one node on 127.0.0.1:7379 (HTTP on
    /// 7380) with data and development certificates under ./meridian-data.
    Serve {
        /// Node config file (TOML); MERIDIAN_<SECTION>__<FIELD> variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start a local cluster on loopback (default: one region of three
    /// nodes, each its own process; --topology regions/wan-3.toml: three
    /// regions behind the WAN emulator), run a short demo against it, and
    /// keep serving until Ctrl-C.
    Dev(dev::DevArgs),
    /// Partition, heal and inspect the WAN emulator of a multi-region
    /// `meridian dev` (its control API).
    #[command(subcommand)]
    Wan(wan::WanCommand),
    /// Manage development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Key-value operations.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Key prefix consistency policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Leases: keys attached to a lease are deleted when it expires.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Locks with fencing tokens (guard writes with `kv put --fence`).
    #[command(subcommand)]
    Lock(lock::LockCommand),
    /// Leader elections: each term has a fencing token.
    #[command(subcommand)]
    Elect(lock::ElectCommand),
    /// Service discovery: register instances under a lease, look them up
    /// (own region first, then nearest), watch them.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// The region's range groups: status and membership changes.
    #[command(subcommand)]
    Region(region::RegionCommand),
    /// The cluster's members (node, region, zone, state, incarnation, RTT).
    Members {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show the node's status.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Load generator against Meridian or etcd.
    Bench(bench::BenchArgs),
    /// Watch a key or prefix: one line per change, in HLC order, until
    /// Ctrl-C; resumable with --from in any region.
    Watch(watch::WatchArgs),
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a development CA (ca.pem, ca.key) in DIR.
    Init {
        /// Where to write the CA.
        #[arg(long, default_value = "meridian-data/certs")]
        dir: PathBuf,
        /// Overwrite an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate with a role, signed by the CA in DIR.
    Issue {
        /// node, client or admin.
        #[arg(long)]
        role: Role,
        /// Certificate name (CN); files are NAME.pem and NAME.key.
        name: String,
        /// Directory holding the CA.
        #[arg(long, default_value = "meridian-data/certs")]
        dir: PathBuf,
        /// Output directory (default: the CA directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra subject alternative names (IP addresses or DNS names).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
}

/// File name of the gossip cluster key, beside the CA.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status for a failed command: outcome-unknown errors get their own.
fn exit_status(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(c) if c.is_outcome_unknown() => EXIT_OUTCOME_UNKNOWN,
        _ => EXIT_FAILED,
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(config).await.map(|_| ExitCode::SUCCESS),
        Command::Dev(args) => dev::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Certs(c) => certs_cmd(c).map(|_| ExitCode::SUCCESS),
        Command::Kv(c) => kv::run(c).await,
        Command::Policy(c) => policy::run(c).await,
        Command::Lease(c) => lease::run(c).await,
        Command::Lock(c) => lock::run_lock(c).await,
        Command::Elect(c) => lock::run_elect(c).await,
        Command::Service(c) => service::run(c).await,
        Command::Region(c) => region::run(c).await,
        Command::Members { conn } => region::members(&conn).await,
        Command::Status { conn } => kv::status(&conn).await,
        Command::Bench(args) => bench::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Wan(c) => wan::run(c).await,
        Command::Watch(args) => watch::run(args).await,
    }
}

/// Makes sure `dir` holds a CA plus `node1`, `client` and `admin` certificates.
pub fn ensure_dev_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !dir.join("ca.pem").exists() {
        certs::init_ca(dir, false)?;
    }
    if !dir.join(CLUSTER_KEY_FILE).exists() {
        crate::membership::generate_cluster_key(&dir.join(CLUSTER_KEY_FILE), false)?;
    }
    for (role, name) in [
        (Role::Node, "node1"),
        (Role::Client, "client"),
        (Role::Admin, "admin"),
    ] {
        if !dir.join(format!("{name}.pem")).exists() {
            certs::issue(dir, role, name, dir, &[])?;
        }
    }
    Ok(())
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = match &config {
        Some(path) => crate::config::load_and_validate(Some(path))?,
        None => {
            // Embedded defaults, as etcd: everything under ./meridian-data.
            ensure_dev_certs(&PathBuf::from(crate::client::DEFAULT_CERT_DIR))?;
            crate::config::load_and_validate(None)?
        }
    };
    let who = crate::telemetry::Identity {
        node: cfg.node_id.clone(),
        region: cfg.region.clone(),
        zone: cfg.zone.clone(),
    };
    let telemetry =
        crate::telemetry::init(cfg.log_format, &cfg.log_level, cfg.telemetry.as_ref(), &who)?;
    let served = crate::server::run_until_signal(cfg).await;
    // Flush the last spans while the runtime that sends them still runs.
    if telemetry.exporting() {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    served
}

fn certs_cmd(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { dir, force } => {
            std::fs::create_dir_all(&dir)?;
            let paths = certs::init_ca(&dir, force)?;
            println!("created CA {:?} (key {:?})", paths.cert, paths.key);
            let key = dir.join(CLUSTER_KEY_FILE);
            crate::membership::generate_cluster_key(&key, force)?;
            println!("created gossip cluster key {key:?} (copy it to every node, mode 0600)");
        }
        CertsCommand::Issue {
            role,
            name,
            dir,
            out,
            sans,
        } => {
            let out = out.unwrap_or_else(|| dir.clone());
            std::fs::create_dir_all(&out)?;
            let paths = certs::issue(&dir, role, &name, &out, &sans)?;
            println!(
                "issued {role} certificate {:?} (key {:?})",
                paths.cert, paths.key
            );
        }
    }
    Ok(())
}

/// The demo `meridian dev` runs against a fresh cluster.
async fn dev_demo(client: &Client) -> anyhow::Result<()> {
    use crate::types::{Compare, CompareOp, CompareTarget, Op, Txn};
    let w = client.put("demo/greeting", "hello from meridian").await?;
    println!(
        "demo: put demo/greeting            -> version {}",
        w.version
    );
    let g = client.get("demo/greeting").await?;
    let value =
        g.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default();
    println!(
        "demo: get demo/greeting            -> {value:?} (served at {})",
        g.served_at
    );
    let txn = Txn {
        compares: vec![Compare {
            key: b"demo/leader".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(false),
        }],
        success: vec![Op::Put {
            key: b"demo/leader".to_vec(),
            value: b"node1".to_vec(),
        }],
        failure: vec![],
    };
    let t = client.txn(&txn).await?;
    println!(
        "demo: txn create-if-absent leader  -> succeeded={} version {}",
        t.succeeded, t.version
    );
    let t2 = client.txn(&txn).await?;
    println!(
        "demo: same txn again               -> succeeded={} (key exists now)",
        t2.succeeded
    );
    let (kvs, _) = client.list_prefix("demo/", 100).await?;
    println!("demo: ls demo/                     -> {} keys", kvs.len());
    // Gossip: wait (bounded) until every node is seen alive, then show them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let members = client.members().await?;
        let alive = members.iter().filter(|m| m.state == "alive").count();
        if alive >= 3 || std::time::Instant::now() > deadline {
            let list: Vec<String> = members
                .iter()
                .map(|m| format!("{} {}", m.node_id, m.state))
                .collect();
            println!("demo: members (gossip)             -> {}", list.join(", "));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Range leaders gossiped by the Raft groups (one per range of the region).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let ranges = client.region_status().await?.len();
    loop {
        let hints = client.leader_hints().await?;
        if hints.len() >= ranges || std::time::Instant::now() > deadline {
            let list: Vec<String> = hints
                .iter()
                .map(|h| format!("range {} {}", h.range, h.leader))
                .collect();
            println!("demo: range leaders (gossip)       -> {}", list.join(", "));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn outcome_unknown_has_its_own_exit_status() {
        use crate::client::OutcomeUnknown;
        use crate::error_code::{ApiError, ErrorCode};
        let lost = anyhow::Error::from(ClientError::from(OutcomeUnknown::ConnectionLost(
            "reset".into(),
        )));
        assert_eq!(exit_status(&lost), EXIT_OUTCOME_UNKNOWN);
        let node = ClientError::from(ApiError::new(ErrorCode::OutcomeUnknown, "commit timed out"));
        assert_eq!(
            exit_status(&anyhow::Error::from(node)),
            EXIT_OUTCOME_UNKNOWN
        );
        let refused = ClientError::from(ApiError::new(ErrorCode::ValueTooLarge, "big"));
        assert_eq!(exit_status(&anyhow::Error::from(refused)), EXIT_FAILED);
        assert_eq!(exit_status(&anyhow::anyhow!("bad flag")), EXIT_FAILED);
    }

    #[test]
    fn kv_get_takes_read_level_flags() {
        let cli = Cli::try_parse_from([
            "meridian",
            "kv",
            "get",
            "k",
            "--consistency",
            "bounded:200",
            "--on-stale",
            "fail",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(kv::KvCommand::Get { .. })
        ));
        let cli = Cli::try_parse_from(["meridian", "policy", "ls", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Policy(_)));
    }

    #[test]
    fn kv_put_parses_with_and_without_value() {
        let cli =
            Cli::try_parse_from(["meridian", "kv", "put", "k", "v", "--key", "c.key"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(kv::KvCommand::Put { value: Some(_), .. })
        ));
        let cli = Cli::try_parse_from(["meridian", "kv", "put", "k"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(kv::KvCommand::Put { value: None, .. })
        ));
    }
}
