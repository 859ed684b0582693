//! Helpers: a three-region config, echo servers on node addresses, clients
//! on region addresses, and bounded waits. Everything runs on the test's
//! runtime, so its tasks (and sockets) go when the test ends, pass or fail.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_chaos::addr::LoopbackPlan;
use meridian_chaos::{LinkParams, ListenerSpec, Protocol, WanConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

pub const US: usize = 0;
pub const EU: usize = 1;
pub const AP: usize = 2;
pub const NAMES: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// The three regions: 70, 140 and 200 ms round trips.
pub fn three_regions() -> WanConfig {
    let mut c = WanConfig::new(NAMES)
        .link("us-east", "eu-west", LinkParams::rtt(70))
        .link("eu-west", "ap-south", LinkParams::rtt(140))
        .link("us-east", "ap-south", LinkParams::rtt(200));
    c.add_loopback_sources();
    c.seed = Some(42);
    c
}

/// The loopback address of node `node` in `region` (0-based).
pub fn node_ip(region: usize, node: usize) -> Ipv4Addr {
    LoopbackPlan::node_ip(region, node).unwrap()
}

/// Its front address.
pub fn front_ip(region: usize, node: usize) -> Ipv4Addr {
    LoopbackPlan::front_ip(region, node).unwrap()
}

/// A front on any free port for `upstream`, in `region`, classified by
/// source address.
pub fn listener(
    name: &str,
    protocol: Protocol,
    region: usize,
    node: usize,
    upstream: SocketAddr,
) -> ListenerSpec {
    ListenerSpec {
        name: name.into(),
        protocol,
        listen: SocketAddr::from((front_ip(region, node), 0)),
        upstream,
        region: NAMES[region].into(),
        source_region: None,
    }
}

/// A UDP echo server bound to `ip`; counts datagrams received.
pub async fn udp_echo(ip: Ipv4Addr) -> (SocketAddr, Arc<AtomicU64>) {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, count)
}

/// A UDP client bound to `ip`.
pub async fn udp_client(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).await.unwrap()
}

/// Sends `payload` to `to` and waits (at most `limit`) for the same bytes
/// back; the round trip, or `None` on timeout.
pub async fn udp_ping(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    sock.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let deadline = start + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (n, from) = tokio::time::timeout(left, sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        assert_eq!(
            from, to,
            "a reply must come from the address the client sent to"
        );
        if &buf[..n] == payload {
            return Some(start.elapsed());
        }
        // A late reply to an earlier ping: keep waiting for ours.
    }
}

/// A TCP echo server bound to `ip`.
pub async fn tcp_echo(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A TCP connection from `ip` (any port) to `to`.
pub async fn tcp_connect(ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((ip, 0))).unwrap();
    let stream = tokio::time::timeout(WAIT, s.connect(to))
        .await
        .unwrap()
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Minimum, median and maximum.
pub fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
