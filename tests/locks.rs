//! Locks, fencing tokens and elections against a real region (`meridian
//! dev`: three `meridian serve` processes).
//!
//! The safety test is the Jepsen scenario that broke etcd's locks: clients
//! contend for a lock guarding a register that only takes writes carrying
//! the newest fencing token; range leaders are SIGKILLed and restarted
//! while they run, and holders stall past their lease. A checker over the
//! history shows no write accepted with a stale token: none invoked after
//! a newer token was handed out, and the register's versions carry
//! non-decreasing tokens.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use meridian::client::{Client, ClientError, LeaseKeeper};
use meridian::error_code::ErrorCode;
use meridian::wire::{ConsistencyV1, SetPolicyV1};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const LOCK: &str = "locks/register";
/// In another range than the lock (and the lease range): guarded writes
/// there depend on the fence pushed to it.
const REGISTER: &str = "config/register";
const WORKERS: usize = 4;
/// How long the workers contend.
const RUN_FOR: Duration = Duration::from_secs(24);
/// Every wait of this file ends by then.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Event {
    /// An acquire returned `token` at `at`.
    Granted { token: u64, at: Instant },
    /// A guarded write with `token`, sent at `sent`, was accepted.
    Accepted { token: u64, sent: Instant },
    /// A guarded write was refused for its token.
    Refused,
}

