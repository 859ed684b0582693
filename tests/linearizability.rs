//! Linearizability under leader kills, checked by the memoised Wing & Gong
//! search in `tests/common/register.rs` (a real checker: it searches for a
//! legal sequential order consistent with real time and fails when none
//! exists; this file's last tests check the checker).
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
//! The history is checked twice: with the defaults, and with every
//! linearizable read sharing a leadership confirmation with others
//! (`raft.direct_read_confirmations = 0`, docs/consistency.md R3).
//!
//! Short variant by default (CI); `MERIDIAN_LONG_TESTS=1` runs a longer one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use common::register::{assert_linearizable, History, RegOp, RegRet, Verdict, CHECK_STEPS};
use meridian::client::Client;
use meridian::types::{Compare, CompareOp, CompareTarget, Op, Txn};
type Testers = Mutex<BTreeMap<usize, History>>;

const KEYS: usize = 8;

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
    history_under_leader_kills(DevCluster::start()).await;
}

/// The same history check with every linearizable read sharing a leadership
/// confirmation (`raft.direct_read_confirmations = 0`: the shared path of
/// `raft::reads`, which by default serves only ranges with more than 64
/// reads in flight), then a burst of concurrent reads that /metrics shows
/// were answered by shared confirmations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_with_shared_read_confirmations_is_linearizable() {
    const READERS: usize = 16;
    const READS: usize = 20;
    let cluster = DevCluster::start_with_env(&[("MERIDIAN_RAFT__DIRECT_READ_CONFIRMATIONS", "0")]);
    let cluster = history_under_leader_kills(cluster).await;
    let before = shared_read_counters(&cluster).await;
    let client = Arc::new(
        Client::connect(cluster.client_config(Duration::from_secs(10)))
            .await
            .unwrap(),
    );
    client.put(key(0), "burst").await.unwrap();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..READS {
                    let r = client.get(key(0)).await.expect("linearizable get");
                    assert_eq!(
                        r.kv.map(|kv| kv.value),
                        Some(b"burst".to_vec()),
                        "a read after the acknowledged put must see it"
                    );
                }
            })
        })
        .collect();
    for r in readers {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("readers finish")
            .unwrap();
    }
    let after = shared_read_counters(&cluster).await;
    let reads = after.0 - before.0;
    let confirmations = after.1 - before.1;
    println!("{reads} shared reads, {confirmations} shared confirmations");
    assert!(
        reads >= (READERS * READS) as f64,
        "every linearizable read shares with direct_read_confirmations = 0: {reads} shared reads counted for {} reads",
        READERS * READS
    );
    assert!(
        confirmations >= 1.0 && confirmations <= reads,
        "{confirmations} confirmations for {reads} shared reads"
    );
    drop(cluster);
}

/// (shared reads, shared confirmations) summed over the nodes' /metrics.
async fn shared_read_counters(cluster: &DevCluster) -> (f64, f64) {
    let https = cluster.https("client");
    let (mut reads, mut confirmations) = (0.0, 0.0);
    let mut names: Vec<&String> = cluster.pids.keys().collect();
    names.sort();
    for n in names {
        let addr: std::net::SocketAddr = cluster.http_addr(n).parse().unwrap();
        let reply = https.request(addr, "GET", "/metrics", b"").await;
        assert_eq!(reply.status, 200, "{n} /metrics");
        for line in reply.text().lines() {
            let value = || line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            if line.starts_with("meridian_raft_shared_reads_total") {
                reads += value();
            } else if line.starts_with("meridian_raft_shared_read_confirmations_total") {
                confirmations += value();
            }
        }
    }
    (reads, confirmations)
}

/// Four clients run get / put / compare-and-swap on [`KEYS`] keys while the
/// leader of their range is SIGKILLed and restarted; the history must be
/// linearizable. Returns the cluster, all nodes running.
async fn history_under_leader_kills(mut cluster: DevCluster) -> DevCluster {
    let long = std::env::var("MERIDIAN_LONG_TESTS").is_ok_and(|v| v == "1");
    let (kills, between) = if long {
        (10, Duration::from_secs(5))
    } else {
        (2, Duration::from_secs(2))
    };
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
    let testers = std::mem::take(&mut *testers.lock().unwrap());
    let started = Instant::now();
    let keys = assert_linearizable(&testers, key);
    println!("checked {keys} keys in {:?}", started.elapsed());
    cluster
}

fn done(h: &mut History, thread: u64, op: RegOp, ret: RegRet) {
    h.on_invoke(thread, op)
        .unwrap()
        .on_return(thread, ret)
        .unwrap();
}

