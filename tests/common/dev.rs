//! A `meridian dev` cluster (three `meridian serve` processes) for tests,
//! stopped with SIGTERM on drop (SIGKILL after a bounded wait), and node
//! processes the test restarts itself, killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian::client::{parse_endpoints, ClientConfig};
use meridian::transport::TlsFiles;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// The `meridian` binary the cluster runs: this build's, or the one named
/// by `MERIDIAN_TEST_BIN` (for measuring runs against a release build).
fn bin() -> String {
    std::env::var("MERIDIAN_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}
const START_BOUND: Duration = Duration::from_secs(60);

/// How long a stopped cluster's processes get after SIGTERM.
const TERM_BOUND: Duration = Duration::from_secs(15);

fn terminate(child: &mut Child) {
    super::wan_dev::terminate(child, TERM_BOUND);
}

/// A running `meridian dev`.
pub struct DevCluster {
    pub dir: tempfile::TempDir,
    /// Node name -> pid of the process `meridian dev` started.
    pub pids: HashMap<String, u32>,
    dev: Child,
    /// Nodes the test restarted itself.
    restarted: Vec<Child>,
    /// Extra environment of every node (kept for restarts).
    env: Vec<(String, String)>,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for c in self.restarted.iter_mut() {
            terminate(c);
        }
        terminate(&mut self.dev);
    }
}

/// Port offsets a test cluster picks for itself (its ports are 7379..7400
/// plus the offset): below the kernel's ephemeral ports (32768 and up), so
/// no client socket of the test or of the nodes can already hold one, and
/// below the fixed offsets (20000 and up) the multi-region tests use.
const FREE_OFFSETS: std::ops::Range<u32> = 1_000..12_000;
/// Ports one single-region dev cluster binds, from 7379 plus its offset.
const CLUSTER_PORTS: std::ops::Range<u16> = 7379..7400;
/// Candidate offsets tried before giving up.
const OFFSET_TRIES: u32 = 500;

/// An offset in [`FREE_OFFSETS`] whose cluster ports are free right now
/// (UDP and TCP), spread by process id and a per-process counter so test
/// binaries and tests running at once start from different places. A
/// port taken between this check and the node's bind fails the start
/// loudly; that is rare, not silent.
pub fn free_offset() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = (FREE_OFFSETS.end - FREE_OFFSETS.start) / 20;
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..OFFSET_TRIES {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = FREE_OFFSETS.start + (seed + n * 7) % span * 20;
        let offset = u16::try_from(offset).expect("offsets fit in u16");
        let free = CLUSTER_PORTS.clone().all(|p| {
            let port = p + offset;
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return offset;
        }
    }
    panic!("no free port offset in {FREE_OFFSETS:?} after {OFFSET_TRIES} tries");
}

impl DevCluster {
    /// Starts `meridian dev` and waits (bounded) until it serves.
    pub fn start() -> DevCluster {
        Self::start_with_env(&[])
    }

    /// [`DevCluster::start`] with extra environment for every node (config
    /// overrides such as `MERIDIAN_RAFT__SNAPSHOT_AFTER_LOGS`).
    pub fn start_with_env(env: &[(&str, &str)]) -> DevCluster {
        Self::start_at(free_offset(), env)
    }

    /// [`DevCluster::start_with_env`] at a chosen `--port-offset` (ports of
    /// `regions/local-3.toml`, 7379..=7387, plus `offset`).
    pub fn start_at(offset: u16, env: &[(&str, &str)]) -> DevCluster {
        let dir = tempfile::tempdir().unwrap();
        let offset = offset.to_string();
        let mut dev = Command::new(bin())
            .current_dir(dir.path())
            .envs(env.iter().copied())
            // One region: these tests exercise a region under faults; the
            // three-region default is tests/wan.rs's.
            .args([
                "dev",
                "--topology",
                concat!(env!("CARGO_MANIFEST_DIR"), "/regions/local-3.toml"),
                "--port-offset",
                &offset,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = dev.stdout.take().unwrap();
        let mut cluster = DevCluster {
            dir,
            pids: HashMap::new(),
            dev,
            restarted: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("meridian dev did not come up");
            let Some(rest) = line.strip_prefix("meridian dev: ") else {
                continue;
            };
            if let (Some(name), Some(pid)) =
                (rest.split_whitespace().next(), rest.split(" pid ").nth(1))
            {
                if let Some(pid) = pid.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    cluster.pids.insert(name.to_string(), pid);
                }
            }
            if rest.starts_with("serving until Ctrl-C") {
                return cluster;
            }
        }
    }

    fn env_var(&self, name: &str) -> String {
        let env = std::fs::read_to_string(self.dir.path().join("meridian-dev/env")).unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    }

    /// The `MERIDIAN_*` variables `meridian dev` wrote, for running the CLI
    /// against the cluster.
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        [
            "MERIDIAN_ENDPOINTS",
            "MERIDIAN_CA",
            "MERIDIAN_CERT",
            "MERIDIAN_KEY",
        ]
        .into_iter()
        .map(|name| (name, self.env_var(name)))
        .collect()
    }

    /// Runs the CLI against the cluster (its `cli_env`): exit code, stdout,
    /// stderr.
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(bin())
            .envs(self.cli_env())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// An address from node `name`'s config (`listen_addr` or `http_addr`).
    fn config_addr(&self, name: &str, field: &str) -> String {
        let path = self.dir.path().join(format!("meridian-dev/{name}.toml"));
        let toml = std::fs::read_to_string(path).unwrap();
        toml.lines()
            .find_map(|l| l.strip_prefix(&format!("{field} = ")))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    /// Node `name`'s QUIC address.
    pub fn quic_addr(&self, name: &str) -> String {
        self.config_addr(name, "listen_addr")
    }

    /// Node `name`'s HTTP gateway address (HTTPS: `meridian dev` sets
    /// `server.http_tls`).
    pub fn http_addr(&self, name: &str) -> String {
        self.config_addr(name, "http_addr")
    }

    /// The certificates `meridian dev` made (`ca`, `client`, `admin`, nodes).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("meridian-dev/certs")
    }

    /// An HTTPS client of the gateways presenting certificate `name`
    /// (`client` or `admin`).
    pub fn https(&self, name: &str) -> super::http::Https {
        super::http::Https::with_cert(&self.certs_dir(), name)
    }

    /// A client config reaching every node.
    pub fn client_config(&self, timeout: Duration) -> ClientConfig {
        ClientConfig {
            endpoints: parse_endpoints(&self.env_var("MERIDIAN_ENDPOINTS")).unwrap(),
            tls: TlsFiles {
                ca: self.env_var("MERIDIAN_CA").into(),
                cert: self.env_var("MERIDIAN_CERT").into(),
                key: self.env_var("MERIDIAN_KEY").into(),
            },
            request_timeout: timeout,
            bind: None,
        }
    }

    /// Stops every node (SIGTERM, bounded), keeping the data directories.
    pub fn stop_all(&mut self) {
        for c in self.restarted.iter_mut() {
            terminate(c);
        }
        terminate(&mut self.dev);
    }

    /// SIGKILLs node `name`'s current process.
    pub fn kill9(&mut self, name: &str) {
        let pid = self.pids[name];
        assert!(Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
        // Reap it if it is one of ours (the dev process reaps its own).
        for c in self.restarted.iter_mut().filter(|c| c.id() == pid) {
            let _ = c.wait();
        }
    }

    /// Starts node `name` again from its config (same data directory).
    pub fn restart(&mut self, name: &str) {
        let dir: PathBuf = self.dir.path().join("meridian-dev");
        let child = Command::new(bin())
            .current_dir(&dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["serve", "--config", &format!("{name}.toml")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.pids.insert(name.to_string(), child.id());
        self.restarted.push(child);
    }
}
