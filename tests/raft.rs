//! Range Raft groups over real QUIC on loopback: three in-process nodes,
//! each with its own fjall store, replicate writes, elect a new leader when
//! the leader stops, and bring a node that was down past log compaction back
//! by snapshot (the state visible at the last write compared on every
//! replica; every version compared where replicas applied the same log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::certs::{self, Role};
use meridian::clock::{Hlc, SystemClock};
use meridian::peer::{self, PeerRequestV1, PeerResponseV1};
use meridian::raft::snapshot;
use meridian::raft::types::CommandV1;
use meridian::raft::{RaftHost, RaftNode, RaftTiming, RangeCommand, RangeDescriptor, RangeGroup};
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
        direct_read_confirmations: 64,
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

    /// What a read of the whole keyspace at `at` returns (key, version, value).
    fn visible(&self, at: Timestamp) -> Vec<(Vec<u8>, Timestamp, Vec<u8>)> {
        let mut out = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = self.store.scan(&start, None, at, 10_000).unwrap();
            out.extend(
                page.items
                    .into_iter()
                    .map(|kv| (kv.key, kv.version, kv.value)),
            );
            match page.next_key {
                Some(next) => start = next,
                None => return out,
            }
        }
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
        let resp = write_one(&g, put(&format!("{prefix}{i:04}"), "v")).await;
        assert!(resp.data.succeeded);
        assert!(
            Timestamp(resp.data.version) > last,
            "versions increase in log order"
        );
        last = Timestamp(resp.data.version);
    }
    last
}

/// One write on `g`, retried (bounded) while the node knows no leader:
/// on a loaded 2-core machine a heartbeat round can miss the lease, and the
/// write is then refused before it was appended, so retrying is safe.
async fn write_one(
    g: &RangeGroup,
    cmd: RangeCommand,
) -> openraft::raft::ClientWriteResponse<meridian::raft::RangeTypes> {
    use openraft::errors::{ClientWriteError, RaftError};
    let deadline = Instant::now() + BOUND;
    loop {
        let r = tokio::time::timeout(BOUND, g.raft.client_write(cmd.clone()))
            .await
            .expect("write timed out");
        match r {
            Ok(resp) => return resp,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.leader_id.is_none() && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("write failed: {e:?}"),
        }
    }
}

/// The two tests that run three-node groups through compaction take turns:
/// run together on a loaded 2-core machine they starve each other's
/// heartbeats.
static THREE_NODE_GROUPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (bounded) until every peer has applied `ts`, then compares what a
/// read at `ts` returns on each (docs/consistency.md R2).
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
    let first = peers[0].visible(ts);
    assert!(!first.is_empty());
    for p in &peers[1..] {
        assert_eq!(
            p.visible(ts),
            first,
            "node {} diverged from node {} at {ts}",
            p.id,
            peers[0].id
        );
    }
}

