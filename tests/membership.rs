//! Membership integration tests: real nodes gossiping over UDP on
//! 127.0.0.1. Every wait is bounded; every node stops when its `Cluster`
//! guard drops (dropping the last handle stops a node like a crash), so a
//! failed assertion cannot leave nodes running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::membership::seal::{PacketHeader, Sealer, NONCE_LEN, TAG_LEN};
use meridian::membership::{
    FaultPlan, FaultyIo, GossipTimers, MemberState, Membership, MembershipConfig, MembershipEvent,
    NodeIdentity, UdpIo,
};
use tokio::net::UdpSocket;

const KEY: [u8; 32] = [0x5a; 32];
const OTHER_KEY: [u8; 32] = [0xa5; 32];
const POLL: Duration = Duration::from_millis(50);

fn lan_timers() -> GossipTimers {
    let mut t = GossipTimers::for_max_rtt(Duration::from_millis(10));
    t.report_interval_ms = 500;
    t
}

fn config(
    node: &str,
    region: &str,
    generation: u64,
    seeds: Vec<SocketAddr>,
    timers: GossipTimers,
) -> MembershipConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MembershipConfig {
        identity: NodeIdentity {
            node_id: node.to_owned(),
            region: region.to_owned(),
            zone: format!("{region}-a"),
            peer_addr: "127.0.0.1:7000".parse().unwrap(),
            client_addr: "127.0.0.1:7001".parse().unwrap(),
            gossip_addr: any,
            generation,
        },
        bind: any,
        seeds,
        cluster_key: KEY,
        timers,
    }
}

/// Owns the nodes of a test; dropping it stops them all.
#[derive(Default)]
struct Cluster {
    nodes: Vec<Option<Membership>>,
}

impl Cluster {
    fn add(&mut self, m: Membership) -> usize {
        self.nodes.push(Some(m));
        self.nodes.len() - 1
    }

    fn node(&self, i: usize) -> &Membership {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn running(&self) -> impl Iterator<Item = &Membership> {
        self.nodes.iter().flatten()
    }

    fn take(&mut self, i: usize) -> Membership {
        self.nodes[i].take().expect("node is running")
    }

    async fn shutdown_all(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown().await;
        }
    }
}

/// Starts `regions.len()` nodes named n0.., all seeded with n0 only.
async fn start_lan_cluster(cluster: &mut Cluster, regions: &[&str]) -> SocketAddr {
    let seed = Membership::start(config("n0", regions[0], 1, vec![], lan_timers()))
        .await
        .unwrap();
    let seed_addr = seed.local_addr();
    cluster.add(seed);
    for (i, region) in regions.iter().enumerate().skip(1) {
        let cfg = config(&format!("n{i}"), region, 1, vec![seed_addr], lan_timers());
        cluster.add(Membership::start(cfg).await.unwrap());
    }
    seed_addr
}

/// Polls `cond` until it holds or `limit` passes; returns the time taken.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let polled = tokio::time::timeout(limit, async {
        while !cond() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "timed out after {limit:?} waiting for {what}"
    );
    start.elapsed()
}

fn sees_all_alive(m: &Membership, n: usize) -> bool {
    let members = m.members();
    members.len() == n && members.iter().all(|v| v.state == MemberState::Alive)
}

