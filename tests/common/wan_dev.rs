//! A serving three-region `meridian dev` behind the WAN emulator (nine
//! `meridian serve` processes and the emulator, all children of one `meridian
//! dev`), for tests that drive it from clients in its regions and through
//! the emulator's control API. Stopped on drop (SIGTERM, then SIGKILL after
//! a bounded wait), so a failing test leaves nothing running.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian::client::{parse_endpoints, Client, ClientConfig};
use meridian::transport::TlsFiles;
use meridian_chaos::control::{self, Request, Response};
use meridian_chaos::Partition;

/// Bound on the cluster coming up (nine debug-build nodes on two busy
/// cores take about 30 s).
pub const START_BOUND: Duration = Duration::from_secs(240);
/// Bound on the cluster stopping after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// The `meridian` binary: this build's, or `MERIDIAN_TEST_BIN`.
fn bin() -> String {
    std::env::var("MERIDIAN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meridian").into())
}

/// A running three-region `meridian dev`.
pub struct WanDev {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line it printed so far.
    pub out: Vec<String>,
    /// Where `meridian dev` wrote its env files and node directories.
    pub env_dir: std::path::PathBuf,
}

impl WanDev {
    /// Starts `meridian dev --topology TOPOLOGY --port-offset OFFSET` in
    /// `dir` and waits (bounded by [`START_BOUND`]) until it serves.
    pub fn start(dir: &Path, topology: &Path, offset: u16) -> WanDev {
        let mut child = Command::new(bin())
            .current_dir(dir)
            .args(["dev", "--dir", "meridian-dev", "--port-offset"])
            .arg(offset.to_string())
            .arg("--topology")
            .arg(topology)
            .env_remove("MERIDIAN_BIND")
            // Nine debug-build nodes share two cores: slower Raft heartbeats
            // (as tests/wan.rs) cut their idle load. The round trips under
            // test are the emulator's, not Raft's.
            .env("MERIDIAN_RAFT__HEARTBEAT_INTERVAL_MS", "200")
            .env("MERIDIAN_RAFT__ELECTION_TIMEOUT_MIN_MS", "1000")
            .env("MERIDIAN_RAFT__ELECTION_TIMEOUT_MAX_MS", "2000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut dev = WanDev {
            child,
            lines,
            out: Vec::new(),
            env_dir: dir.join("meridian-dev"),
        };
        dev.wait_for("meridian dev: serving until Ctrl-C", START_BOUND);
        dev
    }

    /// Reads lines until one starts with `prefix` (bounded).
    pub fn wait_for(&mut self, prefix: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!("no `{prefix}` line ({e}); output:\n{}", self.out.join("\n")),
            }
        }
    }

    /// `export NAME=value` of `region`'s env file.
    pub fn env(&self, region: &str, name: &str) -> String {
        let text = std::fs::read_to_string(self.env_dir.join(format!("{region}.env"))).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name} in {region}.env"))
            .to_string()
    }

    /// A client *in* `region` (bound to its client address) of its nodes.
    pub fn client_config(&self, region: &str, request_timeout: Duration) -> ClientConfig {
        let bind: std::net::IpAddr = self.env(region, "MERIDIAN_BIND").parse().unwrap();
        ClientConfig {
            endpoints: parse_endpoints(&self.env(region, "MERIDIAN_ENDPOINTS")).unwrap(),
            tls: TlsFiles {
                ca: self.env(region, "MERIDIAN_CA").into(),
                cert: self.env(region, "MERIDIAN_CERT").into(),
                key: self.env(region, "MERIDIAN_KEY").into(),
            },
            request_timeout,
            bind: Some(SocketAddr::new(bind, 0)),
        }
    }

    /// Connects a client in `region` (bounded by its request timeout).
    pub async fn client(&self, region: &str, request_timeout: Duration) -> Client {
        let cfg = self.client_config(region, request_timeout);
        tokio::time::timeout(request_timeout, Client::connect(cfg))
            .await
            .expect("connect timed out")
            .expect("client connects")
    }

    /// The emulator's control API.
    pub fn control_addr(&self) -> SocketAddr {
        self.env("us-east", "MERIDIAN_WAN_CONTROL").parse().unwrap()
    }

    async fn control(&self, req: Request) {
        match control::send(self.control_addr(), &req).await {
            Ok(Response { ok: true, .. }) => {}
            other => panic!("{req}: {other:?}"),
        }
    }

    /// Cuts `region` off every other region (packets in flight included).
    pub async fn isolate(&self, region: &str) {
        self.control(Request::Partition(Partition::Isolate {
            region: region.into(),
        }))
        .await;
    }

    /// Removes every partition.
    pub async fn heal(&self) {
        self.control(Request::Heal).await;
    }
}

impl Drop for WanDev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + STOP_BOUND;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