/// Replicas that applied the same log hold identical versions, history
/// and tombstones included (R2).
fn same_versions(peers: &[&Peer]) {
    let first = peers[0].digest();
    for p in &peers[1..] {
        assert!(
            p.digest() == first,
            "node {} holds other versions than node {}",
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
    catch_up_by_snapshot(false).await;
}

/// A snapshot is a point, materialised when it must be sent
/// (src/raft/point.rs): when the leader's gc horizon has passed its current
/// point, the send is refused rather than made incomplete, a fresh snapshot
/// is triggered, and the retry sends that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_below_the_horizon_is_replaced_by_a_fresh_snapshot_and_sent() {
    catch_up_by_snapshot(true).await;
}

/// Three nodes replicate, the leader stops, the other two elect a new one
/// and write past log compaction, and the stopped node comes back and
/// catches up by snapshot. With `stale_point`, the new leader's gc horizon
/// is first raised above its current snapshot point.
async fn catch_up_by_snapshot(stale_point: bool) {
    let _turn = THREE_NODE_GROUPS.lock().await;
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
    same_versions(&refs);

    // Fail-over: stop the leader; the other two elect a new one and go on.
    let idx = peers.iter().position(|p| p.id == leader_id).unwrap();
    let stopped = peers.remove(idx);
    let stopped_log = stopped
        .host
        .group(1)
        .unwrap()
        .raft
        .metrics()
        .borrow_watched()
        .last_log_index;
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
    let mut ts = write_n(new_leader, "b/", 60).await;
    converge(&refs, ts).await;
    same_versions(&refs);
    // openraft postpones a purge while a replication stream (here the one
    // to the stopped node) has entries in flight: write on until the log is
    // compacted past everything the stopped node holds, so it can only
    // catch up by snapshot.
    let group = new_leader.host.group(1).unwrap();
    let deadline = Instant::now() + BOUND;
    while group
        .raft
        .metrics()
        .borrow_watched()
        .purged
        .map(|p| p.index)
        <= stopped_log
    {
        assert!(Instant::now() < deadline, "the log was never compacted");
        ts = write_n(new_leader, "c/", 5).await;
    }
    converge(&refs, ts).await;
    let mut stale = None;
    if stale_point {
        let (p, last) = point_below_applied(new_leader).await;
        ts = last;
        // What gc does once the history window has passed the point.
        let horizon = group.applied_ts();
        ts = ts.max(horizon); // reads there stay above it
        new_leader
            .store
            .raise_gc_horizon(b"", None, horizon)
            .unwrap();
        stale = Some((p, horizon));
    }

    // The stopped node comes back after compaction: it must catch up by snapshot.
    let back = start_peer(old_id, &old_dir, &certs, old_addr).await;
    peers.push(back);
    let refs: Vec<&Peer> = peers.iter().collect();
    wire_peers(&refs);
    let rejoined = peers.last().unwrap();
    rejoined.host.open_range(whole_keyspace()).await.unwrap();
    converge(&refs, ts).await;
    // Only an install raises a horizon in this test (no gc runs here).
    let installed_at = rejoined.store.gc_horizon();
    assert!(
        installed_at > Timestamp::ZERO,
        "the rejoined node must have installed a snapshot"
    );
    // The replicas that applied the log agree on every version; the one
    // that installed a snapshot holds a subset of them (no history below
    // the snapshot's timestamp).
    let stayed: Vec<&Peer> = peers.iter().filter(|p| p.id != old_id).collect();
    same_versions(&stayed);
    let all = stayed[0].digest();
    let missing = rejoined
        .digest()
        .into_iter()
        .filter(|v| !all.contains(v))
        .count();
    assert_eq!(missing, 0, "the rejoined node holds versions nobody wrote");
    if let Some((point, horizon)) = stale {
        let leader = peers.iter().find(|p| p.id == new_leader_id).unwrap();
        // The leader may have sent the fresh snapshot's file (materialised
        // from the view it took when the build began) before its metrics
        // show the build as done: wait for them, bounded.
        let deadline = Instant::now() + BOUND;
        let now = loop {
            let now = leader
                .host
                .group(1)
                .unwrap()
                .raft
                .metrics()
                .borrow_watched()
                .snapshot;
            if now > Some(point) || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            now > Some(point),
            "a fresh snapshot replaced the stale point {point:?}: {now:?}"
        );
        assert!(
            installed_at >= horizon,
            "the fresh point was sent (installed at {installed_at}, horizon {horizon})"
        );
    }
    for p in peers {
        p.stop().await;
    }
}

/// Waits (bounded) until `leader`'s snapshot policy is at rest (fewer than
/// `snapshot_after_logs` entries applied since its current point, so no
/// build is due), writing one more entry if the point is at the last applied
/// one. Returns the point, now strictly below the applied state, and the
/// last write's version.
async fn point_below_applied(
    leader: &Peer,
) -> (
    openraft::type_config::alias::LogIdOf<meridian::raft::RangeTypes>,
    Timestamp,
) {
    let group = leader.host.group(1).unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        let m = group.raft.metrics().borrow_watched().clone();
        let (point, applied) = (m.snapshot, m.last_applied);
        let since = applied.map_or(0, |a| a.index) - point.map_or(0, |p| p.index);
        if let Some(point) = point.filter(|_| since < timing().snapshot_after_logs) {
            let last = if since == 0 {
                write_n(leader, "c/", 1).await
            } else {
                group.applied_ts()
            };
            return (point, last);
        }
        assert!(
            Instant::now() < deadline,
            "snapshot policy never at rest: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One peer with range 1 open (not initialised), for the receiving side of
/// peer-protocol exchanges, and a second node's identity to send with.
async fn receiver_and_sender(root: &Path) -> (Peer, quinn::Endpoint, quinn::ClientConfig) {
    let certs = make_certs(root);
    let any = "127.0.0.1:0".parse().unwrap();
    let receiver = start_peer(1, &root.join("n1"), &certs, any).await;
    receiver.host.open_range(whole_keyspace()).await.unwrap();
    let tls = tls(&certs, "n2");
    let endpoint = transport::server_endpoint(any, &tls, &EndpointLimits::default()).unwrap();
    let config = transport::peer_client_config(&tls, &EndpointLimits::default()).unwrap();
    (receiver, endpoint, config)
}

async fn exchange(
    conn: &quinn::Connection,
    req: &PeerRequestV1,
) -> (quinn::SendStream, quinn::RecvStream, PeerResponseV1) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    transport::write_frame(&mut send, &peer::encode(req))
        .await
        .unwrap();
    let reply = tokio::time::timeout(BOUND, transport::read_frame(&mut recv, 1 << 20))
        .await
        .unwrap()
        .unwrap();
    (send, recv, peer::decode(&reply).unwrap())
}

/// Issue 8: snapshots stream in bounded chunks and a transfer cut off by a
/// dropped connection resumes where the receiver's partial file ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_transfer_resumes_after_a_dropped_connection() {
    use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
    let root = tempfile::tempdir().unwrap();
    let (receiver, endpoint, config) = receiver_and_sender(root.path()).await;

    // A snapshot file of about 5 MB, built from a store of its own.
    let source = MvccStore::open(StoreOptions {
        path: root.path().join("source"),
        fsync: FsyncPolicy::Never,
        cache_bytes: 8 << 20,
    })
    .unwrap();
    let records: Vec<_> = (0..40u64)
        .map(|i| meridian::storage::WriteRecord {
            ts: Timestamp(i + 1),
            ops: vec![meridian::types::Op::Put {
                key: format!("k{i:03}").into_bytes(),
                value: vec![b'a' + (i % 26) as u8; 128 * 1024],
            }],
        })
        .collect();
    source.apply_batch(&records).unwrap();
    let file = snapshot::write_snapshot(
        &source.frozen_view().unwrap(),
        &whole_keyspace(),
        &snapshot::SnapshotHeader::single(1, 40),
        &root.path().join("snaps"),
    )
    .unwrap();
    assert!(file.len() > 4 * peer::SNAPSHOT_CHUNK_BYTES as u64);
    let vote: VoteOf<meridian::raft::RangeTypes> = openraft::Vote::new_committed(1, 2);
    let meta = SnapshotMetaOf::<meridian::raft::RangeTypes> {
        last_log_id: Some(openraft::testing::log_id::<meridian::raft::RangeTypes>(
            1, 2, 40,
        )),
        last_membership: Default::default(),
    };
    let offer = PeerRequestV1::SnapshotOffer {
        range: 1,
        snapshot_id: file.id().to_vec(),
        total_bytes: file.len(),
        vote: postcard::to_allocvec(&vote).unwrap(),
        meta: postcard::to_allocvec(&meta).unwrap(),
    };
    let chunk = |offset: u64| {
        let mut buf = vec![0u8; peer::SNAPSHOT_CHUNK_BYTES];
        let n = file.read_at(&mut buf, offset).unwrap();
        buf.truncate(n);
        buf
    };

    // First attempt: two chunks, then the connection drops.
    let conn = transport::connect_peer(&endpoint, &config, receiver.addr)
        .await
        .unwrap();
    let (mut send, _recv, reply) = exchange(&conn, &offer).await;
    assert_eq!(reply, PeerResponseV1::SnapshotResumeAt { offset: 0 });
    for i in 0..2 {
        let bytes = chunk(i * peer::SNAPSHOT_CHUNK_BYTES as u64);
        transport::write_frame(&mut send, &bytes).await.unwrap();
    }
    // Let the chunks land before the connection goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.close(0u32.into(), b"dropped");

    // Second attempt resumes after the two chunks and completes.
    let conn = transport::connect_peer(&endpoint, &config, receiver.addr)
        .await
        .unwrap();
    let (mut send, mut recv, reply) = exchange(&conn, &offer).await;
    let resumed = 2 * peer::SNAPSHOT_CHUNK_BYTES as u64;
    assert_eq!(reply, PeerResponseV1::SnapshotResumeAt { offset: resumed });
    let mut offset = resumed;
    while offset < file.len() {
        let bytes = chunk(offset);
        offset += bytes.len() as u64;
        transport::write_frame(&mut send, &bytes).await.unwrap();
    }
    let reply = tokio::time::timeout(BOUND, transport::read_frame(&mut recv, 1 << 20))
        .await
        .unwrap()
        .unwrap();
    match peer::decode::<PeerResponseV1>(&reply).unwrap() {
        PeerResponseV1::SnapshotInstalled(_) => {}
        other => panic!("{other:?}"),
    }
    let installed = receiver.digest();
    let expected: Vec<_> = source
        .dump_range(b"", None, 1000)
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.version, v.value))
        .collect();
    assert!(
        installed == expected,
        "the receiver holds {} versions, the snapshot {}",
        installed.len(),
        expected.len()
    );
    receiver.stop().await;
}