fn state_of(m: &Membership, node: &str) -> Option<MemberState> {
    m.member(node).map(|v| v.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_nodes_in_three_regions_join_from_one_seed() {
    let mut cluster = Cluster::default();
    let regions = ["eu", "us", "ap", "eu", "us", "ap", "eu", "us", "ap"];
    start_lan_cluster(&mut cluster, &regions).await;
    let took = wait_until(Duration::from_secs(20), "all nine alive everywhere", || {
        cluster.running().all(|m| sees_all_alive(m, 9))
    })
    .await;
    println!("nine nodes converged in {took:?}");
    for m in cluster.running() {
        let health = m.region_health();
        assert_eq!(health.len(), 3, "{health:?}");
        assert!(health
            .values()
            .all(|h| h.alive == 3 && h.suspect == 0 && h.down == 0));
        let me = m.local_view();
        assert_eq!(m.members()[0].identity, me.identity, "self listed first");
        assert_eq!(me.identity.gossip_addr, m.local_addr());
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_carry_leader_hints_region_health_and_rtt() {
    let mut cluster = Cluster::default();
    start_lan_cluster(&mut cluster, &["eu", "us", "ap"]).await;
    wait_until(Duration::from_secs(10), "three alive", || {
        cluster.running().all(|m| sees_all_alive(m, 3))
    })
    .await;
    cluster.node(1).publish_leader_hint(42, "n1", 7).unwrap();
    cluster.node(1).publish_leader_hint(42, "n2", 6).unwrap(); // older term: ignored
    wait_until(Duration::from_secs(10), "leader hint everywhere", || {
        cluster.running().all(|m| {
            m.leader_hint(42, "us")
                .is_some_and(|h| h.leader_node == "n1" && h.term == 7)
        })
    })
    .await;
    wait_until(
        Duration::from_secs(15),
        "health and RTT reports from all",
        || {
            cluster.running().all(|m| {
                let reports = m.region_health_reports();
                let rtt = m.rtt_matrix();
                reports.len() == 3
                    && reports.values().all(|r| r.regions.len() == 3)
                    && rtt.len() == 3
                    && rtt.values().all(|row| row.len() == 2)
            })
        },
    )
    .await;
    let m = cluster.node(0);
    assert_eq!(m.region_health_reports()["n2"].reporter_region, "ap");
    let rtt = m.rtt_ms("n1").expect("RTT to n1 measured");
    assert!(rtt > 0.0 && rtt < 1_000.0, "loopback RTT {rtt} ms");
    assert!(
        m.publish_leader_hint(1, "", 1).is_err(),
        "empty leader refused"
    );
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abruptly_stopped_node_is_declared_down_by_all_others() {
    let mut cluster = Cluster::default();
    start_lan_cluster(&mut cluster, &["eu", "us", "ap", "eu", "us", "ap"]).await;
    wait_until(Duration::from_secs(15), "six alive", || {
        cluster.running().all(|m| sees_all_alive(m, 6))
    })
    .await;
    let mut events = cluster.node(0).subscribe();
    let victim = cluster.take(5);
    let stopped_at = Instant::now();
    victim.shutdown().await;
    let mut first_down: Option<Duration> = None;
    let took = wait_until(Duration::from_secs(30), "n5 down everywhere", || {
        let downs = cluster
            .running()
            .filter(|m| state_of(m, "n5") == Some(MemberState::Down))
            .count();
        if downs > 0 && first_down.is_none() {
            first_down = Some(stopped_at.elapsed());
        }
        downs == 5
    })
    .await;
    let t = lan_timers();
    println!(
        "detection of an abruptly stopped node (probe_period {} ms, suspect_to_down {} ms): \
         first observer {:?}, all 5 observers {:?}",
        t.probe_period_ms,
        t.suspect_to_down_ms,
        first_down.unwrap_or(took),
        stopped_at.elapsed()
    );
    let mut saw_down = false;
    while let Ok(event) = events.try_recv() {
        saw_down |= matches!(event, MembershipEvent::Down(m) if m.identity.node_id == "n5");
    }
    assert!(saw_down, "n0 emitted a Down event for n5");
    assert!(cluster.node(0).stats().downs >= 1);
    for m in cluster.running() {
        assert_eq!(m.region_health()["ap"].down, 1);
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_with_a_higher_incarnation() {
    let mut cluster = Cluster::default();
    let seed = start_lan_cluster(&mut cluster, &["eu", "us", "ap", "eu"]).await;
    wait_until(Duration::from_secs(10), "four alive", || {
        cluster.running().all(|m| sees_all_alive(m, 4))
    })
    .await;
    let before = cluster.node(0).member("n3").unwrap().incarnation;
    let addr = cluster.node(3).local_addr();

    // 1. Crash and restart at once on the same address, before anyone
    //    notices: the new generation replaces the old identity.
    cluster.take(3).shutdown().await;
    let mut cfg = config("n3", "eu", 2, vec![seed], lan_timers());
    cfg.bind = addr;
    let i = cluster.add(Membership::start(cfg).await.unwrap());
    let took = wait_until(
        Duration::from_secs(15),
        "n3 generation 2 alive everywhere",
        || {
            cluster.running().all(|m| {
                m.member("n3")
                    .is_some_and(|v| v.state == MemberState::Alive && v.identity.generation == 2)
            }) && cluster.running().all(|m| sees_all_alive(m, 4))
        },
    )
    .await;
    println!("quick restart visible everywhere after {took:?}");
    let after = cluster.node(0).member("n3").unwrap().incarnation;
    assert!(after > before, "{after:?} > {before:?}");

    // 2. Crash, wait until it is Down everywhere, then restart.
    cluster.take(i).shutdown().await;
    wait_until(Duration::from_secs(30), "n3 down everywhere", || {
        cluster
            .running()
            .all(|m| state_of(m, "n3") == Some(MemberState::Down))
    })
    .await;
    let mut cfg = config("n3", "eu", 3, vec![seed], lan_timers());
    cfg.bind = addr;
    cluster.add(Membership::start(cfg).await.unwrap());
    wait_until(
        Duration::from_secs(15),
        "n3 generation 3 alive everywhere",
        || {
            cluster.running().all(|m| sees_all_alive(m, 4))
                && cluster
                    .running()
                    .all(|m| m.member("n3").is_some_and(|v| v.identity.generation == 3))
        },
    )
    .await;
    let last = cluster.node(1).member("n3").unwrap().incarnation;
    assert!(last > after, "{last:?} > {after:?}");
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_forged_packets_change_nothing() {
    let mut cluster = Cluster::default();
    let seed = Membership::start(config("n0", "eu", 1, vec![], lan_timers()))
        .await
        .unwrap();
    let seed_addr = seed.local_addr();
    cluster.add(seed);
    // n1 records what it sends, for the same-cluster replay below.
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let recorder = Arc::new(
        FaultyIo::new(UdpIo::bind(any).await.unwrap(), FaultPlan::none(), 1).recording(64),
    );
    let cfg = config("n1", "us", 1, vec![seed_addr], lan_timers());
    cluster.add(Membership::start_with_io(cfg, recorder.clone(), Some(1)).unwrap());
    let cfg = config("n2", "ap", 1, vec![seed_addr], lan_timers());
    cluster.add(Membership::start(cfg).await.unwrap());
    wait_until(Duration::from_secs(10), "three alive", || {
        cluster.running().all(|m| sees_all_alive(m, 3))
    })
    .await;

    // An outsider with another cluster key tries to join through the seed.
    let outsider_io = Arc::new(
        FaultyIo::new(UdpIo::bind(any).await.unwrap(), FaultPlan::none(), 2).recording(64),
    );
    let mut cfg = config("intruder", "eu", 1, vec![seed_addr], lan_timers());
    cfg.cluster_key = OTHER_KEY;
    let outsider = cluster.add(Membership::start_with_io(cfg, outsider_io.clone(), None).unwrap());
    wait_until(
        Duration::from_secs(10),
        "the outsider's packets dropped",
        || cluster.node(0).stats().auth_dropped_by_reason["key_id"] >= 3,
    )
    .await;

    // Forgeries, sent to every member.
    let attacker = UdpSocket::bind(any).await.unwrap();
    let sealer = Sealer::new(&KEY).unwrap();
    let targets: Vec<SocketAddr> = (0..3).map(|i| cluster.node(i).local_addr()).collect();
    let mut sent_tag = 0u64;
    let mut sent_version = 0u64;
    for (i, target) in targets.iter().enumerate() {
        for round in 0..5u8 {
            let noise: Vec<u8> = (0..200).map(|_| rand::random::<u8>()).collect();
            attacker.send_to(&noise, target).await.unwrap();
            // A valid header naming our key, with garbage ciphertext and tag.
            let mut forged = PacketHeader::v1(sealer.key_id(), [round; NONCE_LEN])
                .encode()
                .to_vec();
            forged.extend((0..64 + TAG_LEN).map(|_| rand::random::<u8>()));
            attacker.send_to(&forged, target).await.unwrap();
            sent_tag += 1;
            // A correctly sealed packet whose header claims version 2.
            let mut future = sealer.seal(&[0x01, round, i as u8]).unwrap();
            future[2] = 2;
            attacker.send_to(&future, target).await.unwrap();
            sent_version += 1;
        }
    }
    // The outsider's packets, replayed from elsewhere to every member.
    for (_, bytes) in outsider_io.recorded() {
        for target in &targets {
            attacker.send_to(&bytes, target).await.unwrap();
        }
    }
    // n1's own packets, replayed to where they went: duplicates.
    let replays = recorder.recorded();
    assert!(!replays.is_empty());
    for (to, bytes) in &replays {
        attacker.send_to(bytes, to).await.unwrap();
    }
    let total = |reason: &str| -> u64 {
        (0..3)
            .map(|i| cluster.node(i).stats().auth_dropped_by_reason[reason])
            .sum()
    };
    wait_until(Duration::from_secs(5), "forgeries counted", || {
        total("tag") == sent_tag && total("version") == sent_version && total("replay") > 0
    })
    .await;

    // Give any effect a full suspicion timeout to show, then check nothing
    // changed: the same three members, all alive, no outsider.
    tokio::time::sleep(Duration::from_millis(lan_timers().suspect_to_down_ms + 500)).await;
    for i in 0..3 {
        let m = cluster.node(i);
        assert!(sees_all_alive(m, 3), "node {i}: {:?}", m.members());
        assert!(m.member("intruder").is_none());
        assert_eq!(m.stats().downs, 0);
    }
    let intruder = cluster.node(outsider);
    assert_eq!(intruder.members().len(), 1, "the outsider learned nobody");
    assert_eq!(
        intruder.stats().auth_dropped,
        0,
        "members never answered it"
    );
    println!(
        "dropped: tag {} version {} replay {} key_id {} truncated/magic {}",
        total("tag"),
        total("version"),
        total("replay"),
        total("key_id"),
        total("truncated") + total("magic"),
    );
    cluster.shutdown_all().await;
}

/// One-way delay between regions: 50, 100 or 150 ms (+ up to 10 ms jitter);
/// 1 ms inside a region.
fn wan_delay(from: usize, to: usize) -> Duration {
    let base = match (from.min(to), from.max(to)) {
        (a, b) if a == b => 1,
        (0, 1) => 50,
        (0, 2) => 100,
        _ => 150,
    };
    Duration::from_millis(base) + Duration::from_micros(rand::random_range(0..10_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_loss_and_latency_declare_no_live_node_down() {
    const NODES: usize = 6;
    const LOSS: f64 = 0.10;
    let window = Duration::from_secs(6);
    let timers = GossipTimers::for_max_rtt(Duration::from_millis(320));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();

    // Bind first, so every node's faulty layer knows every address's region.
    let mut sockets = Vec::new();
    for _ in 0..NODES {
        sockets.push(UdpIo::bind(any).await.unwrap());
    }
    let region_of: Arc<HashMap<SocketAddr, usize>> = Arc::new(
        sockets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    meridian::membership::PacketIo::local_addr(s).unwrap(),
                    i % 3,
                )
            })
            .collect(),
    );
    let seed_addr = meridian::membership::PacketIo::local_addr(&sockets[0]).unwrap();
    let mut cluster = Cluster::default();
    let mut receivers = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let regions = region_of.clone();
        let plan = FaultPlan {
            loss: LOSS,
            delay: Arc::new(move |to| wan_delay(i % 3, regions.get(&to).copied().unwrap_or(0))),
        };
        let io = Arc::new(FaultyIo::new(socket, plan, 100 + i as u64));
        let seeds = if i == 0 { vec![] } else { vec![seed_addr] };
        let region = ["eu", "us", "ap"][i % 3];
        let cfg = config(&format!("n{i}"), region, 1, seeds, timers.clone());
        let m = Membership::start_with_io(cfg, io, Some(i as u64)).unwrap();
        receivers.push(m.subscribe());
        cluster.add(m);
    }
    let joined = wait_until(
        Duration::from_secs(40),
        "all alive under WAN faults",
        || cluster.running().all(|m| sees_all_alive(m, NODES)),
    )
    .await;

    let start = cluster.running().map(|m| m.stats()).collect::<Vec<_>>();
    let mut downs = Vec::new();
    let observe_until = Instant::now() + window;
    while Instant::now() < observe_until {
        tokio::time::sleep(POLL).await;
        for (i, m) in cluster.running().enumerate() {
            for v in m.members() {
                if !v.state.is_active() {
                    downs.push((i, v.identity.node_id.clone(), v.state));
                }
            }
        }
    }
    let mut suspicions = 0;
    let mut refuted = 0;
    for (m, s0) in cluster.running().zip(&start) {
        let s = m.stats();
        suspicions += s.suspicions - s0.suspicions;
        refuted += s.refuted - s0.refuted;
    }
    let mut down_events = 0;
    for rx in &mut receivers {
        while let Ok(event) = rx.try_recv() {
            down_events += usize::from(matches!(
                event,
                MembershipEvent::Down(_) | MembershipEvent::Left(_)
            ));
        }
    }
    println!(
        "WAN ({NODES} nodes, {LOSS} loss, 50-150 ms one-way): joined in {joined:?}; \
         over {window:?}: {suspicions} suspicions, {refuted} refuted, {down_events} down events"
    );
    assert!(downs.is_empty(), "live nodes seen down: {downs:?}");
    assert_eq!(down_events, 0);
    cluster.shutdown_all().await;
}
