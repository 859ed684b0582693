//! A replicated region of three real nodes on loopback (in-process `Node`s
//! with their QUIC servers): the SDK is redirected to each range's leader,
//! reads after writes are linearizable from any entry node, a transaction
//! that spans two ranges is refused, and the region keeps serving when the
//! leader's node stops.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian::certs::{self, Role};
use meridian::client::{Client, ClientConfig};
use meridian::config::raft::RawPeer;
use meridian::config::RawConfig;
use meridian::error_code::ErrorCode;
use meridian::server::Node;
use meridian::types::{Op, Txn};
use meridian::wire::{self, ReadConsistencyV1, RequestV1, ResponseBodyV1, ResponseV1};

const BOUND: Duration = Duration::from_secs(30);

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

struct Region {
    _dir: tempfile::TempDir,
    certs: common::TestCerts,
    addrs: Vec<SocketAddr>,
    nodes: Vec<Option<Node>>,
}

/// Changes node `i`'s raw config before it is validated.
type Tweak = fn(u64, &mut RawConfig);

fn node_config(
    dir: &std::path::Path,
    certs: &common::TestCerts,
    i: u64,
    addr: SocketAddr,
    peers: &[RawPeer],
    bootstrap: bool,
) -> meridian::config::NodeConfig {
    node_config_with(dir, certs, i, addr, peers, bootstrap, |_, _| {})
}

fn node_config_with(
    dir: &std::path::Path,
    certs: &common::TestCerts,
    i: u64,
    addr: SocketAddr,
    peers: &[RawPeer],
    bootstrap: bool,
    tweak: Tweak,
) -> meridian::config::NodeConfig {
    let mut raw = RawConfig::default();
    raw.node.id = format!("node{i}");
    raw.node.zone = format!("zone{i}");
    raw.node.data_dir = dir.join(format!("node{i}"));
    raw.server.listen_addr = addr.to_string();
    raw.server.http_addr = String::new();
    raw.tls.ca_cert = certs.dir.join("ca.pem");
    raw.tls.cert = certs.dir.join(format!("node{i}.pem"));
    raw.tls.key = certs.dir.join(format!("node{i}.key"));
    raw.raft.node_id = i;
    raw.raft.bootstrap = bootstrap;
    raw.raft.peers = peers.to_vec();
    raw.raft.range_prefixes = vec!["locks/".into()];
    raw.raft.heartbeat_interval_ms = 100;
    raw.raft.election_timeout_min_ms = 400;
    raw.raft.election_timeout_max_ms = 800;
    tweak(i, &mut raw);
    raw.validate(dir).unwrap()
}

fn peer(i: u64, addr: SocketAddr) -> RawPeer {
    RawPeer {
        id: i,
        name: format!("node{i}"),
        addr: addr.to_string(),
        zone: format!("zone{i}"),
    }
}

async fn start_region() -> Region {
    start_region_with(|_, _| {}).await
}

async fn start_region_with(tweak: Tweak) -> Region {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    for i in 2..=4 {
        certs::issue(&certs.dir, Role::Node, &format!("node{i}"), &certs.dir, &[]).unwrap();
    }
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_udp_port()).parse().unwrap())
        .collect();
    let peers: Vec<RawPeer> = (1..=3u64).map(|i| peer(i, addrs[i as usize - 1])).collect();
    let mut nodes = Vec::new();
    for i in 1..=3u64 {
        let addr = addrs[i as usize - 1];
        let cfg = node_config_with(dir.path(), &certs, i, addr, &peers, i == 1, tweak);
        nodes.push(Some(Node::start(cfg).await.unwrap()));
    }
    Region {
        _dir: dir,
        certs,
        addrs,
        nodes,
    }
}

impl Region {
    async fn client(&self, entry: &[SocketAddr]) -> Client {
        Client::connect(ClientConfig {
            endpoints: entry.to_vec(),
            tls: self.certs.files("client"),
            request_timeout: Duration::from_secs(10),
            bind: None,
        })
        .await
        .unwrap()
    }

    async fn stop_all(mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(node) = n.take() {
                node.shutdown().await;
            }
        }
    }
}

