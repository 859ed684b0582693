//! Clients and nodes across regions on loopback: a client bound to a
//! region's address is seen with that source, and (with the WAN emulator)
//! pays its region's round trip.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestCerts;
use meridian::client::{Client, ClientConfig};
use meridian::transport::{self, EndpointLimits};

const T: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .expect("test step timed out")
}

/// `ClientConfig.bind` is the source address a node sees, which is what
/// the WAN emulator classifies a sender's region by (127.0.2.0/24 is the
/// second region of the loopback plan); an unbound client is seen from
/// 127.0.0.1.
#[tokio::test]
async fn a_client_bound_to_a_region_address_is_seen_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path());
    let server = transport::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &certs.files("node1"),
        &EndpointLimits::default(),
    )
    .unwrap();
    let node_addr = server.local_addr().unwrap();
    let seen = |bind: Option<SocketAddr>| {
        let server = server.clone();
        let cfg = ClientConfig {
            endpoints: vec![node_addr],
            tls: certs.files("client"),
            request_timeout: T,
            bind,
        };
        async move {
            let accept = async {
                let incoming = server.accept().await.expect("a connection");
                let remote = incoming.remote_address();
                let conn = incoming.await.expect("handshake");
                (remote, conn)
            };
            let (client, (remote, conn)) = tokio::join!(Client::connect(cfg), accept);
            let client = client.expect("client connects");
            client.close().await;
            conn.close(0u32.into(), b"done");
            remote
        }
    };
    let bound = bounded(seen(Some("127.0.2.200:0".parse().unwrap()))).await;
    assert_eq!(bound.ip().to_string(), "127.0.2.200");
    let unbound = bounded(seen(None)).await;
    assert_eq!(unbound.ip().to_string(), "127.0.0.1");
    // An address this host does not have is refused at connect, naming it.
    let cfg = ClientConfig {
        endpoints: vec![node_addr],
        tls: certs.files("client"),
        request_timeout: T,
        bind: Some("192.0.2.1:0".parse().unwrap()),
    };
    let err = bounded(Client::connect(cfg)).await.unwrap_err().to_string();
    assert!(err.contains("192.0.2.1"), "{err}");
    server.close(0u32.into(), b"done");
}
