//! The three-region `meridian dev` (the embedded regions/wan-3.toml: nine
//! `meridian serve` processes behind the WAN emulator, us-east, eu-west
//! and ap-south, 70/140/200 ms round trips) for acceptance tests, at a
//! port offset the test chooses. Clients are made *in* a region: bound to
//! its client address (127.0.i.200, which the emulator classifies as that
//! region) and given that region's nodes, exactly as a shell that sourced
//! `meridian-dev/REGION.env`.
//!
//! Every process is stopped on drop, also when the test fails: nodes the
//! test restarted itself (SIGTERM, then SIGKILL), then `meridian dev`
//! (SIGTERM: it stops its nodes and the emulator; SIGKILL after a bounded
//! wait), then any node process still alive from the pids it printed. And
//! should the test process end without dropping it (a runner killed on a
//! timeout, a panic while panicking), a watchdog shell stops them (see
//! [`watch`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use meridian::client::{parse_endpoints, Client, ClientConfig};
use meridian::transport::TlsFiles;

/// The regions of regions/wan-3.toml, in file order (region `i` counted
/// from 1 binds 127.0.i.x).
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// Bound on `meridian dev` being ready (every region took a write;
/// measured 20-30 s on two busy cores, debug build).
pub const START_BOUND: Duration = Duration::from_secs(300);
/// Bound on one CLI command.
const CLI_BOUND: Duration = Duration::from_secs(60);
/// How long a stopping process gets after SIGTERM before SIGKILL.
const TERM_BOUND: Duration = Duration::from_secs(30);

/// The `meridian` binary: this build's, or `MERIDIAN_TEST_BIN`'s.
fn bin() -> String {
    std::env::var("MERIDIAN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meridian").into())
}

/// Node environment: as tests/wan.rs, slower Raft heartbeats (three per
/// election timeout) so nine debug-build nodes on two cores keep up; the
/// round trips under test are the emulator's.
const NODE_ENV: [(&str, &str); 3] = [
    ("MERIDIAN_RAFT__HEARTBEAT_INTERVAL_MS", "200"),
    ("MERIDIAN_RAFT__ELECTION_TIMEOUT_MIN_MS", "1000"),
    ("MERIDIAN_RAFT__ELECTION_TIMEOUT_MAX_MS", "2000"),
];

