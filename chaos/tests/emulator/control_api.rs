//! The control API over TCP: requests change the running emulator, bad
//! ones are refused without change, link changes take effect.

use std::net::SocketAddr;

use meridian_chaos::control::{self, parse_request, Request};
use meridian_chaos::{Emulator, Protocol};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::*;

async fn send(addr: SocketAddr, line: &str) -> control::Response {
    control::send(addr, &parse_request(line).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_partitions_heals_changes_links_and_reports() {
    let mut config = three_regions();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let (echo, _) = udp_echo(node_ip(EU, 0)).await;
    config
        .listeners
        .push(listener("eu", Protocol::Udp, EU, 0, echo));
    let wan = Emulator::start(config).await.unwrap();
    let api = wan.control_addr().unwrap();
    let front = wan.listener_addr("eu").unwrap();
    let us = udp_client(node_ip(US, 1)).await;

    assert!(send(api, "partition us-east eu-west").await.ok);
    assert!(udp_ping(&us, front, b"x", ms(300)).await.is_none());
    let s = send(api, "status").await.status.unwrap();
    assert_eq!(s.partitions.len(), 1);
    assert!(s.link("us-east", "eu-west").unwrap().cut);
    assert!(s.render().contains("us-east <-/-> eu-west"));
    assert!(send(api, "heal").await.ok);
    assert!(udp_ping(&us, front, b"y", WAIT).await.is_some());

    // Refusals say why and change nothing.
    let r = send(api, "isolate mars").await;
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("mars"));
    let r = send(api, "link us-east eu-west loss=3").await;
    assert!(!r.ok && r.error.unwrap().contains("loss"));
    let s = send(api, "status").await.status.unwrap();
    assert!(s.partitions.is_empty());
    assert_eq!(s.link("us-east", "eu-west").unwrap().params.loss, 0.0);

    // A link change applies to the next datagram; unnamed fields are kept.
    assert!(send(api, "link us-east eu-west rtt_ms=300").await.ok);
    let rtt = udp_ping(&us, front, b"slow", WAIT).await.unwrap();
    println!("udp after `link us-east eu-west rtt_ms=300`: {rtt:?}");
    assert!(rtt >= ms(270));
    let p = send(api, "status")
        .await
        .status
        .unwrap()
        .link("eu-west", "us-east")
        .unwrap()
        .params;
    assert_eq!((p.rtt_ms, p.jitter_ms), (300, 0));
    wan.shutdown().await;
}

#[tokio::test]
async fn a_raw_connection_gets_a_json_line_per_request() {
    let mut config = three_regions();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let wan = Emulator::start(config).await.unwrap();
    let stream = tokio::net::TcpStream::connect(wan.control_addr().unwrap())
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"oneway ap-south us-east\nbogus\nheal\n")
        .await
        .unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        replies.push(serde_json::from_str::<control::Response>(&line).unwrap());
    }
    assert!(replies[0].ok);
    assert!(
        !replies[1].ok
            && replies[1]
                .error
                .as_ref()
                .unwrap()
                .contains("unknown request")
    );
    assert!(replies[2].ok);
    // An oversized request closes the connection.
    w.write_all(&vec![b'x'; 10_000]).await.unwrap();
    w.write_all(b"\n").await.unwrap();
    let end = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)));
    // The API still serves others.
    let r = control::send(wan.control_addr().unwrap(), &Request::Status)
        .await
        .unwrap();
    assert!(r.ok && r.status.unwrap().partitions.is_empty());
    wan.shutdown().await;
}

#[tokio::test]
async fn a_stopped_emulator_refuses_commands() {
    let wan = Emulator::start(three_regions()).await.unwrap();
    let control = wan.controller();
    wan.shutdown().await;
    assert_eq!(
        control.heal().await,
        Err(meridian_chaos::ControlError::Stopped)
    );
}
