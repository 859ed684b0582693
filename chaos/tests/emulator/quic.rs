//! A real QUIC connection (quinn, as Meridian's nodes use) through a front:
//! the handshake and every stream round trip pay the client region's RTT,
//! the client sees the front as its peer, and a transfer of many packets
//! arrives intact.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_chaos::{Emulator, Protocol};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::common::*;

const NAME: &str = "eu-west-node1";

/// A quinn server on eu-west's node address that echoes every stream.
fn echo_server() -> (SocketAddr, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec![NAME.into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let config = quinn::ServerConfig::with_single_cert(vec![der.clone()], key.into()).unwrap();
    let server = quinn::Endpoint::server(config, SocketAddr::from((node_ip(EU, 0), 0))).unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(data) = recv.read_to_end(1 << 20).await else {
                            return;
                        };
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    (addr, der)
}

async fn client(
    region: usize,
    front: SocketAddr,
    cert: CertificateDer<'static>,
) -> (Duration, Vec<Duration>, Duration) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((node_ip(region, 1), 0))).unwrap();
    endpoint.set_default_client_config(config);
    let start = tokio::time::Instant::now();
    let conn = tokio::time::timeout(WAIT, endpoint.connect(front, NAME).unwrap())
        .await
        .unwrap()
        .unwrap();
    let handshake = start.elapsed();
    assert_eq!(
        conn.remote_address(),
        front,
        "the client's peer is the front"
    );
    let mut rtts = Vec::new();
    for i in 0..5u8 {
        let start = tokio::time::Instant::now();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[i; 64]).await.unwrap();
        send.finish().unwrap();
        let back = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [i; 64]);
        rtts.push(start.elapsed());
    }
    // Many packets each way.
    let big: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&big).await.unwrap();
    send.finish().unwrap();
    let back = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    assert!(back == big, "512 KiB came back changed");
    let smoothed = conn.rtt();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(ms(500), endpoint.wait_idle()).await;
    (handshake, rtts, smoothed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_through_a_front_pay_their_regions_rtt() {
    let (upstream, cert) = echo_server();
    let mut config = three_regions();
    config.listeners.push(listener(
        "eu-west/node1/quic",
        Protocol::Udp,
        EU,
        0,
        upstream,
    ));
    let wan = Emulator::start(config).await.unwrap();
    let front = wan.listener_addr("eu-west/node1/quic").unwrap();
    // Two regions dial the same front at once.
    let us = tokio::spawn(client(US, front, cert.clone()));
    let ap = tokio::spawn(client(AP, front, cert));
    for (region, rtt, task) in [(US, 70u64, us), (AP, 140, ap)] {
        let (handshake, rtts, smoothed) = task.await.unwrap();
        let (min, median, _) = summary(rtts);
        println!(
            "quic {} -> eu-west: configured RTT {rtt} ms; handshake {handshake:?}, stream round trip min {min:?} median {median:?}, quinn's smoothed RTT {smoothed:?}",
            NAMES[region]
        );
        assert!(handshake >= ms(rtt) * 9 / 10, "{handshake:?}");
        assert!(min >= ms(rtt) * 9 / 10, "{min:?}");
        assert!(median <= ms(rtt) * 13 / 10 + ms(25), "{median:?}");
        assert!(smoothed >= ms(rtt) * 9 / 10, "{smoothed:?}");
    }
    let s = wan.controller().status().await.unwrap();
    let l = s.listener("eu-west/node1/quic").unwrap();
    assert_eq!(l.opened, 2, "one flow per client endpoint");
    assert_eq!(
        s.link("ap-south", "eu-west")
            .unwrap()
            .datagrams
            .dropped_overflow,
        0
    );
    wan.shutdown().await;
}