/// A command with none of the caller's `MERIDIAN_*` variables.
fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MERIDIAN_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, a wait of at most `bound`, then SIGKILL (shared with
/// `super::dev`).
pub fn terminate(child: &mut Child, bound: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a watchdog that stops `pids` (SIGTERM, SIGKILL 15 s later) once
/// this test process has ended, however it ended. It forgets each pid as
/// soon as that process is gone (so a pid reused later is never signalled)
/// and exits when none is left. A process the test stops itself is
/// therefore never signalled by it.
pub fn watch(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let script = r#"
        test=$1; shift; pids="$*"
        while kill -0 "$test" 2>/dev/null; do
            alive=""
            for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
            [ -z "$alive" ] && exit 0
            pids=$alive
            sleep 1
        done
        kill -TERM $pids 2>/dev/null
        for _ in $(seq 15); do
            alive=""
            for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
            [ -z "$alive" ] && exit 0
            pids=$alive
            sleep 1
        done
        kill -KILL $pids 2>/dev/null
    "#;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Whether `pid` is a live `meridian serve` (not a zombie, not a reused pid).
fn is_live_node(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    !stat.is_empty() && !stat.contains(") Z") && cmdline.contains("serve")
}

/// A running three-region `meridian dev`. Its methods take `&self`, so
/// tests running at once may share one.
pub struct WanDev {
    dir: tempfile::TempDir,
    dev: Mutex<Child>,
    /// Every line `meridian dev` printed until it was ready.
    pub out: Vec<String>,
    procs: Mutex<Procs>,
    /// How long start-up took.
    pub start_time: Duration,
    /// The config overrides every node was started with (restarts too).
    env: Vec<(String, String)>,
}

/// The node processes, changed by kills and restarts.
#[derive(Default)]
struct Procs {
    /// Node name -> pid of its current process.
    pids: HashMap<String, u32>,
    /// Every node pid ever started (stopped on drop if still alive).
    all_pids: Vec<u32>,
    /// Nodes the test restarted itself.
    restarted: Vec<Child>,
}

impl Drop for WanDev {
    fn drop(&mut self) {
        let procs = self.procs.get_mut().unwrap_or_else(PoisonError::into_inner);
        for c in procs.restarted.iter_mut() {
            terminate(c, TERM_BOUND);
        }
        terminate(
            self.dev.get_mut().unwrap_or_else(PoisonError::into_inner),
            TERM_BOUND,
        );
        for pid in &procs.all_pids {
            if is_live_node(*pid) {
                signal(*pid, "KILL");
            }
        }
    }
}

/// Why `meridian dev` did not come up.
enum StartFailure {
    /// It exited (its demo failed, which a loaded machine can cause).
    Exited(String),
    /// Not ready within the bound.
    TimedOut(String),
}

impl WanDev {
    /// Starts `meridian dev --port-offset offset` in a fresh directory and
    /// waits (bounded) until every region took a write, which `meridian
    /// dev` checks before its demo. If it exits before, it is started once
    /// more, saying so.
    pub fn start(offset: u16) -> WanDev {
        Self::start_with(offset, None)
    }

    /// [`WanDev::start`] with `--topology topology` (regions/wan-3.toml
    /// when `None`).
    pub fn start_with(offset: u16, topology: Option<&Path>) -> WanDev {
        Self::start_with_env(offset, topology, &[])
    }

    /// [`WanDev::start_with`], with `env` (`MERIDIAN_<SECTION>__<FIELD>`
    /// config overrides) set for `meridian dev` and so for every node.
    pub fn start_with_env(offset: u16, topology: Option<&Path>, env: &[(&str, &str)]) -> WanDev {
        match Self::try_start(offset, topology, env) {
            Ok(dev) => dev,
            Err(StartFailure::Exited(out)) => {
                println!("meridian dev exited before it was ready; starting it once more:\n{out}");
                match Self::try_start(offset, topology, env) {
                    Ok(dev) => dev,
                    Err(StartFailure::Exited(out) | StartFailure::TimedOut(out)) => {
                        panic!("meridian dev did not come up twice:\n{out}")
                    }
                }
            }
            Err(StartFailure::TimedOut(out)) => panic!("meridian dev did not come up:\n{out}"),
        }
    }

    fn try_start(
        offset: u16,
        topology: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<WanDev, StartFailure> {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut cmd = clean_command(&bin());
        cmd.current_dir(dir.path())
            .args(["dev", "--dir", "meridian-dev", "--port-offset"])
            .arg(offset.to_string());
        if let Some(t) = topology {
            cmd.arg("--topology").arg(t);
        }
        let mut dev = cmd
            .envs(NODE_ENV)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        watch(&[dev.id()]);
        let stdout = dev.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Drains to the end even when nobody listens any more, so
            // `meridian dev` never writes into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut cluster = WanDev {
            dir,
            dev: Mutex::new(dev),
            out: Vec::new(),
            procs: Mutex::new(Procs::default()),
            start_time: Duration::ZERO,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let ready = cluster.read_until_ready(&lines);
        let pids = cluster.procs().all_pids.clone();
        watch(&pids);
        ready?;
        cluster.start_time = started.elapsed();
        Ok(cluster)
    }

    /// Reads `meridian dev`'s output until every region is ready (its
    /// first demo line; bounded), noting the node pids it prints.
    fn read_until_ready(&mut self, lines: &mpsc::Receiver<String>) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(StartFailure::Exited(self.out.join("\n")))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(StartFailure::TimedOut(self.out.join("\n")))
                }
            };
            self.out.push(line.clone());
            // `meridian dev: us-east-1 (region us-east) pid 123 quic ...`
            if let Some(rest) = line.strip_prefix("meridian dev: ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                let pid = rest.split(" pid ").nth(1).and_then(|r| {
                    r.split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u32>().ok())
                });
                if let Some(pid) = pid.filter(|p| *p != 0) {
                    let procs = self.procs.get_mut().unwrap_or_else(PoisonError::into_inner);
                    procs.pids.insert(name.to_string(), pid);
                    procs.all_pids.push(pid);
                }
            }
            // Its demo begins once a write succeeded in every region: the
            // cluster is ready. The demo's requests then run beside the
            // test's (and may fail: `meridian dev` keeps serving).
            if line.starts_with("demo: ") || line.starts_with("meridian dev: serving until Ctrl-C")
            {
                return Ok(());
            }
        }
    }

    fn procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `meridian dev`'s directory: node configs, data, logs, env files.
    pub fn dev_dir(&self) -> PathBuf {
        self.dir.path().join("meridian-dev")
    }

    /// The `export NAME=value` pairs of `REGION.env` (of `env` in a
    /// one-region topology, which has no per-region file).
    pub fn env(&self, region: &str) -> Vec<(String, String)> {
        let file = self.dev_dir().join(format!("{region}.env"));
        if file.exists() {
            env_file(&file)
        } else {
            env_file(&self.dev_dir().join("env"))
        }
    }

    /// A client in `region`, on that region's nodes.
    pub fn client_config(&self, region: &str, timeout: Duration) -> ClientConfig {
        let env: HashMap<String, String> = self.env(region).into_iter().collect();
        // A one-region topology has no emulator: no address to bind.
        let bind = env.get("MERIDIAN_BIND").map(|ip| format!("{ip}:0"));
        ClientConfig {
            endpoints: parse_endpoints(&env["MERIDIAN_ENDPOINTS"]).unwrap(),
            tls: TlsFiles {
                ca: env["MERIDIAN_CA"].clone().into(),
                cert: env["MERIDIAN_CERT"].clone().into(),
                key: env["MERIDIAN_KEY"].clone().into(),
            },
            request_timeout: timeout,
            bind: bind.map(|b| b.parse().unwrap()),
        }
    }

    /// Connects a client in `region` (bounded retries: a node may be down).
    pub async fn client(&self, region: &str, timeout: Duration) -> Client {
        let cfg = self.client_config(region, timeout);
        let mut last = String::new();
        for _ in 0..20 {
            match Client::connect(cfg.clone()).await {
                Ok(c) => return c,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("no client in {region}: {last}");
    }

    /// Connects an admin client in `region` (policy changes need the
    /// admin role; `meridian dev` issues its certificate beside the
    /// client's).
    pub async fn admin_client(&self, region: &str, timeout: Duration) -> Client {
        let mut cfg = self.client_config(region, timeout);
        cfg.tls.cert = cfg.tls.cert.with_file_name("admin.pem");
        cfg.tls.key = cfg.tls.key.with_file_name("admin.key");
        Client::connect(cfg).await.expect("an admin client")
    }

    /// Runs the CLI as a shell that sourced `REGION.env` would (bounded).
    pub fn cli(&self, region: &str, args: &[&str]) -> Output {
        let env = self.env(region);
        let mut child = clean_command(&bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + CLI_BOUND;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("meridian {args:?} did not finish within {CLI_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    /// `meridian wan ARGS` against the emulator's control API; panics
    /// unless the emulator accepted it.
    pub fn wan(&self, args: &[&str]) {
        let mut full = vec!["wan"];
        full.extend_from_slice(args);
        let out = self.cli(REGIONS[0], &full);
        assert!(
            out.status.success(),
            "meridian {full:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The emulator's control API (from an env file `meridian dev` wrote).
    pub fn control_addr(&self) -> std::net::SocketAddr {
        self.env(REGIONS[0])
            .iter()
            .find(|(k, _)| k == "MERIDIAN_WAN_CONTROL")
            .and_then(|(_, v)| v.parse().ok())
            .expect("MERIDIAN_WAN_CONTROL in the env file")
    }

    async fn control(&self, req: meridian_chaos::control::Request) {
        use meridian_chaos::control::{send, Response};
        match send(self.control_addr(), &req).await {
            Ok(Response { ok: true, .. }) => {}
            other => panic!("{req}: {other:?}"),
        }
    }

    /// Cuts `region` off every other region at once (packets in flight
    /// included), through the emulator's control API (no CLI process in
    /// between, so a test can cut right after an acknowledgement).
    pub async fn isolate(&self, region: &str) {
        let cut = meridian_chaos::Partition::Isolate {
            region: region.into(),
        };
        self.control(meridian_chaos::control::Request::Partition(cut))
            .await;
    }

    /// Sets the emulated round trip between regions `a` and `b` (through
    /// the control API; packets already queued keep their delay).
    pub async fn set_rtt(&self, a: &str, b: &str, rtt_ms: u64) {
        let req = meridian_chaos::control::Request::Link {
            a: a.into(),
            b: b.into(),
            change: meridian_chaos::LinkChange {
                rtt_ms: Some(rtt_ms),
                jitter_ms: None,
                loss: None,
            },
        };
        self.control(req).await;
    }

    /// Removes every partition (through the control API).
    pub async fn heal(&self) {
        self.control(meridian_chaos::control::Request::Heal).await;
    }

    /// The name of the node that leads, in `region`, the range holding
    /// `key`, as a node of that region reports it (bounded retries).
    pub async fn leader_of(&self, region: &str, key: &[u8]) -> String {
        let client = self.client(region, Duration::from_secs(5)).await;
        let mut last = String::new();
        for _ in 0..60 {
            match client.region_status().await {
                Ok(status) => {
                    let range = status.iter().find(|s| {
                        s.start.as_slice() <= key && s.end.as_deref().is_none_or(|e| key < e)
                    });
                    if let Some(leader) = range.and_then(|r| r.leader) {
                        client.close().await;
                        // Raft ids count a region's nodes from 1, in file order.
                        return format!("{region}-{leader}");
                    }
                    last = format!("no leader yet: {status:?}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        client.close().await;
        panic!("no leader of {key:?} in {region}: {last}");
    }

    /// SIGSTOPs node `name`'s current process: it keeps its sockets and
    /// state but answers nothing (not even QUIC acknowledgements) until
    /// [`WanDev::resume`]. Dropping the `WanDev` kills it anyway.
    pub fn pause(&self, name: &str) {
        signal(self.procs().pids[name], "STOP");
    }

    /// SIGCONTs node `name`'s current process (see [`WanDev::pause`]).
    pub fn resume(&self, name: &str) {
        signal(self.procs().pids[name], "CONT");
    }

    /// SIGKILLs node `name`'s current process.
    pub fn kill9(&self, name: &str) {
        let mut procs = self.procs();
        let pid = procs.pids[name];
        signal(pid, "KILL");
        // Reap it if it is one of ours (`meridian dev` reaps its own).
        for c in procs.restarted.iter_mut().filter(|c| c.id() == pid) {
            let _ = c.wait();
        }
    }

    /// SIGKILLs node `name`, waits (bounded) until it is gone, and deletes
    /// its data directory except the control range's store (`control/`):
    /// a node whose range data was lost. [`WanDev::restart`] then starts
    /// its ranges empty. The control range's replica is kept because a
    /// control voter that loses its state must rejoin under a new identity
    /// (Raft's votes and log must survive), which is not what this
    /// simulates.
    pub fn wipe(&self, name: &str) {
        let pid = self.procs().pids[name];
        self.kill9(name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while is_live_node(pid) {
            assert!(
                Instant::now() < deadline,
                "{name} (pid {pid}) did not exit after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let data = self.dev_dir().join(name);
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "control") {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
    }

    /// Starts node `name` again from its config and data directory, as
    /// `meridian dev` did (`meridian serve --config NAME.toml` in its
    /// directory), its output appended to its log.
    pub fn restart(&self, name: &str) {
        let dir = self.dev_dir();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join(format!("{name}.log")))
            .unwrap();
        let child = clean_command(&bin())
            .current_dir(&dir)
            .envs(NODE_ENV)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["serve", "--config", &format!("{name}.toml")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        watch(&[child.id()]);
        let mut procs = self.procs();
        procs.pids.insert(name.to_string(), child.id());
        procs.all_pids.push(child.id());
        procs.restarted.push(child);
    }

    /// The last `lines` lines of node `name`'s log (for failure messages).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dev_dir().join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// `export NAME=value` lines of an env file `meridian dev` wrote.
pub fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `MERIDIAN_LONG_TESTS=1`.
pub fn long_tests() -> bool {
    std::env::var("MERIDIAN_LONG_TESTS").is_ok_and(|v| v == "1")
}
