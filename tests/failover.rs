//! SIGKILL of a range leader's process under concurrent write load, with
//! the region run by `meridian dev` (three `meridian serve` processes): no
//! acknowledged write is lost, and writes resume without waiting out the
//! SDK's QUIC idle timeout. The time until writes succeed again is printed
//! (the figures are in docs/consistency.md, R1b); the assertion is the
//! behaviour: the SDK noticed the dead node from its silence (requests in
//! flight to it failed as "outcome unknown, unresponsive") well before the
//! idle timeout could have.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use meridian::client::{Client, ClientError, OutcomeUnknown, CLIENT_IDLE_TIMEOUT_MS};
use meridian::error_code::ErrorCode;

const BOUND: Duration = Duration::from_secs(60);
/// The SDK must notice the dead leader this soon after the SIGKILL (its
/// in-flight writes fail as unresponsive): half the 3 s idle timeout it
/// used to wait out. Measured: about 0.5 s (docs/consistency.md, R1b).
const NOTICE_BOUND: Duration = Duration::from_millis(1_500);
/// Writes must resume this soon after the SIGKILL: under the 3 s idle
/// timeout the SDK used to wait out (resume took 3.07-4.08 s then). The
/// election is most of it (1.5-1.9 s measured on a loaded 2-core host);
/// measured figures go in the docs, not in an assertion a loaded CI
/// machine could miss.
const RESUME_BOUND: Duration = Duration::from_millis(2_500);

