//! TCP through the emulator: latency applies, bytes keep their order,
//! a partition stalls and heal resumes, and a fixed-source listener serves
//! software that cannot bind its source address.

use std::net::Ipv4Addr;
use std::time::Duration;

use meridian_chaos::{Emulator, LinkParams, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

async fn round_trip(s: &mut TcpStream, payload: &[u8]) -> Duration {
    let start = tokio::time::Instant::now();
    s.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, payload);
    start.elapsed()
}

/// Writes `total` patterned bytes and reads them back concurrently; checks
/// every byte is in its place.
async fn stream_and_check(s: TcpStream, total: usize) {
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < total {
            let n = (total - sent).min(7_919); // odd sizes cross chunk edges
            let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
            w.write_all(&chunk).await.unwrap();
            sent += n;
        }
        w
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 65_536];
    while got < total {
        let n = tokio::time::timeout(WAIT, r.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {got} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, ((got + k) % 251) as u8, "byte {} out of order", got + k);
        }
        got += n;
    }
    drop(writer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_sees_the_latency_and_keeps_byte_order() {
    let mut config = three_regions();
    // Jitter, so chunks draw different delays and order must be kept.
    config.links[0].params = LinkParams {
        rtt_ms: 70,
        jitter_ms: 10,
        loss: 0.5, // ignored by TCP
    };
    let echo = tcp_echo(node_ip(EU, 0)).await;
    config
        .listeners
        .push(listener("eu", Protocol::Tcp, EU, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let mut s = tcp_connect(node_ip(US, 1), front).await;
    let mut rtts = Vec::new();
    for i in 0..10u8 {
        rtts.push(round_trip(&mut s, &[i; 100]).await);
    }
    let (min, median, max) = summary(rtts);
    println!("tcp echo us-east -> eu-west: configured RTT 70 ms (jitter 10), measured min {min:?} median {median:?} max {max:?}");
    // Jitter takes up to 10 ms off each way.
    assert!(min >= ms(50), "{min:?}");
    assert!(median <= ms(70) * 13 / 10 + ms(25), "{median:?}");
    let start = tokio::time::Instant::now();
    stream_and_check(s, 4 * 1024 * 1024).await;
    println!(
        "tcp 4 MiB echoed in order through 70 ms in {:?}",
        start.elapsed()
    );
    let st = wan.controller().status().await.unwrap();
    let there = st.link("us-east", "eu-west").unwrap().streams;
    assert_eq!(there.connections, 1);
    assert_eq!(there.bytes_forwarded, 1_000 + 4 * 1024 * 1024);
    assert_eq!(
        st.link("eu-west", "us-east")
            .unwrap()
            .streams
            .bytes_forwarded,
        1_000 + 4 * 1024 * 1024
    );
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stalls_tcp_and_heal_resumes_it_in_order() {
    let mut config = three_regions();
    let echo = tcp_echo(node_ip(AP, 0)).await;
    config
        .listeners
        .push(listener("ap", Protocol::Tcp, AP, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("ap").unwrap();
    let control = wan.controller();
    let mut s = tcp_connect(node_ip(EU, 1), front).await;
    let rtt = round_trip(&mut s, b"hello").await;
    assert!(rtt >= ms(126), "{rtt:?}");

    control.cut("eu-west", "ap-south").await.unwrap();
    s.write_all(b"during the cut").await.unwrap();
    let mut buf = [0u8; 64];
    let stalled = tokio::time::timeout(ms(500), s.read(&mut buf)).await;
    assert!(stalled.is_err(), "nothing crosses a cut link");
    // A connection opened during the cut waits too (it is not refused).
    let mut late = tcp_connect(node_ip(EU, 2), front).await;
    late.write_all(b"late").await.unwrap();
    assert!(tokio::time::timeout(ms(300), late.read(&mut buf))
        .await
        .is_err());

    let healed_at = tokio::time::Instant::now();
    control.heal().await.unwrap();
    let mut back = [0u8; 14];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"during the cut");
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, late.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"late");
    println!(
        "tcp stalled by a partition resumed {:?} after heal (RTT 140 ms)",
        healed_at.elapsed()
    );
    // And the connection carries on normally.
    assert!(round_trip(&mut s, b"after").await >= ms(126));
    let st = control.status().await.unwrap();
    assert!(
        st.link("eu-west", "ap-south")
            .unwrap()
            .streams
            .stalled_chunks
            >= 1
    );
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_source_listener_serves_clients_that_cannot_bind() {
    // etcd dials from 127.0.0.1; a front per (source region, node) pins it.
    let mut config = three_regions();
    let echo = tcp_echo(node_ip(EU, 0)).await;
    let mut l = listener("eu-from-ap", Protocol::Tcp, EU, 0, echo);
    l.listen = std::net::SocketAddr::from((
        meridian_chaos::addr::LoopbackPlan::fixed_source_front(AP, EU, 0).unwrap(),
        0,
    ));
    l.source_region = Some("ap-south".into());
    config.listeners.push(l);
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu-from-ap").unwrap();
    assert_eq!(front.ip(), Ipv4Addr::new(127, 4, 2, 1));
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(front))
        .await
        .unwrap()
        .unwrap();
    s.set_nodelay(true).unwrap();
    let mut rtts = Vec::new();
    for _ in 0..5 {
        rtts.push(round_trip(&mut s, b"ping").await);
    }
    let (min, median, _) = summary(rtts);
    println!("tcp fixed-source ap-south -> eu-west from 127.0.0.1: configured 140 ms, measured min {min:?} median {median:?}");
    assert!(min >= ms(126));
    let st = wan.controller().status().await.unwrap();
    assert_eq!(
        st.link("ap-south", "eu-west").unwrap().streams.connections,
        1
    );
    wan.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_are_closed() {
    let mut config = three_regions();
    config.limits.max_connections_per_listener = 1;
    let echo = tcp_echo(node_ip(EU, 0)).await;
    config
        .listeners
        .push(listener("eu", Protocol::Tcp, EU, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let mut first = tcp_connect(node_ip(EU, 1), front).await;
    round_trip(&mut first, b"one").await;
    let mut second = tcp_connect(node_ip(EU, 2), front).await;
    let _ = second.write_all(b"two").await;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, second.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the second connection is closed, not served");
    let st = wan.controller().status().await.unwrap();
    let l = st.listener("eu").unwrap();
    assert_eq!((l.open, l.refused), (1, 1));
    wan.shutdown().await;
}
