//! UDP through the emulator: round trips match the configured RTTs, loss
//! matches its ratio, partitions drop and heal restores, queues and flow
//! tables stay bounded, and many flows each get their own replies.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_chaos::{Emulator, LinkParams, Protocol, StartError};
use tokio::net::UdpSocket;

use crate::common::*;

/// Echo servers on node 0 of every region, with fronts; returns the
/// emulator and the front of each region's node.
async fn start(mut config: meridian_chaos::WanConfig) -> (Emulator, [SocketAddr; 3]) {
    let mut names = Vec::new();
    for region in [US, EU, AP] {
        let (echo, _) = udp_echo(node_ip(region, 0)).await;
        let name = format!("{}/node1/quic", NAMES[region]);
        config
            .listeners
            .push(listener(&name, Protocol::Udp, region, 0, echo));
        names.push(name);
    }
    let wan = Emulator::start(config).await.unwrap();
    let fronts = [0, 1, 2].map(|i| wan.listener_addr(&names[i]).unwrap());
    (wan, fronts)
}

async fn pings(from: std::net::Ipv4Addr, to: SocketAddr, n: usize, tag: &str) -> Vec<Duration> {
    let sock = udp_client(from).await;
    let mut out = Vec::new();
    for i in 0..n {
        let payload = format!("{tag}-{i}");
        let rtt = udp_ping(&sock, to, payload.as_bytes(), WAIT)
            .await
            .unwrap_or_else(|| panic!("{tag}: ping {i} got no reply"));
        out.push(rtt);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_match_the_configured_rtt() {
    let (wan, fronts) = start(three_regions()).await;
    // (client region, destination region, configured RTT)
    let pairs = [
        (US, EU, 70u64),
        (EU, AP, 140),
        (US, AP, 200),
        (AP, US, 200),
        (EU, EU, 0),
    ];
    let runs = pairs.map(|(from, to, rtt)| {
        let tag = format!("{}->{}", NAMES[from], NAMES[to]);
        // Node 2 of the client region: a different address than the server.
        let task = tokio::spawn(async move { pings(node_ip(from, 1), fronts[to], 10, &tag).await });
        (from, to, rtt, task)
    });
    // An unbound client (127.0.0.1) is unclassified: no delay.
    let cli =
        tokio::spawn(
            async move { pings(std::net::Ipv4Addr::LOCALHOST, fronts[AP], 10, "cli").await },
        );
    for (from, to, rtt, task) in runs {
        let (min, median, max) = summary(task.await.unwrap());
        println!(
            "udp echo {} -> {}: configured RTT {rtt} ms, measured min {min:?} median {median:?} max {max:?}",
            NAMES[from], NAMES[to]
        );
        assert!(min >= ms(rtt) * 9 / 10, "{min:?} below 0.9 x {rtt} ms");
        assert!(
            median <= ms(rtt) * 13 / 10 + ms(25),
            "{median:?} far above {rtt} ms"
        );
    }
    let (min, median, max) = summary(cli.await.unwrap());
    println!("udp echo unclassified -> ap-south: configured 0 ms, measured min {min:?} median {median:?} max {max:?}");
    assert!(median <= ms(25));
    // The status saw it on the right links.
    let status = wan.controller().status().await.unwrap();
    let ue = status.link("us-east", "eu-west").unwrap();
    assert_eq!(ue.datagrams.packets_forwarded, 10);
    assert_eq!(
        status
            .link("eu-west", "us-east")
            .unwrap()
            .datagrams
            .packets_forwarded,
        10
    );
    assert_eq!(
        status
            .link("unclassified", "ap-south")
            .unwrap()
            .datagrams
            .packets_forwarded,
        10
    );
    wan.shutdown().await;
}

/// Sends 2 000 numbered datagrams us-east -> eu-west over a link losing
/// 20% each way; returns the numbers that reached the server and the status
/// once every datagram is accounted for.
async fn lossy_run(seed: u64) -> (BTreeSet<u64>, meridian_chaos::Status) {
    let mut config = three_regions();
    config.seed = Some(seed);
    // us-east <-> eu-west: short, so the test is quick, and lossy.
    config.links[0].params = LinkParams {
        rtt_ms: 10,
        jitter_ms: 0,
        loss: 0.2,
    };
    let server = UdpSocket::bind((node_ip(EU, 0), 0)).await.unwrap();
    config.listeners.push(listener(
        "eu",
        Protocol::Udp,
        EU,
        0,
        server.local_addr().unwrap(),
    ));
    let arrived = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let record = arrived.clone();
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            if let Ok(seq) = <[u8; 8]>::try_from(&buf[..n]) {
                record.lock().unwrap().insert(u64::from_be_bytes(seq));
            }
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let client = udp_client(node_ip(US, 1)).await;
    let sent = 2_000u64;
    for i in 0..sent {
        client.send_to(&i.to_be_bytes(), front).await.unwrap();
        if i % 50 == 0 {
            // Paced so no socket buffer overflows: every loss is the link's.
            tokio::time::sleep(ms(2)).await;
        }
    }
    // Bounded wait until every datagram is dropped or at the server, and
    // every reply dropped or forwarded.
    let control = wan.controller();
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let s = control.status().await.unwrap();
        let there = s.link("us-east", "eu-west").unwrap().datagrams;
        let back = s.link("eu-west", "us-east").unwrap().datagrams;
        let at_server = arrived.lock().unwrap().len() as u64;
        if there.packets_forwarded + there.dropped_loss == sent
            && there.packets_forwarded == at_server
            && back.packets_forwarded + back.dropped_loss == at_server
        {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all datagrams accounted for: {there:?} {back:?}"
        );
        tokio::time::sleep(ms(20)).await;
    };
    wan.shutdown().await;
    echo.abort();
    let set = arrived.lock().unwrap().clone();
    (set, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_is_near_the_configured_ratio_and_follows_the_seed() {
    let (arrived, s) = lossy_run(42).await;
    let sent = 2_000f64;
    let there = s.link("us-east", "eu-west").unwrap().datagrams;
    let back = s.link("eu-west", "us-east").unwrap().datagrams;
    let ratio = there.dropped_loss as f64 / sent;
    let back_ratio = back.dropped_loss as f64 / there.packets_forwarded as f64;
    println!(
        "udp loss: configured 0.2 each way; measured {ratio:.3} there ({} of 2000), {back_ratio:.3} back ({} of {})",
        there.dropped_loss, back.dropped_loss, there.packets_forwarded
    );
    assert!((ratio - 0.2).abs() < 0.04, "{ratio}");
    assert!((back_ratio - 0.2).abs() < 0.05, "{back_ratio}");
    assert_eq!(s.input_overflow, 0);
    assert_eq!(there.dropped_overflow + there.dropped_partition, 0);
    // Each link draws from its own seeded generator, so the same seed
    // loses the same datagrams of a flow, whatever the replies do.
    let (again, _) = lossy_run(42).await;
    assert!(arrived == again, "the same seed lost different datagrams");
    let (other, _) = lossy_run(43).await;
    assert!(arrived != other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_drops_traffic_and_heal_restores_it() {
    let (wan, fronts) = start(three_regions()).await;
    let control = wan.controller();
    let us = udp_client(node_ip(US, 1)).await;
    let eu = udp_client(node_ip(EU, 1)).await;
    assert!(udp_ping(&us, fronts[EU], b"before", WAIT).await.is_some());

    control.cut("us-east", "eu-west").await.unwrap();
    assert!(udp_ping(&us, fronts[EU], b"cut-1", ms(400)).await.is_none());
    assert!(udp_ping(&eu, fronts[US], b"cut-2", ms(400)).await.is_none());
    // Other pairs still talk, with their own delay.
    let rtt = udp_ping(&us, fronts[AP], b"other", WAIT)
        .await
        .expect("us-east -> ap-south is not cut");
    assert!(rtt >= ms(180));
    let s = control.status().await.unwrap();
    assert!(s.link("us-east", "eu-west").unwrap().cut);
    assert!(s.link("eu-west", "us-east").unwrap().cut);
    assert!(!s.link("us-east", "ap-south").unwrap().cut);
    assert_eq!(
        s.link("us-east", "eu-west")
            .unwrap()
            .datagrams
            .dropped_partition,
        1
    );
    assert_eq!(
        s.link("eu-west", "us-east")
            .unwrap()
            .datagrams
            .dropped_partition,
        1
    );

    control.heal().await.unwrap();
    let rtt = udp_ping(&us, fronts[EU], b"healed", WAIT)
        .await
        .expect("heal restores traffic");
    println!("udp after heal: us-east -> eu-west {rtt:?}");

    // Isolation cuts a region from both others, but not from itself.
    control.isolate("ap-south").await.unwrap();
    let ap = udp_client(node_ip(AP, 1)).await;
    assert!(udp_ping(&us, fronts[AP], b"iso-1", ms(400)).await.is_none());
    assert!(udp_ping(&ap, fronts[EU], b"iso-2", ms(400)).await.is_none());
    assert!(udp_ping(&ap, fronts[AP], b"iso-own", WAIT).await.is_some());
    control.heal().await.unwrap();
    assert!(udp_ping(&ap, fronts[EU], b"iso-healed", WAIT)
        .await
        .is_some());
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_cut_loses_the_reply_not_the_request() {
    let mut config = three_regions();
    let (echo, received) = udp_echo(node_ip(EU, 0)).await;
    config
        .listeners
        .push(listener("eu", Protocol::Udp, EU, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let control = wan.controller();
    control
        .partition(meridian_chaos::Partition::OneWay {
            from: "eu-west".into(),
            to: "us-east".into(),
        })
        .await
        .unwrap();
    let us = udp_client(node_ip(US, 1)).await;
    assert!(udp_ping(&us, front, b"one-way", ms(400)).await.is_none());
    // The request arrived; the reply was cut.
    assert_eq!(received.load(Ordering::Relaxed), 1);
    let s = control.status().await.unwrap();
    assert_eq!(
        s.link("us-east", "eu-west")
            .unwrap()
            .datagrams
            .packets_forwarded,
        1
    );
    assert_eq!(
        s.link("eu-west", "us-east")
            .unwrap()
            .datagrams
            .dropped_partition,
        1
    );
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_flows_each_get_their_own_replies() {
    // Like many QUIC endpoints behind one front: every client socket is a
    // flow with its own upstream socket, and every reply finds its client.
    let mut config = three_regions();
    let server = UdpSocket::bind((node_ip(EU, 0), 0)).await.unwrap();
    let upstream = server.local_addr().unwrap();
    config
        .listeners
        .push(listener("eu", Protocol::Udp, EU, 0, upstream));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    // The server replies to whoever sent, prefixing the address it saw.
    let sources = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let seen = sources.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2_048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            seen.lock().unwrap().insert(from);
            let mut reply = format!("{from}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, from).await;
        }
    });
    let per_region = 16;
    let mut tasks = Vec::new();
    for region in [US, EU, AP] {
        for c in 0..per_region {
            tasks.push(tokio::spawn(async move {
                let sock = udp_client(node_ip(region, 1 + c)).await;
                let mut buf = vec![0u8; 2_048];
                let mut rtts = Vec::new();
                let mut upstream_seen = None;
                for seq in 0..5 {
                    let me = format!("{}-{c}-{seq}", NAMES[region]);
                    let start = tokio::time::Instant::now();
                    sock.send_to(me.as_bytes(), front).await.unwrap();
                    let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    rtts.push(start.elapsed());
                    assert_eq!(from, front);
                    let text = std::str::from_utf8(&buf[..n]).unwrap();
                    let (addr, echoed) = text.split_once('|').unwrap();
                    assert_eq!(echoed, me, "a reply reached the wrong flow");
                    // One upstream socket per flow, stable across datagrams.
                    assert_eq!(*upstream_seen.get_or_insert(addr.to_string()), addr);
                }
                (region, summary(rtts))
            }));
        }
    }
    let mut by_region = [Duration::MAX; 3];
    for t in tasks {
        let (region, (min, _, _)) = t.await.unwrap();
        by_region[region] = by_region[region].min(min);
    }
    println!("udp 48 flows to eu-west, fastest round trip by client region: us-east {:?} eu-west {:?} ap-south {:?}", by_region[US], by_region[EU], by_region[AP]);
    assert!(by_region[US] >= ms(63));
    assert!(by_region[AP] >= ms(126));
    assert!(by_region[EU] < ms(25));
    assert_eq!(sources.lock().unwrap().len(), 3 * per_region);
    let s = wan.controller().status().await.unwrap();
    let l = s.listener("eu").unwrap();
    assert_eq!((l.open, l.opened, l.refused), (48, 48, 0));
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_bounded_and_expire_when_idle() {
    let mut config = three_regions();
    config.limits.max_flows_per_listener = 2;
    config.limits.flow_idle = ms(300);
    let (echo, _) = udp_echo(node_ip(EU, 0)).await;
    config
        .listeners
        .push(listener("eu", Protocol::Udp, EU, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let a = udp_client(node_ip(EU, 1)).await;
    let b = udp_client(node_ip(EU, 2)).await;
    let c = udp_client(node_ip(EU, 3)).await;
    assert!(udp_ping(&a, front, b"a", WAIT).await.is_some());
    assert!(udp_ping(&b, front, b"b", WAIT).await.is_some());
    assert!(
        udp_ping(&c, front, b"c", ms(200)).await.is_none(),
        "a third flow is refused"
    );
    let s = wan.controller().status().await.unwrap();
    assert_eq!(s.listener("eu").unwrap().refused, 1);
    // Idle flows close, which makes room.
    tokio::time::sleep(ms(700)).await;
    assert_eq!(
        wan.controller()
            .status()
            .await
            .unwrap()
            .listener("eu")
            .unwrap()
            .open,
        0
    );
    assert!(udp_ping(&c, front, b"c2", WAIT).await.is_some());
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_link_queue_drops_and_counts() {
    let mut config = three_regions();
    config.limits.link_queue_packets = 10;
    let (echo, received) = udp_echo(node_ip(AP, 0)).await;
    config
        .listeners
        .push(listener("ap", Protocol::Udp, AP, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("ap").unwrap();
    let us = udp_client(node_ip(US, 1)).await;
    // 100 ms one way: all 50 arrive at the emulator well before the first
    // is due, so the queue holds 10 and drops 40.
    for i in 0..50u32 {
        us.send_to(&i.to_be_bytes(), front).await.unwrap();
    }
    tokio::time::sleep(ms(400)).await;
    let s = wan.controller().status().await.unwrap();
    let l = s.link("us-east", "ap-south").unwrap().datagrams;
    println!("udp overflow: queue bound 10, sent 50 at once: {l:?}");
    assert_eq!(l.packets_forwarded, 10);
    assert_eq!(l.dropped_overflow, 40);
    assert_eq!(received.load(Ordering::Relaxed), 10);
    wan.shutdown().await;
}

#[tokio::test]
async fn a_taken_address_fails_the_start_and_names_the_listener() {
    let taken = UdpSocket::bind((front_ip(EU, 0), 0)).await.unwrap();
    let mut config = three_regions();
    let mut l = listener(
        "eu-front",
        Protocol::Udp,
        EU,
        0,
        "127.0.2.1:9".parse().unwrap(),
    );
    l.listen = taken.local_addr().unwrap();
    config.listeners.push(l);
    match Emulator::start(config).await {
        Err(StartError::Bind { what, .. }) => assert_eq!(what, "eu-front"),
        other => panic!("expected a bind error, got {other:?}"),
    }
}
