//! SIGKILL of a range leader's process under concurrent write load, with
//! the region run by `meridian dev` (three `meridian serve` processes): no
//! acknowledged write is lost, and the time until writes succeed again is
//! measured and printed (not asserted tightly: CI machines are noisy).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use meridian::client::{parse_endpoints, Client, ClientConfig};
use meridian::transport::TlsFiles;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const BOUND: Duration = Duration::from_secs(60);

/// Stops `meridian dev` (and so its nodes) even if the test fails.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_offset() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    (port.saturating_sub(7379) / 10) * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset().to_string();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["dev", "--port-offset", &offset])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let dev = Dev(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // node name -> pid, until the cluster serves.
    let mut pids = std::collections::HashMap::new();
    let deadline = Instant::now() + BOUND;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev did not come up");
        if let Some(rest) = line.strip_prefix("meridian dev: ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(pid)) = (words.next(), rest.split(" pid ").nth(1)) {
                if let Some(pid) = pid
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    pids.insert(name.to_string(), pid);
                }
            }
            if rest.starts_with("serving until Ctrl-C") {
                break;
            }
        }
    }
    assert_eq!(pids.len(), 3, "{pids:?}");
    let env = std::fs::read_to_string(dir.path().join("meridian-dev/env")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    };
    let client = Arc::new(
        Client::connect(ClientConfig {
            endpoints: parse_endpoints(&var("MERIDIAN_ENDPOINTS")).unwrap(),
            tls: TlsFiles {
                ca: var("MERIDIAN_CA").into(),
                cert: var("MERIDIAN_CERT").into(),
                key: var("MERIDIAN_KEY").into(),
            },
            request_timeout: Duration::from_secs(15),
        })
        .await
        .unwrap(),
    );

    // Eight writers on the config/ range, recording acknowledged writes and
    // the time of each success.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                let key = format!("config/w{w}/{i}");
                if let Ok(r) = client.put(&key, "v").await {
                    acked.lock().unwrap().push((key, r.version, Instant::now()));
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Find the leader of the config/ range and SIGKILL its process.
    let status = client.region_status().await.unwrap();
    let range = status.iter().find(|s| s.start == b"config/").unwrap();
    let leader = range.leader.expect("the range has a leader");
    let victim = format!("node{leader}");
    let pid = pids[&victim];
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    assert!(Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());

    // Writes must resume (bounded), then run a little longer.
    let resumed = loop {
        let resumed = acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, _, t)| *t > killed_at)
            .map(|(_, _, t)| *t);
        if let Some(t) = resumed {
            break t;
        }
        assert!(
            killed_at.elapsed() < BOUND,
            "writes never resumed after killing {victim}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "killed leader {victim} (pid {pid}) of range {} after {before} acknowledged writes; \
         first write acknowledged by the new leader {:?} later",
        range.range,
        resumed - killed_at
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(BOUND, w).await.unwrap().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > before, "writes continued after the kill");
    for (key, version, _) in &acked {
        let got = client.get(key).await.unwrap();
        let kv = got
            .kv
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.version, *version, "{key}");
    }
    client.close().await;
    drop(dev);
}
