//! Range Raft groups over real QUIC on loopback: three in-process nodes,
//! each with its own fjall store, replicate writes, elect a new leader when
//! the leader stops, and bring a node that was down past log compaction back
//! by snapshot (content digests compared).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::certs::{self, Role};
use meridian::clock::{Hlc, SystemClock};
use meridian::raft::types::CommandV1;
use meridian::raft::{RaftHost, RaftNode, RaftTiming, RangeCommand, RangeDescriptor};
use meridian::storage::{FsyncPolicy, MvccStore, StoreOptions};
use meridian::transport::{self, EndpointLimits, TlsFiles};
use meridian::types::Timestamp;
use openraft::async_runtime::WatchReceiver;

const BOUND: Duration = Duration::from_secs(30);

fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        snapshot_after_logs: 20,
        logs_kept_after_snapshot: 0,
    }
}

fn whole_keyspace() -> RangeDescriptor {
    RangeDescriptor {
        id: 1,
        start: Vec::new(),
        end: None,
    }
}

/// One node: store, clock, QUIC endpoint, Raft host and its RPC accept loop.
struct Peer {
    id: u64,
    dir: PathBuf,
    addr: std::net::SocketAddr,
    store: MvccStore,
    host: Arc<RaftHost>,
    endpoint: quinn::Endpoint,
    accept: tokio::task::JoinHandle<()>,
}

fn tls(certs: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{name}.pem")),
        key: certs.join(format!("{name}.key")),
    }
}

