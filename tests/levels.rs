//! Read levels chosen per call and the home-region rule for writes, against
//! real nodes on loopback configured with `[replication]` regions and prefix
//! policies (docs/consistency.md, "Read levels").
//!
//! Two setups:
//! - one node whose region is the cluster's only region, with prefix
//!   policies: its frontier is its applied timestamp, so local levels see
//!   its writes;
//! - two single-node regions `r1` and `r2`, gossiping and replicating to
//!   each other: every read and write here is decided by the real policy
//!   table, and a range's frontier in one region moves as the other
//!   region's closed timestamps arrive. Tests that need a frontier that
//!   cannot move stop `r1`: nothing closes its timestamps in `r2` then.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestNode;
use meridian::client::{Client, ClientConfig, ClientError, Session, SessionToken};
use meridian::config::replication::ReplicationConfig;
use meridian::config::NodeConfig;
use meridian::engine::CAUSAL_WAIT;
use meridian::error_code::ErrorCode;
use meridian::replication::policy::{Consistency, Policy, PolicyTable, Replication};
use meridian::replication::read::{OnStale, ReadLevel};
use meridian::types::{ReadConsistency, Timestamp};
use meridian::wire::{self, ReadConsistencyV1, RequestV1, ResponseV1};

/// Every step of a test is bounded.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("step timed out")
}

fn policy(consistency: Consistency, home: &str) -> Policy {
    Policy {
        consistency,
        home: home.to_string(),
        replication: Replication::Async,
        max_staleness_ms: 5_000,
    }
}

/// `[replication]` over `regions` (the first is the default's home):
/// `ev/` eventual and `ca/` causal homed in the first region, `loc/` strong
/// homed in the last.
fn replication(local: &str, regions: &[&str]) -> ReplicationConfig {
    let all: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    let first = regions[0];
    let last = regions[regions.len() - 1];
    let mut table = PolicyTable::new(all.clone(), policy(Consistency::Strong, first)).unwrap();
    table
        .set(b"ev/", policy(Consistency::Eventual, first))
        .unwrap();
    table
        .set(b"ca/", policy(Consistency::Causal, first))
        .unwrap();
    table
        .set(b"loc/", policy(Consistency::Strong, last))
        .unwrap();
    ReplicationConfig {
        local_region: local.to_string(),
        regions: all,
        table,
    }
}

/// A node of `region` in a cluster of `regions`, with gossip on loopback
/// when the cluster has more than one region.
fn configure(cfg: &mut NodeConfig, id: &str, region: &str, regions: &[&str], gossip: Gossip<'_>) {
    cfg.node_id = id.to_string();
    cfg.region = region.to_string();
    cfg.replication = replication(region, regions);
    if let Gossip::On { listen, seeds, key } = gossip {
        cfg.gossip = Some(meridian::config::gossip::GossipConfig {
            listen_addr: listen,
            advertise_addr: None,
            seeds,
            cluster_key: key.to_path_buf(),
            timers: meridian::membership::GossipTimers::for_max_rtt(Duration::from_millis(10)),
        });
    }
}

enum Gossip<'a> {
    Off,
    On {
        listen: SocketAddr,
        seeds: Vec<SocketAddr>,
        key: &'a Path,
    },
}

/// A free UDP port on loopback for a gossip socket.
fn free_udp() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

fn client_config(endpoint: SocketAddr, certs_of: &TestNode) -> ClientConfig {
    ClientConfig {
        endpoints: vec![endpoint],
        tls: certs_of.certs.files("client"),
        request_timeout: Duration::from_secs(15),
        bind: None,
    }
}

fn code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

