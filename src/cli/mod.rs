//! The `meridian` command line.
//!
//! Binaries and glue may use `anyhow`; every error reaches standard error
//! with a non-zero exit status. Human output by default, `--json` for scripts.

mod kv;
mod txn_parse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::certs::{self, Role};
use crate::client::{Client, ClientConfig};
use crate::transport::TlsFiles;

/// Meridian: a geo-distributed, multi-region metadata service.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
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
    /// Start a local development node with embedded defaults, run a short
    /// demo against it, and keep serving until Ctrl-C.
    Dev(DevArgs),
    /// Manage development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Key-value operations.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Show the node's status.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Load generator against Meridian or etcd.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Directory for the development node's data, certificates and env file.
    #[arg(long, default_value = "meridian-dev")]
    dir: PathBuf,
    /// QUIC port of the node.
    #[arg(long, default_value_t = 7379)]
    port: u16,
    /// HTTP gateway port.
    #[arg(long, default_value_t = 7380)]
    http_port: u16,
    /// Run the demo and exit instead of serving until Ctrl-C.
    #[arg(long)]
    demo_only: bool,
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

/// How to reach the cluster: flags, then MERIDIAN_* variables, then the
/// single-node defaults of `meridian serve`.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Comma-separated node addresses (host:port).
    #[arg(long, env = "MERIDIAN_ENDPOINTS", default_value = crate::client::DEFAULT_ENDPOINT, global = true)]
    pub endpoints: String,
    /// CA certificate (PEM).
    #[arg(long, env = "MERIDIAN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "MERIDIAN_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long = "key", id = "key_file", env = "MERIDIAN_KEY", global = true)]
    pub key_file: Option<PathBuf>,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// Print JSON instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ConnArgs {
    /// The client config these flags describe.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let dir = PathBuf::from(crate::client::DEFAULT_CERT_DIR);
        Ok(ClientConfig {
            endpoints: crate::client::parse_endpoints(&self.endpoints)?,
            tls: TlsFiles {
                ca: self.ca.clone().unwrap_or_else(|| dir.join("ca.pem")),
                cert: self.cert.clone().unwrap_or_else(|| dir.join("client.pem")),
                key: self
                    .key_file
                    .clone()
                    .unwrap_or_else(|| dir.join("client.key")),
            },
            request_timeout: std::time::Duration::from_millis(self.timeout_ms),
        })
    }

    /// Connects.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config()?).await?)
    }
}

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
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(config).await.map(|_| ExitCode::SUCCESS),
        Command::Dev(args) => crate::cli::dev(args).await.map(|_| ExitCode::SUCCESS),
        Command::Certs(c) => certs_cmd(c).map(|_| ExitCode::SUCCESS),
        Command::Kv(c) => kv::run(c).await,
        Command::Status { conn } => kv::status(&conn).await,
        Command::Bench(args) => crate::bench::run(args).await.map(|_| ExitCode::SUCCESS),
    }
}

/// Makes sure `dir` holds a CA plus `node1`, `client` and `admin` certificates.
pub fn ensure_dev_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !dir.join("ca.pem").exists() {
        certs::init_ca(dir, false)?;
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
    crate::telemetry::init_logging(cfg.log_format, &cfg.log_level);
    crate::server::run_until_signal(cfg).await
}

fn certs_cmd(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { dir, force } => {
            std::fs::create_dir_all(&dir)?;
            let paths = certs::init_ca(&dir, force)?;
            println!("created CA {:?} (key {:?})", paths.cert, paths.key);
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

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let certs_dir = args.dir.join("certs");
    ensure_dev_certs(&certs_dir)?;
    let mut raw = crate::config::RawConfig::default();
    raw.node.data_dir = args.dir.join("node1");
    raw.server.listen_addr = format!("127.0.0.1:{}", args.port);
    raw.server.http_addr = format!("127.0.0.1:{}", args.http_port);
    raw.tls.ca_cert = certs_dir.join("ca.pem");
    raw.tls.cert = certs_dir.join("node1.pem");
    raw.tls.key = certs_dir.join("node1.key");
    raw.log.level = "warn".into();
    let cfg = raw.validate(std::path::Path::new("."))?;
    crate::telemetry::init_logging(cfg.log_format, &cfg.log_level);
    let node = crate::server::Node::start(cfg).await?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let env_file = args.dir.join("env");
    let env = format!(
        "export MERIDIAN_ENDPOINTS={}\nexport MERIDIAN_CA={}\nexport MERIDIAN_CERT={}\nexport MERIDIAN_KEY={}\n",
        node.quic_addr(),
        abs(certs_dir.join("ca.pem")).display(),
        abs(certs_dir.join("client.pem")).display(),
        abs(certs_dir.join("client.key")).display(),
    );
    std::fs::write(&env_file, env)?;
    println!(
        "meridian dev: node1 (region local) pid {} quic {} http {}",
        std::process::id(),
        node.quic_addr(),
        node.http_addr().map_or("-".into(), |a| a.to_string())
    );
    println!(
        "meridian dev: in another shell: source {} && meridian kv get demo/greeting",
        env_file.display()
    );
    let demo = dev_demo(&node, &certs_dir).await;
    if let Err(e) = &demo {
        eprintln!("demo failed: {e:#}");
    }
    if !args.demo_only {
        println!("meridian dev: serving until Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
    }
    node.shutdown().await;
    demo
}

async fn dev_demo(node: &crate::server::Node, certs_dir: &std::path::Path) -> anyhow::Result<()> {
    use crate::types::{Compare, CompareOp, CompareTarget, Op, Txn};
    let client = Client::connect(ClientConfig {
        endpoints: vec![node.quic_addr()],
        tls: TlsFiles {
            ca: certs_dir.join("ca.pem"),
            cert: certs_dir.join("client.pem"),
            key: certs_dir.join("client.key"),
        },
        request_timeout: std::time::Duration::from_secs(5),
    })
    .await?;
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
    client.close().await;
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
