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

async fn start_region() -> Region {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    for i in 2..=3 {
        certs::issue(&certs.dir, Role::Node, &format!("node{i}"), &certs.dir, &[]).unwrap();
    }
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_udp_port()).parse().unwrap())
        .collect();
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
        let mut raw = RawConfig::default();
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
        raw.raft.range_prefixes = vec!["locks/".into()];
        raw.raft.heartbeat_interval_ms = 100;
        raw.raft.election_timeout_min_ms = 400;
        raw.raft.election_timeout_max_ms = 800;
        let cfg = raw.validate(dir.path()).unwrap();
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
    let c = region.client(&region.addrs).await;
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

    // Stop node 1 (it bootstrapped and most likely leads); writes go on.
    let first = region.nodes[0].take().unwrap();
    first.shutdown().await;
    let started = Instant::now();
    put_eventually(&c, "config/after-failover", "ok").await;
    println!(
        "first write after stopping node1 took {:?}",
        started.elapsed()
    );
    let got = c.get("config/after-failover").await.unwrap();
    assert_eq!(got.kv.unwrap().value, b"ok");
    assert_eq!(
        c.get("locks/from-0").await.unwrap().kv.unwrap().value,
        b"held"
    );
    c.close().await;
    region.stop_all().await;
}