/// Issue 8 item 8: entries stamped more than max_offset_ms (500 ms here)
/// ahead of the receiver's clock are refused before they reach its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stamped_beyond_max_offset_are_refused() {
    use openraft::entry::RaftEntry;
    let root = tempfile::tempdir().unwrap();
    let (receiver, endpoint, _config) = receiver_and_sender(root.path()).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = Timestamp::from_parts(now_ms + 60_000, 0).unwrap();
    let mut cmd = put("future", "v");
    cmd.proposed_at = ahead.0;
    let entry = RaftEntry::new(
        openraft::testing::log_id::<meridian::raft::RangeTypes>(1, 2, 1),
        openraft::EntryPayload::Normal(cmd),
    );
    let req = openraft::raft::AppendEntriesRequest::<meridian::raft::RangeTypes> {
        vote: openraft::Vote::new_committed(1, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![entry],
    };
    let payload = postcard::to_allocvec(&req).unwrap();
    let err = receiver
        .host
        .handle_rpc(1, peer::RaftKindV1::AppendEntries, &payload, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        meridian::error_code::ErrorCode::ClockOffset,
        "{err:?}"
    );
    let group = receiver.host.group(1).unwrap();
    let log = group.raft.metrics().borrow_watched().last_log_index;
    assert_eq!(log, None, "nothing was appended");
    drop(endpoint);
    receiver.stop().await;
}