fn code_of(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

async fn worker(id: usize, client: Arc<Client>, history: Arc<Mutex<Vec<Event>>>, until: Instant) {
    let mut round = 0u32;
    while Instant::now() < until {
        round += 1;
        let Ok(lease) = client.lease_grant(Duration::from_secs(2)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let keeper = LeaseKeeper::start(client.clone(), &[lease]);
        let token = match client
            .lock_acquire(LOCK, lease.id, Some(Duration::from_secs(4)))
            .await
        {
            Ok(t) => t,
            Err(_) => {
                keeper.stop();
                let _ = client.lease_revoke(lease.id).await;
                continue;
            }
        };
        history.lock().unwrap().push(Event::Granted {
            token,
            at: Instant::now(),
        });
        let write = |i: u32| {
            let client = client.clone();
            let history = history.clone();
            async move {
                let sent = Instant::now();
                let value = format!("{token}:{id}:{round}:{i}");
                match client.put_fenced(REGISTER, value, LOCK, token).await {
                    Ok(_) => history
                        .lock()
                        .unwrap()
                        .push(Event::Accepted { token, sent }),
                    Err(e) if code_of(&e) == Some(ErrorCode::FenceRejected) => {
                        history.lock().unwrap().push(Event::Refused)
                    }
                    // Unknown outcomes and unavailability: the register's
                    // own history is checked below, whatever happened.
                    Err(_) => {}
                }
            }
        };
        for i in 0..3 {
            write(i).await;
        }
        if round % 3 == 0 {
            // Stall past the lease (a GC pause, a partition), then act on
            // the old grant as a confused holder would.
            keeper.stop();
            tokio::time::sleep(Duration::from_secs(3)).await;
            write(99).await;
        } else {
            keeper.stop();
            let _ = client.lock_release(LOCK, token).await;
            let _ = client.lease_revoke(lease.id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_with_a_stale_fencing_token_is_accepted_under_leader_kills_and_stalled_holders() {
    let mut cluster = DevCluster::start();
    let history = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + RUN_FOR;
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let client = Arc::new(
            Client::connect(cluster.client_config(Duration::from_secs(10)))
                .await
                .unwrap(),
        );
        workers.push(tokio::spawn(worker(id, client, history.clone(), until)));
    }
    // Kill the leader of the lease range, then of the register's range,
    // and so on, each restarted a moment later.
    let observer = Client::connect(cluster.client_config(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut kills = 0;
    for starts in [&b""[..], b"config/", b"", b"config/"] {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let Ok(status) = observer.region_status().await else {
            continue;
        };
        let Some(leader) = status
            .iter()
            .find(|s| s.start == starts)
            .and_then(|s| s.leader)
        else {
            continue;
        };
        let victim = format!("node{leader}");
        cluster.kill9(&victim);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
        cluster.restart(&victim);
    }
    for w in workers {
        tokio::time::timeout(BOUND, w).await.unwrap().unwrap();
    }
    assert!(kills >= 2, "the test killed {kills} leaders");

    let history = history.lock().unwrap().clone();
    let grants: Vec<(u64, Instant)> = history
        .iter()
        .filter_map(|e| match e {
            Event::Granted { token, at } => Some((*token, *at)),
            _ => None,
        })
        .collect();
    let accepted: Vec<(u64, Instant)> = history
        .iter()
        .filter_map(|e| match e {
            Event::Accepted { token, sent } => Some((*token, *sent)),
            _ => None,
        })
        .collect();
    let refused = history
        .iter()
        .filter(|e| matches!(e, Event::Refused))
        .count();
    println!(
        "{} grants, {} accepted guarded writes, {refused} refused, {kills} leader kills",
        grants.len(),
        accepted.len()
    );
    assert!(
        grants.len() >= 4 && accepted.len() >= 4,
        "too little happened"
    );
    assert!(refused >= 1, "no stalled holder was ever fenced off");
    // 1. No accepted write was sent after a newer token had been handed out.
    for (token, sent) in &accepted {
        if let Some((newer, at)) = grants.iter().find(|(t, at)| t > token && at < sent) {
            panic!("a write with token {token} was accepted although token {newer} was granted {:?} before it was sent", sent.duration_since(*at));
        }
    }
    // 2. Tokens strictly increase grant after grant.
    let mut tokens: Vec<u64> = grants.iter().map(|(t, _)| *t).collect();
    let n = tokens.len();
    tokens.dedup();
    assert_eq!(tokens.len(), n, "a token was granted twice");
    // 3. The register's versions, oldest first, carry non-decreasing tokens.
    let versions = observer.history(REGISTER, 1_000).await.unwrap();
    let mut last = 0u64;
    for v in versions.entries.iter().rev() {
        let value = v.value.as_ref().expect("never deleted");
        let token: u64 = String::from_utf8_lossy(value)
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            token >= last,
            "register version with token {token} after {last}"
        );
        last = token;
    }
}

/// A `meridian` child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `child` printed a line containing `needle`.
fn wait_line(child: &mut Proc, needle: &str) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    rx.recv_timeout(BOUND).expect("the line never came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_locks_and_fences_from_the_cli_and_bad_input() {
    let cluster = DevCluster::start();
    let cli = |args: &[&str]| cluster.cli(args);
    let spawn = |args: &[&str]| {
        Proc(
            Command::new(BIN)
                .envs(cluster.cli_env())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let token_of = |line: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        v["token"].as_str().unwrap().parse().unwrap()
    };

    // Election: a leads, b waits; a dies (SIGKILL: no resign), its lease
    // runs out and b leads with a newer term.
    let mut a = spawn(&[
        "elect",
        "campaign",
        "locks/leader",
        "node-a",
        "--ttl",
        "2",
        "--json",
    ]);
    let term_a = token_of(&wait_line(&mut a, "token"));
    let mut b = spawn(&[
        "elect",
        "campaign",
        "locks/leader",
        "node-b",
        "--ttl",
        "2",
        "--json",
    ]);
    let (status, out, err) = cli(&["elect", "leader", "locks/leader"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.starts_with("node-a"), "{out}");
    let killed = Instant::now();
    drop(a);
    let term_b = token_of(&wait_line(&mut b, "token"));
    println!(
        "leadership moved {:?} after the leader died",
        killed.elapsed()
    );
    assert!(term_b > term_a, "terms {term_a} then {term_b}");
    let (_, out, _) = cli(&["elect", "leader", "locks/leader", "--json"]);
    assert!(out.contains("node-b"), "{out}");
    let (status, _, err) = cli(&["elect", "resign", "locks/leader"]);
    assert_eq!(status, Some(0), "{err}");
    let (status, _, _) = cli(&["elect", "leader", "locks/leader"]);
    assert_eq!(status, Some(1), "no leader after the resign");
    drop(b);

    // Locks and guarded writes.
    let (status, out, err) = cli(&["lock", "acquire", "locks/cli", "--detach", "--json"]);
    assert_eq!(status, Some(0), "{err}");
    let t1 = token_of(&out);
    let fence = |t: u64| format!("locks/cli:{t}");
    let (status, _, err) = cli(&["kv", "put", "config/guarded", "1", "--fence", &fence(t1)]);
    assert_eq!(status, Some(0), "{err}");
    let (status, _, err) = cli(&["lock", "acquire", "locks/cli", "--wait", "1"]);
    assert_ne!(status, Some(0));
    assert!(
        err.contains("MER-1016"),
        "held by the detached lease: {err}"
    );
    let (status, _, err) = cli(&["lock", "release", "locks/cli", "--token", &t1.to_string()]);
    assert_eq!(status, Some(0), "{err}");
    let (status, out, err) = cli(&["lock", "acquire", "locks/cli", "--detach", "--json"]);
    assert_eq!(status, Some(0), "{err}");
    let t2 = token_of(&out);
    assert!(t2 > t1);
    let (status, _, err) = cli(&[
        "kv",
        "put",
        "config/guarded",
        "stale",
        "--fence",
        &fence(t1),
    ]);
    assert_ne!(status, Some(0));
    assert!(err.contains("MER-1017"), "{err}");
    let (_, out, _) = cli(&["kv", "get", "config/guarded"]);
    assert!(out.contains('1') && !out.contains("stale"), "{out}");
    // A token of another lock is refused too.
    let (_, out, _) = cli(&["lock", "acquire", "locks/other", "--detach", "--json"]);
    let other = token_of(&out);
    let (status, _, err) = cli(&["kv", "put", "config/guarded", "x", "--fence", &fence(other)]);
    assert_ne!(status, Some(0));
    assert!(err.contains("MER-1017"), "{err}");
    let (status, _, err) = cli(&["kv", "put", "config/guarded", "x", "--fence", "nocolon"]);
    assert_eq!(status, Some(2), "a usage error: {err}");

    // Bad input through the SDK: a lock on a non-strong prefix, an unknown
    // lease, a release of a token that is not the grant.
    let client = Client::connect(cluster.client_config(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut admin_cfg = cluster.client_config(Duration::from_secs(10));
    admin_cfg.tls.cert = cluster.certs_dir().join("admin.pem");
    admin_cfg.tls.key = cluster.certs_dir().join("admin.key");
    let admin = Client::connect(admin_cfg).await.unwrap();
    admin
        .set_policy(SetPolicyV1 {
            prefix: Some(b"ads/".to_vec()),
            consistency: Some(ConsistencyV1::Eventual),
            ..SetPolicyV1::default()
        })
        .await
        .unwrap();
    let lease = client.lease_grant(Duration::from_secs(30)).await.unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        match client.lock_acquire("ads/lock", lease.id, None).await {
            Err(e) if e.code() == Some(ErrorCode::CoordinationNotAllowed) => break,
            other => assert!(Instant::now() < deadline, "never refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = client
        .lock_acquire("locks/x", 999_999, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LeaseNotFound), "{e}");
    let e = client.lock_release("locks/cli", t1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FenceRejected), "{e}");
    assert_eq!(
        client
            .lock_holder("locks/cli")
            .await
            .unwrap()
            .map(|h| h.token),
        Some(t2),
        "nothing changed"
    );
}