#[test]
fn a_read_after_a_completed_write_must_see_it() {
    let mut stale = History::default();
    done(&mut stale, 0, RegOp::Write(1), RegRet::WriteOk);
    done(&mut stale, 1, RegOp::Read, RegRet::Read(None));
    assert_eq!(stale.check(CHECK_STEPS), Verdict::NotLinearizable);
    let mut concurrent = History::default();
    concurrent.on_invoke(0, RegOp::Write(1)).unwrap();
    done(&mut concurrent, 1, RegOp::Read, RegRet::Read(None));
    concurrent.on_return(0, RegRet::WriteOk).unwrap();
    assert_eq!(
        concurrent.check(CHECK_STEPS),
        Verdict::Linearizable,
        "a read concurrent with the write may see the old value"
    );
}

#[test]
fn an_unknown_outcome_may_or_may_not_have_taken_effect() {
    for seen in [Some(7), None] {
        let mut h = History::default();
        h.on_invoke(0, RegOp::Write(7)).unwrap();
        done(&mut h, 1, RegOp::Read, RegRet::Read(seen));
        assert_eq!(h.check(CHECK_STEPS), Verdict::Linearizable, "{seen:?}");
    }
    // Once a read saw it, a later read cannot miss it.
    let mut h = History::default();
    h.on_invoke(0, RegOp::Write(7)).unwrap();
    done(&mut h, 1, RegOp::Read, RegRet::Read(Some(7)));
    done(&mut h, 2, RegOp::Read, RegRet::Read(None));
    assert_eq!(h.check(CHECK_STEPS), Verdict::NotLinearizable);
    // Nor before its call.
    let mut early = History::default();
    done(&mut early, 1, RegOp::Read, RegRet::Read(Some(7)));
    early.on_invoke(0, RegOp::Write(7)).unwrap();
    assert_eq!(early.check(CHECK_STEPS), Verdict::NotLinearizable);
}

#[test]
fn compare_and_swap_follows_the_value() {
    let mut h = History::default();
    done(&mut h, 0, RegOp::Write(1), RegRet::WriteOk);
    done(
        &mut h,
        0,
        RegOp::Cas {
            expected: 1,
            new: 2,
        },
        RegRet::Cas(true),
    );
    done(
        &mut h,
        1,
        RegOp::Cas {
            expected: 1,
            new: 3,
        },
        RegRet::Cas(false),
    );
    done(&mut h, 1, RegOp::Read, RegRet::Read(Some(2)));
    assert_eq!(h.check(CHECK_STEPS), Verdict::Linearizable);
    let mut lost = History::default();
    done(&mut lost, 0, RegOp::Write(1), RegRet::WriteOk);
    done(
        &mut lost,
        0,
        RegOp::Cas {
            expected: 1,
            new: 2,
        },
        RegRet::Cas(true),
    );
    done(
        &mut lost,
        1,
        RegOp::Cas {
            expected: 1,
            new: 3,
        },
        RegRet::Cas(true),
    );
    assert_eq!(lost.check(CHECK_STEPS), Verdict::NotLinearizable);
}

/// The shape that kept stateright's search busy: many operations of
/// unknown outcome spread over a long history, with a violation at the
/// end that forces the search to rule out every order. The cache
/// bounds it by the distinct states (here 400,000-800,000 steps for ten
/// writes of unknown outcome among 70 operations: each subset of them may
/// have taken effect).
#[test]
fn long_histories_with_unknown_outcomes_are_decided_within_the_budget() {
    let build = |last_read: Option<u64>| {
        let mut h = History::default();
        let mut value = 0;
        for round in 0..10u64 {
            // A write left in flight for good (its own thread), then
            // completed traffic.
            h.on_invoke(100 + round, RegOp::Write(1_000 + round))
                .unwrap();
            for c in 0..3u64 {
                value += 1;
                done(&mut h, c, RegOp::Write(value), RegRet::WriteOk);
                done(&mut h, c, RegOp::Read, RegRet::Read(Some(value)));
            }
        }
        done(&mut h, 0, RegOp::Read, RegRet::Read(last_read));
        h
    };
    let steps = 2_000_000;
    assert_eq!(build(Some(1_009)).check(steps), Verdict::Linearizable);
    assert_eq!(build(Some(30)).check(steps), Verdict::Linearizable);
    assert_eq!(
        build(Some(999)).check(steps),
        Verdict::NotLinearizable,
        "a value never written"
    );
    assert!(matches!(
        build(Some(999)).check(10),
        Verdict::Undecided { .. }
    ));
}

#[test]
fn a_thread_has_one_operation_in_flight() {
    let mut h = History::default();
    h.on_invoke(0, RegOp::Read).unwrap();
    assert!(h.on_invoke(0, RegOp::Read).is_err());
    assert!(h.on_return(1, RegRet::WriteOk).is_err());
    assert_eq!(h.len(), 1);
}
