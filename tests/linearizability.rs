//! Linearizability under leader kills, checked by stateright's
//! `LinearizabilityTester` (a real checker: it searches for a legal
//! sequential order consistent with real time and fails when none exists).
//!
//! `meridian dev` runs three `meridian serve` processes. Concurrent clients
//! do get, put and compare-and-swap on a few keys while the leader of those
//! keys' range is repeatedly SIGKILLed and restarted. Every operation is
//! recorded (invocation before the request is sent, return after the reply
//! arrives, under one lock so the record respects real time). An operation
//! whose outcome is unknown (timeout, lost connection) stays in flight for
//! good — the checker may place it anywhere after its invocation, or nowhere —
//! and its client continues under a fresh thread id.
//!
//! Short variant by default (CI); `MERIDIAN_LONG_TESTS=1` runs a longer one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use common::register::{CasRegister, RegOp, RegRet};
use meridian::client::Client;
use meridian::types::{Compare, CompareOp, CompareTarget, Op, Txn};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

type Testers = Mutex<BTreeMap<usize, LinearizabilityTester<u64, CasRegister>>>;

const KEYS: usize = 8;
/// Stack for the checker thread (it recurses once per operation of a key).
const CHECKER_STACK_BYTES: usize = 1 << 30;

fn key(k: usize) -> String {
    format!("lin/k{k}")
}

async fn execute(client: &Client, k: usize, op: &RegOp) -> Result<RegRet, ()> {
    match op {
        RegOp::Read => {
            let r = client.get(key(k)).await.map_err(|_| ())?;
            let v = r.kv.map(|kv| {
                String::from_utf8_lossy(&kv.value)
                    .parse::<u64>()
                    .map_err(|_| ())
            });
            Ok(RegRet::Read(v.transpose()?))
        }
        RegOp::Write(v) => {
            client.put(key(k), v.to_string()).await.map_err(|_| ())?;
            Ok(RegRet::WriteOk)
        }
        RegOp::Cas { expected, new } => {
            let txn = Txn {
                compares: vec![Compare {
                    key: key(k).into_bytes(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(expected.to_string().into_bytes()),
                }],
                success: vec![Op::Put {
                    key: key(k).into_bytes(),
                    value: new.to_string().into_bytes(),
                }],
                failure: vec![],
            };
            let r = client.txn(&txn).await.map_err(|_| ())?;
            Ok(RegRet::Cas(r.succeeded))
        }
    }
}

/// One client: random ops until `stop`; a fresh thread id after an unknown outcome.
async fn client_loop(
    client: Arc<Client>,
    testers: Arc<Testers>,
    next_thread: Arc<AtomicU64>,
    next_value: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (u64, u64) {
    let mut rng = seed | 1;
    let mut thread = next_thread.fetch_add(1, Ordering::Relaxed);
    let (mut done, mut unknown) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % KEYS as u64) as usize;
        let op = match (rng >> 8) % 3 {
            0 => RegOp::Read,
            1 => RegOp::Write(next_value.fetch_add(1, Ordering::Relaxed)),
            _ => RegOp::Cas {
                expected: (rng >> 16) % next_value.load(Ordering::Relaxed).max(1),
                new: next_value.fetch_add(1, Ordering::Relaxed),
            },
        };
        testers
            .lock()
            .unwrap()
            .entry(k)
            .or_default()
            .on_invoke(thread, op.clone())
            .expect("valid invocation");
        match execute(&client, k, &op).await {
            Ok(ret) => {
                let mut t = testers.lock().unwrap();
                t.get_mut(&k)
                    .unwrap()
                    .on_return(thread, ret)
                    .expect("valid return");
                done += 1;
            }
            Err(()) => {
                // Outcome unknown: leave it in flight, continue as a new thread.
                unknown += 1;
                thread = next_thread.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (done, unknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_leader_kills_is_linearizable() {
    let long = std::env::var("MERIDIAN_LONG_TESTS").is_ok_and(|v| v == "1");
    let (kills, between) = if long {
        (10, Duration::from_secs(5))
    } else {
        (2, Duration::from_secs(2))
    };
    let mut cluster = DevCluster::start();
    let cfg = cluster.client_config(Duration::from_secs(5));
    let testers: Arc<Testers> = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_thread = Arc::new(AtomicU64::new(0));
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let client = Arc::new(Client::connect(cfg.clone()).await.unwrap());
        let args = (
            testers.clone(),
            next_thread.clone(),
            next_value.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(client_loop(
            client,
            args.0,
            args.1,
            args.2,
            args.3,
            0x9E37_79B9 * (c + 1),
        )));
    }
    let admin = Client::connect(cfg).await.unwrap();
    for round in 0..kills {
        tokio::time::sleep(between).await;
        // The admin's node may be the one killed last round: retry (bounded).
        let mut status = None;
        for _ in 0..50 {
            match admin.region_status().await {
                Ok(s) => {
                    status = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let status = status.expect("no node answered region status");
        // lin/ keys live in the last range (after "locks0").
        let range = status.iter().find(|s| s.end.is_none()).unwrap();
        let Some(leader) = range.leader else { continue };
        let victim = format!("node{leader}");
        println!(
            "round {round}: SIGKILL {victim} (leader of range {})",
            range.range
        );
        cluster.kill9(&victim);
        // Stay down past an election timeout, so another node takes over.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.restart(&victim);
    }
    tokio::time::sleep(between).await;
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut unknown) = (0, 0);
    let deadline = Duration::from_secs(60);
    for t in tasks {
        let (d, u) = tokio::time::timeout(deadline, t).await.unwrap().unwrap();
        done += d;
        unknown += u;
    }
    admin.close().await;
    println!("{done} completed operations, {unknown} with unknown outcome, {kills} leader kills");
    assert!(
        done > 50,
        "too few operations completed to say anything ({done})"
    );
    // The checker recurses once per operation: give it a deep stack.
    let testers = std::mem::take(&mut *testers.lock().unwrap());
    let started = Instant::now();
    let verdicts = std::thread::Builder::new()
        .stack_size(CHECKER_STACK_BYTES)
        .spawn(move || {
            testers
                .iter()
                .map(|(k, t)| (*k, t.len(), t.is_consistent()))
                .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .unwrap();
    for (k, ops, consistent) in &verdicts {
        assert!(
            consistent,
            "history of {} is not linearizable ({ops} operations)",
            key(*k)
        );
    }
    println!("checked {} keys in {:?}", verdicts.len(), started.elapsed());
    drop(cluster);
}

#[test]
fn the_checker_rejects_a_stale_read() {
    // Guard against a checker that cannot fail: write 1 completes, then a
    // read that starts afterwards returns the old (absent) value.
    let mut t = LinearizabilityTester::<u64, CasRegister>::new(CasRegister::default());
    t.on_invoke(0, RegOp::Write(1))
        .unwrap()
        .on_return(0, RegRet::WriteOk)
        .unwrap();
    t.on_invoke(1, RegOp::Read)
        .unwrap()
        .on_return(1, RegRet::Read(None))
        .unwrap();
    assert!(!t.is_consistent());
    let mut ok = LinearizabilityTester::<u64, CasRegister>::new(CasRegister::default());
    ok.on_invoke(0, RegOp::Write(1)).unwrap();
    ok.on_invoke(1, RegOp::Read)
        .unwrap()
        .on_return(1, RegRet::Read(None))
        .unwrap();
    ok.on_return(0, RegRet::WriteOk).unwrap();
    assert!(
        ok.is_consistent(),
        "a read concurrent with the write may see the old value"
    );
}