/// The region's only node, with prefix policies.
async fn single_region() -> TestNode {
    bounded(TestNode::start_with(|cfg| {
        configure(cfg, "node1", "r1", &["r1"], Gossip::Off)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_prefix_refuses_linearizable_and_serves_eventual_and_bounded() {
    let node = single_region().await;
    let c = node.client().await;
    let w = bounded(c.put("ev/x", "1")).await.unwrap();
    // A linearizable read asks for more than an eventual prefix allows,
    // through a level or the plain consistency field.
    for e in [
        bounded(c.get_at_level("ev/x", ReadLevel::Linearizable))
            .await
            .unwrap_err(),
        bounded(c.get_with("ev/x", None, ReadConsistency::Linearizable))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(code(&e), Some(ErrorCode::LevelNotAllowed), "{e}");
        let text = e.to_string();
        assert!(text.contains("\"ev/\" is eventual"), "{text}");
        assert!(text.contains("allowed levels: bounded, eventual"), "{text}");
    }
    // A read that names no level gets the prefix's own (eventual): served.
    let plain = bounded(c.get("ev/x")).await.unwrap();
    assert_eq!(plain.kv.unwrap().value, b"1");
    let (all, _) = bounded(c.list_prefix("ev/", 10)).await.unwrap();
    assert_eq!(all.len(), 1);
    let causal = ReadLevel::Causal { token: w.version };
    let e = bounded(c.get_at_level("ev/x", causal)).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::LevelNotAllowed), "{e}");
    // Eventual (at the latest local state) and bounded (at the frontier,
    // which in the only region is the applied timestamp) see the write.
    let ev = bounded(c.get_at_level("ev/x", ReadLevel::Eventual))
        .await
        .unwrap();
    assert_eq!(ev.kv.unwrap().value, b"1");
    assert!(ev.served_at >= w.version && ev.token.0 >= w.version);
    let loose = ReadLevel::Bounded {
        max_staleness_ms: 60_000,
        on_stale: OnStale::Fail,
    };
    let b = bounded(c.get_at_level("ev/x", loose)).await.unwrap();
    assert_eq!(b.kv.unwrap().value, b"1");
    assert!(b.staleness_ms < 60_000, "{}", b.staleness_ms);
    // Serializable stays what it was: this replica's applied state.
    let s = bounded(c.get_with("ev/x", None, ReadConsistency::Serializable))
        .await
        .unwrap();
    assert_eq!(s.kv.unwrap().value, b"1");
    c.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_writes_and_a_token_below_the_frontier_is_served_locally() {
    let node = single_region().await;
    let c = node.client().await;
    let session = Session::new(&c);
    let w = bounded(session.put("ca/k", "v1")).await.unwrap();
    assert_eq!(session.token(), Some(SessionToken(w.version)));
    let started = Instant::now();
    let r = bounded(session.get("ca/k")).await.unwrap();
    assert_eq!(r.kv.unwrap().value, b"v1");
    assert!(
        r.served_at >= w.version,
        "served at the frontier, past the token"
    );
    assert!(
        started.elapsed() < CAUSAL_WAIT,
        "no wait below the frontier"
    );
    // The token crosses processes as a string and only moves forward.
    let portable = session.token().unwrap().to_string();
    let resumed = Session::resume(&c, portable.parse().unwrap());
    let again = bounded(resumed.get("ca/k")).await.unwrap();
    assert!(again.token >= r.token);
    // Causal pages too, bringing the token.
    let page = bounded(resumed.range("ca/", Some(b"ca0"), 10))
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 1);
    c.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_token_above_the_frontier_waits_then_the_home_leader_serves_it() {
    let node = single_region().await;
    let c = node.client().await;
    bounded(c.put("ca/k", "v")).await.unwrap();
    // A token a little ahead of this node's clock (within max_offset_ms):
    // nothing writes, so the frontier never reaches it; after the bounded
    // wait, this node is the home region, whose leader has every write.
    let ahead = Timestamp::from_parts(now_unix_ms() + 300, 0).unwrap();
    let started = Instant::now();
    let r = bounded(c.get_at_level("ca/k", ReadLevel::Causal { token: ahead }))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= CAUSAL_WAIT, "waited only {waited:?}");
    assert!(waited < CAUSAL_WAIT + Duration::from_secs(3), "{waited:?}");
    assert_eq!(r.kv.unwrap().value, b"v");
    assert_eq!(r.token, SessionToken(ahead), "the token never goes back");
    // A token far beyond any clock is refused like any remote timestamp.
    let forged = Timestamp::from_parts(now_unix_ms() + 3_600_000, 0).unwrap();
    let e = bounded(c.get_at_level("ca/k", ReadLevel::Causal { token: forged }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::ClockOffset), "{e}");
    c.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_write_is_stamped_above_its_token() {
    let node = single_region().await;
    let c = node.client().await;
    // A token from a region whose clock runs ahead (within max_offset_ms):
    // the write is still stamped above it (writes follow reads).
    let ahead = Timestamp::from_parts(now_unix_ms() + 300, 0).unwrap();
    let session = Session::resume(&c, SessionToken(ahead));
    let w = bounded(session.put("ca/k", "after")).await.unwrap();
    assert!(w.version > ahead, "{} is not above {ahead}", w.version);
    let d = bounded(session.delete("ca/k")).await.unwrap();
    assert!(d.existed && d.version > w.version);
    // A token far beyond any clock is refused, and nothing is written.
    let forged = Timestamp::from_parts(now_unix_ms() + 3_600_000, 0).unwrap();
    let e = bounded(c.put_after("ca/z", "x", forged)).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::ClockOffset), "{e}");
    let z = bounded(c.get_at_level("ca/z", ReadLevel::Eventual))
        .await
        .unwrap();
    assert_eq!(z.kv, None);
    c.close().await;
    node.stop().await;
}

fn now_unix_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stop_at_policy_boundaries_and_policies_are_listed() {
    let node = single_region().await;
    let c = node.client().await;
    bounded(c.put("a", "1")).await.unwrap();
    bounded(c.put("ca/b", "2")).await.unwrap();
    // Under the default policy from "", the page stops at the first prefix
    // with a policy of its own.
    let p = bounded(c.range_at_level("", None, 100, ReadLevel::Eventual))
        .await
        .unwrap();
    assert_eq!(p.kvs.len(), 1);
    assert_eq!(p.next.as_deref(), Some(&b"ca/"[..]));
    let p = bounded(c.range_at_level("ca/", None, 100, ReadLevel::Eventual))
        .await
        .unwrap();
    assert_eq!(p.kvs[0].key, b"ca/b");
    assert_eq!(p.next.as_deref(), Some(&b"ca0"[..]), "the end of ca/");
    let t = bounded(c.policies()).await.unwrap();
    assert_eq!(t.local_region, "r1");
    let prefixes: Vec<&[u8]> = t.prefixes.iter().map(|p| p.prefix.as_slice()).collect();
    assert_eq!(prefixes, [&b"ca/"[..], b"ev/", b"loc/"]);
    assert_eq!(t.default.home, "r1");
    c.close().await;
    node.stop().await;
}

/// Two regions of one node each, gossiping: `a` in r1 (home of the
/// default, `ev/` and `ca/`), `b` in r2 (home of `loc/`). Returns them once
/// `b`'s gossip sees `a` alive.
async fn two_regions() -> (TestNode, TestNode) {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("cluster.key");
    meridian::membership::generate_cluster_key(&key, false).unwrap();
    let a_gossip = free_udp();
    let regions = ["r1", "r2"];
    let a = bounded(TestNode::start_with(|cfg| {
        let gossip = Gossip::On {
            listen: a_gossip,
            seeds: vec![],
            key: &key,
        };
        configure(cfg, "a", "r1", &regions, gossip)
    }))
    .await;
    // One CA for both, so one client certificate reaches either.
    let certs = a.certs.dir.clone();
    let b = bounded(TestNode::start_with(|cfg| {
        let gossip = Gossip::On {
            listen: free_udp(),
            seeds: vec![a_gossip],
            key: &key,
        };
        configure(cfg, "b", "r2", &regions, gossip);
        cfg.ca_cert = certs.join("ca.pem");
        cfg.cert = certs.join("node1.pem");
        cfg.key = certs.join("node1.key");
    }))
    .await;
    let cb = bounded(Client::connect(client_config(b.quic_addr(), &a)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let members = bounded(cb.members()).await.unwrap();
        if members
            .iter()
            .any(|m| m.node_id == "a" && m.state == "alive")
        {
            break;
        }
        assert!(Instant::now() < deadline, "b never saw a: {members:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cb.close().await;
    drop(key_dir);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_prefix_homed_elsewhere_refuses_local_writes_and_the_sdk_follows_home() {
    let (a, b) = two_regions().await;
    let cb = bounded(Client::connect(client_config(b.quic_addr(), &a)))
        .await
        .unwrap();
    // Raw, without the SDK following: the node refuses, names the home
    // region and a client address of a node there (from gossip).
    let put = RequestV1::Put {
        key: b"s/k".to_vec(),
        value: b"v".to_vec(),
    };
    let raw = bounded(cb.exchange(&wire::encode_request(&put)))
        .await
        .unwrap();
    let reply = wire::decode_response(&raw).unwrap();
    let ResponseV1::WrongRegion {
        home,
        addr,
        message,
    } = reply
    else {
        panic!("expected WrongRegion, got {reply:?}");
    };
    assert_eq!(home, "r1");
    assert_eq!(addr, Some(a.quic_addr().to_string()));
    assert!(message.contains("homed in region r1"), "{message}");
    let get = RequestV1::GetWith {
        key: b"s/k".to_vec(),
        at: None,
        consistency: ReadConsistencyV1::Linearizable,
    };
    let raw = bounded(cb.exchange(&wire::encode_request(&get)))
        .await
        .unwrap();
    assert!(matches!(
        wire::decode_response(&raw).unwrap(),
        ResponseV1::WrongRegion { ref home, .. } if home == "r1"
    ));
    // A transaction touching the key is refused the same way.
    let txn = RequestV1::Txn(wire::TxnV1 {
        compares: vec![],
        success: vec![wire::OpV1::Put {
            key: b"s/k".to_vec(),
            value: b"t".to_vec(),
        }],
        failure: vec![],
    });
    let raw = bounded(cb.exchange(&wire::encode_request(&txn)))
        .await
        .unwrap();
    assert!(matches!(
        wire::decode_response(&raw).unwrap(),
        ResponseV1::WrongRegion { ref home, .. } if home == "r1"
    ));
    // Nothing was written in r2.
    let local = bounded(cb.get_with("s/k", None, ReadConsistency::Serializable))
        .await
        .unwrap();
    assert_eq!(local.kv, None);
    // The SDK follows the refusal to r1: the write and the linearizable
    // read happen there.
    let w = bounded(cb.put("s/k", "v")).await.unwrap();
    let r = bounded(cb.get_at_level("s/k", ReadLevel::Linearizable))
        .await
        .unwrap();
    assert_eq!(r.kv.unwrap().value, b"v");
    assert!(r.token.0 >= w.version);
    let ca = bounded(Client::connect(client_config(a.quic_addr(), &a)))
        .await
        .unwrap();
    assert_eq!(
        bounded(ca.get("s/k")).await.unwrap().kv.unwrap().value,
        b"v"
    );
    // Prefixes that accept writes anywhere take them in r2; a strong
    // prefix homed in r2 does too.
    bounded(cb.put("ev/x", "1")).await.unwrap();
    bounded(cb.put("ca/x", "1")).await.unwrap();
    bounded(cb.put("loc/x", "1")).await.unwrap();
    assert_eq!(
        bounded(cb.get("loc/x")).await.unwrap().kv.unwrap().value,
        b"1"
    );
    ca.close().await;
    cb.close().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_fail_too_stale_while_no_other_region_closes_the_frontier_except_at_a_strong_home(
) {
    let (a, b) = two_regions().await;
    let cb = bounded(Client::connect(client_config(b.quic_addr(), &a)))
        .await
        .unwrap();
    // r1 is gone: nothing closes its timestamps in r2 any more, so r2's
    // frontier stands still and falls behind the clock.
    a.stop().await;
    bounded(cb.put("loc/x", "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tight = |on_stale| ReadLevel::Bounded {
        max_staleness_ms: 10,
        on_stale,
    };
    let e = bounded(cb.get_at_level("s/k", tight(OnStale::Fail)))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::TooStale), "{e}");
    assert!(e.to_string().contains("bound of 10 ms"), "{e}");
    // At its own home region a strong prefix (written only there) is
    // served by the range leader, fresher than any bound, whatever
    // `on_stale` says.
    for on_stale in [OnStale::Redirect, OnStale::Fail] {
        let r = bounded(cb.get_at_level("loc/x", tight(on_stale)))
            .await
            .unwrap();
        assert_eq!(r.kv.unwrap().value, b"1");
        assert_eq!(r.staleness_ms, 0, "served at the leader");
    }
    // Eventual never waits and reads the latest local state: r2's own
    // write, above the stalled frontier, reporting how stale that is.
    let ev = bounded(cb.get_at_level("ev/x", ReadLevel::Eventual))
        .await
        .unwrap();
    assert_eq!(ev.kv, None);
    let ev = bounded(cb.get_at_level("loc/x", ReadLevel::Eventual)).await;
    // loc/ is strong: eventual is allowed on any prefix.
    let ev = ev.unwrap();
    assert_eq!(ev.kv.unwrap().value, b"1");
    assert!(ev.staleness_ms >= 300, "staleness {} ms", ev.staleness_ms);
    cb.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_token_out_of_reach_waits_its_bound_then_goes_home() {
    let (a, b) = two_regions().await;
    let ca = bounded(Client::connect(client_config(a.quic_addr(), &a)))
        .await
        .unwrap();
    let cb = bounded(Client::connect(client_config(b.quic_addr(), &a)))
        .await
        .unwrap();
    // Read-your-writes across regions: the write's token is served in r2
    // once replication brought the write (well within the wait).
    let w = bounded(ca.put("ca/k", "from r1")).await.unwrap();
    let session = Session::resume(&cb, SessionToken(w.version));
    let started = Instant::now();
    let r = bounded(session.get("ca/k")).await.unwrap();
    assert!(started.elapsed() < CAUSAL_WAIT, "{:?}", started.elapsed());
    assert_eq!(r.kv.unwrap().value, b"from r1");
    assert!(
        r.served_at >= w.version,
        "served at r2's frontier, past the token"
    );
    ca.close().await;
    // With r1 gone, r2's frontier stops (nothing closes r1's timestamps):
    // a token above it waits the bounded CAUSAL_WAIT, then r2 refuses with
    // the way home.
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = b.node.as_ref().unwrap().engine().clock().now().unwrap();
    let req = RequestV1::GetWith {
        key: b"ca/k".to_vec(),
        at: None,
        consistency: ReadConsistencyV1::Causal { token: token.0 },
    };
    let started = Instant::now();
    let raw = bounded(cb.exchange(&wire::encode_request(&req)))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= CAUSAL_WAIT, "{waited:?}");
    assert!(waited < CAUSAL_WAIT + Duration::from_secs(3), "{waited:?}");
    match wire::decode_response(&raw).unwrap() {
        ResponseV1::WrongRegion { home, .. } => assert_eq!(home, "r1"),
        other => panic!("expected WrongRegion, got {other:?}"),
    }
    cb.close().await;
    b.stop().await;
}

/// A region of three nodes (Raft group of three voters), single-region
/// config: the default policy is strong and homed here.
async fn three_voters() -> (
    tempfile::TempDir,
    common::TestCerts,
    Vec<meridian::server::Node>,
) {
    use meridian::certs::{self, Role};
    use meridian::config::raft::RawPeer;
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    for i in 2..=3 {
        certs::issue(&certs.dir, Role::Node, &format!("node{i}"), &certs.dir, &[]).unwrap();
    }
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_udp()).collect();
    let peers: Vec<RawPeer> = (1..=3u64)
        .map(|i| RawPeer {
            id: i,
            name: format!("node{i}"),
            addr: addrs[i as usize - 1].to_string(),
            zone: format!("zone{i}"),
        })
        .collect();
    let mut nodes = Vec::new();
    for i in 1..=3u64 {
        let mut raw = meridian::config::RawConfig::default();
        raw.node.id = format!("node{i}");
        raw.node.zone = format!("zone{i}");
        raw.node.data_dir = dir.path().join(format!("node{i}"));
        raw.server.listen_addr = addrs[i as usize - 1].to_string();
        raw.server.http_addr = String::new();
        raw.tls.ca_cert = certs.dir.join("ca.pem");
        raw.tls.cert = certs.dir.join(format!("node{i}.pem"));
        raw.tls.key = certs.dir.join(format!("node{i}.key"));
        raw.raft.node_id = i;
        raw.raft.bootstrap = i == 1;
        raw.raft.peers = peers.clone();
        raw.raft.heartbeat_interval_ms = 100;
        raw.raft.election_timeout_min_ms = 400;
        raw.raft.election_timeout_max_ms = 800;
        let cfg = raw.validate(dir.path()).unwrap();
        nodes.push(bounded(meridian::server::Node::start(cfg)).await.unwrap());
    }
    (dir, certs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_read_past_its_wait_at_a_follower_is_sent_to_the_leader() {
    let (_dir, certs, nodes) = three_voters().await;
    let client_for = |addr: SocketAddr| ClientConfig {
        endpoints: vec![addr],
        tls: certs.files("client"),
        request_timeout: Duration::from_secs(10),
        bind: None,
    };
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.quic_addr()).collect();
    let all = bounded(Client::connect(ClientConfig {
        endpoints: addrs.clone(),
        ..client_for(addrs[0])
    }))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = all.put("k", "v").await {
        assert!(Instant::now() < deadline, "no leader: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A token ahead of every replica's frontier: each entry node waits its
    // bound; at a follower the home region's leader must serve it, so the
    // follower answers NotLeader and the SDK follows it to the leader
    // (before, it retried the same follower until the request timeout).
    let ahead = Timestamp::from_parts(now_unix_ms() + 300, 0).unwrap();
    let reads = addrs.iter().map(|addr| {
        let cfg = client_for(*addr);
        async move {
            let c = Client::connect(cfg).await.unwrap();
            let started = Instant::now();
            let r = c
                .get_at_level("k", ReadLevel::Causal { token: ahead })
                .await;
            c.close().await;
            (r, started.elapsed())
        }
    });
    for (r, waited) in bounded(futures_util::future::join_all(reads)).await {
        let r = r.unwrap();
        assert_eq!(r.kv.unwrap().value, b"v");
        assert!(waited >= CAUSAL_WAIT, "{waited:?}");
        assert_eq!(r.token, SessionToken(ahead));
    }
    all.close().await;
    for n in nodes {
        n.shutdown().await;
    }
}