/// Issue 8 item 7: a replica that voted before a restart grants no vote
/// until a whole leader lease (election_timeout_max_ms) has passed since it
/// started, so it cannot help elect a new leader while the leader it may
/// have acknowledged still serves lease reads. A replica that never voted
/// answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_waits_out_the_lease_before_voting() {
    let root = tempfile::tempdir().unwrap();
    let certs = make_certs(root.path());
    let any = "127.0.0.1:0".parse().unwrap();
    let dir = root.path().join("n1");
    let vote_rpc = |term: u64| {
        let req = openraft::raft::VoteRequest::<meridian::raft::RangeTypes> {
            vote: openraft::Vote::new(term, 2),
            last_log_id: None,
            leadership_transfer: false,
        };
        postcard::to_allocvec(&req).unwrap()
    };

    let never_voted = start_peer(3, &root.path().join("n3"), &certs, any).await;
    never_voted.host.open_range(whole_keyspace()).await.unwrap();
    let answered = never_voted
        .host
        .handle_rpc(1, peer::RaftKindV1::Vote, &vote_rpc(1), None)
        .await;
    assert!(
        answered.is_ok(),
        "a replica that never voted answers: {answered:?}"
    );
    never_voted.stop().await;

    let fresh = start_peer(1, &dir, &certs, any).await;
    fresh.host.open_range(whole_keyspace()).await.unwrap();
    // Leads a one-voter group, so it has voted and acknowledged a leader.
    let refs = [&fresh];
    fresh
        .host
        .group(1)
        .unwrap()
        .raft
        .initialize(members(&refs))
        .await
        .unwrap();
    leader_of(&refs).await;
    let (_, dir, _) = fresh.stop().await;

    let restarted = start_peer(1, &dir, &certs, any).await;
    restarted.host.open_range(whole_keyspace()).await.unwrap();
    let started = Instant::now();
    let err = restarted
        .host
        .handle_rpc(1, peer::RaftKindV1::Vote, &vote_rpc(50), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, meridian::error_code::ErrorCode::Unavailable);
    assert!(err.message.contains("grants no vote"), "{}", err.message);
    let pre = restarted
        .host
        .handle_rpc(1, peer::RaftKindV1::PreVote, &vote_rpc(50), None)
        .await;
    assert!(pre.is_err(), "pre-votes wait too");
    let lease = Duration::from_millis(timing().election_timeout_max_ms);
    tokio::time::sleep(lease.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
    let answered = restarted
        .host
        .handle_rpc(1, peer::RaftKindV1::Vote, &vote_rpc(60), None)
        .await;
    assert!(
        answered.is_ok(),
        "votes again after the lease: {answered:?}"
    );
    restarted.stop().await;
}