/// Retries `put` until the region has elected leaders (bounded).
async fn put_eventually(c: &Client, key: &str, value: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        match c.put(key, value).await {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "region never accepted a write: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_redirects_to_leaders_and_survives_losing_one() {
    let mut region = start_region().await;
    // Enter through each node in turn: followers must redirect to the leader.
    for (i, addr) in region.addrs.clone().iter().enumerate() {
        let c = region.client(&[*addr]).await;
        put_eventually(&c, &format!("config/from-{i}"), "v").await;
        put_eventually(&c, &format!("locks/from-{i}"), "held").await;
        let got = c.get(format!("config/from-{i}")).await.unwrap();
        assert_eq!(got.kv.unwrap().value, b"v");
        c.close().await;
    }
    // A client entering through a follower caches each range's leader from
    // the redirect, and sends later requests straight to it.
    let c = region.client(&region.addrs).await;
    let leader_addr = |status: &[meridian::wire::RangeStatusV1], start: &[u8]| {
        let s = status.iter().find(|s| s.start == start).unwrap();
        region.addrs[s.leader.expect("range has a leader") as usize - 1]
    };
    let status = c.region_status().await.unwrap();
    let locks_leader = leader_addr(&status, b"locks/");
    let follower = *region.addrs.iter().find(|a| **a != locks_leader).unwrap();
    let f = region.client(&[follower]).await;
    f.put("locks/via-follower", "v").await.unwrap();
    let cached = f.cached_routes();
    let route = cached.iter().find(|r| r.start == b"locks/").unwrap();
    assert_eq!(route.leader, Some(locks_leader), "{cached:?}");
    assert_eq!(
        cached.len(),
        status.len(),
        "the whole range table is learned"
    );

    // Reads through any node see every acknowledged write (linearizable).
    let (all, _) = c.list_prefix("", 100).await.unwrap();
    let keys: Vec<String> = all
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    for i in 0..3 {
        assert!(keys.contains(&format!("config/from-{i}")), "{keys:?}");
        assert!(keys.contains(&format!("locks/from-{i}")), "{keys:?}");
    }
    // Serializable reads are answered by whichever node receives them (no
    // redirect), from what that replica has applied.
    for addr in &region.addrs {
        let one = region.client(&[*addr]).await;
        let req = wire::encode_request(&RequestV1::GetWith {
            key: b"config/from-0".to_vec(),
            at: None,
            consistency: ReadConsistencyV1::Serializable,
        });
        let deadline = Instant::now() + BOUND;
        loop {
            match wire::decode_response(&one.exchange(&req).await.unwrap()).unwrap() {
                ResponseV1::Ok {
                    body: ResponseBodyV1::Value(Some(kv)),
                    ..
                } => {
                    assert_eq!(kv.value, b"v");
                    break;
                }
                ResponseV1::Ok { .. } => {} // this replica has not applied it yet
                other => panic!("serializable read through {addr} answered {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "replica {addr} never applied the write"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        one.close().await;
    }
    // A transaction must stay inside one range.
    let cross = Txn {
        compares: vec![],
        success: vec![
            Op::Put {
                key: b"config/x".to_vec(),
                value: b"1".to_vec(),
            },
            Op::Put {
                key: b"locks/x".to_vec(),
                value: b"1".to_vec(),
            },
        ],
        failure: vec![],
    };
    let e = c.txn(&cross).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");

    // Stop the leader of locks/; writes go on, also through `f`, whose
    // cache now names a stopped node.
    let idx = region
        .addrs
        .iter()
        .position(|a| *a == locks_leader)
        .unwrap();
    let stopped = region.nodes[idx].take().unwrap();
    stopped.shutdown().await;
    let started = Instant::now();
    put_eventually(&c, "config/after-failover", "ok").await;
    println!(
        "first write after stopping node{} took {:?}",
        idx + 1,
        started.elapsed()
    );
    put_eventually(&f, "locks/after-failover-f", "ok").await;
    let status = f.region_status().await.unwrap();
    let cached = f.cached_routes();
    let route = cached.iter().find(|r| r.start == b"locks/").unwrap();
    assert_ne!(
        route.leader,
        Some(locks_leader),
        "stale entry kept: {cached:?}"
    );
    if let Some(l) = route.leader {
        assert_eq!(l, leader_addr(&status, b"locks/"), "{cached:?}");
    }
    f.close().await;
    let got = c.get("config/after-failover").await.unwrap();
    assert_eq!(got.kv.unwrap().value, b"ok");
    assert_eq!(
        c.get("locks/from-0").await.unwrap().kv.unwrap().value,
        b"held"
    );
    c.close().await;
    region.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_and_removed_under_write_load() {
    use meridian::wire::MembershipChangeV1;
    use std::sync::Arc;

    let region = start_region().await;
    let c = Arc::new(region.client(&region.addrs).await);
    put_eventually(&c, "config/seed", "1").await;

    // A fourth node starts empty, knowing only the peer list.
    let addr4: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let mut peers: Vec<RawPeer> = (1..=3u64)
        .map(|i| peer(i, region.addrs[i as usize - 1]))
        .collect();
    peers.push(peer(4, addr4));
    let dir4 = region._dir.path().to_path_buf();
    let node4 = Node::start(node_config(&dir4, &region.certs, 4, addr4, &peers, false))
        .await
        .unwrap();

    // Background writers; every acknowledged key must survive the changes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, stop) = (c.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                let key = if i % 2 == 0 {
                    format!("config/w{w}-{i}")
                } else {
                    format!("locks/w{w}-{i}")
                };
                if c.put(&key, "v").await.is_ok() {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        }));
    }

    let admin = Client::connect(ClientConfig {
        endpoints: region.addrs.clone(),
        tls: region.certs.files("admin"),
        request_timeout: Duration::from_secs(60),
        bind: None,
    })
    .await
    .unwrap();
    // A client certificate may not change membership.
    let denied = c
        .region_change(1, MembershipChangeV1::RemoveNode { id: 2 })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::PermissionDenied), "{denied}");
    let ranges = admin.region_status().await.unwrap();
    assert_eq!(
        ranges.len(),
        3,
        "ranges from the prefix: before, locks/, after"
    );
    for r in &ranges {
        let add = MembershipChangeV1::AddNode {
            id: 4,
            name: "node4".into(),
            addr: addr4.to_string(),
            zone: "zone4".into(),
        };
        // Right after bootstrap a range's initial membership may not be
        // committed yet, and a change is refused until it is: retry.
        let deadline = Instant::now() + BOUND;
        let voters = loop {
            match admin.region_change(r.range, add.clone()).await {
                Ok(v) => break v,
                Err(e) => assert!(Instant::now() < deadline, "range {}: {e}", r.range),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(voters.contains(&4), "{voters:?}");
        let voters = admin
            .region_change(r.range, MembershipChangeV1::RemoveNode { id: 2 })
            .await
            .unwrap();
        assert_eq!(voters, vec![1, 3, 4]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(tokio::time::timeout(BOUND, w).await.unwrap().unwrap());
    }
    assert!(
        acked.len() > 10,
        "writes continued during the changes ({})",
        acked.len()
    );
    for key in &acked {
        assert!(
            c.get(key).await.unwrap().kv.is_some(),
            "acknowledged {key} lost"
        );
    }
    // The new node holds the data: its own view of every range shows it applied.
    let via4 = Client::connect(ClientConfig {
        endpoints: vec![addr4],
        tls: region.certs.files("client"),
        request_timeout: Duration::from_secs(10),
        bind: None,
    })
    .await
    .unwrap();
    for s in via4.region_status().await.unwrap() {
        assert_eq!(s.voters, vec![1, 3, 4], "range {}", s.range);
        assert!(
            s.applied_index.is_some(),
            "node4 applied nothing in range {}",
            s.range
        );
    }
    via4.close().await;
    admin.close().await;
    c.close().await;
    node4.shutdown().await;
    region.stop_all().await;
}

/// `region move-leader` (MembershipChangeV1::MoveLeader): the range's
/// leadership goes to the voter named, the voters stay, writes go on; a
/// target that is not a voter is refused with nothing changed, moving to
/// the current leader changes nothing, and a client certificate may not
/// move leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_moves_to_the_voter_named_and_bad_targets_are_refused() {
    use meridian::wire::MembershipChangeV1::MoveLeader;

    let region = start_region().await;
    let c = region.client(&region.addrs).await;
    put_eventually(&c, "config/before", "1").await;
    let admin = Client::connect(ClientConfig {
        endpoints: region.addrs.clone(),
        tls: region.certs.files("admin"),
        request_timeout: Duration::from_secs(10),
        bind: None,
    })
    .await
    .unwrap();
    // The leader of range `r` as the region reports it (bounded: a node's
    // view follows the election by a heartbeat).
    let leader_of = |r: u64, want: Option<u64>| {
        let admin = &admin;
        async move {
            let deadline = Instant::now() + BOUND;
            loop {
                let status = admin.region_status().await.unwrap();
                let s = status.iter().find(|s| s.range == r).unwrap();
                if let Some(l) = s.leader.filter(|l| want.is_none_or(|w| w == *l)) {
                    return (l, s.voters.clone());
                }
                assert!(
                    Instant::now() < deadline,
                    "range {r}: leader {:?}, wanted {want:?}",
                    s.leader
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let range = admin.region_status().await.unwrap()[0].range;
    let (before, voters) = leader_of(range, None).await;
    let to = *voters.iter().find(|v| **v != before).unwrap();

    let denied = c.region_change(range, MoveLeader { to }).await.unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::PermissionDenied), "{denied}");
    let not_a_voter = admin
        .region_change(range, MoveLeader { to: 99 })
        .await
        .unwrap_err();
    assert_eq!(
        not_a_voter.code(),
        Some(ErrorCode::InvalidArgument),
        "{not_a_voter}"
    );
    assert!(
        not_a_voter.to_string().contains("not a voter"),
        "{not_a_voter}"
    );
    assert_eq!(
        leader_of(range, None).await.0,
        before,
        "a refused move moves nothing"
    );
    assert_eq!(
        admin
            .region_change(range, MoveLeader { to: before })
            .await
            .unwrap(),
        voters,
        "moving to the leader is a no-op"
    );

    let after = admin.region_change(range, MoveLeader { to }).await.unwrap();
    assert_eq!(after, voters, "the voters stay");
    assert_eq!(leader_of(range, Some(to)).await.0, to);
    put_eventually(&c, "config/after", "2").await;
    assert_eq!(
        c.get("config/before").await.unwrap().kv.unwrap().value,
        b"1"
    );
    assert_eq!(c.get("config/after").await.unwrap().kv.unwrap().value, b"2");
    admin.close().await;
    c.close().await;
    region.stop_all().await;
}

/// How far nodes 2 and 3 run ahead of node 1 in the skewed region.
const SKEW_MS: i64 = 3_000;
/// Their tolerated offset: above the skew, so the skew alone is legal.
const SKEWED_MAX_OFFSET_MS: u64 = 10_000;

/// A region where node 1's clock is right and nodes 2 and 3 run `SKEW_MS`
/// ahead (`clock.offset_ms`). The first range (keys before `locks/`) has
/// node 1 as its only voter, so node 1 leads it; `locks/` and the last range
/// have nodes 2 and 3 only, so a fast node leads them. Returns the region
/// and an admin client.
async fn skewed_region() -> (Region, Client) {
    let region = start_region_with(|i, raw| {
        raw.clock.offset_ms = if i == 1 { 0 } else { SKEW_MS };
        raw.clock.max_offset_ms = SKEWED_MAX_OFFSET_MS;
    })
    .await;
    let admin = Client::connect(ClientConfig {
        endpoints: region.addrs.clone(),
        tls: region.certs.files("admin"),
        request_timeout: Duration::from_secs(30),
        bind: None,
    })
    .await
    .unwrap();
    use meridian::wire::MembershipChangeV1::RemoveNode;
    let deadline = Instant::now() + BOUND;
    let ranges = loop {
        match admin.region_status().await {
            Ok(s) if s.iter().all(|r| r.leader.is_some()) => break s,
            other => assert!(Instant::now() < deadline, "no leaders: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for r in &ranges {
        let removed: &[u64] = if r.start.is_empty() { &[2, 3] } else { &[1] };
        for id in removed {
            // Right after bootstrap the initial membership may not be
            // committed yet, and a change is refused until it is: retry.
            let deadline = Instant::now() + BOUND;
            while let Err(e) = admin.region_change(r.range, RemoveNode { id: *id }).await {
                assert!(Instant::now() < deadline, "range {}: {e}", r.range);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (region, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_sees_a_write_acknowledged_by_a_leader_with_a_faster_clock() {
    let (region, admin) = skewed_region().await;
    let c = region.client(&region.addrs).await;
    put_eventually(&c, "a/first-range", "slow leader").await;
    // Acknowledged by a fast leader: stamped about SKEW_MS ahead of node 1.
    put_eventually(&c, "locks/fast", "fast leader").await;
    // The listing starts on node 1 (the first range's leader) right away,
    // well inside the skew: every range must still be read at or above the
    // write (docs/consistency.md R3c).
    let (all, truncated) = c.list_prefix("", 100).await.unwrap();
    let keys: Vec<String> = all
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    assert!(!truncated);
    assert_eq!(keys, ["a/first-range", "locks/fast"], "{keys:?}");
    c.close().await;
    admin.close().await;
    region.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_page_on_a_leader_with_a_slower_clock_is_served() {
    let (region, admin) = skewed_region().await;
    let c = region.client(&region.addrs).await;
    put_eventually(&c, "a/first-range", "slow leader").await;
    put_eventually(&c, "locks/fast", "fast leader").await;
    // A page served by a fast leader carries a timestamp node 1's clock has
    // not reached yet; the next page, in node 1's range, is read at it.
    let fast = c.range("locks/", Some(b"locks0"), 10, None).await.unwrap();
    assert_eq!(fast.kvs.len(), 1);
    let slow = c
        .range("", Some(b"locks/"), 10, Some(fast.served_at))
        .await
        .unwrap();
    assert_eq!(slow.served_at, fast.served_at);
    assert_eq!(slow.kvs.len(), 1, "{:?}", slow.kvs);
    assert_eq!(slow.kvs[0].value, b"slow leader");
    // A timestamp beyond clock.max_offset_ms ahead is refused with the clock
    // offset error (G2), not served and not merged.
    let far_ms = fast.served_at.physical_unix_ms() + 2 * SKEWED_MAX_OFFSET_MS as i64;
    let far = meridian::types::Timestamp::from_parts(far_ms, 0).unwrap();
    let e = c
        .range("", Some(b"locks/"), 10, Some(far))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ClockOffset), "{e}");
    c.close().await;
    admin.close().await;
    region.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_applying_with_a_zero_history_window() {
    // Regression (issue 8, item 2): with the horizon following each node's
    // clock, a gc pass that ran while an entry was between commit and apply
    // put the horizon above the entry's version; apply refused it and the
    // group stopped. A zero window makes that race frequent. The horizon now
    // stays below what each replica has applied (docs/consistency.md G8).
    let region = start_region_with(|_, raw| {
        raw.storage.history_window_secs = 0;
        raw.storage.gc_interval_ms = 100;
    })
    .await;
    let c = region.client(&region.addrs).await;
    put_eventually(&c, "config/first", "0").await;
    const WRITES: usize = 300;
    for i in 0..WRITES {
        let w = tokio::time::timeout(BOUND, c.put(format!("config/{i:03}"), "v"))
            .await
            .expect("write timed out");
        assert!(w.is_ok(), "write {i} failed: {w:?}");
    }
    // Every replica applies every write: a serializable read through each
    // node returns the last one (bounded wait).
    for addr in &region.addrs {
        let one = region.client(&[*addr]).await;
        let req = wire::encode_request(&RequestV1::GetWith {
            key: format!("config/{:03}", WRITES - 1).into_bytes(),
            at: None,
            consistency: ReadConsistencyV1::Serializable,
        });
        let deadline = Instant::now() + BOUND;
        loop {
            if let ResponseV1::Ok {
                body: ResponseBodyV1::Value(Some(_)),
                ..
            } = wire::decode_response(&one.exchange(&req).await.unwrap()).unwrap()
            {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} stopped applying");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        one.close().await;
    }
    // Reads at latest pass the horizon, however close behind it follows.
    let got = c.get("config/first").await.unwrap();
    assert_eq!(got.kv.unwrap().value, b"0");
    c.close().await;
    region.stop_all().await;
}
