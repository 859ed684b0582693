//! The addressing scheme's premise, checked on this machine: any
//! 127.0.0.0/8 address can be bound without configuration, and a client
//! bound to 127.0.2.1 is seen with that source address (UDP and TCP); an
//! unbound client is seen as 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use tokio::net::{TcpListener, UdpSocket};

use crate::common::*;

#[tokio::test]
async fn a_bound_udp_client_is_seen_with_its_own_loopback_address() {
    let server = UdpSocket::bind((Ipv4Addr::new(127, 1, 2, 1), 0))
        .await
        .unwrap();
    let to = server.local_addr().unwrap();
    let mut buf = [0u8; 8];
    for (bind, seen) in [
        (
            Some(Ipv4Addr::new(127, 0, 2, 1)),
            Ipv4Addr::new(127, 0, 2, 1),
        ),
        (
            Some(Ipv4Addr::new(127, 0, 3, 250)),
            Ipv4Addr::new(127, 0, 3, 250),
        ),
        (None, Ipv4Addr::LOCALHOST),
    ] {
        let client = match bind {
            Some(ip) => UdpSocket::bind((ip, 0)).await.unwrap(),
            None => UdpSocket::bind("0.0.0.0:0").await.unwrap(),
        };
        client.send_to(b"hi", to).await.unwrap();
        let (_, from) = tokio::time::timeout(WAIT, server.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from.ip(), IpAddr::V4(seen));
    }
}

#[tokio::test]
async fn a_bound_tcp_client_is_seen_with_its_own_loopback_address() {
    let server = TcpListener::bind((Ipv4Addr::new(127, 1, 2, 1), 0))
        .await
        .unwrap();
    let to = server.local_addr().unwrap();
    let _client = tcp_connect(Ipv4Addr::new(127, 0, 2, 1), to).await;
    let (_, from) = tokio::time::timeout(WAIT, server.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)));
    let _unbound = tokio::net::TcpStream::connect(to).await.unwrap();
    let (_, from) = tokio::time::timeout(WAIT, server.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
}
