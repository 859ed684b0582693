//! Cross-region replication between two one-node regions on loopback
//! (in-process `Node`s with their QUIC servers and gossip): every write
//! reaches the other region, concurrent writes to one key converge to one
//! winner, an idle range's frontier keeps moving, and a region that was
//! down catches up with every change exactly once.
//!
//! The WAN between regions and real `meridian serve` processes are covered
//! by tests/wan.rs (`meridian dev`); these tests check the data path itself.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian::certs::{self, Role};
use meridian::client::{Client, ClientConfig};
use meridian::config::RawConfig;
use meridian::server::Node;
use meridian::types::Timestamp;

/// Bound of every wait below.
const BOUND: Duration = Duration::from_secs(30);

struct Site {
    region: &'static str,
    name: &'static str,
}

struct Cluster {
    dir: tempfile::TempDir,
    certs: common::TestCerts,
    sites: Vec<Site>,
    nodes: Vec<Option<Node>>,
    /// Each node's bound gossip address, once it started (ports are the
    /// OS's choice, so concurrent tests never race for one).
    gossip: Vec<Option<SocketAddr>>,
}

fn config(c: &Cluster, i: usize) -> meridian::config::NodeConfig {
    let dir = c.dir.path();
    let site = &c.sites[i];
    let mut raw = RawConfig::default();
    raw.node.id = site.name.into();
    raw.node.region = site.region.into();
    raw.node.data_dir = dir.join(site.name);
    raw.server.listen_addr = "127.0.0.1:0".into();
    raw.server.http_addr = String::new();
    raw.tls.ca_cert = c.certs.dir.join("ca.pem");
    raw.tls.cert = c.certs.dir.join(format!("{}.pem", site.name));
    raw.tls.key = c.certs.dir.join(format!("{}.key", site.name));
    raw.raft.range_prefixes = vec!["locks/".into()];
    raw.gossip.listen_addr = "127.0.0.1:0".into();
    raw.gossip.cluster_key = dir.join("cluster.key");
    raw.gossip.max_rtt_ms = 50;
    // Every other node that runs: one live seed is enough to join.
    raw.gossip.seeds = c
        .gossip
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, g)| g.map(|a| a.to_string()))
        .collect();
    raw.replication.regions = c.sites.iter().map(|s| s.region.to_string()).collect();
    raw.replication.default.consistency = "eventual".into();
    raw.validate(dir).unwrap()
}

async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    meridian::membership::generate_cluster_key(&dir.path().join("cluster.key"), false).unwrap();
    let sites: Vec<Site> = [("us", "us-1"), ("eu", "eu-1")]
        .into_iter()
        .map(|(region, name)| Site { region, name })
        .collect();
    for s in &sites {
        certs::issue(&certs.dir, Role::Node, s.name, &certs.dir, &[]).unwrap();
    }
    let n = sites.len();
    let mut c = Cluster {
        dir,
        certs,
        sites,
        nodes: (0..n).map(|_| None).collect(),
        gossip: vec![None; n],
    };
    for i in 0..n {
        c.restart(i).await;
    }
    c
}

impl Cluster {
    async fn client(&self, i: usize) -> Client {
        Client::connect(ClientConfig {
            endpoints: vec![self.quic(i)],
            tls: self.certs.files("client"),
            request_timeout: Duration::from_secs(10),
            bind: None,
        })
        .await
        .unwrap()
    }

    fn quic(&self, i: usize) -> SocketAddr {
        self.node(i).quic_addr()
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap()
    }

    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    async fn restart(&mut self, i: usize) {
        let node = Node::start(config(self, i)).await.unwrap();
        self.gossip[i] = node.gossip_addr();
        self.nodes[i] = Some(node);
    }