/// `name` as the gossip of whichever node answers sees it (None on errors).
async fn member(client: &Client, name: &str) -> Option<meridian::wire::MemberV1> {
    let members = client.members().await.ok()?;
    members.into_iter().find(|m| m.node_id == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = DevCluster::start();
    assert_eq!(cluster.pids.len(), 3, "{:?}", cluster.pids);
    let client = Arc::new(
        Client::connect(cluster.client_config(Duration::from_secs(15)))
            .await
            .unwrap(),
    );

    // Eight writers on the config/ range, recording acknowledged writes and
    // the time of each success.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, stop) = (client.clone(), stop.clone());
        let (acked, failed) = (acked.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                let key = format!("config/w{w}/{i}");
                let sent = Instant::now();
                match client.put(&key, "v").await {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .push((key, r.version, sent, Instant::now())),
                    Err(e) => failed.lock().unwrap().push((e, Instant::now())),
                }
                i += 1;
            }
        }));
    }
    // Two readers of the same range: a read changes nothing, so one cut off
    // by the dead leader is resent elsewhere, never "outcome unknown".
    let read_errors = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (client, stop, errors) = (client.clone(), stop.clone(), read_errors.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = client.get("config/w0/0").await {
                    errors.lock().unwrap().push(e);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Find the leader of the config/ range and SIGKILL its process.
    let status = client.region_status().await.unwrap();
    let range = status.iter().find(|s| s.start == b"config/").unwrap();
    let leader = range.leader.expect("the range has a leader");
    let victim = format!("node{leader}");
    let pid = cluster.pids[&victim];
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill9(&victim);
    // Writes must resume (bounded), then run a little longer. Only a write
    // sent after the kill counts: an ack already on its way when the signal
    // landed says nothing about the new leader.
    let resumed = loop {
        let resumed = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, sent, _)| *sent > killed_at)
            .map(|(_, _, _, t)| *t)
            .min();
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
    let first_failure = failed
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at > killed_at)
        .min();
    println!(
        "first write failure after the kill (the dead node noticed): {:?}",
        first_failure.map(|t| t - killed_at)
    );
    assert!(
        resumed - killed_at < RESUME_BOUND,
        "writes resumed {:?} after the kill; the SDK waited out its {CLIENT_IDLE_TIMEOUT_MS} ms idle timeout",
        resumed - killed_at
    );
    // The writes in flight to the dead leader failed as outcome unknown
    // (MER-3005), noticed from the node's silence, not from the idle timeout.
    {
        let failed = failed.lock().unwrap();
        let unresponsive: Vec<_> = failed
            .iter()
            .filter(|(e, _)| {
                matches!(
                    e,
                    ClientError::OutcomeUnknown(OutcomeUnknown::Unresponsive { .. })
                )
            })
            .collect();
        assert!(
            !unresponsive.is_empty(),
            "no write in flight to {victim} failed as unresponsive: {failed:?}"
        );
        for (e, at) in &unresponsive {
            assert_eq!(e.code(), Some(ErrorCode::OutcomeUnknown));
            assert!(
                *at - killed_at < NOTICE_BOUND,
                "{e} noticed {:?} after the kill",
                *at - killed_at
            );
        }
        for (e, _) in failed.iter() {
            assert!(
                !matches!(e, ClientError::Api(_)) || e.code() == Some(ErrorCode::NotLeader),
                "a write failed with a refusal: {e}"
            );
        }
    }
    // Gossip declares the SIGKILLed node down (bounded wait; time printed).
    let generation_before = member(&client, &victim).await.map(|m| m.generation);
    let down_after = loop {
        if member(&client, &victim)
            .await
            .is_some_and(|m| m.state == "down")
        {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < BOUND,
            "gossip never declared {victim} down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("gossip declared {victim} down {down_after:?} after SIGKILL");
    // Restarted, it rejoins as itself with a higher generation, alive again.
    cluster.restart(&victim);
    let rejoined = loop {
        if let Some(m) = member(&client, &victim)
            .await
            .filter(|m| m.state == "alive")
        {
            break m;
        }
        assert!(killed_at.elapsed() < 2 * BOUND, "{victim} never rejoined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        Some(rejoined.generation) > generation_before,
        "{rejoined:?} vs {generation_before:?}"
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers.into_iter().chain(readers) {
        tokio::time::timeout(BOUND, w).await.unwrap().unwrap();
    }
    {
        let read_errors = read_errors.lock().unwrap();
        assert!(
            !read_errors.iter().any(ClientError::is_outcome_unknown),
            "a read was reported as outcome unknown: {read_errors:?}"
        );
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > before, "writes continued after the kill");
    for (key, version, _, _) in &acked {
        let got = client.get(key).await.unwrap();
        let kv = got
            .kv
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.version, *version, "{key}");
    }
    client.close().await;
    drop(cluster);
}

/// With every node alive, the first listed endpoint becomes home (it serves
/// the requests that need no leader), whichever handshake completed first:
/// clients given rotated endpoint lists (as `meridian bench --conns`
/// rotates them) spread over the nodes instead of piling onto the fastest.
/// Before, home was the first handshake to complete, so the three
/// rotations below often shared one home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_listed_live_endpoint_becomes_home() {
    let cluster = DevCluster::start();
    let base = cluster.client_config(Duration::from_secs(10));
    let names = ["node1", "node2", "node3"];
    let by_addr: Vec<(std::net::SocketAddr, &str)> = names
        .iter()
        .map(|n| (cluster.quic_addr(n).parse().unwrap(), *n))
        .collect();
    for rotation in 0..names.len() {
        let mut cfg = base.clone();
        cfg.endpoints = by_addr.iter().map(|(a, _)| *a).collect();
        cfg.endpoints.rotate_left(rotation);
        let first = by_addr
            .iter()
            .find(|(a, _)| *a == cfg.endpoints[0])
            .unwrap()
            .1;
        let client = Client::connect(cfg).await.unwrap();
        // Home moves once the first listed handshake completes (within the
        // dial grace of the first one, at least 100 ms): look for a bounded
        // while.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut served_by = Vec::new();
        loop {
            let status = client.status().await.unwrap();
            if status.node_id == first {
                break;
            }
            if !served_by.contains(&status.node_id) {
                served_by.push(status.node_id);
            }
            assert!(
                Instant::now() < deadline,
                "endpoints listed from {first}: requests without a leader still go to {served_by:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And it stays there.
        for _ in 0..5 {
            assert_eq!(client.status().await.unwrap().node_id, first);
        }
    }
    drop(cluster);
}