async fn start_peer(id: u64, dir: &Path, certs: &Path, addr: std::net::SocketAddr) -> Peer {
    let store = MvccStore::open(StoreOptions {
        path: dir.join("data"),
        fsync: FsyncPolicy::Always,
        cache_bytes: 8 << 20,
    })
    .unwrap();
    let hlc = Arc::new(Hlc::open(SystemClock, store.clone(), 500, 1000).unwrap());
    let endpoint = transport::server_endpoint(
        addr,
        &tls(certs, &format!("n{id}")),
        &EndpointLimits::default(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let tls = tls(certs, &format!("n{id}"));
    let peer_config = transport::peer_client_config(&tls, &EndpointLimits::default()).unwrap();
    let host = Arc::new(
        RaftHost::new(
            id,
            endpoint.clone(),
            peer_config,
            store.clone(),
            hlc,
            &timing(),
        )
        .unwrap(),
    );
    // The real peer dispatcher, without the client protocol.
    let accept = tokio::spawn(meridian::server::serve_peers(
        endpoint.clone(),
        host.clone(),
    ));
    Peer {
        id,
        dir: dir.to_path_buf(),
        addr,
        store,
        host,
        endpoint,
        accept,
    }
}

impl Peer {
    async fn stop(self) -> (u64, PathBuf, std::net::SocketAddr) {
        self.host.shutdown().await;
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"stop");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        (self.id, self.dir, self.addr)
    }

    /// A digest of every version in the store (key, version, value).
    fn digest(&self) -> Vec<(Vec<u8>, Timestamp, Option<Vec<u8>>)> {
        self.store
            .dump_range(b"", None, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|v| (v.key, v.version, v.value))
            .collect()
    }
}

fn members(peers: &[&Peer]) -> BTreeMap<u64, RaftNode> {
    peers
        .iter()
        .map(|p| {
            let node = RaftNode {
                name: format!("n{}", p.id),
                addr: p.addr.to_string(),
                region: "local".into(),
                zone: format!("z{}", p.id),
            };
            (p.id, node)
        })
        .collect()
}

fn wire_peers(peers: &[&Peer]) {
    for p in peers {
        for q in peers {
            p.host.router().set_peer(q.id, q.addr);
        }
    }
}

async fn leader_of(peers: &[&Peer]) -> u64 {
    let deadline = Instant::now() + BOUND;
    loop {
        for p in peers {
            if let Some(g) = p.host.group(1) {
                if let Some(l) = g.raft.current_leader().await {
                    if peers.iter().any(|q| q.id == l) {
                        return l;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> RangeCommand {
    RangeCommand {
        proposed_at: 0,
        op: CommandV1::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        },
    }
}

async fn write_n(leader: &Peer, prefix: &str, n: usize) -> Timestamp {
    let g = leader.host.group(1).unwrap();
    let mut last = Timestamp::ZERO;
    for i in 0..n {
        let resp = tokio::time::timeout(
            BOUND,
            g.raft.client_write(put(&format!("{prefix}{i:04}"), "v")),
        )
        .await
        .expect("write timed out")
        .expect("write failed");
        assert!(resp.data.succeeded);
        assert!(
            Timestamp(resp.data.version) > last,
            "versions increase in log order"
        );
        last = Timestamp(resp.data.version);
    }
    last
}

/// Waits (bounded) until every peer has applied `ts`, then compares digests.
async fn converge(peers: &[&Peer], ts: Timestamp) {
    let deadline = Instant::now() + BOUND;
    for p in peers {
        loop {
            if p.host.group(1).is_some_and(|g| g.applied_ts() >= ts) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not apply {ts}",
                p.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let first = peers[0].digest();
    for p in &peers[1..] {
        assert_eq!(
            p.digest(),
            first,
            "node {} diverged from node {}",
            p.id,
            peers[0].id
        );
    }
}

fn make_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    certs::init_ca(&certs, false).unwrap();
    for i in 1..=3 {
        certs::issue(&certs, Role::Node, &format!("n{i}"), &certs, &[]).unwrap();
    }
    certs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up_by_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let certs = make_certs(root.path());
    let any = "127.0.0.1:0".parse().unwrap();
    let mut peers = Vec::new();
    for i in 1..=3 {
        let dir = root.path().join(format!("n{i}"));
        peers.push(start_peer(i, &dir, &certs, any).await);
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    wire_peers(&refs);
    for p in &peers {
        p.host.open_range(whole_keyspace()).await.unwrap();
    }
    peers[0]
        .host
        .group(1)
        .unwrap()
        .raft
        .initialize(members(&refs))
        .await
        .unwrap();

    // Replication.
    let leader_id = leader_of(&refs).await;
    let leader = peers.iter().find(|p| p.id == leader_id).unwrap();
    let ts = write_n(leader, "a/", 30).await;
    converge(&refs, ts).await;

    // Fail-over: stop the leader; the other two elect a new one and go on.
    let idx = peers.iter().position(|p| p.id == leader_id).unwrap();
    let stopped = peers.remove(idx);
    let started = Instant::now();
    let (old_id, old_dir, old_addr) = stopped.stop().await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let new_leader_id = leader_of(&refs).await;
    println!(
        "new leader {new_leader_id} elected {:?} after stopping {old_id}",
        started.elapsed()
    );
    assert_ne!(new_leader_id, old_id);
    let new_leader = peers.iter().find(|p| p.id == new_leader_id).unwrap();
    // Enough entries to pass the snapshot policy, so the old log is purged.
    let ts = write_n(new_leader, "b/", 60).await;
    converge(&refs, ts).await;
    let purged = new_leader
        .host
        .group(1)
        .unwrap()
        .raft
        .metrics()
        .borrow_watched()
        .purged;
    assert!(purged.is_some(), "the log must have been compacted");

    // The stopped node comes back after compaction: it must catch up by snapshot.
    let back = start_peer(old_id, &old_dir, &certs, old_addr).await;
    peers.push(back);
    let refs: Vec<&Peer> = peers.iter().collect();
    wire_peers(&refs);
    let rejoined = peers.last().unwrap();
    let group = rejoined.host.open_range(whole_keyspace()).await.unwrap();
    converge(&refs, ts).await;
    let m = group.raft.metrics().borrow_watched().clone();
    assert!(
        m.snapshot.is_some(),
        "the rejoined node must have installed a snapshot: {m:?}"
    );

    for p in peers {
        p.stop().await;
    }
}