    async fn stop_all(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// Waits (bounded) until `key` reads `want` (`None`: absent) through `c`.
async fn wait_for(c: &Client, key: &str, want: Option<&[u8]>) {
    let deadline = Instant::now() + BOUND;
    loop {
        let got = c.get(key).await.map(|r| r.kv.map(|kv| kv.value));
        let got = match got {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(Instant::now() < deadline, "{key}: {e}");
                None
            }
        };
        if got.as_ref().map(|v| v.as_deref()) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: wanted {want:?}, still {got:?} after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retries a write until the region accepts it (its group elected itself).
async fn put(c: &Client, key: &str, value: &str) {
    let deadline = Instant::now() + BOUND;
    while let Err(e) = c.put(key, value).await {
        assert!(Instant::now() < deadline, "write never accepted: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_other_region_and_converge() {
    let c = start().await;
    let us = c.client(0).await;
    let eu = c.client(1).await;
    // Both ranges, both directions, puts and deletes.
    put(&us, "config/a", "from-us").await;
    put(&eu, "locks/b", "from-eu").await;
    wait_for(&eu, "config/a", Some(b"from-us")).await;
    wait_for(&us, "locks/b", Some(b"from-eu")).await;
    us.delete("locks/b").await.unwrap();
    wait_for(&eu, "locks/b", None).await;

    // Concurrent writes to one key in both regions: one winner everywhere.
    // Both nodes share this machine's clock, so the two writes often get
    // the same HLC: then one version (the greater bytes, "us") is all that
    // remains of the pair, in both regions; otherwise both versions stay,
    // the later one visible.
    let (a, b) = tokio::join!(us.put("config/race", "us"), eu.put("config/race", "eu"));
    let (a, b) = (a.unwrap().version, b.unwrap().version);
    let versions = if a == b { 1 } else { 2 };
    let deadline = Instant::now() + BOUND;
    loop {
        let x = us.get("config/race").await.unwrap().kv.map(|kv| kv.value);
        let y = eu.get("config/race").await.unwrap().kv.map(|kv| kv.value);
        let hx = us.history("config/race", 10).await.unwrap().entries;
        let hy = eu.history("config/race", 10).await.unwrap().entries;
        if x == y && hx.len() == versions && hx == hy {
            let winner = if a == b {
                &b"us"[..]
            } else if a > b {
                b"us"
            } else {
                b"eu"
            };
            assert_eq!(x.as_deref(), Some(winner), "{hx:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "regions disagree: {x:?} / {y:?}, {hx:?} / {hy:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An idle range's frontier keeps moving in the other region: idle
    // leaders close timestamps, so it stays within about a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ... and its age is published for operators.
    let text = meridian::telemetry::metrics_handle().render();
    let age = text
        .lines()
        .find(|l| l.starts_with("meridian_replication_frontier_age_seconds{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no frontier age gauge:\n{text}"));
    assert!((0.0..5.0).contains(&age), "frontier age {age} s");
    for i in 0..2 {
        let engine = c.node(i).engine();
        let frontier = engine.frontier_of(b"locks/x").unwrap();
        let now = engine.clock().now().unwrap();
        let lag = now.physical_unix_ms() - frontier.physical_unix_ms();
        assert!(
            frontier > Timestamp::ZERO && lag < 5_000,
            "region {i}: frontier {frontier} is {lag} ms behind"
        );
    }
    us.close().await;
    eu.close().await;
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_was_down_catches_up_exactly_once() {
    let mut c = start().await;
    let us = c.client(0).await;
    put(&us, "config/before", "1").await;
    let eu = c.client(1).await;
    wait_for(&eu, "config/before", Some(b"1")).await;
    eu.close().await;
    c.stop(1).await;
    // Written while eu is down: it catches up from us's change log.
    for i in 0..40 {
        put(&us, &format!("config/k{i:02}"), &format!("v{i}")).await;
        put(&us, &format!("locks/k{i:02}"), &format!("v{i}")).await;
    }
    c.restart(1).await;
    let eu = c.client(1).await;
    for i in 0..40 {
        for prefix in ["config", "locks"] {
            let key = format!("{prefix}/k{i:02}");
            wait_for(&eu, &key, Some(format!("v{i}").as_bytes())).await;
            let h = eu.history(&key, 10).await.unwrap().entries;
            assert_eq!(h.len(), 1, "{key} applied exactly once: {h:?}");
            let origin = us.history(&key, 10).await.unwrap().entries;
            assert_eq!(h, origin, "{key}: same version in both regions");
        }
    }
    us.close().await;
    eu.close().await;
    c.stop_all().await;
}
